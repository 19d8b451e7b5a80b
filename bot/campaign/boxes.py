"""Where prompt boxes come from: a boxes file, an expert mask's components, or a grid."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from bot.campaign.crops import Box
from bot.campaign.errors import InvalidInput

MIN_COMPONENT_PIXELS = 4  # smaller specks in an expert mask are not worth a task
_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")

# A boxes file maps an image key to its boxes; the key is the file name (or its stem), and for a
# slice of a volume "name#slice".
BoxTable = dict[str, list[Box]]


def boxes_from_mask(mask_hw: npt.NDArray[np.bool_]) -> list[tuple[Box, npt.NDArray[np.bool_]]]:
    """One tight box per 8-connected component of a mask, with that component's own mask.

    Returns:
        ``[(box_xyxy, component_mask_hw), ...]`` ordered by position (top-left first).
    """
    labels, _ = ndimage.label(mask_hw, structure=np.ones((3, 3), dtype=bool))
    found: list[tuple[Box, npt.NDArray[np.bool_]]] = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels == index
        if int(component.sum()) < MIN_COMPONENT_PIXELS:
            continue
        ys, xs = slices
        box: Box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
        found.append((box, component))
    return sorted(found, key=lambda item: (item[0][1], item[0][0]))


def gold_for_box(mask_hw: npt.NDArray[np.bool_], box: Box) -> npt.NDArray[np.bool_]:
    """The part of an expert mask that a prompt box asks for.

    A component belongs to the box when at least half of its pixels lie inside the box.
    """
    labels, _ = ndimage.label(mask_hw, structure=np.ones((3, 3), dtype=bool))
    x0, y0, x1, y1 = (round(v) for v in box)
    inside = np.zeros_like(mask_hw, dtype=bool)
    inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    ids = np.unique(labels[inside & mask_hw])
    result = np.zeros_like(mask_hw, dtype=bool)
    for index in ids:
        component = labels == index
        if (component & inside).sum() * 2 >= component.sum():
            result |= component
    return result


def parse_grid(text: str) -> tuple[int, int]:
    """Parse ``ROWSxCOLS`` (e.g. ``2x3``) for grid boxes."""
    match = _GRID.match(text)
    if (
        match is None
        or int(match[1]) < 1
        or int(match[2]) < 1
        or int(match[1]) * int(match[2]) > 64
    ):
        raise InvalidInput(f"--grid must be ROWSxCOLS with at most 64 cells, got {text!r}")
    return int(match[1]), int(match[2])


def grid_boxes(width: int, height: int, rows: int, cols: int) -> list[Box]:
    """Boxes tiling a ``width`` x ``height`` image in ``rows`` x ``cols`` cells."""
    xs = np.linspace(0, width, cols + 1)
    ys = np.linspace(0, height, rows + 1)
    return [
        (float(xs[c]), float(ys[r]), float(xs[c + 1]), float(ys[r + 1]))
        for r in range(rows)
        for c in range(cols)
    ]


def _as_box(values: Any, where: str) -> Box:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float64
        raise InvalidInput(f"{where}: a box must be four numbers x0,y0,x1,y1") from None
    if len(numbers) != 4:
        raise InvalidInput(f"{where}: a box must be four numbers x0,y0,x1,y1, got {len(numbers)}")
    return (numbers[0], numbers[1], numbers[2], numbers[3])


def parse_boxes(data: bytes, filename: str) -> BoxTable:
    """Read a boxes file (xyxy pixels).

    JSON: ``{"img.png": [[x0, y0, x1, y1], ...], "vol.nii.gz#12": [...]}`` or a list of
    ``{"image": "img.png", "box": [x0, y0, x1, y1], "slice": 12}``.
    CSV: a header with ``image,x0,y0,x1,y1`` and optionally ``slice``.
    """
    table: defaultdict[str, list[Box]] = defaultdict(list)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{filename}: boxes file is not UTF-8 text") from None
    if filename.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))  # the csv module's newlines
        try:
            missing = {"image", "x0", "y0", "x1", "y1"} - set(reader.fieldnames or [])
            if missing:
                raise InvalidInput(f"{filename}: CSV lacks columns {sorted(missing)}")
            for line, row in enumerate(reader, start=2):
                key = _key(row["image"], row.get("slice"))
                box = [row[c] for c in ("x0", "y0", "x1", "y1")]
                table[key].append(_as_box(box, f"line {line}"))
        except csv.Error as error:  # a stray carriage return, a field past csv's size limit
            raise InvalidInput(f"{filename}: not readable as CSV ({error})") from None
        return dict(table)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{filename}: not valid JSON ({error.msg}, line {error.lineno})"
        ) from None
    except RecursionError:  # "[[[[...": nested past the interpreter's stack
        raise InvalidInput(f"{filename}: not valid JSON (nested too deeply)") from None
    if isinstance(parsed, dict):
        for key, boxes in parsed.items():
            if not isinstance(boxes, list):
                raise InvalidInput(f"{filename}: {key!r} must map to a list of boxes")
            table[str(key)].extend(_as_box(b, f"{filename}: {key}") for b in boxes)
    elif isinstance(parsed, list):
        for index, item in enumerate(parsed):
            if not isinstance(item, dict) or "image" not in item or "box" not in item:
                raise InvalidInput(f"{filename}: item {index} needs 'image' and 'box'")
            key = _key(str(item["image"]), item.get("slice"))
            table[key].append(_as_box(item["box"], f"{filename}: item {index}"))
    else:
        raise InvalidInput(f"{filename}: expected a JSON object or list of boxes")
    return dict(table)


def _key(image: str, slice_index: Any) -> str:
    if slice_index in (None, ""):
        return image
    try:
        index = int(slice_index)
    except (TypeError, ValueError, OverflowError):  # "abc", [1], 1e999 (inf), NaN
        raise InvalidInput(
            f"{image}: slice must be a whole number, got {str(slice_index)[:40]!r}"
        ) from None
    return f"{image}#{index}"
