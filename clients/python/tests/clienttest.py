"""Test helpers: a deadline for every async test, and a scripted gateway on 127.0.0.1.

:class:`FakeGateway` is a real WebSocket server (the ``websockets`` library's) that
speaks as much of the protocol as a test scripts: it sends ``welcome`` on each
connection and hands the test every connection and every client request, so the test
can answer, push frames, close with a code, or drop the TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Self

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import tickmesh

P = ParamSpec("P")


def deadline(seconds: float) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, None]]:
    """Runs an async test in a fresh event loop, failing it after ``seconds``: nothing
    a test awaits can hang the run."""

    def wrap(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
        @functools.wraps(test)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            async def bounded() -> None:
                async with asyncio.timeout(seconds):
                    await test(*args, **kwargs)

            asyncio.run(bounded())

        return run

    return wrap


async def until(client: tickmesh.Client, match: Callable[[Any], bool], timeout: float = 5.0) -> list[Any]:
    """The events up to and including the first that ``match`` accepts."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in client:
            seen.append(event)
            if match(event):
                return seen
    raise AssertionError(f"the events ended before the one awaited: {seen}")


def welcome(heartbeat_ms: int = 1000, session: str = "fake-1") -> dict[str, Any]:
    return {
        "type": "welcome",
        "protocol": 1,
        "session": session,
        "edge": "fake",
        "heartbeat_ms": heartbeat_ms,
        "limits": {"max_symbols": 100, "max_msgs_per_s": 50, "min_interval_ms": 0},
    }


def tick(symbol: str, seq: int, epoch: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "seq": seq,
        "epoch": epoch,
        "ts": seq * 1000,
        "last": 100.0 + seq / 100,
        **fields,
    }


class FakeConn:
    """One client connection as the gateway sees it."""

    def __init__(self, ws: ServerConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()

    @property
    def headers(self) -> Headers:
        assert self.ws.request is not None
        return self.ws.request.headers

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(msg) if self.binary else json.dumps(msg))

    async def request(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next request the client sent."""
        async with asyncio.timeout(timeout):
            return await self.requests.get()

    async def subscribed(self, req: dict[str, Any], **fields: Any) -> None:
        """Answers a subscribe, accepting everything it asked for."""
        reply: dict[str, Any] = {
            "type": "subscribed",
            "id": req["id"],
            "symbols": req.get("symbols", []),
            "interval_ms": req.get("interval_ms", 0),
            "mode": req.get("mode", "quote"),
        }
        for key in ("chains", "stream", "tf"):
            if key in req:
                reply[key] = req[key]
        await self.send({**reply, **fields})

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def drop(self) -> None:
        """Ends the TCP connection without a close frame (a crash, a cable)."""
        self.ws.transport.abort()


class FakeGateway:
    """A scripted gateway on a loopback port. ``refuse`` (an HTTP status) makes it
    refuse upgrades; ``greet=False`` makes it send no ``welcome``."""

    def __init__(self, *, heartbeat_ms: int = 1000, port: int = 0) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.port = port
        self.greet = True
        self.refuse: int | None = None
        self.upgrades: list[Request] = []
        self.connections: asyncio.Queue[FakeConn] = asyncio.Queue()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    async def start(self) -> Self:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            self.port,
            subprotocols=["tickmesh.v1.json", "tickmesh.v1.msgpack"],  # type: ignore[list-item]
            process_request=self._process_request,
            ping_interval=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def connection(self, timeout: float = 5.0) -> FakeConn:
        """The next connection that got its ``welcome``."""
        async with asyncio.timeout(timeout):
            return await self.connections.get()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.upgrades.append(request)
        if self.refuse is not None:
            return conn.respond(self.refuse, "refused by the test\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        conn = FakeConn(ws, binary=ws.subprotocol == "tickmesh.v1.msgpack")
        if self.greet:
            await conn.send(welcome(self.heartbeat_ms))
        await self.connections.put(conn)
        try:
            # A dropped connection (a test's `drop`, the client's abort) ends the script.
            with contextlib.suppress(ConnectionClosed):
                async for data in ws:
                    msg = msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
                    await conn.requests.put(msg)
        finally:
            conn.closed.set()
