"""GPU image-encoder throughput of ViT-B (MedSAM-sized) under each precision/attention variant.

    python benchmarks/gpu_encoder.py [--batch 8 32] [--compile]   # last line: one JSON object

Images per second at each batch size, reference = eager fp32 (TF32 off), measured in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.backend import build_vit_b
from inference.fast import sdpa_encoder
from inference.preprocess import medsam_preprocess, to_rgb_uint8


def _rate(encoder: torch.nn.Module, batch: int, dtype: torch.dtype | None, rounds: int) -> float:
    x = torch.rand(batch, 3, 1024, 1024, device="cuda")
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        for _ in range(3):
            encoder(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(rounds):
            encoder(x)
        torch.cuda.synchronize()
    return batch * rounds / (time.perf_counter() - t0)


def main() -> None:
    """Print images/s for every variant and batch size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    sam = build_vit_b().cuda()
    variants: dict[str, tuple[torch.nn.Module, torch.dtype | None]] = {
        "fp32": (sam.image_encoder, None),
        "bf16_autocast": (sam.image_encoder, torch.bfloat16),
        "bf16_autocast_sdpa": (sdpa_encoder(sam), torch.bfloat16),
    }
    if args.compile:
        variants["bf16_sdpa_compiled"] = (torch.compile(sdpa_encoder(sam)), torch.bfloat16)
    out: dict[str, object] = {"gpu": torch.cuda.get_device_name()}
    for batch in args.batch:
        for name, (encoder, dtype) in variants.items():
            out[f"{name}_b{batch}_images_per_s"] = round(
                _rate(encoder, batch, dtype, args.rounds), 1
            )
            print(name, batch, out[f"{name}_b{batch}_images_per_s"], flush=True)
        torch.backends.cuda.matmul.allow_tf32 = True
        out[f"fp32_tf32_b{batch}_images_per_s"] = round(
            _rate(sam.image_encoder, batch, None, args.rounds), 1
        )
        torch.backends.cuda.matmul.allow_tf32 = False
    crop = (np.random.default_rng(0).random((384, 384)) * 255).astype(np.uint8)
    t0 = time.perf_counter()
    for _ in range(3):
        medsam_preprocess(to_rgb_uint8(crop), 1024)
    out["preprocess_skimage_s_per_crop"] = round((time.perf_counter() - t0) / 3, 3)
    out["reference"] = "fp32 eager, TF32 off"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
