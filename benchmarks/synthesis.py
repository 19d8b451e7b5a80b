"""pix2pix train-step and generation time: our path against the reference configuration.

The reference is pix2pix as its repository runs it: unet_256 + 70x70 PatchGAN, batch norm, fp32,
contiguous tensors, two discriminator forwards, PyTorch's default (per-tensor) Adam, batch 1.
Our path is what ``synthesis`` trains with: instance norm, one D forward for the fake and real
pairs, fused Adam, the innermost convolutions as matrix products (``gemm_max_pixels``), and
bf16 autocast + channels_last only where the CPU has native bf16 (AVX512-BF16 / AMX:
research/synthesis.md §3.1 measured them faster there; on AVX2 bf16 is emulated and ~20x slower).

Both models are built in one process and their steps are interleaved (ref, ablations, ours,
ref, ...), so a noisy shared machine slows them alike; warm-up steps are dropped and the median
of the timed steps is reported, wall and CPU time, with one fixed thread count. The ablation rows
show where the gain comes from. The last line is one JSON object with the figures.

    python benchmarks/synthesis.py                 # 256x256, 1 thread, ~2 minutes on 2 vCPUs
    python benchmarks/synthesis.py --size 128 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from synthesis.config import ModelConfig, TrainConfig  # noqa: E402
from synthesis.generator import Pix2Pix  # noqa: E402
from synthesis.networks import n_params  # noqa: E402


@dataclass
class Variant:
    """One configuration under test and its timings."""

    name: str
    model: Pix2Pix
    train_wall: list[float] = field(default_factory=list)
    train_cpu: list[float] = field(default_factory=list)
    gen_wall: list[float] = field(default_factory=list)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (else autocast emulates it, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build(size: int, norm: str, gemm: int, fused: bool, bf16: bool, device: str) -> Pix2Pix:
    """A full-size pix2pix (ngf = ndf = 64, 8 levels at 256) with the given options."""
    n_down = {256: 8, 128: 7, 64: 6}[size]
    model = ModelConfig(size=size, n_down=n_down, norm=norm, gemm_max_pixels=gemm)  # type: ignore[arg-type]
    train = TrainConfig(batch_size=1, fused_adam=fused, bf16=bf16, channels_last=bf16)
    return Pix2Pix(model, train, device=device, seed=0)


def main() -> None:
    """Run the interleaved benchmark and print one line per variant, then the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, choices=[64, 128, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gen-steps", type=int, default=8)
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--no-ablation", action="store_true", help="time only reference and ours")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.bf16 == "auto":
        bf16 = args.device.startswith("cuda") or native_bf16()
    else:
        bf16 = args.bf16 == "on"
    s = args.size
    variants = [Variant("reference", build(s, "batch", 0, False, False, args.device))]
    if not args.no_ablation:
        variants.append(Variant("instance", build(s, "instance", 0, False, False, args.device)))
        variants.append(
            Variant("instance+fused", build(s, "instance", 0, True, False, args.device))
        )
    variants.append(Variant("ours", build(s, "instance", 64, True, bf16, args.device)))

    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, s, s, generator=gen) > 0.5).float() * 2 - 1
    image = torch.rand(1, 1, s, s, generator=gen) * 2 - 1
    load_start = os.getloadavg()[0]
    for step in range(args.warmup + args.steps):
        for v in variants:
            wall, cpu = time.perf_counter(), time.process_time()
            v.model.train_step(mask, image)  # returns floats: the step has finished
            if step >= args.warmup:
                v.train_wall.append(time.perf_counter() - wall)
                v.train_cpu.append(time.process_time() - cpu)
    for step in range(args.warmup + args.gen_steps):
        for v in variants:
            wall = time.perf_counter()
            float(v.model.generate(mask).mean())
            if step >= args.warmup:
                v.gen_wall.append(time.perf_counter() - wall)

    med = statistics.median
    ref, ours = variants[0], variants[-1]
    for v in variants:
        print(
            f"{v.name:>15}: train step {med(v.train_wall):.3f} s wall (cpu {med(v.train_cpu):.3f}"
            f" s, min {min(v.train_wall):.3f}), generate {med(v.gen_wall) * 1e3:.0f} ms;"
            f" G {n_params(v.model.g_net):,} D {n_params(v.model.d_net):,} params"
        )
    summary = {
        "size": s,
        "batch": 1,
        "threads": args.threads,
        "device": args.device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ours": {"norm": "instance", "fused_adam": True, "gemm_max_pixels": 64, "bf16": bf16},
        "steps": args.steps,
        "gen_steps": args.gen_steps,
        "train_s": {v.name: round(med(v.train_wall), 4) for v in variants},
        "train_cpu_s": {v.name: round(med(v.train_cpu), 4) for v in variants},
        "generate_s": {v.name: round(med(v.gen_wall), 4) for v in variants},
        "train_speedup": round(med(ref.train_wall) / med(ours.train_wall), 3),
        "train_speedup_cpu": round(med(ref.train_cpu) / med(ours.train_cpu), 3),
        "generate_speedup": round(med(ref.gen_wall) / med(ours.gen_wall), 3),
        "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "torch": torch.__version__,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
