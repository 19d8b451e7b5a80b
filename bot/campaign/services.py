"""The handles every use case needs, built once from the settings at an entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.sources import ArchiveLimits
from bot.db.engine import make_engine, make_sessionmaker
from bot.settings import Settings
from bot.store.files import FileStore


@dataclass
class Services:
    """Database engine and sessions, the file store and the ingest caps."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: FileStore
    limits: ArchiveLimits
    data_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Build the services; nothing connects until first use."""
        engine = make_engine(settings.resolved_database_url)
        return cls(
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            store=FileStore(settings.data_dir / "store"),
            limits=limits_from(settings),
            data_dir=settings.data_dir,
        )

    async def close(self) -> None:
        """Release database connections."""
        await self.engine.dispose()


def limits_from(settings: Settings) -> ArchiveLimits:
    """The ingest caps configured in ``settings``."""
    return ArchiveLimits(
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
        max_file_bytes=settings.max_file_bytes,
        max_ratio=settings.max_compression_ratio,
        max_archive_bytes=settings.max_archive_bytes,
        max_entries=settings.max_archive_entries,
    )
