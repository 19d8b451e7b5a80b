"""The offline demo campaign: everything MedCrowd does so far, on phantom data, with no network.

1. phantom images with truth masks; an upload zip that mixes them with hostile files;
2. ingest: normalise, de-identify, cut crops, open real and gold tasks;
3. proposals: MedSAM with a configured checkpoint, else the labelled classical fallback, for every
   crop, scored against the phantom truth;
4. proposal-aware crowd fusion on a simulated crowd, against majority vote;
5. virtual volunteers of mixed skill answer the real crops in Telegram: the real bot, through
   the local Bot API emulator (consent, tutorial, gold feedback, accept/adjust/reject), with
   online fusion retiring crops; their consensus is scored against the phantom truth;
6. the dataset export (images, masks, COCO RLE, answers, datasheet);
7. a summary and a contact sheet of crops (box yellow, proposal red, gold green).
Synthesis joins in a later stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage
from sqlmodel import col, select
from tqdm import tqdm

from bot.campaign import arrays
from bot.campaign.boxes import gold_for_box, parse_boxes
from bot.campaign.crops import CropTransform, mask_to_crop
from bot.campaign.export import export_campaign
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.progress import chart, progress
from bot.campaign.projects import ensure_campaign, summarise
from bot.campaign.proposals import ProposalRun, run_proposals, spec_from
from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Campaign, Image, Job, Proposal, SyntheticPair, Task
from bot.jobs.proposals import make_runner
from bot.settings import Settings
from bot.sim import plots
from bot.sim.crowdrun import EXPERT, CrowdRun, Launcher, run_crowd
from bot.sim.outcomes import CrowdOutcome
from bot.sim.phantom import write_phantoms
from bot.sim.report import Report
from bot.store import codecs
from fusion.bench import available_methods, run_methods
from fusion.simulate import Scenario, simulate
from inference.fallback import FALLBACK_ID, FALLBACK_LABEL
from inference.prediction import dice

logger = logging.getLogger(__name__)

MARKER = ".medcrowd-demo"
CAMPAIGN = "demo-lesions"


def _fresh_dir(root: Path) -> None:
    """Empty ``root`` for a new demo run, refusing to wipe a folder the demo did not create."""
    if root.exists():
        if not (root / MARKER).exists() and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not a MedCrowd demo folder; not wiping it")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("created by `medcrowd demo`; wiped on each run\n")


def _hostile_upload(images: Path, out: Path, names: list[str]) -> Path:
    """A zip of real images plus the kinds of file an upload must survive."""
    zip_path = out / "upload.zip"
    pngs = [images / name for name in names]
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for image in pngs:
            archive.write(image, f"study/{image.name}")
        first = pngs[0].read_bytes()
        archive.writestr(f"copies/{pngs[0].name}", first)  # same pixels again
        archive.writestr("study/truncated.png", first[: len(first) // 3])
        archive.writestr("study/empty.png", b"")
        archive.writestr("study/notes.txt", b"patient list, not an image")
        archive.writestr("../escape.png", first)  # path traversal
        bomb = zipfile.ZipInfo("study/bomb.png")
        bomb.compress_type = zipfile.ZIP_BZIP2  # 64 MiB of zeros in a few dozen bytes
        archive.writestr(bomb, b"\0" * (64 << 20))
    return zip_path


def _edge(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(mask & ~ndimage.binary_erosion(mask), dtype=bool)


def _contact_sheet(
    services: Services,
    rows: Sequence[tuple[Task, Proposal | None]],
    path: Path,
    cols: int = 6,
) -> None:
    """Crops with their prompt box (yellow), proposal (red) and gold outline (green)."""
    tile = 160
    shown = rows[: cols * 3]
    sheet = PILImage.new("RGB", (cols * tile, max(1, (len(shown) + cols - 1) // cols) * tile))
    for i, (task, proposal) in enumerate(shown):
        crop = codecs.decode_png(services.store.get(task.crop_key))
        overlay = np.asarray(PILImage.fromarray(crop).convert("RGB")).copy()
        if proposal is not None:
            overlay[_edge(codecs.decode_mask(services.store.get(proposal.mask_key)))] = (
                235,
                60,
                50,
            )
        if task.gold_mask_key:
            overlay[_edge(codecs.decode_mask(services.store.get(task.gold_mask_key)))] = (
                40,
                220,
                90,
            )
        image = PILImage.fromarray(overlay)
        t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
        x0, y0, x1, y1 = t.to_crop((task.box_x0, task.box_y0, task.box_x1, task.box_y1))
        ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(250, 210, 40), width=1)
        image = image.resize((tile, tile), PILImage.Resampling.NEAREST)
        sheet.paste(image, ((i % cols) * tile, (i // cols) * tile))
    sheet.save(path)


def _score_against_truth(
    services: Services, rows: Sequence[tuple[Task, Image, Proposal | None]], truth_dir: Path
) -> dict[str, list[float]]:
    """Dice of each proposal against the phantom truth for its box, by phantom style."""
    scores: dict[str, list[float]] = defaultdict(list)
    truths: dict[str, npt.NDArray[np.bool_]] = {}
    for task, image, proposal in rows:
        if proposal is None:
            continue
        if image.source_name not in truths:
            truths[image.source_name] = codecs.decode_mask(
                (truth_dir / image.source_name).read_bytes()
            )
        box = (task.box_x0, task.box_y0, task.box_x1, task.box_y1)
        truth = gold_for_box(truths[image.source_name], box)
        t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
        mask = codecs.decode_mask(services.store.get(proposal.mask_key))
        scores[image.source_name.split("_")[0]].append(dice(mask, mask_to_crop(truth, t)))
    return scores


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs (the CLI's flags)."""

    out: Path | None = None  # default: <data_dir>/demo
    images: int = 24
    crops: int | None = 60  # real + gold crops kept from the phantoms' boxes (None: all)
    volunteers: int = 20
    answers: int = 25  # answers per virtual volunteer (fewer once no crop is left for them)
    style: str = "mixed"
    synthetic: int = 48  # candidate pairs the coordinator's /synthesize generates
    seed: int = 7
    quick: bool = False
    simulated_fusion: bool = True

    @classmethod
    def quick_run(cls, **changes: Any) -> DemoOptions:
        """The test-sized demo: the whole product in well under 90 seconds."""
        base = cls(images=8, crops=24, volunteers=7, answers=12, quick=True, simulated_fusion=False)
        return replace(base, **changes)


class Stages:
    """Times each stage and prints one line when it starts and one when it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Run the block as stage ``name``."""
        print(f"> {name}...", flush=True)  # noqa: T201
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        print(f"  {name} done in {self.seconds[name]:.1f} s", flush=True)  # noqa: T201


def _trim_boxes(phantom_dir: Path, crops: int | None) -> list[str]:
    """Keep ``crops`` boxes, taken round-robin over the images; returns the images kept."""
    path = phantom_dir / "boxes.json"
    boxes: dict[str, list[list[float]]] = json.loads(path.read_text())
    if crops is not None:
        kept: dict[str, list[list[float]]] = {}
        queues = {name: list(b) for name, b in boxes.items()}
        while sum(map(len, kept.values())) < crops and any(queues.values()):
            for name, queue in queues.items():
                if queue and sum(map(len, kept.values())) < crops:
                    kept.setdefault(name, []).append(queue.pop(0))
        boxes = kept
        path.write_text(json.dumps(boxes, indent=1))
    return sorted(boxes)


async def run_demo(
    settings: Settings, options: DemoOptions, *, launch: Launcher | None = None
) -> int:
    """Run the demo in ``options.out`` (wiped first), print its summary, write its report.

    ``launch(settings, token, base_url, file_url)`` starts the Telegram bot against the emulator
    (the CLI passes it in; ``bot.sim`` does not import the bot); without it the Telegram step is
    skipped.
    """
    started = time.perf_counter()
    stage = Stages()
    root = options.out or settings.data_dir / "demo"
    _fresh_dir(root)
    demo_settings = settings.model_copy(
        update={
            "data_dir": root,
            "database_url": None,
            "admins": str(EXPERT),
            "synthesis_preset": "demo",
            "synthesis_n": options.synthetic,
        }
    )
    book = Report(
        "MedCrowd demo campaign",
        "A citizen-science segmentation campaign run end to end on this machine, offline: phantom "
        "images with a hidden truth, AI proposals, virtual volunteers answering in the real "
        "Telegram bot through a local Bot API emulator, fusion into a consensus, expert review "
        "and the coordinator's export. The truth is used only to score the results.",
    )
    phantom_dir = root / "phantom"
    with (
        stage("phantoms"),
        tqdm(total=options.images, desc="phantoms", unit="img", disable=None) as bar,
    ):
        manifest = write_phantoms(
            phantom_dir,
            n=options.images,
            style=options.style,
            seed=options.seed,
            progress=lambda: bar.update(1),
        )
        kept = _trim_boxes(phantom_dir, options.crops)
    upload = _hostile_upload(phantom_dir / "images", root, kept)
    await asyncio.to_thread(migrate.upgrade, demo_settings.resolved_database_url)
    services = Services.from_settings(demo_settings)
    runner = make_runner(
        "ray" if settings.ray_address else "local",
        workers=settings.workers,
        threads=settings.torch_threads,
        ray_address=settings.ray_address,
    )
    crowd: CrowdRun | None = None
    synthetic: Synthetic | None = None
    try:
        async with services.sessionmaker() as session:
            campaign = await ensure_campaign(session, CAMPAIGN, structure="lesion")
        masks, _ = index_masks([phantom_dir / "gold"], services.limits)
        boxes = parse_boxes((phantom_dir / "boxes.json").read_bytes(), "boxes.json")
        with stage("ingest"), tqdm(desc="ingest", unit="file", disable=None) as bar:
            report = await ingest(
                services.sessionmaker,
                services.store,
                campaign,
                [upload],
                IngestOptions(masks=masks, boxes=boxes),
                services.limits,
                progress=lambda _s: bar.update(1),
            )
        report.write(root / "ingest-report.json")
        with stage("proposals"), tqdm(desc="proposals", unit="crop", disable=None) as bar:
            run = await run_proposals(
                services.sessionmaker,
                services.store,
                campaign,
                spec_from(demo_settings),
                runner,
                progress=lambda done, _total: bar.update(done - bar.n),
            )
        async with services.sessionmaker() as session:
            summary = await summarise(session, campaign)
            query = (
                select(Task, Image, Proposal)
                .join(Image, col(Task.image_id) == col(Image.id))
                .join(Proposal, col(Proposal.task_id) == col(Task.id), isouter=True)
                .order_by(col(Task.id))
            )
            rows = [(t, i, p) for t, i, p in (await session.exec(query)).all()]
        scores = _score_against_truth(services, rows, phantom_dir / "truth")
        _contact_sheet(services, [(t, p) for t, _, p in rows], root / "crops.png")
        if launch is not None and options.volunteers > 0:
            async with services.sessionmaker() as session:
                row = await session.get_one(Campaign, campaign.id)
                row.tutorial_tasks, row.min_answers, row.max_answers = 1, 3, 6
                row.answer_floor_seconds = 0.0  # virtual volunteers answer faster than people
                session.add(row)
                await session.commit()
            assert campaign.id is not None
            with stage("crowd in Telegram"):
                crowd = await run_crowd(
                    services,
                    demo_settings,
                    campaign.id,
                    phantom_dir / "truth",
                    launch,
                    volunteers=options.volunteers,
                    answers=options.answers,
                    seed=options.seed,
                )
            synthetic = await _synthetic(services, campaign.id)
            (root / "status.png").write_bytes(crowd.status_png)
            (root / "exports").mkdir(exist_ok=True)
            (root / "exports" / crowd.export_name).write_bytes(crowd.export_zip)
        else:
            with stage("export"):
                async with services.sessionmaker() as session:
                    row = await session.get_one(Campaign, campaign.id)
                    await export_campaign(session, services.store, row, root / "exports")
                    numbers = await progress(session, services.store, row)
                (root / "status.png").write_bytes(chart(numbers))
    finally:
        runner.close()
        await services.close()
    fusion: list[str] = []
    if options.simulated_fusion:
        with stage("fusion benchmark (simulated crowd)"):
            fusion = await asyncio.to_thread(_simulated_fusion, options.seed)
    lines = _ingest_lines(report, manifest["n"], summary.images, summary.tasks)
    lines += _proposal_lines(run, scores)
    lines += fusion
    if crowd is not None:
        lines += crowd.lines
    exports = sorted((root / "exports").glob("*.zip"))
    lines += [
        f"coordinator /status chart   {root / 'status.png'}",
        f"dataset export              {exports[-1] if exports else 'none'} "
        "(COCO RLE, masks, NIfTI, datasheet)",
        f"ingest report               {root / 'ingest-report.json'}",
        f"contact sheet               {root / 'crops.png'} (box yellow, proposal red, gold green)",
    ]
    if synthetic is not None:
        stage.seconds["synthesis (job in the bot)"] = synthetic.seconds
        lines.append(
            f"synthesis (/synthesize)     {len(synthetic.images)} of {synthetic.candidates} "
            f"synthetic pairs kept by the quality gate in {synthetic.seconds:.0f} s"
        )
    _fill_report(book, options, report, run, scores, crowd, root, stage)
    if synthetic is not None:
        _synthesis_section(book, synthetic, crowd)
    book.summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    page, numbers_json = book.write(root)
    lines += [
        f"report                      {page} (summary: {numbers_json})",
        f"finished in                 {time.perf_counter() - started:.1f} s",
    ]
    print("\n".join(lines))  # noqa: T201
    return 0


def _fill_report(
    book: Report,
    options: DemoOptions,
    ingested: IngestReport,
    run: ProposalRun,
    scores: dict[str, list[float]],
    crowd: CrowdRun | None,
    root: Path,
    stage: Stages,
) -> None:
    """The report's sections and ``summary.json``, from what the stages produced."""
    counts = ingested.counts()
    every = [s for values in scores.values() for s in values]
    summary: dict[str, Any] = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "crops": counts["tasks"],
        "gold_crops": counts["gold_tasks"],
        "proposer": run.model_id,
        "proposal_mean_dice_all_crops": round(float(np.mean(every)), 4) if every else None,
        "stages": list(stage.seconds),
        "seconds": dict(stage.seconds),
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
    book.heading("Timings")
    book.image(plots.timings(list(stage.seconds.items())), "Seconds per stage on this machine.")
    book.summary.update(summary)


@dataclass
class Synthetic:
    """The pairs the coordinator's /synthesize kept, and its job's numbers."""

    images: list[npt.NDArray[np.uint8]]
    masks: list[npt.NDArray[np.bool_]]
    scores: list[dict[str, Any]]
    candidates: int
    seconds: float
    status: str


async def _synthetic(services: Services, campaign_id: int | None) -> Synthetic | None:
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


def _synthesis_section(book: Report, synthetic: Synthetic, crowd: CrowdRun | None) -> None:
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


def _ingest_lines(
    report: IngestReport, n_phantoms: int, images: int, tasks: dict[str, dict[str, int]]
) -> list[str]:
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


def _proposal_lines(run: ProposalRun, scores: dict[str, list[float]]) -> list[str]:
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


def _simulated_fusion(seed: int) -> list[str]:
    """Crowd fusion on a simulated crowd (the bot that collects real answers comes later)."""
    scenario = Scenario(seed=seed, n_crops=60, crop_size=128, pool_size=40, answers_per_crop=(4, 8))
    methods = ["proposal", "majority-vote", "paf", "paf-adaptive"]
    # The quick published peers, when the bench extra is installed (crowd-kit's EM takes long).
    methods += [m for m in ("ck-ds-gate", "staple-roi") if m in available_methods()]
    results = run_methods(simulate(scenario), methods=methods)
    lines = ["simulated crowd fusion      60 crops, 40 volunteers (15 % lazy, 5 % adversarial)"]
    lines += [
        f"  {r.method:<25} Dice {r.mean_dice:.3f} (p10 {r.p10_dice:.3f}), "
        f"{r.answers_per_crop:.1f} answers per crop"
        for r in results
    ]
    return lines
