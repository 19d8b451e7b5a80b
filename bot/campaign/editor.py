"""The Mini App editor's use cases: open a leased crop, re-run the decoder on taps, submit a mask.

The editor works on the crop as the volunteer sees it (a gold crop's augmentation applied, as in
the chat); everything it sends back is mapped to the crop's own frame here, so answers from the
Mini App and from the chat grid are stored alike, through the same ``answers.submit``.

Authorization lives here, not in the web layer: a caller is a Telegram user id (from validated
initData, nothing else), and may read, refine and answer only a crop leased to them. The editor
keeps its working state (taps, brush strokes, undo) in the page; the server stays stateless
between taps, so a tap costs one authorization read and one decoder pass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, tasks
from bot.campaign.answers import Submitted, submit
from bot.campaign.crops import CropTransform
from bot.campaign.crowd import Crowd
from bot.campaign.errors import InvalidInput, NoConsent, NotAllowed, StaleTask
from bot.campaign.refine import Refiner
from bot.campaign.routing import assignment_by_token
from bot.db.models import Assignment, Task, Verdict, Volunteer
from bot.db.types import utcnow
from bot.store.files import FileStore

Mask = npt.NDArray[np.bool_]
Box = tuple[float, float, float, float]
Point = tuple[float, float, int]  # x, y in pixels of the displayed crop; label 1 inside, 0 outside
MAX_POINTS = 64
TAP_PAD = 2.0  # pixels a box grows beyond a positive tap outside it (MedSAM liked loose boxes)


@dataclass(frozen=True)
class EditorCrop:
    """What the editor page shows: every image and mask in the displayed frame."""

    token: str
    structure: str
    crop: npt.NDArray[np.uint8]
    proposal: Mask
    working: Mask
    candidates: list[tasks.Choice]
    takes_points: bool


@dataclass(frozen=True)
class RefineJob:
    """Everything one decoder pass needs, read under the caller's lease (no session needed)."""

    assignment: Assignment
    crop: npt.NDArray[np.uint8]  # the crop's own frame
    box: Box  # the crop's prompt box, crop frame


@dataclass(frozen=True)
class EditorAnswer:
    """What submitting from the editor did, and where the volunteer's chat message is."""

    submitted: Submitted
    volunteer: Volunteer
    assignment: Assignment


async def lease_of(
    session: AsyncSession, *, telegram_user_id: int, token: str | None
) -> tuple[Volunteer, Assignment]:
    """The caller and the assignment ``token`` names (their current lease when None).

    Raises:
        NotAllowed: unknown or banned user, or a crop leased to someone else.
        NoConsent: the user never agreed to the terms.
        StaleTask: no such token, or (without one) no open lease.
    """
    found = await session.exec(
        select(Volunteer).where(Volunteer.telegram_user_id == telegram_user_id)
    )
    volunteer = found.first()
    if volunteer is None or volunteer.banned:
        raise NotAllowed("open the editor from the bot's chat")
    if volunteer.consent_at is None:
        raise NoConsent("agree to the terms in the chat first")
    if token is None:
        latest = await session.exec(
            select(Assignment)
            .where(
                Assignment.volunteer_id == volunteer.id,
                col(Assignment.closed_at).is_(None),
                Assignment.lease_expires_at > utcnow(),
            )
            .order_by(col(Assignment.id).desc())
        )
        assignment = latest.first()
        if assignment is None:
            raise StaleTask("no crop is waiting for you: press Next in the chat")
    else:
        assignment = await assignment_by_token(session, token=token)
    if assignment.volunteer_id != volunteer.id:
        raise NotAllowed("that crop is leased to someone else")
    return volunteer, assignment


async def open_crop(
    session: AsyncSession,
    store: FileStore,
    *,
    telegram_user_id: int,
    token: str | None,
    takes_points: bool,
) -> EditorCrop:
    """The caller's leased crop with its proposal, working mask and one-tap candidates.

    Raises:
        NotAllowed, NoConsent, StaleTask: as ``lease_of``; StaleTask also for a crop already
            answered, finished or expired.
    """
    _, assignment = await lease_of(session, telegram_user_id=telegram_user_id, token=token)
    view = await tasks.view(session, store, assignment)
    tasks.check_open(assignment, view.task)
    options = await tasks.choices(session, store, assignment)
    shown = [tasks.Choice(o.name, tasks.shown(assignment, o.mask)) for o in options]
    return EditorCrop(
        assignment.token,
        view.structure,
        view.crop,
        view.proposal,
        view.working,
        shown,
        takes_points,
    )


def _to_crop_point(
    assignment: Assignment, x: float, y: float, hw: tuple[int, int]
) -> tuple[float, float] | None:
    """A displayed pixel, back in the crop's own frame (None if the augmentation hid it)."""
    if not assignment.augment:  # shown as stored: nothing to undo (and no O(H*W) work per tap)
        return x, y
    marked = np.zeros(hw, dtype=bool)
    cx, cy = int(np.clip(x, 0, hw[1] - 1)), int(np.clip(y, 0, hw[0] - 1))
    marked[cy, cx] = True
    ys, xs = np.nonzero(tasks.unshown(assignment, marked))
    if ys.size == 0:
        return None
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def box_for_taps(box: Box, points: list[Point], hw: tuple[int, int], *, shrink: bool) -> Box:
    """The prompt box after taps: a positive tap outside the box grows it to include the tap.

    With ``shrink`` (models trained on boxes only, such as MedSAM, which cannot take a negative
    point) a tap outside the structure that falls inside the box pulls the nearest edge in to
    it, so the tap still changes the mask. Points are (x, y, label) crop pixels.
    """
    h, w = hw
    x0, y0, x1, y1 = box
    for x, y, label in points:
        inside = x0 <= x <= x1 and y0 <= y <= y1
        if label and not inside:
            x0, y0 = min(x0, x - TAP_PAD), min(y0, y - TAP_PAD)
            x1, y1 = max(x1, x + TAP_PAD), max(y1, y + TAP_PAD)
        elif not label and inside and shrink:
            gaps = {"x0": x - x0, "x1": x1 - x, "y0": y - y0, "y1": y1 - y}
            edge = min(gaps, key=lambda k: gaps[k])
            if edge == "x0" and x1 - x > 2:
                x0 = x + 1
            elif edge == "x1" and x - x0 > 2:
                x1 = x - 1
            elif edge == "y0" and y1 - y > 2:
                y0 = y + 1
            elif edge == "y1" and y - y0 > 2:
                y1 = y - 1
    return max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)


async def prepare_refine(
    session: AsyncSession, store: FileStore, *, telegram_user_id: int, token: str
) -> RefineJob:
    """Authorize a tap and read what the decoder needs; the decoder itself runs outside.

    Raises:
        NotAllowed, NoConsent, StaleTask: as ``open_crop``.
    """
    _, assignment = await lease_of(session, telegram_user_id=telegram_user_id, token=token)
    task = await session.get_one(Task, assignment.task_id)
    tasks.check_open(assignment, task)
    crop = arrays.image(store, task.crop_key)
    transform = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
    box = transform.to_crop((task.box_x0, task.box_y0, task.box_x1, task.box_y1))
    return RefineJob(assignment, crop, box)


def parse_points(raw: Any, hw: tuple[int, int]) -> list[Point]:
    """Taps as the page sends them: ``[[x, y, label], ...]`` in displayed pixels.

    Raises:
        InvalidInput: not a list of at most ``MAX_POINTS`` finite in-image [x, y, 0|1] triples.
    """
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_POINTS:
        raise InvalidInput(f"points must be a list of 1 to {MAX_POINTS} [x, y, label]")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3):
            raise InvalidInput("each point is [x, y, label]")
        x, y, label = item
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y)):
            raise InvalidInput("point coordinates must be numbers")
        # Compared first: NaN compares false, and an int past float64 would break isfinite.
        if not (0 <= x <= hw[1] and 0 <= y <= hw[0] and np.isfinite(x) and np.isfinite(y)):
            raise InvalidInput("a point lies outside the crop")
        if label not in (0, 1) or isinstance(label, bool):
            raise InvalidInput("a point's label is 1 (inside) or 0 (outside)")
        out.append((float(x), float(y), int(label)))
    return out


async def run_refine(refiner: Refiner, job: RefineJob, points: list[Point]) -> tuple[Mask, Any]:
    """The decoder's mask for the taps (displayed frame) and the prompt it ran with (crop frame).

    Points-trained models get the taps as points (and a box grown to include positive taps);
    box-only models (MedSAM) get the box moved by the taps instead.
    """
    hw = (int(job.crop.shape[0]), int(job.crop.shape[1]))
    mapped = []
    for x, y, label in points:
        point = _to_crop_point(job.assignment, x, y, hw)
        if point is not None:
            mapped.append((point[0], point[1], label))
    takes = refiner.takes_points
    box = box_for_taps(job.box, mapped, hw, shrink=not takes)
    mask = await refiner.refine(job.crop, box, mapped if takes and mapped else None)
    prompt = {"box": list(box), "points": [list(p) for p in mapped], "source": "miniapp"}
    return tasks.shown(job.assignment, mask), prompt


async def submit_mask(
    session: AsyncSession,
    store: FileStore,
    crowd: Crowd,
    *,
    telegram_user_id: int,
    token: str,
    mask: Mask,
    prompt: Any = None,
    now: dt.datetime | None = None,
) -> EditorAnswer:
    """Store the editor's mask (displayed frame) as the volunteer's answer; commits.

    A mask identical to the proposal is stored as an accept, which is what it means. Idempotent
    like every answer: a second submit stores nothing and says so (``submitted.duplicate``).

    Raises:
        NotAllowed, NoConsent, StaleTask: as ``lease_of``; StaleTask also for a finished crop.
        InvalidInput: a mask of the wrong shape.
    """
    volunteer, assignment = await lease_of(session, telegram_user_id=telegram_user_id, token=token)
    view = await tasks.view(session, store, assignment)
    if mask.shape != view.crop.shape[:2]:
        raise InvalidInput(f"the mask must be {view.crop.shape[:2]}, got {mask.shape}")
    verdict = Verdict.ACCEPT if np.array_equal(mask, view.proposal) else Verdict.ADJUST
    submitted = await submit(
        session,
        crowd=crowd,
        store=store,
        volunteer=volunteer,
        assignment=assignment,
        verdict=verdict,
        mask=tasks.unshown(assignment, mask) if verdict == Verdict.ADJUST else None,
        prompt_points=[prompt] if prompt and verdict == Verdict.ADJUST else None,
        now=now,
    )
    return EditorAnswer(submitted, volunteer, assignment)
