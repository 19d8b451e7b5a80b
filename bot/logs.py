"""Log output for the entry point: text or one JSON object per line, secrets redacted.

``medcrowd`` logs to stderr and, with ``MEDCROWD_LOG_FILE``, also to a file rotated at UTC
midnight that keeps ``MEDCROWD_RETENTION_LOG_DAYS`` old files. A JSON line holds ``time`` (ISO 8601,
UTC), ``level``, ``logger``, ``message``, any fields the call passed with ``extra=`` (such as
``update_id``), and ``exc`` with the traceback. Whatever the format, every secret handed to
``configure`` (the bot token) is replaced by ``<redacted>`` in the finished line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"
# Attributes every LogRecord has: whatever else a record carries came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        body: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in body:
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines with every secret replaced by ``<redacted>``."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line, redacted."""
        line = self.inner.format(record)
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


def formatter(kind: Literal["text", "json"], secrets: Iterable[str] = ()) -> logging.Formatter:
    """The formatter for ``kind``, redacting ``secrets``."""
    inner = JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
    return RedactingFormatter(inner, secrets)


def token_secrets(token: str | None) -> list[str]:
    """What of a bot token must never be logged: the whole token and its secret half."""
    if not token:
        return []
    return [token, token.partition(":")[2]]


def handlers(
    kind: Literal["text", "json"],
    *,
    file: Path | None = None,
    keep_days: int = 14,
    secrets: Iterable[str] = (),
) -> list[logging.Handler]:
    """The stderr handler and, given ``file``, a daily rotated file handler, both formatted."""
    chosen: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        chosen.append(
            logging.handlers.TimedRotatingFileHandler(
                file, when="midnight", backupCount=keep_days, utc=True, encoding="utf-8"
            )
        )
    shared = formatter(kind, secrets)
    for handler in chosen:
        handler.setFormatter(shared)
    return chosen
