"""The client against a real mesh (nats-server, the simulator's ingest, an edge; see
meshkit.py): the protocol's guarantees as an app sees them, across an edge killed and
restarted, an edge drained and an ingest replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import meshkit
import pytest
from clienttest import deadline

import tickmesh
from tickmesh import (
    Bar,
    Bars,
    ContinuityBreak,
    Depth,
    Disconnected,
    Draining,
    ServerError,
    Snapshot,
    Status,
    Tick,
    Trade,
    Trades,
    Welcome,
)

# Short backoff, so that the tests do not wait out a production ceiling; loopback only.
OPTIONS: dict[str, Any] = {
    "backoff_base": 0.2,
    "backoff_max": 1.0,
    "timeout": 20,
    "websocket_options": {"proxy": None},
}


@pytest.fixture(scope="module")
def mesh() -> Iterator[meshkit.Mesh]:
    with meshkit.running() as m:
        yield m


@pytest.fixture
def live(mesh: meshkit.Mesh) -> meshkit.Mesh:
    """The mesh, with whatever a test before stopped started again."""
    mesh.ensure_running()
    return mesh


class Recorder:
    """Reads a client's events in the background, with the loop time each arrived, so
    the client never holds the gateway up."""

    def __init__(self, client: tickmesh.Client) -> None:
        self.client = client
        self.events: list[tuple[float, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for event in self.client:
            self.events.append((loop.time(), event))

    async def wait(self, what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not done():
            if self.task.done():
                raise AssertionError(f"the events ended while waiting for {what}: {self.task}")
            if loop.time() > until:
                kinds = [type(e).__name__ for _, e in self.events[-20:]]
                raise AssertionError(
                    f"no {what} within {timeout} s; last events: {kinds}; {self.client.stats}"
                )
            await asyncio.sleep(0.05)

    def of(self, kind: type, since: int = 0) -> list[Any]:
        return [e for _, e in self.events[since:] if isinstance(e, kind)]

    def ticks(self, symbol: str, since: int = 0) -> list[Tick]:
        return [t for t in self.of(Tick, since) if t.symbol == symbol]

    def prints(self, since: int = 0) -> list[Trade]:
        return [p for batch in self.of(Trades, since) for p in batch.trades]

    def mark(self) -> int:
        return len(self.events)


async def following_aapl(client: tickmesh.Client, n: int, **subscription: Any) -> Recorder:
    """Subscribes to AAPL's ticks and waits for the first ``n``."""
    await client.subscribe("AAPL", **subscription)
    rec = Recorder(client)
    await rec.wait(f"{n} AAPL ticks", lambda: len(rec.ticks("AAPL")) >= n)
    return rec


def accounted(client: tickmesh.Client, ticks: list[Tick]) -> None:
    """Every seq between the first and the last tick of one symbol (the client's only
    tick subscription) was passed on once, folded, told lost, or passed over by a
    snapshot after a reconnect; none unexplained."""
    seqs = [t.seq for t in ticks]
    assert seqs == sorted(set(seqs)), "no duplicate, no reordering"
    s = client.stats
    assert s.broken == 0, f"an unexplained gap: {s}"
    assert seqs[-1] - seqs[0] == len(seqs) - 1 + s.conflated + s.lost + s.skipped, s


@deadline(60)
async def test_every_tick_and_conflated_subscriptions_account_for_every_seq(live: meshkit.Mesh) -> None:
    async with (
        tickmesh.connect(live.ws_url, **OPTIONS) as every,
        tickmesh.connect(live.ws_url, **OPTIONS) as slow,
    ):
        sub = await every.subscribe("AAPL", interval_ms=0)
        assert (sub.symbols, sub.interval_ms, sub.mode) == (("AAPL",), 0, "quote")
        assert (await slow.subscribe("aapl", interval_ms=250)).interval_ms == 250
        a, b = Recorder(every), Recorder(slow)
        await a.wait("60 AAPL ticks, every tick", lambda: len(a.ticks("AAPL")) >= 60)
        await b.wait("12 conflated AAPL updates", lambda: len(b.ticks("AAPL")) >= 12)

    for rec in (a, b):
        ticks = rec.ticks("AAPL")
        assert type(ticks[0]) is Snapshot and all(type(t) is Tick for t in ticks[1:])
        assert isinstance(rec.events[0][1], Welcome)
        accounted(rec.client, ticks)
        assert all(t.epoch == ticks[0].epoch and t.bid and t.ask for t in ticks), "quote mode"

    every_ticks = a.ticks("AAPL")[1:]
    assert all(t.from_seq is None for t in every_ticks), "every tick stands for itself"
    assert every.stats.conflated == 0

    # At most one update per 250 ms, each the latest and standing for all it folded.
    assert slow.stats.conflated > 0
    assert any(t.from_seq is not None and t.from_seq < t.seq for t in b.ticks("AAPL"))
    times = [at for at, e in b.events if type(e) is Tick]
    span = times[-1] - times[1]
    assert len(times) - 1 <= span / 0.25 + 2, f"{len(times)} updates in {span:.2f} s"
    assert statistics.median(b - a for a, b in itertools.pairwise(times)) >= 0.2

    # The same seq is the same state for both.
    by_seq = {t.seq: t for t in every_ticks}
    common = [t for t in b.ticks("AAPL")[1:] if t.seq in by_seq]
    assert common, "the two sessions shared no seq"
    for t in common:
        assert dataclasses.replace(t, from_seq=None) == by_seq[t.seq]


@deadline(90)
async def test_an_edge_killed_and_restarted_is_resumed_without_a_duplicate_or_an_unexplained_gap(
    live: meshkit.Mesh,
) -> None:
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        await client.subscribe("AAPL", interval_ms=0)
        # A history long enough to cover the outage: the tape resumes with no print missed.
        await client.subscribe("AAPL", stream="trades", history=500)
        await client.subscribe("AAPL", stream="bars", tf="1s", history=5)
        rec = Recorder(client)
        await rec.wait(
            "AAPL ticks and prints", lambda: len(rec.ticks("AAPL")) >= 20 and len(rec.prints()) >= 5
        )
        first_edge = client.welcome.edge if client.welcome else ""

        await asyncio.to_thread(live.stop_edge, signal.SIGKILL)
        await rec.wait("the drop", lambda: bool(rec.of(Disconnected)))
        cut = rec.mark()
        ticks_before, prints_before = len(rec.ticks("AAPL")), len(rec.prints())
        # AAPL prints while no edge is up, so that the resumed history has news to tell.
        printed = await asyncio.to_thread(live.count_messages, "tr.*.AAPL", 20)
        assert printed == 1, "AAPL printed during the outage"
        await asyncio.to_thread(live.start_edge)
        await rec.wait(
            "a session on the new edge", lambda: any(w.edge == live.edge_name for w in rec.of(Welcome))
        )
        await rec.wait(
            "AAPL ticks and prints from the new edge",
            lambda: len(rec.ticks("AAPL", cut)) >= 20 and len(rec.prints(cut)) >= 5,
        )
        await rec.wait(
            "a final bar from the new edge", lambda: any(b.final for e in rec.of(Bars, cut) for b in e.bars)
        )

    assert live.edge_name != first_edge
    assert client.stats.reconnects == 1
    # Each failed attempt waited within its full-jitter ceiling.
    for attempt, gone in enumerate(rec.of(Disconnected)[:-1]):
        assert gone.code == 1006 and not gone.terminal
        assert gone.reconnect_in is not None and 0 <= gone.reconnect_in <= min(1.0, 0.2 * 2**attempt)

    ticks = rec.ticks("AAPL")
    assert len(ticks) > ticks_before
    accounted(client, ticks)
    assert not rec.of(ContinuityBreak)

    prints = rec.prints()
    seqs = [p.seq for p in prints]
    assert seqs == sorted(set(seqs)), "each print once, in order"
    assert client.stats.reprints > 0, "the replayed history overlapped what was delivered"
    resumed = [e for e in rec.of(Trades, cut) if e.snapshot]
    assert resumed and resumed[0].trades[0].seq > prints[prints_before - 1].seq

    bars = [b for e in rec.of(Bars) for b in e.bars]
    for earlier, later in itertools.pairwise(bars):
        assert later.t > earlier.t or (later.t == earlier.t and not earlier.final), (earlier, later)


@deadline(60)
async def test_a_draining_edge_is_left_when_it_says_and_the_stream_resumes(live: meshkit.Mesh) -> None:
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        rec = await following_aapl(client, 3, interval_ms=250)
        await asyncio.to_thread(live.stop_edge, signal.SIGTERM)
        await rec.wait("the close", lambda: bool(rec.of(Disconnected)))
        cut = rec.mark()
        await asyncio.to_thread(live.start_edge)
        await rec.wait("AAPL updates from the new edge", lambda: len(rec.ticks("AAPL", cut)) >= 3)

    notice = rec.of(Draining)[0]
    assert notice.reason == "draining" and 0 <= notice.after_ms <= 300
    gone = rec.of(Disconnected)[0]
    assert gone.code == 4001 and not gone.terminal
    assert gone.reconnect_in is not None and gone.reconnect_in <= notice.after_ms / 1000
    accounted(client, rec.ticks("AAPL"))


@deadline(60)
async def test_the_tape_and_the_bars_of_a_symbol(live: meshkit.Mesh) -> None:
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        # Nothing prints before the open (the mesh's simulated day starts with 3 s of
        # pre-open); a second and a half later a 1s bar has closed: both have a history.
        rec = await following_aapl(client, 1, interval_ms=0)
        await rec.wait("the open", lambda: any(t.state == "open" for t in rec.ticks("AAPL")))
        opened = next(t.ts or 0 for t in rec.ticks("AAPL") if t.state == "open")
        await rec.wait("1.5 s of trading", lambda: (rec.ticks("AAPL")[-1].ts or 0) >= opened + 1_500_000)
        sub = await client.subscribe("AAPL", stream="trades", history=10)
        assert (sub.stream, sub.interval_ms) == ("trades", 0)
        sub = await client.subscribe("AAPL", stream="bars", tf="1s", history=3)
        assert (sub.stream, sub.tf) == ("bars", "1s")
        await rec.wait("live prints", lambda: sum(not e.snapshot for e in rec.of(Trades)) >= 5)
        await rec.wait("a bar closing", lambda: sum(b.final for e in rec.of(Bars)[1:] for b in e.bars) >= 1)

    tapes = rec.of(Trades)
    assert tapes[0].snapshot and 1 <= len(tapes[0].trades) <= 10, "the history first"
    assert not any(e.snapshot for e in tapes[1:])
    prints = rec.prints()
    assert [p.seq for p in prints] == sorted({p.seq for p in prints})
    for p in prints:
        assert p.symbol == "AAPL" and p.trade_id == p.seq and p.price > 0 and p.size > 0
        assert isinstance(p.conditions, tuple)
    # A print happened at a tick: that tick shows it.
    ticks = {t.seq: t for t in rec.ticks("AAPL")}
    shown = [(p, ticks[p.seq]) for p in prints if p.seq in ticks]
    assert len(shown) >= 3
    assert all(t.last == p.price and t.last_size == p.size for p, t in shown)

    history = rec.of(Bars)[0]
    assert history.snapshot and history.tf == "1s" and 1 <= len(history.bars) <= 4
    assert all(b.final for b in history.bars[:-1]), "closed bars, then the one in progress"
    bars: list[Bar] = [b for e in rec.of(Bars) for b in e.bars]
    for b in bars:
        assert b.t % 1_000_000 == 0 and b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
    finals = [b.t for b in bars if b.final]
    assert len(finals) == len(set(finals)), "each bar final once"


@deadline(45)
async def test_msgpack_full_mode_against_the_edge(live: meshkit.Mesh) -> None:
    async with tickmesh.connect(live.ws_url, encoding="msgpack", **OPTIONS) as client:
        rec = await following_aapl(client, 10, mode="full", interval_ms=0)
        sessions = live.metric('tickmesh_edge_sessions{encoding="msgpack"}')
    ticks = rec.ticks("AAPL")
    assert isinstance(ticks[0], Snapshot)
    assert all(isinstance(t.depth, Depth) and t.depth.bids and t.depth.asks for t in ticks)
    assert all(t.depth.bids[0][0] == t.bid and t.depth.asks[0][0] == t.ask for t in ticks if t.depth)
    accounted(client, ticks)
    assert sessions == 1


@deadline(45)
async def test_the_connection_is_compressed_both_ways(live: meshkit.Mesh) -> None:
    """The client offers permessage-deflate (websockets' own): the edge takes it, its
    compressed frames read as every tick, and the client's compressed requests are
    inflated and served."""
    negotiated = live.metric("tickmesh_edge_deflate_sessions_total") or 0.0
    inflated = live.metric("tickmesh_edge_deflate_inflated_total") or 0.0
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        rec = await following_aapl(client, 10, mode="quote", interval_ms=0)
    accounted(client, rec.ticks("AAPL"))
    assert live.metric("tickmesh_edge_deflate_sessions_total") == negotiated + 1
    assert (live.metric("tickmesh_edge_deflate_inflated_total") or 0.0) > inflated


@deadline(45)
async def test_requests_refusals_and_chains(live: meshkit.Mesh) -> None:
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        rec = Recorder(client)
        sub = await client.subscribe(["AAPL", "ZZZZZZ", "bad.sym"], mode="ltp", interval_ms=500)
        assert sub.symbols == ("AAPL",)
        await rec.wait("two refusals", lambda: len(rec.of(ServerError)) >= 2)
        refused = {(e.code, e.symbol) for e in rec.of(ServerError)}
        assert refused == {("unknown_symbol", "ZZZZZZ"), ("invalid_symbol", "BAD.SYM")}
        assert list(client.held["symbols"]) == ["AAPL"], "refused symbols are not replayed"
        assert [(s.symbol, s.mode, s.interval_ms) for s in await client.list()] == [("AAPL", "ltp", 500)]

        chains = await client.chains("aapl")
        assert chains.underlying == "AAPL" and chains.expiries
        expiry = chains.expiries[0]
        assert list(expiry.strikes) == sorted(expiry.strikes)
        chain = f"AAPL:{expiry.expiry}"
        sub = await client.subscribe(chains=chain, interval_ms=1000)
        assert sub.chains == (chain,) and len(sub.symbols) == 2 * len(expiry.strikes)
        await rec.wait("an option's snapshot", lambda: any(t.right for t in rec.of(Snapshot)))
        option = next(t for t in rec.of(Snapshot) if t.right)
        assert (
            option.underlying == "AAPL" and option.expiry == expiry.expiry and option.strike in expiry.strikes
        )
        with pytest.raises(tickmesh.TickMeshError) as err:
            await client.chains("ZZZZZZ")
        assert err.value.code == "unknown_symbol"

        gone = await client.unsubscribe(chains=chain)
        assert gone.chains == (chain,) and set(gone.symbols) == set(sub.symbols)
        assert client.held["chains"] == {} and client.last_seq(option.symbol) is None
        await client.ping()


@deadline(60)
async def test_a_new_ingest_is_a_new_epoch_and_owes_nothing(live: meshkit.Mesh) -> None:
    async with tickmesh.connect(live.ws_url, **OPTIONS) as client:
        rec = await following_aapl(client, 5, interval_ms=0)
        await asyncio.to_thread(live.stop_ingest)
        await rec.wait("AAPL stale", lambda: any(s.stale for s in rec.of(Status)))
        assert rec.of(Status)[-1].reason == "feed quiet"
        await asyncio.to_thread(live.start_ingest)
        await rec.wait(
            "AAPL fresh again", lambda: any(not s.stale and s.reason == "feed back" for s in rec.of(Status))
        )
        cut = rec.mark()
        await rec.wait("AAPL ticks of the new ingest", lambda: len(rec.ticks("AAPL", cut)) >= 5)

    ticks = rec.ticks("AAPL")
    old, new = ticks[0].epoch, ticks[-1].epoch
    assert new is not None and old is not None and new > old
    assert ticks[-1].seq > ticks[0].seq
    assert not rec.of(ContinuityBreak) and client.stats.broken == 0
