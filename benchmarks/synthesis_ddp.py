r"""Data-parallel pix2pix under torchrun: step time per rank and a check that replicas agree.

    torchrun --standalone --nproc-per-node 2 benchmarks/synthesis_ddp.py --size 32 --steps 20
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        benchmarks/synthesis_ddp.py --size 256 --steps 200 --checkpoint-dir /shared/run1

NCCL on GPUs, gloo on CPUs. Toy pairs stand in for a campaign's consensus pairs; the entry point
(not the library) reads torchrun's environment and passes it in. With ``--checkpoint-dir`` the run
resumes from ``latest.pt`` when one exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from synthesis.config import ModelConfig, SynthesisConfig, TrainConfig  # noqa: E402
from synthesis.ddp import from_torchrun, parameters_agree, setup, teardown  # noqa: E402
from synthesis.generator import Pix2Pix  # noqa: E402
from synthesis.train import PairData, Trainer  # noqa: E402
from tests.helpers.synthesis import toy_pairs  # noqa: E402


def main() -> None:
    """One rank of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, choices=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="per rank")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--checkpoint-dir", type=Path)
    args = parser.parse_args()
    ctx = from_torchrun(os.environ)
    device = setup(ctx)
    try:
        torch.set_num_threads(args.threads)
        n_down = {32: 5, 64: 6, 128: 7, 256: 8}[args.size]
        ngf = 8 if args.size <= 64 else 64
        cfg = SynthesisConfig(
            model=ModelConfig(size=args.size, n_down=n_down, ngf=ngf, ndf=ngf),
            train=TrainConfig(
                steps=args.steps,
                batch_size=args.batch,
                bf16=args.bf16,
                channels_last=args.bf16,
                fused_adam=device.type == "cuda" or not args.bf16,
                checkpoint_every=max(args.steps // 4, 1),
            ),
        )
        masks, images = toy_pairs(64, args.size, seed=0)
        gen = Pix2Pix(cfg.model, cfg.train, device=device, seed=0, distributed=True)
        trainer = Trainer(cfg, gen, PairData.from_arrays(masks, images), ctx.rank, ctx.world_size)
        if args.checkpoint_dir is not None:
            trainer.resume(args.checkpoint_dir)
        start, t0 = trainer.step, time.perf_counter()
        trainer.fit(checkpoint_dir=args.checkpoint_dir)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - t0) / max(trainer.step - start, 1)
        agree = parameters_agree(gen.parameters())
        if ctx.rank == 0:
            print(
                json.dumps(
                    {
                        "world_size": ctx.world_size,
                        "backend": ctx.backend,
                        "size": args.size,
                        "batch_per_rank": args.batch,
                        "resumed_at": start,
                        "steps": trainer.step,
                        "step_s": round(per_step, 4),
                        "images_per_s": round(ctx.world_size * args.batch / per_step, 2),
                        "replicas_agree": agree,
                        "last_losses": trainer.history.losses[-1],
                    }
                )
            )
    finally:
        teardown()


if __name__ == "__main__":
    main()
