"""Per-user flood control: a token bucket per Telegram user, checked before any database work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class FloodGate:
    """Allows ``rate`` updates per second per user, with bursts of ``burst``.

    Buckets of users idle for a minute are dropped, so memory stays bounded.
    """

    rate: float = 3.0
    burst: float = 8.0
    buckets: dict[int, tuple[float, float]] = field(default_factory=dict)
    _swept: float = 0.0

    def allow(self, user_id: int, now: float | None = None) -> bool:
        """Take one token from the user's bucket; False when it is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(user_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[user_id] = (tokens - 1.0 if allowed else tokens, now)
        if now - self._swept > 60.0:
            self._swept = now
            self.buckets = {u: b for u, b in self.buckets.items() if now - b[1] < 60.0}
        return allowed


def user_of(payload: dict[str, object]) -> int | None:
    """The Telegram user an update comes from (None for updates without one)."""
    for kind in ("message", "callback_query", "edited_message"):
        body = payload.get(kind)
        if isinstance(body, dict):
            sender = body.get("from")
            if isinstance(sender, dict) and isinstance(sender.get("id"), int):
                return int(sender["id"])
    return None
