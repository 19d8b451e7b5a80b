"""Chats as the emulator records them, and virtual users who talk to the bot in private chats.

A test drives a ``VirtualUser`` (send text, send a photo, press an inline button) and awaits what
the bot did in that chat with ``next_event``; events are snapshots, so later edits of the same
message never change an event already read.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.sim.wire import Json

USER_UPLOAD_BYTES = 2000 * 1000 * 1000  # what a user may send a bot

if TYPE_CHECKING:
    from bot.sim.emulator import BotApiEmulator


@dataclass(frozen=True)
class Event:
    """One call the bot made in a chat, with a deep-copy snapshot of the message it produced.

    Attributes:
        method: the Bot API method, e.g. ``"editMessageMedia"``.
        params: the decoded parameters (``reply_markup`` and ``media`` as dicts).
        message: the resulting message (sends, edits), the deleted one (deleteMessage), else None.
        files: uploaded multipart files by field name (``attach://name`` refers to ``name``).
        messages: every message of an album (sendMediaGroup); ``(message,)`` otherwise.
    """

    method: str
    params: Json
    message: Json | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    messages: tuple[Json, ...] = ()

    def upload(self, ref: str = "photo") -> bytes:
        """The bytes of one uploaded file, by field name or ``attach://`` reference."""
        name = ref.removeprefix("attach://")
        if name not in self.files:
            raise KeyError(
                f"{self.method} uploaded no file {name!r}; it uploaded {list(self.files)}"
            )
        return self.files[name]


@dataclass(frozen=True)
class CallbackAnswer:
    """What answerCallbackQuery showed a user."""

    query_id: str
    text: str | None = None
    show_alert: bool = False
    url: str | None = None


class ChatLog:
    """Every event of one chat in order; readers keep their own cursor."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._grew: asyncio.Event | None = None

    def append(self, event: Event) -> None:
        """Record an event and wake readers."""
        self.events.append(event)
        if self._grew is not None:
            self._grew.set()
            self._grew = None

    async def wait_beyond(self, cursor: int, wait_s: float) -> None:
        """Return once there are more than ``cursor`` events; TimeoutError after ``wait_s``."""
        if len(self.events) > cursor:
            return
        if self._grew is None:
            self._grew = asyncio.Event()
        await asyncio.wait_for(self._grew.wait(), wait_s)


def inline_buttons(message: Json) -> list[Json]:
    """The inline keyboard buttons of a message, row by row."""
    markup = message.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


class VirtualUser:
    """A scripted Telegram user in a private chat with the bot (chat id == user id)."""

    def __init__(
        self, emulator: BotApiEmulator, user_id: int, first_name: str, username: str | None
    ) -> None:
        if user_id <= 0:
            raise ValueError(f"user_id must be positive, got {user_id}")
        self.emulator = emulator
        self.id = user_id
        self.user: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            self.user["username"] = username
        self.chat: Json = {"id": user_id, "type": "private", "first_name": first_name}
        self._cursor = 0
        self._queries = 0

    # ------------------------------------------------------------------ user -> bot
    async def send(self, text: str) -> int:
        """Send a text message; a leading ``/command`` gets its bot_command entity."""
        content: Json = {"text": text}
        if text.startswith("/"):  # CommandHandler ignores commands without the entity
            content["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        message = self.emulator.store_message(self.id, self.user, content)
        return await self.emulator.push_update({"message": message})

    async def send_photo(self, data: bytes, caption: str | None = None) -> int:
        """Send a photo (validated and stored like a bot upload); returns the update_id."""
        content: Json = {"photo": self.emulator.media.store_photo(data)}
        if caption:
            content["caption"] = caption
        message = self.emulator.store_message(self.id, self.user, content)
        return await self.emulator.push_update({"message": message})

    async def send_document(self, data: bytes, file_name: str, caption: str | None = None) -> int:
        """Send a file, as a user may (up to 2 GB; bots download at most 20 MB of it)."""
        document = self.emulator.media.store_document(data, file_name, max_bytes=USER_UPLOAD_BYTES)
        content: Json = {"document": document}
        if caption:
            content["caption"] = caption
        message = self.emulator.store_message(self.id, self.user, content)
        return await self.emulator.push_update({"message": message})

    async def press(self, label_or_prefix: str, *, message_id: int | None = None) -> int:
        """Press an inline button by its exact label, else by a unique label prefix.

        The button comes from the stored message ``message_id``, by default the latest bot
        message with an inline keyboard, and the query carries the exact ``callback_data`` the
        bot sent. Returns the update_id.

        Raises:
            LookupError: no such message, or no (unique) callback button with that label.
        """
        message = self._keyboard_message(message_id)
        buttons = inline_buttons(message)
        found = [b for b in buttons if b["text"] == label_or_prefix] or [
            b for b in buttons if b["text"].startswith(label_or_prefix)
        ]
        labels = [b["text"] for b in buttons]
        if len(found) != 1:
            why = "no button" if not found else "several buttons"
            raise LookupError(
                f"{why} {label_or_prefix!r} on message {message['message_id']} in chat {self.id};"
                f" its buttons are {labels}"
            )
        if "callback_data" not in found[0]:
            raise LookupError(f"button {found[0]['text']!r} has no callback_data to press")
        self._queries += 1
        query_id = f"{self.id}{self._queries:06d}"
        self.emulator.open_callback_query(query_id, user_id=self.id, chat_id=self.id)
        query = {
            "id": query_id,
            "from": self.user,
            "chat_instance": f"{self.id}-{self.emulator.bot_user['id']}",
            "message": copy.deepcopy(message),
            "data": found[0]["callback_data"],
        }
        return await self.emulator.push_update({"callback_query": query})

    def _keyboard_message(self, message_id: int | None) -> Json:
        if message_id is not None:
            return self.emulator.stored_message(self.id, message_id)
        for message in reversed(self.emulator.chat_messages(self.id)):
            if message["from"].get("is_bot") and inline_buttons(message):
                return message
        raise LookupError(f"no bot message with an inline keyboard in chat {self.id}")

    # ------------------------------------------------------------------ bot -> user
    async def next_event(self, *methods: str, timeout: float = 5.0) -> Event:  # noqa: ASYNC109
        """The bot's next call in this chat (of one of ``methods``, skipping others).

        Chat-bound calls (sends, edits, deletes, chat actions) and the bot's answers to this
        user's button presses (answerCallbackQuery) appear here, in the order they arrived.

        Raises:
            TimeoutError: nothing matching within ``timeout`` seconds; names what was skipped.
        """
        log = self.emulator.chat_log(self.id)
        deadline = time.monotonic() + timeout
        skipped: list[str] = []
        while True:
            while self._cursor < len(log.events):
                event = log.events[self._cursor]
                self._cursor += 1
                if not methods or event.method in methods:
                    return event
                skipped.append(event.method)
            try:
                await log.wait_beyond(self._cursor, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                wanted = " or ".join(methods) or "event"
                raise TimeoutError(
                    f"chat {self.id}: no {wanted} within {timeout} s (skipped {skipped})"
                ) from None

    @property
    def events(self) -> list[Event]:
        """Every event in this chat so far, read or not."""
        return list(self.emulator.chat_log(self.id).events)

    @property
    def message(self) -> Json:
        """A copy of the latest message the bot has in this chat."""
        for message in reversed(self.emulator.chat_messages(self.id)):
            if message["from"].get("is_bot"):
                return copy.deepcopy(message)
        raise LookupError(f"the bot has sent nothing to chat {self.id}")

    def get_message(self, message_id: int) -> Json:
        """A copy of the stored message ``message_id`` of this chat."""
        return copy.deepcopy(self.emulator.stored_message(self.id, message_id))

    def photo(self, message: Json | None = None) -> bytes:
        """The bytes of the largest photo of ``message`` (default: the latest bot message)."""
        message = self.message if message is None else message
        sizes = message.get("photo")
        if not sizes:
            raise LookupError(f"message {message.get('message_id')} has no photo")
        largest = max(sizes, key=lambda size: size["width"] * size["height"])
        return self.emulator.file_bytes(largest["file_id"])

    def buttons(self, message: Json | None = None) -> list[tuple[str, str]]:
        """(label, callback_data) of each callback button, row by row (URL buttons omitted)."""
        message = self.message if message is None else message
        return [
            (b["text"], b["callback_data"]) for b in inline_buttons(message) if "callback_data" in b
        ]

    def web_apps(self, message: Json | None = None) -> list[tuple[str, str]]:
        """(label, url) of each Mini App (``web_app``) button, row by row.

        Opening one is the test's business: a browser, or an HTTP client, with initData signed
        by the bot token as Telegram would (``bot.web.initdata.signed_for_user``).
        """
        message = self.message if message is None else message
        return [(b["text"], b["web_app"]["url"]) for b in inline_buttons(message) if "web_app" in b]

    def init_data(self, *, auth_date: int | None = None) -> str:
        """The signed ``initData`` Telegram hands a Mini App this user opens."""
        fields = {
            "auth_date": str(int(time.time()) if auth_date is None else auth_date),
            "query_id": f"AAH{self.id}",
            "user": json.dumps(self.user, separators=(",", ":")),
        }
        check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items())).encode()
        secret = hmac.new(b"WebAppData", self.emulator.token.encode(), hashlib.sha256).digest()
        fields["hash"] = hmac.new(secret, check, hashlib.sha256).hexdigest()
        return urllib.parse.urlencode(fields)

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        """What answerCallbackQuery said to this user, oldest first."""
        return self.emulator.callback_answers(self.id)
