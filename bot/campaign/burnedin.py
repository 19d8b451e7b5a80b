"""Find and blank burned-in text (patient names, dates, banners, labels) in medical images.

Ultrasound screens, secondary captures and viewer screenshots often carry text drawn into the
pixels. Crops go to volunteers, so that text has to be found and blanked before any crop is cut.
No OCR engine is available, so this is a tested heuristic on connected components of
high-contrast strokes:

1. **Stroke contrast.** White top-hats (bright text on a darker background) and black top-hats
   (dark text on a lighter one) with a 9 x 9 square: anything thinner than about 8 px that
   stands out from its local background responds. A grey image gives one map per polarity. An
   RGB image gives five, each searched on its own: bright text in grey, in the max channel
   (saturated colours) and in chroma (max - min; yellow or green overlay text on a grey
   ultrasound stands out there, clean of the speckle); dark text in grey and in the max channel
   (black text on a coloured background).
2. **Glyph candidates.** Each map is thresholded at 80 grey levels and split into 8-connected
   components. A glyph candidate is 6-60 px tall and at most 60 px wide, and looks like strokes,
   not a blob: its box is at most 85 % filled (unless it is a thin bar such as ``I`` or ``-``)
   and no pixel lies deeper than ``max(2.5, 0.25 * size)`` px inside it. Filled discs such as
   nuclei fail the depth test; most speckle grains are too small.
3. **Line cores.** Characters of one line share a cap line and a baseline, so candidates whose
   tops *and* bottoms agree within ``max(1, 0.08 * h)`` px and whose gap is at most 1.5 x the
   height are chained. A core needs at least 3 such glyphs (4 when they are under 8 px tall) and
   must be at least twice as wide as tall.
4. **Salience.** Random texture (ultrasound speckle above all) now and then lines up three grains
   by chance; text, unlike texture, stands out from what lies just above and below it. The
   median glyph peak contrast must be at least 1.3 x the 99th percentile of the contrast in the
   bands (0.75 x height) just above and below the line; 1.35 x for weak evidence (a core of
   three glyphs, or of glyphs under 8 px). Rows covered by other cores are left out of the
   bands, so stacked lines of a text block do not veto each other.
5. **Growing the line.** A core may miss glyphs: punctuation, lowercase, a glyph fused with the
   anatomy behind it. The line's colour is the median of its strongest stroke pixels; pixels of
   that colour (within ``max(40, 0.35 * contrast)`` on every channel) and of at least
   ``max(40, 0.4 * contrast)`` contrast form pieces. The box grows along the line over
   glyph-sized pieces that sit on its baseline or cap line (gap up to 1.2 x height) and over small
   pieces inside its band (gap up to 0.5 x height); it grows at most 0.4 x height above and
   below the core and 6 x height left and right of it, so that it cannot creep along a row of
   bright speckle.
6. Each line's box is padded by ``3 + 0.1 * height`` px (antialiased fringes) and clipped to
   the image. Boxes of one row are merged when they overlap (one line found in two contrast
   maps) or are at most 4 x the glyph height apart (words of a line, with a short word such as
   "ID" between them that made no core of its own).

Limits, found on synthetic data (see ``tests/unit/test_burnedin.py``):

- Text over texture of about its own brightness can be missed: white or grey text over bright
  ultrasound speckle, small (10-14 px) text over a dense field of nuclei or over a dark lesion.
  Its glyphs fuse with the texture and no three of them stay aligned. Text in the black margins,
  in banners and on smooth anatomy (CT, skin) is found.
- Lines of one or two characters on their own ("L", "ID"), text under about 7 px cap height
  (a 10 px font), vertical or rotated text, glyphs taller than 60 px and strokes thicker than
  about 8 px are not found.
- A line is blanked as one box: where some glyphs of a line are not detected at its ends
  (fused with the background and far from the others), those glyphs stay.
- Anything that looks like a row of aligned glyph-like marks of one colour on a quiet
  background (a printed ruler's numbers, a row of calliper marks) is treated as text, and a
  box takes some background with it: the padding, and the gap between words it joins.
- Tuned on synthetic images (speckle, CT-like, histology-like, dermoscopy-like, vessels, the
  project's phantoms) with text drawn by Pillow; JPEG-compressed or real screens may differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Image = npt.NDArray[np.uint8]
Contrast = npt.NDArray[np.int16]
Stats = npt.NDArray[np.float64]  # one row per component: x0, y0, x1, y1, area, depth, peak
Box = list[float]  # x0, y0, x1, y1 (half-open, float while a line grows)

# 1. Stroke contrast.
_TOPHAT_SIDE = 9  # square structuring element; strokes up to ~8 px respond fully
_STROKE_CONTRAST = 80  # grey levels above (or below) the local background
# 2. Glyph candidates.
_GLYPH_MIN_H, _GLYPH_MAX_H, _GLYPH_MAX_W = 6, 60, 60
_MAX_FILL = 0.85  # area / box area, unless a thin bar
_THIN = 0.4  # width (or height) at most this fraction of the other side: a bar
_MAX_DEPTH_ABS, _MAX_DEPTH_REL = 2.5, 0.25  # deepest pixel, px and fraction of the longer side
# 3. Line cores.
_ALIGN_ABS, _ALIGN_REL = 1.0, 0.08  # tops and bottoms agree within max(abs, rel * h) px
_CORE_GAP = 1.5  # horizontal gap between chained glyphs, x height
_MIN_GLYPHS = 3
_SMALL_TEXT_H, _MIN_GLYPHS_SMALL = 8, 4  # tiny glyphs: chance alignments are commoner
_MIN_ASPECT = 2.0  # core width / height
_CHUNK = 256  # rows of the pairwise comparison per step
# 4. Salience.
_BAND = 0.75  # band height above and below a line, x height
_SALIENCE, _SALIENCE_WEAK = 1.3, 1.35  # glyph peak / band 99th percentile; weak: 3 or tiny
# 5. Growing the line.
_PIECE_FRAC, _PIECE_MIN = 0.4, 40  # piece contrast: max(min, frac * glyph peak)
_COLOUR_CORE = 0.75  # stroke pixels whose colour is the line's: contrast >= this * peak
_COLOUR_TOL_ABS, _COLOUR_TOL_REL = 40, 0.35  # colour distance (max over channels)
_WINDOW = 0.5  # rows searched above and below the core, x height
_PIECE_MAX_H = 1.4  # glyph-sized piece: up to this x height ...
_BIG_PIECE = 0.5  # ... and at least this x height, touching baseline or cap line:
_PIECE_ALIGN = 0.2  # within 1 + this x height
_VREACH = 0.4  # the box grows at most this x height above and below the core
_MAX_REACH = 6.0  # ... and this x height left and right of it
_BIG_GAP, _SMALL_GAP = 1.2, 0.5  # gaps bridged to glyph-sized and to small pieces, x height
_MAX_GROWTH_STEPS = 500
# 6. Padding and merging.
_PAD_ABS, _PAD_REL = 3, 0.1
_JOIN_GAP = 4.0  # boxes of one row this close (x glyph height) are one line


@dataclass(frozen=True)
class TextRegion:
    """A pixel box around one line of burned-in text: xyxy, half-open, padded, clipped."""

    x0: int
    y0: int
    x1: int
    y1: int


def find_text(pixels: Image) -> list[TextRegion]:
    """Text-like regions in an (H, W) grey or (H, W, 3) RGB uint8 image.

    Args:
        pixels: the image, (H, W) or (H, W, 3), dtype uint8.

    Returns:
        One padded box per detected text line, ordered top to bottom, then left to right;
        empty when the image holds no text-like line.

    Raises:
        ValueError: ``pixels`` is not a uint8 (H, W) or (H, W, 3) array.
    """
    _check_image(pixels)
    height, width = pixels.shape[:2]
    if min(height, width) < _GLYPH_MIN_H:
        return []
    colours = pixels.astype(np.int16)
    lines: list[tuple[Box, float]] = []
    for contrast in _contrast_maps(pixels):
        stats = _components(contrast)
        glyphs = np.flatnonzero(_glyph_like(stats))
        cores = [glyphs[core] for core in _cores(stats[glyphs])]
        core_boxes = [_box_of(stats[core]) for core in cores]
        for i, core in enumerate(cores):
            line_h = float(np.median(stats[core, 3] - stats[core, 1]))
            peak = float(np.median(stats[core, 6]))
            box = _grow(contrast, colours, core_boxes[i], line_h, peak)
            others = core_boxes[:i] + core_boxes[i + 1 :]
            weak = len(core) == _MIN_GLYPHS or line_h < _SMALL_TEXT_H
            salience = _SALIENCE_WEAK if weak else _SALIENCE
            if peak < salience * _band_level(contrast, box, line_h, others):
                continue
            pad = _PAD_ABS + _PAD_REL * line_h
            lines.append(([box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad], line_h))
    regions = [
        TextRegion(
            max(0, int(np.floor(b[0]))),
            max(0, int(np.floor(b[1]))),
            min(width, int(np.ceil(b[2]))),
            min(height, int(np.ceil(b[3]))),
        )
        for b in _merge_same_line(lines)
    ]
    return sorted(regions, key=lambda r: (r.y0, r.x0, r.y1, r.x1))


def blank_regions(pixels: Image, regions: Sequence[TextRegion], fill: int = 0) -> Image:
    """A copy with every region set to ``fill`` (all channels).

    Args:
        pixels: the image, (H, W) or (H, W, 3), dtype uint8.
        regions: boxes from :func:`find_text` (or any half-open pixel boxes); parts outside the
            image are ignored.
        fill: the grey level written, 0-255.

    Returns:
        A new array; ``pixels`` is left unchanged.

    Raises:
        ValueError: ``pixels`` is not a uint8 (H, W) or (H, W, 3) array, or ``fill`` is not in
            0-255.
    """
    _check_image(pixels)
    if not 0 <= fill <= 255:
        raise ValueError(f"fill must be in 0-255, got {fill}")
    out = pixels.copy()
    for region in regions:
        x0, y0 = max(region.x0, 0), max(region.y0, 0)
        if region.x1 > x0 and region.y1 > y0:
            out[y0 : region.y1, x0 : region.x1] = fill
    return out


def overlaps(box_xyxy: tuple[float, float, float, float], regions: Sequence[TextRegion]) -> bool:
    """Whether a float xyxy box intersects any region.

    Boxes are half-open: a box that only touches a region's edge does not overlap it, and an
    empty box (zero width or height) overlaps nothing.

    Args:
        box_xyxy: ``(x0, y0, x1, y1)`` in pixels.
        regions: boxes from :func:`find_text`.

    Returns:
        True when the intersection with some region has a positive area.
    """
    x0, y0, x1, y1 = box_xyxy
    if not (x1 > x0 and y1 > y0):
        return False
    return any(x0 < r.x1 and r.x0 < x1 and y0 < r.y1 and r.y0 < y1 for r in regions)


def _check_image(pixels: Image) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise ValueError("pixels must be a uint8 array")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"pixels must be (H, W) or (H, W, 3), got shape {pixels.shape}")


def _contrast_maps(pixels: Image) -> list[Contrast]:
    """Contrast maps (top-hats, int16, 0-255) in which text of some colour stands out.

    Grey images: the white and black top-hats. RGB: bright text in grey, in the max channel
    (saturated colours) or in chroma (coloured text on grey); dark text in grey or in the max
    channel (black text on a coloured background).
    """
    size = (_TOPHAT_SIDE, _TOPHAT_SIDE)

    def white(channel: Image) -> Contrast:
        opened = ndimage.grey_opening(channel, size=size)
        return np.asarray(channel.astype(np.int16) - opened, dtype=np.int16)

    def black(channel: Image) -> Contrast:
        closed = ndimage.grey_closing(channel, size=size)
        return np.asarray(closed.astype(np.int16) - channel, dtype=np.int16)

    if pixels.ndim == 2:
        return [white(pixels), black(pixels)]
    weights = np.array([0.299, 0.587, 0.114])
    grey = np.rint(pixels @ weights).astype(np.uint8)
    high = pixels.max(axis=2)
    chroma = high - pixels.min(axis=2)
    if not chroma.any():  # a grey image stored as RGB
        return [white(grey), black(grey)]
    return [white(grey), white(high), white(chroma), black(grey), black(high)]


def _components(contrast: Contrast) -> Stats:
    """Stats of the 8-connected components of strong strokes (depth and peak: glyph-sized)."""
    mask = contrast >= _STROKE_CONTRAST
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    stats = np.zeros((count, 7), dtype=np.float64)
    if count == 0:
        return stats
    slices = ndimage.find_objects(labels)
    stats[:, :4] = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices]
    stats[:, 4] = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    h = stats[:, 3] - stats[:, 1]
    w = stats[:, 2] - stats[:, 0]
    sized = (h >= _GLYPH_MIN_H) & (h <= _GLYPH_MAX_H) & (w <= _GLYPH_MAX_W)
    for index in np.flatnonzero(sized):
        ys, xs = slices[index]
        own = labels[ys, xs] == index + 1
        depth = ndimage.distance_transform_edt(np.pad(own, 1))
        stats[index, 5] = float(depth.max())
        stats[index, 6] = float(contrast[ys, xs][own].max())
    return stats


def _glyph_like(stats: Stats) -> npt.NDArray[np.bool_]:
    """Components of glyph size made of strokes (not filled blobs)."""
    w = stats[:, 2] - stats[:, 0]
    h = stats[:, 3] - stats[:, 1]
    sized = (h >= _GLYPH_MIN_H) & (h <= _GLYPH_MAX_H) & (w <= _GLYPH_MAX_W)
    fill = stats[:, 4] / np.maximum(w * h, 1)
    thin = (w <= _THIN * h) | (h <= _THIN * w)
    shallow = stats[:, 5] <= np.maximum(_MAX_DEPTH_ABS, _MAX_DEPTH_REL * np.maximum(h, w))
    return np.asarray(sized & ((fill <= _MAX_FILL) | thin) & shallow, dtype=np.bool_)


def _cores(stats: Stats) -> list[npt.NDArray[np.intp]]:
    """Groups of glyphs (indices into ``stats``) sharing cap line and baseline."""
    n = len(stats)
    if n < _MIN_GLYPHS:
        return []
    order = np.argsort(stats[:, 1], kind="stable")
    x0, y0, x1, y1 = (stats[order, k] for k in range(4))
    h = y1 - y0
    tol = np.maximum(_ALIGN_ABS, _ALIGN_REL * h)
    reach = float(tol.max())
    rows: list[npt.NDArray[np.intp]] = []
    cols: list[npt.NDArray[np.intp]] = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        lo = int(np.searchsorted(y0, y0[start] - reach, side="left"))
        hi = int(np.searchsorted(y0, y0[stop - 1] + reach, side="right"))
        a, b = slice(start, stop), slice(lo, hi)
        hm = np.maximum(h[a, None], h[None, b])
        limit = np.maximum(_ALIGN_ABS, _ALIGN_REL * hm)
        gap = np.maximum(x0[None, b] - x1[a, None], x0[a, None] - x1[None, b])
        adjacent = (np.abs(y0[a, None] - y0[None, b]) <= limit) & (
            np.abs(y1[a, None] - y1[None, b]) <= limit
        )
        adjacent &= gap <= _CORE_GAP * hm
        r, c = np.nonzero(adjacent)
        rows.append(r + start)
        cols.append(c + lo)
    r_all, c_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r_all)), (r_all, c_all)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    cores: list[npt.NDArray[np.intp]] = []
    for members in np.split(np.argsort(group, kind="stable"), np.cumsum(np.bincount(group))[:-1]):
        if len(members) < _MIN_GLYPHS:
            continue
        line_h = float(np.median(h[members]))
        if line_h < _SMALL_TEXT_H and len(members) < _MIN_GLYPHS_SMALL:
            continue
        if x1[members].max() - x0[members].min() < _MIN_ASPECT * line_h:
            continue
        cores.append(np.sort(order[members]))
    return cores


def _box_of(stats: Stats) -> Box:
    return [
        float(stats[:, 0].min()),
        float(stats[:, 1].min()),
        float(stats[:, 2].max()),
        float(stats[:, 3].max()),
    ]


def _band_level(contrast: Contrast, box: Box, line_h: float, others: list[Box]) -> float:
    """The 99th percentile contrast in the bands just above and below a line (0 if none).

    Rows that other cores near the line occupy are left out, so that lines of a text block do
    not count as each other's background.
    """
    height = contrast.shape[0]
    x0, y0, x1, y1 = (round(v) for v in box)
    band = max(2, round(_BAND * line_h))
    near = [o for o in others if o[0] < x1 + 2 * line_h and o[2] > x0 - 2 * line_h]
    values: list[npt.NDArray[np.int16]] = []
    for top, bottom in ((max(0, y0 - band), y0), (y1, min(height, y1 + band))):
        if bottom <= top:
            continue
        rows = np.ones(bottom - top, dtype=bool)
        for other in near:
            o0, o1 = max(top, int(other[1]) - 1), min(bottom, int(other[3]) + 1)
            if o1 > o0:
                rows[o0 - top : o1 - top] = False
        values.append(contrast[top:bottom, x0:x1][rows].ravel())
    pooled = np.concatenate(values) if values else np.zeros(0, dtype=np.int16)
    return float(np.percentile(pooled, 99)) if pooled.size else 0.0


def _grow(
    contrast: Contrast, colours: npt.NDArray[np.int16], core: Box, line_h: float, peak: float
) -> Box:
    """The core's box grown along its line over pieces of the line's colour."""
    height = contrast.shape[0]
    x0, y0, x1, y1 = (int(v) for v in core)
    level = max(_PIECE_MIN, _PIECE_FRAC * peak)
    strong = contrast[y0:y1, x0:x1] >= max(level, _COLOUR_CORE * peak)
    colour = np.median(colours[y0:y1, x0:x1][strong], axis=0)
    tolerance = max(_COLOUR_TOL_ABS, _COLOUR_TOL_REL * peak)
    margin = round(_WINDOW * line_h) + 1
    top, bottom = max(0, y0 - margin), min(height, y1 + margin)
    distance = np.abs(colours[top:bottom] - colour)
    if distance.ndim == 3:
        distance = distance.max(axis=2)
    pieces = (contrast[top:bottom] >= level) & (distance <= tolerance)
    labels, count = ndimage.label(pieces, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return list(core)
    found = np.array(
        [
            (s[1].start, s[0].start + top, s[1].stop, s[0].stop + top)
            for s in ndimage.find_objects(labels)
        ],
        dtype=np.float64,
    )
    ph = found[:, 3] - found[:, 1]
    pcy = (found[:, 1] + found[:, 3]) / 2
    align = _PIECE_ALIGN * line_h + 1
    on_line = (np.abs(found[:, 3] - y1) <= align) | (np.abs(found[:, 1] - y0) <= align)
    big = (ph >= _BIG_PIECE * line_h) & (ph <= _PIECE_MAX_H * line_h) & on_line
    small = (ph < _BIG_PIECE * line_h) & (pcy >= y0 - 1) & (pcy <= y1 + 1)
    leftmost, rightmost = x0 - _MAX_REACH * line_h, x1 + _MAX_REACH * line_h
    keep = (big | small) & (found[:, 0] <= rightmost) & (found[:, 2] >= leftmost)
    gap = np.where(big[keep], _BIG_GAP, _SMALL_GAP) * line_h
    found = found[keep]
    lowest, highest = y0 - _VREACH * line_h, y1 + _VREACH * line_h
    box = list(core)
    for _ in range(_MAX_GROWTH_STEPS):
        touching = (found[:, 2] >= box[0] - gap) & (found[:, 0] <= box[2] + gap)
        if not touching.any():
            break
        grown = [
            max(leftmost, min(box[0], float(found[touching, 0].min()))),
            max(lowest, min(box[1], float(found[touching, 1].min()))),
            min(rightmost, max(box[2], float(found[touching, 2].max()))),
            min(highest, max(box[3], float(found[touching, 3].max()))),
        ]
        if grown == box:
            break
        box = grown
    return box


def _merge_same_line(lines: list[tuple[Box, float]]) -> list[Box]:
    """Union of padded boxes of one row: one line found twice, or words of a line found apart.

    ``lines`` holds (padded box, glyph height). Boxes sharing half their height are merged when
    they overlap or are at most 4 x the glyph height apart: what lies between them (a short
    word such as "ID" that made no core of its own) is then blanked with them.
    """
    merged = [(list(box), line_h) for box, line_h in lines]
    changed = True
    while changed:
        changed = False
        for i, j in itertools.combinations(range(len(merged)), 2):
            (a, ha), (b, hb) = merged[i], merged[j]
            shared = min(a[3], b[3]) - max(a[1], b[1])
            gap = max(a[0], b[0]) - min(a[2], b[2])
            if shared < 0.5 * min(a[3] - a[1], b[3] - b[1]) or gap > _JOIN_GAP * min(ha, hb):
                continue
            union = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
            merged[i] = (union, min(ha, hb))
            del merged[j]
            changed = True
            break
    return [box for box, _ in merged]
