"""The connections the client falls back on where no WebSocket gets through (a proxy
that strips or refuses upgrades): Server-Sent Events (``GET /v1/sse``), then polling
(``GET /v1/snapshot``). Each stands in for the WebSocket in :class:`~tickmesh.client.Client`
(``recv``, ``request``, ``close``): it answers the client's requests as the gateway would
and hands it the gateway's messages, so that the session's seq checks, accounting and
replay work unchanged.

Both carry tick subscriptions (``symbols``, and over SSE ``chains``); a ``trades``,
``bars`` or account subscription, ``auth``, ``chains`` and unknown ops are refused with
``error`` ``bad_request`` (the client keeps the subscriptions and asks for them again on
its next WebSocket). One stream carries every symbol, so each gets the richest mode and
the shortest interval asked of any. A fallback connection ends with 1000 after
``retry_websocket`` seconds, for the WebSocket to be tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as _ssl
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import httpget
from .eventstream import EventStream
from .registry import TickSub

#: Gateway messages read ahead of the client; past it the stream is not read (the
#: gateway then sees a slow consumer, as with a WebSocket). Replies come on top, one per
#: request.
READ_AHEAD = 64
MODE_RANK = {"ltp": 0, "quote": 1, "full": 2}


class LinkClosed(Exception):
    """The fallback connection ended: a close code and reason, as a WebSocket's."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Refused(Exception):
    """The connection could not be opened: an HTTP status (``None``: no answer)."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def http_url(url: str, path: str, query: dict[str, str] | None = None) -> str:
    """``path`` on the HTTP side of stream URL ``url`` (``ws:`` → ``http:``, ``wss:`` →
    ``https:``)."""
    u = urlsplit(url)
    scheme = "https" if u.scheme == "wss" else "http"
    return urlunsplit((scheme, u.netloc, path, urlencode(query or {}, safe=","), ""))


class Fallback:
    transport = ""
    carries_chains = False

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        retry_websocket: float,
        timeout: float,
        ssl: _ssl.SSLContext | bool | None = None,
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._retry_websocket = retry_websocket
        self._timeout = timeout
        self._ssl = ssl
        self.symbols: dict[str, TickSub] = {}
        self.chains: dict[str, TickSub] = {}
        #: Subscribes waiting for what the next stream or poll accepts.
        self.waiting: list[dict[str, Any]] = []
        self._inbox: asyncio.Queue[dict[str, Any] | LinkClosed] = asyncio.Queue()
        self._taken = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._ended = False

    # ---- what the client calls ----------------------------------------------------

    async def recv(self) -> dict[str, Any]:
        item = await self._inbox.get()
        self._taken.set()
        if isinstance(item, LinkClosed):
            self._inbox.put_nowait(item)  # and again, for any later call
            raise item
        return item

    async def request(self, req: dict[str, Any]) -> None:
        match req.get("op"):
            case "subscribe":
                self._subscribe(req)
            case "unsubscribe":
                self._unsubscribe(req)
            case "ping":
                self._reply({"type": "pong", "id": req["id"]})
            case "list":
                held = self.symbols.items()
                subs = [{"symbol": s, "mode": t.mode, "interval_ms": t.interval_ms} for s, t in held]
                self._reply({"type": "subscriptions", "id": req["id"], "subscriptions": subs})
            case op:
                self._refuse(req, f"{op} needs a WebSocket")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.abort()

    def abort(self) -> None:
        self._ended = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for task in self._tasks:
            task.cancel()
        self._stop()

    # ---- shared -------------------------------------------------------------------

    def _opened(self) -> None:
        self._retry = asyncio.get_running_loop().call_later(
            self._retry_websocket, self._end_now, LinkClosed(1000, "trying the WebSocket again")
        )

    def _end_now(self, why: LinkClosed) -> None:
        """Ends at once: what was not read yet is dropped, as a closed socket's."""
        if self._ended:
            return
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._inbox.put_nowait(why)
        self.abort()

    async def _deliver(self, msg: dict[str, Any] | LinkClosed) -> None:
        """A message of the gateway's, in order, waiting while the client is behind."""
        while self._inbox.qsize() >= READ_AHEAD:
            self._taken.clear()
            await self._taken.wait()
        if not self._ended:
            self._inbox.put_nowait(msg)
        if isinstance(msg, LinkClosed):
            self._ended = True

    def _reply(self, msg: dict[str, Any]) -> None:
        self._inbox.put_nowait(msg)

    def _refuse(self, req: dict[str, Any], message: str) -> None:
        self._reply({"type": "error", "id": req["id"], "code": "bad_request", "message": message})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _subscribe(self, req: dict[str, Any]) -> None:
        stream = req.get("stream", "ticks")
        if req.get("account") or stream != "ticks":
            what = "an account" if req.get("account") else stream
            return self._refuse(req, f"{what} subscription needs a WebSocket")
        if req.get("chains") and not self.carries_chains:
            return self._refuse(req, "chains need a stream (WebSocket or SSE)")
        sub = TickSub(req.get("mode", "quote"), req.get("interval_ms", 250))
        self.symbols.update((s, sub) for s in req.get("symbols") or ())
        self.chains.update((c, sub) for c in req.get("chains") or ())
        self.waiting.append(req)
        self._changed()

    def _unsubscribe(self, req: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "unsubscribed", "id": req["id"], "symbols": []}
        if req.get("account"):
            reply["account"] = req["account"]
        elif req.get("stream", "ticks") == "ticks":
            reply["symbols"] = [s for s in req.get("symbols") or () if self.symbols.pop(s, None)]
            chains = [c for c in req.get("chains") or () if self.chains.pop(c, None)]
            if chains:
                reply["chains"] = chains
            self._changed()
        self._reply(reply)

    def _merged(self) -> tuple[str, int]:
        """The richest mode and the shortest interval of what is held."""
        subs = [*self.symbols.values(), *self.chains.values()]
        if not subs:
            return "quote", 250
        mode = max((s.mode for s in subs), key=lambda m: MODE_RANK.get(m, 1))
        return mode, min(s.interval_ms for s in subs)

    def _answer(self, accepted: list[str], interval_ms: int, mode: str) -> list[dict[str, Any]]:
        """The ``subscribed`` replies of the waiting subscribes: each gets its own symbols
        among those accepted (and, for chains, the options they expanded to)."""
        plain = set(self.symbols)
        replies = []
        for req in self.waiting:
            asked = set(req.get("symbols") or ())
            symbols = [s for s in accepted if s in asked or (req.get("chains") and s not in plain)]
            reply = {"type": "subscribed", "id": req["id"], "symbols": symbols, "interval_ms": interval_ms}
            reply["mode"] = mode
            if req.get("chains"):
                reply["chains"] = req["chains"]
            replies.append(reply)
        self.waiting.clear()
        return replies

    def _asked_by(self, symbol: str | None) -> int | None:
        """The waiting subscribe an ``error`` about ``symbol`` belongs to."""
        for req in self.waiting:
            if symbol and symbol in (req.get("symbols") or ()):
                return int(req["id"])
        return int(self.waiting[0]["id"]) if self.waiting else None

    async def _get(self, path: str, query: dict[str, str] | None = None) -> httpget.Response:
        async with asyncio.timeout(self._timeout):
            return await httpget.get(http_url(self.url, path, query), self._headers, self._ssl)

    def _changed(self) -> None:
        pass

    def _stop(self) -> None:
        pass


def _refused(status: int, body: bytes, headers: dict[str, str]) -> Refused:
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
        text = parsed.get("message", text) if isinstance(parsed, dict) else text
    except ValueError:
        pass
    try:
        retry_after = float(headers["retry-after"]) if "retry-after" in headers else None
    except ValueError:
        retry_after = None
    return Refused(text or f"HTTP {status}", status, retry_after)


class SseLink(Fallback):
    """A session over Server-Sent Events, opened again (with the new query) when what it
    holds changes."""

    transport = "sse"
    carries_chains = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stream: httpget.Response | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reopen: asyncio.Handle | None = None
        self._welcomed = False
        #: Subscriptions changed since the query of the stream open (or opening).
        self._dirty = False
        self._opening = False

    async def open(self) -> None:
        """Opens the first stream; :class:`Refused` when it gets no event stream."""
        await self._open_stream()
        self._opened()

    def _query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self.symbols:
            query["symbols"] = ",".join(self.symbols)
        if self.chains:
            query["chains"] = ",".join(self.chains)
        if query:
            mode, interval_ms = self._merged()
            query.update(mode=mode, interval_ms=str(interval_ms))
        return query

    async def _open_stream(self) -> None:
        try:
            res = await self._get("/v1/sse", self._query())
        except (OSError, TimeoutError, httpget.HttpError, asyncio.IncompleteReadError) as err:
            raise Refused(f"no event stream: {err or type(err).__name__}") from err
        if res.status != 200 or "text/event-stream" not in res.headers.get("content-type", ""):
            try:
                async with asyncio.timeout(self._timeout):
                    body = await res.body(64 * 2**10)
            except (OSError, TimeoutError, httpget.HttpError, asyncio.IncompleteReadError, ValueError):
                body = b""
            finally:
                res.close()
            raise _refused(res.status, body, res.headers)
        self._stream = res
        reader = asyncio.get_running_loop().create_task(self._read(res))
        self._reader = reader
        self._tasks.add(reader)
        reader.add_done_callback(self._tasks.discard)

    async def _read(self, res: httpget.Response) -> None:
        parser = EventStream()
        why = LinkClosed(1006, "the event stream ended")
        try:
            async for data in res.chunks():
                for name, payload in parser.feed(data):
                    if not await self._event(name, json.loads(payload)):
                        return
        except (OSError, httpget.HttpError, asyncio.IncompleteReadError, ValueError) as err:
            why = LinkClosed(1006, f"the event stream failed: {err or type(err).__name__}")
        if res is self._stream:
            await self._deliver(why)

    async def _event(self, name: str, msg: Any) -> bool:
        """One event of the current stream; ``False`` once it closed the connection."""
        if not isinstance(msg, dict):
            return True
        match name:
            case "close":
                await self._deliver(LinkClosed(int(msg.get("code", 1006)), str(msg.get("reason", ""))))
                return False
            case "welcome":
                # A stream opened again for new subscriptions welcomes again: not passed on.
                if self._welcomed:
                    return True
                self._welcomed = True
            case "subscribed":
                accepted = list(msg.get("symbols") or ())
                for reply in self._answer(accepted, msg.get("interval_ms", 250), msg.get("mode", "quote")):
                    await self._deliver(reply)
                return True
            case "error" if msg.get("id") is not None:
                # Refused for good: not asked for again when the stream opens anew.
                if msg.get("symbol") and msg.get("code") != "unavailable":
                    self.symbols.pop(msg["symbol"], None)
                asked = self._asked_by(msg.get("symbol"))
                msg = {k: v for k, v in msg.items() if k != "id"}
                if asked is not None:
                    msg["id"] = asked
        await self._deliver(msg)
        return True

    def _changed(self) -> None:
        # A burst of requests (the client's replay after `welcome`) opens one stream; a
        # change while a stream is opening opens another once it is open.
        self._dirty = True
        if self._reopen is None and not self._opening:
            self._reopen = asyncio.get_running_loop().call_soon(self._spawn_reopen)

    def _spawn_reopen(self) -> None:
        self._reopen = None
        if not self._ended:
            self._spawn(self._reopen_stream())

    async def _reopen_stream(self) -> None:
        self._opening = True
        try:
            while self._dirty and not self._ended:
                self._dirty = False
                self._close_stream()
                await self._open_stream()
        except Refused as err:
            await self._deliver(LinkClosed(1006, f"the event stream failed: {err.reason}"))
        finally:
            self._opening = False

    def _close_stream(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._close_stream()


class PollLink(Fallback):
    """Polling: the held symbols' snapshots from ``GET /v1/snapshot`` every
    ``max(poll_interval, interval_ms)``, each passed on as a ``snapshot``."""

    transport = "poll"

    def __init__(self, *args: Any, poll_interval: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._poll_interval = poll_interval
        self._poke = asyncio.Event()

    async def open(self) -> None:
        """Opens once the gateway's ``/readyz`` answers 200 (:class:`Refused` if not)."""
        try:
            res = await self._get("/readyz")
            res.close()
        except (OSError, TimeoutError, httpget.HttpError, asyncio.IncompleteReadError) as err:
            raise Refused(f"no answer over HTTP: {err or type(err).__name__}") from err
        if res.status != 200:
            raise Refused(f"the gateway is not ready (HTTP {res.status})", res.status)
        self._opened()
        # No session on the gateway: heartbeat_ms 0 turns the client's watch for silence off.
        host = urlsplit(self.url).netloc
        welcome = {"protocol": 1, "session": "poll", "edge": host, "heartbeat_ms": 0, "limits": {}}
        self._reply({"type": "welcome", **welcome})
        self._spawn(self._loop())

    def _changed(self) -> None:
        self._poke.set()

    async def _loop(self) -> None:
        while not self._ended:
            wait = await self._poll()
            if wait is None:
                return
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._poke.wait()

    async def _poll(self) -> float | None:
        """One poll; the seconds until the next, ``None`` once the connection ended."""
        mode, interval_ms = self._merged()
        every = max(self._poll_interval, interval_ms / 1000)
        if not self.symbols:
            for reply in self._answer([], int(every * 1000), mode):
                await self._deliver(reply)
            return every
        query = {"symbols": ",".join(self.symbols), "mode": mode}
        try:
            res = await self._get("/v1/snapshot", query)
            try:
                async with asyncio.timeout(self._timeout):
                    raw = await res.body()
            finally:
                res.close()
            body = json.loads(raw) if raw else {}
        except (OSError, TimeoutError, httpget.HttpError, asyncio.IncompleteReadError, ValueError) as err:
            await self._deliver(LinkClosed(1006, f"polling failed: {err or type(err).__name__}"))
            return None
        if not isinstance(body, dict):
            body = {}
        if res.status == 401:
            await self._deliver(LinkClosed(4401, str(body.get("message") or "unauthorized")))
            return None
        if res.status != 200:
            # Over the rate, or the gateway cannot serve yet: asked again when it says.
            if res.status in (429, 503):
                return max(every, (body.get("retry_ms") or 0) / 1000)
            await self._deliver(LinkClosed(1006, f"polling answered {res.status}"))
            return None
        errors = [e for e in body.get("errors") or () if isinstance(e, dict)]
        for e in errors:
            if e.get("symbol") and e.get("code") != "unavailable":
                self.symbols.pop(e["symbol"], None)
        accepted = list(self.symbols)
        for e in errors:
            # A value not read in time comes with the next poll.
            if e.get("code") != "unavailable":
                asked = self._asked_by(e.get("symbol"))
                await self._deliver({"type": "error", **e, **({"id": asked} if asked is not None else {})})
        for reply in self._answer(accepted, int(every * 1000), mode):
            await self._deliver(reply)
        for tick in body.get("snapshots") or ():
            await self._deliver({"type": "snapshot", **tick})
        return every
