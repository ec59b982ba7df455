"""``GET`` over HTTP/1.1 with asyncio streams (TLS for ``https``): what the fallbacks
need of plain HTTP, a JSON answer read whole or an event stream read as it comes, and
nothing more (no redirects, no proxy, one request per connection)."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

#: A status line and headers longer than this are refused.
MAX_HEAD_BYTES = 64 * 2**10
#: The longest answer read whole (a snapshot of every symbol a token may hold).
MAX_BODY_BYTES = 16 * 2**20


class HttpError(Exception):
    """The request got no readable answer."""


class Response:
    def __init__(
        self, status: int, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status = status
        #: Header names in lower case.
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, de-chunked; ends with the body."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self._reader.readuntil(b"\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                yield await self._reader.readexactly(size)
                await self._reader.readuntil(b"\n")
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                data = await self._reader.read(min(left, 65536))
                if not data:
                    raise HttpError("the answer ended early")
                left -= len(data)
                yield data
        else:
            while data := await self._reader.read(65536):
                yield data

    async def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        out = bytearray()
        async for data in self.chunks():
            out += data
            if len(out) > limit:
                raise HttpError(f"an answer over {limit} bytes")
        return bytes(out)

    def close(self) -> None:
        self._writer.transport.abort()


async def get(url: str, headers: dict[str, str], ssl: _ssl.SSLContext | bool | None = None) -> Response:
    """Sends ``GET url`` and reads the status and headers; the caller reads the body and
    closes. ``OSError``, ``HttpError`` and ``asyncio.IncompleteReadError`` when it fails;
    the caller bounds the time."""
    u = urlsplit(url)
    tls = u.scheme == "https"
    host = u.hostname or "localhost"
    port = u.port or (443 if tls else 80)
    context: _ssl.SSLContext | None = None
    if tls:
        context = ssl if isinstance(ssl, _ssl.SSLContext) else _ssl.create_default_context()
    reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=MAX_HEAD_BYTES)
    try:
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {u.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status_line = (await reader.readuntil(b"\n")).decode("latin-1").split()
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
            raise HttpError(f"not an HTTP answer: {' '.join(status_line)[:80]!r}")
        fields: dict[str, str] = {}
        while (line := (await reader.readuntil(b"\n")).decode("latin-1").strip()):
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return Response(int(status_line[1]), fields, reader, writer)
    except (asyncio.LimitOverrunError, ValueError) as err:
        writer.transport.abort()
        raise HttpError(f"an unreadable answer: {err}") from err
    except BaseException:
        writer.transport.abort()
        raise
