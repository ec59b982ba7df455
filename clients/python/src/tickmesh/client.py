"""The asyncio client: one WebSocket at a time to a gateway's ``/v1/stream``.

:class:`Client` owns the socket, the timers and the event queue; the protocol state lives
in :class:`~tickmesh.session.Session`. A background task connects, reads every message
into the session, and yields the session's events to the app through a bounded queue;
when the connection ends it reconnects with full-jitter backoff (after a drain notice:
when the gateway said) and asks for every subscription again.

The queue is the client's only buffer. When the app does not keep up and it fills, the
client stops reading the socket: the gateway then sees a slow consumer and conflates the
session (every-tick subscriptions) or cuts it with 4008 (tapes), as the protocol says,
and the client comes back with snapshots. Nothing grows without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from .backoff import Backoff
from .codec import Codec, Encoding
from .errors import ClosedError, TickMeshError
from .events import (
    Chains,
    Disconnected,
    Draining,
    Event,
    ServerError,
    Subscribed,
    Subscription,
    TransportChanged,
    Unsubscribed,
    Welcome,
)
from .fallback import Fallback, LinkClosed, PollLink, Refused, SseLink
from .reconnect import CLOSE_ABNORMAL, TRANSPORTS, Ended, Reconnect, Transports
from .requests import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_MODE,
    retry_delay,
    retryable,
    subscribe_fields,
    unsubscribe_fields,
)
from .sequence import Stats
from .session import Reply, Session

TokenSource = Callable[[], str | Awaitable[str | None] | None]


@dataclass
class _Pending:
    op: str
    fields: dict[str, Any]
    future: asyncio.Future[Any]
    timer: asyncio.TimerHandle | None = None


class Client:
    """A TickMesh client that stays connected until :meth:`close`.

    Subscriptions made with :meth:`subscribe` are kept and asked for again on every new
    connection; the last seq per symbol outlives connections, so the app never sees a
    tick twice or out of order. Iterate over the client for its events (see
    :mod:`tickmesh.events`).

    Args:
        url: ``ws://host:port/v1/stream`` or ``wss://...``.
        token: a JWT, sent as ``Authorization: Bearer``; ``None`` for anonymous access.
        get_token: called (plain or async) for a fresh token before each reconnect and
            after a terminal close (4401, 4403; HTTP 401 at the upgrade). A terminal close
            stops the client unless it yields a token different from the one refused.
        encoding: ``"json"`` or ``"msgpack"`` (needs ``tickmesh[msgpack]``).
        backoff_base, backoff_max: seconds: the first ceiling of the full-jitter backoff
            and its cap (500 ms and 30 s, as the browser client and the CLI).
        request_timeout: seconds a request waits for its reply once sent.
        connect_timeout: seconds from dialing to the ``welcome``.
        idle_heartbeats: heartbeat periods without any message before the connection
            is presumed dead and replaced (a half-open TCP connection can stay silent
            for minutes).
        max_events: events held for the app; when full, the client stops reading.
        max_queued: requests held while disconnected; past it they fail ``queue_full``.
        compression: offer permessage-deflate; used when the gateway accepts it.
        random: a source of numbers in [0, 1), for the jitter.
        websocket_options: passed on to ``websockets.asyncio.client.connect`` (``ssl``,
            ``proxy``, ...); its ``ssl`` also serves the fallbacks' ``https``.
        transports: tried in this order where the one before does not get through:
            ``"websocket"``, then Server-Sent Events (``"sse"``), then polling
            (``"poll"``); ``("websocket",)`` never falls back.
        fallback_after: failed WebSocket attempts in a row before the next transport is
            tried (a gateway that restarts makes one fail).
        poll_interval: seconds: the least time between two polls.
        retry_websocket: seconds after which a fallback connection ends (1000), for the
            WebSocket to be tried again.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        encoding: Encoding = "json",
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        idle_heartbeats: float = 3,
        max_events: int = 10_000,
        max_queued: int = 256,
        compression: bool = True,
        random: Callable[[], float] = _random.random,
        websocket_options: dict[str, Any] | None = None,
        transports: tuple[str, ...] = TRANSPORTS,
        fallback_after: int = 2,
        poll_interval: float = 1.0,
        retry_websocket: float = 60.0,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as err:
            raise ValueError(f"a TickMesh URL is ws:// or wss://: {err}") from err
        self.url = url
        self.token = token
        self._get_token = get_token
        self._codec = Codec(encoding)
        self._reconnect = Reconnect(Backoff(backoff_base, backoff_max, random))
        self._random = random
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.idle_heartbeats = idle_heartbeats
        self.max_queued = max_queued
        self._ws_options = {
            "compression": "deflate" if compression else None,
            # Liveness is watched through the gateway's heartbeats; it pings, we answer.
            "ping_interval": None,
            "max_size": 16 * 2**20,
            **(websocket_options or {}),
        }
        self._transports = Transports(tuple(transports), fallback_after)
        self.poll_interval = poll_interval
        self.retry_websocket = retry_websocket
        #: What carries the session since its ``welcome``; ``None`` before the first.
        self.transport: str | None = None
        #: Why the transport tried now is not the WebSocket.
        self._fallback_reason = ""
        self._welcomed_here = False
        self._session = Session()
        self._events: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_events)
        self._pending: dict[int, _Pending] = {}
        self._outbox: deque[_Pending] = deque()
        self._timers: set[asyncio.TimerHandle] = set()
        #: Sends started from timers: held here, or the loop could drop them half-done.
        self._tasks: set[asyncio.Task[None]] = set()
        self._replay_timer: asyncio.TimerHandle | None = None
        self._ws: ClientConnection | Fallback | None = None
        self._ready = False
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._finished = False
        self._closed_for_good: ClosedError | None = None
        #: Yielded last, right before the end: the `Disconnected` of a `close()`.
        self._last_event: Event | None = None
        #: What ended the background task if it failed (a bug): raised at the end.
        self._crash: BaseException | None = None

    # ---- state --------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """Counts of what the client passed on, dropped and accounted for."""
        return self._session.stats

    @property
    def welcome(self) -> Welcome | None:
        """The current session's ``welcome``; ``None`` while not connected."""
        return self._session.welcome

    @property
    def lag_ms(self) -> int | None:
        """The latest heartbeat's ``lag_ms``."""
        return self._session.lag_ms

    @property
    def connected(self) -> bool:
        """A session is open (its ``welcome`` came, everything held was asked again)."""
        return self._ready

    @property
    def encoding(self) -> Encoding:
        return self._codec.encoding

    def last_seq(self, symbol: str) -> int | None:
        """The seq of the last tick or snapshot of ``symbol`` passed on."""
        return self._session.ticks.last.get(symbol)

    def last_trade_seq(self, symbol: str) -> int | None:
        return self._session.tapes.last.get(symbol)

    def last_bar(self, symbol: str, tf: str) -> tuple[int, bool] | None:
        """The start ``t`` of the newest bar passed on, and whether it was final."""
        return self._session.bar_times.last.get((symbol, tf))

    @property
    def held(self) -> dict[str, Any]:
        """What is asked for again after a reconnect: ``symbols`` and ``chains`` (each
        with its mode and interval), ``trades`` (symbol -> history), ``bars``
        ((symbol, tf) -> history and interval)."""
        reg = self._session.registry
        return {
            "symbols": dict(reg.symbols),
            "chains": dict(reg.chains),
            "trades": dict(reg.tapes),
            "bars": dict(reg.bars),
        }

    # ---- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Starts connecting in the background (no-op once started)."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tickmesh")

    async def wait_connected(self, timeout: float | None = None) -> Welcome:
        """Waits for a session to be open; raises ``TimeoutError``, or the
        :class:`ClosedError` that stopped the client."""
        self.start()
        async with asyncio.timeout(timeout):
            while True:
                if self._closed_for_good is not None:
                    raise self._closed_for_good
                if self._finished:
                    raise TickMeshError("closed", "client closed")
                if self._ready and self._session.welcome is not None:
                    return self._session.welcome
                self._connected.clear()
                await self._connected.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes for good: no reconnect; requests still waiting fail ``closed``. Events
        already queued can still be iterated; then the iteration ends."""
        if self._stopping:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            return
        self._stopping = True
        self._last_event = Disconnected(code, reason, terminal=False, reconnect_in=None)
        ws = self._ws
        if ws is not None:
            try:
                async with asyncio.timeout(2):
                    await ws.close(code, reason)
            except (TimeoutError, OSError, ConnectionClosed):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        else:
            self._finish()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- events -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._events.empty() and self._finished:
            self._end()
        self.start()
        event = await self._events.get()
        if event is _END:
            self._offer(_END)  # left for any other reader waiting too
            self._end()
        return event

    def _end(self) -> None:
        if self._closed_for_good is not None:
            raise self._closed_for_good
        if self._crash is not None:
            raise TickMeshError("internal", f"the client failed: {self._crash!r}") from self._crash
        raise StopAsyncIteration

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most ``timeout`` seconds (``TimeoutError``)."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    def _offer(self, event: Event) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            pass  # the app is behind; what it has not read yet ends with the close

    # ---- requests -----------------------------------------------------------------

    async def subscribe(
        self,
        symbols: str | Iterable[str] = (),
        *,
        chains: str | Iterable[str] = (),
        mode: str = DEFAULT_MODE,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        stream: str = "ticks",
        history: int | None = None,
        tf: str | None = None,
    ) -> Subscribed:
        """Subscribes (or changes the mode and interval of) symbols and chains
        (``"AAPL:2026-12-18"``), kept across reconnects. Returns the ``subscribed``
        reply; refused symbols come as :class:`ServerError` events and are not asked
        for again. ``unavailable`` (the gateway is not ready) is retried after its
        ``retry_ms``; made while disconnected, the request is sent after the next
        ``welcome``.

        ``stream="trades"`` follows the tapes of ``symbols``: ``history`` prints first
        (default 50), then every print, as :class:`Trades` events. ``stream="bars"``
        with ``tf`` (``1s``, ``1m``, ``5m``, ``1h``, ``1d``) follows their bars:
        ``history`` closed bars (default 100) and the bar in progress, then the bar in
        progress at most every ``interval_ms`` and each bar once more when final. After
        a reconnect their fresh history is passed on only from where the app was.
        """
        fields = subscribe_fields(symbols, chains, mode, interval_ms, stream, history, tf)
        result: Subscribed = await self._request("subscribe", fields)
        return result

    async def unsubscribe(
        self,
        symbols: str | Iterable[str] = (),
        *,
        chains: str | Iterable[str] = (),
        stream: str = "ticks",
        tf: str | None = None,
    ) -> Unsubscribed:
        """Stops symbols and chains (or tapes, or bars of ``tf``) and forgets their last
        seq, so a later subscribe starts afresh with a snapshot or history."""
        fields = unsubscribe_fields(symbols, chains, stream, tf)
        result: Unsubscribed = await self._request("unsubscribe", fields)
        return result

    async def list(self) -> tuple[Subscription, ...]:
        """The subscriptions the gateway holds for this session."""
        result: tuple[Subscription, ...] = await self._request("list", {})
        return result

    async def chains(self, underlying: str) -> Chains:
        """The option chain of ``underlying``: its expiries and strikes."""
        result: Chains = await self._request("chains", {"underlying": underlying.strip().upper()})
        return result

    async def ping(self) -> None:
        await self._request("ping", {})

    async def auth(self, token: str) -> int:
        """Replaces the session's token in place (entitlements change without a
        reconnect); it is also the one used to reconnect. Returns its ``exp``."""
        exp: int = await self._request("auth", {"token": token})
        self.token = token
        return exp

    async def _request(self, op: str, fields: dict[str, Any]) -> Any:
        if self._closed_for_good is not None:
            raise self._closed_for_good
        if self._stopping:
            raise TickMeshError("closed", "client closed")
        self.start()
        pending = _Pending(op, fields, asyncio.get_running_loop().create_future())
        await self._submit(pending)
        return await pending.future

    async def _submit(self, pending: _Pending) -> None:
        if self._ready:
            await self._send(pending)
        elif len(self._outbox) >= self.max_queued:
            _fail(pending.future, TickMeshError("queue_full", "too many requests while disconnected"))
        else:
            self._outbox.append(pending)

    async def _send(self, pending: _Pending) -> None:
        msg = self._session.request(pending.op, **pending.fields)
        self._session.sent(msg)
        self._pending[msg["id"]] = pending
        pending.timer = asyncio.get_running_loop().call_later(
            self.request_timeout, self._timed_out, msg["id"]
        )
        await self._write(msg)

    async def _write(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return  # the reader is ending; it fails what is in flight
        try:
            if isinstance(ws, Fallback):
                await ws.request(msg)
            else:
                await ws.send(self._codec.encode(msg))
        except ConnectionClosed:
            pass  # the reader sees the close and fails what is in flight

    def _timed_out(self, id: int) -> None:
        pending = self._pending.pop(id, None)
        self._session.abandon(id)
        if pending is not None:
            _fail(
                pending.future,
                TickMeshError("timeout", f"no reply to {pending.op} within {self.request_timeout} s"),
            )

    def _settle(self, reply: Reply) -> None:
        pending = self._pending.pop(reply.id, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        err = reply.error
        if err is not None and retryable(err) and reply.request["op"] == "subscribe":
            # Refused whole, for now (reference data loading, over the rate): asked for
            # again once `retry_ms` has passed, jittered. The app's own request is sent
            # again as it was, and its caller keeps waiting; a replayed one is part of
            # the next replay.
            if pending is None:
                self._replay_later(err)
            else:
                self._later(retry_delay(err, self._random()), self._resubmit, pending)
        elif pending is None:
            return  # a replayed subscription's reply: nobody waits for it
        elif err is None:
            if not pending.future.done():
                pending.future.set_result(reply.value)
        else:
            _fail(pending.future, TickMeshError(err.code, err.message, err))

    def _resubmit(self, pending: _Pending) -> None:
        if not pending.future.done() and not self._stopping:
            self._spawn(self._submit(pending))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        def fire() -> None:
            self._timers.discard(handle)
            fn(*args)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)
        return handle

    def _replay_later(self, err: ServerError) -> None:
        """Everything held is asked for again once ``retry_ms`` has passed, jittered
        (once, however many refusals): some symbols, or a replayed subscribe, were
        refused as ``unavailable``."""
        if self._replay_timer is not None:
            return

        def replay() -> None:
            self._replay_timer = None
            if self._ready and not self._stopping:
                self._spawn(self._replay())

        self._replay_timer = self._later(retry_delay(err, self._random()), replay)

    async def _replay(self) -> None:
        for msg in self._session.replay():
            self._session.sent(msg)
            await self._write(msg)

    # ---- connection ---------------------------------------------------------------

    async def _run(self) -> None:
        refresh = self.token is None
        try:
            await self._connect_loop(refresh)
        except Exception as err:  # noqa: BLE001 - a bug: kept, raised at the end of the events
            self._crash = err
        finally:
            self._finish()

    async def _connect_loop(self, refresh: bool) -> None:
        while not self._stopping:
            if refresh:
                await self._refresh_token()
            kind = self._transports.current
            self._welcomed_here = False
            ended = await self._connect_once(kind)
            if self._stopping:
                break
            if self._transports.ended(ended, self._welcomed_here):
                # Not welcomed on this transport: the next one is tried at once.
                self._fallback_reason = f"{kind} failed: {ended.reason}"
                delay: float | None = 0.0
            else:
                delay = await self._delay_after(ended)
            await self._events.put(
                Disconnected(ended.code, ended.reason, ended.terminal, delay, ended.http_status)
            )
            if delay is None:
                self._closed_for_good = ClosedError(ended.http_status or ended.code, ended.reason)
                break
            refresh = not ended.terminal
            await asyncio.sleep(delay)

    async def _refresh_token(self) -> str | None:
        """A fresh token from ``get_token``, kept as the one to use; ``None`` if there
        is none (no source, it failed, or it had nothing)."""
        if self._get_token is None:
            return None
        try:
            token = self._get_token()
            if inspect.isawaitable(token):
                token = await token
        except Exception:  # noqa: BLE001 - a broken token source leaves the token we have
            return None
        if token:
            self.token = token
        return token or None

    async def _delay_after(self, ended: Ended) -> float | None:
        """Seconds to wait before the next attempt; ``None``: stop for good (a terminal
        close, and no token other than the one refused)."""
        if ended.terminal:
            used = self.token
            fresh = await self._refresh_token()
            if fresh is None or fresh == used:
                return None
            return self._reconnect.backoff.next_delay()
        return self._reconnect.delay(ended, asyncio.get_running_loop().time())

    async def _connect_once(self, kind: str) -> Ended:
        if kind != "websocket":
            return await self._fallback_once(kind)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await ws_connect(
                self.url,
                subprotocols=[self._codec.subprotocol],  # type: ignore[list-item]
                additional_headers=headers,
                open_timeout=self.connect_timeout,
                **self._ws_options,
            )
        except InvalidStatus as err:
            status = err.response.status_code
            body = err.response.body.decode("utf-8", "replace").strip() if err.response.body else ""
            return Ended(CLOSE_ABNORMAL, body or f"HTTP {status}", status, _retry_after(err))
        except (OSError, TimeoutError, InvalidHandshake) as err:
            return Ended(CLOSE_ABNORMAL, str(err) or type(err).__name__)
        return await self._serve_link(ws)

    async def _fallback_once(self, kind: str) -> Ended:
        link_type = SseLink if kind == "sse" else PollLink
        extra = {"poll_interval": self.poll_interval} if kind == "poll" else {}
        link = link_type(
            self.url,
            self.token,
            retry_websocket=self.retry_websocket,
            timeout=self.connect_timeout,
            ssl=self._ws_options.get("ssl"),
            **extra,
        )
        try:
            await link.open()
        except Refused as err:
            link.abort()
            return Ended(CLOSE_ABNORMAL, err.reason, err.status, err.retry_after)
        return await self._serve_link(link)

    async def _serve_link(self, ws: ClientConnection | Fallback) -> Ended:
        self._ws = ws
        try:
            return await self._serve(ws)
        finally:
            self._ready = False
            self._ws = None
            if self._stopping:
                why = TickMeshError("closed", "client closed")
            else:
                why = TickMeshError("disconnected", "connection closed before the reply")
            for id in self._session.disconnected():
                pending = self._pending.pop(id, None)
                if pending is not None:
                    if pending.timer is not None:
                        pending.timer.cancel()
                    _fail(pending.future, why)
            if self._replay_timer is not None:
                self._replay_timer.cancel()
                self._timers.discard(self._replay_timer)
                self._replay_timer = None
            if isinstance(ws, Fallback):
                ws.abort()
            else:
                ws.transport.abort()

    async def _serve(self, ws: ClientConnection | Fallback) -> Ended:
        loop = asyncio.get_running_loop()
        welcome_by = loop.time() + self.connect_timeout
        welcomed = False
        idle: float | None = None
        try:
            async with asyncio.timeout_at(welcome_by) as deadline:
                while True:
                    data = await ws.recv()
                    # The watch is off while the app holds the client up (a full queue):
                    # a slow app is the gateway's to handle, not a dead connection.
                    deadline.reschedule(None)
                    welcome = await self._handle(data)
                    if welcome is not None:
                        welcomed = True
                        idle = welcome.heartbeat_ms / 1000 * self.idle_heartbeats or None
                    if not welcomed:
                        deadline.reschedule(welcome_by)
                    elif idle is not None:
                        deadline.reschedule(loop.time() + idle)
        except ConnectionClosed as err:
            if err.rcvd is not None:
                return Ended(err.rcvd.code, err.rcvd.reason)
            return Ended(CLOSE_ABNORMAL, "connection lost")
        except LinkClosed as err:
            return Ended(err.code, err.reason)
        except TimeoutError:
            if not welcomed:
                return Ended(CLOSE_ABNORMAL, f"no welcome within {self.connect_timeout:g} s")
            return Ended(CLOSE_ABNORMAL, f"no data within {idle:g} s")

    async def _handle(self, data: str | bytes | dict[str, Any]) -> Welcome | None:
        """One message (a fallback's comes decoded): its events to the app, its reply to
        the waiting request. Returns the ``welcome`` if it was one."""
        try:
            msg = data if isinstance(data, dict) else self._codec.decode(data)
        except ValueError as err:
            await self._events.put(ServerError("client_decode", f"undecodable frame: {err}"))
            return None
        if not isinstance(msg, dict):
            return None
        events, reply = self._session.receive(msg)
        welcome: Welcome | None = None
        for event in events:
            if isinstance(event, Welcome):
                welcome = event
                await self._on_welcome()
            elif isinstance(event, Draining):
                self._reconnect.draining(asyncio.get_running_loop().time(), event.after_ms)
            elif isinstance(event, ServerError) and event.symbol and retryable(event):
                self._replay_later(event)
            await self._events.put(event)
        if reply is not None:
            self._settle(reply)
        return welcome

    async def _on_welcome(self) -> None:
        self._ready = True
        self._welcomed_here = True
        self._transports.welcomed()
        kind = self._transports.current
        if kind != (self.transport or "websocket"):
            reason = self._fallback_reason if kind != "websocket" else "the WebSocket got through again"
            await self._events.put(TransportChanged(kind, self.transport, reason))
        self.transport = kind
        self._reconnect.opened()
        await self._replay()
        while self._outbox and self._ready:
            await self._send(self._outbox.popleft())
        self._connected.set()

    def _finish(self) -> None:
        """The client stopped: nothing more will be sent or received."""
        self._stopping = True
        self._ready = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        err = self._closed_for_good or TickMeshError("closed", "client closed")
        for pending in [*self._pending.values(), *self._outbox]:
            if pending.timer is not None:
                pending.timer.cancel()
            _fail(pending.future, err)
        self._pending.clear()
        self._outbox.clear()
        self._finished = True
        self._connected.set()
        if self._last_event is not None:
            self._offer(self._last_event)
        self._offer(_END)


class _End:
    """Marks the end of the events."""


_END: Any = _End()


class connect:
    """Connects a :class:`Client` and waits for its first session.

    ``client = await tickmesh.connect(url, token=...)`` returns it connected (close it
    with ``await client.close()``); ``async with tickmesh.connect(url) as client:``
    closes it on the way out. Raises ``TimeoutError`` when no session opens within
    ``timeout`` seconds (the client retries with backoff until then), or
    :class:`ClosedError` when the gateway refuses the token for good. Keyword arguments
    are those of :class:`Client`.
    """

    def __init__(self, url: str, *, timeout: float | None = 30.0, **options: Any) -> None:
        self._client = Client(url, **options)
        self._timeout = timeout

    async def _open(self) -> Client:
        try:
            await self._client.wait_connected(self._timeout)
        except BaseException:
            await self._client.close()
            raise
        return self._client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        return await self._open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.close()


# ---- helpers --------------------------------------------------------------------------


def _retry_after(err: InvalidStatus) -> float | None:
    value = err.response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _fail(future: asyncio.Future[Any], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
