"""The client where no WebSocket gets through, and the edge's REST answers read with
Python's own HTTP client, against a real mesh (meshkit.py) whose edge wants a token.

Between the client and the edge sits a small proxy of the test's own that passes plain
HTTP and refuses WebSocket upgrades with 400 (and, when asked, `/v1/sse` with 403), as
proxies that do not do upgrades do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import meshkit
import pytest
from clienttest import deadline
from websockets.asyncio.client import connect as ws_connect

import tickmesh
from tickmesh import ServerError, Snapshot, Tick, TickMeshError, Trades, TransportChanged, Welcome

SECRET = b"a-secret-for-the-http-tests-of-32-bytes+"
#: REST requests a second per user (bursts of twice that), low enough to be seen.
REST_RATE_PER_USER = 2
SYMBOLS = ["AAPL", "MSFT", "SPY"]


def token(sub: str) -> str:
    return meshkit.hs256_token(SECRET, sub=sub, ent=["*"], tier="realtime")


@pytest.fixture(scope="module")
def mesh() -> Iterator[meshkit.Mesh]:
    edge_env = {
        "TICKMESH_EDGE_AUTH__ANONYMOUS": "false",
        "TICKMESH_EDGE_AUTH__HS256_SECRET": SECRET.decode(),
        "TICKMESH_EDGE_LIMITS__REST_REQUESTS_PER_S_PER_USER": str(REST_RATE_PER_USER),
    }
    with meshkit.running(edge_env=edge_env, token=token("mesh")) as m:
        yield m


@pytest.fixture
def live(mesh: meshkit.Mesh) -> meshkit.Mesh:
    mesh.ensure_running()
    return mesh


class Proxy:
    """Passes plain HTTP to the edge; refuses upgrades with 400 unless ``pass_upgrades``,
    and ``/v1/sse`` with 403 when ``block_sse``. ``seen``: each request's path and its
    ``Authorization`` header."""

    def __init__(self, edge_port: int) -> None:
        self.edge_port = edge_port
        self.pass_upgrades = False
        self.block_sse = False
        self.seen: list[tuple[str, str | None]] = []
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/stream"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._conns:
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split()[1]
            fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            self.seen.append((target, fields.get("authorization")))
            if fields.get("upgrade", "").lower() == "websocket" and not self.pass_upgrades:
                return await _answer(writer, 400, "this proxy does not do upgrades\n")
            if target.startswith("/v1/sse") and self.block_sse:
                return await _answer(writer, 403, "event streams are blocked here\n")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.edge_port)
            self._conns.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()


async def _answer(writer: asyncio.StreamWriter, status: int, body: str) -> None:
    data = body.encode()
    writer.write(f"HTTP/1.1 {status} No\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        dst.transport.abort()


def client_for(proxy: Proxy, sub: str, **options: Any) -> tickmesh.Client:
    return tickmesh.Client(
        proxy.url,
        token=token(sub),
        backoff_base=0.1,
        backoff_max=0.5,
        websocket_options={"proxy": None},
        **options,
    )


async def direct_seqs(mesh: meshkit.Mesh, symbol: str, seconds: float) -> list[int]:
    """Every seq of ``symbol`` a WebSocket straight to the edge gets in ``seconds``."""
    seqs: list[int] = []
    headers = {"Authorization": f"Bearer {token('direct')}"}
    async with ws_connect(mesh.ws_url, additional_headers=headers, proxy=None) as ws:
        sub = {"op": "subscribe", "id": 1, "symbols": [symbol], "interval_ms": 0, "mode": "quote"}
        await ws.send(json.dumps(sub))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "ticks":
                        seqs += [t["seq"] for t in msg["ticks"] if t["symbol"] == symbol]
    return seqs


@deadline(60)
async def test_where_upgrades_are_refused_live_prices_come_over_sse_with_every_seq_and_back_over_the_websocket(
    live: meshkit.Mesh,
) -> None:
    async with Proxy(live.edge_port) as proxy:
        client = client_for(proxy, "sse-user", retry_websocket=8.0)
        try:
            await client.wait_connected(20)
            assert client.transport == "sse"
            assert await client.subscribe(["AAPL", "MSFT"], interval_ms=0)
            with pytest.raises(TickMeshError) as refused:
                await client.subscribe("AAPL", stream="trades", history=5)
            assert refused.value.code == "bad_request"
            sse = [(t, a) for t, a in proxy.seen if t.startswith("/v1/sse")]
            assert sse and all(a == f"Bearer {client.token}" and "token=" not in t for t, a in sse)

            # Every tick of AAPL over SSE, and every tick a WebSocket straight to the edge
            # got in the same seconds: the same seqs.
            got: list[Any] = []

            async def read() -> None:
                async for event in client:
                    got.append(event)

            reader = asyncio.create_task(read())
            direct = await direct_seqs(live, "AAPL", 3.0)
            await asyncio.sleep(0.5)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            changed = [e for e in got if isinstance(e, TransportChanged)]
            assert [(c.transport, c.previous) for c in changed] == [("sse", None)]
            assert "this proxy does not do upgrades" in changed[0].reason
            aapl = [e.seq for e in got if isinstance(e, Tick) and e.symbol == "AAPL" and not isinstance(e, Snapshot)]
            msft = [e.seq for e in got if isinstance(e, Tick) and e.symbol == "MSFT"]
            assert len(aapl) >= 20 and len(msft) >= 20, (len(aapl), len(msft))
            assert aapl == sorted(set(aapl)) and msft == sorted(set(msft)), "in seq order, each once"
            lo, hi = max(aapl[0], direct[0]), min(aapl[-1], direct[-1])
            assert hi - lo > 10, (aapl[0], aapl[-1], direct[0], direct[-1])
            assert [s for s in aapl if lo <= s <= hi] == [s for s in direct if lo <= s <= hi]
            assert client.stats.broken == 0, "every seq accounted for (folded or told lost)"

            # Upgrades pass again: after `retry_websocket` the client is back on the
            # WebSocket, with the tape SSE could not carry.
            proxy.pass_upgrades = True
            events: list[Any] = []
            async with asyncio.timeout(20):
                async for event in client:
                    events.append(event)
                    if isinstance(event, Trades) and event.symbol == "AAPL":
                        break
            changed = [e for e in events if isinstance(e, TransportChanged)]
            assert [(c.transport, c.previous) for c in changed] == [("websocket", "sse")]
            assert client.transport == "websocket"
            assert any(isinstance(e, Welcome) for e in events)
        finally:
            await client.close()


@deadline(60)
async def test_where_sse_is_blocked_too_prices_come_by_polling_the_snapshots(live: meshkit.Mesh) -> None:
    # A WebSocket holds AAPL, so that the edge answers each poll from the value it carries
    # rather than from KV, whose reads may time out (`unavailable`) on a loaded machine.
    holder = asyncio.create_task(direct_seqs(live, "AAPL", 30.0))
    async with Proxy(live.edge_port) as proxy:
        proxy.block_sse = True
        client = client_for(proxy, "poll-user", poll_interval=0.6)
        try:
            events: list[Any] = []
            async with asyncio.timeout(20):
                async for event in client:
                    events.append(event)
                    if isinstance(event, Welcome):
                        break
            changed = [e for e in events if isinstance(e, TransportChanged)]
            assert [(c.transport, c.previous) for c in changed] == [("poll", None)]
            assert "event streams are blocked" in changed[0].reason
            reply = await client.subscribe(["AAPL", "ZZZZ"], interval_ms=0)
            assert reply.symbols == ("AAPL",) and reply.interval_ms == 600
            snaps: list[Snapshot] = []
            refusals: list[ServerError] = []
            started = time.monotonic()
            others: list[Any] = []
            try:
                async with asyncio.timeout(15):
                    async for event in client:
                        if isinstance(event, Snapshot):
                            snaps.append(event)
                        elif isinstance(event, ServerError):
                            refusals.append(event)
                        else:
                            others.append(event)
                        if len(snaps) >= 5:
                            break
            except TimeoutError:
                raise AssertionError(
                    f"{len(snaps)} snapshots in 15 s; {others}, {refusals}, {client.stats}, {proxy.seen[-4:]}"
                ) from None
            took = time.monotonic() - started
            seqs = [s.seq for s in snaps]
            assert seqs == sorted(set(seqs)), f"each value newer than the last: {seqs}"
            assert took >= 4 * 0.6 * 0.9, f"5 polls in {took:.2f} s: not past the interval"
            assert [r.code for r in refusals] == ["unknown_symbol"]
            assert all(a == f"Bearer {client.token}" for t, a in proxy.seen if t.startswith("/v1/snapshot"))
            assert client.stats.broken == 0
        finally:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
            await client.close()


# ---- REST with urllib -------------------------------------------------------------------


def rest(mesh: meshkit.Mesh, path: str, sub: str | None) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and the JSON body of ``GET path``."""
    req = urllib.request.Request(f"http://127.0.0.1:{mesh.edge_port}{path}")
    if sub is not None:
        req.add_header("Authorization", f"Bearer {token(sub)}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read() or b"null")


async def ws_replies(mesh: meshkit.Mesh, requests: list[dict[str, Any]], until: Any, seconds: float = 5) -> list[Any]:
    """The messages a WebSocket straight to the edge gets for ``requests``, up to the
    first that ``until`` accepts."""
    msgs: list[Any] = []
    headers = {"Authorization": f"Bearer {token('ws-side')}"}
    async with ws_connect(mesh.ws_url, additional_headers=headers, proxy=None) as ws:
        for r in requests:
            await ws.send(json.dumps(r))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for raw in ws:
                    msgs.append(json.loads(raw))
                    if until(msgs):
                        return msgs
    raise AssertionError(f"not what was awaited, within {seconds} s: {msgs}")


@deadline(40)
async def test_rest_snapshots_and_chains_are_the_websockets_objects(live: meshkit.Mesh) -> None:
    # A WebSocket holds the symbols at every tick, so the edge answers REST from the
    # value it carries: the REST object at seq S is the WebSocket's tick S.
    headers = {"Authorization": f"Bearer {token('ws-side')}"}
    ticks: dict[tuple[str, int], dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    async with ws_connect(live.ws_url, additional_headers=headers, proxy=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "symbols": SYMBOLS, "mode": "full", "interval_ms": 0}))
        await ws.send(json.dumps({"op": "chains", "id": 2, "underlying": "AAPL"}))
        ws_chains: dict[str, Any] = {}

        async def read(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "snapshot":
                            first.setdefault(msg["symbol"], msg)
                            ticks[msg["symbol"], msg["seq"]] = {k: v for k, v in msg.items() if k != "type"}
                        elif msg["type"] == "ticks":
                            ticks.update(((t["symbol"], t["seq"]), t) for t in msg["ticks"])
                        elif msg["type"] == "chains":
                            ws_chains.update(msg)

        await read(1.0)
        status, headers_, body = await asyncio.to_thread(rest, live, "/v1/snapshot?symbols=AAPL,MSFT,SPY&mode=full", "rest-1")
        await read(0.5)
    assert status == 200 and headers_["content-type"].startswith("application/json"), (status, body)
    assert headers_["cache-control"] == "no-store"
    assert [s["symbol"] for s in body["snapshots"]] == SYMBOLS and body["errors"] == []
    for snap in body["snapshots"]:
        assert ticks[snap["symbol"], snap["seq"]] == snap, "the WebSocket's tick at that seq"
        snapshot_fields = [k for k in first[snap["symbol"]] if k != "type"]
        assert [k for k in snap if k in snapshot_fields] == [k for k in snapshot_fields if k in snap], (
            "fields in the WebSocket snapshot's order"
        )
    status, _, chains = await asyncio.to_thread(rest, live, "/v1/chains/AAPL", "rest-1")
    assert status == 200 and chains == {k: v for k, v in ws_chains.items() if k != "id"}


@deadline(40)
async def test_rest_bars_are_completed_bars_as_the_stream_has_them(live: meshkit.Mesh) -> None:
    # A few 1s bars must have closed since the market opened.
    status, _, body = 0, {}, {}
    async with asyncio.timeout(20):
        while True:
            status, _, body = await asyncio.to_thread(rest, live, "/v1/bars/AAPL?tf=1s&n=5", "bars")
            if status == 200 and len(body["bars"]) >= 3:
                break
            await asyncio.sleep(1.0)
    assert body["type"] == "bars" and body["tf"] == "1s" and "snapshot" not in body
    bars = body["bars"]
    assert len(bars) <= 5 and all(b["final"] and b["symbol"] == "AAPL" for b in bars)
    assert [b["t"] for b in bars] == sorted({b["t"] for b in bars}), "oldest first"
    history = await ws_replies(
        live,
        [{"op": "subscribe", "id": 1, "symbols": ["AAPL"], "stream": "bars", "tf": "1s", "history": 20}],
        lambda ms: any(m["type"] == "bars" and m.get("snapshot") for m in ms),
    )
    streamed = {b["t"]: b for m in history if m["type"] == "bars" for b in m["bars"]}
    for bar in bars:
        assert streamed[bar["t"]] == bar, "the stream's history has the same completed bar"


def test_rest_wants_a_token_and_keeps_to_its_rate(live: meshkit.Mesh) -> None:
    status, headers, body = rest(live, "/v1/snapshot?symbols=AAPL", None)
    assert status == 401 and headers.get("www-authenticate", "").startswith("Bearer")
    assert body["code"] == "unauthorized" and body["message"] == "a token is required"
    answers = [rest(live, "/v1/chains/AAPL", "rate") for _ in range(2 * REST_RATE_PER_USER + 2)]
    assert [a[0] for a in answers[: 2 * REST_RATE_PER_USER]] == [200] * (2 * REST_RATE_PER_USER), "a burst"
    status, headers, body = answers[-1]
    assert status == 429 and body["code"] == "rate_limited" and "this user" in body["message"]
    assert int(headers["retry-after"]) >= 1 and body["retry_ms"] > 0
