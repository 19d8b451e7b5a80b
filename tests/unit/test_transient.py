"""Which failures make the bot retry an update instead of apologising."""

from __future__ import annotations

import datetime as dt
import errno

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.telegram.transient import is_late_query_answer, is_transient


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


def _wrapped(cause: BaseException) -> RuntimeError:
    outer = RuntimeError("while storing the answer")
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    "error",
    [
        TimedOut(),
        NetworkError("Bad Gateway"),
        OperationalError("SELECT 1", {}, Exception("database is locked")),
        DBAPIError("INSERT", {}, _DriverError("40P01")),  # deadlock detected
        DBAPIError("UPDATE", {}, _DriverError("40001")),  # serialisation failure
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        OSError(errno.ENOSPC, "No space left on device"),
        _wrapped(OSError(errno.EIO, "I/O error")),
    ],
)
def test_failures_that_pass_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("Message is not modified"),
        Forbidden("bot was blocked by the user"),
        IntegrityError("INSERT", {}, _DriverError("23505")),
        DBAPIError("INSERT", {}, _DriverError("22001")),  # value too long: a bug, not a blip
        FileNotFoundError(errno.ENOENT, "missing crop"),
        ValueError("a bug"),
        KeyError("a bug"),
        None,
    ],
)
def test_bugs_and_refusals_are_not_retried(error: BaseException | None) -> None:
    assert not is_transient(error)


def test_a_late_answer_to_a_button_press_is_recognised() -> None:
    late = BadRequest("Query is too old and response timeout expired or query id is invalid")
    assert is_late_query_answer(late)
    assert not is_late_query_answer(BadRequest("Message is not modified"))
    assert not is_late_query_answer(NetworkError("query is too old"))


def test_a_flood_wait_is_retried() -> None:
    assert is_transient(RetryAfter(dt.timedelta(seconds=3)))
