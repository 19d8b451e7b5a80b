"""Scratch PostgreSQL databases for tests that need one of their own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url


@contextlib.asynccontextmanager
async def scratch_database(prefix: str = "medcrowd_test") -> AsyncIterator[str]:
    """A new, empty database on the test server (its SQLAlchemy URL); dropped afterwards.

    Skips the test when ``MEDCROWD_TEST_POSTGRES_URL`` is not set (CI always sets it).
    """
    base = os.environ.get("MEDCROWD_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MEDCROWD_TEST_POSTGRES_URL is not set (CI always sets it)")
    url = make_url(base)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    dsn = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
