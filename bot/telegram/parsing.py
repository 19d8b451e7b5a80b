"""Numbers typed in commands or carried by buttons, parsed without trusting them.

``str.isdigit`` accepts superscripts and other scripts' digits that ``int`` refuses, and an id
past 64 bits overflows the database's integer: both are refused here, before any query.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # BIGINT, the widest id column (Telegram ids fit in 52 bits)


def parse_id(text: str) -> int | None:
    """A positive id (row id, Telegram user id, count) in ASCII digits, else None.

    Args:
        text: what the user typed or the button carried.

    Returns:
        The number, or None when it is not ASCII digits or not in ``1..MAX_ID``.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None
