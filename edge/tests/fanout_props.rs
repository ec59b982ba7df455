//! Property test of the fan-out core: random sequences of what sessions and the feed do
//! (join, subscribe, subscribe again in place, unsubscribe, publish, KV offers that may
//! lag, drain, leave) with time advancing, checking after every step what a client or
//! an operator would notice:
//! - guarantee 1: no seq at or below one already given, per session and symbol, across
//!   re-subscriptions;
//! - guarantee 2: a conflated subscription gets at most one update (or snapshot) per
//!   interval, across re-subscriptions, interval changes and unsubscribe/subscribe cycles;
//! - nothing of a symbol the session does not hold;
//! - the core's collections bounded by the live subscriptions (the symbols a session
//!   left by its `max_symbols`), however often clients ask.
//!
//! The same sequences drive one core alone and the runtime's sharded core, whose sessions
//! span shards, each with every session on its own phase and on the shared flush clock:
//! all must keep the same promises. On the shared clock a flush is cut at its instant
//! (`origin + k·N`, shifted by the session's slot) and may be drained a little after it: there, guarantee 2 holds
//! between the flush instants of two updates.

#![allow(clippy::unwrap_used)] // a failed setup is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tickmesh_core::{Mode, Symbol, Tick};
use tickmesh_edge::fanout::{
    Beats, Drained, Fanout, FanoutConfig, Footprint, Gap, SessionId, SharedTick, Sub, Subscribed,
    TickSink, Upstream, Wake,
};
use tickmesh_edge::runtime::{Member, Runtime};

const SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "SPY", "TSLA"];
const INTERVALS: [u32; 6] = [0, 0, 100, 250, 1000, 1001];
const MODES: [Mode; 3] = [Mode::Ltp, Mode::Quote, Mode::Full];
const MAX_SYMBOLS: usize = 2;
const WIRE_LEN: usize = 100;
const BUDGET: usize = 800;
/// Shards of the runtime under test: more than one, fewer than the symbols.
const SHARDS: usize = 3;

#[derive(Clone)]
struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

/// The runtime's pumps: none, the test publishes.
struct NoUpstream;
impl Upstream for NoUpstream {
    type Pump = ();
    fn start_pump(&self, _: std::sync::Weak<dyn TickSink>, _: Symbol) {}
}

fn config(beats: Beats) -> FanoutConfig {
    FanoutConfig {
        live_budget_bytes: BUDGET,
        slow_interval_ms: 250,
        max_ticks_per_frame: 3,
        beats,
    }
}

/// What the model drives: one core, or the sharded runtime.
trait Core {
    fn join(&mut self) -> SessionId;
    fn leave(&mut self, id: SessionId);
    /// Subscribes as the session glue does; the snapshot, if one goes out at once.
    fn subscribe(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        how: (Mode, u32),
        now: Instant,
    ) -> (Subscribed, Option<Arc<SharedTick>>);
    fn unsubscribe(&mut self, id: SessionId, symbol: &str);
    fn publish(&mut self, tick: Arc<SharedTick>);
    fn offer(&mut self, symbol: &str, candidate: Option<Arc<SharedTick>>);
    fn drain(&mut self, id: SessionId, now: Instant) -> Drained;
    fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, Sub)>;
    fn footprint(&self) -> Footprint;
    /// How many cores a session may have an entry in.
    fn shards(&self) -> usize;
}

/// One core alone, with the ids the model hands out.
struct Alone(Fanout<NoWake>, SessionId);

impl Core for Alone {
    fn join(&mut self) -> SessionId {
        self.1 += 1;
        self.0.add_session(self.1, NoWake, MAX_SYMBOLS);
        self.1
    }
    fn leave(&mut self, id: SessionId) {
        self.0.remove_session(id);
    }
    fn subscribe(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        (mode, interval_ms): (Mode, u32),
        now: Instant,
    ) -> (Subscribed, Option<Arc<SharedTick>>) {
        let out = self.0.subscribe(id, symbol, mode, interval_ms);
        // As the runtime does: a snapshot for new subscriptions only.
        let snapshot = (out.new_subscription && out.latest.is_some())
            .then(|| self.0.take_snapshot(id, symbol.as_str(), None, now))
            .flatten();
        (out, snapshot)
    }
    fn unsubscribe(&mut self, id: SessionId, symbol: &str) {
        self.0.unsubscribe(id, symbol);
    }
    fn publish(&mut self, tick: Arc<SharedTick>) {
        self.0.publish(tick);
    }
    fn offer(&mut self, symbol: &str, candidate: Option<Arc<SharedTick>>) {
        self.0.offer_snapshot(symbol, candidate);
    }
    fn drain(&mut self, id: SessionId, now: Instant) -> Drained {
        self.0.drain(id, now)
    }
    fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, Sub)> {
        self.0.subscriptions(id)
    }
    fn footprint(&self) -> Footprint {
        self.0.footprint()
    }
    fn shards(&self) -> usize {
        1
    }
}

/// The sharded runtime, with the places of its sessions.
struct Sharded(
    Arc<Runtime<NoUpstream, NoWake>>,
    HashMap<SessionId, Member<NoWake>>,
);

impl Core for Sharded {
    fn join(&mut self) -> SessionId {
        let member = self.0.join(NoWake, MAX_SYMBOLS as u32);
        let id = member.id();
        self.1.insert(id, member);
        id
    }
    fn leave(&mut self, id: SessionId) {
        if let Some(member) = self.1.remove(&id) {
            self.0.leave(&member);
        }
    }
    fn subscribe(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        how: (Mode, u32),
        now: Instant,
    ) -> (Subscribed, Option<Arc<SharedTick>>) {
        let mut out = self
            .0
            .subscribe(&self.1[&id], std::slice::from_ref(symbol), how, now);
        let out = out.pop().unwrap();
        let snapshot = out.snapshot.clone();
        (out, snapshot)
    }
    fn unsubscribe(&mut self, id: SessionId, symbol: &str) {
        self.0.unsubscribe(id, &[Symbol::parse(symbol).unwrap()]);
    }
    fn publish(&mut self, tick: Arc<SharedTick>) {
        self.0.publish(tick);
    }
    fn offer(&mut self, symbol: &str, candidate: Option<Arc<SharedTick>>) {
        self.0.offer_snapshot(symbol, candidate);
    }
    fn drain(&mut self, id: SessionId, now: Instant) -> Drained {
        self.0.drain(&self.1[&id], now)
    }
    fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, Sub)> {
        self.0.subscriptions(id)
    }
    fn footprint(&self) -> Footprint {
        self.0.footprint()
    }
    fn shards(&self) -> usize {
        SHARDS
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join,
    /// Session (index into the live ones), symbol, mode, interval.
    Subscribe(usize, usize, usize, usize),
    Unsubscribe(usize, usize),
    /// Unsubscribe, then subscribe again at once.
    Cycle(usize, usize, usize, usize),
    /// Symbol; a stale tick when the first flag is set (the core must drop it); with the
    /// second, the seq before it never reaches the edge (an upstream drop).
    Publish(usize, bool, bool),
    /// A KV read coming back: the symbol's newest seq minus the lag.
    Offer(usize, u64),
    Drain(usize),
    Leave(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Join),
        6 => (0..4usize, 0..4usize, 0..3usize, 0..6usize)
            .prop_map(|(s, y, m, i)| Op::Subscribe(s, y, m, i)),
        5 => (0..4usize, 0..4usize).prop_map(|(s, y)| Op::Unsubscribe(s, y)),
        3 => (0..4usize, 0..4usize, 0..3usize, 0..6usize)
            .prop_map(|(s, y, m, i)| Op::Cycle(s, y, m, i)),
        3 => (0..4usize, proptest::bool::weighted(0.1), proptest::bool::weighted(0.1))
            .prop_map(|(y, stale, skip)| Op::Publish(y, stale, skip)),
        2 => (0..4usize, 0..3u64).prop_map(|(y, lag)| Op::Offer(y, lag)),
        6 => (0..4usize).prop_map(Op::Drain),
        1 => (0..4usize).prop_map(Op::Leave),
        4 => (1..700u64).prop_map(Op::Advance),
    ]
}

/// The core, and what the sessions received, kept for ever: the model it is held to.
struct Model<C> {
    f: C,
    now: Instant,
    sessions: Vec<SessionId>,
    /// Newest seq published per symbol.
    seq: [u64; 4],
    /// Per symbol, the seqs that were never published (upstream drops).
    skipped: [std::collections::BTreeSet<u64>; 4],
    /// Per (session, symbol): highest seq given and when (see `given`).
    given: HashMap<(SessionId, &'static str), (u64, Instant)>,
    beats: Beats,
}

impl<C: Core> Model<C> {
    fn new(f: C, now: Instant, beats: Beats) -> Self {
        Model {
            f,
            now,
            sessions: Vec::new(),
            seq: [0; 4],
            skipped: Default::default(),
            given: HashMap::new(),
            beats,
        }
    }

    fn session(&self, i: usize) -> Option<SessionId> {
        (!self.sessions.is_empty()).then(|| self.sessions[i % self.sessions.len()])
    }

    fn tick(y: usize, seq: u64) -> Arc<SharedTick> {
        Arc::new(SharedTick::new(
            Tick {
                symbol: SYMBOLS[y].into(),
                seq,
                last: Some(seq as f64),
                ..Tick::default()
            },
            WIRE_LEN,
        ))
    }

    /// One delivery of `tick` to `id`: checks the guarantees and records it.
    fn given(&mut self, id: SessionId, tick: &SharedTick) -> Result<(), TestCaseError> {
        let y = SYMBOLS.iter().position(|s| *s == tick.tick.symbol).unwrap();
        let symbol = SYMBOLS[y];
        let subs = self.f.subscriptions(id);
        let sub = subs.iter().find(|(s, _)| s.as_str() == symbol);
        prop_assert!(
            sub.is_some(),
            "{} sent to session {}, which does not hold it",
            symbol,
            id
        );
        let sub = sub.unwrap().1;
        let interval = sub.interval_ms;
        // When the core says it gave the update: now, or on the shared clock the flush
        // instant this drain belongs to (the last one before it).
        let at = sub.given_at().unwrap();
        prop_assert!(
            at == self.now || at == self.beats.of(id).down(self.now, interval.max(1)),
            "{} to session {} given at {:?}, drained at {:?}",
            symbol,
            id,
            at,
            self.now
        );
        if let Some(&(seq, was)) = self.given.get(&(id, symbol)) {
            prop_assert!(
                tick.seq() > seq,
                "guarantee 1: {} seq {} after {} to session {}",
                symbol,
                tick.seq(),
                seq,
                id
            );
            let gap = at - was;
            prop_assert!(
                gap >= Duration::from_millis(u64::from(interval)),
                "guarantee 2: {} to session {} {:?} after the previous one, interval {} ms",
                symbol,
                id,
                gap,
                interval
            );
        }
        self.given.insert((id, symbol), (tick.seq(), at));
        Ok(())
    }

    fn drained(&mut self, id: SessionId, d: Drained) -> Result<(), TestCaseError> {
        for (tick, _) in &d.snapshots {
            self.given(id, tick)?;
        }
        // Continuity: the gaps told before an update lie, in order, between what the
        // session had and the update; every seq that never reached the edge is in one;
        // the update's `from_seq` is the first seq after the last of them (after what the
        // session had, without one).
        let mut gaps: Vec<&Gap> = d.gaps.iter().collect();
        for u in d.frames.iter().flatten() {
            let y = SYMBOLS
                .iter()
                .position(|s| *s == u.tick.tick.symbol)
                .unwrap();
            let seq = u.tick.seq();
            if let Some(&(had, _)) = self.given.get(&(id, SYMBOLS[y])) {
                let mut next = had + 1;
                let mut told = Vec::new();
                while let Some(i) = gaps
                    .iter()
                    .position(|g| g.symbol.as_str() == SYMBOLS[y] && g.from_seq < seq)
                {
                    let g = gaps.remove(i);
                    prop_assert!(
                        g.from_seq >= next,
                        "{:?} to session {} after seq {}",
                        g,
                        id,
                        had
                    );
                    prop_assert!(g.to_seq < seq && g.to_seq >= g.from_seq, "{:?}", g);
                    told.push(g.from_seq..=g.to_seq);
                    next = g.to_seq + 1;
                }
                for lost in self.skipped[y].range(had + 1..seq) {
                    prop_assert!(
                        told.iter().any(|r| r.contains(lost)),
                        "{} seq {} never reached the edge, and session {} was not told",
                        SYMBOLS[y],
                        lost,
                        id
                    );
                }
                let from = u.from_seq.unwrap_or(seq);
                prop_assert!(
                    u.from_seq.is_none_or(|f| f < seq),
                    "from_seq {:?} of seq {}",
                    u.from_seq,
                    seq
                );
                prop_assert_eq!(
                    from,
                    next,
                    "{} seq {} to session {}: from_seq {:?} after seq {} (gaps {:?})",
                    SYMBOLS[y],
                    seq,
                    id,
                    u.from_seq,
                    had,
                    d.gaps
                );
            }
            self.given(id, &u.tick)?;
        }
        prop_assert!(
            gaps.is_empty(),
            "gaps with no update after them: {:?}",
            gaps
        );
        if let Some(next) = d.next_due {
            prop_assert!(next > self.now, "a drain asks to come back in the past");
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Join => {
                if self.sessions.len() < 4 {
                    let id = self.f.join();
                    self.sessions.push(id);
                }
            }
            Op::Cycle(s, y, m, i) => {
                self.step(Op::Unsubscribe(s, y))?;
                self.step(Op::Subscribe(s, y, m, i))?;
            }
            Op::Subscribe(s, y, m, i) => {
                let Some(id) = self.session(s) else {
                    return Ok(());
                };
                let subs = self.f.subscriptions(id);
                if subs.len() >= MAX_SYMBOLS && !subs.iter().any(|(s, _)| s.as_str() == SYMBOLS[y])
                {
                    return Ok(()); // the session glue refuses it: too_many_symbols
                }
                let symbol = Symbol::parse(SYMBOLS[y]).unwrap();
                let (out, snapshot) =
                    self.f
                        .subscribe(id, &symbol, (MODES[m], INTERVALS[i]), self.now);
                prop_assert!(!out.new_interest || out.new_subscription);
                if let Some(t) = snapshot {
                    self.given(id, &t)?;
                }
            }
            Op::Unsubscribe(s, y) => {
                if let Some(id) = self.session(s) {
                    self.f.unsubscribe(id, SYMBOLS[y]);
                }
            }
            Op::Publish(y, stale, skip) => {
                let seq = if stale {
                    // Published after all, late: it may yet reach the edge.
                    self.skipped[y].remove(&self.seq[y].saturating_sub(1));
                    self.seq[y].saturating_sub(1)
                } else {
                    if skip {
                        self.seq[y] += 1;
                        self.skipped[y].insert(self.seq[y]);
                    }
                    self.seq[y] += 1;
                    self.seq[y]
                };
                self.f.publish(Self::tick(y, seq));
            }
            Op::Offer(y, lag) => {
                let seq = self.seq[y].saturating_sub(lag);
                let candidate = (seq > 0).then(|| Self::tick(y, seq));
                self.f.offer(SYMBOLS[y], candidate);
            }
            Op::Drain(s) => {
                if let Some(id) = self.session(s) {
                    let d = self.f.drain(id, self.now);
                    self.drained(id, d)?;
                }
            }
            Op::Leave(s) => {
                if let Some(id) = self.session(s) {
                    self.f.leave(id);
                    self.sessions.retain(|&x| x != id);
                }
            }
            Op::Advance(ms) => self.now += Duration::from_millis(ms),
        }
        self.bounded()
    }

    /// Every collection of the core is bounded by the live subscriptions.
    fn bounded(&self) -> Result<(), TestCaseError> {
        let fp = self.f.footprint();
        // A session has an entry in each core it subscribed in (one alone).
        if self.f.shards() == 1 {
            prop_assert_eq!(fp.sessions, self.sessions.len());
        }
        prop_assert!(
            fp.sessions <= self.sessions.len() * self.f.shards(),
            "{:?}",
            fp
        );
        prop_assert_eq!(
            fp.armed + fp.live + fp.dirty,
            fp.subscriptions,
            "each subscription armed, every-tick or dirty, once: {:?}",
            fp
        );
        prop_assert!(fp.awaiting + fp.snapshots <= fp.subscriptions, "{:?}", fp);
        prop_assert!(fp.groups <= fp.conflated, "{:?}", fp);
        prop_assert!(fp.symbols <= fp.subscriptions, "{:?}", fp);
        prop_assert!(fp.max_left <= MAX_SYMBOLS, "{:?}", fp);
        prop_assert!(fp.left_order <= 2 * fp.left + 16 * fp.sessions, "{:?}", fp);
        prop_assert!(
            fp.queued <= fp.sessions * (BUDGET / WIRE_LEN + 1),
            "{:?}",
            fp
        );
        prop_assert!(fp.forgotten <= SYMBOLS.len(), "{:?}", fp);
        Ok(())
    }
}

/// Runs `ops`, then lets every session drain past every interval: nothing owed is stuck.
fn run<C: Core>(core: C, now: Instant, beats: Beats, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Model::new(core, now, beats);
    for op in ops {
        m.step(op)?;
    }
    for _ in 0..3 {
        m.now += Duration::from_millis(1100);
        for id in m.sessions.clone() {
            let d = m.f.drain(id, m.now);
            m.drained(id, d)?;
        }
    }
    let fp = m.f.footprint();
    prop_assert_eq!(fp.dirty, 0, "{:?}", fp);
    prop_assert_eq!(fp.snapshots, 0, "{:?}", fp);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_fanout_core_keeps_its_guarantees_and_its_bounds(
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let (now, beats) = (Instant::now(), Beats::default());
        run(Alone(Fanout::new(config(beats)), 0), now, beats, ops)?;
    }

    #[test]
    fn the_sharded_core_keeps_the_same_guarantees_and_bounds(
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let (now, beats) = (Instant::now(), Beats::default());
        run(Sharded(Runtime::new(config(beats), SHARDS, NoUpstream), HashMap::new()), now, beats, ops)?;
    }

    #[test]
    fn on_the_shared_clock_the_core_keeps_its_guarantees_and_its_bounds(
        ops in proptest::collection::vec(op(), 1..300),
        phase in 0..1000u64,
    ) {
        let now = Instant::now() + Duration::from_secs(2);
        let beats = Beats::shared(now - Duration::from_millis(phase), 3);
        run(Alone(Fanout::new(config(beats)), 0), now, beats, ops)?;
    }

    #[test]
    fn on_the_shared_clock_the_sharded_core_keeps_them_too(
        ops in proptest::collection::vec(op(), 1..300),
        phase in 0..1000u64,
    ) {
        let now = Instant::now() + Duration::from_secs(2);
        let beats = Beats::shared(now - Duration::from_millis(phase), 3);
        run(Sharded(Runtime::new(config(beats), SHARDS, NoUpstream), HashMap::new()), now, beats, ops)?;
    }
}
