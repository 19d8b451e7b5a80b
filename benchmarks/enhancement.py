"""Does synthesis help? The downstream evaluation of issue 7 (research/synthesis.md §4.6).

Runs ``bot.sim.enhancement`` (what ``medcrowd evaluate`` runs): phantom ultrasound crops, 10 / 25 /
50 / 100 % of the real labelled pairs, each as real only, real + synthetic 1:1 and 1:2 and
synthetic only, 3 seeds, Dice of a small U-Net on an untouched real test set; then the same
model trained on the phantom truth, the crowd consensus and the raw proposals. Prints the table;
the last line is one JSON object with the figures.

    .venv/bin/python benchmarks/enhancement.py [--quick] [--seeds 3] [--fractions 0.1 0.25 0.5 1]
        [--out DIR]   # also writes enhancement.json and enhancement.png there
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.sim.enhancement import EnhancementConfig, run_enhancement, total_steps  # noqa: E402


def main() -> None:
    """Parse the flags, run the evaluation, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small run (about a minute)")
    parser.add_argument("--seeds", type=int, help="number of seeds (3)")
    parser.add_argument("--fractions", type=float, nargs="+", help="real-label shares")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", type=Path, help="write enhancement.json and .png here")
    args = parser.parse_args()
    cfg = EnhancementConfig.quick() if args.quick else EnhancementConfig()
    cfg = dataclasses.replace(cfg, threads=args.threads)
    if args.seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(range(args.seeds)))
    if args.fractions is not None:
        cfg = dataclasses.replace(cfg, fractions=tuple(sorted(set(args.fractions))))
    done = [0]
    total = total_steps(cfg)

    def progress(what: str) -> None:
        done[0] += 1
        print(f"[{done[0]}/{total}] {what}", file=sys.stderr, flush=True)

    result = run_enhancement(cfg, progress=progress)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "enhancement.json").write_text(result.to_json())
        (args.out / "enhancement.png").write_bytes(result.plot_png())
    print(result.format_table())
    runs = [
        {"fraction": r.fraction, "seed": r.seed, "acceptance": round(r.acceptance, 3), **r.seconds}
        for r in result.runs
    ]
    print(json.dumps({**result.summary(), "table": result.table(), "runs": runs}))


if __name__ == "__main__":
    main()
