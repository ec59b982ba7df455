"""The client side of the protocol's guarantees: per-symbol seq checks that outlive
reconnects, and the accounting of every seq between two updates.

Pure state, no I/O: :class:`~tickmesh.session.Session` feeds these with decoded messages,
and a unit test can feed them frames directly.

- :class:`TickSeqs` passes a tick only if its ``seq`` is above the last one passed for its
  symbol (no duplicate, no reordering, no stale snapshot after a fresher tick, on this
  connection or the next), and accounts for each seq it skips: folded into the update
  (``from_seq``: conflated), told lost (``gap``, counted only for seqs the app has not
  had), passed over by a snapshot after a reconnect (skipped), or none of these
  (broken). A new ``epoch`` owes nothing.
- :class:`TapeSeqs` passes each print of a tape once, across reconnects: the history a
  replayed tape starts with overlaps what was delivered.
- :class:`BarTimes` passes each bar from the newest one delivered on, and never a bar
  after its ``final``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from .events import Bar, ContinuityBreak, Gap, Tick, Trade

K = TypeVar("K")
V = TypeVar("V")


def advance(last: dict[K, V], key: K, value: V, stale: Callable[[V], bool]) -> bool:
    """Keeps ``value`` as the newest of ``key`` unless the newest kept makes it stale."""
    kept = last.get(key)
    if kept is not None and stale(kept):
        return False
    last[key] = value
    return True


@dataclass
class Stats:
    """What the client saw, since it was created.

    ``ticks``: ticks and snapshots passed on; ``stale``: dropped as not newer than one
    passed (a duplicate, or a snapshot older than the live tick it follows);
    ``conflated``: ticks the gateway folded into the updates it sent; ``lost``: ticks it
    said never reached it (``gap``); ``skipped``: ticks a snapshot passed over after a
    reconnect (they went by while the client had no session; the snapshot's absolute
    state includes them); ``broken``: updates that skipped seqs neither folded nor told;
    ``prints``/``reprints``: trade prints passed on / dropped as delivered before;
    ``bars``/``rebars``: bars (and updates of bars) passed on / dropped as older than the
    newest delivered or after its ``final``; ``reconnects``: sessions opened after the
    first.
    """

    reconnects: int = 0
    ticks: int = 0
    stale: int = 0
    conflated: int = 0
    lost: int = 0
    skipped: int = 0
    broken: int = 0
    prints: int = 0
    reprints: int = 0
    bars: int = 0
    rebars: int = 0


@dataclass
class _Told:
    """Gaps told for a symbol since its last update: the highest seq named and how many."""

    to: int = 0
    n: int = 0


class TickSeqs:
    """Last seq and epoch per symbol, and the gaps told since."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.last: dict[str, int] = {}
        self._epoch: dict[str, int | None] = {}
        self._told: dict[str, _Told] = {}
        # Whether the last tick passed on per symbol was delayed (``delayed_ms``).
        self._delayed: dict[str, bool] = {}

    def _side(self, tick: Tick) -> None:
        """Forgets a symbol's seqs when its ticks move between real time and delayed: an
        ``auth`` that moves it starts it over from the other side's snapshot, whose seqs
        may be lower (delayed) or far higher (real time); nothing is owed across."""
        delayed = tick.delayed_ms is not None
        was = self._delayed.get(tick.symbol)
        self._delayed[tick.symbol] = delayed
        if was is not None and was != delayed:
            self.forget(tick.symbol)
            self._delayed[tick.symbol] = delayed

    def update(self, tick: Tick) -> tuple[bool, ContinuityBreak | None]:
        """A live update: whether to pass it on, and the break it shows, if any."""
        self._side(tick)
        had = self.last.get(tick.symbol)
        if not self._fresh(tick):
            return False, None
        told = self._told.pop(tick.symbol, None) or _Told()
        epoch = self._epoch.get(tick.symbol)
        self._epoch[tick.symbol] = tick.epoch
        if had is None or epoch != tick.epoch:
            return True, None
        between = tick.seq - had - 1
        start = tick.from_seq if tick.from_seq is not None else tick.seq
        expected = max(had, told.to) + 1
        unexplained = max(0, start - expected)
        self.stats.conflated += max(0, between - told.n - unexplained)
        if unexplained == 0:
            return True, None
        self.stats.broken += 1
        return True, ContinuityBreak(tick.symbol, tick.seq, start, had)

    def snapshot(self, tick: Tick) -> bool:
        """A snapshot: whether to pass it on. It folds nothing and owes nothing, but the
        seqs it passes over within an epoch (after a reconnect) are counted as skipped."""
        self._side(tick)
        had = self.last.get(tick.symbol)
        if not self._fresh(tick):
            return False
        told = self._told.pop(tick.symbol, None) or _Told()
        if had is not None and self._epoch.get(tick.symbol) == tick.epoch:
            self.stats.skipped += max(0, tick.seq - had - 1 - told.n)
        self._epoch[tick.symbol] = tick.epoch
        return True

    def gap(self, gap: Gap) -> Gap | None:
        """A gap told: the part of it the app has not had (after a reconnect the new
        session may tell of seqs that the old one delivered), or ``None``."""
        had = self.last.get(gap.symbol)
        if had is not None and self._epoch.get(gap.symbol) == gap.epoch and gap.from_seq <= had:
            if gap.to_seq <= had:
                return None
            gap = replace(gap, from_seq=had + 1)
        self.stats.lost += gap.count
        told = self._told.setdefault(gap.symbol, _Told())
        told.to = max(told.to, gap.to_seq)
        told.n += gap.count
        return gap

    def forget(self, symbol: str) -> None:
        """An unsubscribed symbol starts afresh when subscribed again."""
        self.last.pop(symbol, None)
        self._epoch.pop(symbol, None)
        self._told.pop(symbol, None)
        self._delayed.pop(symbol, None)

    def _fresh(self, tick: Tick) -> bool:
        if advance(self.last, tick.symbol, tick.seq, lambda last: tick.seq <= last):
            self.stats.ticks += 1
            return True
        self.stats.stale += 1
        return False


class TapeSeqs:
    """The seq of the last print passed on, per symbol."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.last: dict[str, int] = {}

    def admit(self, trade: Trade) -> bool:
        if advance(self.last, trade.symbol, trade.seq, lambda last: trade.seq <= last):
            self.stats.prints += 1
            return True
        self.stats.reprints += 1
        return False

    def forget(self, symbol: str) -> None:
        self.last.pop(symbol, None)


class BarTimes:
    """The start and finality of the newest bar passed on, per (symbol, timeframe)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.last: dict[tuple[str, str], tuple[int, bool]] = {}

    def admit(self, tf: str, bar: Bar) -> bool:
        def stale(last: tuple[int, bool]) -> bool:
            t, final = last
            return bar.t < t or (bar.t == t and final)

        if advance(self.last, (bar.symbol, tf), (bar.t, bar.final), stale):
            self.stats.bars += 1
            return True
        self.stats.rebars += 1
        return False

    def forget(self, symbol: str, tf: str) -> None:
        self.last.pop((symbol, tf), None)
