"""Shared fixtures: phantoms, a file store, and migrated databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import cache
from bot.db import migrate
from bot.db.engine import async_url, make_engine
from bot.sim.phantom import Phantom, make_phantom
from bot.store.files import FileStore

POSTGRES_ENV = "MEDCROWD_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _fresh_row_cache() -> Iterator[None]:
    """Each test sees its own database's rows, never a cached row of an earlier test's."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


@pytest.fixture(scope="session")
def ct_phantom() -> Phantom:
    return make_phantom("ct", np.random.default_rng(3), 128)


async def _admin(url: str, statement: str) -> None:
    engine = make_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database migrated to head with alembic, once per backend per test session."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        migrate.upgrade(url)
        yield url
        return
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"{POSTGRES_ENV} is not set (CI always sets it; set it to test PostgreSQL)")
    try:
        asyncio.run(_admin(server, "SELECT 1"))
    except (OSError, SQLAlchemyError) as error:
        if os.environ.get("MEDCROWD_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} does not answer ({type(error).__name__})")
    name = f"medcrowd_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    url = async_url(make_url(server).set(database=name)).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url, poolclass=pool.NullPool)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sessionmaker(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions joined to one outer transaction that is rolled back after the test.

    Commits inside the test release SAVEPOINTs ("Joining a Session into an External Transaction").
    """
    async with engine.connect() as connection:
        outer = await connection.begin()
        yield async_sessionmaker(
            bind=connection,
            class_=AsyncSession,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        await outer.rollback()


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session
