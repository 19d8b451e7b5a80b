"""The evaluation's results: per-run records, the summary table, JSON and the plot.

One ``RunRecord`` per (real-label fraction, seed): the subset size, what the quality gate did and
the downstream test Dice of every training mode. ``EnhancementResult.table()`` aggregates over
seeds: mean, standard deviation, min and max per (fraction, mode), the gain over real-only and
whether that gain exceeds the seed spread, the acceptance criterion of research/synthesis.md §4.6
and issue 7 ("real + synthetic beats real-only by more than the seed-to-seed spread").
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # no display: figures are only ever written to PNG

import matplotlib.pyplot as plt
import numpy as np

from bot.sim.label_sources import SourceResult

MODES = ("real only", "real + synthetic 1:1", "real + synthetic 1:2", "synthetic only")
COLOURS = {
    "real only": "#2f2f2f",
    "real + synthetic 1:1": "#2f7ed8",
    "real + synthetic 1:2": "#2bb34b",
    "synthetic only": "#f28f43",
}


@dataclass(frozen=True)
class RunRecord:
    """One (fraction, seed) run: the labelled subset, the gate, and Dice per training mode.

    ``dice[mode]`` is the downstream model's mean Dice on the real test set; ``n_train[mode]`` how
    many pairs it trained on (real + synthetic).
    """

    fraction: float
    seed: int
    n_real: int
    candidates: int
    kept: int
    dice: dict[str, float]
    n_train: dict[str, int]
    gate_thresholds: dict[str, float]
    gate_failures: dict[str, int]
    seconds: dict[str, float]

    @property
    def acceptance(self) -> float:
        """Share of generated candidates the gate kept."""
        return self.kept / self.candidates if self.candidates else 0.0


@dataclass
class EnhancementResult:
    """Every run, the label-source comparison, the data set sizes, the config and timings."""

    runs: list[RunRecord]
    sources: list[SourceResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def fractions(self) -> list[float]:
        """The real-label fractions evaluated, ascending."""
        return sorted({r.fraction for r in self.runs})

    def cell(self, fraction: float, mode: str) -> list[float]:
        """Dice per seed of one (fraction, mode) cell."""
        return [r.dice[mode] for r in self.runs if r.fraction == fraction and mode in r.dice]

    def table(self) -> list[dict[str, Any]]:
        """One row per (fraction, mode): Dice mean/std/min/max over seeds, gain vs real only.

        ``beats_real`` is true when the mode's mean exceeds real-only's by more than the larger
        of the two seed standard deviations (the issue's "more than the seed spread"); with a
        single seed there is no spread to beat, so it is None (no verdict).
        """
        rows = []
        for fraction in self.fractions():
            runs = [r for r in self.runs if r.fraction == fraction]
            base = np.array(self.cell(fraction, MODES[0]))
            for mode in MODES:
                values = np.array(self.cell(fraction, mode))
                if values.size == 0:
                    continue
                spread = float(max(values.std(), base.std()))
                gain = float(values.mean() - base.mean())
                rows.append(
                    {
                        "fraction": fraction,
                        "mode": mode,
                        "n_real": int(np.mean([r.n_real for r in runs])),
                        "n_train": float(np.mean([r.n_train[mode] for r in runs])),
                        "dice_mean": float(values.mean()),
                        "dice_std": float(values.std()),
                        "dice_min": float(values.min()),
                        "dice_max": float(values.max()),
                        "gain": gain,
                        "spread": spread,
                        "beats_real": (
                            None if values.size < 2 else bool(mode != MODES[0] and gain > spread)
                        ),
                        "acceptance": float(np.mean([r.acceptance for r in runs])),
                        "seeds": len(values),
                    }
                )
        return rows

    def format_table(self) -> str:
        """The table as aligned text (what the CLI and the benchmark print)."""
        lines = [
            f"{'real %':>6} {'mode':<22} {'n real':>6} {'n train':>7} {'Dice':>7} {'± std':>6} "
            f"{'min':>6} {'max':>6} {'gain':>7} {'> spread':>8} {'gate':>5}"
        ]
        for row in self.table():
            lines.append(
                f"{row['fraction']:>6.0%} {row['mode']:<22} {row['n_real']:>6d} "
                f"{row['n_train']:>7.0f} {row['dice_mean']:>7.4f} {row['dice_std']:>6.4f} "
                f"{row['dice_min']:>6.3f} {row['dice_max']:>6.3f} {row['gain']:>+7.4f} "
                f"{('yes' if row['beats_real'] else '-') if row['mode'] != MODES[0] else '':>8} "
                f"{row['acceptance']:>5.0%}"
            )
        if self.sources:
            lines.append("")
            lines.append(
                f"{'label source':<18} {'label Dice':>10} {'test Dice':>9} {'± std':>6} {'min':>6}"
            )
            for s in self.sources:
                lines.append(
                    f"{s.source:<18} {s.label_dice:>10.4f} {s.dice_mean:>9.4f} "
                    f"{s.dice_std:>6.4f} {min(s.dice_per_seed):>6.3f}"
                )
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """The headline figures: Dice per (fraction, mode), the verdicts, the sources."""
        cells = {
            f"{row['fraction']:g}|{row['mode']}": round(row["dice_mean"], 4) for row in self.table()
        }
        verdict = {
            f"{row['fraction']:g}": row["beats_real"]
            for row in self.table()
            if row["mode"] == "real + synthetic 1:2"
        }
        return {
            "dice": cells,
            "real_plus_synthetic_1to2_beats_real": verdict,
            "label_sources": {s.source: round(s.dice_mean, 4) for s in self.sources},
            "seconds": round(float(self.info.get("seconds", 0.0)), 1),
        }

    def to_json(self) -> str:
        """Everything, as JSON: runs, table, sources, info."""
        body = {
            "info": self.info,
            "table": self.table(),
            "runs": [{**asdict(r), "acceptance": r.acceptance} for r in self.runs],
            "sources": [
                {**asdict(s), "dice_mean": s.dice_mean, "dice_std": s.dice_std}
                for s in self.sources
            ],
            "summary": self.summary(),
        }
        return json.dumps(body, indent=1)

    def plot_png(self) -> bytes:
        """Dice vs real-label fraction, one line per mode with seed min-max error bars."""
        with_sources = bool(self.sources)
        figure, axes = plt.subplots(
            1, 2 if with_sources else 1, figsize=(11 if with_sources else 6.5, 4.3), squeeze=False
        )
        left = axes[0][0]
        fractions = self.fractions()
        for k, mode in enumerate(MODES):
            means, low, high, xs = [], [], [], []
            for fraction in fractions:
                values = self.cell(fraction, mode)
                if values:
                    xs.append(100 * fraction * (1 + 0.015 * (k - 1.5)))  # dodge the bars apart
                    means.append(float(np.mean(values)))
                    low.append(means[-1] - min(values))
                    high.append(max(values) - means[-1])
            left.errorbar(
                xs, means, yerr=[low, high], marker="o", capsize=3, label=mode, color=COLOURS[mode]
            )
        left.set_xscale("log")
        left.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
        left.set_xlabel("share of the real labelled pairs used")
        left.set_ylabel("Dice on the untouched real test set")
        left.set_title("Downstream U-Net: mean over seeds, bars = seed min-max", fontsize=10)
        left.legend(fontsize=8, loc="lower right")
        left.grid(alpha=0.3)
        if with_sources:
            right = axes[0][1]
            names = [s.source for s in self.sources]
            means = [s.dice_mean for s in self.sources]
            err = [
                [m - min(s.dice_per_seed) for m, s in zip(means, self.sources, strict=True)],
                [max(s.dice_per_seed) - m for m, s in zip(means, self.sources, strict=True)],
            ]
            bars = right.bar(names, means, yerr=err, capsize=4, color="#2f7ed8")
            right.bar_label(bars, fmt="%.3f", padding=6)
            right.set_ylim(max(0.0, min(means) - 0.1), 1.0)
            right.set_ylabel("Dice on the untouched real test set")
            right.set_title("Training labels: where they came from (all real pairs)", fontsize=10)
        out = io.BytesIO()
        figure.savefig(out, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        return out.getvalue()
