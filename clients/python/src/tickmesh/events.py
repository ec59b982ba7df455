"""What the client yields: typed, immutable objects built from the gateway's messages.

Every class here is a frozen dataclass. Fields the protocol may omit are ``None`` when
absent (the gateway never sends ``null``); fields it does not know yet are ignored, so a
newer gateway does not break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, Self

Mode = Literal["ltp", "quote", "full"]
Stream = Literal["ticks", "trades", "bars"]
Timeframe = Literal["1s", "1m", "5m", "1h", "1d"]
TradingState = Literal["pre_open", "open", "halted", "closed"]

MODES: frozenset[str] = frozenset(("ltp", "quote", "full"))
STREAMS: frozenset[str] = frozenset(("ticks", "trades", "bars"))
TIMEFRAMES: tuple[str, ...] = ("1s", "1m", "5m", "1h", "1d")


_FIELDS: dict[type, frozenset[str]] = {}


def _known(cls: type, msg: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``msg`` that are fields of ``cls`` (``type`` and newer fields go)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    return {k: v for k, v in msg.items() if k in names}


class _FromMsg:
    """Built from a decoded message by its field names."""

    __slots__ = ()

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        return cls(**_known(cls, msg))


@dataclass(frozen=True, slots=True)
class Depth:
    """Order book levels (``full`` mode), best first: ``(price, size)`` pairs."""

    bids: tuple[tuple[float, int], ...]
    asks: tuple[tuple[float, int], ...]

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        def side(levels: Any) -> tuple[tuple[float, int], ...]:
            return tuple((lvl[0], lvl[1]) for lvl in levels or () if len(lvl) >= 2)

        return cls(bids=side(msg.get("bids")), asks=side(msg.get("asks")))


@dataclass(frozen=True, slots=True)
class Tick:
    """A live update of one symbol: the whole current state of its fields (absolute
    values, never deltas), so a lost or folded tick only makes the app momentarily stale.

    ``from_seq``, when set, says this update stands for every tick from ``from_seq``
    through ``seq``: the gateway folded them into it (conflation, not loss).
    """

    symbol: str
    seq: int
    epoch: int | None = None
    ts: int | None = None
    last: float | None = None
    from_seq: int | None = None
    src_ts: int | None = None
    kind: str | None = None
    state: TradingState | None = None
    last_size: int | None = None
    bid: float | None = None
    ask: float | None = None
    bid_size: int | None = None
    ask_size: int | None = None
    volume: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    prev_close: float | None = None
    depth: Depth | None = None
    underlying: str | None = None
    expiry: str | None = None
    strike: float | None = None
    right: Literal["C", "P"] | None = None
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    delayed_ms: int | None = None

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        known = _known(cls, msg)
        depth = known.get("depth")
        if isinstance(depth, dict):
            known["depth"] = Depth.from_msg(depth)
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Snapshot(Tick):
    """A symbol's current state, sent once when it is subscribed (and again after every
    reconnect): a ``Tick`` that folds nothing and owes nothing. ``isinstance(x, Tick)``
    holds for it too."""


@dataclass(frozen=True, slots=True)
class Trade:
    """One print of a symbol's tape. ``seq`` is the seq of the tick at which it printed,
    ``trade_id`` unique per symbol."""

    symbol: str
    seq: int
    trade_id: int
    price: float
    size: int
    ts: int
    src_ts: int | None = None
    conditions: tuple[str, ...] = ()

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        known = _known(cls, msg)
        known["conditions"] = tuple(known.get("conditions") or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Trades:
    """Prints of one symbol, oldest first, none delivered before. ``snapshot``: from the
    history a tape starts with (after a reconnect, only its prints newer than those
    delivered), never a reason to clear what is shown."""

    symbol: str
    snapshot: bool
    trades: tuple[Trade, ...]


@dataclass(frozen=True, slots=True)
class Bar(_FromMsg):
    """One OHLCV bar. With the symbol and timeframe, ``t`` (its start, µs since the Unix
    epoch) identifies it: a later bar with the same ``t`` replaces it. ``final``: it
    closed and never changes again."""

    symbol: str
    t: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trades: int
    final: bool = False


@dataclass(frozen=True, slots=True)
class Bars:
    """Bars of one symbol and timeframe, oldest first. ``snapshot``: the history a
    subscription starts with (closed bars, then the bar in progress); after a reconnect
    only from the newest bar delivered on."""

    symbol: str
    tf: Timeframe
    snapshot: bool
    bars: tuple[Bar, ...]


@dataclass(frozen=True, slots=True)
class Status(_FromMsg):
    """A subscribed symbol's trading state changed (right before the first update in the
    new state), or it turned stale (the gateway cannot vouch for its value) or fresh."""

    symbol: str
    stale: bool
    reason: str
    ts: int
    state: TradingState | None = None


@dataclass(frozen=True, slots=True)
class Gap(_FromMsg):
    """Ticks ``from_seq`` through ``to_seq`` (inclusive) of ``epoch`` never reached the
    gateway: lost upstream (``reason`` ``"upstream"``), published while its NATS link
    was down (``"reconnect"``), or between a snapshot and the stream (``"snapshot"``).
    The symbol's next update is again its whole state."""

    symbol: str
    epoch: int
    from_seq: int
    to_seq: int
    reason: str

    @property
    def count(self) -> int:
        return max(0, self.to_seq - self.from_seq + 1)


@dataclass(frozen=True, slots=True)
class ContinuityBreak:
    """An update skipped seqs that were neither folded into it nor told lost by a
    ``Gap``: the gateway broke its promise. Yielded right before that update."""

    symbol: str
    seq: int
    from_seq: int
    had: int


@dataclass(frozen=True, slots=True)
class Heartbeat(_FromMsg):
    """The gateway's heartbeat: its time (µs) and the age of the freshest tick this
    session received (ms; ``None`` before the first)."""

    ts: int
    lag_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Limits(_FromMsg):
    """The session's tier; ``None`` where polling carries the session (no session on
    the gateway to tell them)."""

    max_symbols: int | None = None
    max_msgs_per_s: int | None = None
    min_interval_ms: int | None = None
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """A session is open (the first, or one after a reconnect): every subscription has
    been asked for again on it."""

    protocol: int
    session: str
    edge: str
    heartbeat_ms: int
    limits: Limits

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        known = _known(cls, msg)
        known["limits"] = Limits.from_msg(known.get("limits") or {})
        return cls(**known)


@dataclass(frozen=True, slots=True)
class ServerError(_FromMsg):
    """An ``error`` from the gateway: the refusal of a request (``id`` set) or an event
    (``slow_consumer``, ``token_expired``, ...). The connection stays open unless a close
    follows. ``code`` is one of the protocol's error codes."""

    code: str
    message: str = ""
    id: int | None = None
    symbol: str | None = None
    interval_ms: int | None = None
    retry_ms: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Draining:
    """The gateway is draining (``reconnect``): data keeps flowing until it closes; the
    client comes back ``after_ms`` after this notice, to any gateway."""

    after_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended (or an attempt failed). ``code`` is the close code (1006:
    no close frame, or no connection at all); ``http_status`` is set when the upgrade
    was refused (401, 429, 503, ...), with the body as ``reason``. ``reconnect_in`` is
    the delay before the next attempt, in seconds, or ``None`` when the client stops:
    a terminal close (4400-4499, HTTP 401) without a fresh token, or ``Client.close``."""

    code: int
    reason: str
    terminal: bool
    reconnect_in: float | None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class TransportChanged:
    """Another transport carries the session from the ``Welcome`` that follows:
    ``"sse"`` or ``"poll"`` where no WebSocket got through, ``"websocket"`` again once
    one did. ``previous`` is ``None`` for the first session; ``reason`` says why."""

    transport: str
    previous: str | None
    reason: str


Event = (
    Tick
    | Trades
    | Bars
    | Status
    | Gap
    | ContinuityBreak
    | Heartbeat
    | Welcome
    | TransportChanged
    | ServerError
    | Draining
    | Disconnected
)


# ---- replies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The reply to ``subscribe``: the symbols accepted (chains expanded) and the
    effective ``interval_ms``. Refused symbols come as :class:`ServerError` events."""

    symbols: tuple[str, ...]
    interval_ms: int
    mode: Mode | None = None
    chains: tuple[str, ...] = ()
    stream: Stream = "ticks"
    tf: Timeframe | None = None
    delayed: tuple[str, ...] = ()

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        known = _known(cls, msg)
        for name in ("symbols", "chains", "delayed"):
            known[name] = tuple(known.get(name) or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    symbols: tuple[str, ...]
    chains: tuple[str, ...] = ()
    stream: Stream = "ticks"
    tf: Timeframe | None = None

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        known = _known(cls, msg)
        for name in ("symbols", "chains"):
            known[name] = tuple(known.get(name) or ())
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Subscription(_FromMsg):
    """One entry of the gateway's ``subscriptions`` reply."""

    symbol: str
    mode: Mode
    interval_ms: int
    stream: Stream = "ticks"
    tf: Timeframe | None = None


@dataclass(frozen=True, slots=True)
class Expiry:
    expiry: str
    strikes: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Chains:
    """The option chain of an underlying: expiries ascending, each with its strikes."""

    underlying: str
    expiries: tuple[Expiry, ...]

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Self:
        expiries = tuple(
            Expiry(e["expiry"], tuple(e.get("strikes") or ())) for e in msg.get("expiries") or ()
        )
        return cls(underlying=msg["underlying"], expiries=expiries)
