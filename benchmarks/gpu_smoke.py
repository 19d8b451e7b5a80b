"""GPU check: the predictor on CUDA (fp32 and bf16) agrees with the CPU reference (tiny model).

python benchmarks/gpu_smoke.py      # prints one JSON object on its last line
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.sim.phantom import make_phantom
from inference.models import TINY, load_model
from inference.prediction import mask_iou
from inference.predictor import InferenceConfig, MedSamPredictor


def main() -> None:
    """Compare CUDA fp32 and bf16 proposals with the CPU fp32 reference."""
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False}))
        return
    crop = make_phantom("ct", np.random.default_rng(0), 160).image
    boxes = [(20, 20, 120, 130), (40, 30, 90, 100)]
    cpu = MedSamPredictor(load_model(TINY))
    reference = cpu.predict_boxes(cpu.embed(crop), boxes)
    out: dict[str, object] = {"cuda": True, "gpu": torch.cuda.get_device_name()}
    for encoder in ("fp32", "bf16"):
        gpu = MedSamPredictor(load_model(TINY), InferenceConfig(device="cuda", encoder=encoder))
        got = gpu.predict_boxes(gpu.embed(crop), boxes)
        out[f"mask_iou_min_cuda_{encoder}"] = round(
            min(mask_iou(a.mask, b.mask) for a, b in zip(reference, got, strict=True)), 4
        )
        out[f"prob_max_abs_diff_cuda_{encoder}"] = float(
            max(np.abs(a.prob - b.prob).max() for a, b in zip(reference, got, strict=True))
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
