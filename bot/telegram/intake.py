"""Durable update intake: nothing a volunteer pressed is lost, nothing is processed twice.

python-telegram-bot's stock polling confirms updates to Telegram before its handlers run, so a
crash loses them. Here the poller stores each batch in the inbox (``bot.campaign.inbox``) and only
then asks for the next one, which is what confirms the batch to Telegram. A processor runs the
stored updates through the application, one at a time per volunteer and many volunteers at once,
and marks each done. Flood control runs before anything touches the database: a user over the
limit gets "slow down" and the press is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.error import NetworkError, RetryAfter, TelegramError, TimedOut

from bot.campaign import inbox
from bot.campaign.flood import FloodGate, user_of
from bot.telegram import texts
from bot.telegram.context import BotApplication
from bot.telegram.transient import RETRY_KEY

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query"]
DONE_MEMORY = 10_000
# Done-marks are written in batches: a crash re-runs at most the last MARK_SECONDS of updates,
# which is harmless because every handler is idempotent where it matters (answers are keyed by
# crop and volunteer, presses by their token).
MARK_SECONDS = 0.1
MARK_BATCH = 64
SWEEP_SECONDS = 2.0
FINISH_SECONDS = 10.0  # how long a stop waits for the handlers in flight
PURGE_ROUNDS = 6000  # about every 10 minutes


class Intake:
    """The poller and the processor of one bot process."""

    def __init__(
        self,
        app: BotApplication,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        gate: FloodGate | None = None,
        poll_timeout: int = 10,
        concurrency: int = 32,
        keep_processed: dt.timedelta = inbox.KEEP_PROCESSED,
        partition: tuple[int, int] = (0, 1),
    ) -> None:
        self.app = app
        # (k, n): this process handles the senders whose id is k modulo n (n bot processes).
        self.partition = partition
        self.sessionmaker = sessionmaker
        self.gate = gate or FloodGate()
        self.poll_timeout = poll_timeout
        self.keep_processed = keep_processed
        self._contact: float | None = None  # time.monotonic() Telegram was last heard from
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[int] = set()
        # Done here but maybe still pending in a snapshot a concurrent drain already read.
        self._done: set[int] = set()
        self._done_order: collections.deque[int] = collections.deque()
        self._unmarked: list[int] = []
        self._users: dict[int, asyncio.Task[None]] = {}
        self.processed = 0

    # -- intake ---------------------------------------------------------------------------------

    def touch(self) -> None:
        """Record that Telegram was reached just now (a getUpdates answer, a webhook POST)."""
        self._contact = time.monotonic()

    def contact_age(self) -> float | None:
        """Seconds since Telegram was last reached; None if never."""
        return None if self._contact is None else time.monotonic() - self._contact

    async def admit(self, payloads: list[dict[str, Any]]) -> int:
        """Flood-check and store a batch (polling or webhook); returns how many were stored."""
        self.touch()
        kept = []
        for payload in payloads:
            user = user_of(payload)
            if user is not None and not self.gate.allow(user):
                await self._slow_down(payload)
                continue
            kept.append(payload)
        async with self.sessionmaker() as session:
            stored = await inbox.store_updates(session, kept)  # raises while the database is down
        new = set(stored)
        k, n = self.partition
        self.dispatch(
            [
                (int(p["update_id"]), p)
                for p in kept
                if int(p["update_id"]) in new and inbox.owner(user_of(p), n) == k
            ]
        )  # the other processes' senders: they hear of them by NOTIFY, or sweep
        return len(stored)

    async def _slow_down(self, payload: dict[str, Any]) -> None:
        query = payload.get("callback_query")
        if isinstance(query, dict) and "id" in query:
            with contextlib.suppress(TelegramError):
                await self.app.bot.answer_callback_query(str(query["id"]), texts.SLOW_DOWN)

    async def poll(self) -> None:
        """Long-poll Telegram until ``stopping``; each batch is stored before it is confirmed."""
        offset: int | None = None
        delay = 0.5
        while not self.stopping.is_set():
            try:
                updates = await self.app.bot.get_updates(
                    offset=offset,
                    timeout=self.poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    read_timeout=self.poll_timeout + 5,
                )
            except RetryAfter as error:
                await asyncio.sleep(_seconds(error.retry_after))
                continue
            except (NetworkError, TimedOut) as error:
                logger.warning("getUpdates failed (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.touch()
            if not updates:
                delay = 0.5
                continue
            try:
                await self.admit([update.to_dict() for update in updates])
            except Exception as error:  # not stored (the database is down?): not confirmed
                logger.warning("storing updates failed (%r); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue  # the same offset: Telegram sends the batch again
            delay = 0.5
            offset = updates[-1].update_id + 1  # confirmed by the next call, after the commit

    # -- processing -----------------------------------------------------------------------------

    async def process(self) -> None:
        """Sweep the inbox for leftovers until ``stopping``.

        On start that is a crash's backlog; then every ``SWEEP_SECONDS``, updates whose handlers
        failed are retried.
        """
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                await self.drain_once()
            except Exception as error:  # the database is down: sweep again later
                logger.warning("inbox sweep failed (%r)", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=SWEEP_SECONDS)
        await self.finish()

    async def drain_once(self) -> int:
        """Dispatch every stored, unprocessed update not already in flight; returns how many.

        New updates are dispatched as soon as they are stored (``admit``); this sweep picks up
        what a crash left behind and updates whose handlers failed.
        """
        async with self.sessionmaker() as session:
            rows = await inbox.pending(session, limit=500, partition=self.partition)
        return self.dispatch([(row.update_id, row.payload) for row in rows])

    def dispatch(self, updates: list[tuple[int, dict[str, Any]]]) -> int:
        """Hand stored updates to per-volunteer workers (in order per volunteer)."""
        by_user: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for update_id, payload in updates:
            if update_id in self._in_flight or update_id in self._done:
                continue
            self._in_flight.add(update_id)
            user = user_of(payload) or 0
            by_user.setdefault(user, []).append((update_id, payload))
        for user, batch in by_user.items():
            previous = self._users.get(user)
            self._users[user] = asyncio.create_task(self._run_user(previous, batch))
        return sum(len(b) for b in by_user.values())

    async def _run_user(
        self, previous: asyncio.Task[None] | None, batch: list[tuple[int, dict[str, Any]]]
    ) -> None:
        if previous is not None:  # one volunteer's updates stay in order
            with contextlib.suppress(Exception):
                await previous
        for update_id, payload in batch:
            async with self._slots:
                await self._run_one(update_id, payload)

    async def _run_one(self, update_id: int, payload: dict[str, Any]) -> None:
        error: str | None = None
        transient = False
        try:
            update = Update.de_json(payload, self.app.bot)
            await self.app.process_update(update)
        except Exception as exc:  # a handler that escaped the error handler: retried later
            logger.exception("update %s failed", update_id, extra={"update_id": update_id})
            error = repr(exc)
        retry: set[int] = self.app.bot_data.get(RETRY_KEY, set())
        if update_id in retry:  # the error handler met a failure that passes: run it again
            retry.discard(update_id)
            error, transient = "a transient failure (see the log)", True
        try:
            if error is None:
                self._done.add(update_id)
                self._done_order.append(update_id)
                if len(self._done_order) > DONE_MEMORY:
                    self._done.discard(self._done_order.popleft())
                self._unmarked.append(update_id)
                if len(self._unmarked) >= MARK_BATCH:
                    await self.flush_marks()
            else:
                async with self.sessionmaker() as session:
                    await inbox.mark(
                        session, update_id=update_id, error=error, counts=not transient
                    )
        except Exception as exc:  # the database is down: the update stays pending, swept later
            logger.warning("could not record update %s (%r)", update_id, exc)
        finally:
            self._in_flight.discard(update_id)
        self.processed += 1

    async def flush_marks(self) -> None:
        """Record the processed updates not yet marked done (one statement)."""
        batch, self._unmarked = self._unmarked, []
        if batch:
            try:
                async with self.sessionmaker() as session:
                    await inbox.mark_done(session, update_ids=batch)
            except Exception:
                self._unmarked = batch + self._unmarked  # the database is down: next round
                raise

    async def mark_loop(self) -> None:
        """Flush done-marks every ``MARK_SECONDS`` until stopped (and once more at the end).

        Every ``PURGE_ROUNDS`` rounds, and once at start, updates older than ``keep_processed``
        are purged (``MEDCROWD_RETENTION_UPDATES_HOURS``).
        """
        rounds = 0
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=MARK_SECONDS)
                try:
                    if rounds % PURGE_ROUNDS == 0:  # at start, then about every 10 minutes
                        await self.purge()
                    await self.flush_marks()
                    rounds += 1
                except Exception as error:  # the database is down: the marks wait
                    logger.warning("recording processed updates failed (%r)", error)
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):  # finish() tries again and says so
                await self.flush_marks()

    async def purge(self) -> int:
        """Delete stored updates past their retention; returns how many."""
        async with self.sessionmaker() as session:
            purged = await inbox.purge(session, older_than=self.keep_processed)
        if purged:
            logger.info("purged %d processed updates older than %s", purged, self.keep_processed)
        return purged

    async def _wait_in_flight(self, deadline: float) -> bool:
        """Wait for the handlers running until ``deadline``; cancel the late. True: none late."""
        tasks = [t for t in self._users.values() if not t.done()]
        if not tasks:
            return True
        _, late = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
        if late:
            logger.warning("%d volunteers' updates still running at stop: cancelled", len(late))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        return not late

    async def finish(self) -> None:
        """Finish the updates in flight, retry once any that failed for a moment, mark them done.

        At most ``FINISH_SECONDS`` in all: handlers still running then are cancelled, and their
        updates (not marked done) run again on the next start, idempotently.
        """
        deadline = time.monotonic() + FINISH_SECONDS
        if await self._wait_in_flight(deadline):
            try:  # one more try of any update that just failed for a moment
                retried = await self.drain_once()
            except Exception as error:  # the database is down: they run on the next start
                logger.warning("could not sweep the inbox at stop (%r)", error)
                retried = 0
            if retried:
                await self._wait_in_flight(deadline)
        try:
            await self.flush_marks()
        except Exception as error:  # unmarked updates run again on the next start: idempotent
            logger.warning("could not record the last processed updates (%r)", error)


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
