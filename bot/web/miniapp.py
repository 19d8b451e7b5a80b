"""The Mini App mask editor: its static page and the JSON API behind it (aiohttp).

Routes (mounted on the webhook server in webhook mode, on ``MiniAppServer`` in polling mode):

* ``GET /app/`` (and its two assets): the page, plain HTML/CSS/JS shipped as package data;
* ``GET /api/crop?t=TOKEN``: the leased crop (PNG), proposal, working mask and candidates;
* ``POST /api/refine`` ``{"t", "points": [[x, y, label], ...]}``: the decoder's new mask;
* ``POST /api/submit`` ``{"t", "mask": runs, "prompt"}``: the volunteer's answer.

Every API call carries ``Authorization: tma <initData>``; the caller's Telegram id comes from that
validated string alone. Masks travel as row-major run lengths (``bot.store.codecs.encode_runs``).
Bodies are capped (413), requests from a foreign ``Origin`` are refused, and CORS headers are
sent only to the Mini App's own origin. Handlers are thin: the use cases are in
``bot.campaign.editor``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import editor
from bot.campaign.crowd import Crowd
from bot.campaign.errors import InvalidInput, NoConsent, NotAllowed, StaleTask
from bot.campaign.flood import FloodGate
from bot.campaign.refine import Refiner
from bot.store import codecs
from bot.store.files import FileStore
from bot.web.initdata import InvalidInitData, validate_init_data

logger = logging.getLogger(__name__)

OnAnswer = Callable[[editor.EditorAnswer], Awaitable[None]]
ASSETS = {
    "": ("index.html", "text/html"),
    "editor.js": ("editor.js", "text/javascript"),
    "editor.css": ("editor.css", "text/css"),
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'self' https://web.telegram.org"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
REFINE_BYTES = 16 << 10
SUBMIT_BYTES = 512 << 10
EDITOR_RATE = 5.0  # API calls per second per user, over a burst of
EDITOR_BURST = 15.0


class ApiError(Exception):
    """A refusal with its HTTP status; the message goes to the page as ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a URL (the Mini App's origin), None for None."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json(status: int, payload: dict[str, Any], headers: dict[str, str]) -> web.Response:
    body = json.dumps(payload, separators=(",", ":"))
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _no_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are Python's JSON, not JSON: refuse them."""
    raise ValueError(f"{name} is not JSON")


async def read_capped(request: web.Request, cap: int) -> bytes:
    """The request body, refused with 413 beyond ``cap`` bytes (declared or actually sent)."""
    if request.content_length is not None and request.content_length > cap:
        raise ApiError(413, f"request body over {cap} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(1 << 14):
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"request body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class MiniApp:
    """The editor's routes over the bot's use cases; ``attach`` lets the bot hear of answers."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: FileStore,
        crowd: Crowd,
        refiner: Refiner,
        bot_token: str,
        origin: str | None = None,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.time,
        gate: FloodGate | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.crowd = crowd
        self.refiner = refiner
        self._token = bot_token
        self.origin = origin
        self.max_age = max_age
        self.clock = clock
        # Per-user request limits: taps come a few a second at most from a person.
        self.gate = gate or FloodGate(rate=EDITOR_RATE, burst=EDITOR_BURST)
        self._on_answer: OnAnswer | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def attach(self, on_answer: OnAnswer) -> None:
        """Call ``on_answer`` (in the background) after each newly stored answer."""
        self._on_answer = on_answer

    def mount(self, app: web.Application) -> None:
        """Add the page and the API to an aiohttp application."""
        app.router.add_get("/app", self._to_page)
        app.router.add_get("/app/{name:[a-z.]*}", self._asset)
        app.router.add_get("/api/crop", self._api(self._crop))
        app.router.add_post("/api/refine", self._api(self._refine))
        app.router.add_post("/api/submit", self._api(self._submit))
        app.router.add_route("OPTIONS", "/api/{tail:.*}", self._preflight)

    async def drain(self) -> None:
        """Wait for the answers' follow-ups still running (on shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    # -- plumbing ----------------------------------------------------------------------------

    async def _to_page(self, _request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/app/")

    async def _asset(self, request: web.Request) -> web.Response:
        found = ASSETS.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        name, kind = found
        body = resources.files("bot.web").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=PAGE_HEADERS)

    def _cors(self, request: web.Request) -> dict[str, str]:
        """CORS headers for an allowed ``Origin`` (none for same-origin); raises 403 otherwise."""
        given = request.headers.get("Origin")
        if given is None or given == f"{request.scheme}://{request.host}":
            return {"Cache-Control": "no-store"}
        if self.origin is None or given != self.origin:
            raise ApiError(403, "requests from that origin are not allowed")
        return {
            "Cache-Control": "no-store",
            "Access-Control-Allow-Origin": given,
            "Vary": "Origin",
        }

    async def _preflight(self, request: web.Request) -> web.Response:
        try:
            headers = self._cors(request)
        except ApiError as error:
            return _json(error.status, {"error": str(error)}, {})
        headers["Access-Control-Allow-Methods"] = "GET, POST"
        headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        headers["Access-Control-Max-Age"] = "600"
        return web.Response(status=204, headers=headers)

    def _user(self, request: web.Request) -> int:
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "tma" or not raw:
            raise ApiError(401, "missing Telegram initData (Authorization: tma ...)")
        try:
            checked = validate_init_data(raw, self._token, max_age=self.max_age, now=self.clock())
        except InvalidInitData as error:
            raise ApiError(401, str(error)) from None
        if not self.gate.allow(checked.user_id):  # before any database or model work
            raise ApiError(429, "too many requests: wait a moment, then try again")
        return checked.user_id

    def _api(
        self, handler: Callable[[web.Request, int], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Wrap a handler: origin check, initData, then errors mapped to JSON statuses."""

        async def wrapped(request: web.Request) -> web.Response:
            headers: dict[str, str] = {}
            try:
                headers = self._cors(request)
                started = time.perf_counter()
                payload = await handler(request, self._user(request))
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1e3:.1f}"
                return _json(200, payload, headers)
            except ApiError as error:
                status, message = error.status, str(error)
            except (NotAllowed, NoConsent) as error:
                status, message = 403, str(error)
            except StaleTask as error:
                status, message = 409, str(error)
            except InvalidInput as error:
                status, message = 400, str(error)
            if status >= 401:
                logger.info("mini app %s refused: %s", request.path, status)
            return _json(status, {"error": message}, headers)

        return wrapped

    @staticmethod
    def _body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError):  # RecursionError: "[[[[...": nested past the stack
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body is not a JSON object")
        return body

    @staticmethod
    def _token_of(value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= 32:
            raise ApiError(400, "t must be the crop's token")
        return value

    # -- the API -------------------------------------------------------------------------------

    async def _crop(self, request: web.Request, user_id: int) -> dict[str, Any]:
        token = request.query.get("t") or None
        if token is not None:
            token = self._token_of(token)
        async with self.sessionmaker() as session:
            crop = await editor.open_crop(
                session,
                self.store,
                telegram_user_id=user_id,
                token=token,
                takes_points=self.refiner.takes_points,
            )
        png = await asyncio.to_thread(codecs.encode_png, crop.crop, level=1)
        return {
            "token": crop.token,
            "structure": crop.structure,
            "width": int(crop.crop.shape[1]),
            "height": int(crop.crop.shape[0]),
            "image": "data:image/png;base64," + base64.b64encode(png).decode(),
            "proposal": codecs.encode_runs(crop.proposal),
            "mask": codecs.encode_runs(crop.working),
            "candidates": [
                {"name": c.name, "mask": codecs.encode_runs(c.mask)} for c in crop.candidates
            ],
            "takes_points": crop.takes_points,
            "max_points": editor.MAX_POINTS,
        }

    async def _refine(self, request: web.Request, user_id: int) -> dict[str, Any]:
        body = self._body(await read_capped(request, REFINE_BYTES))
        token = self._token_of(body.get("t"))
        async with self.sessionmaker() as session:
            job = await editor.prepare_refine(
                session, self.store, telegram_user_id=user_id, token=token
            )
        hw = (int(job.crop.shape[0]), int(job.crop.shape[1]))
        points = editor.parse_points(body.get("points"), hw)
        started = time.perf_counter()
        mask, prompt = await editor.run_refine(self.refiner, job, points)
        decoder_ms = (time.perf_counter() - started) * 1e3
        return {"mask": codecs.encode_runs(mask), "prompt": prompt, "decoder_ms": decoder_ms}

    async def _submit(self, request: web.Request, user_id: int) -> dict[str, Any]:
        body = self._body(await read_capped(request, SUBMIT_BYTES))
        token = self._token_of(body.get("t"))
        runs, hw = body.get("mask"), body.get("size")
        if not (isinstance(runs, list) and isinstance(hw, list) and len(hw) == 2):
            raise ApiError(400, "mask (runs) and size ([height, width]) are required")
        if not all(isinstance(v, int) and 0 < v <= 4096 for v in hw):
            raise ApiError(400, "size must be [height, width] in pixels")
        try:
            mask = codecs.decode_runs(runs, (hw[0], hw[1]))
        except ValueError as error:
            raise ApiError(400, f"mask: {error}") from None
        prompt = body.get("prompt") if isinstance(body.get("prompt"), dict) else None
        async with self.sessionmaker() as session:
            done = await editor.submit_mask(
                session,
                self.store,
                self.crowd,
                telegram_user_id=user_id,
                token=token,
                mask=mask,
                prompt=prompt,
            )
        submitted = done.submitted
        if not submitted.duplicate and self._on_answer is not None:
            task = asyncio.create_task(self._follow_up(done))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return {
            "ok": True,
            "duplicate": submitted.duplicate,
            "verdict": submitted.answer.verdict.value,
        }

    async def _follow_up(self, done: editor.EditorAnswer) -> None:
        assert self._on_answer is not None
        try:
            await self._on_answer(done)
        except Exception:  # the answer is stored; the chat catches up on the next press
            logger.exception("after a Mini App answer from volunteer %s", done.volunteer.id)


class MiniAppServer:
    """A small aiohttp server with only the Mini App (polling mode), plus ``GET /healthz``."""

    def __init__(self, miniapp: MiniApp, *, host: str = "127.0.0.1", port: int = 8081) -> None:
        self.miniapp = miniapp
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also handy in tests)."""
        app = web.Application(client_max_size=SUBMIT_BYTES)
        self.miniapp.mount(app)
        app.router.add_get("/healthz", self._health)
        return app

    @property
    def base_url(self) -> str:
        """Where it listens, as a URL (the port is known after ``start``)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        logger.info("mini app listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, after the answers' follow-ups."""
        await self.miniapp.drain()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
