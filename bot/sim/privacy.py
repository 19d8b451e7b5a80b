"""What left the server: every payload the bot sent through the emulator, inspected.

Crops go to volunteers with ``protect_content``; no payload may carry a source file's name (or
its stem), a path of the data dir, or any other string the caller names as secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bot.sim.emulator import Call

PHOTO_METHODS = ("sendPhoto", "sendMediaGroup", "editMessageMedia")


@dataclass(frozen=True)
class PrivacyAudit:
    """The result: counts, and what failed (empty lists when nothing leaked)."""

    payloads: int
    crops_to_volunteers: int
    unprotected: list[str] = field(default_factory=list)  # methods of unprotected new photos
    leaks: list[tuple[str, str]] = field(default_factory=list)  # (method, secret found)

    @property
    def clean(self) -> bool:
        """Nothing unprotected, nothing leaked."""
        return not self.unprotected and not self.leaks


def secrets_of(source_names: Iterable[str], paths: Iterable[Path]) -> set[str]:
    """What must never leave: source file names, their stems, and the given folders."""
    found = {str(path.resolve()) for path in paths}
    for name in source_names:
        found |= {name, name.rsplit(".", 1)[0]}
    return {s for s in found if len(s) >= 4}  # a 1-3 character stem would match by chance


def audit(calls: Iterable[Call], secrets: set[str], staff: Iterable[int]) -> PrivacyAudit:
    """Inspect every call the bot made; photos sent to anyone but ``staff`` must be protected.

    ``editMessageMedia`` keeps the message's protection (Telegram has no field for it there), so
    only messages sent anew are checked for the flag.
    """
    staff_ids = set(staff)
    payloads = crops = 0
    unprotected, leaks = [], []
    for call in calls:
        payloads += 1
        text = json.dumps(call.params, default=str)
        leaks += [(call.method, secret) for secret in secrets if secret in text]
        chat = call.params.get("chat_id")
        if call.method in PHOTO_METHODS and chat is not None and int(chat) not in staff_ids:
            crops += 1
            protected = call.params.get("protect_content") in (True, "true", "True")
            if call.method != "editMessageMedia" and not protected:
                unprotected.append(call.method)
    return PrivacyAudit(payloads, crops, unprotected, leaks)
