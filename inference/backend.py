"""Access to ``segment_anything``'s modelling code without its torchvision-dependent parts.

``segment_anything/__init__.py`` imports ``SamPredictor``, which imports torchvision; the PyPI
package does not declare it and the PyPI torchvision wheel is a CUDA build that breaks next to a CPU
torch. MedSAM needs only ``build_sam`` and ``modeling``, so those are loaded on their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import partial
from typing import Any

import torch


def sam_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """Return ``(segment_anything.build_sam, segment_anything.modeling)``, never torchvision."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("segment-anything is not installed (pip install segment-anything)")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["segment_anything"] = package
    return (
        importlib.import_module("segment_anything.build_sam"),
        importlib.import_module("segment_anything.modeling"),
    )


def build_vit_b() -> Any:
    """An untrained SAM ViT-B (the MedSAM architecture), in eval mode."""
    build_sam, _ = sam_modules()
    return build_sam.build_sam_vit_b(checkpoint=None).eval()


def build_tiny_sam(img_size: int = 256, seed: int = 0) -> Any:
    """A ~90k-parameter SAM of the same classes, deterministic for ``seed``, for tests and demos.

    Args:
        img_size: input side; a multiple of 16.
        seed: torch seed for the random weights.
    """
    if img_size % 16:
        raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
    _, modeling = sam_modules()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        grid = img_size // 16
        model = modeling.Sam(
            image_encoder=modeling.ImageEncoderViT(
                img_size=img_size,
                patch_size=16,
                embed_dim=32,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=32,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=4,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=32,
                image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size),
                mask_in_chans=4,
            ),
            mask_decoder=modeling.MaskDecoder(
                num_multimask_outputs=3,
                transformer=modeling.TwoWayTransformer(
                    depth=1, embedding_dim=32, mlp_dim=64, num_heads=2
                ),
                transformer_dim=32,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        # Random relative-position tables: real checkpoints have non-zero ones.
        for name, parameter in model.named_parameters():
            if "rel_pos" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()
