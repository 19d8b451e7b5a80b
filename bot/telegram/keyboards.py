"""Inline keyboards and their typed callback data (``<action>:<token>[:<arg>]``, <= 64 bytes).

Buttons carry the assignment's opaque token, never a task id, so a press is bound to the lease
it was made for, survives a restart and needs no server-side cache.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo

from bot.campaign.tasks import option_label
from bot.telegram import texts

MAX_CALLBACK_BYTES = 64
# Tokens are URL-safe base64, args are option numbers, cell labels and tap modes.
_FIELD = re.compile(r"[A-Za-z0-9_-]*")


class Action(enum.StrEnum):
    """What a button does."""

    ACCEPT = "a"
    ADJUST = "j"
    REJECT = "r"
    UNSURE = "u"
    CHOICES = "c"
    PICK = "p"
    GRID = "g"
    CELL = "t"
    TAP = "tm"
    REFINE = "f"
    UNDO = "z"
    DONE = "d"
    BACK = "b"
    NEXT = "n"
    CONSENT = "ok"
    DECLINE = "no"
    SKIP_NICK = "sn"
    FORGET = "fy"
    KEEP = "fn"


@dataclass(frozen=True)
class Press:
    """A parsed button press."""

    action: Action
    token: str = ""
    arg: str = ""

    def encode(self) -> str:
        """The callback_data string.

        Raises:
            ValueError: beyond Telegram's 64 bytes, or a token or arg outside ``[A-Za-z0-9_-]``
                (which ``decode`` would not give back).
        """
        for name, value in (("token", self.token), ("arg", self.arg)):
            if not _FIELD.fullmatch(value):
                raise ValueError(f"{name} must be [A-Za-z0-9_-]*, got {value!r}")
        data = self.action.value
        if self.token or self.arg:
            data += f":{self.token}" + (f":{self.arg}" if self.arg else "")
        if len(data.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"callback_data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
        return data

    @classmethod
    def decode(cls, data: str) -> Press:
        """Parse callback_data; raises ValueError for anything the bot did not send.

        Telegram delivers whatever a client sends, so nothing is trusted: over 64 bytes, an
        unknown action, more than three fields or a field outside ``[A-Za-z0-9_-]`` is refused.
        """
        if len(data) > MAX_CALLBACK_BYTES:
            raise ValueError(f"callback_data over {MAX_CALLBACK_BYTES} characters")
        parts = data.split(":")
        if not 1 <= len(parts) <= 3 or not all(_FIELD.fullmatch(p) for p in parts[1:]):
            raise ValueError(f"malformed callback_data {data!r}")
        action = Action(parts[0])
        token = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        return cls(action, token, arg)


def _button(text: str, action: Action, token: str = "", arg: str = "") -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=Press(action, token, arg).encode())


def consent() -> InlineKeyboardMarkup:
    """Agree / not now."""
    return InlineKeyboardMarkup(
        [
            [
                _button(texts.CONSENT_BUTTON, Action.CONSENT),
                _button(texts.DECLINE_BUTTON, Action.DECLINE),
            ]
        ]
    )


def skip_nickname() -> InlineKeyboardMarkup:
    """Stay anonymous."""
    return InlineKeyboardMarkup([[_button(texts.SKIP_NICKNAME, Action.SKIP_NICK)]])


def verdict(token: str) -> InlineKeyboardMarkup:
    """Accept · Adjust / Reject · Can't tell."""
    return InlineKeyboardMarkup(
        [
            [
                _button(texts.ACCEPT, Action.ACCEPT, token),
                _button(texts.ADJUST, Action.ADJUST, token),
            ],
            [
                _button(texts.REJECT, Action.REJECT, token),
                _button(texts.UNSURE, Action.UNSURE, token),
            ],
        ]
    )


def editor_url(base: str, token: str) -> str:
    """The Mini App page for one crop: its lease token rides in the query string.

    The token only names the crop; the API still checks it is leased to whoever the signed
    initData says is calling.
    """
    return f"{base}{'&' if '?' in base else '?'}t={token}"


def adjust_menu(
    token: str, *, changed: bool, webapp_url: str | None = None
) -> InlineKeyboardMarkup:
    """The Adjust tools; Done appears once something changed.

    With a Mini App configured, its editor comes first (a ``web_app`` button: private chats
    only, HTTPS only); without one the chat grid is the only drawing tool.
    """
    rows = []
    if webapp_url:
        rows.append(
            [InlineKeyboardButton(texts.EDITOR, web_app=WebAppInfo(editor_url(webapp_url, token)))]
        )
    rows += [
        [_button(texts.CHOICES, Action.CHOICES, token), _button(texts.GRID, Action.GRID, token)],
        [_button(texts.UNDO, Action.UNDO, token), _button(texts.BACK, Action.BACK, token)],
    ]
    if changed:
        rows.append([_button(texts.DONE, Action.DONE, token)])
    return InlineKeyboardMarkup(rows)


def choices(token: str, names: list[str]) -> InlineKeyboardMarkup:
    """One button per one-tap option, two per row, then Back."""
    buttons = [
        _button(option_label(i, name), Action.PICK, token, str(i)) for i, name in enumerate(names)
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([_button(texts.BACK, Action.BACK, token)])
    return InlineKeyboardMarkup(rows)


def grid(
    token: str,
    labels: list[str],
    cells: int,
    selected: set[str],
    *,
    points: dict[str, int] | None = None,
    tap: str = "box",
    takes_points: bool = False,
) -> InlineKeyboardMarkup:
    """The labelled grid as buttons, then (for point-trained models) the tap mode, Redraw, Back.

    Box cells show as ``●A1``, positive points as ``+A1``, negative points as ``-A1``.
    """
    points = points or {}
    rows = []
    for r in range(cells):
        row = []
        for label in labels[r * cells : (r + 1) * cells]:
            if label in points:
                text = ("+" if points[label] else "-") + label
            else:
                text = f"●{label}" if label in selected else label
            row.append(_button(text, Action.CELL, token, label))
        rows.append(row)
    if takes_points:
        modes = (("box", texts.TAP_BOX), ("pos", texts.TAP_POSITIVE), ("neg", texts.TAP_NEGATIVE))
        rows.append(
            [
                _button(f"· {name} ·" if mode == tap else name, Action.TAP, token, mode)
                for mode, name in modes
            ]
        )
    rows.append(
        [_button(texts.REFINE, Action.REFINE, token), _button(texts.BACK, Action.BACK, token)]
    )
    return InlineKeyboardMarkup(rows)


def next_crop() -> InlineKeyboardMarkup:
    """Next after feedback."""
    return InlineKeyboardMarkup([[_button(texts.NEXT, Action.NEXT)]])


def forget() -> InlineKeyboardMarkup:
    """Confirm /forget."""
    return InlineKeyboardMarkup(
        [[_button(texts.FORGET_YES, Action.FORGET), _button(texts.FORGET_NO, Action.KEEP)]]
    )
