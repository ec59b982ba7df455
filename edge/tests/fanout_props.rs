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

#![allow(clippy::unwrap_used)] // a failed setup is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tickmesh_core::{Mode, Symbol, Tick};
use tickmesh_edge::fanout::{Drained, Fanout, FanoutConfig, SessionId, SharedTick, Wake};

const SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "SPY", "TSLA"];
const INTERVALS: [u32; 6] = [0, 0, 100, 250, 1000, 1001];
const MODES: [Mode; 3] = [Mode::Ltp, Mode::Quote, Mode::Full];
const MAX_SYMBOLS: usize = 2;
const WIRE_LEN: usize = 100;
const BUDGET: usize = 800;

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

#[derive(Debug, Clone)]
enum Op {
    Join,
    /// Session (index into the live ones), symbol, mode, interval.
    Subscribe(usize, usize, usize, usize),
    Unsubscribe(usize, usize),
    /// Unsubscribe, then subscribe again at once.
    Cycle(usize, usize, usize, usize),
    /// Symbol; a stale tick when the flag is set (the core must drop it).
    Publish(usize, bool),
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
        3 => (0..4usize, proptest::bool::weighted(0.1)).prop_map(|(y, stale)| Op::Publish(y, stale)),
        2 => (0..4usize, 0..3u64).prop_map(|(y, lag)| Op::Offer(y, lag)),
        6 => (0..4usize).prop_map(Op::Drain),
        1 => (0..4usize).prop_map(Op::Leave),
        4 => (1..700u64).prop_map(Op::Advance),
    ]
}

/// The core, and what the sessions received, kept for ever: the model it is held to.
struct Model {
    f: Fanout<NoWake>,
    now: Instant,
    sessions: Vec<SessionId>,
    next_id: SessionId,
    /// Newest seq published per symbol.
    seq: [u64; 4],
    /// Per (session, symbol): highest seq given and when it was given.
    given: HashMap<(SessionId, &'static str), (u64, Instant)>,
}

impl Model {
    fn new() -> Self {
        Model {
            f: Fanout::new(FanoutConfig {
                live_budget_bytes: BUDGET,
                slow_interval_ms: 250,
                max_ticks_per_frame: 3,
            }),
            now: Instant::now(),
            sessions: Vec::new(),
            next_id: 1,
            seq: [0; 4],
            given: HashMap::new(),
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
        let interval = sub.unwrap().1.interval_ms;
        if let Some(&(seq, at)) = self.given.get(&(id, symbol)) {
            prop_assert!(
                tick.seq() > seq,
                "guarantee 1: {} seq {} after {} to session {}",
                symbol,
                tick.seq(),
                seq,
                id
            );
            let gap = self.now - at;
            prop_assert!(
                gap >= Duration::from_millis(u64::from(interval)),
                "guarantee 2: {} to session {} {:?} after the previous one, interval {} ms",
                symbol,
                id,
                gap,
                interval
            );
        }
        self.given.insert((id, symbol), (tick.seq(), self.now));
        Ok(())
    }

    fn drained(&mut self, id: SessionId, d: Drained) -> Result<(), TestCaseError> {
        for (tick, _) in d.snapshots.iter().chain(d.frames.iter().flatten()) {
            self.given(id, tick)?;
        }
        if let Some(next) = d.next_due {
            prop_assert!(next > self.now, "a drain asks to come back in the past");
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Join => {
                if self.sessions.len() < 4 {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.f.add_session(id, NoWake, MAX_SYMBOLS);
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
                let held = self.f.subscription_count(id);
                if held >= MAX_SYMBOLS && !self.f.is_subscribed(id, SYMBOLS[y]) {
                    return Ok(()); // the session glue refuses it: too_many_symbols
                }
                let symbol = Symbol::parse(SYMBOLS[y]).unwrap();
                let out = self.f.subscribe(id, &symbol, MODES[m], INTERVALS[i]);
                prop_assert!(!out.new_interest || out.new_subscription);
                if out.new_subscription && out.latest.is_some() {
                    // As the session glue does: a snapshot for new subscriptions only.
                    if let Some(t) = self.f.take_snapshot(id, SYMBOLS[y], None, self.now) {
                        self.given(id, &t)?;
                    }
                }
            }
            Op::Unsubscribe(s, y) => {
                if let Some(id) = self.session(s) {
                    self.f.unsubscribe(id, SYMBOLS[y]);
                }
            }
            Op::Publish(y, stale) => {
                let seq = if stale {
                    self.seq[y].saturating_sub(1)
                } else {
                    self.seq[y] += 1;
                    self.seq[y]
                };
                self.f.publish(Self::tick(y, seq));
            }
            Op::Offer(y, lag) => {
                let seq = self.seq[y].saturating_sub(lag);
                let candidate = (seq > 0).then(|| Self::tick(y, seq));
                self.f.offer_snapshot(SYMBOLS[y], candidate);
            }
            Op::Drain(s) => {
                if let Some(id) = self.session(s) {
                    let d = self.f.drain(id, self.now);
                    self.drained(id, d)?;
                }
            }
            Op::Leave(s) => {
                if let Some(id) = self.session(s) {
                    self.f.remove_session(id);
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
        prop_assert_eq!(fp.sessions, self.sessions.len());
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_fanout_core_keeps_its_guarantees_and_its_bounds(
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut m = Model::new();
        for op in ops {
            m.step(op)?;
        }
        // Once every session drained past every interval, nothing owed is stuck.
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
    }
}
