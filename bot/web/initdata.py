"""Telegram Mini App ``initData`` validation: the only proof of who is calling the editor's API.

Telegram hands the Mini App a query string signed with a key derived from the bot token
(https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app):
``secret = HMAC_SHA256(key="WebAppData", msg=bot_token)`` and ``hash = hex(HMAC_SHA256(key=secret,
msg=data_check_string))``, where the check string is every field except ``hash``, sorted by key,
as ``key=value`` lines. A Bot API 8.0 ``signature`` field stays inside the check string.

The comparison is constant-time, ``auth_date`` must be recent (a leaked string stops working
soon), and the user id is read from the signed ``user`` field only, never from anything the page
sends beside it. Pure functions: no clock, no settings, no I/O (``now`` is passed in).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

MAX_INIT_DATA = 4096  # real initData is a few hundred bytes; anything far larger is not Telegram's
CLOCK_SKEW = 60  # seconds an auth_date may lie in the future (clients' clocks drift)


class InvalidInitData(ValueError):
    """initData that is malformed, forged, signed for another bot, or too old."""


@dataclass(frozen=True)
class InitData:
    """What a validated initData says: who, when, and every signed field as received."""

    user_id: int
    auth_date: int
    fields: dict[str, str]

    @property
    def user(self) -> dict[str, Any]:
        """The decoded ``user`` object (first name, language, ...)."""
        decoded: dict[str, Any] = json.loads(self.fields["user"])
        return decoded


def _secret(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def _check_string(fields: dict[str, str]) -> bytes:
    return "\n".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "hash").encode()


def _user_id(raw: str) -> int:
    try:
        user = json.loads(raw)
    except ValueError:
        raise InvalidInitData("malformed: user is not JSON") from None
    uid = user.get("id") if isinstance(user, dict) else None
    # Telegram sends an integer; aiogram's published vector sends a numeric string.
    if isinstance(uid, str) and uid.isascii() and uid.isdigit():
        uid = int(uid)
    if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
        raise InvalidInitData("malformed: user has no positive id")
    return uid


def validate_init_data(init_data: str, bot_token: str, *, max_age: float, now: float) -> InitData:
    """Check a Mini App's initData and return who signed in.

    Args:
        init_data: the raw query string (``Telegram.WebApp.initData``).
        bot_token: this bot's token (the HMAC key's source).
        max_age: seconds an ``auth_date`` stays acceptable.
        now: the current Unix time.

    Raises:
        InvalidInitData: malformed, no or a wrong hash, expired, or no user; the message says
            which, without echoing the input.
    """
    if not init_data or len(init_data) > MAX_INIT_DATA:
        raise InvalidInitData("malformed: empty or too long")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidInitData("malformed: not a query string") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidInitData("malformed: repeated field")
    received = fields.get("hash", "")
    expected = hmac.new(_secret(bot_token), _check_string(fields), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), received.encode()):
        raise InvalidInitData("bad hash")
    auth_date = fields.get("auth_date", "")
    if not (auth_date.isascii() and auth_date.isdigit()):  # int() refuses "²", isdigit() not
        raise InvalidInitData("malformed: no auth_date")
    age = now - int(auth_date)
    if age > max_age:
        raise InvalidInitData("expired: reopen the editor from the chat")
    if age < -CLOCK_SKEW:
        raise InvalidInitData("auth_date is in the future")
    if "user" not in fields:
        raise InvalidInitData("malformed: no user")
    return InitData(_user_id(fields["user"]), int(auth_date), fields)


def sign_init_data(fields: dict[str, str], bot_token: str) -> str:
    """Sign ``fields`` as Telegram does (for tests, benchmarks and the emulator)."""
    digest = hmac.new(_secret(bot_token), _check_string(fields), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def signed_for_user(user_id: int, bot_token: str, *, auth_date: int, first_name: str = "V") -> str:
    """A signed initData for one user, as an inline-button Mini App receives it."""
    user = json.dumps({"id": user_id, "first_name": first_name}, separators=(",", ":"))
    return sign_init_data(
        {"auth_date": str(auth_date), "query_id": f"q{user_id}", "user": user}, bot_token
    )
