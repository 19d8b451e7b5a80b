"""PostgreSQL LISTEN: wake a bot process as soon as another one stores work for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)


async def listen(
    url: str, channel: str, on_notify: Callable[[], None], stopping: asyncio.Event
) -> None:
    """Call ``on_notify`` for each NOTIFY on ``channel`` until ``stopping`` is set.

    The connection is opened again when it drops (a database restart); callers also sweep on a
    timer, so a notification missed meanwhile only delays work.
    """
    import asyncpg  # the PostgreSQL driver, installed with the project

    parsed = make_url(url).set(drivername="postgresql")
    dsn = parsed.render_as_string(hide_password=False)
    while not stopping.is_set():
        try:
            connection = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("cannot listen for new updates (%r); trying again", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=1.0)
            continue
        try:
            await connection.add_listener(channel, lambda *_: on_notify())
            on_notify()  # anything stored while not listening
            while not stopping.is_set() and not connection.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=1.0)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
