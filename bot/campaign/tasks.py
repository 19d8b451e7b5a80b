"""What a volunteer sees of a leased crop, and the Adjust flow's working state.

Everything is kept in the crop's own frame; a gold crop's augmentation is applied only for
display (``TaskView``) and undone for what the volunteer marks on it (grid cells). The Adjust
state lives on the assignment (``Assignment.adjust``), so it survives a restart:

* ``mask``: store key of the working mask (None: still the proposal);
* ``history``: earlier working masks, for Undo;
* ``cells``: grid cells selected for tap-to-refine; ``tap``: what a tap does (``box``, ``pos``,
  ``neg``); ``points``: tapped cells with their label (1 positive, 0 negative);
* ``prompt``: the last box and points the decoder ran with (stored with the answer);
* ``mode``: ``verdict``, ``menu``, ``choices`` or ``grid`` (what the keyboard shows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, cache, cards, render
from bot.campaign.crowd import proposal_of
from bot.campaign.errors import InvalidInput, StaleTask
from bot.campaign.refine import Refiner
from bot.db.models import Assignment, Proposal, Task, TaskKind, TaskStatus
from bot.db.types import utcnow
from bot.store import codecs
from bot.store.files import FileStore

Mask = npt.NDArray[np.bool_]
MAX_HISTORY = 12


@dataclass(frozen=True)
class Choice:
    """One one-tap alternative mask: a model candidate or a tighter/looser threshold."""

    name: str
    mask: Mask


@dataclass
class TaskView:
    """A leased crop as the volunteer sees it (augmented if gold)."""

    assignment: Assignment
    task: Task
    structure: str
    crop: npt.NDArray[np.uint8]
    proposal: Mask
    working: Mask
    adjust: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> TaskKind:
        """Real, gold or tutorial."""
        return self.task.kind

    @property
    def token(self) -> str:
        """The opaque token the buttons carry."""
        return self.assignment.token


def option_label(index: int, name: str) -> str:
    """A one-tap option's button label (numbered, so labels are unique)."""
    return f"{index + 1}. {name}"


def augment_of(assignment: Assignment) -> cards.Augment | None:
    """The augmentation a gold crop is shown with (None for plain crops)."""
    if not assignment.augment:
        return None
    data = dict(assignment.augment)
    data["shift_yx"] = tuple(data["shift_yx"])
    return cards.Augment(**data)


def shown(assignment: Assignment, mask: Mask) -> Mask:
    """A crop-frame mask as displayed."""
    aug = augment_of(assignment)
    return mask if aug is None else cards.apply_mask(aug, mask)


def unshown(assignment: Assignment, mask: Mask) -> Mask:
    """A mask marked on the displayed crop, back in the crop's own frame."""
    aug = augment_of(assignment)
    return mask if aug is None else cards.invert_mask(aug, mask)


async def _task_and_proposal(
    session: AsyncSession, store: FileStore, assignment: Assignment
) -> tuple[Task, Proposal, Mask]:
    task = await session.get_one(Task, assignment.task_id)
    proposal = await proposal_of(session, task_id=assignment.task_id)
    if proposal is None:
        raise StaleTask("that crop has no proposal yet")
    return task, proposal, arrays.mask(store, proposal.mask_key)


async def task_of(session: AsyncSession, assignment: Assignment) -> Task:
    """The task an assignment leases."""
    return await session.get_one(Task, assignment.task_id)


def check_open(assignment: Assignment, task: Task) -> None:
    """Refuse work on an answered, expired or finished assignment.

    Raises:
        StaleTask: with a message for the volunteer.
    """
    if assignment.closed_at is not None:
        raise StaleTask("you already answered that crop")
    if task.status != TaskStatus.OPEN:
        raise StaleTask("that crop is already finished: here is a fresh one")
    if assignment.lease_expires_at <= utcnow():
        raise StaleTask("that crop waited too long and went back to the pool")


def working_mask(store: FileStore, assignment: Assignment, proposal: Mask) -> Mask:
    """The Adjust flow's current mask (the proposal until something was chosen)."""
    key = assignment.adjust.get("mask")
    return proposal if key is None else arrays.mask(store, key)


async def view(session: AsyncSession, store: FileStore, assignment: Assignment) -> TaskView:
    """The crop, proposal and working mask as the volunteer sees them."""
    task, _, proposal = await _task_and_proposal(session, store, assignment)
    campaign = await cache.campaign(session, task.campaign_id)
    crop = arrays.image(store, task.crop_key)
    aug = augment_of(assignment)
    working = working_mask(store, assignment, proposal)
    if aug is not None:
        crop = cards.apply_image(aug, crop)
        proposal, working = cards.apply_mask(aug, proposal), cards.apply_mask(aug, working)
    return TaskView(
        assignment, task, campaign.structure, crop, proposal, working, dict(assignment.adjust)
    )


async def choices(session: AsyncSession, store: FileStore, assignment: Assignment) -> list[Choice]:
    """One-tap alternatives, in the crop's frame: model candidates, then tighter and looser."""
    _, proposal_row, _ = await _task_and_proposal(session, store, assignment)
    out = [
        Choice(str(c.get("source") or f"option {i + 1}"), arrays.mask(store, c["key"]))
        for i, c in enumerate(proposal_row.candidates)
    ]
    if proposal_row.prob_key:
        prob = arrays.prob(store, proposal_row.prob_key)
        for level in render.TIGHTER_LEVELS:
            out.append(Choice(f"tighter {level:.2f}", render.threshold_mask(prob, level)))
        for level in render.LOOSER_LEVELS:
            out.append(Choice(f"looser {level:.2f}", render.threshold_mask(prob, level)))
    return out


def _set_working(
    store: FileStore, assignment: Assignment, mask: Mask, **extra: Any
) -> dict[str, Any]:
    state = dict(assignment.adjust)
    history = list(state.get("history", []))
    history.append(state.get("mask"))
    state["history"] = history[-MAX_HISTORY:]
    state["mask"] = store.put("masks", codecs.encode_mask(mask), "png")[0]
    state.update(extra)
    return state


async def set_mode(session: AsyncSession, *, assignment: Assignment, mode: str) -> None:
    """Switch what the keyboard shows (``verdict``, ``menu``, ``choices``, ``grid``)."""
    if mode not in ("verdict", "menu", "choices", "grid"):
        raise InvalidInput(f"unknown adjust mode {mode!r}")
    assignment.adjust = {**assignment.adjust, "mode": mode}
    session.add(assignment)


async def pick(
    session: AsyncSession, store: FileStore, *, assignment: Assignment, index: int
) -> None:
    """Make choice ``index`` the working mask."""
    options = await choices(session, store, assignment)
    if not 0 <= index < len(options):
        raise StaleTask("that option is no longer offered")
    assignment.adjust = _set_working(store, assignment, options[index].mask, mode="menu")
    session.add(assignment)


TAP_MODES = ("box", "pos", "neg")


async def set_tap(session: AsyncSession, *, assignment: Assignment, tap: str) -> None:
    """What a tap on a grid cell does: extend the box, or add a positive / negative point.

    Points are offered only with models trained on them (SAM, the fallback), never MedSAM.
    """
    if tap not in TAP_MODES:
        raise InvalidInput(f"unknown tap mode {tap!r}")
    assignment.adjust = {**assignment.adjust, "tap": tap, "mode": "grid"}
    session.add(assignment)


async def toggle_cell(session: AsyncSession, *, assignment: Assignment, cell: str) -> None:
    """Tap a grid cell (labels as ``render.cell_labels``).

    In box mode the cell is selected or unselected; in point mode a point at its centre is
    added (label 1 for ``pos``, 0 for ``neg``) or, tapped again, removed.
    """
    if cell not in render.cell_labels(render.GRID):
        raise InvalidInput(f"unknown grid cell {cell!r}")
    state = dict(assignment.adjust)
    tap = state.get("tap", "box")
    if tap == "box":
        cells = set(state.get("cells", []))
        cells ^= {cell}
        state["cells"] = sorted(cells)
    else:
        points = dict(state.get("points", {}))
        if cell in points:
            del points[cell]
        else:
            points[cell] = 1 if tap == "pos" else 0
        state["points"] = points
    state["mode"] = "grid"
    assignment.adjust = state
    session.add(assignment)


def _to_crop(assignment: Assignment, marked: Mask) -> tuple[npt.NDArray[np.int64], ...]:
    """Pixels marked on the displayed crop, in the crop's own frame."""
    return tuple(np.nonzero(unshown(assignment, marked)))


def _cell_point(
    assignment: Assignment, cell: str, hw: tuple[int, int]
) -> tuple[float, float] | None:
    """A cell's centre (x, y) in the crop's frame; None if the augmentation moved it out."""
    x0, y0, x1, y1 = render.box_from_cells([cell], hw, render.GRID)
    marked = np.zeros(hw, dtype=bool)
    cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
    marked[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2] = True
    ys, xs = _to_crop(assignment, marked)
    if ys.size == 0:
        return None
    return float(xs.mean()), float(ys.mean())


async def refine_cells(
    session: AsyncSession, store: FileStore, refiner: Refiner, *, assignment: Assignment
) -> None:
    """Re-run the decoder on the grid taps: a box and, for models trained on them, points.

    The box is the one the selected cells span (MedSAM's native prompt); with points only,
    the current outline's box.

    Raises:
        InvalidInput: no cell selected and no point tapped.
    """
    state = assignment.adjust
    cells = state.get("cells", [])
    taps = state.get("points", {})
    if not cells and not taps:
        raise InvalidInput("tap the cells the structure covers first")
    task = await session.get_one(Task, assignment.task_id)
    crop = arrays.image(store, task.crop_key)
    hw = (int(crop.shape[0]), int(crop.shape[1]))
    if cells:
        x0, y0, x1, y1 = render.box_from_cells(cells, hw, render.GRID)
        marked = np.zeros(hw, dtype=bool)
        marked[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        ys, xs = _to_crop(assignment, marked)  # the box in the crop's own frame
        if ys.size == 0:
            raise InvalidInput("those cells are outside the image; pick others")
    else:  # points only: around the current outline
        _, _, proposal = await _task_and_proposal(session, store, assignment)
        ys, xs = np.nonzero(working_mask(store, assignment, proposal))
        if ys.size == 0:
            ys, xs = np.array([0, hw[0] - 1]), np.array([0, hw[1] - 1])
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    points = []
    for cell, label in sorted(taps.items()):
        centre = _cell_point(assignment, cell, hw)
        if centre is not None:
            points.append((centre[0], centre[1], int(label)))
    mask = await refiner.refine(crop, box, points or None)
    assignment.adjust = _set_working(
        store,
        assignment,
        mask,
        cells=[],
        points={},
        mode="menu",
        prompt={"box": list(box), "points": [list(p) for p in points]},
    )
    session.add(assignment)


async def undo(session: AsyncSession, *, assignment: Assignment) -> bool:
    """Go back to the previous working mask; False when there is nothing to undo."""
    state = dict(assignment.adjust)
    history = list(state.get("history", []))
    if not history:
        return False
    state["mask"] = history.pop()
    state["history"] = history
    state.pop("prompt", None)  # the earlier mask did not come from the last Redraw
    assignment.adjust = state
    session.add(assignment)
    return True


def last_prompt(assignment: Assignment) -> list[Any]:
    """What made the working mask, as stored with an adjust answer.

    The box and points of the last Redraw, else a one-tap option: every outline in the chat is a
    tool's, so fusion undoes no drawing bias on it.
    """
    prompt = assignment.adjust.get("prompt")
    return [prompt] if prompt else [{"tool": "option"}]


def final_mask(store: FileStore, *, assignment: Assignment) -> Mask | None:
    """The mask Done submits (crop frame), or None if nothing was changed yet."""
    key = assignment.adjust.get("mask")
    return None if key is None else arrays.mask(store, key)
