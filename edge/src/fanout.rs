//! The fan-out core: latest value per symbol, conflation per session, encode once.
//!
//! Plain synchronous code with time passed in: the runtime wraps one [`Fanout`] in a mutex,
//! NATS pumps call [`Fanout::publish`], and each session task calls [`Fanout::drain`] when
//! woken or when its next flush is due.
//!
//! Conflation state is the queue. A conflated subscription (interval > 0) is *armed* on
//! its symbol until the symbol changes; then it is marked dirty in its session's interval
//! group and disarmed, and re-armed when the session flushes it. A publish therefore
//! touches only the sessions that flushed since the previous tick of that symbol, and a
//! slow session costs memory bounded by its subscriptions, not by the tick rate.
//! Every-tick subscriptions (interval 0) queue shared tick pointers against a per-session
//! byte budget; past it the session is moved to conflation and told `slow_consumer`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_core::codec::encode_client;
use tickmesh_core::{Format, Mode, Symbol, Tick};

pub type SessionId = u64;

/// Most unsubscribed symbols whose last seq a session remembers.
const SEEN_CAP: usize = 4096;

/// How a session is woken when it has something to flush. A tokio `Notify` at run time,
/// a counter in tests.
pub trait Wake {
    fn wake(&self);
}

/// One decoded tick, shared by every session, with its client encodings built lazily,
/// once per (format, mode), by whichever session needs them first.
#[derive(Debug)]
pub struct SharedTick {
    pub tick: Tick,
    /// Size of the tick on the wire: the unit of the every-tick byte budget.
    pub wire_len: usize,
    live: [[OnceLock<Bytes>; 3]; 2],
    snapshot: [[OnceLock<Bytes>; 3]; 2],
}

impl SharedTick {
    pub fn new(tick: Tick, wire_len: usize) -> Self {
        SharedTick {
            tick,
            wire_len,
            live: Default::default(),
            snapshot: Default::default(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.tick.seq
    }

    /// The tick object for a `ticks` frame.
    pub fn encoded(&self, format: Format, mode: Mode) -> &Bytes {
        self.live[format.index()][mode.index()]
            .get_or_init(|| encode_client(&self.tick, format, mode, None).into())
    }

    /// The whole `snapshot` message.
    pub fn snapshot(&self, format: Format, mode: Mode) -> &Bytes {
        self.snapshot[format.index()][mode.index()]
            .get_or_init(|| encode_client(&self.tick, format, mode, Some("snapshot")).into())
    }
}

/// Limits of the core; see the edge config for their documentation.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Byte budget of a session's every-tick queue.
    pub live_budget_bytes: usize,
    /// Interval a session's every-tick subscriptions move to when over budget.
    pub slow_interval_ms: u32,
    /// Most ticks in one `ticks` frame.
    pub max_ticks_per_frame: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub mode: Mode,
    pub interval_ms: u32,
    /// Highest seq this session has been given for the symbol (snapshot included).
    last_seq: u64,
    dirty: bool,
    /// Subscribed while the edge had no value of the symbol: its snapshot comes with the
    /// symbol's first value, from KV or live.
    awaiting: bool,
}

#[derive(Debug)]
struct Group {
    interval_ms: u32,
    dirty: Vec<Symbol>,
    last_flush: Option<Instant>,
    /// A change came in before the group was due: its symbols change faster than its
    /// interval, so after the next flush the session keeps a timer for the one after,
    /// and changes meanwhile need not wake it.
    hot: bool,
}

impl Group {
    /// When the group must flush, if anything changed: `now` if it never flushed.
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.dirty.is_empty() {
            return None;
        }
        Some(self.next_flush().unwrap_or(now))
    }

    /// The earliest the group may flush again, if it ever flushed.
    fn next_flush(&self) -> Option<Instant> {
        let interval = Duration::from_millis(u64::from(self.interval_ms));
        self.last_flush.map(|t| t + interval)
    }
}

#[derive(Debug)]
struct Session<W> {
    waker: W,
    subs: HashMap<Symbol, Sub>,
    groups: Vec<Group>,
    live: VecDeque<(Arc<SharedTick>, Mode)>,
    live_bytes: usize,
    /// Interval the session was moved to, not yet told.
    slow_notice: Option<u32>,
    /// Last seq given for symbols the session unsubscribed from, so that subscribing
    /// again never repeats or goes back (bounded: cleared past [`SEEN_CAP`] entries).
    seen: HashMap<Symbol, u64>,
    wake_pending: bool,
    /// When the session will drain again by itself: the `next_due` of its last drain.
    timer: Option<Instant>,
    /// Awaited snapshots whose symbol now has a value: sent first at the next drain.
    snapshots: Vec<Symbol>,
}

impl<W: Wake> Session<W> {
    fn wake(&mut self) {
        if !self.wake_pending {
            self.wake_pending = true;
            self.waker.wake();
        }
    }

    fn group(&mut self, interval_ms: u32) -> &mut Group {
        let i = match self
            .groups
            .iter()
            .position(|g| g.interval_ms == interval_ms)
        {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    interval_ms,
                    dirty: Vec::new(),
                    last_flush: None,
                    hot: false,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }

    fn mark_dirty(&mut self, symbol: &Symbol) {
        let Some(sub) = self.subs.get_mut(symbol) else {
            return;
        };
        if sub.interval_ms == 0 || sub.dirty {
            return;
        }
        sub.dirty = true;
        let interval = sub.interval_ms;
        let timer = self.timer;
        let group = self.group(interval);
        group.dirty.push(symbol.clone());
        // A timer that fires by the time the group may flush anyway will drain it: no
        // need to wake the session now only to find the group not yet due.
        if let (Some(timer), Some(next)) = (timer, group.next_flush())
            && timer <= next
        {
            group.hot = true;
            return;
        }
        self.wake();
    }
}

#[derive(Debug, Default)]
struct Slot {
    latest: Option<Arc<SharedTick>>,
    /// Sessions subscribed to this symbol.
    count: usize,
    /// Conflated subscribers waiting for the next change. May hold stale or duplicate
    /// ids; they are checked when the symbol changes.
    armed: Vec<SessionId>,
    /// Every-tick subscribers.
    live: Vec<SessionId>,
    /// Sessions awaiting the symbol's next value as their snapshot: exactly those whose
    /// subscription is `awaiting` and not yet released (an unsubscribe takes its id out,
    /// so a client that subscribes and unsubscribes in a loop cannot grow it).
    awaiting: Vec<SessionId>,
    /// A KV read of the symbol is under way (see [`Fanout::offer_snapshot`]).
    fetching: bool,
}

/// What [`Fanout::subscribe`] changed.
#[derive(Debug)]
pub struct Subscribed {
    /// The symbol had no subscriber on this edge before: start carrying it.
    pub new_interest: bool,
    /// The session was not subscribed to the symbol before (not a change in place).
    pub new_subscription: bool,
    /// The edge's own latest value of the symbol, if it carries one. Without one the
    /// session awaits its snapshot, which comes out of [`Fanout::drain`].
    pub latest: Option<Arc<SharedTick>>,
    /// Nobody is reading the symbol's KV value yet: the caller must, and hand the result
    /// to [`Fanout::offer_snapshot`]. At most one read per symbol is under way.
    pub fetch: bool,
}

/// One `ticks` frame to send: shared ticks and the mode each is sent in.
pub type Frame = Vec<(Arc<SharedTick>, Mode)>;

/// What a session must send now.
#[derive(Debug, Default)]
pub struct Drained {
    /// Awaited snapshots, to send before the frames: the tick and the mode of each.
    pub snapshots: Vec<(Arc<SharedTick>, Mode)>,
    pub frames: Vec<Frame>,
    /// The session was moved to conflation at this interval (`slow_consumer`).
    pub slow_consumer: Option<u32>,
    /// When to drain again if nothing wakes the session first.
    pub next_due: Option<Instant>,
    /// Bytes that were waiting in the every-tick queue (for the queue-size histogram).
    pub queued_bytes: usize,
}

#[derive(Debug)]
pub struct Fanout<W> {
    config: FanoutConfig,
    symbols: HashMap<Symbol, Slot>,
    sessions: HashMap<SessionId, Session<W>>,
}

impl<W: Wake> Fanout<W> {
    pub fn new(config: FanoutConfig) -> Self {
        Fanout {
            config,
            symbols: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    pub fn add_session(&mut self, id: SessionId, waker: W) {
        self.sessions.insert(
            id,
            Session {
                waker,
                subs: HashMap::new(),
                groups: Vec::new(),
                live: VecDeque::new(),
                live_bytes: 0,
                slow_notice: None,
                seen: HashMap::new(),
                wake_pending: false,
                timer: None,
                snapshots: Vec::new(),
            },
        );
    }

    /// Removes a session; returns the symbols nobody on this edge wants any more.
    pub fn remove_session(&mut self, id: SessionId) -> Vec<Symbol> {
        let Some(session) = self.sessions.remove(&id) else {
            return Vec::new();
        };
        session
            .subs
            .into_iter()
            .filter_map(|(symbol, sub)| self.release(id, &symbol, sub).then_some(symbol))
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// The session's subscriptions, sorted by symbol.
    pub fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, Sub)> {
        let mut subs: Vec<_> = self
            .sessions
            .get(&id)
            .map(|s| s.subs.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs
    }

    pub fn is_subscribed(&self, id: SessionId, symbol: &str) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.subs.contains_key(symbol))
    }

    pub fn subscription_count(&self, id: SessionId) -> usize {
        self.sessions.get(&id).map_or(0, |s| s.subs.len())
    }

    /// Subscribes (or changes mode and interval in place).
    pub fn subscribe(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        mode: Mode,
        interval_ms: u32,
    ) -> Subscribed {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Subscribed {
                new_interest: false,
                new_subscription: false,
                latest: None,
                fetch: false,
            };
        };
        let slot = self.symbols.entry(symbol.clone()).or_default();
        let previous = session.subs.insert(
            symbol.clone(),
            Sub {
                mode,
                interval_ms,
                last_seq: 0,
                dirty: false,
                awaiting: false,
            },
        );
        let new_interest = match previous {
            None => {
                if let Some(seq) = session.seen.remove(symbol) {
                    session
                        .subs
                        .get_mut(symbol)
                        .expect("inserted just above")
                        .last_seq = seq;
                }
                slot.count += 1;
                slot.count == 1
            }
            Some(old) => {
                // Keep what the session already has; move between every-tick and conflated.
                let sub = session.subs.get_mut(symbol).expect("inserted just above");
                sub.last_seq = old.last_seq;
                sub.awaiting = old.awaiting;
                if old.interval_ms == 0 {
                    slot.live.retain(|&s| s != id);
                }
                if old.dirty && interval_ms > 0 {
                    // A pending update moves to the new interval's group; the old group
                    // skips its entry (the interval no longer matches).
                    sub.dirty = true;
                    if old.interval_ms != interval_ms {
                        session.group(interval_ms).dirty.push(symbol.clone());
                        session.wake();
                    }
                }
                false
            }
        };
        if previous.is_some_and(|old| old.interval_ms != interval_ms) {
            // Forget interval groups that no subscription uses any more.
            let subs = &session.subs;
            session.groups.retain(|g| {
                !g.dirty.is_empty() || subs.values().any(|s| s.interval_ms == g.interval_ms)
            });
        }
        if interval_ms == 0 {
            if !slot.live.contains(&id) {
                slot.live.push(id);
            }
        } else {
            slot.armed.push(id);
        }
        let mut fetch = false;
        if previous.is_none() && slot.latest.is_none() {
            session
                .subs
                .get_mut(symbol)
                .expect("inserted just above")
                .awaiting = true;
            slot.awaiting.push(id);
            fetch = !std::mem::replace(&mut slot.fetching, true);
        }
        Subscribed {
            new_interest,
            new_subscription: previous.is_none(),
            latest: slot.latest.clone(),
            fetch,
        }
    }

    /// The KV read started for a [`Subscribed::fetch`] finished: `candidate` becomes the
    /// symbol's latest value unless the edge already has a newer one, and every session
    /// awaiting a snapshot of the symbol gets it at its next drain. Returns how many
    /// sessions were served. If KV had no value (or could not be read), they keep waiting:
    /// the first live tick will be their snapshot.
    pub fn offer_snapshot(&mut self, symbol: &str, candidate: Option<Arc<SharedTick>>) -> usize {
        let Some(slot) = self.symbols.get_mut(symbol) else {
            return 0;
        };
        slot.fetching = false;
        if let Some(c) = candidate
            && slot.latest.as_ref().is_none_or(|l| l.seq() < c.seq())
        {
            slot.latest = Some(c);
        }
        if slot.latest.is_none() {
            return 0;
        }
        let waiting = std::mem::take(&mut slot.awaiting);
        let symbol = self
            .symbols
            .get_key_value(symbol)
            .map(|(k, _)| k.clone())
            .expect("slot looked up just above");
        waiting
            .into_iter()
            .filter(|&id| release_snapshot(&mut self.sessions, id, &symbol))
            .count()
    }

    /// Unsubscribes; returns true when nobody on this edge wants the symbol any more.
    pub fn unsubscribe(&mut self, id: SessionId, symbol: &str) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some((symbol, sub)) = session.subs.remove_entry(symbol) else {
            return false;
        };
        if session.seen.len() >= SEEN_CAP {
            session.seen.clear();
        }
        session.seen.insert(symbol.clone(), sub.last_seq);
        self.release(id, &symbol, sub)
    }

    fn release(&mut self, id: SessionId, symbol: &Symbol, sub: Sub) -> bool {
        let Some(slot) = self.symbols.get_mut(symbol) else {
            return false;
        };
        if sub.interval_ms == 0 {
            slot.live.retain(|&s| s != id);
        }
        if sub.awaiting {
            slot.awaiting.retain(|&s| s != id);
        }
        slot.count = slot.count.saturating_sub(1);
        if slot.count == 0 {
            self.symbols.remove(symbol);
            return true;
        }
        false
    }

    /// Offers a snapshot candidate (from KV) for a new subscription. Returns the tick to
    /// send as the snapshot, the fresher of `candidate` and the edge's own latest, if it is
    /// newer than anything the session already has.
    pub fn take_snapshot(
        &mut self,
        id: SessionId,
        symbol: &str,
        candidate: Option<Arc<SharedTick>>,
    ) -> Option<Arc<SharedTick>> {
        let slot = self.symbols.get_mut(symbol)?;
        if let Some(c) = &candidate
            && slot.latest.as_ref().is_none_or(|l| l.seq() < c.seq())
        {
            slot.latest = Some(c.clone());
        }
        let best = slot.latest.clone()?;
        let sub = self.sessions.get_mut(&id)?.subs.get_mut(symbol)?;
        if best.seq() <= sub.last_seq {
            // Subscribed again with nothing newer yet: the next tick is the snapshot.
            if !sub.awaiting {
                sub.awaiting = true;
                slot.awaiting.push(id);
            }
            return None;
        }
        sub.awaiting = false;
        sub.last_seq = best.seq();
        Some(best)
    }

    /// A tick arrived for its symbol. Stale ticks (seq not above the latest) are dropped.
    /// Returns false if the tick was dropped.
    pub fn publish(&mut self, tick: Arc<SharedTick>) -> bool {
        let Some((symbol, _)) = self.symbols.get_key_value(tick.tick.symbol.as_str()) else {
            return false;
        };
        let symbol = symbol.clone();
        let slot = self
            .symbols
            .get_mut(&symbol)
            .expect("slot looked up just above");
        if slot.latest.as_ref().is_some_and(|l| l.seq() >= tick.seq()) {
            return false;
        }
        slot.latest = Some(tick.clone());
        // A first value: it is the snapshot of whoever was waiting for one.
        for id in std::mem::take(&mut slot.awaiting) {
            release_snapshot(&mut self.sessions, id, &symbol);
        }

        for id in std::mem::take(&mut slot.armed) {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.mark_dirty(&symbol);
            }
        }
        let budget = self.config.live_budget_bytes;
        let mut overflowed = Vec::new();
        for &id in &slot.live {
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Some(sub) = session.subs.get(&symbol) else {
                continue;
            };
            session.live.push_back((tick.clone(), sub.mode));
            session.live_bytes += tick.wire_len;
            session.wake();
            if session.live_bytes > budget {
                overflowed.push(id);
            }
        }
        for id in overflowed {
            self.fall_back_to_conflation(id);
        }
        true
    }

    /// Moves every every-tick subscription of a slow session to conflation.
    fn fall_back_to_conflation(&mut self, id: SessionId) {
        let interval = self.config.slow_interval_ms;
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let queued: Vec<Symbol> = session
            .live
            .drain(..)
            .filter_map(|(t, _)| {
                self.symbols
                    .get_key_value(t.tick.symbol.as_str())
                    .map(|(k, _)| k.clone())
            })
            .collect();
        session.live_bytes = 0;
        session.slow_notice = Some(interval);
        let moved: Vec<Symbol> = session
            .subs
            .iter_mut()
            .filter(|(_, sub)| sub.interval_ms == 0)
            .map(|(symbol, sub)| {
                sub.interval_ms = interval;
                symbol.clone()
            })
            .collect();
        for symbol in &moved {
            if let Some(slot) = self.symbols.get_mut(symbol) {
                slot.live.retain(|&s| s != id);
                slot.armed.push(id);
            }
        }
        for symbol in &queued {
            session.mark_dirty(symbol);
        }
        session.wake();
    }

    /// Everything the session must send now, and when to come back.
    pub fn drain(&mut self, id: SessionId, now: Instant) -> Drained {
        let mut out = Drained::default();
        let Some(session) = self.sessions.get_mut(&id) else {
            return out;
        };
        session.wake_pending = false;
        out.slow_consumer = session.slow_notice.take();
        out.queued_bytes = session.live_bytes;
        let max = self.config.max_ticks_per_frame.max(1);

        // Awaited snapshots first: the latest value now, so that nothing queued for the
        // symbol before it goes out after it.
        for symbol in std::mem::take(&mut session.snapshots) {
            let Some(sub) = session.subs.get_mut(&symbol) else {
                continue;
            };
            if !std::mem::replace(&mut sub.awaiting, false) {
                continue;
            }
            let Some(slot) = self.symbols.get_mut(&symbol) else {
                continue;
            };
            let Some(latest) = &slot.latest else {
                continue;
            };
            if latest.seq() > sub.last_seq {
                sub.last_seq = latest.seq();
                out.snapshots.push((latest.clone(), sub.mode));
            } else {
                // Nothing newer than what the session had before it subscribed again: the
                // next tick is its snapshot, at once rather than at its next flush.
                sub.awaiting = true;
                slot.awaiting.push(id);
            }
        }

        // Every-tick queue: in order, skipping anything the session already has.
        let mut frame = Frame::new();
        while let Some((tick, mode)) = session.live.pop_front() {
            let Some(sub) = session.subs.get_mut(tick.tick.symbol.as_str()) else {
                continue;
            };
            if tick.seq() <= sub.last_seq {
                continue;
            }
            sub.last_seq = tick.seq();
            frame.push((tick, mode));
            if frame.len() == max {
                out.frames.push(std::mem::take(&mut frame));
            }
        }
        session.live_bytes = 0;

        // Conflated groups that are due: the latest value of each changed symbol.
        let mut next_due: Option<Instant> = None;
        let mut keep = |at: Instant| next_due = Some(next_due.map_or(at, |n| n.min(at)));
        for group in &mut session.groups {
            let Some(due) = group.due(now) else { continue };
            if due > now {
                group.hot = true;
                keep(due);
                continue;
            }
            for symbol in group.dirty.drain(..) {
                // Entries left by an unsubscribe or an interval change are stale.
                let Some(sub) = session.subs.get_mut(&symbol) else {
                    continue;
                };
                if !sub.dirty || sub.interval_ms != group.interval_ms {
                    continue;
                }
                sub.dirty = false;
                let Some(slot) = self.symbols.get_mut(&symbol) else {
                    continue;
                };
                slot.armed.push(id);
                let Some(latest) = &slot.latest else { continue };
                if latest.seq() > sub.last_seq {
                    sub.last_seq = latest.seq();
                    frame.push((latest.clone(), sub.mode));
                    if frame.len() == max {
                        out.frames.push(std::mem::take(&mut frame));
                    }
                }
            }
            group.last_flush = Some(now);
            if std::mem::take(&mut group.hot) {
                // It will most likely have changed again by its next flush: come back
                // then rather than be woken by the first change and sleep again.
                keep(now + Duration::from_millis(u64::from(group.interval_ms)));
            }
        }
        if !frame.is_empty() {
            out.frames.push(frame);
        }
        out.next_due = next_due;
        session.timer = next_due;
        out
    }
}

/// Queues an awaited snapshot of `symbol` for the session; false if it awaits none.
fn release_snapshot<W: Wake>(
    sessions: &mut HashMap<SessionId, Session<W>>,
    id: SessionId,
    symbol: &Symbol,
) -> bool {
    let Some(session) = sessions.get_mut(&id) else {
        return false;
    };
    if !session.subs.get(symbol).is_some_and(|s| s.awaiting) {
        return false;
    }
    session.snapshots.push(symbol.clone());
    session.wake();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);
    impl Wake for Counter {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    impl Counter {
        fn get(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn core() -> Fanout<Counter> {
        Fanout::new(FanoutConfig {
            live_budget_bytes: 1000,
            slow_interval_ms: 500,
            max_ticks_per_frame: 100,
        })
    }

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn tick(s: &str, seq: u64, last: f64) -> Arc<SharedTick> {
        Arc::new(SharedTick::new(
            Tick {
                symbol: s.into(),
                seq,
                last: Some(last),
                ..Tick::default()
            },
            100,
        ))
    }

    /// As if the session had had its snapshot (seq 0): what follows are live ticks.
    fn settled(f: &mut Fanout<Counter>, id: SessionId, symbol: &str) {
        let sub = f
            .sessions
            .get_mut(&id)
            .and_then(|s| s.subs.get_mut(symbol))
            .unwrap();
        sub.awaiting = false;
    }

    fn seqs(d: &Drained) -> Vec<(String, u64)> {
        d.frames
            .iter()
            .flatten()
            .map(|(t, _)| (t.tick.symbol.clone(), t.seq()))
            .collect()
    }

    #[test]
    fn interest_is_reference_counted() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.add_session(2, Counter::default());
        assert!(f.subscribe(1, &sym("AAPL"), Mode::Quote, 250).new_interest);
        assert!(!f.subscribe(2, &sym("AAPL"), Mode::Quote, 250).new_interest);
        assert!(
            !f.subscribe(2, &sym("AAPL"), Mode::Ltp, 0).new_interest,
            "resubscribe"
        );
        assert!(!f.unsubscribe(1, "AAPL"));
        assert_eq!(f.remove_session(2), vec![sym("AAPL")]);
        assert_eq!(f.symbol_count(), 0);
    }

    #[test]
    fn conflation_sends_latest_value_at_most_once_per_interval() {
        let mut f = core();
        let w = Counter::default();
        f.add_session(1, w.clone());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        let t0 = Instant::now();
        f.publish(tick("AAPL", 1, 1.0));
        assert_eq!(
            f.drain(1, t0).snapshots.len(),
            1,
            "the first value is the snapshot"
        );
        for seq in 2..=10 {
            assert!(f.publish(tick("AAPL", seq, seq as f64)));
        }
        assert_eq!(w.get(), 2, "one wake per flush, not per tick");
        // The snapshot counts as the first flush: the next update is an interval later.
        let d = f.drain(1, t0 + Duration::from_millis(10));
        assert!(d.frames.is_empty(), "not due yet");
        assert_eq!(d.next_due, Some(t0 + Duration::from_millis(250)));
        let d = f.drain(1, t0 + Duration::from_millis(250));
        assert_eq!(seqs(&d), [("AAPL".to_string(), 10)]);
        f.publish(tick("AAPL", 11, 11.0));
        f.publish(tick("AAPL", 12, 12.0));
        let d = f.drain(1, t0 + Duration::from_millis(350));
        assert!(d.frames.is_empty(), "not due yet");
        assert_eq!(d.next_due, Some(t0 + Duration::from_millis(500)));
        let d = f.drain(1, t0 + Duration::from_millis(500));
        assert_eq!(seqs(&d), [("AAPL".to_string(), 12)]);
    }

    #[test]
    fn a_hot_conflated_symbol_wakes_its_session_once_per_interval() {
        let mut f = core();
        let w = Counter::default();
        f.add_session(1, w.clone());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        f.offer_snapshot("AAPL", Some(tick("AAPL", 1, 1.0)));
        assert_eq!(f.drain(1, t0).snapshots.len(), 1);
        f.publish(tick("AAPL", 2, 2.0));
        assert_eq!(seqs(&f.drain(1, t0)), [("AAPL".to_string(), 2)]);
        // The first change after a flush wakes the session, which finds the group not
        // yet due and sleeps until it is.
        f.publish(tick("AAPL", 3, 3.0));
        assert_eq!(w.get(), 3);
        let d = f.drain(1, ms(10));
        assert!(d.frames.is_empty());
        assert_eq!(d.next_due, Some(ms(250)));
        // From then on the session flushes on its timer, which it keeps one interval
        // ahead: changes in between wake nobody.
        let mut seq = 3;
        for round in 1..=4u64 {
            let at = ms(250 * round);
            let d = f.drain(1, at);
            assert_eq!(seqs(&d), [("AAPL".to_string(), seq)], "round {round}");
            assert_eq!(d.next_due, Some(at + Duration::from_millis(250)));
            for _ in 0..5 {
                seq += 1;
                f.publish(tick("AAPL", seq, seq as f64));
            }
        }
        assert_eq!(w.get(), 3, "no wake while the timer covers the group");
        // A symbol that went quiet costs one more timer, then none.
        let d = f.drain(1, ms(1250));
        assert_eq!(seqs(&d), [("AAPL".to_string(), seq)]);
        let d = f.drain(1, ms(1500));
        assert!(d.frames.is_empty());
        assert_eq!(d.next_due, None);
        // Its next change, long after, wakes the session at once.
        f.publish(tick("AAPL", seq + 1, 0.0));
        assert_eq!(w.get(), 4);
        assert_eq!(seqs(&f.drain(1, ms(5000))), [("AAPL".to_string(), seq + 1)]);
    }

    #[test]
    fn a_slow_conflated_symbol_keeps_no_timer_between_changes() {
        let mut f = core();
        let w = Counter::default();
        f.add_session(1, w.clone());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        let t0 = Instant::now();
        f.offer_snapshot("AAPL", Some(tick("AAPL", 1, 1.0)));
        assert_eq!(f.drain(1, t0).snapshots.len(), 1);
        for (i, seq) in (2..=4u64).enumerate() {
            f.publish(tick("AAPL", seq, 0.0));
            assert_eq!(w.get(), i + 2, "each change wakes the session");
            let d = f.drain(1, t0 + Duration::from_secs(i as u64));
            assert_eq!(seqs(&d), [("AAPL".to_string(), seq)]);
            assert_eq!(
                d.next_due, None,
                "no timer for a symbol slower than the interval"
            );
        }
    }

    #[test]
    fn sessions_without_a_local_value_await_one_kv_read_per_symbol() {
        let mut f = core();
        let (w1, w2) = (Counter::default(), Counter::default());
        f.add_session(1, w1.clone());
        f.add_session(2, w2.clone());
        let a = f.subscribe(1, &sym("AAPL"), Mode::Quote, 0);
        let b = f.subscribe(2, &sym("AAPL"), Mode::Ltp, 250);
        assert!(
            a.latest.is_none() && a.fetch,
            "the first subscriber starts the read"
        );
        assert!(b.latest.is_none() && !b.fetch, "one read per symbol");
        assert!(
            f.drain(1, Instant::now()).snapshots.is_empty(),
            "nothing yet"
        );
        assert_eq!(f.offer_snapshot("AAPL", Some(tick("AAPL", 5, 5.0))), 2);
        assert_eq!((w1.get(), w2.get()), (1, 1), "both woken");
        for (id, mode) in [(1, Mode::Quote), (2, Mode::Ltp)] {
            let d = f.drain(id, Instant::now());
            let got: Vec<_> = d.snapshots.iter().map(|(t, m)| (t.seq(), *m)).collect();
            assert_eq!(got, [(5, mode)]);
            assert!(d.frames.is_empty());
        }
        // Then live ticks, and never the snapshot again.
        f.publish(tick("AAPL", 6, 6.0));
        let d = f.drain(1, Instant::now());
        assert!(d.snapshots.is_empty());
        assert_eq!(seqs(&d), [("AAPL".to_string(), 6)]);
        // A later subscriber finds the value locally.
        f.add_session(3, Counter::default());
        let c = f.subscribe(3, &sym("AAPL"), Mode::Quote, 0);
        assert_eq!(c.latest.map(|t| t.seq()), Some(6));
        assert!(!c.fetch);
    }

    #[test]
    fn a_live_tick_before_the_kv_read_is_the_snapshot() {
        let mut f = core();
        f.add_session(1, Counter::default());
        assert!(f.subscribe(1, &sym("AAPL"), Mode::Quote, 0).fetch);
        f.publish(tick("AAPL", 7, 7.0));
        f.publish(tick("AAPL", 8, 8.0));
        let d = f.drain(1, Instant::now());
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [8], "the latest value is the snapshot");
        assert!(
            seqs(&d).is_empty(),
            "the queued ticks it covers are not sent after it"
        );
        // The read comes back older than the live feed: it changes nothing.
        assert_eq!(f.offer_snapshot("AAPL", Some(tick("AAPL", 5, 5.0))), 0);
        assert!(f.drain(1, Instant::now()).snapshots.is_empty());
        f.publish(tick("AAPL", 9, 9.0));
        assert_eq!(seqs(&f.drain(1, Instant::now())), [("AAPL".to_string(), 9)]);
    }

    #[test]
    fn a_symbol_kv_does_not_hold_gets_its_first_live_tick_as_snapshot() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        assert_eq!(f.offer_snapshot("AAPL", None), 0, "still waiting");
        assert!(f.drain(1, Instant::now()).snapshots.is_empty());
        f.publish(tick("AAPL", 3, 3.0));
        let d = f.drain(1, Instant::now());
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [3]);
        assert!(seqs(&d).is_empty(), "not sent again as an update");
        // A session that left before its snapshot came is not served.
        f.add_session(2, Counter::default());
        f.subscribe(2, &sym("MSFT"), Mode::Quote, 0);
        f.unsubscribe(2, "MSFT");
        f.subscribe(2, &sym("SPY"), Mode::Quote, 0);
        f.add_session(3, Counter::default());
        f.subscribe(3, &sym("SPY"), Mode::Quote, 0);
        f.remove_session(2);
        assert_eq!(f.offer_snapshot("SPY", Some(tick("SPY", 1, 1.0))), 1);
    }

    #[test]
    fn subscribing_again_with_nothing_newer_gets_the_next_tick_as_snapshot_at_once() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.add_session(2, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 0);
        f.publish(tick("AAPL", 5, 5.0));
        let t0 = Instant::now();
        assert_eq!(f.drain(1, t0).snapshots.len(), 1);
        // Session 1 leaves AAPL and comes back while session 2 keeps it: nothing newer
        // than seq 5 yet, so no snapshot now...
        f.unsubscribe(1, "AAPL");
        let again = f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        assert_eq!(again.latest.map(|t| t.seq()), Some(5));
        assert!(f.take_snapshot(1, "AAPL", None).is_none());
        // ...and the next tick is its snapshot, not an update a 1000 ms interval away.
        f.publish(tick("AAPL", 6, 6.0));
        let d = f.drain(1, t0 + Duration::from_millis(10));
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [6]);
        assert!(d.frames.is_empty());
        // The same when the edge dropped the symbol and KV is behind the session.
        f.remove_session(2);
        f.unsubscribe(1, "AAPL");
        assert!(f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000).fetch);
        assert_eq!(f.offer_snapshot("AAPL", Some(tick("AAPL", 4, 4.0))), 1);
        assert!(
            f.drain(1, t0 + Duration::from_millis(20))
                .snapshots
                .is_empty()
        );
        f.publish(tick("AAPL", 7, 7.0));
        let d = f.drain(1, t0 + Duration::from_millis(30));
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [7]);
    }

    #[test]
    fn subscribing_and_unsubscribing_in_a_loop_leaves_no_waiter_behind() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.add_session(2, Counter::default());
        // Session 2 keeps the symbol (no value yet); session 1 churns on it.
        f.subscribe(2, &sym("QUIET"), Mode::Quote, 0);
        for _ in 0..1000 {
            f.subscribe(1, &sym("QUIET"), Mode::Quote, 250);
            f.unsubscribe(1, "QUIET");
        }
        assert_eq!(f.symbols["QUIET"].awaiting, [2]);
        assert_eq!(f.offer_snapshot("QUIET", Some(tick("QUIET", 1, 1.0))), 1);
    }

    #[test]
    fn one_frame_carries_every_changed_symbol_with_its_own_mode() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Ltp, 100);
        f.subscribe(1, &sym("MSFT"), Mode::Full, 100);
        f.publish(tick("AAPL", 1, 1.0));
        f.publish(tick("MSFT", 1, 1.0));
        let t0 = Instant::now();
        assert_eq!(f.drain(1, t0).snapshots.len(), 2);
        f.publish(tick("AAPL", 2, 2.0));
        f.publish(tick("MSFT", 2, 2.0));
        let d = f.drain(1, t0 + Duration::from_millis(100));
        assert_eq!(d.frames.len(), 1);
        let modes: Vec<_> = d.frames[0]
            .iter()
            .map(|(t, m)| (t.tick.symbol.as_str(), *m))
            .collect();
        assert!(modes.contains(&("AAPL", Mode::Ltp)) && modes.contains(&("MSFT", Mode::Full)));
    }

    #[test]
    fn every_tick_forwards_in_order_and_never_repeats_a_seq() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 0);
        let snap = f
            .take_snapshot(1, "AAPL", Some(tick("AAPL", 5, 5.0)))
            .unwrap();
        assert_eq!(snap.seq(), 5);
        for seq in [4, 5, 6, 7] {
            f.publish(tick("AAPL", seq, 0.0));
        }
        let d = f.drain(1, Instant::now());
        assert_eq!(seqs(&d), [("AAPL".into(), 6), ("AAPL".into(), 7)]);
    }

    #[test]
    fn snapshot_is_the_freshest_and_never_older_than_what_was_sent() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        f.publish(tick("AAPL", 9, 9.0));
        // KV is behind the live feed: the live value is the snapshot.
        assert_eq!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 3, 3.0)))
                .unwrap()
                .seq(),
            9
        );
        // The pending live tick 9 is not sent again.
        assert!(f.drain(1, Instant::now()).frames.is_empty());
        assert!(f.take_snapshot(1, "AAPL", None).is_none());
    }

    #[test]
    fn slow_every_tick_session_moves_fall_back_to_conflation_without_touching_others() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.add_session(2, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 0);
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 0);
        // KV's value (seq 0) was their snapshot; then live ticks.
        for id in [1, 2] {
            settled(&mut f, id, "AAPL");
        }
        let t0 = Instant::now();
        for seq in 1..=8 {
            f.publish(tick("AAPL", seq, 0.0));
            if seq % 2 == 0 {
                // Session 2 keeps up; session 1 never drains.
                assert_eq!(f.drain(2, t0).frames.concat().len(), 2);
            }
        }
        // 8 ticks × 100 bytes is under the 1000-byte budget; three more are over it.
        for seq in 9..=11 {
            f.publish(tick("AAPL", seq, 0.0));
        }
        let d = f.drain(1, t0);
        assert_eq!(d.slow_consumer, Some(500));
        assert_eq!(
            seqs(&d),
            [("AAPL".into(), 11)],
            "only the latest after the fallback"
        );
        assert_eq!(f.subscriptions(1)[0].1.interval_ms, 500);
        assert_eq!(f.subscriptions(2)[0].1.interval_ms, 0);
        f.publish(tick("AAPL", 12, 0.0));
        assert_eq!(
            seqs(&f.drain(2, t0)),
            [
                ("AAPL".into(), 9),
                ("AAPL".into(), 10),
                ("AAPL".into(), 11),
                ("AAPL".into(), 12)
            ]
        );
        f.publish(tick("AAPL", 13, 0.0));
        assert!(
            f.drain(1, t0 + Duration::from_millis(100))
                .frames
                .is_empty()
        );
        assert_eq!(
            seqs(&f.drain(1, t0 + Duration::from_millis(500))),
            [("AAPL".into(), 13)]
        );
    }

    #[test]
    fn memory_of_a_never_draining_conflated_session_is_bounded() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        for seq in 1..=100_000 {
            f.publish(tick("AAPL", seq, 0.0));
        }
        let s = &f.sessions[&1];
        assert_eq!(s.groups.iter().map(|g| g.dirty.len()).sum::<usize>(), 1);
        assert!(f.symbols["AAPL"].armed.is_empty());
    }

    #[test]
    fn encodes_once_per_format_and_mode() {
        let t = tick("AAPL", 1, 1.5);
        let a = t.encoded(Format::Json, Mode::Ltp).as_ptr();
        let b = t.encoded(Format::Json, Mode::Ltp).as_ptr();
        assert_eq!(a, b);
        assert_ne!(a, t.encoded(Format::MsgPack, Mode::Ltp).as_ptr());
    }

    #[test]
    fn resubscribing_never_repeats_or_goes_back_in_seq() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 100);
        settled(&mut f, 1, "AAPL");
        f.publish(tick("AAPL", 7, 7.0));
        assert_eq!(seqs(&f.drain(1, Instant::now())), [("AAPL".into(), 7)]);
        assert!(
            f.unsubscribe(1, "AAPL"),
            "last subscriber: the edge forgets AAPL"
        );
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 100);
        // KV (or a cache) still has seq 7 or older: no snapshot of it again.
        assert!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 7, 7.0)))
                .is_none()
        );
        assert!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 5, 5.0)))
                .is_none()
        );
        assert_eq!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 8, 8.0)))
                .unwrap()
                .seq(),
            8
        );
    }

    #[test]
    fn stale_group_entries_do_not_flush_after_an_interval_change() {
        let mut f = core();
        f.add_session(1, Counter::default());
        let t0 = Instant::now();
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 100);
        settled(&mut f, 1, "AAPL");
        f.publish(tick("AAPL", 1, 1.0));
        assert_eq!(f.drain(1, t0).frames.len(), 1);
        f.publish(tick("AAPL", 2, 2.0));
        // Pending in the 100 ms group; the subscription moves to 1000 ms.
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        let d = f.drain(1, t0 + Duration::from_millis(100));
        assert_eq!(
            seqs(&d),
            [("AAPL".into(), 2)],
            "the pending update is sent once, by the new group"
        );
        f.publish(tick("AAPL", 3, 3.0));
        assert!(
            f.drain(1, t0 + Duration::from_millis(200))
                .frames
                .is_empty(),
            "1000 ms now"
        );
        assert_eq!(
            seqs(&f.drain(1, t0 + Duration::from_millis(1100))),
            [("AAPL".into(), 3)]
        );
        // Unsubscribe with an update pending, subscribe again at once: no stray flush.
        f.publish(tick("AAPL", 4, 4.0));
        f.unsubscribe(1, "AAPL");
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        assert!(
            f.drain(1, t0 + Duration::from_millis(2100))
                .frames
                .is_empty()
        );
    }

    #[test]
    fn unsubscribed_symbols_stop() {
        let mut f = core();
        f.add_session(1, Counter::default());
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 0);
        f.subscribe(1, &sym("MSFT"), Mode::Quote, 0);
        f.unsubscribe(1, "AAPL");
        f.publish(tick("AAPL", 1, 0.0));
        f.publish(tick("MSFT", 1, 0.0));
        let d = f.drain(1, Instant::now());
        let snapshots: Vec<_> = d
            .snapshots
            .iter()
            .map(|(t, _)| t.tick.symbol.as_str())
            .collect();
        assert_eq!(snapshots, ["MSFT"]);
        f.publish(tick("AAPL", 2, 0.0));
        f.publish(tick("MSFT", 2, 0.0));
        assert_eq!(seqs(&f.drain(1, Instant::now())), [("MSFT".into(), 2)]);
    }
}
