"""Backups round-trip every row and file, across SQLite and PostgreSQL, and refuse bad input."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.campaign import routing
from bot.campaign import volunteers as people
from bot.campaign.answers import submit
from bot.campaign.backup import MANIFEST, BackupError, backup, tables
from bot.campaign.crowd import Crowd
from bot.campaign.errors import NoWork
from bot.campaign.proposals import run_proposals
from bot.campaign.restore import count_rows, restore
from bot.campaign.services import Services
from bot.cli import main
from bot.db import migrate
from bot.db.engine import async_url, make_engine
from bot.db.models import (
    AuditEntry,
    Campaign,
    InboxUpdate,
    SyntheticPair,
    Verdict,
    Volunteer,
)
from bot.db.types import utcnow
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.settings import Settings
from tests.conftest import POSTGRES_ENV, _admin
from tests.helpers.campaigns import finish_crops, phantom_campaign

NewDatabase = Callable[[str], Awaitable[str]]


@pytest.fixture
async def new_database(tmp_path: Path) -> AsyncIterator[NewDatabase]:
    """Make empty scratch databases (``sqlite`` or ``postgres``); PostgreSQL ones are dropped."""
    server = os.environ.get(POSTGRES_ENV)
    created: list[str] = []

    async def make(backend: str) -> str:
        name = f"medcrowd_ops_{uuid.uuid4().hex[:10]}"
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / name}.db"
        if not server:
            pytest.skip(f"{POSTGRES_ENV} is not set")
        await _admin(server, f'CREATE DATABASE "{name}"')
        created.append(name)
        return async_url(make_url(server).set(database=name)).render_as_string(hide_password=False)

    yield make
    for name in created:
        assert server is not None
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _world(url: str, data_dir: Path) -> None:
    """A campaign with volunteers, answers, gold, consensus and files: every table has rows."""
    await asyncio.to_thread(migrate.upgrade, url)
    services = Services.from_settings(Settings(data_dir=data_dir, database_url=url))
    try:
        store, sessionmaker = services.store, services.sessionmaker
        campaign = await phantom_campaign(sessionmaker, store, data_dir.parent / "ph", n=4)
        await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(0))
        crowd = Crowd(store)
        rng = np.random.default_rng(0)
        async with sessionmaker() as session:
            row = await session.get_one(Campaign, campaign.id)
            row.min_answers, row.max_answers, row.tutorial_tasks = 2, 3, 1
            session.add(row)
            await session.commit()
            for user in range(3):
                volunteer = await people.volunteer_for(
                    session, telegram_user_id=5_000_000_000 + user
                )
                await people.give_consent(session, volunteer=volunteer)
                await people.set_nickname(session, volunteer=volunteer, nickname=f"Zoe {user}")
                await session.commit()
                for i in range(6):
                    try:
                        assignment = await routing.next_assignment(
                            session, volunteer=volunteer, rng=rng
                        )
                    except NoWork:
                        break
                    verdict = (Verdict.ACCEPT, Verdict.REJECT, Verdict.UNSURE)[(user + i) % 3]
                    await submit(
                        session,
                        crowd=crowd,
                        store=store,
                        volunteer=volunteer,
                        assignment=assignment,
                        verdict=verdict,
                    )
            image_key, _ = store.put("synthetic", b"\x89PNG synthetic image", "png")
            mask_key, _ = store.put("synthetic", b"\x89PNG synthetic mask", "png")
            assert campaign.id is not None
            session.add(
                SyntheticPair(
                    campaign_id=campaign.id,
                    image_key=image_key,
                    mask_key=mask_key,
                    generator_id="pix2pix-test",
                    seed=2**40,
                    gate_score=0.8125,
                    source_task_ids=[1, 2],
                    scores={"dice": 0.9, "nested": {"x": [1, None, "é"]}},
                )
            )
            session.add(
                AuditEntry(actor_telegram_id=5_000_000_000, action="grant", detail={"to": 1})
            )
            session.add(
                InboxUpdate(update_id=2**33, payload={"update_id": 2**33}, processed_at=utcnow())
            )
            await session.commit()
        await finish_crops(sessionmaker, 1)
    finally:
        await services.close()
    checkpoint = data_dir / "synthesis" / "phantoms" / "abc" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(os.urandom(3000))


async def _rows(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            found = {}
            for table in tables():
                result = await connection.execute(
                    sa.select(table).order_by(*table.primary_key.columns)
                )
                found[table.name] = [dict(r._mapping) for r in result]
            return found
    finally:
        await engine.dispose()


def _files(data_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(data_dir).as_posix(): p.read_bytes()
        for root in ("store", "synthesis")
        for p in sorted((data_dir / root).rglob("*"))
        if p.is_file()
    }


def _rewrite(
    source: Path,
    target: Path,
    change: Callable[[dict[str, bytes]], None],
    *,
    fix_checksums: bool = False,
) -> None:
    """Copy a backup, letting ``change`` edit its members (and re-signing them if asked)."""
    with tarfile.open(source) as archive:
        members = {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
        }
    change(members)
    if fix_checksums:
        manifest = json.loads(members[MANIFEST])
        for name in manifest["tables"]:
            data = members[f"db/{name}.jsonl"]
            manifest["tables"][name] = {
                "rows": data.count(b"\n"),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        index = members["files.jsonl"]
        manifest["files"]["count"] = index.count(b"\n")
        manifest["files"]["index_sha256"] = hashlib.sha256(index).hexdigest()
        members[MANIFEST] = json.dumps(manifest).encode()
    with tarfile.open(target, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("sqlite", "sqlite"),
        ("postgres", "postgres"),
        ("sqlite", "postgres"),
        ("postgres", "sqlite"),
    ],
)
async def test_backup_round_trip_restores_every_row_and_file(
    new_database: NewDatabase, tmp_path: Path, source: str, target: str
) -> None:
    source_url, source_dir = await new_database(source), tmp_path / "a" / "data"
    await _world(source_url, source_dir)
    before = await _rows(source_url)
    empty = [name for name, rows in before.items() if not rows]
    assert not empty, f"the world leaves tables empty: {empty}"
    archive = tmp_path / "medcrowd.tar"
    written = await backup(source_url, source_dir, archive)
    assert written.rows == {name: len(rows) for name, rows in before.items()}

    target_url, target_dir = await new_database(target), tmp_path / "b" / "data"
    restored = await restore(target_url, target_dir, archive)

    assert restored.rows == written.rows
    assert await _rows(target_url) == before
    assert _files(target_dir) == _files(source_dir)
    assert len(_files(source_dir)) == written.files > 10
    assert not list(target_dir.glob(".restore-*"))  # the staging folder is gone
    services = Services.from_settings(Settings(data_dir=target_dir, database_url=target_url))
    try:  # the sequences continue after the restored ids
        async with services.sessionmaker() as session:
            session.add(Volunteer(telegram_user_id=42))
            await session.commit()
            top = max(v["id"] for v in before["volunteer"])
            made = await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == 42))
            assert made.one().id == top + 1
    finally:
        await services.close()


@pytest.fixture
async def sqlite_backup(new_database: NewDatabase, tmp_path: Path) -> tuple[str, Path, Path]:
    url, data_dir = await new_database("sqlite"), tmp_path / "src" / "data"
    await _world(url, data_dir)
    archive = tmp_path / "src.tar.gz"
    await backup(url, data_dir, archive)
    return url, data_dir, archive


def _flip_a_file_byte(members: dict[str, bytes]) -> None:
    name = next(n for n in members if n.startswith("data/store/crops/"))
    data = bytearray(members[name])
    data[len(data) // 2] ^= 0xFF
    members[name] = bytes(data)


async def test_restore_refuses_a_damaged_backup_and_touches_nothing(
    sqlite_backup: tuple[str, Path, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    _, _, archive = sqlite_backup
    damaged = tmp_path / "damaged.tar"
    _rewrite(archive, damaged, _flip_a_file_byte)
    url, data_dir = await new_database("sqlite"), tmp_path / "t" / "data"
    with pytest.raises(BackupError, match=r"damaged.*data/store/crops/"):
        await restore(url, data_dir, damaged)
    row = tmp_path / "row.tar"
    _rewrite(  # one changed character in a row, the manifest left as it was
        archive,
        row,
        lambda m: m.update({"db/volunteer.jsonl": m["db/volunteer.jsonl"].replace(b"Zo", b"Zu")}),
    )
    with pytest.raises(BackupError, match=r"damaged: db/volunteer\.jsonl"):
        await restore(url, data_dir, row)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match="not a readable backup"):
        await restore(url, data_dir, truncated)
    assert not list(data_dir.iterdir())  # no file, not even the staging folder
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            assert not any((await count_rows(connection)).values())
    finally:
        await engine.dispose()


async def test_restore_refuses_a_non_empty_target_unless_forced(
    sqlite_backup: tuple[str, Path, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    source_url, _, archive = sqlite_backup
    url, data_dir = await new_database("sqlite"), tmp_path / "t" / "data"
    await restore(url, data_dir, archive)
    await _execute(url, "DELETE FROM inboxupdate")
    with pytest.raises(BackupError, match=r"not empty.*--force"):
        await restore(url, data_dir, archive)
    assert not (await _rows(url))["inboxupdate"]  # refused: nothing changed
    await restore(url, data_dir, archive, force=True)
    assert await _rows(url) == await _rows(source_url)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_restore_is_all_or_nothing(
    sqlite_backup: tuple[str, Path, Path], new_database: NewDatabase, tmp_path: Path, backend: str
) -> None:
    _, _, archive = sqlite_backup
    url, data_dir = await new_database(backend), tmp_path / "t" / "data"
    await _world(url, data_dir)  # a different, live campaign
    before, files = await _rows(url), _files(data_dir)

    def clash(members: dict[str, bytes]) -> None:
        # The last volunteer twice (a unique key fails, after the first rows went in) and a
        # file the target lacks (placed, then taken back out).
        last = json.loads(members["db/volunteer.jsonl"].splitlines()[-1])
        last["id"] += 1000
        members["db/volunteer.jsonl"] += json.dumps(last).encode() + b"\n"
        new_file = "synthesis/phantoms/abc/extra.pt"
        members[f"data/{new_file}"] = b"new"
        entry = {"path": new_file, "sha256": hashlib.sha256(b"new").hexdigest(), "bytes": 3}
        members["files.jsonl"] += json.dumps(entry).encode() + b"\n"

    bad = tmp_path / "bad.tar"
    _rewrite(archive, bad, clash, fix_checksums=True)
    with pytest.raises(IntegrityError):
        await restore(url, data_dir, bad, force=True)
    assert await _rows(url) == before
    assert _files(data_dir) == files  # the new file was taken back out
    assert not list(data_dir.glob(".restore-*"))


async def test_restore_refuses_a_backup_from_a_newer_schema(
    sqlite_backup: tuple[str, Path, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    _, _, archive = sqlite_backup

    def newer(members: dict[str, bytes]) -> None:
        manifest = json.loads(members[MANIFEST])
        manifest["schema_revision"] = "ffffffffffff"
        members[MANIFEST] = json.dumps(manifest).encode()

    future = tmp_path / "future.tar"
    _rewrite(archive, future, newer)
    url = await new_database("sqlite")
    with pytest.raises(BackupError, match="newer MedCrowd"):
        await restore(url, tmp_path / "t", future)


async def test_backup_refuses_a_database_without_the_schema(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    url = await new_database("sqlite")
    await _execute(url, "CREATE TABLE unrelated (x INTEGER)")
    with pytest.raises(BackupError, match="no MedCrowd schema"):
        await backup(url, tmp_path / "data", tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


async def test_the_cli_backs_up_and_restores(
    sqlite_backup: tuple[str, Path, Path],
    new_database: NewDatabase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_url, source_dir, _ = sqlite_backup
    out = tmp_path / "cli.tar"
    base = ["--data-dir", str(source_dir), "--database-url", source_url]
    assert await _in_thread(main, [*base, "backup", str(out)]) == 0
    assert "wrote " in capsys.readouterr().out
    url, data_dir = await new_database("sqlite"), tmp_path / "t" / "data"
    target = ["--data-dir", str(data_dir), "--database-url", url]
    assert await _in_thread(main, [*target, "restore", str(out)]) == 0
    assert "restored " in capsys.readouterr().out
    assert await _rows(url) == await _rows(source_url)
    assert await _in_thread(main, [*target, "restore", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medcrowd: error: the target database is not empty")
    assert "\n" not in error


async def _in_thread(function: Callable[[list[str]], int], argv: list[str]) -> int:
    return await asyncio.to_thread(function, argv)


async def _execute(url: str, statement: str) -> None:
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()
