"""Inference benchmark: our fast paths against the eager fp32 reference, in one run.

For a ViT-B (MedSAM-sized) model with random weights, each variant runs in a fresh process with one
torch thread (scale out with processes, not threads, on small machines):

* ``reference``: eager fp32 image encoder, eager torch prompt encoder + mask decoder;
* ``onnx``: ONNX Runtime image encoder and factored decoder (exported once per model);
* ``factored``: the factored decoder in eager torch (encoder as the reference);
* ``bf16``: bf16 autocast image encoder (decoder as the reference);
* ``bf16-sdpa``: the same with SDPA attention.

(``bf16`` variants take minutes per crop on CPUs without bf16 instructions: ask with
``--variants``.)

It prints encoder seconds per crop, decoder milliseconds per prompt, their ratios to the reference,
peak memory, and mask IoU against the reference masks; the last line is one JSON object. Decoder
times are the median over prompts after each crop's first; the first prompt on a crop, which for
the factored decoders also pays the once-per-embedding preparation, is reported on its own, and
the mean over all prompts (first included) gives a second ratio.

    .venv/bin/python benchmarks/inference.py [--crops 3] [--prompts 16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _crops(n: int) -> list[np.ndarray]:
    from bot.campaign.boxes import boxes_from_mask
    from bot.campaign.crops import cut_crop, plan_crop
    from bot.sim.phantom import STYLES, make_phantom

    crops = []
    for i in range(n):
        phantom = make_phantom(STYLES[i % len(STYLES)], np.random.default_rng(i), 384)
        box, _ = boxes_from_mask(phantom.mask)[0]
        crops.append(cut_crop(phantom.image, plan_crop(box, 384, 384, margin=0.3, max_out=512)))
    return crops


def _boxes(hw: tuple[int, int], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = hw
    x0 = rng.uniform(0, w * 0.5, n)
    y0 = rng.uniform(0, h * 0.5, n)
    return np.stack(
        [x0, y0, x0 + rng.uniform(w * 0.2, w * 0.5, n), y0 + rng.uniform(h * 0.2, h * 0.5, n)], 1
    )


def _variant(name: str, crops_n: int, prompts: int, device: str, out: Path, onnx_dir: Path) -> None:
    """Run one variant in this process and save its timings and masks to ``out``."""
    import torch

    from inference.backend import build_vit_b
    from inference.models import MEDSAM, REGISTRY, LoadedModel
    from inference.predictor import Embedding, InferenceConfig, MedSamPredictor

    torch.manual_seed(0)
    sam = build_vit_b()
    for pname, parameter in sam.named_parameters():  # real checkpoints have non-zero tables
        if "rel_pos" in pname:
            torch.nn.init.normal_(parameter, std=0.02)
    model = LoadedModel(REGISTRY[MEDSAM], sam, "vit_b-random-seed0")
    config = {
        "reference": InferenceConfig(device=device, encoder="fp32", decoder="torch"),
        "onnx": InferenceConfig(device=device, encoder="onnx", decoder="onnx", onnx_dir=onnx_dir),
        "factored": InferenceConfig(device=device, encoder="fp32", decoder="factored"),
        "bf16": InferenceConfig(device=device, encoder="bf16", decoder="torch"),
        "bf16-sdpa": InferenceConfig(device=device, encoder="bf16", sdpa=True, decoder="torch"),
    }[name]
    started = time.perf_counter()
    predictor = MedSamPredictor(model, config)
    setup_s = time.perf_counter() - started
    crops = _crops(crops_n)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    predictor.encode(predictor.preprocess(crops[0]))  # warm-up
    sync()
    encode_s, preprocess_s = [], []
    embeddings = []
    for crop in crops:
        t0 = time.perf_counter()
        x = predictor.preprocess(crop)
        t1 = time.perf_counter()
        tensor = predictor.encode(x)
        sync()
        encode_s.append(time.perf_counter() - t1)
        preprocess_s.append(t1 - t0)
        embeddings.append(Embedding(tensor, crop.shape[:2], model.model_id))
    decode_ms: list[float] = []
    first_ms: list[float] = []
    all_ms: list[float] = []
    masks = []
    for i, (crop, embedding) in enumerate(zip(crops, embeddings, strict=True)):
        boxes = _boxes(crop.shape[:2], prompts, i)
        warm = Embedding(embedding.tensor, embedding.original_hw, embedding.model_id)
        predictor.predict_boxes(warm, boxes[:1])  # warm-up on a copy: `embedding` stays cold
        for k, box in enumerate(boxes):
            t0 = time.perf_counter()
            prediction = predictor.predict_boxes(embedding, [box])[0]
            sync()
            elapsed = (time.perf_counter() - t0) * 1000
            (first_ms if k == 0 else decode_ms).append(elapsed)
            all_ms.append(elapsed)
            masks.append(prediction.mask)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez_compressed(out, masks=np.array(masks, dtype=object), allow_pickle=True)
    (out.with_suffix(".json")).write_text(
        json.dumps(
            {
                "setup_s": setup_s,
                "encoder_s": float(np.median(encode_s)),
                "preprocess_s": float(np.median(preprocess_s)),
                "decoder_ms": float(np.median(decode_ms)),
                "decoder_first_ms": float(np.median(first_ms)),
                "decoder_mean_ms": float(np.mean(all_ms)),
                "peak_rss_mb": peak_mb,
                "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20
                if device == "cuda"
                else None,
            }
        )
    )


def _gpu_throughput(batch: int, rounds: int) -> dict[str, float]:
    """Images per second of the bf16 encoder on a GPU, batches of ``batch``."""
    import torch

    from inference.backend import build_vit_b
    from inference.fast import sdpa_encoder

    sam = build_vit_b().cuda()
    results = {}
    for name, encoder, dtype in (
        ("fp32", sam.image_encoder, None),
        ("bf16", sdpa_encoder(sam), torch.bfloat16),
    ):
        x = torch.rand(batch, 3, 1024, 1024, device="cuda")
        with torch.inference_mode():
            for _ in range(2):
                with torch.autocast(
                    "cuda", dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    encoder(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(rounds):
                with torch.autocast(
                    "cuda", dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    encoder(x)
            torch.cuda.synchronize()
        results[f"gpu_encoder_images_per_s_{name}"] = batch * rounds / (time.perf_counter() - t0)
    results["gpu_name"] = torch.cuda.get_device_name()  # type: ignore[assignment]
    return results


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    """Run every variant in its own process and compare them with the reference."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", default="reference,onnx,factored")  # also: bf16, bf16-sdpa
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--_variant", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    parser.add_argument("--_onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._variant:
        _variant(
            args._variant, args.crops, args.prompts, args.device, Path(args._out), Path(args._onnx)
        )
        return
    variants = args.variants.split(",")
    if args.device == "cuda":
        variants = [v for v in variants if v != "onnx"]  # ONNX Runtime runs on the CPU here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results: dict[str, dict[str, float]] = {}
    masks: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            out = Path(tmp) / f"{name}.npz"
            print(f"running {name} ...", file=sys.stderr, flush=True)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--crops",
                    str(args.crops),
                    "--prompts",
                    str(args.prompts),
                    "--device",
                    args.device,
                    "--_variant",
                    name,
                    "--_out",
                    str(out),
                    "--_onnx",
                    str(Path(tmp) / "onnx"),
                ],
                check=True,
                env=env,
            )
            results[name] = json.loads(out.with_suffix(".json").read_text())
            with np.load(out, allow_pickle=True) as data:
                masks[name] = data["masks"]
    ref = results["reference"]
    summary: dict[str, object] = {
        "device": args.device,
        "crops": args.crops,
        "prompts_per_crop": args.prompts,
        "threads": 1,
        "preprocess_s_per_crop": round(ref["preprocess_s"], 3),
        "encoder_s_per_crop_reference": round(ref["encoder_s"], 3),
        "decoder_ms_per_prompt_reference": round(ref["decoder_ms"], 2),
        "decoder_ms_first_prompt_reference": round(ref["decoder_first_ms"], 2),
        "peak_rss_mb_reference": round(ref["peak_rss_mb"]),
    }
    print(
        f"{'variant':<10} {'encoder s/crop':>15} {'x ref':>7} {'decoder ms':>11} {'x ref':>7} "
        f"{'1st prompt ms':>14} {'x ref (mean)':>13} {'peak RSS MB':>12} {'mask IoU min/mean':>18}"
    )
    for name, r in results.items():
        ious = [_iou(a, b) for a, b in zip(masks["reference"], masks[name], strict=True)]
        enc_x, dec_x = ref["encoder_s"] / r["encoder_s"], ref["decoder_ms"] / r["decoder_ms"]
        mean_x = ref["decoder_mean_ms"] / r["decoder_mean_ms"]
        print(
            f"{name:<10} {r['encoder_s']:>15.3f} {enc_x:>7.2f} {r['decoder_ms']:>11.2f} "
            f"{dec_x:>7.2f} {r['decoder_first_ms']:>14.2f} {mean_x:>13.2f} "
            f"{r['peak_rss_mb']:>12.0f} {min(ious):>9.4f}/{np.mean(ious):.4f}"
        )
        if name != "reference":
            summary[f"encoder_s_per_crop_{name}"] = round(r["encoder_s"], 3)
            summary[f"encoder_speedup_{name}"] = round(enc_x, 2)
            summary[f"decoder_ms_per_prompt_{name}"] = round(r["decoder_ms"], 2)
            summary[f"decoder_speedup_{name}"] = round(dec_x, 2)
            summary[f"decoder_ms_first_prompt_{name}"] = round(r["decoder_first_ms"], 2)
            summary[f"decoder_speedup_incl_first_{name}"] = round(mean_x, 2)
            summary[f"peak_rss_mb_{name}"] = round(r["peak_rss_mb"])
            summary[f"mask_iou_min_{name}"] = round(min(ious), 4)
            summary[f"mask_iou_mean_{name}"] = round(float(np.mean(ious)), 4)
    if args.device == "cuda":
        summary.update(
            {
                k: (round(v, 1) if isinstance(v, float) else v)
                for k, v in _gpu_throughput(args.gpu_batch, 5).items()
            }
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
