"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness) for probes and load balancers.

``/healthz`` answers 200 ``{"ok": true}`` while the process serves HTTP and its vital probes (the
bot's workers) are fine, else 503 with the problems: restart the process. ``/readyz`` answers 200
``{"ready": true}`` when the bot runs and every probe of its ``Readiness`` is fine, else 503 with
the problems by name: ``{"ready": false, "problems": {"database": "unreachable (OSError)"}}``.
The webhook server mounts both; ``HealthServer`` serves them on their own port
(``MEDCROWD_HEALTH_LISTEN``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.campaign.health import Readiness

logger = logging.getLogger(__name__)


def mount(app: web.Application, readiness: Readiness | None) -> None:
    """Add ``/healthz`` and, given a ``Readiness``, ``/readyz`` to ``app``."""

    async def healthz(_request: web.Request) -> web.Response:
        problems = await readiness.dead() if readiness is not None else {}
        if problems:
            return web.json_response({"ok": False, "problems": problems}, status=503)
        return web.json_response({"ok": True})

    app.router.add_get("/healthz", healthz)
    if readiness is None:
        return

    async def readyz(_request: web.Request) -> web.Response:
        problems = await readiness.problems()
        if problems:
            return web.json_response({"ready": False, "problems": problems}, status=503)
        return web.json_response({"ready": True})

    app.router.add_get("/readyz", readyz)


class HealthServer:
    """A small aiohttp server with ``/healthz`` and ``/readyz`` only."""

    def __init__(self, readiness: Readiness, *, host: str = "127.0.0.1", port: int = 8082) -> None:
        self.readiness = readiness
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also handy in tests)."""
        app = web.Application()
        mount(app, self.readiness)
        return app

    async def start(self) -> None:
        """Listen (port 0: an ephemeral port, read back into ``port``)."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        logger.info("health endpoints on http://%s:%s/readyz", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
