"""The model registry: MedSAM and SAM ViT-B from a user's checkpoint; a tiny SAM for tests.

A checkpoint is loaded on the CPU with ``weights_only=True`` and strict keys; its sha256 becomes
part of the model id stored with every proposal, so a proposal always says which weights made it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from inference.backend import build_tiny_sam, build_vit_b

MEDSAM = "medsam_vit_b"
SAM = "sam_vit_b"
TINY = "tiny"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model and what its prompts mean."""

    name: str
    build: Callable[[], Any]
    needs_checkpoint: bool
    pipeline: Literal["medsam", "sam"]  # MedSAM's squash + min-max, or SAM's resize + mean/std
    trained_prompts: frozenset[str]  # prompts the weights were trained with
    has_alternatives: bool  # whether the multimask tokens were trained


REGISTRY: dict[str, ModelSpec] = {
    MEDSAM: ModelSpec(MEDSAM, build_vit_b, True, "medsam", frozenset({"box"}), False),
    SAM: ModelSpec(SAM, build_vit_b, True, "sam", frozenset({"box", "points", "mask"}), True),
    TINY: ModelSpec(
        TINY, build_tiny_sam, False, "medsam", frozenset({"box", "points", "mask"}), True
    ),
}


@dataclass(frozen=True)
class LoadedModel:
    """A built model with the id that goes into every proposal it makes."""

    spec: ModelSpec
    sam: Any  # segment_anything.modeling.Sam, in eval mode on the CPU
    model_id: str

    @property
    def image_size(self) -> int:
        """The encoder's input side (1024 for ViT-B), read from the model."""
        return int(self.sam.image_encoder.img_size)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(state: Any) -> Mapping[str, torch.Tensor]:
    """Accept a plain state dict, a training checkpoint ``{"model": ...}``, DDP ``module.`` keys."""
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError("checkpoint is not a state dict (expected a mapping of tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def load_model(name: str, checkpoint: Path | None = None, *, seed: int = 0) -> LoadedModel:
    """Build a registered model and load its checkpoint.

    Args:
        name: ``medsam_vit_b``, ``sam_vit_b`` or ``tiny``.
        checkpoint: the weights file; required for the ViT-B models, optional for ``tiny``
            (random weights from ``seed`` when absent).
        seed: random-weight seed for ``tiny`` without a checkpoint.

    Raises:
        CheckpointError: unknown name, missing file, unreadable file, wrong architecture, or
            missing/unexpected keys.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise CheckpointError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}"
        )
    if checkpoint is None:
        if not spec.needs_checkpoint:
            return LoadedModel(spec, build_tiny_sam(seed=seed), f"{TINY}:seed{seed}")
        raise CheckpointError(f"{name} needs a checkpoint file (MEDCROWD_MEDSAM_CHECKPOINT)")
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: download medsam_vit_b.pth from the MedSAM project "
            "and point MEDCROWD_MEDSAM_CHECKPOINT at it"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle/zip/runtime errors for bad files
        raise CheckpointError(f"checkpoint {path.name} cannot be read: {error}") from None
    state = _unwrap(raw)
    sam = spec.build()
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path.name} does not fit {name}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"checkpoint {path.name} is another architecture: {k} has shape "
            f"{tuple(state[k].shape)}, {name} needs {tuple(expected[k].shape)}"
        )
    sam.load_state_dict(state, strict=True)
    return LoadedModel(spec, sam.eval(), f"{name}@{file_sha256(path)[:16]}")
