"""The protocol state of one client across its connections, kept apart from I/O.

:class:`Session` turns each decoded server message into the events the app sees and the
reply (if any) to a request in flight; it keeps what must outlive a connection (the
subscriptions to replay, the last seq per symbol) and forgets what must not (requests in
flight). :mod:`tickmesh.client` owns the socket and the timers and drives it; tests can
drive it with frames alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import (
    Bar,
    Bars,
    Chains,
    Draining,
    Event,
    Gap,
    Heartbeat,
    ServerError,
    Snapshot,
    Status,
    Subscribed,
    Subscription,
    Tick,
    Trade,
    Trades,
    Unsubscribed,
    Welcome,
)
from .registry import Registry, chain_pattern
from .sequence import BarTimes, Stats, TapeSeqs, TickSeqs

#: request op -> the type of its reply
REPLY_TYPE = {
    "subscribe": "subscribed",
    "unsubscribe": "unsubscribed",
    "list": "subscriptions",
    "chains": "chains",
    "ping": "pong",
    "auth": "authed",
}

#: Error codes that mean "this symbol is not part of the session": never replayed.
REFUSALS = frozenset(("invalid_symbol", "unknown_symbol", "not_entitled", "too_many_symbols"))


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a request in flight: its reply value, or the error that refused it."""

    id: int
    request: dict[str, Any]
    value: Any = None
    error: ServerError | None = None


class Session:
    def __init__(self) -> None:
        self.stats = Stats()
        self.registry = Registry()
        self.ticks = TickSeqs(self.stats)
        self.tapes = TapeSeqs(self.stats)
        self.bar_times = BarTimes(self.stats)
        #: The last ``welcome``, ``None`` between connections.
        self.welcome: Welcome | None = None
        self.lag_ms: int | None = None
        self._welcomed = False
        self._next_id = 1
        self._in_flight: dict[int, dict[str, Any]] = {}
        #: Per subscribe in flight: its symbols refused as ``unavailable`` (kept, asked
        #: for again later), so that the reply's reconciliation does not drop them.
        self._unavailable: dict[int, set[str]] = {}

    # ---- requests ---------------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """A request with a fresh ``id``."""
        msg = {"op": op, "id": self._next_id, **fields}
        self._next_id += 1
        return msg

    def sent(self, msg: dict[str, Any]) -> None:
        """A request went out: it is in flight, and what it asks is held (or let go)."""
        self.registry.record(msg)
        self._in_flight[msg["id"]] = msg
        if msg["op"] != "unsubscribe":
            return
        stream = msg.get("stream", "ticks")
        for symbol in msg.get("symbols") or ():
            if stream == "trades":
                self.tapes.forget(symbol)
            elif stream == "bars":
                self.bar_times.forget(symbol, msg.get("tf", ""))
            else:
                self.ticks.forget(symbol)
        for chain in msg.get("chains") or ():
            pattern = chain_pattern(chain)
            if pattern is not None:
                for symbol in [s for s in self.ticks.last if pattern.fullmatch(s)]:
                    self.ticks.forget(symbol)

    def abandon(self, id: int) -> dict[str, Any] | None:
        """Stops waiting for the reply to ``id`` (a timeout): the request, if in flight."""
        self._unavailable.pop(id, None)
        return self._in_flight.pop(id, None)

    def in_flight(self, id: int) -> dict[str, Any] | None:
        return self._in_flight.get(id)

    def disconnected(self) -> list[int]:
        """The connection ended: the ids of the requests that will get no reply."""
        ids = list(self._in_flight)
        self._in_flight.clear()
        self._unavailable.clear()
        self.welcome = None
        return ids

    def replay(self) -> list[dict[str, Any]]:
        """Every subscription held, asked for again (for a new connection, or after an
        ``unavailable``). Re-asking for one held changes nothing on the gateway."""
        return [self.request(**fields) for fields in self.registry.replay()]

    # ---- messages ---------------------------------------------------------------------

    def receive(self, msg: dict[str, Any]) -> tuple[list[Event], Reply | None]:
        """One decoded server message: the events to yield, in order, and the reply."""
        kind = msg.get("type")
        try:
            match kind:
                case "ticks":
                    return self._on_ticks(msg.get("ticks") or ()), None
                case "snapshot":
                    snap = Snapshot.from_msg(msg)
                    return ([snap] if self.ticks.snapshot(snap) else []), None
                case "trades":
                    return self._on_trades(bool(msg.get("snapshot")), msg.get("trades") or ()), None
                case "bars":
                    return self._on_bars(msg["tf"], bool(msg.get("snapshot")), msg.get("bars") or ()), None
                case "gap":
                    gap = self.ticks.gap(Gap.from_msg(msg))
                    return ([gap] if gap is not None else []), None
                case "status":
                    return [Status.from_msg(msg)], None
                case "hb":
                    hb = Heartbeat.from_msg(msg)
                    self.lag_ms = hb.lag_ms
                    return [hb], None
                case "welcome":
                    return [self._on_welcome(Welcome.from_msg(msg))], None
                case "reconnect":
                    return [Draining(int(msg.get("after_ms") or 0), str(msg.get("reason") or ""))], None
                case "error":
                    return self._on_error(ServerError.from_msg(msg))
                case "unsubscribed" if msg.get("id") is None:
                    # The gateway's doing: the symbols left the reference data (an option
                    # that expired at the day roll; a `status` with reason "delisted" came
                    # first). They are not asked for again.
                    stream = msg.get("stream", "ticks")
                    for symbol in msg.get("symbols") or ():
                        self.registry.drop(stream, symbol, msg.get("tf"))
                        if stream == "ticks":
                            self.ticks.forget(symbol)
                    return [], None
                case _:
                    return [], self._settle(msg)
        except (KeyError, TypeError, ValueError) as err:
            # A message this client cannot read is reported, never fatal: the next one
            # may be fine, and the gateway's own state is unaffected.
            return [ServerError("client_decode", f"unreadable {kind!r} message: {err!r}")], None

    def _on_ticks(self, ticks: Any) -> list[Event]:
        events: list[Event] = []
        for raw in ticks:
            tick = Tick.from_msg(raw)
            passed, broken = self.ticks.update(tick)
            if broken is not None:
                events.append(broken)
            if passed:
                events.append(tick)
        return events

    def _on_trades(self, snapshot: bool, trades: Any) -> list[Event]:
        """Per symbol, the prints not delivered before. Prints of a tape no longer held
        (in flight behind its ``unsubscribe``) are dropped, so that they cannot hide the
        history of a later subscribe."""
        by_symbol: dict[str, list[Trade]] = {}
        for raw in trades:
            trade = Trade.from_msg(raw)
            if self.registry.holds("trades", trade.symbol) and self.tapes.admit(trade):
                by_symbol.setdefault(trade.symbol, []).append(trade)
        return [Trades(s, snapshot, tuple(ts)) for s, ts in by_symbol.items()]

    def _on_bars(self, tf: str, snapshot: bool, bars: Any) -> list[Event]:
        by_symbol: dict[str, list[Bar]] = {}
        for raw in bars:
            bar = Bar.from_msg(raw)
            if self.registry.holds("bars", bar.symbol, tf) and self.bar_times.admit(tf, bar):
                by_symbol.setdefault(bar.symbol, []).append(bar)
        return [Bars(s, tf, snapshot, tuple(bs)) for s, bs in by_symbol.items()]  # type: ignore[arg-type]

    def _on_welcome(self, welcome: Welcome) -> Welcome:
        if self._welcomed:
            self.stats.reconnects += 1
        self._welcomed = True
        self.welcome = welcome
        return welcome

    def _on_error(self, err: ServerError) -> tuple[list[Event], Reply | None]:
        request = self._in_flight.get(err.id) if err.id is not None else None
        op = request["op"] if request else None
        if err.symbol and err.code in REFUSALS and (err.id is None or op == "subscribe"):
            # Outside any request (an `auth` narrowed the entitlements) it may be about
            # any stream of the symbol; inside a subscribe, about that request's stream.
            stream = request.get("stream", "ticks") if request else None
            self.registry.drop(stream, err.symbol, request.get("tf") if request else None)
        if err.code == "unavailable" and err.symbol and request is not None and err.id is not None:
            self._unavailable.setdefault(err.id, set()).add(err.symbol)
        # A refused entry (a symbol, or a summary with `count`) does not end a subscribe
        # or unsubscribe: its reply lists what was done. Any other error is the reply.
        about_entry = op in ("subscribe", "unsubscribe") and (err.symbol or err.count is not None)
        if request is None or err.id is None or about_entry:
            return [err], None
        return [err], self._finish(err.id, error=err)

    def _settle(self, msg: dict[str, Any]) -> Reply | None:
        id = msg.get("id")
        request = self._in_flight.get(id) if isinstance(id, int) else None
        if request is None or REPLY_TYPE.get(request["op"]) != msg.get("type"):
            return None
        value: Any
        match msg["type"]:
            case "subscribed":
                value = Subscribed.from_msg(msg)
                self._reconcile(request, value)
            case "unsubscribed":
                value = Unsubscribed.from_msg(msg)
            case "subscriptions":
                value = tuple(Subscription.from_msg(s) for s in msg.get("subscriptions") or ())
            case "chains":
                value = Chains.from_msg(msg)
            case "authed":
                value = int(msg["exp"])
            case _:
                value = None
        return self._finish(request["id"], value=value)

    def _reconcile(self, request: dict[str, Any], reply: Subscribed) -> None:
        """Stops replaying what a subscribe asked for and the gateway did not accept: a
        refusal summed up in one ``error`` with ``count`` names no symbol. Symbols
        refused as ``unavailable`` stay: they are asked for again."""
        keep = set(reply.symbols) | self._unavailable.get(request["id"], set())
        stream = request.get("stream", "ticks")
        for symbol in request.get("symbols") or ():
            if symbol not in keep:
                self.registry.drop(stream, symbol, request.get("tf"))
        for chain in request.get("chains") or ():
            if chain not in reply.chains:
                self.registry.drop("ticks", chain)

    def _finish(self, id: int, value: Any = None, error: ServerError | None = None) -> Reply:
        request = self._in_flight.pop(id)
        self._unavailable.pop(id, None)
        return Reply(id, request, value, error)
