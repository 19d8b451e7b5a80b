"""Cards a volunteer is dealt besides the proposal: disguised gold crops, gold feedback, profile.

Gold crops are shown under an ``Augment`` (flips, quarter turns, a small shift, a grey-level
change) so an answer remembered from an earlier showing does not fit; the answer is mapped back
with ``invert_mask`` and scored by ``gold_feedback``. ``profile_card`` draws a volunteer's
standing. Pure functions over numpy arrays returning arrays or deterministic PNG bytes; the
conventions (shapes, output size, resampling) are those of ``bot.campaign.render``.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from bot.campaign.render import (
    PHONE_PNG_LEVEL,
    Color,
    as_rgb,
    check_mask,
    load_font,
    mix,
    outline,
    output_hw,
    resize_nearest,
)
from bot.store.codecs import encode_png

logger = logging.getLogger(__name__)

AGREED: Final[Color] = (0, 200, 0)
MISSED: Final[Color] = (0, 200, 255)
EXTRA: Final[Color] = (255, 0, 255)
TRUTH: Final[Color] = (255, 230, 0)
MAX_SHIFT_FRACTION: Final = 0.06

CARD_WH: Final = (800, 420)
ANONYMOUS: Final = "anonymous volunteer"
_BACKGROUND: Final = (18, 22, 30)
_PANEL: Final = (30, 36, 48)
_TEXT: Final = (236, 240, 245)
_MUTED: Final = (140, 150, 165)
_GOLD: Final = (255, 196, 64)
_CHIP: Final = (44, 84, 120)

_T = TypeVar("_T", bound=np.generic)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class GoldVerdict:
    """How an answer compares with a gold mask, in crop pixels."""

    dice: float  # 2|A & T| / (|A| + |T|); 1.0 when both are empty
    agreed: int  # answer & truth
    missed: int  # truth & ~answer
    extra: int  # answer & ~truth


def gold_feedback(
    crop: npt.NDArray[np.uint8],
    answer_mask: npt.NDArray[np.bool_],
    truth: npt.NDArray[np.bool_],
    *,
    scale_to: int = 512,
) -> tuple[bytes, GoldVerdict]:
    """Show a volunteer how their answer on a gold crop compares with the truth.

    The image fills agreed pixels green, missed ones (truth, not answered) cyan and extra ones
    (answered, not truth) magenta, half transparent, and outlines the truth in yellow.

    Args:
        crop: (H, W) grey or (H, W, 3) RGB uint8 image, in the frame of both masks.
        answer_mask: (H, W) boolean answer.
        truth: (H, W) boolean gold mask.
        scale_to: longest side of the output in pixels.

    Returns:
        PNG bytes of an RGB image (out_h, out_w) and the pixel counts with Dice.
    """
    rgb = as_rgb(crop)
    answer = check_mask(answer_mask, rgb.shape[:2], "answer_mask")
    gold = check_mask(truth, rgb.shape[:2], "truth")
    agreed, missed, extra = answer & gold, gold & ~answer, answer & ~gold
    total = int(answer.sum()) + int(gold.sum())
    verdict = GoldVerdict(
        dice=1.0 if total == 0 else 2.0 * int(agreed.sum()) / total,
        agreed=int(agreed.sum()),
        missed=int(missed.sum()),
        extra=int(extra.sum()),
    )
    out_hw = output_hw(rgb.shape[:2], scale_to)
    image = resize_nearest(rgb, out_hw)  # (out_h, out_w, 3)
    for part, color in ((agreed, AGREED), (missed, MISSED), (extra, EXTRA)):
        where = resize_nearest(part, out_hw)
        image[where] = mix(image[where], color, 0.45)
    image[outline(resize_nearest(gold, out_hw), 1)] = TRUTH
    return encode_png(image, level=PHONE_PNG_LEVEL), verdict


@dataclass(frozen=True)
class Augment:
    """A gold crop's disguise, so remembered answers do not carry over; identity by default.

    Geometry runs in this order: flip left-right, flip up-down, ``rot90`` quarter turns
    counter-clockwise (``np.rot90``), then a shift by ``shift_yx`` pixels in the rotated frame
    (content moves down/right for positive values). Intensity is ``grey * gain + bias``.
    """

    flip_h: bool = False
    flip_v: bool = False
    rot90: int = 0
    gain: float = 1.0
    bias: float = 0.0
    shift_yx: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.rot90 not in (0, 1, 2, 3):
            raise ValueError(f"rot90 must be 0..3 quarter turns, got {self.rot90}")
        if not (np.isfinite(self.gain) and self.gain > 0.0):
            raise ValueError(f"gain must be positive and finite, got {self.gain}")
        if not np.isfinite(self.bias):
            raise ValueError(f"bias must be finite, got {self.bias}")


def random_augment(rng: np.random.Generator, shape_hw: tuple[int, int]) -> Augment:
    """Draw an ``Augment`` for a crop of ``shape_hw``.

    Flips are fair coins, ``rot90`` is uniform in 0..3, ``gain`` in [0.85, 1.15], ``bias`` in
    [-15, 15] grey levels and each shift in +-6% of the crop's shorter side (whole pixels).
    """
    h, w = shape_hw
    if h < 1 or w < 1:
        raise ValueError(f"shape_hw must be positive, got {shape_hw}")
    limit = int(MAX_SHIFT_FRACTION * min(h, w))
    return Augment(
        flip_h=bool(rng.integers(2)),
        flip_v=bool(rng.integers(2)),
        rot90=int(rng.integers(4)),
        gain=float(rng.uniform(0.85, 1.15)),
        bias=float(rng.uniform(-15.0, 15.0)),
        shift_yx=(int(rng.integers(-limit, limit + 1)), int(rng.integers(-limit, limit + 1))),
    )


def apply_image(aug: Augment, crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Disguise a crop: (H, W[, 3]) uint8 -> (H, W[, 3]) uint8, or (W, H[, 3]) after odd turns.

    Pixels shifted in from outside repeat the nearest edge; intensities are rounded and clipped.
    """
    array = np.asarray(crop)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"crop must be uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    moved = _geometry(aug, array, "edge").astype(np.float64)
    return np.asarray(np.clip(np.rint(moved * aug.gain + aug.bias), 0, 255), dtype=np.uint8)


def apply_mask(aug: Augment, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Move an (H, W) mask as ``apply_image`` moves its crop; pixels shifted in are False."""
    return _geometry(aug, _as_plain_mask(mask, "mask"), "constant")


def invert_mask(aug: Augment, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Map a mask drawn on the disguised crop back to the original crop's frame.

    Exact inverse of the geometry for every pixel that stayed in frame; pixels the shift pushed
    out of the disguised crop come back False.
    """
    array = _shift(_as_plain_mask(mask, "mask"), (-aug.shift_yx[0], -aug.shift_yx[1]), "constant")
    array = np.rot90(array, -aug.rot90)
    if aug.flip_v:
        array = array[::-1]
    if aug.flip_h:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def _as_plain_mask(mask: npt.NDArray[np.bool_], name: str) -> npt.NDArray[np.bool_]:
    """Check an (H, W) boolean or integer mask; return it as bool."""
    array = np.asarray(mask)
    if array.ndim != 2 or (array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a boolean (H, W) mask, got {array.dtype} {array.shape}")
    return array.astype(bool)


def _geometry(aug: Augment, array: npt.NDArray[_T], mode: str) -> npt.NDArray[_T]:
    """Flips, quarter turns, then the shift (``mode`` as in ``np.pad`` for pixels shifted in)."""
    if aug.flip_h:
        array = array[:, ::-1]
    if aug.flip_v:
        array = array[::-1]
    return _shift(np.rot90(array, aug.rot90), aug.shift_yx, mode)


def _shift(array: npt.NDArray[_T], shift_yx: tuple[int, int], mode: str) -> npt.NDArray[_T]:
    """``out[y, x] = array[y - dy, x - dx]``, padding by ``mode`` (``"edge"`` or ``"constant"``)."""
    dy, dx = shift_yx
    h, w = array.shape[:2]
    pad = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad, mode=mode)  # type: ignore[call-overload]
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[y0 : y0 + h, x0 : x0 + w])


def profile_card(
    *,
    nickname: str | None,
    points: int,
    level: int,
    streak_days: int,
    accuracy: float | None,
    rank: int | None,
    badges: list[str],
    answers: int,
) -> bytes:
    """Draw a volunteer's profile card.

    Only the chosen ``nickname`` is shown, never a Telegram name; ``None`` or a nickname with
    nothing printable in ASCII shows "anonymous volunteer". Text is folded to ASCII because
    Pillow's bundled font has no other glyphs (no emoji). Badges that do not fit on two rows
    are summed up in a "+N more" chip.

    Args:
        nickname: the volunteer's chosen nickname, or None.
        points: points earned (>= 0).
        level: level reached (>= 0).
        streak_days: consecutive days with answers (>= 0).
        accuracy: mean gold score in [0, 1], or None before any gold task.
        rank: leaderboard position (>= 1), or None when unranked.
        badges: badge names, in display order.
        answers: answers given (>= 0).

    Returns:
        PNG bytes of an 800x420 RGB image.
    """
    counts = {"points": points, "level": level, "streak_days": streak_days, "answers": answers}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if accuracy is not None and not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1] or None, got {accuracy}")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be >= 1 or None, got {rank}")
    width = CARD_WH[0]
    card = PILImage.new("RGB", CARD_WH, _BACKGROUND)
    draw = ImageDraw.Draw(card)
    title = _ascii(nickname or "") or ANONYMOUS
    draw.text((32, 26), _fit(draw, title, load_font(32), 520), font=load_font(32), fill=_TEXT)
    draw.text((width - 32, 34), "MedCrowd", font=load_font(18), fill=_MUTED, anchor="ra")
    number = f"{points:,}"
    size = 96
    while size > 24 and draw.textlength(number, font=load_font(size)) > 380:
        size -= 4
    draw.text((32, 168), number, font=load_font(size), fill=_GOLD, anchor="ls")
    draw.text((34, 200), "points", font=load_font(22), fill=_MUTED, anchor="ls")
    draw.rounded_rectangle((440, 84, width - 32, 272), radius=14, fill=_PANEL)
    stats = (
        ("Level", str(level)),
        ("Streak", f"{streak_days} day" + ("" if streak_days == 1 else "s")),
        ("Gold accuracy", "no gold yet" if accuracy is None else f"{round(accuracy * 100)}%"),
        ("Rank", "unranked" if rank is None else f"#{rank:,}"),
        ("Answers", f"{answers:,}"),
    )
    for row, (label, shown) in enumerate(stats):
        y = 118 + 34 * row
        draw.text((460, y), label, font=load_font(20), fill=_MUTED, anchor="ls")
        draw.text((width - 52, y), shown, font=load_font(22), fill=_TEXT, anchor="rs")
    draw.line((32, 292, width - 32, 292), fill=_PANEL, width=2)
    draw.text((32, 318), "Badges", font=load_font(18), fill=_MUTED, anchor="ls")
    _draw_badges(draw, [_ascii(b) or "badge" for b in badges], top=332, right=width - 32)
    return encode_png(np.asarray(card, dtype=np.uint8), level=PHONE_PNG_LEVEL)


def _draw_badges(draw: ImageDraw.ImageDraw, names: list[str], *, top: int, right: int) -> None:
    """Lay badge chips out left to right on two rows; "+N more" for what does not fit."""
    font = load_font(18)
    if not names:
        draw.text((32, top + 22), "none yet", font=font, fill=_MUTED, anchor="ls")
        return
    x, y, row = 32, top, 0
    for index, name in enumerate(names):
        label = _fit(draw, name, font, 220)
        chip = int(draw.textlength(label, font=font)) + 28
        more = f"+{len(names) - index} more"
        reserve = int(draw.textlength(more, font=font)) + 36 if index < len(names) - 1 else 0
        if x + chip > right or (row == 1 and x + chip + reserve > right):
            if row == 0:
                x, y, row = 32, y + 40, 1
            else:
                _chip(draw, (x, y), more, font, _PANEL)
                return
        _chip(draw, (x, y), label, font, _CHIP)
        x += chip + 8


def _chip(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: _Font, fill: Color
) -> None:
    """One rounded chip with ``text``, 32 px tall, top-left at ``xy``."""
    x, y = xy
    right = x + int(draw.textlength(text, font=font)) + 28
    draw.rounded_rectangle((x, y, right, y + 32), radius=16, fill=fill)
    draw.text((x + 14, y + 16), text, font=font, fill=_TEXT, anchor="lm")


def _ascii(text: str) -> str:
    """Fold ``text`` to printable ASCII (accents dropped, other letters and emoji removed)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join("".join(ch for ch in folded if ch.isprintable()).split())


def _fit(draw: ImageDraw.ImageDraw, text: str, font: _Font, max_width: int) -> str:
    """``text``, shortened with "..." until it is at most ``max_width`` px wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "...", font=font) > max_width:
        text = text[:-1]
    return text.rstrip() + "..."
