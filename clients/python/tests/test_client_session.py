"""The protocol state, fed frames directly: seq checks, continuity accounting (conflated,
lost, skipped, broken), epochs, tapes, bars, refusals and what is replayed."""

from __future__ import annotations

from typing import Any

from clienttest import tick

from tickmesh import (
    Bars,
    ContinuityBreak,
    Gap,
    ServerError,
    Snapshot,
    Subscribed,
    Tick,
    Trades,
)
from tickmesh.session import Session


def subscribed(session: Session, **fields: Any) -> dict[str, Any]:
    """Sends a subscribe and answers it accepting everything; the request."""
    req = session.request("subscribe", **{"mode": "quote", "interval_ms": 0, **fields})
    session.sent(req)
    reply = {"type": "subscribed", "id": req["id"], "symbols": req.get("symbols", []), "interval_ms": 0}
    if "chains" in req:
        reply["chains"] = req["chains"]
    _, answer = session.receive(reply)
    assert answer is not None and answer.error is None
    return req


def feed(session: Session, *msgs: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    for msg in msgs:
        out, _ = session.receive(msg)
        events.extend(out)
    return events


def ticks(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ticks", "ticks": list(items)}


def snapshot(symbol: str, seq: int, epoch: int = 1) -> dict[str, Any]:
    return {"type": "snapshot", **tick(symbol, seq, epoch)}


def seqs(events: list[Any]) -> list[int]:
    return [e.seq for e in events if isinstance(e, Tick)]


def test_a_snapshot_then_ticks_come_out_typed_and_in_order() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(
        s,
        snapshot("AAPL", 10),
        ticks(tick("AAPL", 11, bid=1.5, depth={"bids": [[1.5, 100]], "asks": [[1.6, 200]]})),
        ticks(tick("AAPL", 12)),
    )
    assert [type(e) for e in events] == [Snapshot, Tick, Tick]
    assert seqs(events) == [10, 11, 12]
    assert events[1].bid == 1.5 and events[1].depth.asks == ((1.6, 200),)
    assert isinstance(events[0], Tick), "a snapshot is a tick too"
    assert s.stats.ticks == 3 and s.stats.conflated == 0 and s.stats.broken == 0


def test_a_tick_not_newer_than_the_last_is_never_passed_on() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(
        s,
        ticks(tick("AAPL", 11)),
        ticks(tick("AAPL", 11), tick("AAPL", 9)),
        snapshot("AAPL", 10),
        ticks(tick("AAPL", 12)),
    )
    assert seqs(events) == [11, 12]
    assert s.stats.stale == 3
    assert s.ticks.last["AAPL"] == 12


def test_an_update_with_from_seq_accounts_its_seqs_as_conflated() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"], interval_ms=250)
    events = feed(s, snapshot("AAPL", 10), ticks(tick("AAPL", 15, from_seq=11)), ticks(tick("AAPL", 16)))
    assert seqs(events) == [10, 15, 16]
    assert events[1].from_seq == 11
    assert (s.stats.conflated, s.stats.lost, s.stats.broken) == (4, 0, 0)


def test_a_gap_is_told_before_the_update_and_counted_lost_not_conflated() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    gap = {"type": "gap", "symbol": "AAPL", "epoch": 1, "from_seq": 11, "to_seq": 12, "reason": "upstream"}
    events = feed(s, snapshot("AAPL", 10), gap, ticks(tick("AAPL", 15, from_seq=13)))
    assert [type(e) for e in events] == [Snapshot, Gap, Tick]
    assert events[1].count == 2 and events[1].reason == "upstream"
    assert (s.stats.lost, s.stats.conflated, s.stats.broken) == (2, 2, 0)


def test_gaps_in_the_middle_of_a_folded_run() -> None:
    # Had 10; 12-13 lost; 11 and 14..19 folded: from_seq is the seq after the last gap.
    s = Session()
    subscribed(s, symbols=["AAPL"], interval_ms=250)
    gap = {"type": "gap", "symbol": "AAPL", "epoch": 1, "from_seq": 12, "to_seq": 13, "reason": "upstream"}
    feed(s, snapshot("AAPL", 10), gap, ticks(tick("AAPL", 20, from_seq=14)))
    assert (s.stats.lost, s.stats.conflated, s.stats.broken) == (2, 7, 0)


def test_an_update_that_skips_seqs_neither_folded_nor_told_is_a_break() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(s, snapshot("AAPL", 10), ticks(tick("AAPL", 11)), ticks(tick("AAPL", 15)))
    assert [type(e) for e in events] == [Snapshot, Tick, ContinuityBreak, Tick]
    assert events[2] == ContinuityBreak("AAPL", 15, 15, 11)
    assert s.stats.broken == 1
    assert s.stats.conflated == 0, "the unexplained seqs are not counted as folded"
    # A folded update that starts too late is a break as well.
    events = feed(s, ticks(tick("AAPL", 20, from_seq=18)))
    assert events[0] == ContinuityBreak("AAPL", 20, 18, 15) and s.stats.broken == 2
    assert s.stats.conflated == 2


def test_a_new_epoch_jumps_forward_and_owes_nothing() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(
        s,
        ticks(tick("AAPL", 10, epoch=1)),
        ticks(tick("AAPL", 5000, epoch=2)),
        ticks(tick("AAPL", 5001, epoch=2)),
    )
    assert seqs(events) == [10, 5000, 5001]
    assert (s.stats.broken, s.stats.conflated, s.stats.skipped) == (0, 0, 0)


def test_after_a_reconnect_the_snapshot_accounts_for_what_went_by() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    feed(s, snapshot("AAPL", 10), ticks(tick("AAPL", 11)))
    assert s.disconnected() == []
    # The new session's snapshot is newer: the seqs it passes over are skipped, and the
    # new session's first update follows from it.
    events = feed(s, snapshot("AAPL", 20), ticks(tick("AAPL", 22, from_seq=21)))
    assert seqs(events) == [20, 22]
    assert (s.stats.skipped, s.stats.conflated, s.stats.broken) == (8, 1, 0)


def test_a_gap_of_seqs_the_app_had_is_not_a_loss() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    feed(s, ticks(tick("AAPL", 100)))
    s.disconnected()
    # The new session's snapshot (95) is older; the new edge missed 96..98 and 99..102
    # of which the app had up to 100.
    events = feed(
        s,
        snapshot("AAPL", 95),
        {"type": "gap", "symbol": "AAPL", "epoch": 1, "from_seq": 96, "to_seq": 98, "reason": "snapshot"},
        {"type": "gap", "symbol": "AAPL", "epoch": 1, "from_seq": 99, "to_seq": 102, "reason": "upstream"},
        ticks(tick("AAPL", 103)),
    )
    assert events == [Gap("AAPL", 1, 101, 102, "upstream"), Tick.from_msg(tick("AAPL", 103))]
    assert (s.stats.lost, s.stats.conflated, s.stats.broken, s.stats.stale) == (2, 0, 0, 1)


def test_after_a_reconnect_an_older_snapshot_is_dropped_and_the_overlap_is_no_break() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    feed(s, ticks(tick("AAPL", 20)))
    s.disconnected()
    # KV lags the stream: the new session's snapshot is older than what the app has,
    # and the new session's first update folds from just after that snapshot.
    events = feed(s, snapshot("AAPL", 17), ticks(tick("AAPL", 23, from_seq=18)))
    assert seqs(events) == [23]
    assert (s.stats.stale, s.stats.broken, s.stats.conflated) == (1, 0, 2)


def test_unsubscribing_forgets_the_last_seq_of_symbols_and_of_a_chains_options() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"], chains=["AAPL:2026-12-18"])
    option = "AAPL261218C00150000"
    feed(s, ticks(tick("AAPL", 10), tick(option, 7), tick("AAPL261218C00150000X", 3)))
    s.sent(s.request("unsubscribe", symbols=["AAPL"], chains=["AAPL:2026-12-18"]))
    assert "AAPL" not in s.ticks.last and option not in s.ticks.last
    assert "AAPL261218C00150000X" in s.ticks.last, "not an option of that chain"
    assert s.registry.symbols == {} and s.registry.chains == {}


def test_a_replayed_tape_passes_on_only_the_prints_not_delivered() -> None:
    s = Session()
    subscribed(s, stream="trades", history=3, symbols=["AAPL"])

    def trade(seq: int, symbol: str = "AAPL") -> dict[str, Any]:
        return {
            "symbol": symbol,
            "seq": seq,
            "trade_id": seq,
            "price": 1.5,
            "size": 100,
            "ts": seq,
            "conditions": [],
        }

    events = feed(
        s,
        {"type": "trades", "snapshot": True, "trades": [trade(1), trade(2), trade(3)]},
        {"type": "trades", "trades": [trade(4), trade(9, "MSFT")]},
    )
    assert [type(e) for e in events] == [Trades, Trades]
    assert events[0].snapshot and [t.seq for t in events[0].trades] == [1, 2, 3]
    assert [t.seq for t in events[1].trades] == [4], "a print of a tape not held is dropped"
    s.disconnected()
    events = feed(s, {"type": "trades", "snapshot": True, "trades": [trade(2), trade(3), trade(4), trade(5)]})
    assert [t.seq for t in events[0].trades] == [5] and events[0].snapshot
    assert (s.stats.prints, s.stats.reprints) == (5, 3)


def test_bars_pass_from_the_newest_on_and_never_after_its_final() -> None:
    s = Session()
    subscribed(s, stream="bars", tf="1s", history=2, interval_ms=250, symbols=["AAPL"])

    def bar(t: int, final: bool, close: float = 1.0) -> dict[str, Any]:
        return {
            "symbol": "AAPL",
            "t": t,
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": close,
            "volume": 10,
            "trades": 2,
            "final": final,
        }

    events = feed(
        s,
        {"type": "bars", "tf": "1s", "snapshot": True, "bars": [bar(1, True), bar(2, False)]},
        {"type": "bars", "tf": "1s", "bars": [bar(2, False, 1.5)]},
        {"type": "bars", "tf": "1s", "bars": [bar(2, True, 1.6)]},
        {"type": "bars", "tf": "1s", "bars": [bar(2, False, 1.7), bar(1, True)]},
        {"type": "bars", "tf": "1m", "bars": [bar(3, False)]},
    )
    assert all(isinstance(e, Bars) for e in events)
    assert [(b.t, b.final, b.close) for e in events for b in e.bars] == [
        (1, True, 1.0),
        (2, False, 1.0),
        (2, False, 1.5),
        (2, True, 1.6),
    ]
    assert s.stats.rebars == 2, "after its final, and older than the newest"


def test_subscriptions_are_replayed_grouped_as_they_were_asked() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL", "MSFT"], mode="full", interval_ms=0)
    subscribed(s, symbols=["SPY"], chains=["AAPL:2026-12-18"], mode="ltp", interval_ms=1000)
    subscribed(s, symbols=["MSFT"], mode="ltp", interval_ms=1000)  # changed in place
    subscribed(s, stream="trades", history=20, symbols=["AAPL"])
    subscribed(s, stream="bars", tf="1m", history=5, interval_ms=500, symbols=["AAPL", "SPY"])
    replay = [{k: v for k, v in m.items() if k != "id"} for m in s.replay()]
    assert replay == [
        {"op": "subscribe", "mode": "full", "interval_ms": 0, "symbols": ["AAPL"]},
        {
            "op": "subscribe",
            "mode": "ltp",
            "interval_ms": 1000,
            "symbols": ["MSFT", "SPY"],
            "chains": ["AAPL:2026-12-18"],
        },
        {"op": "subscribe", "stream": "trades", "history": 20, "symbols": ["AAPL"]},
        {
            "op": "subscribe",
            "stream": "bars",
            "tf": "1m",
            "history": 5,
            "interval_ms": 500,
            "symbols": ["AAPL", "SPY"],
        },
    ]


def test_a_refused_symbol_is_not_replayed_but_one_refused_as_unavailable_is() -> None:
    s = Session()
    req = s.request("subscribe", mode="quote", interval_ms=250, symbols=["AAPL", "NOPE", "BUSY", "X1", "X2"])
    s.sent(req)
    events = feed(
        s,
        {
            "type": "error",
            "id": req["id"],
            "code": "unknown_symbol",
            "message": "no such instrument",
            "symbol": "NOPE",
        },
        {
            "type": "error",
            "id": req["id"],
            "code": "unavailable",
            "message": "busy",
            "symbol": "BUSY",
            "retry_ms": 500,
        },
        # Past the first 20 refusals the rest are summed up, naming no symbol.
        {"type": "error", "id": req["id"], "code": "not_entitled", "message": "2 more", "count": 2},
    )
    assert [e.code for e in events if isinstance(e, ServerError)] == [
        "unknown_symbol",
        "unavailable",
        "not_entitled",
    ]
    assert s.in_flight(req["id"]) is not None, "refused entries do not end the request"
    _, reply = s.receive(
        {"type": "subscribed", "id": req["id"], "symbols": ["AAPL"], "interval_ms": 250, "mode": "quote"}
    )
    assert reply is not None and isinstance(reply.value, Subscribed) and reply.value.symbols == ("AAPL",)
    assert sorted(s.registry.symbols) == ["AAPL", "BUSY"]


def test_a_refusal_of_another_request_does_not_end_a_subscription() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    req = s.request("chains", underlying="AAPL")
    s.sent(req)
    err = {
        "type": "error",
        "id": req["id"],
        "code": "unknown_symbol",
        "message": "no option chain",
        "symbol": "AAPL",
    }
    _, reply = s.receive(err)
    assert reply is not None and reply.error is not None and reply.error.code == "unknown_symbol"
    assert "AAPL" in s.registry.symbols
    # Outside any request (an `auth` narrowed the entitlements): every stream of it goes.
    subscribed(s, stream="trades", history=5, symbols=["AAPL"])
    feed(s, {"type": "error", "code": "not_entitled", "message": "no longer entitled", "symbol": "AAPL"})
    assert s.registry.symbols == {} and s.registry.tapes == {}


def test_an_unreadable_message_is_reported_not_fatal() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(s, {"type": "ticks", "ticks": [{"symbol": "AAPL"}]}, ticks(tick("AAPL", 3)))
    assert isinstance(events[0], ServerError) and events[0].code == "client_decode"
    assert seqs(events) == [3]


def test_unknown_fields_are_ignored() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"])
    events = feed(s, ticks(tick("AAPL", 3, some_future_field={"x": 1})))
    assert seqs(events) == [3]


def test_a_symbol_moved_to_delayed_and_back_starts_over_from_each_side() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL"], interval_ms=250)
    late = {"delayed_ms": 900000}
    events = feed(
        s,
        snapshot("AAPL", 5000),
        ticks(tick("AAPL", 5002, from_seq=5001)),
        # An ``auth`` moved AAPL to delayed: its snapshot and samples are 15 minutes behind.
        {"type": "subscribed", "symbols": ["AAPL"], "delayed": ["AAPL"]},
        {**snapshot("AAPL", 1200), **late},
        ticks(tick("AAPL", 1230, from_seq=1201, **late)),
        # And back to real time.
        {"type": "subscribed", "symbols": ["AAPL"]},
        snapshot("AAPL", 5100),
        ticks(tick("AAPL", 5103, from_seq=5101)),
    )
    assert seqs(events) == [5000, 5002, 1200, 1230, 5100, 5103]
    assert [e.delayed_ms for e in events if isinstance(e, Tick)][2:4] == [900000, 900000]
    assert (s.stats.stale, s.stats.broken) == (0, 0)


def test_symbols_the_gateway_unsubscribes_are_not_replayed() -> None:
    s = Session()
    subscribed(s, symbols=["AAPL261211C00230000", "AAPL"])
    # At the day roll the option expired: told closed, then unsubscribed (no id).
    events = feed(
        s,
        {"type": "status", "symbol": "AAPL261211C00230000", "state": "closed", "stale": False,
         "reason": "delisted", "ts": 1},
        {"type": "unsubscribed", "symbols": ["AAPL261211C00230000"]},
    )
    assert [e.reason for e in events] == ["delisted"]
    replayed = [sym for m in s.replay() for sym in m.get("symbols", [])]
    assert replayed == ["AAPL"]
