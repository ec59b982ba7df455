"""The client's requests, built and checked before they are sent: a bad value would
otherwise be refused again after every reconnect, since subscriptions are replayed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .events import MODES, STREAMS, TIMEFRAMES, ServerError

DEFAULT_MODE = "quote"
DEFAULT_INTERVAL_MS = 250
#: Prints of history a tape starts with unless asked (the protocol's default; at most 500).
DEFAULT_TRADES_HISTORY = 50
#: Closed bars of history a bars subscription starts with unless asked (at most 1000).
DEFAULT_BARS_HISTORY = 100


def subscribe_fields(
    symbols: str | Iterable[str],
    chains: str | Iterable[str],
    mode: str,
    interval_ms: int,
    stream: str,
    history: int | None,
    tf: str | None,
) -> dict[str, Any]:
    """The fields of a ``subscribe``, every default spelt out so that a replay asks for
    exactly the same; ``ValueError`` if the protocol would refuse it."""
    names, chain_names = upper(symbols), upper(chains)
    check_stream(stream, chain_names, tf)
    if stream != "trades":
        check_count("interval_ms", interval_ms)
    if stream == "ticks":
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(sorted(MODES))}")
        if not names and not chain_names:
            raise ValueError("subscribe needs symbols or chains")
        fields: dict[str, Any] = {"mode": mode, "interval_ms": interval_ms}
        if names:
            fields["symbols"] = names
        if chain_names:
            fields["chains"] = chain_names
        return fields
    if not names:
        raise ValueError(f"a {stream} subscription needs symbols")
    if history is None:
        history = DEFAULT_TRADES_HISTORY if stream == "trades" else DEFAULT_BARS_HISTORY
    check_count("history", history)
    fields = {"stream": stream, "history": history, "symbols": names}
    if stream == "bars":
        fields.update(tf=tf, interval_ms=interval_ms)
    return fields


def unsubscribe_fields(
    symbols: str | Iterable[str], chains: str | Iterable[str], stream: str, tf: str | None
) -> dict[str, Any]:
    names, chain_names = upper(symbols), upper(chains)
    check_stream(stream, chain_names, tf)
    fields: dict[str, Any] = {}
    if stream != "ticks":
        fields["stream"] = stream
    if stream == "bars":
        fields["tf"] = tf
    if names:
        fields["symbols"] = names
    if chain_names:
        fields["chains"] = chain_names
    return fields


def upper(names: str | Iterable[str]) -> list[str]:
    """Symbols as the gateway wants them (upper case); duplicates kept once, in order."""
    if isinstance(names, str):
        names = [names]
    out = (n.strip().upper() for n in names)
    return list(dict.fromkeys(n for n in out if n))


def check_stream(stream: str, chains: list[str], tf: str | None) -> None:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}: one of {', '.join(sorted(STREAMS))}")
    if stream != "ticks" and chains:
        raise ValueError(f"a {stream} subscription takes symbols, not chains")
    if stream == "bars" and tf not in TIMEFRAMES:
        raise ValueError(f'stream "bars" needs tf: one of {", ".join(TIMEFRAMES)}, not {tf!r}')


def check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")


def retryable(err: ServerError) -> bool:
    """The gateway cannot serve this yet and said when to ask again."""
    return err.code == "unavailable" or (err.code == "rate_limited" and err.retry_ms is not None)


def retry_delay(err: ServerError, r: float) -> float:
    """Seconds: ``retry_ms`` (at least 100 ms; 1 s when absent) plus up to a quarter
    more (``r`` in [0, 1)), so that clients refused together do not come back together."""
    base = max(100, err.retry_ms if err.retry_ms is not None else 1000) / 1000
    return base * (1 + r * 0.25)
