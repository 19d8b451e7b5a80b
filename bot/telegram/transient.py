"""Which failures pass by themselves: the update that met one is retried, not apologised for.

A database restarting or locked, a full disk, Telegram timing out or answering 5xx: the intake
keeps the update and runs it again a moment later (``Intake``), and because every handler is
idempotent where it matters (answers are keyed by crop and volunteer, presses by their lease
token) a retry stores nothing twice. Anything else (a bug, a refusal from Telegram) is logged
and apologised for once.
"""

from __future__ import annotations

import errno

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

RETRY_KEY = "retry_updates"  # bot_data: ids of updates whose handler met a transient failure

# OS errors of a resource that comes back: space, I/O, the network. Not "no such file".
_PASSING_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EAGAIN,
        errno.ENOMEM,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


# PostgreSQL: deadlock detected, serialisation failure, lock not available.
_RETRY_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def _sqlstate(error: DBAPIError) -> str | None:
    """The SQLSTATE of a driver error (asyncpg's, through SQLAlchemy's adapter), if any."""
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a failure worth retrying the update for."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, TimedOut | RetryAfter):
            return True
        if isinstance(error, BadRequest | Forbidden):
            return False  # Telegram refused this call: it would refuse it again
        if isinstance(error, NetworkError):
            return True  # 5xx, a dropped connection
        if isinstance(error, OperationalError | DisconnectionError | PoolTimeout):
            return True  # the database restarting, unreachable, locked or out of connections
        if isinstance(error, DBAPIError) and (
            error.connection_invalidated or _sqlstate(error) in _RETRY_SQLSTATES
        ):
            return True  # a dropped connection, or a deadlock or serialisation conflict
        if isinstance(error, ConnectionError | TimeoutError):
            return True
        if isinstance(error, OSError) and error.errno in _PASSING_ERRNOS:
            return True
        if type(error).__module__.startswith("asyncpg") and "Connection" in type(error).__name__:
            return True  # asyncpg's ConnectionDoesNotExistError and kin, unwrapped
        error = error.__cause__
        seen += 1
    return False


def is_late_query_answer(error: BaseException | None) -> bool:
    """Telegram refused to answer a button press that is too old (e.g. after a retry)."""
    text = str(error).lower()
    return (
        isinstance(error, BadRequest)
        and "query" in text
        and ("too old" in text or "invalid" in text)
    )
