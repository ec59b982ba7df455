"""The client against a scripted gateway on 127.0.0.1: requests and replies, reconnects
with jittered backoff, replays, drains, close codes, `unavailable`, liveness, encodings
and the bounded event queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from clienttest import FakeGateway, deadline, tick, until

import tickmesh
from tickmesh import (
    ClosedError,
    Disconnected,
    Draining,
    ServerError,
    Snapshot,
    Subscribed,
    Tick,
    TickMeshError,
    Welcome,
)


def fast(**options: Any) -> dict[str, Any]:
    """Client options with short, deterministic delays: full jitter drawn at 0.5."""
    return {"backoff_base": 0.2, "backoff_max": 2.0, "random": lambda: 0.5, **options}


@deadline(10)
async def test_subscribe_then_snapshot_then_ticks_in_order_typed() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast()) as client:
        conn = await gw.connection()
        assert conn.headers.get("Authorization") is None, "anonymous: no token sent"
        pending = asyncio.create_task(client.subscribe([" aapl", "MSFT", "AAPL"], interval_ms=0))
        req = await conn.request()
        assert req == {
            "op": "subscribe",
            "id": 1,
            "mode": "quote",
            "interval_ms": 0,
            "symbols": ["AAPL", "MSFT"],
        }
        await conn.subscribed(req)
        assert await pending == Subscribed(("AAPL", "MSFT"), 0, "quote")
        await conn.send({"type": "snapshot", **tick("AAPL", 10)})
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 11), tick("MSFT", 4), tick("AAPL", 11)]})
        await conn.send({"type": "hb", "ts": 5, "lag_ms": 12})
        events = await until(client, lambda e: isinstance(e, tickmesh.Heartbeat))
        assert [type(e) for e in events] == [Welcome, Snapshot, Tick, Tick, tickmesh.Heartbeat]
        assert [(e.symbol, e.seq) for e in events if isinstance(e, Tick)] == [
            ("AAPL", 10),
            ("AAPL", 11),
            ("MSFT", 4),
        ]
        assert client.stats.stale == 1 and client.lag_ms == 12
        assert client.welcome is not None and client.welcome.session == "fake-1"


@deadline(10)
async def test_a_dropped_connection_is_replaced_after_a_jittered_delay_and_everything_asked_again() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast()) as client:
        conn = await gw.connection()
        asks = [
            client.subscribe("AAPL", mode="full", interval_ms=0),
            client.subscribe("SPY", chains="AAPL:2026-12-18", mode="ltp", interval_ms=1000),
            client.subscribe("AAPL", stream="trades", history=20),
            client.subscribe("AAPL", stream="bars", tf="1m", history=5, interval_ms=500),
        ]
        sent = []
        for ask in asks:
            pending = asyncio.create_task(ask)
            sent.append(await conn.request())
            await conn.subscribed(sent[-1])
            await pending
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 20)]})
        await until(client, lambda e: isinstance(e, Tick))

        dropped = time.monotonic()
        conn.drop()
        gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
        assert gone == Disconnected(1006, "connection lost", terminal=False, reconnect_in=0.1)
        conn = await gw.connection()
        assert time.monotonic() - dropped >= 0.1
        replayed = [await conn.request() for _ in range(4)]
        # Each asked for the same as the request that made it (one per group here).
        assert [{**r, "id": 0} for r in replayed] == [{**r, "id": 0} for r in sent]
        assert sent[1]["chains"] == ["AAPL:2026-12-18"] and sent[2]["history"] == 20
        # The new session's snapshot is older than the app's last tick: not passed on.
        await conn.subscribed(replayed[0])
        await conn.send({"type": "snapshot", **tick("AAPL", 19)})
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 20), tick("AAPL", 22, from_seq=20)]})
        events = await until(client, lambda e: isinstance(e, Tick))
        assert [e.seq for e in events if isinstance(e, Tick)] == [22]
        assert isinstance(events[0], Welcome)
        assert client.stats.reconnects == 1 and client.stats.stale == 2 and client.stats.broken == 0


@deadline(15)
async def test_failed_attempts_back_off_exponentially_up_to_the_cap_then_start_over() -> None:
    gw = await FakeGateway().start()
    client = await tickmesh.connect(gw.url, backoff_base=0.05, backoff_max=0.4, random=lambda: 0.999999)
    try:
        port = gw.port
        await gw.stop()
        (await gw.connection()).drop() if not gw.connections.empty() else None
        delays: list[float] = []
        fallbacks = 0
        while len(delays) < 6:
            gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
            assert gone.reconnect_in is not None
            if gone.reconnect_in == 0:
                fallbacks += 1  # SSE, then polling, tried at once: not a backoff
            else:
                delays.append(round(gone.reconnect_in, 3))
        # The first is the session that ended; then every attempt is refused. From the
        # second failed WebSocket on, each round also tries SSE and polling.
        assert delays == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
        assert fallbacks == 2 * 4
        gw = await FakeGateway(port=port).start()
        await until(client, lambda e: isinstance(e, Welcome))
        (await gw.connection()).drop()
        gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
        assert round(gone.reconnect_in, 3) == 0.05, "a session that opened resets the backoff"
    finally:
        await client.close()
        await gw.stop()


@deadline(10)
async def test_a_drain_notice_sets_when_to_come_back() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast(backoff_base=2.0)) as client:
        conn = await gw.connection()
        notice = time.monotonic()
        await conn.send({"type": "reconnect", "after_ms": 300, "reason": "draining"})
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 1)]})
        await conn.close(4001, "draining")
        events = await until(client, lambda e: isinstance(e, Disconnected))
        assert events[1] == Draining(300, "draining")
        assert isinstance(events[2], Tick), "data keeps flowing until the close"
        gone = events[-1]
        assert gone.code == 4001 and not gone.terminal and 0.1 < gone.reconnect_in <= 0.3
        await gw.connection()
        assert 0.25 <= time.monotonic() - notice < 1.5, "after after_ms, not after the backoff"


@deadline(10)
async def test_a_rate_limit_close_comes_back_slowly() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast(backoff_max=1.0)) as client:
        await (await gw.connection()).close(4029, "rate limit exceeded")
        gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
        assert gone.code == 4029 and 0.5 <= gone.reconnect_in <= 1.0
        await gw.connection()


@deadline(10)
async def test_a_slow_consumer_close_reconnects_and_resumes_without_duplicates() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast()) as client:
        conn = await gw.connection()
        pending = asyncio.create_task(client.subscribe("AAPL", interval_ms=0))
        await conn.subscribed(await conn.request())
        await pending
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 5), tick("AAPL", 6)]})
        await conn.send({"type": "error", "code": "slow_consumer", "message": "too slow"})
        await conn.close(4008, "slow consumer")
        events = await until(client, lambda e: isinstance(e, Disconnected))
        assert [type(e) for e in events[-2:]] == [ServerError, Disconnected]
        assert events[-1].code == 4008 and events[-1].reconnect_in == 0.1
        conn = await gw.connection()
        await conn.subscribed(await conn.request())
        await conn.send({"type": "snapshot", **tick("AAPL", 9)})
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 10)]})
        events = await until(client, lambda e: isinstance(e, Tick) and e.seq == 10)
        assert [e.seq for e in events if isinstance(e, Tick)] == [9, 10]
        assert client.stats.skipped == 2, "7 and 8 went by while the client was away"


@deadline(10)
async def test_a_terminal_close_without_a_fresh_token_stops_the_client() -> None:
    async with FakeGateway() as gw:
        client = await tickmesh.connect(gw.url, token="t1", **fast())
        conn = await gw.connection()
        assert conn.headers["Authorization"] == "Bearer t1"
        await conn.send({"type": "error", "code": "token_expired", "message": "token expired"})
        await conn.close(4401, "token expired")
        with pytest.raises(ClosedError) as closed:
            await until(client, lambda e: False)
        assert closed.value.close_code == 4401
        with pytest.raises(ClosedError):
            await client.ping()
        await client.close()
        assert gw.connections.empty(), "no attempt with the refused token"


@deadline(10)
async def test_a_terminal_close_with_a_fresh_token_reconnects_with_it() -> None:
    tokens = iter(["t2"])

    async def fresh() -> str:
        return next(tokens, "t2")

    async with FakeGateway() as gw, tickmesh.connect(gw.url, token="t1", get_token=fresh, **fast()) as client:
        await (await gw.connection()).close(4401, "token expired")
        gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
        assert gone.terminal and gone.reconnect_in is not None
        conn = await gw.connection()
        assert conn.headers["Authorization"] == "Bearer t2" and client.token == "t2"


@deadline(10)
async def test_an_upgrade_refused_401_fetches_a_fresh_token_or_stops() -> None:
    async with FakeGateway() as gw:
        gw.refuse = 401
        with pytest.raises(ClosedError) as closed:
            await tickmesh.connect(gw.url, token="bad", **fast())
        assert closed.value.close_code == 401 and "refused by the test" in closed.value.reason

        calls = 0

        def fresh() -> str:
            nonlocal calls
            calls += 1
            gw.refuse = None
            return "good"

        async with tickmesh.connect(gw.url, token="bad", get_token=fresh, **fast()) as client:
            conn = await gw.connection()
            assert conn.headers["Authorization"] == "Bearer good" and calls == 1
            assert client.connected


@deadline(10)
async def test_unavailable_is_asked_again_after_retry_ms_and_the_caller_gets_the_reply() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, **fast()) as client:
        conn = await gw.connection()
        pending = asyncio.create_task(client.subscribe("AAPL"))
        first = await conn.request()
        refused = time.monotonic()
        err = {"code": "unavailable", "message": "reference data is not loaded yet", "retry_ms": 200}
        await conn.send({"type": "error", "id": first["id"], **err})
        again = await conn.request()
        assert time.monotonic() - refused >= 0.2
        assert {**again, "id": 0} == {**first, "id": 0} and again["id"] != first["id"]
        assert not pending.done()
        await conn.subscribed(again)
        assert (await pending).symbols == ("AAPL",)
        events = await until(client, lambda e: isinstance(e, ServerError))
        assert events[-1].code == "unavailable" and events[-1].retry_ms == 200

        # A replayed subscription refused the same way is replayed again.
        conn.drop()
        conn = await gw.connection()
        replayed = await conn.request()
        await conn.send({"type": "error", "id": replayed["id"], **err})
        assert {**await conn.request(), "id": 0} == {**replayed, "id": 0}


@deadline(10)
async def test_a_silent_connection_is_presumed_dead_after_idle_heartbeats() -> None:
    async with (
        FakeGateway(heartbeat_ms=100) as gw,
        tickmesh.connect(gw.url, **fast(idle_heartbeats=3)) as client,
    ):
        conn = await gw.connection()
        for _ in range(5):  # heartbeats keep it alive
            await asyncio.sleep(0.08)
            await conn.send({"type": "hb", "ts": 1})
        quiet = time.monotonic()
        gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
        assert gone == Disconnected(1006, "no data within 0.3 s", False, 0.1)
        assert 0.28 <= time.monotonic() - quiet < 1.0
        await gw.connection()


@deadline(10)
async def test_no_welcome_within_connect_timeout_is_a_failed_attempt() -> None:
    async with FakeGateway() as gw:
        gw.greet = False
        client = tickmesh.Client(gw.url, connect_timeout=0.3, **fast())
        client.start()
        try:
            gone = (await until(client, lambda e: isinstance(e, Disconnected)))[-1]
            assert gone.code == 1006 and gone.reason == "no welcome within 0.3 s"
        finally:
            await client.close()


@deadline(10)
async def test_msgpack_frames_both_ways() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, encoding="msgpack", **fast()) as client:
        conn = await gw.connection()
        assert conn.binary and conn.ws.subprotocol == "tickmesh.v1.msgpack"
        pending = asyncio.create_task(client.subscribe("AAPL", mode="ltp"))
        await conn.subscribed(await conn.request())
        await pending
        await conn.send({"type": "ticks", "ticks": [tick("AAPL", 2**52 + 1, epoch=2**52)]})
        event = (await until(client, lambda e: isinstance(e, Tick)))[-1]
        assert event.seq == 2**52 + 1 and event.epoch == 2**52


@deadline(10)
async def test_a_request_without_reply_times_out_and_requests_wait_for_a_session() -> None:
    async with FakeGateway() as gw:
        gw.refuse = 503
        client = tickmesh.Client(gw.url, request_timeout=0.3, **fast())
        async with client:
            pending = asyncio.create_task(client.subscribe("AAPL"))
            await asyncio.sleep(0.3)
            assert not pending.done(), "held while no session is open"
            gw.refuse = None
            conn = await gw.connection()
            await conn.subscribed(await conn.request())
            await pending
            with pytest.raises(TickMeshError) as err:
                await client.list()
            assert err.value.code == "timeout"
            assert (await conn.request())["op"] == "list"


@deadline(10)
async def test_the_event_queue_is_bounded_and_loses_nothing() -> None:
    async with FakeGateway() as gw, tickmesh.connect(gw.url, max_events=4, **fast()) as client:
        conn = await gw.connection()
        pending = asyncio.create_task(client.subscribe("AAPL", interval_ms=0))
        await conn.subscribed(await conn.request())
        await pending
        for seq in range(1, 301):
            await conn.send({"type": "ticks", "ticks": [tick("AAPL", seq)]})
        await asyncio.sleep(0.2)
        assert client._events.qsize() <= 4, "the client stops reading rather than buffering"
        events = await until(client, lambda e: isinstance(e, Tick) and e.seq == 300)
        assert [e.seq for e in events if isinstance(e, Tick)] == list(range(1, 301))


@deadline(10)
async def test_close_ends_the_events_and_fails_what_waits() -> None:
    async with FakeGateway() as gw:
        client = await tickmesh.connect(gw.url, **fast())
        conn = await gw.connection()
        pending = asyncio.create_task(client.list())
        await conn.request()
        await client.close()
        with pytest.raises(TickMeshError) as err:
            await pending
        assert err.value.code == "closed"
        events = [e async for e in client]
        assert isinstance(events[0], Welcome) and events[-1] == Disconnected(1000, "", False, None)
        with pytest.raises(TickMeshError):
            await client.subscribe("AAPL")
        await asyncio.wait_for(conn.closed.wait(), 2)


def test_bad_requests_are_refused_before_they_are_sent() -> None:
    async def attempts() -> None:
        client = tickmesh.Client("ws://127.0.0.1:9/v1/stream")
        for call in (
            client.subscribe("AAPL", mode="fast"),
            client.subscribe("AAPL", stream="tape"),
            client.subscribe("AAPL", stream="bars"),
            client.subscribe("AAPL", stream="bars", tf="2m"),
            client.subscribe(chains="AAPL:2026-12-18", stream="trades"),
            client.subscribe("AAPL", interval_ms=-1),
            client.subscribe("AAPL", stream="trades", history=1.5),  # type: ignore[arg-type]
            client.subscribe([]),
        ):
            with pytest.raises(ValueError):
                await call
        assert client.held == {"symbols": {}, "chains": {}, "trades": {}, "bars": {}}

    asyncio.run(asyncio.wait_for(attempts(), 5))
    with pytest.raises(ValueError):
        tickmesh.Client("http://127.0.0.1/v1/stream")
