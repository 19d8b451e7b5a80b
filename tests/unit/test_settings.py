from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.db.engine import async_url
from bot.settings import Settings


def test_settings_read_prefixed_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDCROWD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDCROWD_BOT_TOKEN", "123:secret-token")
    settings = Settings(_env_file=None)
    assert settings.data_dir == tmp_path
    assert (
        settings.resolved_database_url
        == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'medcrowd.db'}"
    )
    assert "secret-token" not in repr(settings)
    assert "secret-token" not in str(settings.model_dump())


def test_settings_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCROWD_DATABASE_URL", "postgresql://u@h/db")
    assert Settings(_env_file=None).resolved_database_url == "postgresql://u@h/db"


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValidationError):
        Settings(device="tpu")


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
    ],
)
def test_async_url_fills_in_async_driver(url: str, driver: str) -> None:
    assert async_url(url).drivername == driver


def test_async_url_rejects_other_backends() -> None:
    with pytest.raises(ValueError, match="unsupported backend"):
        async_url("mysql://u@h/db")


@pytest.mark.parametrize(
    "url", ["https://bot.example.org/app/", "http://127.0.0.1:8081/app/", "http://localhost/app/"]
)
def test_settings_accept_https_or_loopback_webapp_url(url: str) -> None:
    assert Settings(webapp_url=url).webapp_url == url


@pytest.mark.parametrize("url", ["http://bot.example.org/app/", "ftp://x/app/", "app/"])
def test_settings_refuse_a_webapp_url_telegram_would_not_open(url: str) -> None:
    with pytest.raises(ValidationError, match="https"):
        Settings(webapp_url=url)
