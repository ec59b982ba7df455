"""When to dial again after a connection ended: the gateway's drain notice says when;
a rate-limit close (4029) comes back slowly; anything else backs off with full jitter,
never sooner than an upgrade refusal's ``Retry-After``. A session that opened resets
the backoff. Terminal closes (4400-4499) are the client's to decide: they need a token."""

from __future__ import annotations

from dataclasses import dataclass

from .backoff import Backoff

CLOSE_DRAINING = 4001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_RATE_LIMITED = 4029
#: The WebSocket's "closed without a close frame" (RFC 6455): a dropped connection, or
#: none at all.
CLOSE_ABNORMAL = 1006


def is_terminal(code: int) -> bool:
    """4400-4499: terminal for the token that was used (4401 expired, 4403 revoked)."""
    return 4400 <= code <= 4499


@dataclass(frozen=True, slots=True)
class Ended:
    """How a connection, or an attempt at one, ended."""

    code: int
    reason: str
    #: The status of a refused upgrade (401, 429, 503, ...).
    http_status: int | None = None
    #: Its ``Retry-After``, seconds.
    retry_after: float | None = None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.code) or self.http_status == 401


class Reconnect:
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self._drain_until: float | None = None

    def draining(self, now: float, after_ms: int) -> None:
        """A ``reconnect`` notice: come back ``after_ms`` after it (``now``, seconds)."""
        self._drain_until = now + after_ms / 1000

    def opened(self) -> None:
        """A session opened: the next failure starts from the first ceiling again."""
        self.backoff.reset()
        self._drain_until = None

    def delay(self, ended: Ended, now: float) -> float:
        """Seconds to wait before the next attempt after ``ended`` (not terminal)."""
        if self._drain_until is not None:
            delay = max(0.0, self._drain_until - now)
            self._drain_until = None
            self.backoff.reset()  # a drain is not a failure
            return delay
        if ended.code == CLOSE_RATE_LIMITED:
            return self.backoff.slow_delay()
        return max(self.backoff.next_delay(), ended.retry_after or 0.0)


#: Upgrade refusals that are the gateway's answer, not a way blocked: a token refused
#: (401, 403), a limit (429) or a drain (503). Server-Sent Events would get the same.
GATEWAY_REFUSALS = frozenset((401, 403, 429, 503))

TRANSPORTS = ("websocket", "sse", "poll")


class Transports:
    """Which transport the next attempt uses. The first (the WebSocket) until
    ``fallback_after`` of its attempts in a row failed before their ``welcome``; from then
    on each further failed one is followed at once by the next transport, and so on down
    the list. A connection after one that opened, or after every transport failed,
    starts with the first again; a ``welcome`` on the first sets the count back to 0."""

    def __init__(self, kinds: tuple[str, ...] = TRANSPORTS, fallback_after: int = 2) -> None:
        unknown = [k for k in kinds if k not in TRANSPORTS]
        if not kinds or unknown or kinds[0] != "websocket":
            raise ValueError(f"transports start with 'websocket', among {TRANSPORTS}: not {kinds!r}")
        self.kinds = kinds
        self.fallback_after = fallback_after
        self.index = 0
        self.failed_in_a_row = 0

    @property
    def current(self) -> str:
        return self.kinds[self.index]

    def welcomed(self) -> None:
        if self.index == 0:
            self.failed_in_a_row = 0

    def ended(self, ended: Ended, welcomed: bool) -> bool:
        """The attempt ended; ``True``: the next transport is tried at once."""
        blocked = not welcomed and not ended.terminal and ended.code != CLOSE_DRAINING
        if self.index == 0:
            blocked = blocked and ended.http_status not in GATEWAY_REFUSALS
            if blocked:
                self.failed_in_a_row += 1
        fall_back = (
            blocked
            and self.index + 1 < len(self.kinds)
            and (self.index > 0 or self.failed_in_a_row >= self.fallback_after)
        )
        self.index = self.index + 1 if fall_back else 0
        return fall_back
