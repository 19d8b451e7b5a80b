"""Log lines: JSON objects with extra fields, and the bot token redacted in either format."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from pathlib import Path

import pytest

from bot import logs

TOKEN = "123456:AAE-secret_Part0fTheToken"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "bot.telegram.intake", logging.ERROR, __file__, 1, message, args, None
    )
    record.__dict__.update(extra)
    return record


def _fail() -> None:
    raise RuntimeError("boom")


def test_a_json_line_holds_time_level_logger_message_extras_and_traceback() -> None:
    record = _record("update %s failed", 7, update_id=7, volunteer_id=3)
    try:
        _fail()
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = logs.formatter("json").format(record)
    body = json.loads(line)
    assert "\n" not in line
    assert body["level"] == "ERROR"
    assert body["logger"] == "bot.telegram.intake"
    assert body["message"] == "update 7 failed"
    assert (body["update_id"], body["volunteer_id"]) == (7, 3)
    assert body["time"].endswith("+00:00")
    assert "RuntimeError: boom" in body["exc"]
    assert "args" not in body  # standard attributes stay out
    assert "msg" not in body


@pytest.mark.parametrize("kind", ["text", "json"])
def test_the_token_is_redacted_from_message_args_and_extras(kind: str) -> None:
    record = _record(
        "GET https://api.telegram.org/bot%s/getMe", TOKEN, url=f"/bot{TOKEN}/x", tail=TOKEN[7:]
    )
    line = logs.formatter(kind, logs.token_secrets(TOKEN)).format(record)  # type: ignore[arg-type]
    assert TOKEN.split(":")[1] not in line
    assert logs.REDACTED in line
    if kind == "json":
        assert (
            json.loads(line)["message"] == f"GET https://api.telegram.org/bot{logs.REDACTED}/getMe"
        )


def test_the_log_file_gets_the_same_lines_and_keeps_the_retention(tmp_path: Path) -> None:
    file = tmp_path / "logs" / "medcrowd.log"
    handlers = logs.handlers("json", file=file, keep_days=5, secrets=logs.token_secrets(TOKEN))
    rotating = [h for h in handlers if isinstance(h, logging.handlers.TimedRotatingFileHandler)]
    assert len(rotating) == 1
    assert rotating[0].backupCount == 5
    assert rotating[0].when == "MIDNIGHT"
    logger = logging.getLogger("test.logs.file")
    logger.propagate = False
    logger.addHandler(rotating[0])
    try:
        logger.warning("token %s", TOKEN, extra={"update_id": 9})
    finally:
        logger.removeHandler(rotating[0])
        rotating[0].close()
    (line,) = file.read_text().splitlines()
    assert json.loads(line)["update_id"] == 9
    assert TOKEN not in line
