"""Conditional generators behind one small interface; pix2pix is the first.

``ConditionalGenerator`` is what the trainer, the generate function and the benchmark call, so a
stronger model (a mask-conditioned diffusion model, research/synthesis.md §4.3) can be added as
another class without touching them. ``Pix2Pix`` is the published objective (cGAN + 100 x L1,
Adam 2e-4 / beta1 0.5, D step then G step, fake detached for D, D frozen for G, linear decay over
the second half) on the networks of ``synthesis.networks``.

Deliberate deviations from the reference, and why:
* instance norm by default: a generated image must not depend on its batch (§4.3);
* with a batch-independent norm, D sees the fake and the real pairs in one forward (same
  arithmetic as two, one pass over the weights, and DDP wants one forward per backward);
* fused Adam (the same update, computed in one pass without temporaries: on CPU the reference's
  per-tensor Adam allocates and page-faults a weight-sized buffer per operation);
* the learning-rate schedule is part of the state, so a resumed run continues it exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from synthesis.config import ModelConfig, TrainConfig
from synthesis.networks import PatchDiscriminator, UNetGenerator, init_pix2pix


@runtime_checkable
class ConditionalGenerator(Protocol):
    """mask (B, 1, S, S) in {-1, 1} -> image (B, 1, S, S) in [-1, 1], trainable and resumable."""

    def train_step(self, mask: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a batch of real pairs; returns named losses."""
        ...

    def generate(self, mask: torch.Tensor) -> torch.Tensor:
        """Images for a batch of masks; each image depends on its own mask only."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit-identically (networks, optimisers, ...)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        ...


class Pix2Pix:
    """pix2pix (Isola et al. 2017) with the project's deviations (see the module docstring).

    Args:
        model: network sizes and norm.
        train: objective, optimiser, schedule and precision options.
        device: where the networks live.
        seed: seeds the weight initialisation (a local generator; global RNG untouched).
        distributed: wrap G and D in DistributedDataParallel (process group already set up).
    """

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        device: torch.device | str = "cpu",
        seed: int = 0,
        distributed: bool = False,
    ) -> None:
        self.model_cfg = model
        self.cfg = train
        self.device = torch.device(device)
        if distributed and model.norm == "batch":
            raise ValueError("distributed pix2pix needs a batch-independent norm, not 'batch'")
        self.g_net = UNetGenerator(
            1, 1, model.ngf, model.n_down, model.norm, model.dropout, model.gemm_max_pixels
        )
        self.d_net = PatchDiscriminator(2, model.ndf, model.n_layers_d, model.norm)
        init_pix2pix(self.g_net, seed)
        init_pix2pix(self.d_net, seed + 1)
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        for net in (self.g_net, self.d_net):
            net.to(self.device)
            if train.channels_last:
                cast(Any, net).to(memory_format=torch.channels_last)  # stubs lack the keyword
        self.g: nn.Module = self.g_net
        self.d: nn.Module = self.d_net
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g = DDP(self.g_net, device_ids=ids)
            self.d = DDP(self.d_net, device_ids=ids)
        adam: dict[str, Any] = {"lr": train.lr, "betas": (train.beta1, train.beta2)}
        if train.fused_adam:
            adam["fused"] = True
        self.opt_g = torch.optim.Adam(self.g_net.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.d_net.parameters(), **adam)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, self._lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self._lr_factor)
        # one D forward for the fake and real pairs is exact only when D is batch-independent
        self.joint_d = model.norm != "batch"

    def _lr_factor(self, step: int) -> float:
        total = self.cfg.steps
        decay_start = round(total * (1 - self.cfg.decay_fraction))
        if step < decay_start:
            return 1.0
        return max(0.0, (total - step) / max(total - decay_start, 1))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.memory_format)

    def train_step(self, mask: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        """D step then G step on (B, 1, S, S) masks in {-1, 1} and images in [-1, 1]."""
        mask, image = self._prepare(mask), self._prepare(image)
        self.g.train()
        self.d.train()
        with self._autocast():
            fake = self.g(mask)  # (B, 1, S, S)
        # --- D: real pairs -> 1, fake pairs (fake detached) -> 0 ---
        _requires_grad(self.d_net, True)
        self.opt_d.zero_grad(set_to_none=True)
        fake_pair = torch.cat([mask, fake.detach().to(mask.dtype)], dim=1)
        real_pair = torch.cat([mask, image], dim=1)
        with self._autocast():
            if self.joint_d:
                logits_fake, logits_real = self.d(torch.cat([fake_pair, real_pair])).chunk(2)
            else:  # batch norm: two forwards, as the reference (batch statistics differ)
                logits_fake, logits_real = self.d(fake_pair), self.d(real_pair)
        loss_d = 0.5 * (_bce(logits_fake, False) + _bce(logits_real, True))
        torch.autograd.backward(loss_d)
        self.opt_d.step()
        # --- G: fool the (updated, frozen) D + lambda * L1 to the real image ---
        _requires_grad(self.d_net, False)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():  # the raw module: no DDP hooks for parameters that get no grad
            logits = self.d_net(torch.cat([mask, fake.to(mask.dtype)], dim=1))
        loss_gan = _bce(logits, True)
        loss_l1 = F.l1_loss(fake.float(), image.float())
        loss_g = loss_gan + self.cfg.lambda_l1 * loss_l1
        torch.autograd.backward(loss_g)
        self.opt_g.step()
        _requires_grad(self.d_net, True)
        self.sched_g.step()
        self.sched_d.step()
        losses = torch.stack([loss_d, loss_gan, loss_l1]).detach().float().cpu().tolist()
        return dict(zip(("loss_d", "loss_g_gan", "loss_l1"), losses, strict=True))

    @torch.inference_mode()
    def generate(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) masks -> (B, 1, S, S) images in [-1, 1], eval mode (dropout off).

        Instance norm has no running statistics, so every image depends on its own mask only.
        """
        was_training = self.g_net.training
        self.g_net.eval()
        try:
            with self._autocast():
                out: torch.Tensor = self.g_net(self._prepare(mask))
        finally:
            self.g_net.train(was_training)
        return out.float().contiguous()

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and schedulers."""
        return {
            "g": self.g_net.state_dict(),
            "d": self.d_net.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        self.g_net.load_state_dict(state["g"])
        self.d_net.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])

    def parameters(self) -> Iterator[torch.Tensor]:
        """G's then D's parameters (to compare replicas)."""
        yield from self.g_net.parameters()
        yield from self.d_net.parameters()


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Vanilla GAN loss on logits, in fp32 whatever the autocast dtype."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)
