"""The demo report's sections and summary numbers, from what the demo's stages produced."""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlmodel import col, select

from bot.campaign import arrays
from bot.campaign.ingest import IngestReport
from bot.campaign.proposals import ProposalRun
from bot.campaign.services import Services
from bot.db.models import Job, SyntheticPair
from bot.sim import plots
from bot.sim.crowdrun import CrowdRun
from bot.sim.enhancement_report import EnhancementResult
from bot.sim.outcomes import CrowdOutcome
from bot.sim.report import Report
from inference.fallback import FALLBACK_ID, FALLBACK_LABEL


def fill_report(
    book: Report,
    options: dict[str, Any],
    ingested: IngestReport,
    run: ProposalRun,
    scores: dict[str, list[float]],
    crowd: CrowdRun | None,
    root: Path,
    seconds: dict[str, float],
) -> None:
    """The report's sections and ``summary.json``, from what the stages produced."""
    counts = ingested.counts()
    every = [s for values in scores.values() for s in values]
    summary: dict[str, Any] = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
        "crops": counts["tasks"],
        "gold_crops": counts["gold_tasks"],
        "proposer": run.model_id,
        "proposal_mean_dice_all_crops": round(float(np.mean(every)), 4) if every else None,
        "stages": list(seconds),
        "seconds": dict(seconds),
    }
    outcome = crowd.outcome if crowd is not None else None
    if crowd is not None and outcome is not None and outcome.crops:
        retired = [c for c in outcome.crops if c.status == "retired"]
        summary.update(
            answers=outcome.answers_stored,
            finished_crops=len(outcome.crops),
            answers_per_finished_crop=round(outcome.answers_per_finished_crop() or 0, 3),
            answers_per_retired_crop=(
                round(float(np.mean([c.answers for c in retired])), 3) if retired else None
            ),
            fixed_redundancy=outcome.max_answers,
            consensus_mean_dice=round(outcome.mean("consensus") or 0, 4),
            proposal_mean_dice=round(outcome.mean("proposal") or 0, 4),
            majority_vote_mean_dice=round(outcome.mean("majority") or 0, 4),
            escalated_reviewed=len(crowd.reviewed),
            privacy=None
            if crowd.privacy is None
            else {
                "payloads": crowd.privacy.payloads,
                "crops_to_volunteers": crowd.privacy.crops_to_volunteers,
                "leaks": len(crowd.privacy.leaks),
                "unprotected": len(crowd.privacy.unprotected),
            },
            volunteers={v.profile: 0 for v in outcome.volunteers},
        )
        for v in outcome.volunteers:
            summary["volunteers"][v.profile] += 1
        book.numbers(
            [
                (str(summary["crops"]), "crops in the campaign"),
                (str(outcome.answers_stored), "answers in Telegram"),
                (f"{summary['consensus_mean_dice']:.3f}", "consensus Dice vs truth"),
                (f"{summary['majority_vote_mean_dice']:.3f}", "majority vote, same answers"),
                (f"{summary['proposal_mean_dice']:.3f}", "AI proposal alone"),
                (
                    f"{summary['answers_per_finished_crop']:.1f}",
                    f"answers per finished crop (fixed: {outcome.max_answers})",
                ),
            ]
        )
    book.summary.update(summary)
    _upload_section(book, ingested)
    book.heading("AI proposals")
    who = FALLBACK_LABEL if run.model_id == FALLBACK_ID else run.model_id
    book.text(f"Proposer: {who}. Dice of each crop's proposal against the hidden truth, by style:")
    book.table(
        ["style", "crops", "mean Dice"],
        [(k, len(v), float(np.mean(v))) for k, v in sorted(scores.items())]
        + [("all", len(every), float(np.mean(every)) if every else None)],
    )
    book.image(
        (root / "crops.png").read_bytes(),
        "Crops with their prompt box (yellow), the "
        "proposal (red) and, on gold crops, the expert's outline (green).",
    )
    if crowd is not None and outcome is not None:
        _crowd_section(book, crowd, outcome)
    book.heading("The coordinator")
    book.image(
        (root / "status.png").read_bytes(), "/status: the chart a coordinator gets in Telegram."
    )
    exports = sorted((root / "exports").glob("*.zip"))
    if exports:
        with zipfile.ZipFile(exports[-1]) as archive:
            names = archive.namelist()
        folders = sorted({n.split("/")[0] + ("/" if "/" in n else "") for n in names})
        book.text(
            f"/export delivered {exports[-1].name} ({exports[-1].stat().st_size / 1e6:.1f} MB): "
            + ", ".join(folders)
        )
        summary["export"] = str(exports[-1])
    book.summary.update(summary)


def timings_section(book: Report, seconds: dict[str, float]) -> None:
    """Seconds per stage, last in the report."""
    book.heading("Timings")
    book.image(plots.timings(list(seconds.items())), "Seconds per stage on this machine.")


@dataclass
class Synthetic:
    """The pairs the coordinator's /synthesize kept, and its job's numbers."""

    images: list[npt.NDArray[np.uint8]]
    masks: list[npt.NDArray[np.bool_]]
    scores: list[dict[str, Any]]
    candidates: int
    seconds: float
    status: str


async def load_synthetic(services: Services, campaign_id: int | None) -> Synthetic | None:
    """The pairs /synthesize kept for the campaign and its latest job (None: it never ran)."""
    async with services.sessionmaker() as session:
        job = (
            await session.exec(
                select(Job).where(Job.kind == "synthesis").order_by(col(Job.id).desc())
            )
        ).first()
        if job is None:
            return None
        pairs = (
            await session.exec(
                select(SyntheticPair)
                .where(SyntheticPair.campaign_id == campaign_id)
                .order_by(col(SyntheticPair.id))
            )
        ).all()
    seconds = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else 0.0
    )
    return Synthetic(
        [arrays.image(services.store, p.image_key) for p in pairs],
        [arrays.mask(services.store, p.mask_key) for p in pairs],
        [p.scores for p in pairs],
        int(job.params.get("n", 0)),
        round(seconds, 2),
        job.status.value if job.error is None else f"{job.status.value}: {job.error}",
    )


def synthesis_section(book: Report, synthetic: Synthetic, crowd: CrowdRun | None) -> None:
    """The synthetic pairs: what /synthesize did and a grid of the kept pairs."""
    book.heading("Synthetic pairs")
    book.text(
        "The coordinator sent /synthesize: pix2pix (mask -> image) trained on the campaign's "
        "finished crops (consensus and gold), new plausible masks from the sampler, and only the "
        "pairs the quality gate accepts (the judge segmenter recovers the mask, the intensities "
        "look real, no near-copy of a training image). "
        + (crowd.synthesis if crowd is not None else "")
    )
    if synthetic.images:
        book.image(
            plots.synthetic_grid(synthetic.images[:18], synthetic.masks[:18]),
            "Synthetic pairs the gate kept: each generated image with the outline of the mask it "
            "was generated from. They are exported apart from the real data (synthetic/).",
        )
    book.summary["synthetic_pairs_kept"] = len(synthetic.images)
    book.summary["synthetic_candidates"] = synthetic.candidates
    book.summary["synthesis_status"] = synthetic.status


def evaluation_section(book: Report, result: EnhancementResult, *, quick: bool) -> None:
    """Does synthesis help? The downstream U-Net's Dice on untouched real test crops."""
    book.heading("Does synthesis help? The downstream evaluation")
    book.text(
        "A small U-Net is trained on a share of the real labelled phantom crops, alone, with "
        "synthetic pairs (1:1 and 1:2) from a pix2pix trained on that same share, and on the "
        "synthetic pairs alone; Dice is measured on real test crops from other images. "
        + (
            "This quick run is one fraction and one seed, for illustration only."
            if quick
            else "This is a slice of the full grid; `medcrowd evaluate` runs all of it "
            "(docs/synthesis.md has the measured table)."
        )
    )
    rows = result.table()
    real_only = {r["fraction"]: r["dice_mean"] for r in rows if r["mode"] == "real only"}
    book.table(
        ["real labels", "training data", "real pairs", "pairs", "Dice", "± seeds", "vs real"],
        [
            (
                f"{row['fraction']:.0%}",
                row["mode"],
                row["n_real"],
                round(row["n_train"]),
                row["dice_mean"],
                row["dice_std"],
                f"{row['dice_mean'] - real_only[row['fraction']]:+.3f}",
            )
            for row in rows
        ],
    )
    if result.sources:
        book.text(
            "The same U-Net trained on all the labelled crops, with each source of labels "
            "(the crowd and its consensus simulated with fusion's volunteer model):"
        )
        book.table(
            ["labels", "label Dice vs truth", "test Dice", "± seeds"],
            [(s.source, s.label_dice, s.dice_mean, s.dice_std) for s in result.sources],
        )
    book.image(result.plot_png(), "Test Dice against the share of real labels, per training mix.")
    book.summary["enhancement"] = result.summary()


def _upload_section(book: Report, ingested: IngestReport) -> None:
    counts = ingested.counts()
    book.heading("The upload")
    book.text(
        f"{len(ingested.files)} files: {counts['ingested']} ingested "
        f"({counts['tasks']} crops, {counts['gold_tasks']} gold), {counts['duplicate']} "
        f"duplicate, {counts['rejected']} rejected, each with its reason:"
    )
    book.table(
        ["file", "reason"],
        [(f.file.split(":", 1)[-1], f.reason) for f in ingested.files if f.status != "ingested"],
    )


def _crowd_section(book: Report, crowd: CrowdRun, outcome: CrowdOutcome) -> None:
    book.heading("The crowd in Telegram")
    mix = ", ".join(
        f"{n} {p}" for p, n in sorted(Counter(v.profile for v in outcome.volunteers).items())
    )
    book.text(
        f"{len(outcome.volunteers)} virtual volunteers ({mix}) consented, did the tutorial and "
        f"answered {outcome.answers_stored} times in {crowd.seconds:.0f} s, pressing the bot's "
        f"buttons through the emulator. Fusion retired {outcome.statuses.get('retired', 0)} crops "
        f"and escalated {outcome.statuses.get('escalated', 0)} to an expert."
    )
    if outcome.samples:
        book.image(
            plots.samples(outcome.samples),
            "The crops where the crowd changed the outcome most: proposal, the volunteers' masks, "
            "the consensus and the hidden truth.",
        )
    if outcome.crops:
        book.image(
            plots.dice_per_crop(outcome.crops),
            "Dice against the truth on every finished crop: fusion's consensus, plain majority "
            "vote over the very same answers, and the AI proposal alone.",
        )
        book.image(
            plots.answers_per_crop(outcome.crops, outcome.max_answers),
            "Answers spent per finished crop: a crop retires as soon as its consensus is certain.",
        )
    if outcome.volunteers:
        book.image(
            plots.volunteers(outcome.volunteers),
            "What fusion learned about each volunteer, against their hidden profile.",
        )
        book.table(
            [
                "volunteer",
                "hidden profile",
                "answers",
                "points",
                "trust",
                "mask reliability",
                "vote skill",
                "gold Dice",
                "flagged",
            ],
            [
                (
                    v.name,
                    v.profile,
                    v.answers,
                    v.points,
                    v.trust,
                    v.reliability,
                    v.vote_skill,
                    v.gold_dice,
                    "adversary" if v.adversary else "",
                )
                for v in sorted(outcome.volunteers, key=lambda v: -v.trust)
            ],
        )
    book.text("Leaderboard (all time):")
    book.table(["rank", "volunteer", "points"], outcome.leaderboard)
    book.heading("The Mini App editor")
    if crowd.editor_png is not None:
        book.image(
            crowd.editor_png,
            "The tap-to-refine editor a volunteer opens from ✏️ Adjust (headless Chromium, phone "
            "viewport, Telegram's dark theme): tap inside or outside, brush, erase, undo, submit.",
            width=300,
        )
    else:
        book.text(f"No editor screenshot: {crowd.editor_note}.", note=True)
    picked = sum(1 for how in crowd.reviewed if how != "own")
    book.text(
        f"Expert review: {len(crowd.reviewed)} escalated crops settled through /review, "
        f"{picked} by picking a crowd candidate and {len(crowd.reviewed) - picked} by sending a "
        "mask; each became gold."
    )


def real_files_lines(report: IngestReport) -> list[str]:
    """The summary's lines about the real clinical files (pydicom's and nibabel's test files)."""
    counts = report.counts()
    lines = [
        f"real files (pydicom/nibabel) {len(report.files)} files, {counts['frames']} frames: "
        f"{counts['images']} images, {counts['tasks']} crops",
    ]
    for f in report.files:
        name = f.file.split(":", 1)[-1]
        what = f"{f.frames} frame(s) -> {f.images} image(s)" if f.status == "ingested" else f.reason
        lines.append(f"    - {name}: {f.status}, {what}")
        lines += [f"        {note}" for note in f.notes]
    return lines


def real_files_section(book: Report, report: IngestReport, volumes: list[str]) -> None:
    """The report's table of the real clinical files and what became of each."""
    book.heading("Real clinical files")
    book.text(
        "DICOM and NIfTI test files that pydicom and nibabel ship (nobody at MedCrowd wrote "
        "them), ingested into a second campaign: every frame decoded as pydicom and nibabel "
        "decode it, burned-in text blanked before any crop is cut, non-images refused by name. "
        "Its export gives each volume its mask back in the source's own frame: "
        + (", ".join(volumes) or "no volume")
        + "."
    )
    book.table(
        ["file", "status", "frames", "images", "crops", "notes"],
        [
            (
                f.file.split(":", 1)[-1],
                f.status if f.status == "ingested" else f"{f.status}: {f.reason}",
                f.frames,
                f.images,
                f.tasks,
                "; ".join(f.notes),
            )
            for f in report.files
        ],
    )
    book.summary["real_files"] = report.counts()


def ingest_lines(
    report: IngestReport, n_phantoms: int, images: int, tasks: dict[str, dict[str, int]]
) -> list[str]:
    """The summary's first lines: the upload and what the campaign holds."""
    counts = report.counts()
    lines = [
        "",
        "MedCrowd demo campaign",
        "======================",
        f"phantom images written      {n_phantoms}",
        f"upload files                {len(report.files)}",
        f"  ingested                  {counts['ingested']}",
        f"  duplicate                 {counts['duplicate']}",
        f"  rejected                  {counts['rejected']}",
    ]
    lines += [
        f"    - {f.file.split(':', 1)[-1]}: {f.reason}"
        for f in report.files
        if f.status == "rejected"
    ]
    lines += [
        f"images in campaign          {images}",
        f"tasks open (real)           {tasks['real']['open']}",
        f"tasks open (gold)           {tasks['gold']['open']}",
    ]
    return lines


def proposal_lines(run: ProposalRun, scores: dict[str, list[float]]) -> list[str]:
    """The summary's lines about the proposals and their Dice against the truth."""
    who = FALLBACK_LABEL if run.model_id == FALLBACK_ID else run.model_id
    lines = [
        f"proposals written           {run.written} of {run.pending} crops",
        f"  proposer                  {who}",
    ]
    every = [s for values in scores.values() for s in values]
    if every:
        lines.append(
            f"  Dice vs phantom truth     {np.mean(every):.3f} mean over {len(every)} crops"
        )
        lines += [
            f"    {style:<23} {np.mean(values):.3f} ({len(values)} crops)"
            for style, values in sorted(scores.items())
        ]
    return lines
