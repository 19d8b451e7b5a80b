"""A small segmentation U-Net trained on (image, mask) pairs: the judge and the downstream model.

One training function serves both uses, so "the judge recovers the mask" and "synthetic pairs
help a segmenter" are measured with the same kind of model. Training is seeded through a local
RNG (weights via a forked torch RNG, batches via ``numpy.random.Generator``) and deterministic on
CPU; it never moves the caller's global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from synthesis.config import SegmenterConfig
from synthesis.networks import SegmenterUNet

Images = npt.NDArray[np.floating[Any]]
Masks = npt.NDArray[np.bool_]


def dice(a: Masks, b: Masks, eps: float = 1e-6) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    return float((2 * np.count_nonzero(a & b) + eps) / (a.sum() + b.sum() + eps))


@dataclass
class Segmenter:
    """A trained segmenter: (N, S, S) images in [0, 1] -> (N, S, S) masks."""

    net: SegmenterUNet
    device: torch.device
    batch_size: int = 32

    @torch.inference_mode()
    def probabilities(self, images: Images) -> npt.NDArray[np.float32]:
        """(N, S, S) foreground probabilities."""
        self.net.eval()
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.asarray(images[i : i + self.batch_size], np.float32))
            logits = self.net((x[:, None] * 2 - 1).to(self.device))
            out.append(torch.sigmoid(logits)[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.float32)

    def __call__(self, images: Images) -> Masks:
        """(N, S, S) boolean masks (probability > 0.5)."""
        return np.asarray(self.probabilities(images) > 0.5)


def train_segmenter(
    images: Images,
    masks: Masks,
    cfg: SegmenterConfig,
    seed: int,
    device: torch.device | str = "cpu",
) -> Segmenter:
    """Train a ``SegmenterUNet`` on (N, S, S) images in [0, 1] and (N, S, S) bool masks.

    Loss: BCE + soft Dice (the usual pair for small foreground). Adam, constant LR,
    ``cfg.steps`` steps of ``cfg.batch_size`` pairs drawn with replacement.
    """
    if images.shape != masks.shape or images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must be (N>0, S, S)")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SegmenterUNet(cfg.width, cfg.depth).to(device)
    x_all = torch.from_numpy(np.asarray(images, np.float32))[:, None] * 2 - 1
    y_all = torch.from_numpy(np.asarray(masks, np.float32))[:, None]
    rng = np.random.default_rng([seed, 1])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    net.train()
    for _ in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, len(x_all), size=cfg.batch_size))
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        if cfg.hflip:
            flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5).to(device)[
                :, None, None, None
            ]
            x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        logits = net(x)
        prob = torch.sigmoid(logits)
        inter = (prob * y).sum(dim=(1, 2, 3))
        soft_dice = (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + y.sum(dim=(1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (1 - soft_dice).mean()
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
    net.eval()
    return Segmenter(net, device)
