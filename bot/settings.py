"""Runtime configuration, read once at the entry point (env prefix ``MEDCROWD_``).

Nothing in the project builds ``Settings()`` at import time: ``bot.cli`` builds one and passes the
values down; tests build their own with keyword overrides.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting MedCrowd reads; each field is ``MEDCROWD_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MEDCROWD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("./var"), description="Root of the file store and default database."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is a SQLite file (WAL) in the data dir."
    )
    bot_token: SecretStr | None = Field(None, description="Telegram bot token from @BotFather.")
    telegram_base_url: str = Field(
        "https://api.telegram.org/bot", description="Bot API base URL (tests use the emulator)."
    )
    telegram_file_url: str | None = Field(
        None, description="Bot API file URL; default derived from the base URL (/bot -> /file/bot)."
    )
    telegram_rate_limit: bool = Field(
        True, description="Throttle outgoing calls to Telegram's limits and retry after 429."
    )
    webhook_url: str | None = Field(
        None, description="Public HTTPS URL for webhook mode; long polling when unset."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Webhook secret token (1-256 of A-Z a-z 0-9 _ -); required with a URL."
    )
    webhook_listen: str = Field(
        "127.0.0.1:8080", description="host:port the webhook server listens on."
    )
    webapp_url: str | None = Field(
        None,
        description="Public HTTPS URL of the Mini App editor page (ends in /app/); the Adjust "
        "step offers the editor only when set, else the chat grid alone.",
    )
    webapp_listen: str = Field(
        "127.0.0.1:8081",
        description="host:port of the Mini App server in polling mode (webhook mode serves it "
        "on the webhook server).",
    )
    webapp_max_age: int = Field(
        3600, ge=60, description="Seconds a Mini App session's signed initData stays valid."
    )
    digest_seconds: float = Field(
        3600.0, gt=0, description="How often volunteers get their delayed-credit digest."
    )
    flood_rate: float = Field(3.0, gt=0, description="Updates per second allowed per user.")
    flood_burst: float = Field(8.0, ge=1, description="Burst of updates allowed per user.")
    medsam_checkpoint: Path | None = Field(
        None, description="MedSAM ViT-B checkpoint; without one the fallback proposer is used."
    )
    model: Literal["medsam_vit_b", "sam_vit_b", "tiny"] = Field(
        "medsam_vit_b", description="Architecture of the checkpoint (used when one is configured)."
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Torch device for inference.")
    torch_threads: int = Field(1, ge=1, description="Torch threads per inference worker.")
    inference_encoder: Literal["auto", "fp32", "bf16", "onnx"] = Field(
        "auto", description="Encoder path; auto = onnx on CPU, bf16 on CUDA."
    )
    inference_decoder: Literal["auto", "torch", "factored", "onnx"] = Field(
        "auto", description="Decoder path; auto = onnx on CPU, torch on CUDA."
    )
    workers: int = Field(1, ge=0, description="Proposal worker processes (0 = in-process).")
    ray_address: str | None = Field(
        None, description="Run batch jobs on Ray: 'local' or a cluster address (ray://host:port)."
    )
    synthesis_preset: Literal["tiny", "demo", "cpu", "gpu"] = Field(
        "cpu", description="Synthesis configuration /synthesize uses (cpu: 64 px; gpu: 256 px)."
    )
    synthesis_n: int = Field(
        64, ge=1, le=5000, description="Candidate pairs /synthesize generates by default."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (docs/operations.md)."
    )
    log_file: Path | None = Field(
        None, description="Also log to this file, rotated daily; stderr only when unset."
    )
    retention_log_days: int = Field(
        14, ge=1, description="Rotated log files kept (one a day) when a log file is set."
    )
    retention_updates_hours: float = Field(
        24.0, gt=0, description="Hours raw Telegram updates are kept after processing."
    )
    health_listen: str | None = Field(
        None,
        description="host:port of a /healthz + /readyz server (any mode); the webhook server "
        "always serves them too.",
    )
    admins: str = Field(
        "", description="Comma-separated numeric Telegram user ids of the bot's administrators."
    )
    # Ingest safety caps: a hostile upload must not exhaust memory or disk.
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (or slice stack) accepted, in pixels."
    )
    min_image_side: int = Field(
        32, ge=1, description="Smallest image side accepted, in pixels (smaller: mostly padding)."
    )
    max_file_bytes: int = Field(
        512 << 20, ge=1, description="Largest single input file, after decompression."
    )
    max_archive_bytes: int = Field(
        4 << 30, ge=1, description="Largest total uncompressed size of one zip upload."
    )
    max_compression_ratio: float = Field(
        1100.0,
        gt=1,
        description="Largest expanded/compressed ratio of a zip or gzip entry over 1 MiB.",
    )
    max_archive_entries: int = Field(20_000, ge=1, description="Most entries in one zip upload.")

    @field_validator("admins")
    @classmethod
    def _admin_ids(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if not (part.isascii() and part.isdigit()):  # int() refuses "²", isdigit() not
                raise ValueError(f"admins: {part!r} is not a numeric Telegram user id")
        return value

    @property
    def admin_ids(self) -> frozenset[int]:
        """The administrators' Telegram user ids."""
        return frozenset(int(p) for p in self.admins.split(",") if p.strip())

    @field_validator("webapp_url")
    @classmethod
    def _webapp_https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        local = parts.hostname in ("127.0.0.1", "localhost")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ValueError("webapp_url must be https:// (Telegram opens Mini Apps over HTTPS)")
        return value

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(
                f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}"
            )
        return level

    @property
    def resolved_database_url(self) -> str:
        """The database URL to use, defaulting to ``<data_dir>/medcrowd.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'medcrowd.db').resolve()}"
