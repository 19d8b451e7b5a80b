"""Toy data for the synthesis tests: ellipse masks and the images a simple rule draws from them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage as ndi


def toy_pairs(
    n: int, size: int, seed: int = 0
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """(N, S, S) ellipse masks and (N, S, S) images in [0, 1]: bright lesion on a textured field.

    The mapping mask -> image is deterministic up to faint noise, so a generator that learns has
    a low L1 to reach and a judge can recover the mask from the image by brightness.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    masks, images = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2)
        ry, rx = rng.uniform(0.12, 0.3, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = (
            0.25 + 0.5 * mask + 0.05 * np.sin(20 * xx + 7 * yy) + rng.normal(0, 0.02, mask.shape)
        )
        masks.append(mask)
        images.append(np.clip(image, 0, 1))
    return np.stack(masks), np.stack(images).astype(np.float32)


def toy_probabilities(masks: npt.NDArray[np.bool_], sigma: float = 1.5) -> npt.NDArray[np.float64]:
    """Crowd-like probability maps: each mask blurred, so thresholds move its boundary."""
    return np.stack([ndi.gaussian_filter(m.astype(np.float64), sigma) for m in masks])


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny tensors on a shared machine: one torch thread is faster and steadier than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ddp_worker(rank: int, world_size: int, port: int, out_dir: Path) -> None:
    """One rank of the two-process gloo test: train a few tiny steps, save what it ended with."""
    from synthesis.config import SynthesisConfig
    from synthesis.ddp import DistributedContext, parameters_agree, setup, teardown
    from synthesis.generator import Pix2Pix
    from synthesis.train import PairData, Trainer

    ctx = DistributedContext(rank, world_size, rank, f"tcp://127.0.0.1:{port}", "gloo")
    device = setup(ctx)
    try:
        torch.set_num_threads(1)
        cfg = SynthesisConfig.tiny()
        masks, images = toy_pairs(8, cfg.model.size)
        # different initial weights per rank: DDP must broadcast rank 0's
        gen = Pix2Pix(cfg.model, cfg.train, device=device, seed=rank, distributed=True)
        trainer = Trainer(cfg, gen, PairData.from_arrays(masks, images), rank, world_size)
        trainer.fit(until=3)
        trainer.save(out_dir / "latest.pt")
        torch.save(
            {
                "agree": parameters_agree(gen.parameters()),
                "params": torch.cat([p.detach().reshape(-1) for p in gen.parameters()]),
                "losses": trainer.history.losses,
            },
            out_dir / f"rank{rank}.pt",
        )
    finally:
        teardown()
