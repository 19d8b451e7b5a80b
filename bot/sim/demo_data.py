"""The demo's data: its folder, the hostile upload, boxes kept, proposals scored, contact sheet."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage

from bot.campaign.boxes import gold_for_box
from bot.campaign.crops import CropTransform, mask_to_crop
from bot.campaign.services import Services
from bot.db.models import Image, Proposal, Task
from bot.store import codecs
from inference.prediction import dice

MARKER = ".medcrowd-demo"


def fresh_dir(root: Path) -> None:
    """Empty ``root`` for a new demo run, refusing to wipe a folder the demo did not create."""
    if root.exists():
        if not (root / MARKER).exists() and any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not a MedCrowd demo folder; not wiping it")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("created by `medcrowd demo`; wiped on each run\n")


def hostile_upload(images: Path, out: Path, names: list[str]) -> Path:
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


def contact_sheet(
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


def score_against_truth(
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


def trim_boxes(phantom_dir: Path, crops: int | None) -> list[str]:
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


# Files nobody here wrote: the test files pydicom and nibabel ship in their wheels.
REAL_FILES = (
    ("pydicom", "examples_ybr_color.dcm"),  # a 30-frame ultrasound cine, YBR_FULL_422 JPEG
    ("pydicom", "examples_palette.dcm"),  # palette-colour ultrasound with a text banner
    ("pydicom", "CT_small.dcm"),  # a CT slice with patient geometry
    ("pydicom", "rtdose.dcm"),  # an RT Dose grid: refused by name
    ("nibabel", "anatomical.nii"),  # a NIfTI volume
)


def real_upload(out: Path) -> Path:
    """A zip of real clinical test files (pydicom's and nibabel's own), for the demo's ingest."""
    import nibabel
    import pydicom

    roots = {
        "pydicom": Path(pydicom.__file__).parent / "data" / "test_files",
        "nibabel": Path(nibabel.__file__).parent / "tests" / "data",
    }
    zip_path = out / "real-files.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for library, name in REAL_FILES:
            archive.write(roots[library] / name, f"real/{name}")
    return zip_path
