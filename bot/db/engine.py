"""Engine and session factories. Nothing here runs at import time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str | URL) -> URL:
    """Return ``url`` with its async driver (``aiosqlite``/``asyncpg``) filled in.

    Plain ``sqlite:///...`` and ``postgresql://...`` URLs are accepted for convenience.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:  # not a ValueError: the CLI would show a traceback
        raise ValueError("database_url: not a database URL (e.g. sqlite:///path.db)") from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"database_url: unsupported backend {backend!r}; use sqlite or postgresql")
    if parsed.drivername == backend or parsed.get_driver_name() in {"psycopg2", "pysqlite"}:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    return parsed


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, issue BEGIN, so SAVEPOINTs and transactional DDL
    # work (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE: take the write lock up front (waiting up to busy_timeout). A deferred
    # transaction that reads and then writes can fail at once with "database is locked" when
    # another writer got in between; concurrent bot handlers hit that constantly.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """Build an async engine; SQLite files get WAL, foreign keys and a busy timeout."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql" and "poolclass" not in kwargs:
        # The bot runs up to 32 handlers at once, plus its intake and background loops.
        kwargs = {"pool_size": 20, "max_overflow": 20, **kwargs}
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    logger.debug("engine for %s", parsed.render_as_string(hide_password=True))
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory whose objects stay usable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
