"""Readiness: named probes that each say what is wrong, or nothing.

``/readyz`` (``bot.web.health``) runs them: the database answers and is at the migrations' head
(``database_probe``), the bot's intake workers are alive and Telegram was reached recently
(``bot.telegram.probes``). Liveness (``/healthz``) runs only the vital probes, the ones about
the process itself (its workers), never a dependency: a restart cures a dead worker, not a database
that is down.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db import migrate

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[str | None]]
"""A readiness check: None when fine, else a short reason (never a URL or a secret)."""


class Phase(enum.StrEnum):
    """Where the bot is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Readiness:
    """The probes of one bot process and its phase; ready = running and every probe fine."""

    def __init__(self, *, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.phase = Phase.STARTING
        self._probes: dict[str, Probe] = {}
        self._vital: set[str] = set()

    def add(self, name: str, probe: Probe, *, vital: bool = False) -> None:
        """Run ``probe`` on every check, reported under ``name``; ``vital``: liveness too."""
        self._probes[name] = probe
        if vital:
            self._vital.add(name)

    async def dead(self) -> dict[str, str]:
        """What the vital probes report (liveness); empty while the process is sound."""
        return await self._check([n for n in self._probes if n in self._vital])

    async def problems(self) -> dict[str, str]:
        """What keeps the bot from being ready, by probe name; empty when ready."""
        found: dict[str, str] = {}
        if self.phase is not Phase.RUNNING:
            found["bot"] = self.phase.value
        return found | await self._check(list(self._probes))

    async def _check(self, names: list[str]) -> dict[str, str]:
        results = await asyncio.gather(*(self._run(self._probes[name]) for name in names))
        return {n: r for n, r in zip(names, results, strict=True) if r is not None}

    async def _run(self, probe: Probe) -> str | None:
        try:
            return await asyncio.wait_for(probe(), self.timeout)
        except TimeoutError:
            return f"no answer in {self.timeout:g} s"
        except Exception as error:  # a probe that fails says why in one word
            logger.warning("readiness probe failed: %s", type(error).__name__)
            return f"unreachable ({type(error).__name__})"


def database_probe(engine: AsyncEngine) -> Probe:
    """A probe: the database answers and its schema is at the migrations' head."""
    head = migrate.head()

    async def probe() -> str | None:
        async with engine.connect() as connection:
            revision = await migrate.current(connection)
        if revision is None:
            return "no schema (run medcrowd db upgrade)"
        if revision != head:
            return f"schema at {revision}, migrations at {head}"
        return None

    return probe
