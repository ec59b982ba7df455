"""What the client holds, as it asked for it: replayed after every ``welcome``.

Subscriptions are identified as the protocol identifies them: ticks by symbol (or chain),
with their own mode and interval; tapes by symbol, with the history they start with;
bars by (symbol, timeframe), with history and interval. Asking again for one held
replaces its settings, as the gateway does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TickSub:
    mode: str
    interval_ms: int


@dataclass(frozen=True, slots=True)
class BarSub:
    history: int
    interval_ms: int


def chain_pattern(chain: str) -> re.Pattern[str] | None:
    """The option symbols of a chain share the OCC prefix root + YYMMDD."""
    m = re.fullmatch(r"([A-Z0-9]+):\d\d(\d\d)-(\d\d)-(\d\d)", chain)
    return re.compile(rf"{m[1]}{m[2]}{m[3]}{m[4]}[CP]\d{{8}}") if m else None


class Registry:
    def __init__(self) -> None:
        self.symbols: dict[str, TickSub] = {}
        self.chains: dict[str, TickSub] = {}
        self.tapes: dict[str, int] = {}
        self.bars: dict[tuple[str, str], BarSub] = {}

    def record(self, msg: dict[str, Any]) -> None:
        """Keeps the replay list in step with a request as it is sent."""
        op = msg.get("op")
        stream = msg.get("stream", "ticks")
        symbols = msg.get("symbols") or ()
        if op == "subscribe":
            if stream == "bars":
                sub = BarSub(msg["history"], msg["interval_ms"])
                self.bars.update(((s, msg["tf"]), sub) for s in symbols)
            elif stream == "trades":
                self.tapes.update((s, msg["history"]) for s in symbols)
            else:
                tick = TickSub(msg["mode"], msg["interval_ms"])
                self.symbols.update((s, tick) for s in symbols)
                self.chains.update((c, tick) for c in msg.get("chains") or ())
        elif op == "unsubscribe":
            for s in symbols:
                self.drop(stream, s, msg.get("tf"))
            for c in msg.get("chains") or ():
                self.chains.pop(c, None)

    def drop(self, stream: str | None, name: str, tf: str | None = None) -> None:
        """Stops replaying ``name`` (a symbol, or a chain for ticks). ``stream`` ``None``:
        of every stream (a refusal outside any request may be about any of them)."""
        if stream in (None, "ticks"):
            self.symbols.pop(name, None)
            self.chains.pop(name, None)
        if stream in (None, "trades"):
            self.tapes.pop(name, None)
        if stream == "bars" and tf is not None:
            self.bars.pop((name, tf), None)
        if stream is None:
            for key in [k for k in self.bars if k[0] == name]:
                del self.bars[key]

    def holds(self, stream: str, symbol: str, tf: str | None = None) -> bool:
        if stream == "trades":
            return symbol in self.tapes
        if stream == "bars":
            return (symbol, tf or "") in self.bars
        return symbol in self.symbols

    def replay(self) -> Iterator[dict[str, Any]]:
        """The requests (without ``id``) that ask for everything held again: one per
        (mode, interval) of ticks, one per history of tapes, one per (timeframe,
        history, interval) of bars."""
        ticks: dict[TickSub, dict[str, list[str]]] = {}
        for field, held in (("symbols", self.symbols), ("chains", self.chains)):
            for name, sub in held.items():
                ticks.setdefault(sub, {}).setdefault(field, []).append(name)
        for sub, names in ticks.items():
            yield {"op": "subscribe", "mode": sub.mode, "interval_ms": sub.interval_ms, **names}
        tapes: dict[int, list[str]] = {}
        for symbol, history in self.tapes.items():
            tapes.setdefault(history, []).append(symbol)
        for history, symbols in tapes.items():
            yield {"op": "subscribe", "stream": "trades", "history": history, "symbols": symbols}
        bars: dict[tuple[str, BarSub], list[str]] = {}
        for (symbol, tf), bar in self.bars.items():
            bars.setdefault((tf, bar), []).append(symbol)
        for (tf, bar), symbols in bars.items():
            yield {
                "op": "subscribe",
                "stream": "bars",
                "tf": tf,
                "history": bar.history,
                "interval_ms": bar.interval_ms,
                "symbols": symbols,
            }
