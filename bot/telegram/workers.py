"""Extra bot processes on one PostgreSQL database (``medcrowd run --processes N``).

The front process (partition 0) receives the updates and stores them; it starts processes
1..N-1 (``medcrowd run --partition k/N``), each handling the volunteers whose Telegram id is k
modulo N, restarts any that dies, and stops them when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 30.0


def parse_partition(text: str) -> tuple[int, int]:
    """``"k/n"`` as ``(k, n)``; raises ValueError unless 0 <= k < n."""
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
        raise ValueError(f"--partition wants k/n with 0 <= k < n, got {text!r}")
    return int(k), int(n)


class WorkerProcesses:
    """Processes 1..n-1 of a partitioned bot, supervised by the front process."""

    def __init__(self, processes: int, env: Mapping[str, str]) -> None:
        self.processes = processes
        self.env = dict(env)
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0

    def _spawn(self, k: int) -> None:
        command = [sys.executable, "-m", "bot", "run", "--partition", f"{k}/{self.processes}"]
        self.children[k] = subprocess.Popen(command, env={**os.environ, **self.env})
        logger.info("bot worker %d of %d started (pid %d)", k, self.processes, self.children[k].pid)

    def start(self) -> None:
        """Start every worker process."""
        for k in range(1, self.processes):
            self._spawn(k)

    async def supervise(self, stopping: asyncio.Event) -> None:
        """Restart a worker that exits while the bot runs (its volunteers wait meanwhile)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=RESTART_DELAY_S)
            for k, child in list(self.children.items()):
                if child.poll() is not None and not stopping.is_set():
                    logger.warning(
                        "bot worker %d exited with %s; restarting it", k, child.returncode
                    )
                    self.restarts += 1
                    self._spawn(k)

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes its answers in flight), then wait for them."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for k, child in self.children.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(child.wait), STOP_TIMEOUT_S)
            except TimeoutError:
                logger.warning("bot worker %d did not stop in time; killed", k)
                child.kill()
