"""Shared fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-telegram-bot's future time type (timedelta), without its deprecation warnings."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
