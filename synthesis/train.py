"""Training: batches of real pairs, validation, failure detection and exact resumption.

The ``Trainer`` owns what is not the model's: the step counter, the data RNG, the augmentation
(reference resize-and-crop jitter with the mask resized by nearest neighbour, flips only when the
config allows them), the loss history and the checkpoints. A checkpoint holds the full state
(both networks, optimisers, schedules, step, torch and NumPy RNG states of every rank, loss
history, config) and is written atomically (temp file, fsync, ``os.replace``), so a crash never
leaves a half-written ``latest.pt``; a run resumed from it is bit-identical to an uninterrupted
one on CPU (tested). Resuming refuses a checkpoint written under another config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from synthesis.config import SynthesisConfig
from synthesis.generator import ConditionalGenerator

logger = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is the last good state."""


@dataclass
class PairData:
    """Real pairs as tensors: masks (N, 1, S, S) in {-1, 1}, images (N, 1, S, S) in [-1, 1]."""

    masks: torch.Tensor
    images: torch.Tensor

    @classmethod
    def from_arrays(
        cls, masks: npt.NDArray[np.bool_], images: npt.NDArray[np.floating[Any]]
    ) -> PairData:
        """From (N, S, S) bool masks and (N, S, S) images in [0, 1]."""
        if masks.shape != images.shape or masks.ndim != 3:
            raise ValueError(f"masks {masks.shape} and images {images.shape} must be (N, S, S)")
        return cls(to_signed(masks), to_signed(images))

    def __len__(self) -> int:
        return len(self.masks)


def to_signed(a: npt.NDArray[Any]) -> torch.Tensor:
    """(N, S, S) array in [0, 1] (or bool) -> (N, 1, S, S) float32 tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(a, dtype=np.float32) * 2 - 1)[:, None].contiguous()


def to_unit(t: torch.Tensor) -> npt.NDArray[np.float32]:
    """(N, 1, S, S) tensor in [-1, 1] -> (N, S, S) float32 array in [0, 1]."""
    return np.asarray(((t[:, 0].float().clamp(-1, 1) + 1) / 2).cpu().numpy(), dtype=np.float32)


def discriminator_collapsed(
    loss_d: Sequence[float], loss_g_gan: Sequence[float], floor: float
) -> bool:
    """D wins: its mean loss over the window is below ``floor`` while G's GAN loss climbs.

    The pix2pix maintainers' symptom of a broken balance (loss_D -> 0, loss_G rising, issue #910).
    """
    n = len(loss_d)
    if n < 4 or len(loss_g_gan) != n:
        return False
    half = n // 2
    rising = float(np.mean(loss_g_gan[half:])) > float(np.mean(loss_g_gan[:half]))
    return float(np.mean(loss_d)) < floor and rising


@dataclass
class History:
    """Per-step losses and periodic validation results."""

    losses: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    collapsed_at: int | None = None


class Trainer:
    """Trains a ``ConditionalGenerator`` on ``PairData``; resumable, optionally one DDP rank.

    Args:
        cfg: the run's config (its digest binds checkpoints to it).
        generator: the model (``Pix2Pix`` or another implementation of the protocol).
        data: the real training pairs.
        rank / world_size: this process's place in a DDP job (1 process: 0 / 1); ranks draw
            different batches from ``Generator([seed, rank])``.
    """

    def __init__(
        self,
        cfg: SynthesisConfig,
        generator: ConditionalGenerator,
        data: PairData,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.generator = generator
        self.data = data
        self.rank = rank
        self.world_size = world_size
        self.step = 0
        self.rng = np.random.default_rng([cfg.seed, rank])
        self.history = History()
        # dropout draws from torch's global RNG: a fresh run seeds it, a resumed run restores it
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next augmented batch: masks (B, 1, S, S) and images (B, 1, S, S)."""
        tc = self.cfg.train
        n = len(self.data)
        idx = self.rng.choice(n, size=tc.batch_size, replace=tc.batch_size > n)
        masks, images = [], []
        for i in idx:
            m, im = self.data.masks[i : i + 1], self.data.images[i : i + 1]
            m, im = self._augment(m, im)
            masks.append(m)
            images.append(im)
        return torch.cat(masks), torch.cat(images)

    def _augment(
        self, mask: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tc = self.cfg.train
        size = mask.shape[-1]
        if tc.jitter > 1.0:
            big = round(size * tc.jitter)
            image = F.interpolate(image, size=(big, big), mode="bilinear", align_corners=False)
            mask = F.interpolate(mask, size=(big, big), mode="nearest")  # stays in {-1, 1}
            y, x = self.rng.integers(0, big - size + 1, size=2)
            image = image[..., y : y + size, x : x + size]
            mask = mask[..., y : y + size, x : x + size]
        if tc.hflip and self.rng.random() < 0.5:
            mask, image = mask.flip(-1), image.flip(-1)
        if tc.vflip and self.rng.random() < 0.5:
            mask, image = mask.flip(-2), image.flip(-2)
        return mask.contiguous(), image.contiguous()

    def fit(
        self,
        until: int | None = None,
        checkpoint_dir: Path | None = None,
        validation: PairData | None = None,
        judge: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.bool_]] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> History:
        """Train up to step ``until`` (default: the config's ``train.steps``).

        Writes ``latest.pt`` every ``checkpoint_every`` steps and at the end, and ``best.pt``
        whenever validation L1 improves. Raises ``TrainingDiverged`` on a non-finite loss.
        """
        tc = self.cfg.train
        until = tc.steps if until is None else until
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        best = min((v["l1"] for v in self.history.validation), default=math.inf)
        while self.step < until:
            mask, image = self.batch()
            losses = self.generator.train_step(mask, image)
            if not all(math.isfinite(v) for v in losses.values()):
                raise TrainingDiverged(
                    f"non-finite loss at step {self.step + 1}: {losses}; resume from the last "
                    "checkpoint with a lower learning rate or check the data"
                )
            self.step += 1
            self.history.losses.append(losses)
            self._watch_collapse()
            if on_step is not None:
                on_step(self.step, losses)
            if validation is not None and self.step % tc.val_every == 0:
                scores = self.validate(validation, judge)
                if checkpoint_dir is not None and scores["l1"] < best:
                    best = scores["l1"]
                    self.save(checkpoint_dir / "best.pt")
            if checkpoint_dir is not None and self.step % tc.checkpoint_every == 0:
                self.save(checkpoint_dir / "latest.pt")
        if checkpoint_dir is not None:
            self.save(checkpoint_dir / "latest.pt")
        return self.history

    def _watch_collapse(self) -> None:
        tc = self.cfg.train
        window = self.history.losses[-tc.collapse_window :]
        if len(window) < tc.collapse_window or "loss_d" not in window[-1]:
            return
        d = [w["loss_d"] for w in window]
        g = [w.get("loss_g_gan", 0.0) for w in window]
        if self.history.collapsed_at is None and discriminator_collapsed(d, g, tc.collapse_d_loss):
            self.history.collapsed_at = self.step
            logger.warning(
                "discriminator collapse at step %d: mean D loss %.4f < %.4f while G's GAN loss "
                "rises; consider a smaller ndf / n_layers_d or more data augmentation",
                self.step,
                float(np.mean(d)),
                tc.collapse_d_loss,
            )

    def validate(
        self,
        data: PairData,
        judge: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.bool_]] | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        """L1 (in [0, 1] units) between generated and real images of held-out masks; judge Dice."""
        fakes = [
            self.generator.generate(data.masks[i : i + batch_size])
            for i in range(0, len(data), batch_size)
        ]
        fake = torch.cat(fakes).cpu()
        scores = {"step": float(self.step), "l1": float((fake - data.images).abs().mean() / 2)}
        if judge is not None:
            from synthesis.segmenter import dice

            found = judge(to_unit(fake))
            truth = data.masks[:, 0].numpy() > 0
            scores["judge_dice"] = float(
                np.mean([dice(f, t) for f, t in zip(found, truth, strict=True)])
            )
        self.history.validation.append(scores)
        logger.info("validation at step %d: %s", self.step, scores)
        return scores

    # --- checkpoints --------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": self.rng.bit_generator.state,
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state(self) -> dict[str, Any]:
        """The full training state (every rank's RNG gathered when distributed)."""
        rng = [self._rng_state()]
        if self.world_size > 1:
            import torch.distributed as dist

            rng = [None] * self.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, self._rng_state())
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "config_digest": self.cfg.digest(),
            "step": self.step,
            "model": self.generator.state_dict(),
            "rng": rng,
            "history": dataclasses.asdict(self.history),
        }

    def save(self, path: Path) -> None:
        """Atomically write the full state to ``path`` (rank 0 writes; every rank must call)."""
        state = self.state()
        if self.rank == 0:
            save_atomic(state, path)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def load(self, path: Path) -> None:
        """Restore the state written by ``save``; refuses a checkpoint of another config."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("config_digest") != self.cfg.digest():
            raise ValueError(
                f"checkpoint {path} was written under another config "
                f"({state.get('config_digest')} != {self.cfg.digest()}); start a new run directory"
            )
        if len(state["rng"]) != self.world_size:
            raise ValueError(
                f"checkpoint {path} has {len(state['rng'])} ranks' RNG, this job {self.world_size}"
            )
        self.generator.load_state_dict(state["model"])
        self.step = int(state["step"])
        self.history = History(**state["history"])
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.rng.bit_generator.state = rng["numpy"]

    def resume(self, checkpoint_dir: Path) -> bool:
        """Load ``checkpoint_dir/latest.pt`` when it exists; True when it did."""
        path = checkpoint_dir / "latest.pt"
        if not path.exists():
            return False
        self.load(path)
        logger.info("resumed from %s at step %d", path, self.step)
        return True


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace`` onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)
