"""A local Telegram Bot API server for end-to-end tests, demos and load runs.

The real python-telegram-bot stack talks to it over HTTP on 127.0.0.1:

    emu = await BotApiEmulator().start()
    app = (ApplicationBuilder().token(emu.token).base_url(emu.base_url)
           .base_file_url(emu.base_file_url).build())
    ann = emu.user(1001, "Ann")
    await ann.send("/start")
    shown = await ann.next_event("sendPhoto")

Chats, messages, files and the update feed live in memory. Telegram's size limits and flood
limits are enforced server side, faults can be injected per method, and every call is recorded.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

from aiohttp import web

from bot.sim.chat import CallbackAnswer, ChatLog, Event, VirtualUser
from bot.sim.feed import UpdateFeed, Webhook
from bot.sim.media import MediaStore, StoredFile
from bot.sim.methods import BotApiMethods
from bot.sim.wire import (
    MAX_UPLOAD_BYTES,
    ApiError,
    Json,
    Limits,
    TokenBucket,
    bad_request,
    read_request,
)

logger = logging.getLogger(__name__)

__all__ = ["BotApiEmulator", "Call", "Limits", "StoredFile", "VirtualUser"]

Handler = Callable[[Json, dict[str, bytes]], Awaitable[Any]]
_HOST = "127.0.0.1"
DEFAULT_LIMITS = Limits()
_FAULT_DESCRIPTIONS = {
    400: "Bad Request: injected fault",
    403: "Forbidden: bot was blocked by the user",
    409: "Conflict: injected fault",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Call:
    """One authorised request: method as sent, decoded params, ``time.monotonic()`` on arrival."""

    method: str
    params: Json
    time: float


@dataclass(frozen=True)
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    status: int = 500
    description: str = ""
    retry_after: int | None = None
    seconds: float = 0.0


class BotApiEmulator:
    """An in-memory Bot API on 127.0.0.1 that python-telegram-bot can use via ``base_url``.

    Args:
        token: the only token accepted; others get 401 Unauthorized.
        limits: flood limits for chat-bound calls; None disables them.
    """

    def __init__(
        self, token: str = "123456:TEST", *, limits: Limits | None = DEFAULT_LIMITS
    ) -> None:
        bot_id, _, secret = token.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ValueError(f"token must look like '<digits>:<secret>', got {len(token)} chars")
        self.token = token
        self.bot_user: Json = {
            "id": int(bot_id),
            "is_bot": True,
            "first_name": "MedCrowd Test Bot",
            "username": "medcrowd_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.feed = UpdateFeed()
        self._limits = limits
        self._global_bucket: TokenBucket | None = None
        if limits is not None and limits.global_per_second is not None:
            rate = limits.global_per_second
            self._global_bucket = TokenBucket(rate, max(1.0, rate))
        self._chat_buckets: dict[int, TokenBucket] = {}
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._chats: dict[int, Json] = {}
        self._messages: dict[int, dict[int, Json]] = defaultdict(dict)
        self._last_message_id: dict[int, int] = defaultdict(int)
        self.media = MediaStore()
        self._logs: dict[int, ChatLog] = defaultdict(ChatLog)
        self._open_queries: dict[str, tuple[int, int]] = {}
        self._answers: dict[int, list[CallbackAnswer]] = defaultdict(list)
        self._users: dict[int, VirtualUser] = {}
        self._methods: dict[str, Handler] = {
            name.lower(): handler for name, handler in BotApiMethods(self).table().items()
        }
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------ server
    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:45678``."""
        if self._runner is None:
            raise RuntimeError("the emulator is not started; await emulator.start() first")
        return f"http://{_HOST}:{self._port}"

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url(...)``."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url(...)``."""
        return f"{self.url}/file/bot"

    async def start(self, port: int = 0) -> Self:
        """Listen on 127.0.0.1:``port`` (0: a free port)."""
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.25
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, _HOST, port).start()
        self._port = int(self._runner.addresses[0][1])
        logger.info("Bot API emulator listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Wake long polls, stop webhook delivery and close the server."""
        await self.feed.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return ApiError(401, "Unauthorized").response()
        method = request.match_info["method"]
        try:
            params, files = await read_request(request)
        except (ApiError, ValueError) as exc:
            error = exc if isinstance(exc, ApiError) else bad_request("can't parse request")
            return error.response()
        self.calls.append(Call(method, params, time.monotonic()))
        fault = self._faults[method.lower()].popleft() if self._faults[method.lower()] else None
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never written: the client sees the connection close
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)  # then the call takes effect, as a slow server's
        if fault is not None and fault.kind == "fail":
            return ApiError(fault.status, fault.description, fault.retry_after).response()
        handler = self._methods.get(method.lower())
        if handler is None:
            return ApiError(404, "Not Found: method not found").response()
        try:
            buckets = self._flood_buckets(params["chat_id"]) if "chat_id" in params else []
            result = await handler(params, files)
        except ApiError as exc:
            return exc.response()
        for bucket in buckets:  # only calls that took effect count against the limits
            bucket.take()
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return ApiError(401, "Unauthorized").response()
        stored = self.media.by_path(request.match_info["path"])
        if stored is None:
            return ApiError(404, "Not Found").response()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ------------------------------------------------------------------ faults and limits
    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = None,
        times: int = 1,
        description: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error.

        A 429 carries ``parameters.retry_after`` (default 1 s), so PTB raises RetryAfter;
        5xx become NetworkError, 400 BadRequest, 403 Forbidden.
        """
        if status < 400:
            raise ValueError(f"status must be an HTTP error code, got {status}")
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            text = f"Too Many Requests: retry after {retry_after}"
        else:
            text = _FAULT_DESCRIPTIONS.get(status, f"Error {status}")
        fault = _Fault("fail", status, description or text, retry_after)
        self._faults[method.lower()].extend([fault] * times)

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` calls of ``method`` for ``seconds`` before handling them.

        The call still takes effect afterwards, so a client that timed out has in fact sent.
        """
        self._faults[method.lower()].extend([_Fault("delay", seconds=seconds)] * times)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Close the connection of the next ``times`` calls of ``method`` without an answer."""
        self._faults[method.lower()].extend([_Fault("drop")] * times)

    def _flood_buckets(self, chat_id: Any) -> list[TokenBucket]:
        """The buckets a chat-bound call will drain; 429 when one of them is empty."""
        if self._limits is None:
            return []
        buckets = [self._global_bucket] if self._global_bucket is not None else []
        per_chat = self._limits.per_chat_per_second
        if per_chat is not None and isinstance(chat_id, int):
            if chat_id not in self._chat_buckets:
                self._chat_buckets[chat_id] = TokenBucket(
                    per_chat, max(1.0, float(self._limits.per_chat_burst))
                )
            buckets.append(self._chat_buckets[chat_id])
        now = time.monotonic()
        wait = max([bucket.wait(now) for bucket in buckets], default=0.0)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        return buckets

    # ------------------------------------------------------------------ updates
    async def push_update(self, payload: Json) -> int:
        """Queue an update (without ``update_id``) for the bot; returns its update_id."""
        return await self.feed.push(payload)

    @property
    def pending_updates(self) -> list[Json]:
        """Copies of the updates the bot has not confirmed yet, oldest first."""
        return copy.deepcopy(self.feed.pending)

    @property
    def delivered_update_ids(self) -> list[int]:
        """Ids of updates handed to the bot at least once (getUpdates or a 2xx webhook POST)."""
        return list(self.feed.delivered_ids)

    @property
    def delivered_updates(self) -> list[Json]:
        """Copies of the updates handed to the bot at least once, in delivery order."""
        return [copy.deepcopy(self.feed.delivered[i]) for i in self.feed.delivered_ids]

    @property
    def webhook_failures(self) -> int:
        """Webhook POSTs that got a non-2xx answer or no answer."""
        return self.feed.webhook_failures

    async def set_webhook(self, webhook: Webhook) -> None:
        """Deliver updates to ``webhook`` (what setWebhook does)."""
        await self.feed.set_webhook(webhook)

    # ------------------------------------------------------------------ chats
    def user(
        self, user_id: int, first_name: str = "Ann", username: str | None = None
    ) -> VirtualUser:
        """The virtual user ``user_id`` (created on first use) in a private chat with the bot."""
        if user_id not in self._users:
            self._users[user_id] = VirtualUser(self, user_id, first_name, username)
            self._chats[user_id] = self._users[user_id].chat
        return self._users[user_id]

    def chat_log(self, chat_id: int) -> ChatLog:
        """Every event of chat ``chat_id``."""
        return self._logs[chat_id]

    def chat_messages(self, chat_id: int) -> list[Json]:
        """The stored (live) messages of a chat, oldest first."""
        return list(self._messages[chat_id].values())

    def stored_message(self, chat_id: int, message_id: int) -> Json:
        """The live stored message; LookupError when it does not exist."""
        message = self._messages[chat_id].get(message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in chat {chat_id}")
        return message

    def remove_message(self, chat_id: int, message_id: int) -> Json:
        """Delete a stored message and return it; LookupError when it does not exist."""
        message = self._messages[chat_id].pop(message_id, None)
        if message is None:
            raise LookupError(f"no message {message_id} in chat {chat_id}")
        return message

    def store_message(self, chat_id: int, sender: Json, content: Json) -> Json:
        """Store a new message in a chat with the next message_id; returns the live dict."""
        self._last_message_id[chat_id] += 1
        message_id = self._last_message_id[chat_id]
        message = {
            "message_id": message_id,
            "from": sender,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        self._messages[chat_id][message_id] = message
        return message

    def _chat(self, chat_id: int) -> Json:
        if chat_id in self._chats:
            return dict(self._chats[chat_id])
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}

    def record(self, chat_id: int, event: Event) -> None:
        """Append an event (already a snapshot) to a chat's log."""
        self._logs[chat_id].append(event)

    def open_callback_query(self, query_id: str, *, user_id: int, chat_id: int) -> None:
        """Register a callback query the bot may answer once."""
        self._open_queries[query_id] = (user_id, chat_id)

    def close_callback_query(self, query_id: str) -> tuple[int, int] | None:
        """(user_id, chat_id) of an open query, which is answered now; None if unknown."""
        return self._open_queries.pop(query_id, None)

    def add_callback_answer(self, user_id: int, answer: CallbackAnswer) -> None:
        """Record what answerCallbackQuery showed ``user_id``."""
        self._answers[user_id].append(answer)

    def callback_answers(self, user_id: int) -> list[CallbackAnswer]:
        """What answerCallbackQuery said to ``user_id``, oldest first."""
        return list(self._answers[user_id])

    # ------------------------------------------------------------------ files
    def file_bytes(self, file_id: str) -> bytes:
        """The bytes behind a file_id."""
        return self.media.get(file_id).data
