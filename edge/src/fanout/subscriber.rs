//! What the fan-out core keeps per session: its subscriptions, its interval groups, and
//! what it remembers of the symbols it left. Every collection here is bounded by the
//! session's subscriptions (or, for the symbols it left, by `max_symbols`), however often
//! the client asks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickmesh_core::tick::State;
use tickmesh_core::{Mode, Symbol};

use super::{SharedTick, Wake};

/// The instants at which conflated subscriptions flush. With a shared clock (an origin),
/// the flushes of interval N fall on `origin + k·N + (slot/slots)·N`: sessions of one
/// interval and slot flush at the same instants and share what they send, and the
/// sessions are spread over `slots` instants per interval so that no instant wakes all of
/// them at once. Without a clock, each session keeps its own phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beats {
    pub origin: Option<Instant>,
    /// Instants per interval the sessions are spread over (at least 1).
    pub slots: u32,
    /// This session's.
    slot: u32,
}

impl Beats {
    pub fn shared(origin: Instant, slots: u32) -> Beats {
        Beats {
            origin: Some(origin),
            slots: slots.max(1),
            slot: 0,
        }
    }

    /// The flush instants of session `id`.
    pub fn of(self, id: u64) -> Beats {
        Beats {
            slot: (id % u64::from(self.slots.max(1))) as u32,
            ..self
        }
    }

    /// This session's origin for `interval_ms`, and the interval in ns.
    fn grid(self, interval_ms: u32) -> Option<(Instant, u128)> {
        let step = u128::from(interval_ms.max(1)) * 1_000_000;
        let offset = step * u128::from(self.slot) / u128::from(self.slots.max(1));
        Some((self.origin? + nanos(offset), step))
    }

    /// The first flush instant of `interval_ms` at or after `t` (`t` without a clock).
    pub fn up(self, t: Instant, interval_ms: u32) -> Instant {
        let Some((origin, step)) = self.grid(interval_ms) else {
            return t;
        };
        let since = t.saturating_duration_since(origin).as_nanos();
        origin + nanos(since.div_ceil(step) * step)
    }

    /// The last flush instant of `interval_ms` at or before `t` (`t` without a clock, or
    /// before the clock's first instant).
    pub fn down(self, t: Instant, interval_ms: u32) -> Instant {
        let Some((origin, step)) = self.grid(interval_ms) else {
            return t;
        };
        let Some(since) = t.checked_duration_since(origin) else {
            return t;
        };
        let since = since.as_nanos();
        origin + nanos(since / step * step)
    }

    pub fn is_shared(self) -> bool {
        self.origin.is_some()
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// How a subscription learns of its symbol's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    /// Every tick (interval 0): at this index in the slot's `live` list.
    Live(usize),
    /// Conflated, waiting for the symbol's next change: at this index in the slot's
    /// `armed` list.
    Armed(usize),
    /// Conflated, changed since its last update: in its interval group's dirty set.
    Dirty,
}

/// Where a subscription's snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Snap {
    /// Sent, or never owed (a change in place keeps what the session has).
    Sent,
    /// Owed, and the symbol has a value: in the session's `snapshots`, sent by
    /// `take_snapshot` or by the first drain at which the interval allows it.
    Ready,
    /// Owed, waiting for a value newer than what the session already has: at this index
    /// in the slot's `awaiting` list.
    Awaiting(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub mode: Mode,
    pub interval_ms: u32,
    /// Highest seq this session has been given for the symbol (snapshot included).
    pub(super) last_seq: u64,
    /// The epoch of that tick (0: not known, e.g. after the session left the symbol).
    pub(super) last_epoch: u64,
    /// The trading state of the latest tick given that had one.
    pub(super) last_state: Option<State>,
    /// When the session was last given the symbol. Nothing more goes out before this plus
    /// the interval, however the client re-subscribes: the tier's minimum is per symbol.
    pub(super) last_sent: Option<Instant>,
    pub(super) feed: Feed,
    pub(super) snap: Snap,
}

impl Sub {
    /// The earliest the session may be given the symbol again (a flush instant, with a
    /// shared clock), if that is still ahead.
    pub(super) fn held_until(&self, now: Instant, beats: Beats) -> Option<Instant> {
        if self.interval_ms == 0 {
            return None;
        }
        let at = self.last_sent? + Duration::from_millis(u64::from(self.interval_ms));
        let at = beats.up(at, self.interval_ms);
        (at > now).then_some(at)
    }

    /// The instant the session was last given the symbol: when it was drained, or the
    /// flush instant on the shared clock.
    pub fn given_at(&self) -> Option<Instant> {
        self.last_sent
    }

    /// The symbol's trading state as the session knows it.
    pub fn state(&self) -> Option<State> {
        self.last_state
    }

    pub(super) fn delivered(&mut self, tick: &SharedTick, now: Instant) {
        self.last_seq = tick.seq();
        self.last_epoch = tick.tick.epoch;
        self.last_state = tick.tick.state.or(self.last_state);
        self.last_sent = Some(now);
    }

    /// The symbol has a value the session has not had and its snapshot is behind it.
    pub(super) fn behind(&self, latest: Option<&Arc<SharedTick>>) -> bool {
        self.snap == Snap::Sent && latest.is_some_and(|l| l.seq() > self.last_seq)
    }
}

/// The conflated subscriptions of one session at one interval, flushed together.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) interval_ms: u32,
    pub(super) dirty: HashSet<Symbol>,
    /// Subscriptions at this interval; the group goes with the last of them.
    pub(super) members: usize,
    pub(super) last_flush: Option<Instant>,
    /// A change came in before the group was due: its symbols change faster than its
    /// interval, so after the next flush the session keeps a timer for the one after,
    /// and changes meanwhile need not wake it.
    pub(super) hot: bool,
}

impl Group {
    /// When the group must flush, if anything changed: `now` if it never flushed.
    pub(super) fn due(&self, now: Instant, beats: Beats) -> Option<Instant> {
        if self.dirty.is_empty() {
            return None;
        }
        Some(self.next_flush(beats).unwrap_or(now))
    }

    /// The earliest the group may flush again, if it ever flushed: an interval after its
    /// last flush (the first flush instant from then, with a shared clock).
    pub(super) fn next_flush(&self, beats: Beats) -> Option<Instant> {
        let interval = Duration::from_millis(u64::from(self.interval_ms));
        self.last_flush
            .map(|t| beats.up(t + interval, self.interval_ms))
    }
}

/// What a session keeps of a symbol it left, so that subscribing again neither repeats a
/// seq (guarantee 1) nor comes sooner than the interval allows (guarantee 2).
#[derive(Debug, Clone, Copy)]
pub(super) struct Left {
    pub(super) last_seq: u64,
    pub(super) last_sent: Option<Instant>,
    /// Its place in `left_order`.
    order: u64,
}

/// Bytes waiting in one session's every-tick queues, counted across every core that
/// holds some of its symbols (the runtime's shards): the byte budget is the session's,
/// however its symbols are spread.
#[derive(Debug, Clone, Default)]
pub struct Queued(Arc<AtomicUsize>);

#[derive(Debug)]
pub(super) struct Session<W> {
    pub(super) waker: W,
    pub(super) subs: HashMap<Symbol, Sub>,
    pub(super) groups: HashMap<u32, Group>,
    pub(super) live: VecDeque<(Arc<SharedTick>, Mode)>,
    /// Bytes in `live` (this core's share of `queued`).
    live_bytes: usize,
    queued: Queued,
    /// Interval the session was moved to, not yet told.
    pub(super) slow_notice: Option<u32>,
    /// Symbols the session left, at most `left_cap` of them (see [`Session::remember`]).
    pub(super) left: HashMap<Symbol, Left>,
    pub(super) left_cap: usize,
    /// `left` in the order the session left them, oldest first, with entries a later
    /// subscription took back (compacted once they outnumber the live ones): what goes
    /// first past the cap, found in O(1).
    pub(super) left_order: VecDeque<(Symbol, u64)>,
    left_next: u64,
    /// The session had to forget a symbol it left: subscriptions without a `left` entry
    /// then start from the core's `forgotten` floor and from `forgot_sent`.
    pub(super) forgetful: bool,
    /// Latest `last_sent` among the forgotten symbols.
    pub(super) forgot_sent: Option<Instant>,
    pub(super) wake_pending: bool,
    /// When the session will drain again by itself: the `next_due` of its last drain.
    pub(super) timer: Option<Instant>,
    /// Subscriptions whose snapshot is [`Snap::Ready`].
    pub(super) snapshots: HashSet<Symbol>,
}

impl<W: Wake> Session<W> {
    pub(super) fn new(waker: W, left_cap: usize, queued: Queued) -> Self {
        Session {
            waker,
            subs: HashMap::new(),
            groups: HashMap::new(),
            live: VecDeque::new(),
            live_bytes: 0,
            queued,
            slow_notice: None,
            left: HashMap::new(),
            left_cap,
            left_order: VecDeque::new(),
            left_next: 0,
            forgetful: false,
            forgot_sent: None,
            wake_pending: false,
            timer: None,
            snapshots: HashSet::new(),
        }
    }

    /// Queues a tick for every-tick delivery and wakes the session; returns the bytes the
    /// session has queued, all cores together.
    pub(super) fn enqueue(&mut self, tick: Arc<SharedTick>, mode: Mode) -> usize {
        let len = tick.wire_len;
        self.live.push_back((tick, mode));
        self.live_bytes += len;
        self.wake();
        self.queued.0.fetch_add(len, Ordering::Relaxed) + len
    }

    /// Empties the every-tick queue (drained, or dropped for conflation); returns the
    /// bytes it held.
    pub(super) fn clear_queue(&mut self) -> usize {
        self.live.clear();
        self.unqueued()
    }

    /// The queue was taken: its bytes no longer count against the budget.
    pub(super) fn unqueued(&mut self) -> usize {
        let bytes = std::mem::take(&mut self.live_bytes);
        self.queued.0.fetch_sub(bytes, Ordering::Relaxed);
        bytes
    }

    pub(super) fn wake(&mut self) {
        if !self.wake_pending {
            self.wake_pending = true;
            self.waker.wake();
        }
    }

    /// One more subscription at `interval_ms` (> 0); returns its group.
    pub(super) fn join_group(&mut self, interval_ms: u32) -> &mut Group {
        let group = self.groups.entry(interval_ms).or_insert_with(|| Group {
            interval_ms,
            dirty: HashSet::new(),
            members: 0,
            last_flush: None,
            hot: false,
        });
        group.members += 1;
        group
    }

    /// `symbol`'s subscription leaves its group at `interval_ms` (> 0).
    pub(super) fn leave_group(&mut self, interval_ms: u32, symbol: &str) {
        let Some(group) = self.groups.get_mut(&interval_ms) else {
            return;
        };
        group.dirty.remove(symbol);
        group.members = group.members.saturating_sub(1);
        if group.members == 0 {
            self.groups.remove(&interval_ms);
        }
    }

    /// An armed subscription's symbol changed: it joins its group's dirty set.
    pub(super) fn mark_dirty(&mut self, symbol: &Symbol, beats: Beats) {
        let Some(sub) = self.subs.get_mut(symbol) else {
            return;
        };
        if !matches!(sub.feed, Feed::Armed(_)) {
            return;
        }
        sub.feed = Feed::Dirty;
        let timer = self.timer;
        let Some(group) = self.groups.get_mut(&sub.interval_ms) else {
            return;
        };
        group.dirty.insert(symbol.clone());
        // A timer that fires by the time the group may flush anyway will drain it: no
        // need to wake the session now only to find the group not yet due.
        if let (Some(timer), Some(next)) = (timer, group.next_flush(beats))
            && timer <= next
        {
            group.hot = true;
            return;
        }
        self.wake();
    }

    /// The symbol has a value for an awaited snapshot: it goes out at the next drain.
    pub(super) fn snapshot_ready(&mut self, symbol: &Symbol) {
        let Some(sub) = self.subs.get_mut(symbol) else {
            return;
        };
        sub.snap = Snap::Ready;
        self.snapshots.insert(symbol.clone());
        self.wake();
    }

    /// Keeps what the session had of a symbol it leaves. Past `left_cap` entries the one
    /// it left longest ago is forgotten: its seq is folded into `forgotten` (the core's
    /// per-symbol floor for sessions that forgot) and the session becomes forgetful, so
    /// that a client cycling through more symbols than it may hold costs itself (later
    /// snapshots), never the edge's memory or the guarantees. O(1) amortized.
    pub(super) fn remember(
        &mut self,
        symbol: Symbol,
        sub: &Sub,
        forgotten: &mut HashMap<Symbol, u64>,
    ) {
        if sub.last_seq == 0 && sub.last_sent.is_none() {
            return;
        }
        let order = self.left_next;
        self.left_next += 1;
        self.left_order.push_back((symbol.clone(), order));
        self.left.insert(
            symbol,
            Left {
                last_seq: sub.last_seq,
                last_sent: sub.last_sent,
                order,
            },
        );
        while self.left.len() > self.left_cap {
            let Some((oldest, order)) = self.left_order.pop_front() else {
                break;
            };
            if self.left.get(&oldest).is_none_or(|l| l.order != order) {
                continue; // taken back by a subscription since
            }
            let Some(left) = self.left.remove(&oldest) else {
                break;
            };
            let floor = forgotten.entry(oldest).or_insert(0);
            *floor = (*floor).max(left.last_seq);
            self.forgot_sent = self.forgot_sent.max(left.last_sent);
            self.forgetful = true;
        }
        if self.left_order.len() > 2 * self.left.len() + 16 {
            let left = &self.left;
            self.left_order
                .retain(|(s, order)| left.get(s).is_some_and(|l| l.order == *order));
        }
    }

    /// What a new subscription to `symbol` starts from: the seq the session already has
    /// and when it was given it.
    pub(super) fn recall(
        &mut self,
        symbol: &str,
        forgotten: &HashMap<Symbol, u64>,
    ) -> (u64, Option<Instant>) {
        if let Some(left) = self.left.remove(symbol) {
            return (left.last_seq, left.last_sent);
        }
        if self.forgetful {
            let floor = forgotten.get(symbol).copied().unwrap_or(0);
            return (floor, self.forgot_sent);
        }
        (0, None)
    }
}
