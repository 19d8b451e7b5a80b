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
import logging
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from tqdm import tqdm

from bot.campaign.boxes import parse_boxes
from bot.campaign.export import export_campaign
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.progress import chart, progress
from bot.campaign.projects import ensure_campaign, summarise
from bot.campaign.proposals import run_proposals, spec_from
from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Campaign, CampaignStatus, Image, Proposal, Task
from bot.jobs.proposals import make_runner
from bot.settings import Settings
from bot.sim.crowdrun import EXPERT, CrowdRun, Launcher, run_crowd
from bot.sim.demo_data import (
    contact_sheet,
    fresh_dir,
    hostile_upload,
    real_upload,
    score_against_truth,
    trim_boxes,
)
from bot.sim.demo_report import (
    Synthetic,
    evaluation_section,
    fill_report,
    ingest_lines,
    load_synthetic,
    proposal_lines,
    real_files_lines,
    real_files_section,
    synthesis_section,
    timings_section,
)
from bot.sim.enhancement import EnhancementConfig, run_enhancement
from bot.sim.enhancement_report import EnhancementResult
from bot.sim.phantom import write_phantoms
from bot.sim.report import Report
from fusion.bench import available_methods, run_methods
from fusion.simulate import Scenario, simulate

logger = logging.getLogger(__name__)

CAMPAIGN = "demo-lesions"
REAL_CAMPAIGN = "demo-real-files"  # real clinical test files, apart from the phantom campaign


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
    synthesis_preset: str = "demo"  # 64 px pix2pix in about a minute (quick: "tiny", 32 px)
    evaluation: bool = True  # the downstream evaluation (real vs real + synthetic)
    seed: int = 7
    quick: bool = False
    simulated_fusion: bool = True

    @classmethod
    def quick_run(cls, **changes: Any) -> DemoOptions:
        """The test-sized demo: the whole product in well under 90 seconds."""
        base = cls(
            images=8,
            crops=24,
            volunteers=7,
            answers=30,  # enough for nearly every crop to finish: the comparisons need them
            synthetic=16,
            synthesis_preset="tiny",
            quick=True,
            simulated_fusion=False,
        )
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
    fresh_dir(root)
    demo_settings = settings.model_copy(
        update={
            "data_dir": root,
            "database_url": None,
            "admins": str(EXPERT),
            "synthesis_preset": options.synthesis_preset,
            "synthesis_n": options.synthetic,
        }
    )
    book = Report(
        "MedCrowd demo campaign",
        "A citizen-science segmentation campaign run end to end on this machine, offline: phantom "
        "images with a hidden truth, AI proposals, virtual volunteers answering in the real "
        "Telegram bot through a local Bot API emulator, fusion into a consensus, expert review, "
        "synthetic pairs and the coordinator's export. The truth is used only to score the "
        "results. Dice measures the overlap of a mask with the truth (1 is perfect).",
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
        kept = trim_boxes(phantom_dir, options.crops)
    upload = hostile_upload(phantom_dir / "images", root, kept)
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
        scores = score_against_truth(services, rows, phantom_dir / "truth")
        contact_sheet(services, [(t, p) for t, _, p in rows], root / "crops.png")
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
            synthetic = await load_synthetic(services, campaign.id)
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
        # After the crowd: the bot would otherwise start proposing these crops too.
        with stage("real clinical files"):
            real, real_volumes = await _real_files(services, root)
    finally:
        runner.close()
        await services.close()
    evaluation: EnhancementResult | None = None
    if options.evaluation:
        with stage("evaluation (does synthesis help?)"):
            evaluation = await asyncio.to_thread(run_enhancement, _evaluation_config(options))
    fusion: list[str] = []
    if options.simulated_fusion:
        with stage("fusion benchmark (simulated crowd)"):
            fusion = await asyncio.to_thread(_simulated_fusion, options.seed)
    lines = ingest_lines(report, manifest["n"], summary.images, summary.tasks)
    lines += real_files_lines(real)
    lines += proposal_lines(run, scores)
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
    fill_report(book, asdict(options), report, run, scores, crowd, root, stage.seconds)
    real_files_section(book, real, real_volumes)
    if synthetic is not None:
        synthesis_section(book, synthetic, crowd)
    if evaluation is not None:
        evaluation_section(book, evaluation, quick=options.quick)
        lines.append(
            "evaluation                  "
            + ", ".join(
                f"{row['fraction']:.0%} real: real only {row['dice_mean']:.3f}"
                if row["mode"] == "real only"
                else f"{row['mode']} {row['dice_mean']:.3f}"
                for row in evaluation.table()
                if row["mode"] in ("real only", "real + synthetic 1:2")
            )
        )
    book.summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    timings_section(book, stage.seconds)
    page, numbers_json = book.write(root)
    lines += [
        f"report                      {page} (summary: {numbers_json})",
        f"finished in                 {time.perf_counter() - started:.1f} s",
    ]
    print("\n".join(lines))  # noqa: T201
    return 0


def _evaluation_config(options: DemoOptions) -> EnhancementConfig:
    """A small slice of ``medcrowd evaluate``'s grid, sized to the demo's time budget."""
    if options.quick:
        return EnhancementConfig.quick(fractions=(0.25,), n_images=30)
    return EnhancementConfig.quick(fractions=(0.25, 1.0), seeds=(0, 1), n_images=60)


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


async def _real_files(services: Services, root: Path) -> tuple[IngestReport, list[str]]:
    """Ingest and export the real clinical test files into a draft campaign of their own.

    The campaign is never handed to volunteers; returns the ingest report and the export's
    volume files.
    """
    async with services.sessionmaker() as session:
        real_campaign = await ensure_campaign(session, REAL_CAMPAIGN, structure="lesion")
        real_campaign.status = CampaignStatus.DRAFT
        session.add(real_campaign)
        await session.commit()
        await session.refresh(real_campaign)
    real = await ingest(
        services.sessionmaker,
        services.store,
        real_campaign,
        [real_upload(root)],
        IngestOptions(grid=(2, 2)),  # four boxes: those clear of a text banner are kept
        services.limits,
    )
    real.write(root / "real-files-report.json")
    async with services.sessionmaker() as session:
        row = await session.get_one(Campaign, real_campaign.id)
        exported = await export_campaign(session, services.store, row, root / "real")
    with zipfile.ZipFile(exported.path) as archive:
        volumes = sorted(
            n.removeprefix("volumes/")
            for n in archive.namelist()
            if n.startswith("volumes/") and not n.endswith(".json")
        )
    return real, volumes
