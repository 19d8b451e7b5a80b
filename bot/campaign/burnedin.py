"""Burned-in text: find lines of glyph-like strokes so they can be blanked before crops are cut.

No OCR engine is available offline, so this is a tested heuristic: text strokes are thin (1-4 px)
and of high contrast against their local background (white, yellow or green overlay text on dark
ultrasound, dark text on light); the characters of one line have similar heights, share a
baseline and sit close together. White and black top-hats pick out thin strokes, connected
components are filtered by glyph shape, grouped into lines, and a line of at least three glyphs
about twice as wide as it is tall is reported, padded a little. Limits: text drawn over busy
texture of the same brightness, or a single isolated character, may be missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

P = {
    "se": 9,
    "high": 80,
    "low": 80,
    "hmin": 6,
    "hmax": 60,
    "wmax": 60,
    "fill_max": 0.85,
    "thin_ratio": 0.4,
    "dt_abs": 2.5,
    "dt_rel": 0.25,
    "tol_abs": 1.0,
    "tol_rel": 0.08,
    "gap": 1.5,
    "either": 0,
    "either_hratio": 1.4,
    "min_glyphs": 3,
    "min_aspect": 2.0,
    "loose_hratio": 1.6,
    "loose_dcy": 0.35,
    "loose_gap": 1.2,
    "band": 0.75,
    "salience": 1.2,
    "peak_frac": 0.4,
    "piece_min": 40,
    "absorb_hmax": 1.4,
    "absorb_band": 0.5,
    "absorb_dcy": 0.35,
    "absorb_gap": 1.0,
    "colour_core": 0.75,
    "col_abs": 40,
    "col_rel": 0.35,
    "align_rel": 0.2,
    "big_rel": 0.5,
    "vreach": 0.4,
    "small_gap": 0.4,
    "pad_abs": 3,
    "pad_rel": 0.1,
}


@dataclass(frozen=True)
class TextRegion:
    """A pixel box, xyxy, half-open, padded a little around a line of text."""

    x0: int
    y0: int
    x1: int
    y1: int


def _tophats(pixels: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.int16]]:
    k = int(P["se"])
    size = (k, k)

    def white(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
        return np.asarray(a.astype(np.int16) - ndimage.grey_opening(a, size=size), dtype=np.int16)

    def black(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
        return np.asarray(ndimage.grey_closing(a, size=size).astype(np.int16) - a, dtype=np.int16)

    if pixels.ndim == 2:
        return [white(pixels), black(pixels)]
    rgb = pixels.astype(np.int16)
    grey = np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    mx = pixels.max(axis=2)
    mn = pixels.min(axis=2)
    chroma = (mx - mn).astype(np.uint8)
    if not chroma.any():
        return [white(grey), black(grey)]
    bright = np.maximum.reduce([white(a) for a in (grey, mx, chroma)])
    dark = np.maximum.reduce([black(a) for a in (grey, mn)])
    return [bright, dark]


def _components(contrast: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    if P["low"] < P["high"]:
        from skimage.filters import apply_hysteresis_threshold

        mask = apply_hysteresis_threshold(contrast, P["low"], P["high"])
    else:
        mask = contrast >= P["high"]
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 7))
    objs = ndimage.find_objects(labels)
    box = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in objs], dtype=np.float64)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    dt = ndimage.distance_transform_edt(mask)
    dtmax = np.asarray(ndimage.maximum(dt, labels, np.arange(1, n + 1)), dtype=np.float64)
    peak = np.asarray(ndimage.maximum(contrast, labels, np.arange(1, n + 1)), dtype=np.float64)
    return np.column_stack([box, area, dtmax, peak])


def _shape_ok(stats: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    w = stats[:, 2] - stats[:, 0]
    h = stats[:, 3] - stats[:, 1]
    fill = stats[:, 4] / (w * h)
    thin = (w <= P["thin_ratio"] * h) | (h <= P["thin_ratio"] * w)
    ok = (fill <= P["fill_max"]) | thin | (np.maximum(h, w) < P["hmin"])
    ok &= stats[:, 5] <= np.maximum(P["dt_abs"], P["dt_rel"] * np.maximum(h, w))
    return ok


def _glyphs(stats: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    w = stats[:, 2] - stats[:, 0]
    h = stats[:, 3] - stats[:, 1]
    return (h >= P["hmin"]) & (h <= P["hmax"]) & (w <= P["wmax"])


def _graph(adj_fn, n: int) -> npt.NDArray[np.int32]:  # type: ignore[no-untyped-def]
    rows, cols = [], []
    for start in range(0, n, 512):
        sl = slice(start, min(n, start + 512))
        r, c = np.nonzero(adj_fn(sl))
        rows.append(r + start)
        cols.append(c)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, lab = connected_components(graph, directed=False)
    return np.asarray(lab, dtype=np.int32)


def _cores(stats: npt.NDArray[np.float64]) -> list[npt.NDArray[np.int64]]:
    n = len(stats)
    if n < P["min_glyphs"]:
        return []
    x0, y0, x1, y1 = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    h = y1 - y0

    def strict(sl: slice):  # type: ignore[no-untyped-def]
        hm = np.maximum(h[sl, None], h[None, :])
        tol = np.maximum(P["tol_abs"], P["tol_rel"] * hm)
        gap = np.maximum(x0[None, :] - x1[sl, None], x0[sl, None] - x1[None, :])
        at = np.abs(y0[sl, None] - y0[None, :]) <= tol
        ab = np.abs(y1[sl, None] - y1[None, :]) <= tol
        if P["either"]:
            hn = np.minimum(h[sl, None], h[None, :])
            adj = (at | ab) & (hm <= P["either_hratio"] * hn)
        else:
            adj = at & ab
        return adj & (gap <= P["gap"] * hm)

    core = _graph(strict, n)
    out = []
    for k in np.unique(core):
        idx = np.flatnonzero(core == k)
        if len(idx) < P["min_glyphs"]:
            continue
        medh = float(np.median(h[idx]))
        if x1[idx].max() - x0[idx].min() < P["min_aspect"] * medh:
            continue
        out.append(idx)
    return out


def _surround(
    contrast: npt.NDArray[np.int16], box: list[float], medh: float, others: list[list[float]]
) -> float:
    H, _W = contrast.shape
    x0, y0, x1, y1 = (round(v) for v in box)
    band = max(2, round(P["band"] * medh))
    vals = []
    for ya, yb in ((max(0, y0 - band), y0), (y1, min(H, y1 + band))):
        if yb <= ya:
            continue
        keep = np.ones((yb - ya, x1 - x0), dtype=bool)
        for o in others:
            oy0, oy1 = max(ya, int(o[1])), min(yb, int(o[3]))
            ox0, ox1 = max(x0, int(o[0])), min(x1, int(o[2]))
            if oy1 > oy0 and ox1 > ox0:
                keep[oy0 - ya : oy1 - ya, ox0 - x0 : ox1 - x0] = False
        vals.append(contrast[ya:yb, x0:x1][keep])
    sur = np.concatenate(vals) if vals else np.zeros(0)
    return float(np.percentile(sur, 99)) if sur.size else 0.0


def _tophats_src(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    return pixels.astype(np.int16)


def _grow(
    contrast: npt.NDArray[np.int16],
    src: npt.NDArray[np.int16],
    box: list[float],
    medh: float,
    peak: float,
    level: float,
) -> list[float]:
    H, _W = contrast.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    strong = contrast[y0:y1, x0:x1] >= max(level, P["colour_core"] * peak)
    sub = src[y0:y1, x0:x1]
    colour = np.median(sub[strong], axis=0)
    tol = max(P["col_abs"], P["col_rel"] * peak)
    reach = round(P["absorb_band"] * medh) + 1
    wy0, wy1 = max(0, y0 - reach), min(H, y1 + reach)
    win = src[wy0:wy1]
    diff = np.abs(win - colour)
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    pieces = (contrast[wy0:wy1] >= level) & (diff <= tol)
    labels, n = ndimage.label(pieces, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return box
    objs = ndimage.find_objects(labels)
    pb = np.array(
        [(s[1].start, s[0].start + wy0, s[1].stop, s[0].stop + wy0) for s in objs], dtype=np.float64
    )
    ph = pb[:, 3] - pb[:, 1]
    pcy = (pb[:, 1] + pb[:, 3]) / 2
    atol = P["align_rel"] * medh + 1
    aligned = (np.abs(pb[:, 3] - y1) <= atol) | (np.abs(pb[:, 1] - y0) <= atol)
    big = (ph >= P["big_rel"] * medh) & (ph <= P["absorb_hmax"] * medh) & aligned
    small = (ph < P["big_rel"] * medh) & (pcy >= y0 - 1) & (pcy <= y1 + 1)
    vlim0, vlim1 = y0 - P["vreach"] * medh, y1 + P["vreach"] * medh
    bx: list[float] = [float(v) for v in box]
    pb = pb[big | small]
    reach = np.where(big[big | small], P["absorb_gap"], P["small_gap"]) * medh  # type: ignore[assignment]
    for _ in range(200):
        sel = (pb[:, 2] >= bx[0] - reach) & (pb[:, 0] <= bx[2] + reach)
        if not sel.any():
            break
        nb = [
            min(bx[0], pb[sel, 0].min()),
            max(vlim0, min(bx[1], pb[sel, 1].min())),
            max(bx[2], pb[sel, 2].max()),
            min(vlim1, max(bx[3], pb[sel, 3].max())),
        ]
        if nb == bx:
            break
        bx = nb
    return bx


def find_text(pixels: npt.NDArray[np.uint8]) -> list[TextRegion]:
    """Text-like regions in an (H, W) grey or (H, W, 3) RGB uint8 image."""
    H, W = pixels.shape[:2]
    boxes: list[list[float]] = []
    src = pixels.astype(np.int16)
    for contrast in _tophats(pixels):
        stats = _components(contrast)
        if len(stats) == 0:
            continue
        shape_ok = _shape_ok(stats)
        gi = np.flatnonzero(_glyphs(stats) & shape_ok)
        cores = [gi[c] for c in _cores(stats[gi])]
        cboxes = [
            [stats[c, 0].min(), stats[c, 1].min(), stats[c, 2].max(), stats[c, 3].max()]
            for c in cores
        ]
        sh = stats[:, 3] - stats[:, 1]
        for i, c in enumerate(cores):
            medh = float(np.median(sh[c]))
            peak = float(np.median(stats[c, 6]))
            s99 = _surround(contrast, cboxes[i], medh, cboxes[:i] + cboxes[i + 1 :])
            if peak < P["salience"] * s99:
                continue
            level = max(P["piece_min"], P["peak_frac"] * peak)
            bx = _grow(contrast, src, cboxes[i], medh, peak, level)
            pad = P["pad_abs"] + P["pad_rel"] * medh
            boxes.append([bx[0] - pad, bx[1] - pad, bx[2] + pad, bx[3] + pad])
    return [
        TextRegion(
            max(0, int(np.floor(b[0]))),
            max(0, int(np.floor(b[1]))),
            min(W, int(np.ceil(b[2]))),
            min(H, int(np.ceil(b[3]))),
        )
        for b in boxes
    ]


def blank_regions(
    pixels: npt.NDArray[np.uint8], regions: list[TextRegion], fill: int = 0
) -> npt.NDArray[np.uint8]:
    """A copy with every region set to ``fill`` (all channels)."""
    out = pixels.copy()
    for r in regions:
        out[r.y0 : r.y1, r.x0 : r.x1] = fill
    return out


def overlaps(box_xyxy: tuple[float, float, float, float], regions: list[TextRegion]) -> bool:
    """Whether a float xyxy box intersects any region (touching edges do not)."""
    x0, y0, x1, y1 = box_xyxy
    return any(x0 < r.x1 and r.x0 < x1 and y0 < r.y1 and r.y0 < y1 for r in regions)
