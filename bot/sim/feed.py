"""The emulator's update feed: pending updates, getUpdates long polls and webhook delivery.

Semantics follow core.telegram.org/bots/api#getting-updates: an update stays pending until the
bot confirms it (a getUpdates ``offset`` above its id, or a 2xx answer to its webhook POST), so
unconfirmed updates are handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

import aiohttp

from bot.sim.wire import ApiError, Json

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_TERMINATED = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Webhook:
    """What setWebhook registered."""

    url: str
    secret_token: str | None = None
    max_connections: int = 40


class UpdateFeed:
    """Pending updates handed to the bot by long polling or by webhook POSTs, in order."""

    def __init__(self) -> None:
        self.pending: list[Json] = []
        self.delivered_ids: list[int] = []
        self.delivered: dict[int, Json] = {}  # update id -> the update, as delivered
        self.webhook: Webhook | None = None
        self.webhook_failures = 0
        self._delivered: set[int] = set()
        self._next_id = 1
        self._changed = asyncio.Condition()
        self._poll_generation = 0
        self._stopping = False
        self._last_error: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def push(self, payload: Json) -> int:
        """Queue one update (``payload`` without ``update_id``); returns its update_id."""
        update_id = self._next_id
        self._next_id += 1
        async with self._changed:
            self.pending.append({"update_id": update_id, **payload})
            self._changed.notify_all()
        return update_id

    async def poll(self, *, offset: int | None, limit: int, timeout_s: float) -> list[Json]:
        """getUpdates: confirm below ``offset``, then wait up to ``timeout_s`` for updates."""
        if self.webhook is not None:
            raise ApiError(409, _WEBHOOK_ACTIVE)
        self._poll_generation += 1
        generation = self._poll_generation
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            self._changed.notify_all()  # an older long poll now ends with 409, as in Telegram
            self._confirm(offset)
            while not self.pending and not self._stopping and generation == self._poll_generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            if generation != self._poll_generation:
                raise ApiError(409, _TERMINATED)
            batch = self.pending[:limit]
        self._mark_delivered(batch)
        return batch

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:  # "-offset updates from the end; all previous ones are forgotten"
            self.pending = self.pending[offset:]
        else:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]

    def _mark_delivered(self, updates: list[Json]) -> None:
        for update in updates:
            if update["update_id"] not in self._delivered:
                self._delivered.add(update["update_id"])
                self.delivered_ids.append(update["update_id"])
                self.delivered[update["update_id"]] = update

    async def drop_pending(self) -> None:
        """Forget every pending update (``drop_pending_updates=True``)."""
        async with self._changed:
            self.pending.clear()

    async def set_webhook(self, webhook: Webhook) -> None:
        """Start POSTing pending updates to ``webhook.url`` (replacing an earlier webhook)."""
        await self.delete_webhook()
        self.webhook = webhook
        self._last_error = None
        self._task = asyncio.create_task(self._deliver(webhook), name="emulator-webhook")

    async def delete_webhook(self) -> None:
        """Stop webhook delivery; updates stay pending for getUpdates."""
        self.webhook = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def webhook_info(self) -> Json:
        """The WebhookInfo object of getWebhookInfo."""
        info: Json = {
            "url": self.webhook.url if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending),
        }
        if self.webhook is not None:
            info["max_connections"] = self.webhook.max_connections
        if self._last_error is not None:
            info["last_error_date"], info["last_error_message"] = self._last_error
        return info

    async def close(self) -> None:
        """Wake every long poll and stop webhook delivery."""
        self._stopping = True
        async with self._changed:
            self._changed.notify_all()
        await self.delete_webhook()

    async def _deliver(self, webhook: Webhook) -> None:
        """POST the oldest pending update until it gets a 2xx, backing off on failures."""
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token:
            headers[SECRET_HEADER] = webhook.secret_token
        backoff = _FIRST_BACKOFF_S
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self.pending) or self._stopping)
                    if self._stopping:
                        return
                    update = self.pending[0]
                error = await self._post(session, webhook.url, headers, update)
                if error is None:
                    async with self._changed:
                        if self.pending and self.pending[0] is update:
                            self.pending.pop(0)
                    self._mark_delivered([update])
                    backoff = _FIRST_BACKOFF_S
                    continue
                self.webhook_failures += 1
                self._last_error = (int(time.time()), error)
                logger.debug("webhook delivery of update %s failed: %s", update["update_id"], error)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _MAX_BACKOFF_S)

    @staticmethod
    async def _post(
        session: aiohttp.ClientSession, url: str, headers: dict[str, str], update: Json
    ) -> str | None:
        """None on a 2xx answer, else Telegram's last_error_message."""
        try:
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                return f"Wrong response from the webhook: {response.status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"Connection failed: {exc.__class__.__name__}"
