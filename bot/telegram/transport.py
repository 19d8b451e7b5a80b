"""An aiohttp transport for python-telegram-bot (PTB supports custom ``BaseRequest`` classes).

PTB's default httpx transport costs 3-7x the CPU per request of this one on our loads
(../shared/research/telegram.md, section 2.4), and httpcore's pool gets slower the more requests
are in flight. The project already depends on aiohttp. Parameters are sent as PTB sends them:
form-urlencoded, or multipart when a request carries files.
"""

from __future__ import annotations

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


def _pick(value: object, default: float | None) -> float | None:
    if value is BaseRequest.DEFAULT_NONE:
        return default
    return None if value is None else float(value)  # type: ignore[arg-type]


class AiohttpRequest(BaseRequest):
    """``BaseRequest`` over one shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        pool_size: int = 256,
        connect_timeout: float | None = 5.0,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = pool_size
        self._connect = connect_timeout
        self._read = read_timeout
        self._write = write_timeout
        self._media_write = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout."""
        return self._read

    async def initialize(self) -> None:
        """Open the session (idempotent)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size)
            )

    async def shutdown(self) -> None:
        """Close the session."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send one request; PTB turns the status and body into results or errors."""
        await self.initialize()
        assert self._session is not None
        files = request_data is not None and request_data.contains_files
        data: aiohttp.FormData | dict[str, str] | None = None
        if request_data is not None and files:
            form = aiohttp.FormData()
            for key, value in request_data.json_parameters.items():
                form.add_field(key, value)
            for name, part in request_data.multipart_data.items():
                filename, content, mimetype = part[0], part[1], part[2]
                form.add_field(name, content, filename=filename, content_type=mimetype)
            data = form
        elif request_data is not None:
            data = request_data.json_parameters
        write = _pick(write_timeout, self._media_write if files else self._write)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=_pick(connect_timeout, self._connect),
            sock_read=_pick(read_timeout, self._read),
            connect=_pick(pool_timeout, 1.0 if write is None else max(write, 1.0)),
        )
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp: {error!r}") from error
