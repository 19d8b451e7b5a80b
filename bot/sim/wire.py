"""What travels between the bot and the Bot API emulator: parameters, errors, images, limits.

Pure helpers with no server state, shared by ``bot.sim.emulator`` and ``bot.sim.chat``.
"""

from __future__ import annotations

import html
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

Json = dict[str, Any]

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes, not characters
MAX_ANSWER_TEXT = 200
MAX_PHOTO_BYTES = 10 * 1000 * 1000
MAX_DOCUMENT_BYTES = 50 * 1000 * 1000  # a bot's upload limit
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PHOTO_SIDES = 10000  # width + height
MAX_PHOTO_RATIO = 20
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)

# Parameters whose form value is a plain string; every other form value is JSON (PTB json.dumps
# ints, bools, lists and objects, and sends str as is).
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "file_id",
        "photo",
        "inline_message_id",
        "ip_address",
        "language_code",
        "business_connection_id",
        "message_effect_id",
        "description",
        "short_description",
        "name",
    }
)
_TAG = re.compile(r"<[^>]*>")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and optional ``retry_after``."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        """The JSON answer Telegram gives for this error."""
        body: Json = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.code)


def bad_request(what: str) -> ApiError:
    """A 400 with Telegram's ``Bad Request:`` prefix."""
    return ApiError(400, f"Bad Request: {what}")


def decode_params(raw: dict[str, Any]) -> Json:
    """Turn PTB's all-string form values into typed values (ints, bools, JSON objects)."""
    params: Json = {}
    for key, value in raw.items():
        if isinstance(value, str) and key not in _STRING_PARAMS:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value  # e.g. chat_id="@channel"
        else:
            params[key] = value
    return params


UPLOAD_NAMES = "__upload_names__"  # params key: multipart field -> uploaded file name


async def read_request(request: web.Request) -> tuple[Json, dict[str, bytes]]:
    """Parameters and uploaded files of one Bot API call (query, JSON, form or multipart)."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        return {**decode_params(raw), **body}, files
    names: dict[str, str] = {}
    if request.body_exists:
        for key, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
                names[key] = value.filename
            else:
                raw[key] = value
    params = decode_params(raw)
    if names:  # what Telegram shows as a document's file_name
        params[UPLOAD_NAMES] = names
    return params, files


def plain_text(text: str, parse_mode: str | None) -> str:
    """The text a user sees: HTML tags removed and entities unescaped for ``parse_mode=HTML``."""
    if parse_mode is not None and parse_mode.upper() == "HTML":
        return html.unescape(_TAG.sub("", text))
    return text


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        else:
            i += 2 + int(struct.unpack(">H", data[i + 2 : i + 4])[0])
    return None


def check_text(text: Any, *, field: str = "message text") -> str:
    """A 1-4096 character message text, else Telegram's 400."""
    if not isinstance(text, str) or not text.strip():
        raise bad_request(f"{field} is empty")
    if len(text) > MAX_TEXT:
        raise bad_request("message is too long")
    return text


def check_caption(caption: Any) -> str | None:
    """A 0-1024 character caption (None when absent), else Telegram's 400."""
    if caption is None or caption == "":
        return None
    if len(str(caption)) > MAX_CAPTION:
        raise bad_request("message caption is too long")
    return str(caption)


def check_markup(markup: Any) -> Json | None:
    """The inline keyboard to store on a message; rejects bad ``callback_data`` like Telegram.

    Reply keyboards are accepted but, as in Telegram, never stored on the message. A ``web_app``
    button needs an HTTPS URL, as in Telegram; plain HTTP is let through for loopback hosts only,
    so tests can point it at a Mini App served on 127.0.0.1.
    """
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" must be an Array of Array')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise bad_request("BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                raise bad_request("BUTTON_DATA_INVALID")
            if "web_app" in button:
                check_web_app(button["web_app"])
    return {"inline_keyboard": rows}


def check_web_app(web_app: Any) -> None:
    """A ``WebAppInfo``: an HTTPS URL (HTTP on loopback, for tests), else Telegram's 400."""
    url = web_app.get("url") if isinstance(web_app, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    loopback = parts is not None and parts.hostname in ("127.0.0.1", "localhost")
    if parts is None or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise bad_request(
            "inline keyboard button Web App URL is invalid: Only HTTPS links are allowed"
        )


@dataclass(frozen=True)
class Limits:
    """Telegram's flood limits as token buckets; None switches a bucket off.

    Attributes:
        global_per_second: chat-bound calls per second over all chats (burst of one second).
        per_chat_per_second: chat-bound calls per second refilled in each chat.
        per_chat_burst: calls one chat may make at once before the per-chat rate applies.
    """

    global_per_second: float | None = 30
    per_chat_per_second: float | None = 1
    per_chat_burst: int = 3


class TokenBucket:
    """``capacity`` tokens refilled at ``rate`` per second; one call takes one token."""

    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"rate must be > 0 and capacity >= 1, got {rate} and {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0 when one is free now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        """Spend one token (call ``wait`` first)."""
        self.tokens -= 1
