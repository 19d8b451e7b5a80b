"""The database probe: answers, and at the migrations' head."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.campaign.health import Phase, Readiness, database_probe
from bot.db import migrate
from bot.db.engine import make_engine


async def test_the_database_probe_passes_at_head(engine: AsyncEngine) -> None:
    assert await database_probe(engine)() is None


async def test_the_database_probe_names_a_missing_or_old_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        probe = database_probe(engine)
        assert await probe() == "no schema (run medcrowd db upgrade)"
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE alembic_version (version_num TEXT)"))
            await connection.execute(text("INSERT INTO alembic_version VALUES ('dad48df9880e')"))
        assert await probe() == f"schema at dad48df9880e, migrations at {migrate.head()}"
    finally:
        await engine.dispose()


async def test_an_unreachable_database_makes_the_bot_unready() -> None:
    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", poolclass=pool.NullPool)
    readiness = Readiness(timeout=5)
    readiness.phase = Phase.RUNNING
    readiness.add("database", database_probe(engine))
    try:
        problems = await readiness.problems()
    finally:
        await engine.dispose()
    assert problems["database"].startswith("unreachable (")
    assert "nobody" not in problems["database"]
