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
import logging
import shutil
import time
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage
from sqlmodel import col, select
from tqdm import tqdm

from bot.campaign.boxes import gold_for_box, parse_boxes
from bot.campaign.crops import CropTransform, mask_to_crop
from bot.campaign.export import export_campaign
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.progress import chart, progress
from bot.campaign.projects import ensure_campaign, summarise
from bot.campaign.proposals import ProposalRun, run_proposals, spec_from
from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Campaign, Image, Proposal, Task
from bot.jobs.proposals import make_runner
from bot.settings import Settings
from bot.sim.crowdrun import EXPERT, Launcher, run_crowd
from bot.sim.phantom import write_phantoms
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


def _hostile_upload(images: Path, out: Path) -> Path:
    """A zip of real images plus the kinds of file an upload must survive."""
    zip_path = out / "upload.zip"
    pngs = sorted(images.glob("*.png"))
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


async def run_demo(
    settings: Settings,
    *,
    n: int,
    seed: int,
    launch: Launcher | None = None,
    volunteers: int = 12,
) -> int:
    """Run the demo under ``<data_dir>/demo`` (wiped first) and print its summary.

    ``launch(settings, token, base_url, file_url)`` starts the Telegram bot against the emulator
    (the CLI passes it in; ``bot.sim`` does not import the bot); without it the Telegram step is
    skipped.
    """
    started = time.perf_counter()
    root = settings.data_dir / "demo"
    _fresh_dir(root)
    demo_settings = settings.model_copy(
        update={"data_dir": root, "database_url": None, "admins": str(EXPERT)}
    )
    phantom_dir = root / "phantom"
    with tqdm(total=n, desc="phantoms", unit="img", disable=None) as bar:
        manifest = write_phantoms(
            phantom_dir, n=n, style="mixed", seed=seed, progress=lambda: bar.update(1)
        )
    upload = _hostile_upload(phantom_dir / "images", root)
    await asyncio.to_thread(migrate.upgrade, demo_settings.resolved_database_url)
    services = Services.from_settings(demo_settings)
    runner = make_runner(
        "ray" if settings.ray_address else "local",
        workers=settings.workers,
        threads=settings.torch_threads,
        ray_address=settings.ray_address,
    )
    try:
        async with services.sessionmaker() as session:
            campaign = await ensure_campaign(session, CAMPAIGN, structure="lesion")
        masks, _ = index_masks([phantom_dir / "gold"], services.limits)
        boxes = parse_boxes((phantom_dir / "boxes.json").read_bytes(), "boxes.json")
        with tqdm(desc="ingest", unit="file", disable=None) as bar:
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
        with tqdm(desc="proposals", unit="crop", disable=None) as bar:
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
        telegram: list[str] = []
        if launch is not None:
            async with services.sessionmaker() as session:
                row = await session.get_one(Campaign, campaign.id)
                row.tutorial_tasks, row.min_answers, row.max_answers = 1, 3, 6
                row.answer_floor_seconds = 0.0  # virtual volunteers answer faster than people
                session.add(row)
                await session.commit()
            assert campaign.id is not None
            print("volunteers are answering in Telegram (emulated)...", flush=True)  # noqa: T201
            telegram = await run_crowd(
                services,
                demo_settings,
                campaign.id,
                phantom_dir / "truth",
                launch,
                volunteers=volunteers,
                seed=seed,
            )
        async with services.sessionmaker() as session:
            row = await session.get_one(Campaign, campaign.id)
            exported = await export_campaign(session, services.store, row, root / "exports")
            numbers = await progress(session, services.store, row)
        (root / "status.png").write_bytes(chart(numbers))
    finally:
        runner.close()
        await services.close()
    fusion = await asyncio.to_thread(_simulated_fusion, seed)
    lines = _ingest_lines(report, manifest["n"], summary.images, summary.tasks)
    lines += _proposal_lines(run, scores)
    lines += fusion
    lines += telegram
    lines += [
        f"coordinator /status chart   {root / 'status.png'}",
        f"dataset export              {exported.crops} crowd + {exported.gold} gold crops, "
        f"{exported.answers} answers: {exported.path} (COCO RLE, masks, NIfTI, datasheet)",
    ]
    lines += [
        f"ingest report               {root / 'ingest-report.json'}",
        f"contact sheet               {root / 'crops.png'} (box yellow, proposal red, gold green)",
        f"finished in                 {time.perf_counter() - started:.1f} s",
    ]
    print("\n".join(lines))  # noqa: T201
    return 0


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
