"""Exponential backoff with full jitter: the delay before retry ``n`` is uniform in
``[0, min(cap, base * 2**n))``, so clients cut off together do not come back together."""

from __future__ import annotations

from collections.abc import Callable


def full_jitter(attempt: int, base: float, cap: float, r: float) -> float:
    """The delay (seconds) for retry number ``attempt`` (0 for the first), ``r`` in [0, 1)."""
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling * min(max(r, 0.0), 1.0)


class Backoff:
    """Consecutive failed attempts since the last session that opened."""

    def __init__(self, base: float, cap: float, random: Callable[[], float]) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, not base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._random = random

    def next_delay(self) -> float:
        """The next delay; each call doubles the ceiling, up to the cap."""
        delay = full_jitter(self.attempt, self.base, self.cap, self._random())
        self.attempt += 1
        return delay

    def slow_delay(self) -> float:
        """After a rate-limit close (4029): in the upper half of the cap."""
        self.attempt += 1
        return self.cap * (0.5 + self._random() / 2)

    def reset(self) -> None:
        """A session opened: the next failure starts from the first ceiling again."""
        self.attempt = 0
