"""The offline demo campaign: everything MedCrowd does, on phantom data, with no network.

At this stage: phantom images with truth masks, an upload that mixes them with hostile files,
ingest (normalise, de-identify, cut crops, open real and gold tasks), and a summary with a contact
sheet of crops. Later stages add proposals, volunteers, fusion and synthesis.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage
from sqlmodel import col, select
from tqdm import tqdm

from bot.campaign.boxes import parse_boxes
from bot.campaign.crops import CropTransform
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.projects import ensure_campaign, summarise
from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Task
from bot.settings import Settings
from bot.sim.phantom import write_phantoms
from bot.store import codecs

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
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for image in sorted(images.glob("*.png")):
            archive.write(image, f"study/{image.name}")
        first = sorted(images.glob("*.png"))[0].read_bytes()
        archive.writestr(f"copies/{sorted(images.glob('*.png'))[0].name}", first)  # same pixels
        archive.writestr("study/truncated.png", first[: len(first) // 3])
        archive.writestr("study/empty.png", b"")
        archive.writestr("study/notes.txt", b"patient list, not an image")
        archive.writestr("../escape.png", first)  # path traversal
        bomb = zipfile.ZipInfo("study/bomb.png")
        bomb.compress_type = zipfile.ZIP_BZIP2  # 64 MiB of zeros in a few dozen bytes
        archive.writestr(bomb, b"\0" * (64 << 20))
    return zip_path


def _contact_sheet(services: Services, tasks: list[Task], path: Path, cols: int = 6) -> None:
    """Crops with their prompt box (yellow) and gold outline (green), ``cols`` per row."""
    tile = 160
    shown = tasks[: cols * 2]
    sheet = PILImage.new("RGB", (cols * tile, max(1, (len(shown) + cols - 1) // cols) * tile))
    for i, task in enumerate(shown):
        crop = codecs.decode_png(services.store.get(task.crop_key))
        image = PILImage.fromarray(crop).convert("RGB")
        t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
        x0, y0, x1, y1 = t.to_crop((task.box_x0, task.box_y0, task.box_x1, task.box_y1))
        draw = ImageDraw.Draw(image)
        if task.gold_mask_key:
            gold = codecs.decode_mask(services.store.get(task.gold_mask_key))
            edge = gold & ~ndimage.binary_erosion(gold)
            overlay = np.asarray(image).copy()
            overlay[edge] = (40, 220, 90)
            image = PILImage.fromarray(overlay)
            draw = ImageDraw.Draw(image)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(250, 210, 40), width=2)
        image = image.resize((tile, tile), PILImage.Resampling.BILINEAR)
        sheet.paste(image, ((i % cols) * tile, (i // cols) * tile))
    sheet.save(path)


async def run_demo(settings: Settings, *, n: int, seed: int) -> int:
    """Run the demo under ``<data_dir>/demo`` (wiped first) and print its summary."""
    started = time.perf_counter()
    root = settings.data_dir / "demo"
    _fresh_dir(root)
    demo_settings = settings.model_copy(update={"data_dir": root, "database_url": None})
    phantom_dir = root / "phantom"
    with tqdm(total=n, desc="phantoms", unit="img", disable=None) as bar:
        manifest = write_phantoms(
            phantom_dir, n=n, style="mixed", seed=seed, progress=lambda: bar.update(1)
        )
    upload = _hostile_upload(phantom_dir / "images", root)
    url = demo_settings.resolved_database_url
    await asyncio.to_thread(migrate.upgrade, url)
    services = Services.from_settings(demo_settings)
    try:
        async with services.sessionmaker() as session:
            campaign = await ensure_campaign(session, CAMPAIGN, structure="lesion")
        masks, _ = index_masks([phantom_dir / "gold"], services.limits)
        boxes = parse_boxes((phantom_dir / "boxes.json").read_bytes(), "boxes.json")
        options = IngestOptions(masks=masks, boxes=boxes)
        with tqdm(desc="ingest", unit="file", disable=None) as bar:
            report = await ingest(
                services.sessionmaker,
                services.store,
                campaign,
                [upload],
                options,
                services.limits,
                progress=lambda _s: bar.update(1),
            )
        report.write(root / "ingest-report.json")
        async with services.sessionmaker() as session:
            summary = await summarise(session, campaign)
            tasks = list((await session.exec(select(Task).order_by(col(Task.id)))).all())
        _contact_sheet(services, tasks, root / "crops.png")
    finally:
        await services.close()
    _print_summary(
        report, manifest["n"], summary.images, summary.tasks, root, time.perf_counter() - started
    )
    return 0


def _print_summary(
    report: IngestReport,
    n_phantoms: int,
    images: int,
    tasks: dict[str, dict[str, int]],
    root: Path,
    seconds: float,
) -> None:
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
        f"ingest report               {root / 'ingest-report.json'}",
        f"crop contact sheet          {root / 'crops.png'}",
        f"finished in                 {seconds:.1f} s",
    ]
    print("\n".join(lines))  # noqa: T201
