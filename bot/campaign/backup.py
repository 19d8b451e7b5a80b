"""Backups: one tar file holding a consistent snapshot of the database and of the data dir's files.

The archive::

    db/<table>.jsonl   every row of every table, in dependency order, one JSON object a line
    data/<path>        every file of the data dir's store/ and synthesis/ folders
    files.jsonl        the index of those files: {"path", "sha256", "bytes"} a line
    manifest.json      format, schema revision, time, source backend, rows and sha256 per table,
                       file count, bytes and the index's sha256

Rows are written through SQLAlchemy as portable JSON (enums as their values, timestamps in ISO
8601), so a backup of SQLite restores into PostgreSQL and the other way round
(``bot.campaign.restore``). The snapshot is consistent: SQLite is first copied with its online
backup API (one read transaction, safe while the bot writes in WAL mode), PostgreSQL is read in one
REPEATABLE READ transaction. The database is read before the files; the store is content-addressed
and append-only, so every file a backed-up row names is already on disk when the files are read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import io
import json
import logging
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from bot.campaign.errors import MedCrowdError
from bot.db import migrate
from bot.db import models as _models  # noqa: F401  (registers every table on the metadata)
from bot.db.engine import async_url, make_engine
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

FORMAT = "medcrowd-backup"
VERSION = 1
MANIFEST = "manifest.json"
INDEX = "files.jsonl"
FILE_ROOTS = ("store", "synthesis")  # the folders of the data dir a backup holds
_CHUNK = 1 << 20

Progress = Callable[[str, int, int | None], None]
"""``progress(phase, done, total)``; ``total`` is None where it is not known in advance."""


class BackupError(MedCrowdError):
    """A backup that cannot be written or read back."""


@dataclass(frozen=True)
class BackupReport:
    """What a backup holds (also what a restore wrote)."""

    path: Path
    revision: str
    rows: dict[str, int]
    files: int
    bytes: int


def tables() -> list[sa.Table]:
    """Every table, parents before children."""
    return list(SQLModel.metadata.sorted_tables)


def encode_value(value: Any) -> Any:
    """A column value as JSON: enums as their values, dates and timestamps in ISO 8601."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date):  # datetime too (a subclass)
        return value.isoformat()
    return value


def decode_value(column: sa.Column[Any], value: Any) -> Any:
    """A JSON value back into what ``column`` binds."""
    if value is None:
        return None
    kind: Any = column.type
    if isinstance(kind, sa.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, sa.DateTime):
        return dt.datetime.fromisoformat(value)
    if isinstance(kind, sa.Date):
        return dt.date.fromisoformat(value)
    if isinstance(kind, sa.Enum) and kind.enum_class is not None:
        return kind.enum_class(value)
    return value


def _jsonl(row: dict[str, Any]) -> bytes:
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.encode() + b"\n"


async def dump_tables(
    connection: AsyncConnection, folder: Path, progress: Progress | None = None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Write every table's rows to ``folder/<table>.jsonl`` in one transaction.

    Returns:
        The schema revision and, per table, ``{"rows": n, "sha256": hex}``.
    """
    revision = await migrate.current(connection)
    if revision is None:
        raise BackupError("the database has no MedCrowd schema: nothing to back up")
    if revision != migrate.head():
        raise BackupError(
            f"the database is at schema {revision}, this MedCrowd expects {migrate.head()}: "
            "run `medcrowd db upgrade` first"
        )
    parts: dict[str, dict[str, Any]] = {}
    for i, table in enumerate(tables()):
        digest = hashlib.sha256()
        count = 0
        with (folder / f"{table.name}.jsonl").open("wb") as out:
            result = await connection.stream(
                sa.select(table)
                .order_by(*table.primary_key.columns)
                .execution_options(yield_per=1000)
            )
            async for row in result:
                line = _jsonl({k: encode_value(v) for k, v in row._mapping.items()})
                digest.update(line)
                out.write(line)
                count += 1
        parts[table.name] = {"rows": count, "sha256": digest.hexdigest()}
        if progress is not None:
            progress("tables", i + 1, len(tables()))
    return revision, parts


def _sqlite_snapshot(url: str, target: Path) -> None:
    """Copy a live SQLite database with the online backup API (one consistent read)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    if not Path(database).is_file():
        raise BackupError(f"no SQLite database at {database}")
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()


async def snapshot_database(
    url: str, folder: Path, progress: Progress | None = None
) -> tuple[str, str, dict[str, dict[str, Any]]]:
    """Dump a consistent snapshot of the database at ``url`` into ``folder``.

    Returns:
        The backend name, the schema revision and the per-table parts.
    """
    parsed = async_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        snapshot = folder / "snapshot.sqlite"
        await asyncio.to_thread(_sqlite_snapshot, url, snapshot)
        engine = make_engine(f"sqlite+aiosqlite:///{snapshot}", poolclass=pool.NullPool)
    else:
        engine = make_engine(parsed, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            if backend == "postgresql":
                connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                revision, parts = await dump_tables(connection, folder, progress)
    finally:
        await engine.dispose()
        (folder / "snapshot.sqlite").unlink(missing_ok=True)
    return backend, revision, parts


def data_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    """Each file a backup holds: ``(path relative to the data dir, file)``, sorted."""
    for root in FILE_ROOTS:
        base = data_dir / root
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*")):
            if file.is_file() and not file.is_symlink() and not file.name.startswith(".tmp-"):
                yield file.relative_to(data_dir).as_posix(), file


class _HashingReader(io.RawIOBase):
    """A read-only file that hashes what is read through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(utcnow().timestamp())
    archive.addfile(info, io.BytesIO(data))


def _write_archive(
    folder: Path,
    data_dir: Path,
    out: Path,
    manifest: dict[str, Any],
    progress: Progress | None,
) -> tuple[int, int]:
    """Write the dumped tables, the files, the index and ``manifest`` to ``out``.

    Returns:
        The number of files and their bytes.
    """
    partial = folder / "backup.partial"
    files = list(data_files(data_dir))
    index = io.BytesIO()
    total = 0
    mode = "w:gz" if out.name.endswith(".gz") else "w"
    with tarfile.open(partial, mode, format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for table in tables():
            archive.add(folder / f"{table.name}.jsonl", arcname=f"db/{table.name}.jsonl")
        for i, (relative, file) in enumerate(files):
            with file.open("rb") as handle:  # fstat of the open file: its size as read
                info = archive.gettarinfo(arcname=f"data/{relative}", fileobj=handle)
                reader = _HashingReader(handle)
                archive.addfile(info, reader)
            entry = {"path": relative, "sha256": reader.digest.hexdigest(), "bytes": info.size}
            index.write(_jsonl(entry))
            total += info.size
            if progress is not None:
                progress("files", i + 1, len(files))
        manifest["files"] = {
            "count": len(files),
            "bytes": total,
            "index_sha256": hashlib.sha256(index.getvalue()).hexdigest(),
        }
        _add_bytes(archive, INDEX, index.getvalue())
        _add_bytes(archive, MANIFEST, json.dumps(manifest, indent=2).encode())
    partial.replace(out)
    return len(files), total


async def backup(
    url: str, data_dir: Path, out: Path, *, progress: Progress | None = None
) -> BackupReport:
    """Write a backup of the database at ``url`` and the files under ``data_dir`` to ``out``.

    ``out`` ending in ``.gz`` is gzipped (the stored PNGs barely shrink; plain ``.tar`` is
    faster). The archive is written beside ``out`` and renamed into place when complete.
    """
    started = utcnow()
    folder = Path(await asyncio.to_thread(_scratch, out))
    try:
        backend, revision, parts = await snapshot_database(url, folder, progress)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": started.isoformat(),
            "schema_revision": revision,
            "source_backend": backend,
            "tables": parts,
        }
        files, total = await asyncio.to_thread(
            _write_archive, folder, data_dir, out, manifest, progress
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    rows = {name: int(part["rows"]) for name, part in parts.items()}
    logger.info("backup of %d rows and %d files written", sum(rows.values()), files)
    return BackupReport(path=out, revision=revision, rows=rows, files=files, bytes=total)


def _scratch(out: Path) -> str:
    """A scratch folder beside ``out`` (same file system: the archive is renamed into place)."""
    if out.exists() and not out.is_file():
        raise BackupError(f"{out} exists and is not a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=".backup-", dir=out.parent)
