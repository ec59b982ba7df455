//! The runtime around the fan-out core: the core split by symbol into shards, each its
//! own [`Fanout`] behind its own lock with the pumps of its symbols, so that ticks of
//! different symbols and sessions draining them rarely wait for one another.
//!
//! A symbol lives in one shard (a hash of its name); starting and stopping its pump is
//! ordered there with the reference counts that decide it. A session is registered in
//! every shard; what concerns the whole session is kept across them: its every-tick byte
//! budget ([`Queued`]), its waker, and its move to conflation when slow. A request takes
//! each shard's lock at most once, however many symbols it names, and a drain visits only
//! the shards that woke the session or whose flush is due ([`Member`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tickmesh_core::{Mode, Symbol};
use tokio::sync::Notify;

use crate::fanout::{
    Drained, Fanout, FanoutConfig, Footprint, Frame, Queued, SessionId, SharedTick, Sub,
    Subscribed, TickSink, Upstream, Wake, into_frames,
};

impl Wake for Arc<Notify> {
    fn wake(&self) {
        self.notify_one();
    }
}

/// A shard and its lock.
type Locked<W, P> = Mutex<Shard<W, P>>;
/// A shard, locked.
type Guard<'a, W, P> = MutexGuard<'a, Shard<W, P>>;

#[derive(Debug)]
struct Shard<W, P> {
    fanout: Fanout<Marked<W>>,
    pumps: HashMap<Symbol, P>,
}

/// Most shards: one bit each in [`Due::woken`].
pub const MAX_SHARDS: usize = 64;

/// A session's place in the runtime: its id, what it joins a shard with when it first
/// subscribes to a symbol there, and what tells its drain which shards to visit. Only the
/// session's own task subscribes and drains with it.
#[derive(Debug, Clone)]
pub struct Member<W> {
    id: SessionId,
    waker: W,
    /// What each shard may remember of the symbols the session left (`Fanout`'s
    /// `max_symbols`): the session's share per shard.
    left_per_shard: usize,
    /// The session's every-tick bytes, counted by all its shards together.
    queued: Queued,
    due: Arc<Due>,
}

impl<W> Member<W> {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// What wakes the session: another runtime it joins wakes it the same way.
    pub fn waker(&self) -> &W {
        &self.waker
    }
}

#[derive(Debug)]
struct Due {
    /// Shards the session has joined, one bit each: only those hold anything of it, so
    /// an idle session costs no shard anything and a session of a few symbols a few.
    joined: AtomicU64,
    /// Shards that woke the session since its drain last visited them, one bit each.
    woken: AtomicU64,
    /// Each shard's own next flush for the session, from the drain that last visited it.
    timers: Mutex<Box<[Option<Instant>]>>,
}

/// The waker a shard holds for a session: it marks the shard, then wakes the session.
#[derive(Debug, Clone)]
pub struct Marked<W> {
    inner: W,
    due: Arc<Due>,
    bit: u64,
}

impl<W: Wake> Wake for Marked<W> {
    fn wake(&self) {
        self.due.woken.fetch_or(self.bit, Ordering::AcqRel);
        self.inner.wake();
    }
}

/// The sharded core with the pumps of the symbols it carries.
#[derive(Debug)]
pub struct Runtime<U: Upstream, W> {
    shards: Box<[Locked<W, U::Pump>]>,
    upstream: U,
    max_ticks_per_frame: usize,
    next_id: AtomicU64,
    /// Symbols carried, all shards together; raised before a new symbol is admitted, so
    /// that an edge-wide bound holds exactly however many shards admit at once.
    carried: AtomicUsize,
    /// The gauge of the symbols carried (`tickmesh_edge_symbols` for the real-time core).
    symbols_gauge: &'static str,
}

/// The number of shards for this machine: one per core, at least 1.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<U: Upstream, W: Wake + Clone + Send + 'static> Runtime<U, W> {
    pub fn new(config: FanoutConfig, shards: usize, upstream: U) -> Arc<Self> {
        Self::with_gauge(config, shards, upstream, "tickmesh_edge_symbols")
    }

    /// [`Runtime::new`], counting the symbols it carries in `symbols_gauge`.
    pub fn with_gauge(
        config: FanoutConfig,
        shards: usize,
        upstream: U,
        symbols_gauge: &'static str,
    ) -> Arc<Self> {
        let max_ticks_per_frame = config.max_ticks_per_frame.max(1);
        let shards = (0..shards.clamp(1, MAX_SHARDS))
            .map(|_| {
                Mutex::new(Shard {
                    fanout: Fanout::new(config.clone()),
                    pumps: HashMap::new(),
                })
            })
            .collect();
        Arc::new(Runtime {
            shards,
            upstream,
            max_ticks_per_frame,
            next_id: AtomicU64::new(1),
            carried: AtomicUsize::new(0),
            symbols_gauge,
        })
    }

    fn index(&self, symbol: &str) -> usize {
        // Fixed keys: a symbol stays in its shard for the life of the process.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(symbol);
        (hash % self.shards.len() as u64) as usize
    }

    fn lock(&self, index: usize) -> Guard<'_, W, U::Pump> {
        // A panic under this lock is a bug in the core; the state is still consistent
        // enough to serve others, so recover the guard rather than fail every session.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard_of(&self, symbol: &str) -> Guard<'_, W, U::Pump> {
        self.lock(self.index(symbol))
    }

    /// The positions of `symbols`, grouped by shard: each shard's lock is then taken once.
    fn by_shard<'a>(&self, symbols: &'a [Symbol]) -> Vec<(usize, Vec<(usize, &'a Symbol)>)> {
        let mut groups: Vec<Vec<(usize, &Symbol)>> = vec![Vec::new(); self.shards.len()];
        for (at, symbol) in symbols.iter().enumerate() {
            groups[self.index(symbol.as_str())].push((at, symbol));
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }

    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// Registers a session that may hold up to `max_symbols`; `waker` is signalled when
    /// it has something to flush.
    pub fn join(&self, waker: W, max_symbols: u32) -> Member<W> {
        Member {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waker,
            // What a shard may remember of the symbols the session left: its share of the
            // session's `max_symbols`, so that all shards together remember about as many
            // as one core would (a client cycling through symbols spread over every shard
            // must not make the edge keep `shards` times more); past it a shard forgets,
            // which costs only that session later snapshots (see `Session::remember`).
            left_per_shard: (max_symbols as usize).div_ceil(self.shards.len()),
            queued: Queued::default(),
            due: Arc::new(Due {
                joined: AtomicU64::new(0),
                woken: AtomicU64::new(0),
                timers: Mutex::new(vec![None; self.shards.len()].into()),
            }),
        }
    }

    /// Registers the session in shard `index` unless it is there already.
    fn enter(&self, member: &Member<W>, index: usize, shard: &mut Shard<W, U::Pump>) {
        let bit = 1 << index;
        if member.due.joined.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return;
        }
        let waker = Marked {
            inner: member.waker.clone(),
            due: member.due.clone(),
            bit,
        };
        shard.fanout.add_session_queued(
            member.id,
            waker,
            member.left_per_shard,
            member.queued.clone(),
        );
    }

    pub fn leave(&self, member: &Member<W>) {
        let id = member.id;
        let joined = member.due.joined.swap(0, Ordering::AcqRel);
        let mut subs = 0;
        for index in (0..self.shards.len()).filter(|i| joined & (1 << i) != 0) {
            let mut shard = self.lock(index);
            subs += shard.fanout.subscription_count(id);
            for symbol in shard.fanout.remove_session(id) {
                self.stop_pump(&mut shard, &symbol);
            }
        }
        metrics::gauge!("tickmesh_edge_subscriptions").decrement(subs as f64);
    }

    /// Subscribes `id` to each symbol at `now`; returns each symbol's outcome, in order.
    pub fn subscribe(
        self: &Arc<Self>,
        member: &Member<W>,
        symbols: &[Symbol],
        (mode, interval_ms): (Mode, u32),
        now: Instant,
    ) -> Vec<Subscribed> {
        self.subscribe_admitted(member, symbols, (mode, interval_ms), now, |_, _| {
            Ok::<(), ()>(())
        })
        .into_iter()
        .map(|r| r.unwrap_or_default())
        .collect()
    }

    /// Like [`Runtime::subscribe`], but a symbol this edge does not carry yet is first put
    /// to `admit` (in the order of `symbols`) with the number of symbols carried before it
    /// (counting any another request is admitting at the same moment in other shards), so
    /// that an edge-wide bound holds exactly however many sessions subscribe at once. A
    /// refused symbol is left alone and its refusal returned in its place.
    pub fn subscribe_admitted<E>(
        self: &Arc<Self>,
        member: &Member<W>,
        symbols: &[Symbol],
        how: (Mode, u32),
        now: Instant,
        mut admit: impl FnMut(&Symbol, usize) -> Result<(), E>,
    ) -> Vec<Result<Subscribed, E>> {
        // Every shard the request touches, locked in shard order (as every caller that
        // holds more than one does, so none waits on another in a circle), then the
        // symbols admitted in the order the client named them.
        let indices: Vec<usize> = symbols.iter().map(|s| self.index(s.as_str())).collect();
        let mut guards: Vec<Option<Guard<'_, W, U::Pump>>> =
            (0..self.shards.len()).map(|_| None).collect();
        for (index, guard) in guards.iter_mut().enumerate() {
            if indices.contains(&index) {
                let mut shard = self.lock(index);
                self.enter(member, index, &mut shard);
                *guard = Some(shard);
            }
        }
        symbols
            .iter()
            .zip(indices)
            .map(|(symbol, index)| {
                let shard = guards[index].as_mut().expect("locked above");
                self.subscribe_one(shard, member.id, symbol, how, now, &mut admit)
            })
            .collect()
    }

    fn subscribe_one<E>(
        self: &Arc<Self>,
        shard: &mut Shard<W, U::Pump>,
        id: SessionId,
        symbol: &Symbol,
        (mode, interval_ms): (Mode, u32),
        now: Instant,
        admit: &mut impl FnMut(&Symbol, usize) -> Result<(), E>,
    ) -> Result<Subscribed, E> {
        let new_symbol = !shard.pumps.contains_key(symbol);
        if new_symbol {
            let before = self.carried.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = admit(symbol, before) {
                self.carried.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        let mut outcome = shard.fanout.subscribe(id, symbol, mode, interval_ms);
        if outcome.new_subscription {
            metrics::gauge!("tickmesh_edge_subscriptions").increment(1.0);
            if outcome.latest.is_some() {
                outcome.snapshot = shard.fanout.take_snapshot(id, symbol.as_str(), None, now);
            }
        }
        if outcome.new_interest {
            let pump = self.upstream.start_pump(self.sink(), symbol.clone());
            shard.pumps.insert(symbol.clone(), pump);
            metrics::gauge!(self.symbols_gauge).set(self.symbol_count() as f64);
        } else if new_symbol {
            // Admitted, but nothing was carried after all (the session is gone).
            self.carried.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// What a pump of this runtime delivers to (it does not keep the runtime alive).
    fn sink(self: &Arc<Self>) -> Weak<dyn TickSink> {
        let weak: Weak<Self> = Arc::downgrade(self);
        weak
    }

    fn stop_pump(&self, shard: &mut Shard<W, U::Pump>, symbol: &Symbol) {
        if shard.pumps.remove(symbol).is_some() {
            self.carried.fetch_sub(1, Ordering::Relaxed);
        }
        metrics::gauge!(self.symbols_gauge).set(self.symbol_count() as f64);
    }

    /// Unsubscribes; returns the symbols that were subscribed, in order.
    pub fn unsubscribe(&self, id: SessionId, symbols: &[Symbol]) -> Vec<Symbol> {
        let mut removed = vec![false; symbols.len()];
        for (index, group) in self.by_shard(symbols) {
            let mut shard = self.lock(index);
            for (at, symbol) in group {
                if !shard.fanout.is_subscribed(id, symbol.as_str()) {
                    continue;
                }
                if shard.fanout.unsubscribe(id, symbol.as_str()) {
                    self.stop_pump(&mut shard, symbol);
                }
                removed[at] = true;
            }
        }
        let removed: Vec<Symbol> = symbols
            .iter()
            .zip(removed)
            .filter(|&(_, r)| r)
            .map(|(s, _)| s.clone())
            .collect();
        metrics::gauge!("tickmesh_edge_subscriptions").decrement(removed.len() as f64);
        removed
    }

    /// The session's subscriptions, sorted by symbol.
    pub fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, Sub)> {
        let mut subs = Vec::new();
        for index in 0..self.shards.len() {
            subs.extend(self.lock(index).fanout.subscriptions(id));
        }
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs
    }

    /// `symbol`'s latest value, if the edge carries it and has one.
    pub fn latest(&self, symbol: &str) -> Option<Arc<SharedTick>> {
        self.shard_of(symbol).fanout.latest(symbol)
    }

    pub fn subscription_count(&self, id: SessionId) -> usize {
        (0..self.shards.len())
            .map(|index| self.lock(index).fanout.subscription_count(id))
            .sum()
    }

    /// Which of `symbols` the session holds, in order.
    pub fn holds(&self, id: SessionId, symbols: &[Symbol]) -> Vec<bool> {
        let mut held = vec![false; symbols.len()];
        for (index, group) in self.by_shard(symbols) {
            let shard = self.lock(index);
            for (at, symbol) in group {
                held[at] = shard.fanout.is_subscribed(id, symbol.as_str());
            }
        }
        held
    }

    /// Hands a KV read started for [`Subscribed::fetch`] to the core; returns how many
    /// sessions were awaiting it.
    pub fn offer_snapshot(&self, symbol: &str, candidate: Option<Arc<SharedTick>>) -> usize {
        self.shard_of(symbol)
            .fanout
            .offer_snapshot(symbol, candidate)
    }

    /// Everything the session must send now: snapshots first, then its updates in frames
    /// of at most `max_ticks_per_frame`, from the shards that woke it or whose flush is
    /// due (the others have nothing to send).
    pub fn drain(&self, member: &Member<W>, now: Instant) -> Drained {
        let id = member.id;
        let mut out = Drained::default();
        let mut ticks = Frame::new();
        let mut slow_in = None;
        let woken = member.due.woken.swap(0, Ordering::AcqRel);
        let mut timers = member.due.timers.lock().unwrap_or_else(|e| e.into_inner());
        for (index, timer) in timers.iter_mut().enumerate() {
            if woken & (1 << index) == 0 && timer.is_none_or(|t| t > now) {
                continue;
            }
            let told = out.slow_consumer;
            *timer = self
                .lock(index)
                .fanout
                .drain_into(id, now, &mut out, &mut ticks);
            if out.slow_consumer != told {
                slow_in = Some(index);
            }
        }
        out.next_due = timers.iter().fold(None, |a, &b| min_instant(a, b));
        if let Some(slow) = slow_in {
            // Over budget in one shard: every every-tick subscription of the session moves
            // to conflation, as it would in one core, with one notice. What that leaves
            // to send wakes the session again.
            for index in (0..self.shards.len()).filter(|&i| i != slow) {
                self.lock(index).fanout.fall_back_to_conflation(id, false);
            }
        }
        into_frames(ticks, self.max_ticks_per_frame, &mut out.frames);
        out
    }

    /// Sizes of everything the shards keep, summed (`sessions`: entries, one per shard a
    /// session joined). Costs a walk over every shard.
    pub fn footprint(&self) -> Footprint {
        let mut all = Footprint::default();
        for index in 0..self.shards.len() {
            let f = self.lock(index).fanout.footprint();
            all.sessions += f.sessions;
            all.max_left = all.max_left.max(f.max_left);
            all.subscriptions += f.subscriptions;
            all.conflated += f.conflated;
            all.symbols += f.symbols;
            all.armed += f.armed;
            all.live += f.live;
            all.awaiting += f.awaiting;
            all.dirty += f.dirty;
            all.groups += f.groups;
            all.snapshots += f.snapshots;
            all.queued += f.queued;
            all.left += f.left;
            all.left_order += f.left_order;
            all.forgotten += f.forgotten;
        }
        all
    }

    /// Symbols this edge carries.
    pub fn symbol_count(&self) -> usize {
        self.carried.load(Ordering::Relaxed)
    }
}

impl<U: Upstream, W: Wake + Clone + Send + 'static> TickSink for Runtime<U, W> {
    fn publish(&self, tick: Arc<SharedTick>) -> bool {
        self.shard_of(tick.tick.symbol.as_str())
            .fanout
            .publish(tick)
    }

    /// Replaces the pump of `symbol`, whose subscription failed or ended, if the symbol is
    /// still carried.
    fn restart_pump(self: Arc<Self>, symbol: &Symbol) {
        let mut shard = self.shard_of(symbol.as_str());
        if shard.pumps.contains_key(symbol) {
            let pump = self.upstream.start_pump(self.sink(), symbol.clone());
            shard.pumps.insert(symbol.clone(), pump);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicIsize;

    use tickmesh_core::Tick;

    use super::*;

    const WIRE_LEN: usize = 100;

    #[derive(Clone)]
    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    /// Counts the pumps running: started on new interest, stopped when dropped.
    #[derive(Default)]
    struct Counted(Arc<AtomicIsize>);
    struct Running(Arc<AtomicIsize>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    impl Upstream for Counted {
        type Pump = Running;
        fn start_pump(&self, _: Weak<dyn TickSink>, _: Symbol) -> Running {
            self.0.fetch_add(1, Ordering::Relaxed);
            Running(self.0.clone())
        }
    }

    fn runtime(shards: usize, budget: usize) -> Arc<Runtime<Counted, NoWake>> {
        let config = FanoutConfig {
            live_budget_bytes: budget,
            slow_interval_ms: 250,
            max_ticks_per_frame: 500,
            beats: Default::default(),
        };
        Runtime::new(config, shards, Counted::default())
    }

    fn tick(symbol: &Symbol, seq: u64) -> Arc<SharedTick> {
        let t = Tick {
            symbol: symbol.as_str().into(),
            seq,
            last: Some(seq as f64),
            ..Tick::default()
        };
        Arc::new(SharedTick::new(t, WIRE_LEN))
    }

    /// `n` symbols, each in a different shard of `r`.
    fn spread<U: Upstream, W: Wake + Clone + Send + 'static>(
        r: &Runtime<U, W>,
        n: usize,
    ) -> Vec<Symbol> {
        let mut taken = Vec::new();
        let mut symbols = Vec::new();
        for i in 0..1000 {
            let symbol = Symbol::parse(&format!("S{i}")).unwrap();
            let shard = r.index(symbol.as_str());
            if !taken.contains(&shard) {
                taken.push(shard);
                symbols.push(symbol);
            }
            if symbols.len() == n {
                return symbols;
            }
        }
        panic!("fewer than {n} shards");
    }

    #[test]
    fn a_session_across_shards_gets_its_updates_in_one_frame_in_order_of_the_request() {
        let r = runtime(4, 1 << 20);
        let member = r.join(NoWake, 10);
        let id = member.id();
        let symbols = spread(&r, 4);
        let now = Instant::now();
        let outcomes = r.subscribe(&member, &symbols, (Mode::Quote, 0), now);
        assert_eq!(outcomes.len(), 4);
        assert!(outcomes.iter().all(|o| o.new_interest && o.fetch));
        for (seq, symbol) in symbols.iter().enumerate() {
            r.publish(tick(symbol, seq as u64 + 1));
        }
        let drained = r.drain(&member, now);
        // Each was the awaited snapshot of its subscription.
        assert_eq!(drained.snapshots.len(), 4);
        for (seq, symbol) in symbols.iter().enumerate() {
            r.publish(tick(symbol, seq as u64 + 10));
        }
        let drained = r.drain(&member, now);
        assert_eq!(drained.frames.len(), 1, "one frame for four shards");
        assert_eq!(drained.frames[0].len(), 4);
        assert_eq!(drained.queued_bytes, 4 * WIRE_LEN);
        assert_eq!(r.holds(id, &symbols), vec![true; 4]);
    }

    #[test]
    fn the_every_tick_budget_is_the_sessions_whichever_shards_its_symbols_are_in() {
        // 250 bytes: two ticks fit, a third does not, wherever they are.
        let r = runtime(2, 250);
        let member = r.join(NoWake, 10);
        let id = member.id();
        let [a, b] = <[Symbol; 2]>::try_from(spread(&r, 2)).unwrap();
        let now = Instant::now();
        for symbol in [&a, &b] {
            r.publish(tick(symbol, 1));
        }
        r.subscribe(&member, &[a.clone(), b.clone()], (Mode::Quote, 0), now);
        for symbol in [&a, &b] {
            r.offer_snapshot(symbol.as_str(), Some(tick(symbol, 1)));
        }
        assert_eq!(r.drain(&member, now).snapshots.len(), 2);
        r.publish(tick(&a, 2));
        r.publish(tick(&b, 2));
        r.publish(tick(&a, 3));
        let drained = r.drain(&member, now);
        assert_eq!(
            drained.slow_consumer,
            Some(250),
            "300 bytes queued over two shards"
        );
        // Both subscriptions moved, in both shards, and the session is told once.
        let subs = r.subscriptions(id);
        assert!(subs.iter().all(|(_, s)| s.interval_ms == 250), "{subs:?}");
        r.publish(tick(&b, 3));
        let later = r.drain(&member, now + std::time::Duration::from_millis(300));
        assert_eq!(later.slow_consumer, None);
    }

    #[test]
    fn the_carried_bound_holds_exactly_when_shards_admit_at_once() {
        let r = runtime(4, 1 << 20);
        const CAP: usize = 20;
        let admitted = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let r = r.clone();
                    s.spawn(move || {
                        let member = r.join(NoWake, 100);
                        let symbols: Vec<Symbol> = (0..50)
                            .map(|i| Symbol::parse(&format!("T{t}X{i}")).unwrap())
                            .collect();
                        let results = r.subscribe_admitted(
                            &member,
                            &symbols,
                            (Mode::Ltp, 0),
                            Instant::now(),
                            |_, carried| if carried < CAP { Ok(()) } else { Err(()) },
                        );
                        results.iter().filter(|r| r.is_ok()).count()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(admitted, CAP);
        assert_eq!(r.symbol_count(), CAP);
        assert_eq!(r.upstream().0.load(Ordering::Relaxed), CAP as isize);
    }

    #[test]
    fn a_session_costs_only_the_shards_it_subscribed_in() {
        let r = runtime(8, 1 << 20);
        let member = r.join(NoWake, 10);
        assert_eq!(r.footprint().sessions, 0, "an idle session is in no shard");
        let x = Symbol::parse("X").unwrap();
        r.subscribe(
            &member,
            std::slice::from_ref(&x),
            (Mode::Ltp, 0),
            Instant::now(),
        );
        assert_eq!(r.footprint().sessions, 1);
        r.leave(&member);
        assert_eq!(r.footprint().sessions, 0);
    }

    #[test]
    fn what_a_session_remembers_of_symbols_it_left_is_bounded_by_its_max_symbols() {
        let shards = 4;
        let r = runtime(shards, 1 << 20);
        let member = r.join(NoWake, 8);
        let now = Instant::now();
        // Subscribe to 200 symbols one at a time (each with a value, so each is
        // remembered when left), leaving each at once.
        for i in 0..200u64 {
            let s = Symbol::parse(&format!("C{i}")).unwrap();
            r.subscribe(&member, std::slice::from_ref(&s), (Mode::Ltp, 0), now);
            r.publish(tick(&s, i + 1));
            r.drain(&member, now);
            r.unsubscribe(member.id(), &[s]);
        }
        let f = r.footprint();
        assert!(f.left <= 8 + shards, "{f:?}");
    }

    #[test]
    fn a_symbol_has_one_pump_while_anyone_holds_it() {
        let r = runtime(3, 1 << 20);
        let x = Symbol::parse("X").unwrap();
        let pumps = || r.upstream().0.load(Ordering::Relaxed);
        let (one, two) = (r.join(NoWake, 10), r.join(NoWake, 10));
        let now = Instant::now();
        r.subscribe(&one, std::slice::from_ref(&x), (Mode::Ltp, 0), now);
        r.subscribe(&two, std::slice::from_ref(&x), (Mode::Ltp, 250), now);
        assert_eq!((pumps(), r.symbol_count()), (1, 1));
        r.leave(&one);
        assert_eq!((pumps(), r.symbol_count()), (1, 1));
        assert_eq!(r.unsubscribe(two.id(), &[x.clone(), x.clone()]), vec![x]);
        assert_eq!((pumps(), r.symbol_count()), (0, 0));
    }
}
