"""TickMesh client for Python's asyncio: live market data from a TickMesh gateway.

::

    import tickmesh

    async with tickmesh.connect("ws://127.0.0.1:8080/v1/stream") as client:
        await client.subscribe(["AAPL", "MSFT"], mode="quote", interval_ms=250)
        async for event in client:
            match event:
                case tickmesh.Tick(symbol=symbol, last=last):
                    print(symbol, last)

Modules: :mod:`~tickmesh.client` (the connection: reconnects, replays, requests),
:mod:`~tickmesh.session` (protocol state, no I/O), :mod:`~tickmesh.sequence` (seq
checks and continuity accounting), :mod:`~tickmesh.registry` (what is replayed),
:mod:`~tickmesh.requests` (requests built and checked), :mod:`~tickmesh.reconnect`
(when to dial again) with :mod:`~tickmesh.backoff`, :mod:`~tickmesh.events` (what the
app sees), :mod:`~tickmesh.codec`; where no WebSocket gets through,
:mod:`~tickmesh.fallback` (Server-Sent Events, polling) over :mod:`~tickmesh.httpget` and
:mod:`~tickmesh.eventstream`.
"""

from .backoff import Backoff, full_jitter
from .client import Client, connect
from .codec import SUBPROTOCOLS
from .errors import ClosedError, TickMeshError
from .events import (
    Bar,
    Bars,
    Chains,
    ContinuityBreak,
    Depth,
    Disconnected,
    Draining,
    Event,
    Expiry,
    Gap,
    Heartbeat,
    Limits,
    ServerError,
    Snapshot,
    Status,
    Subscribed,
    Subscription,
    Tick,
    Trade,
    Trades,
    TransportChanged,
    Unsubscribed,
    Welcome,
)
from .reconnect import is_terminal
from .sequence import Stats

__all__ = [
    "SUBPROTOCOLS",
    "Backoff",
    "Bar",
    "Bars",
    "Chains",
    "Client",
    "ClosedError",
    "ContinuityBreak",
    "Depth",
    "Disconnected",
    "Draining",
    "Event",
    "Expiry",
    "Gap",
    "Heartbeat",
    "Limits",
    "ServerError",
    "Snapshot",
    "Stats",
    "Status",
    "Subscribed",
    "Subscription",
    "Tick",
    "TickMeshError",
    "Trade",
    "Trades",
    "TransportChanged",
    "Unsubscribed",
    "Welcome",
    "connect",
    "full_jitter",
    "is_terminal",
]
