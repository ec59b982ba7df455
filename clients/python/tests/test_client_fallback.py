"""The client where no WebSocket gets through, against a scripted HTTP server on
127.0.0.1 that refuses every upgrade as a proxy would (400): Server-Sent Events after two
failed WebSocket attempts, polling when the stream cannot be had either, the same seq
checks on both, what they cannot carry kept for the next WebSocket, and the parser of the
event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from clienttest import deadline, tick, until, welcome

import tickmesh
from tickmesh import ContinuityBreak, Disconnected, Snapshot, Tick, TickMeshError, TransportChanged, Welcome
from tickmesh.eventstream import EventStream


class Request:
    def __init__(self, path: str, query: dict[str, str], headers: dict[str, str], writer: asyncio.StreamWriter):
        self.path = path
        self.query = query
        self.headers = headers
        self.writer = writer

    async def answer(self, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        self.writer.close()

    async def open_stream(self) -> None:
        self.writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await self.writer.drain()

    async def event(self, msg: dict[str, Any], name: str | None = None) -> None:
        """One event, sent in two chunks cut mid-line (a reader must join them)."""
        text = f": keep-alive\nevent: {name or msg['type']}\ndata: {json.dumps(msg)}\n\n".encode()
        for part in (text[:20], text[20:]):
            self.writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await self.writer.drain()


Handler = Callable[[Request], Awaitable[None]]


class FakeEdge:
    """Answers ``/v1/stream`` with 400 (the upgrade refused) and every other path with
    its handler; ``requests`` holds what came, in order."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        #: How an upgrade is refused: a proxy's 400, or the edge's own answers.
        self.upgrade: tuple[int, str, dict[str, str]] = (400, "upgrades are not allowed here\n", {})

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    async def __aenter__(self) -> FakeEdge:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def next(self, path: str, timeout: float = 5.0) -> Request:
        """The next request for ``path`` (others before it are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                req = await self.requests.get()
                if req.path == path:
                    return req

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = []
        while (line := (await reader.readline()).decode().strip()):
            lines.append(line)
        target = urlsplit(lines[0].split()[1])
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines[1:]))
        req = Request(target.path, dict(parse_qsl(target.query)), headers, writer)
        self.paths.append(req.path)
        await self.requests.put(req)
        if req.path == "/v1/stream":
            await req.answer(*self.upgrade)
        elif req.path in self.handlers:
            await self.handlers[req.path](req)
        else:
            await req.answer(404, "no such path\n")


async def held(req: Request) -> None:
    """Answered by the test itself (taken from ``requests``)."""


async def ready(req: Request) -> None:
    await req.answer(200, "ready\n")


FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2, "random": lambda: 0.5, "token": "tkn"}


@deadline(15)
async def test_two_refused_upgrades_then_sse_with_the_same_seq_checks_and_it_says_so() -> None:
    async with FakeEdge({"/v1/sse": held}) as edge:
        client = tickmesh.Client(edge.url, **FAST)
        client.start()
        try:
            first = await edge.next("/v1/sse")
            assert first.headers["authorization"] == "Bearer tkn", "the token in the header"
            assert "token" not in first.query, "never in the URL"
            assert edge.paths[:2] == ["/v1/stream", "/v1/stream"], "two WebSocket attempts first"
            await first.open_stream()
            await first.event(welcome(heartbeat_ms=1000, session="sse-1"))
            events = await until(client, lambda e: isinstance(e, Welcome))
            gone = [e for e in events if isinstance(e, Disconnected)]
            assert [(g.http_status, g.reconnect_in == 0) for g in gone] == [(400, False), (400, True)]
            changed = events[-2]
            assert isinstance(changed, TransportChanged), events
            assert (changed.transport, changed.previous) == ("sse", None)
            assert "websocket failed" in changed.reason and "upgrades are not allowed" in changed.reason
            assert client.transport == "sse" and client.connected

            pending = asyncio.create_task(client.subscribe(["AAPL", "MSFT"], interval_ms=0))
            stream = await edge.next("/v1/sse")
            assert stream.query == {"symbols": "AAPL,MSFT", "mode": "quote", "interval_ms": "0"}
            await stream.open_stream()
            await stream.event(welcome(session="sse-2"))  # not passed on again
            await stream.event({"type": "subscribed", "id": 1, "symbols": ["AAPL"], "interval_ms": 0, "mode": "quote"})
            await stream.event({"type": "error", "id": 1, "code": "not_entitled", "symbol": "MSFT"})
            await stream.event({"type": "snapshot", **tick("AAPL", 5)})
            await stream.event({"type": "ticks", "ticks": [tick("AAPL", 5), tick("AAPL", 6), tick("AAPL", 9)]})
            reply = await pending
            assert reply.symbols == ("AAPL",)
            events = await until(client, lambda e: isinstance(e, Tick) and e.seq == 9)
            assert not [e for e in events if isinstance(e, Welcome)]
            ticks = [(type(e).__name__, e.seq) for e in events if isinstance(e, Tick)]
            assert ticks == [("Snapshot", 5), ("Tick", 6), ("Tick", 9)], "seq 5 again is dropped"
            assert [e for e in events if isinstance(e, ContinuityBreak)][0].had == 6
            assert client.held["symbols"].keys() == {"AAPL"}, "MSFT refused for good"

            # What SSE cannot carry is refused now and kept for the next WebSocket.
            with pytest.raises(TickMeshError) as refused:
                await client.subscribe("AAPL", stream="trades", history=10)
            assert refused.value.code == "bad_request" and "needs a WebSocket" in refused.value.message
            with pytest.raises(TickMeshError):
                await client.chains("AAPL")
            assert client.held["trades"] == {"AAPL": 10}
            await client.ping()
            assert [s.symbol for s in await client.list()] == ["AAPL"]

            # The edge closes the stream as it would a WebSocket: a drain.
            await stream.event({"code": 4001, "reason": "draining"}, name="close")
            gone2 = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
            assert gone2.code == 4001
        finally:
            await client.close()


@deadline(10)
async def test_a_subscribe_made_while_a_stream_opens_opens_another_with_it() -> None:
    async with FakeEdge({"/v1/sse": held}) as edge:
        client = tickmesh.Client(edge.url, **FAST)
        client.start()
        try:
            first = await edge.next("/v1/sse")
            await first.open_stream()
            await first.event(welcome(session="sse-1"))
            await client.wait_connected(5)
            aapl = asyncio.create_task(client.subscribe("AAPL"))
            second = await edge.next("/v1/sse")
            assert second.query["symbols"] == "AAPL"
            msft = asyncio.create_task(client.subscribe("MSFT"))
            await asyncio.sleep(0.1)
            await second.open_stream()  # answered only now: MSFT came while it opened
            third = await edge.next("/v1/sse")
            assert third.query["symbols"] == "AAPL,MSFT"
            await third.open_stream()
            await third.event({"type": "subscribed", "id": 1, "symbols": ["AAPL", "MSFT"], "interval_ms": 250})
            assert (await aapl).symbols == ("AAPL",) and (await msft).symbols == ("MSFT",)
        finally:
            await client.close()


@deadline(15)
async def test_sse_refused_too_then_polling_the_snapshots_and_back_to_the_websocket_after_a_while() -> None:
    seq = iter(range(10, 1000))

    async def snapshot(req: Request) -> None:
        symbols = req.query["symbols"].split(",")
        body = {
            "snapshots": [tick(s, next(seq)) for s in symbols if s != "ZZZZ"],
            "errors": [{"code": "unknown_symbol", "symbol": "ZZZZ", "message": "no such symbol"}]
            if "ZZZZ" in symbols
            else [],
        }
        await req.answer(200, body)

    async def sse(req: Request) -> None:
        await req.answer(403, {"type": "error", "code": "bad_request", "message": "blocked by the proxy"})

    handlers = {"/v1/sse": sse, "/readyz": ready, "/v1/snapshot": snapshot}
    async with FakeEdge(handlers) as edge:
        client = tickmesh.Client(edge.url, poll_interval=0.1, retry_websocket=1.0, **FAST)
        client.start()
        try:
            events = await until(client, lambda e: isinstance(e, Welcome))
            changed = [e for e in events if isinstance(e, TransportChanged)]
            assert [(c.transport, c.previous) for c in changed] == [("poll", None)]
            assert "sse failed: blocked by the proxy" in changed[0].reason
            assert edge.paths[:5] == ["/v1/stream", "/v1/stream", "/v1/sse", "/readyz", "/v1/snapshot"] or (
                edge.paths[:4] == ["/v1/stream", "/v1/stream", "/v1/sse", "/readyz"]
            )
            assert client.transport == "poll" and events[-1].session == "poll"

            reply = await client.subscribe(["AAPL", "ZZZZ"], interval_ms=0)
            assert reply.symbols == ("AAPL",) and reply.interval_ms == 100, "polled every 100 ms at most"
            polled = await edge.next("/v1/snapshot")
            assert polled.headers["authorization"] == "Bearer tkn"
            snaps = [e for e in await until(client, lambda e: isinstance(e, Snapshot)) if isinstance(e, Snapshot)]
            for _ in range(3):
                snaps += [e for e in await until(client, lambda e: isinstance(e, Snapshot))]
            seqs = [s.seq for s in snaps if s.symbol == "AAPL"]
            assert len(seqs) == 4 and seqs == sorted(set(seqs)), seqs
            assert client.held["symbols"].keys() == {"AAPL"}

            # After `retry_websocket` the connection ends for the WebSocket to be tried
            # again; refused, the client falls back again at once (the count is not reset).
            events = await until(client, lambda e: isinstance(e, Disconnected) and e.code == 1000, timeout=3)
            assert events[-1].reason == "trying the WebSocket again"
            n = len(edge.paths)
            await until(client, lambda e: isinstance(e, Welcome))
            assert edge.paths[n:n + 3] == ["/v1/stream", "/v1/sse", "/readyz"], edge.paths[n:]
            assert client.stats.broken == 0
        finally:
            await client.close()


@deadline(10)
@pytest.mark.parametrize("status", [403, 429, 503])
async def test_upgrades_refused_by_the_edge_itself_are_not_a_reason_to_fall_back(status: int) -> None:
    async with FakeEdge({"/v1/sse": held, "/readyz": ready}) as edge:
        edge.upgrade = (status, "refused by the edge\n", {"Retry-After": "0"})
        client = tickmesh.Client(edge.url, **FAST)
        client.start()
        try:
            for _ in range(4):
                gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
                assert gone.http_status == status and gone.reconnect_in, "backed off, never at once"
            assert set(edge.paths) == {"/v1/stream"} and client.transport is None
        finally:
            await client.close()


def test_the_event_stream_parser_joins_chunks_and_lines_and_skips_comments() -> None:
    parser = EventStream(max_line=64)
    assert parser.feed(b": hi\r\nevent: ti") == []
    assert parser.feed(b"cks\r\ndata: {\"a\":\r") == []
    assert parser.feed(b"\ndata: 1}\n\nevent: hb\rdata:{}\r\r") == [("ticks", '{"a":\n1}')]
    assert parser.comments == 1
    # A CR last may be the first half of a CRLF: the line ends with what comes next.
    assert parser.feed(b"data: x\n\n") == [("hb", "{}"), ("message", "x")]
    with pytest.raises(ValueError):
        parser.feed(b"data: " + b"x" * 100)
