"""The webhook endpoint (aiohttp): Telegram POSTs updates here; each is stored before the 200.

The secret token header is compared in constant time; a wrong or missing one gets 403 and
nothing is stored. Bodies over ``max_bytes`` are refused. What to do with a stored batch is the
caller's (``admit``: the bot's intake, which also applies flood control). Given a ``MiniApp``,
the same server also serves the Mini App editor (one public HTTPS host for both).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from bot.campaign.health import Readiness
from bot.web import health
from bot.web.miniapp import MiniApp

logger = logging.getLogger(__name__)

SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
HEADER = "X-Telegram-Bot-Api-Secret-Token"


class Admits(Protocol):
    """Whatever stores updates (the bot's intake)."""

    async def admit(self, payloads: list[dict[str, Any]]) -> int:
        """Store updates; returns how many were new."""
        ...


class WebhookServer:
    """An aiohttp server: ``POST <path>``, ``/healthz`` and ``/readyz``, the Mini App if given."""

    def __init__(
        self,
        *,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 8080,
        path: str = "/telegram",
        max_bytes: int = 1 << 20,
        register: Callable[[], Awaitable[Any]] | None = None,
        miniapp: MiniApp | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        if not SECRET.fullmatch(secret):
            raise ValueError("webhook secret must be 1-256 characters of A-Z a-z 0-9 _ -")
        self.secret = secret.encode()
        self.host, self.port, self.path = host, port, path
        self.max_bytes = max_bytes
        self.register = register
        self.miniapp = miniapp
        self.readiness = readiness
        self._intake: Admits | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also handy in tests)."""
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_post(self.path, self._update)
        health.mount(app, self.readiness)
        if self.miniapp is not None:
            self.miniapp.mount(app)  # its API caps its own bodies, below max_bytes
        return app

    async def start(self, intake: Admits) -> None:
        """Listen, then (if given) register the webhook with Telegram."""
        self._intake = intake
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port: read back the one bound
            self.port = int(self._runner.addresses[0][1])
        logger.info("webhook listening on %s:%s%s", self.host, self.port, self.path)
        if self.register is not None:
            await self.register()

    async def stop(self) -> None:
        """Stop listening."""
        if self.miniapp is not None:
            await self.miniapp.drain()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _update(self, request: web.Request) -> web.Response:
        given = request.headers.get(HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            return web.Response(status=403, text="forbidden")
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        if self._intake is None:
            return web.Response(status=503, text="starting")
        await self._intake.admit([payload])  # stored (or deliberately dropped) before the 200
        return web.Response(status=200, text="ok")
