"""Restore a backup (``bot.campaign.backup``) into a database and a data dir, all or nothing.

The archive is read once, front to back, into a staging folder inside the data dir; every part is
checked against the manifest's sha256 (and every file against the index) before anything is
touched. The target is migrated to the current schema, then one transaction checks that it is
empty (or, with ``force``, deletes its rows), inserts every row, resets PostgreSQL's sequences and
checks the counts. The files are moved into place inside that transaction, before the rows, and
moved back out if it fails. A backup from another schema revision is refused, one from a newer
MedCrowd with a message that says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.campaign.backup import (
    FILE_ROOTS,
    FORMAT,
    INDEX,
    MANIFEST,
    VERSION,
    BackupError,
    BackupReport,
    Progress,
    decode_value,
    tables,
)
from bot.db import migrate
from bot.db.engine import async_url, make_engine

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_BATCH = 500


def _member_path(name: str) -> PurePosixPath:
    """The staging path of an archive member; raises for names a backup never holds."""
    path = PurePosixPath(name)
    parts = path.parts
    if path.is_absolute() or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise BackupError(f"backup is damaged: unsafe member name {name!r}")
    if name in (MANIFEST, INDEX):
        return path
    if len(parts) == 2 and parts[0] == "db" and parts[1].endswith(".jsonl"):
        return path
    if len(parts) >= 3 and parts[0] == "data" and parts[1] in FILE_ROOTS:
        return path
    raise BackupError(f"backup is damaged: unexpected member {name!r}")


def _copy(source: IO[bytes], target: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def unpack(source: Path, staging: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Read the backup at ``source`` into ``staging`` and verify it; returns the manifest.

    Raises:
        BackupError: not a backup, damaged (a checksum, size or member that does not match),
            or from another schema revision.
    """
    seen: dict[str, tuple[str, int]] = {}
    try:
        with tarfile.open(source, "r:*") as archive:
            for i, member in enumerate(archive):
                relative = _member_path(member.name)
                if not member.isreg():
                    raise BackupError(f"backup is damaged: {member.name} is not a plain file")
                if member.name in seen:
                    raise BackupError(f"backup is damaged: {member.name} appears twice")
                handle = archive.extractfile(member)
                assert handle is not None  # a regular file
                seen[member.name] = _copy(handle, staging / relative)
                if progress is not None:
                    progress("verify", i + 1, None)
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError) and not source.exists():
            raise BackupError(f"no backup at {source}") from error
        raise BackupError(f"{source} is not a readable backup ({error})") from error
    if MANIFEST not in seen:
        raise BackupError(f"{source} is not a MedCrowd backup (no {MANIFEST})")
    try:
        manifest = json.loads((staging / MANIFEST).read_text())
    except ValueError as error:
        raise BackupError(f"backup is damaged: {MANIFEST} is not JSON") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source} is not a MedCrowd backup")
    if manifest.get("version") != VERSION:
        raise BackupError(f"backup format {manifest.get('version')} is not supported here")
    _check_revision(str(manifest.get("schema_revision")))
    expected = {MANIFEST, INDEX}
    parts: dict[str, Any] = manifest["tables"]
    if set(parts) != {t.name for t in tables()}:
        raise BackupError("backup is damaged: its tables are not this schema's")
    for name, part in parts.items():
        part_name = f"db/{name}.jsonl"
        expected.add(part_name)
        if seen.get(part_name, ("", 0))[0] != part["sha256"]:
            raise BackupError(f"backup is damaged: {part_name} does not match its checksum")
    if seen.get(INDEX, ("", 0))[0] != manifest["files"]["index_sha256"]:
        raise BackupError(f"backup is damaged: {INDEX} does not match its checksum")
    index = [json.loads(line) for line in (staging / INDEX).read_text().splitlines()]
    if len(index) != manifest["files"]["count"]:
        raise BackupError("backup is damaged: the file index and the manifest disagree")
    for entry in index:
        file_name = f"data/{entry['path']}"
        expected.add(file_name)
        if seen.get(file_name) != (entry["sha256"], entry["bytes"]):
            raise BackupError(f"backup is damaged: {file_name} is missing or does not match")
    if extra := sorted(set(seen) - expected):
        raise BackupError(f"backup is damaged: unexpected member {extra[0]!r}")
    manifest["index"] = index
    return manifest


def _check_revision(revision: str) -> None:
    head = migrate.head()
    if revision == head:
        return
    if revision not in migrate.revisions():
        raise BackupError(
            f"backup is from a newer MedCrowd (schema {revision} is unknown here): "
            "upgrade MedCrowd, then restore"
        )
    raise BackupError(
        f"backup is from an older schema ({revision}; this MedCrowd is at {head}): restore it "
        "with the MedCrowd version that wrote it, then run `medcrowd db upgrade`"
    )


async def count_rows(connection: AsyncConnection) -> dict[str, int]:
    """Rows per existing MedCrowd table (empty for a database without the schema)."""
    names = set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
    counts: dict[str, int] = {}
    for table in tables():
        if table.name in names:
            found = await connection.execute(sa.select(sa.func.count()).select_from(table))
            counts[table.name] = int(found.scalar_one())
    return counts


def _not_empty(counts: dict[str, int]) -> BackupError | None:
    used = {name: n for name, n in counts.items() if n}
    if not used:
        return None
    return BackupError(
        f"the target database is not empty ({sum(used.values())} rows in {len(used)} tables): "
        "restore into an empty database, or pass --force to replace its contents"
    )


async def _load_rows(
    connection: AsyncConnection,
    folder: Path,
    manifest: dict[str, Any],
    *,
    force: bool,
    progress: Progress | None,
) -> dict[str, int]:
    counts = await count_rows(connection)
    refusal = _not_empty(counts)
    if refusal is not None:
        if not force:
            raise refusal
        for table in reversed(tables()):
            await connection.execute(table.delete())
    total = sum(int(p["rows"]) for p in manifest["tables"].values())
    done = 0
    for table in tables():
        batch: list[dict[str, Any]] = []
        with (folder / f"{table.name}.jsonl").open() as rows:
            for line in rows:
                row = json.loads(line)
                try:
                    batch.append({k: decode_value(table.c[k], v) for k, v in row.items()})
                except (KeyError, ValueError) as error:
                    why = f"backup row of {table.name} does not fit: {error}"
                    raise BackupError(why) from error
                if len(batch) >= _BATCH:
                    await connection.execute(table.insert(), batch)
                    done += len(batch)
                    batch = []
                    if progress is not None:
                        progress("rows", done, total)
        if batch:
            await connection.execute(table.insert(), batch)
            done += len(batch)
        if progress is not None:
            progress("rows", done, total)
    if connection.dialect.name == "postgresql":
        await _reset_sequences(connection)
    restored = await count_rows(connection)
    for name, part in manifest["tables"].items():
        if restored.get(name) != int(part["rows"]):
            raise BackupError(
                f"restored {restored.get(name)} rows of {name}, the backup holds {part['rows']}"
            )
    return restored


async def _reset_sequences(connection: AsyncConnection) -> None:
    """Point every serial primary key's sequence past the restored rows."""
    quote = connection.dialect.identifier_preparer.quote
    for table in tables():
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, sa.Integer):
            continue
        name, key = quote(table.name), quote(keys[0].name)
        await connection.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence(:table, :key), "
                f"COALESCE((SELECT MAX({key}) FROM {name}), 0) + 1, false)"
            ),
            {"table": name, "key": keys[0].name},
        )


class _Moves:
    """Files moved into the data dir, and how to take them back out."""

    def __init__(self, staging: Path) -> None:
        self.saved = staging / "replaced"
        self.created: list[Path] = []
        self.replaced: list[tuple[Path, Path]] = []

    def place(self, staged: Path, data_dir: Path, index: list[dict[str, Any]]) -> None:
        for entry in index:
            source, target = staged / entry["path"], data_dir / entry["path"]
            if target.is_file():
                if _sha256(target) == entry["sha256"]:
                    continue  # content-addressed: already there
                keep = self.saved / entry["path"]
                keep.parent.mkdir(parents=True, exist_ok=True)
                target.replace(keep)
                self.replaced.append((target, keep))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                self.created.append(target)
            source.replace(target)

    def undo(self) -> None:
        for path in self.created:
            path.unlink(missing_ok=True)
        for target, keep in self.replaced:
            keep.replace(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _staging(data_dir: Path) -> str:
    """A staging folder inside the data dir (same file system: files are renamed into place)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=".restore-", dir=data_dir)


async def restore(
    url: str,
    data_dir: Path,
    source: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> BackupReport:
    """Restore the backup at ``source`` into the database at ``url`` and ``data_dir``.

    Raises:
        BackupError: the backup is damaged or from another schema, or the target is not empty
            and ``force`` is not set. The target is then as it was.
    """
    if not await asyncio.to_thread(source.is_file):
        raise BackupError(f"no backup at {source}")
    engine = make_engine(async_url(url), poolclass=pool.NullPool)
    try:
        if not force:  # refuse early, before reading a large archive
            async with engine.connect() as connection:
                refusal = _not_empty(await count_rows(connection))
            if refusal is not None:
                raise refusal
        staging = Path(await asyncio.to_thread(_staging, data_dir))
        try:
            manifest = await asyncio.to_thread(unpack, source, staging, progress)
            await asyncio.to_thread(migrate.upgrade, url)
            moves = _Moves(staging)
            try:
                async with engine.begin() as connection:  # commits on exit, else rolls back
                    await asyncio.to_thread(
                        moves.place, staging / "data", data_dir, manifest["index"]
                    )
                    rows = await _load_rows(
                        connection, staging / "db", manifest, force=force, progress=progress
                    )
            except BaseException:
                moves.undo()
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        await engine.dispose()
    logger.info("restored %d rows and %d files", sum(rows.values()), len(manifest["index"]))
    return BackupReport(
        path=source,
        revision=str(manifest["schema_revision"]),
        rows=rows,
        files=len(manifest["index"]),
        bytes=int(manifest["files"]["bytes"]),
    )
