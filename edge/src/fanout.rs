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
//!
//! Each subscription is in exactly one of its slot's lists (armed, every-tick) or its
//! group's dirty set, and knows its index there: subscribing again, unsubscribing and
//! leaving cost O(1) and leave nothing behind, so what a client can make the core keep
//! is bounded by what it holds, never by how often it asks. Each subscription also
//! remembers when the session was last given its symbol, and nothing goes out before its
//! interval has passed since: the tier's minimum holds across re-subscriptions, interval
//! changes and unsubscribe/subscribe cycles.

mod subscriber;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_core::codec::{encode_client_delayed, ticks_frame};
use tickmesh_core::tick::State;
use tickmesh_core::{Format, Mode, Symbol, Tick};

pub use subscriber::{Beats, Queued, Sub};
use subscriber::{Feed, Session, Snap};

pub type SessionId = u64;

/// The core's sessions by id. Ids are the edge's own (a counter), never a client's, so
/// they need no hashing that resists chosen keys: a multiply spreads them, in a fraction
/// of SipHash's time, on a lookup every publish and drain makes once per session.
type Sessions<W> = HashMap<SessionId, Session<W>, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: the high bits, which the table uses, depend on every bit.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// How a session is woken when it has something to flush. A tokio `Notify` at run time,
/// a counter in tests.
pub trait Wake {
    fn wake(&self);
}

/// Where a symbol's NATS pump delivers: the core's side of the pump. The NATS layer
/// knows the core only through this.
pub trait TickSink: Send + Sync + 'static {
    /// Hands a decoded tick on; false when it was not newer than what the core has.
    fn publish(&self, tick: Arc<SharedTick>) -> bool;
    /// The pump of `symbol` ended (its subscription closed): start a new one if the
    /// symbol is still carried.
    fn restart_pump(self: Arc<Self>, symbol: &Symbol);
}

/// Where the runtime gets a carried symbol's ticks from: it starts a pump when a symbol
/// gains its first subscriber and drops it when the last one leaves (dropping it stops
/// it). NATS at run time; nothing in the core's benches.
pub trait Upstream: Send + Sync + 'static {
    type Pump: Send + 'static;
    /// Starts delivering `symbol`'s ticks to `sink`. Called under the runtime's lock of
    /// the symbol's shard: it must not call back into the runtime before it returns.
    fn start_pump(&self, sink: std::sync::Weak<dyn TickSink>, symbol: Symbol) -> Self::Pump;
}

/// One decoded tick, shared by every session, with its client encodings built lazily,
/// once per (format, mode), by whichever session needs them first.
#[derive(Debug)]
pub struct SharedTick {
    pub tick: Tick,
    /// Size of the tick on the wire: the unit of the every-tick byte budget.
    pub wire_len: usize,
    /// When the edge decoded it: how long it then waits in the edge is measured from here.
    pub arrived: Instant,
    /// The first tick of its symbol since the edge's NATS connection came back: seqs
    /// missing before it were lost to the reconnect.
    pub after_reconnect: bool,
    /// A delayed sample (`delayed_ms` behind): it stands for every tick of its symbol
    /// since the sample before, so seqs skipped before it are folded, not lost.
    pub delayed_ms: Option<u64>,
    live: [[OnceLock<Bytes>; 3]; 2],
    snapshot: [[OnceLock<Bytes>; 3]; 2],
    /// Whole `ticks` frames holding this tick alone, made when first asked for.
    alone: OnceLock<Box<[[OnceLock<Bytes>; 3]; 2]>>,
}

impl SharedTick {
    pub fn new(tick: Tick, wire_len: usize) -> Self {
        SharedTick {
            tick,
            wire_len,
            arrived: Instant::now(),
            after_reconnect: false,
            delayed_ms: None,
            live: Default::default(),
            snapshot: Default::default(),
            alone: OnceLock::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.tick.seq
    }

    /// The tick object for a `ticks` frame.
    pub fn encoded(&self, format: Format, mode: Mode) -> &Bytes {
        self.live[format.index()][mode.index()].get_or_init(|| {
            encode_client_delayed(&self.tick, format, mode, None, self.delayed_ms).into()
        })
    }

    /// The whole `ticks` frame of this tick alone: built once, whoever sends it (every
    /// session that flushes one conflated symbol at a shared instant sends this one).
    pub fn frame_alone(&self, format: Format, mode: Mode) -> &Bytes {
        self.alone.get_or_init(Default::default)[format.index()][mode.index()].get_or_init(|| {
            ticks_frame(format, std::iter::once(&self.encoded(format, mode)[..])).into()
        })
    }

    /// The whole `snapshot` message.
    pub fn snapshot(&self, format: Format, mode: Mode) -> &Bytes {
        self.snapshot[format.index()][mode.index()].get_or_init(|| {
            encode_client_delayed(&self.tick, format, mode, Some("snapshot"), self.delayed_ms)
                .into()
        })
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
    /// When conflated subscriptions flush: on a clock shared by every session, or each
    /// session on its own phase.
    pub beats: Beats,
}

#[derive(Debug, Default)]
struct Slot {
    latest: Option<Arc<SharedTick>>,
    /// Sessions subscribed to this symbol.
    count: usize,
    /// Conflated subscribers waiting for the next change ([`Feed::Armed`]).
    armed: Vec<SessionId>,
    /// Every-tick subscribers ([`Feed::Live`]).
    live: Vec<SessionId>,
    /// Sessions whose snapshot waits for the symbol's next value ([`Snap::Awaiting`]).
    awaiting: Vec<SessionId>,
    /// A KV read of the symbol is under way (see [`Fanout::offer_snapshot`]).
    fetching: bool,
    /// With a shared clock: the value conflated subscriptions get for flush instants up
    /// to this one (the latest when the first of them flushed), so that every session
    /// flushing at one instant sends the same tick, and the same frame.
    frozen: Option<(Instant, Arc<SharedTick>)>,
    /// What the edge received of the symbol's live stream.
    stream: Option<Stream>,
}

impl Slot {
    /// The value for a conflated flush at the shared flush instant `beat`: the latest when
    /// the first session flushed at `beat` or a later instant.
    fn at_beat(&mut self, beat: Instant) -> Option<&Arc<SharedTick>> {
        if self.frozen.as_ref().is_none_or(|(at, _)| *at < beat) {
            self.frozen = self.latest.clone().map(|latest| (beat, latest));
        }
        self.frozen.as_ref().map(|(_, tick)| tick)
    }
}

/// One of a slot's session lists.
#[derive(Debug, Clone, Copy)]
enum List {
    Armed,
    Live,
    Awaiting,
}

impl Slot {
    fn list(&mut self, which: List) -> &mut Vec<SessionId> {
        match which {
            List::Armed => &mut self.armed,
            List::Live => &mut self.live,
            List::Awaiting => &mut self.awaiting,
        }
    }

    /// Adds `id` to a list; returns the index its subscription keeps.
    fn enlist(&mut self, which: List, id: SessionId) -> usize {
        let list = self.list(which);
        list.push(id);
        list.len() - 1
    }
}

/// Takes `id`, at index `at`, out of a list of `symbol`'s slot in O(1): the last entry
/// moves into its place and its subscription is told its new index.
fn delist<W>(
    slot: &mut Slot,
    which: List,
    at: usize,
    id: SessionId,
    symbol: &str,
    sessions: &mut Sessions<W>,
) {
    let list = slot.list(which);
    let at = if list.get(at) == Some(&id) {
        at
    } else {
        // Indices are kept exact; should one ever be wrong, find the entry rather than
        // take out someone else's.
        debug_assert!(false, "{symbol}: session {id} not at {at} of {which:?}");
        match list.iter().position(|&s| s == id) {
            Some(at) => at,
            None => return,
        }
    };
    list.swap_remove(at);
    let Some(&moved) = list.get(at) else {
        return;
    };
    if let Some(sub) = sessions
        .get_mut(&moved)
        .and_then(|s| s.subs.get_mut(symbol))
    {
        match which {
            List::Armed => sub.feed = Feed::Armed(at),
            List::Live => sub.feed = Feed::Live(at),
            List::Awaiting => sub.snap = Snap::Awaiting(at),
        }
    }
}

/// What [`Fanout::subscribe`] changed.
#[derive(Debug, Default)]
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
    /// A new subscription's snapshot, taken by the runtime in the same turn if it could go
    /// out at once (see [`Fanout::take_snapshot`]).
    pub snapshot: Option<Arc<SharedTick>>,
}

/// One `ticks` frame to send: shared ticks and the mode each is sent in.
pub type Frame = Vec<Update>;

/// One live update in a frame.
#[derive(Debug, Clone)]
pub struct Update {
    pub tick: Arc<SharedTick>,
    pub mode: Mode,
    /// The first seq the update stands for, when below its own: every tick from there
    /// through `tick.seq` reached the edge and is folded into this one.
    pub from_seq: Option<u64>,
    /// Changes of the symbol's trading state since what the session had, through this
    /// update, oldest first: each is told (`status`) right before the update.
    pub states: Vec<StateChange>,
}

/// A symbol's trading state changed at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub state: State,
    /// What the session had before (none: it never had a state of the symbol).
    pub was: Option<State>,
    /// The tick's `ts`.
    pub ts: u64,
}

/// Why ticks of a symbol never reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The edge's stream of the symbol skipped them (NATS dropped them on the way).
    Upstream,
    /// The edge's NATS connection was down while they were published.
    Reconnect,
    /// They came between the snapshot the session was given and the first tick of the
    /// symbol the edge received.
    Snapshot,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Upstream => "upstream",
            GapReason::Reconnect => "reconnect",
            GapReason::Snapshot => "snapshot",
        }
    }
}

/// Seqs `from_seq..=to_seq` of `epoch` that a session's next update of `symbol` skips
/// because they never reached the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub symbol: Symbol,
    pub epoch: u64,
    pub from_seq: u64,
    pub to_seq: u64,
    pub reason: GapReason,
}

/// Runs of a symbol's stream the edge missed, kept per symbol.
const GAPS_KEPT: usize = 16;
/// Changes of a symbol's trading state kept per symbol, for conflated updates that pass
/// over them.
const STATES_KEPT: usize = 16;

/// What the edge received of a symbol's live stream in its current epoch.
#[derive(Debug, Default)]
struct Stream {
    epoch: u64,
    /// The first seq received in the epoch, and the highest.
    first: u64,
    last: u64,
    /// The latest runs of seqs that never came, oldest first, at most [`GAPS_KEPT`].
    gaps: std::collections::VecDeque<(u64, u64, GapReason)>,
    /// The highest seq of the runs pushed out of `gaps` (0: none).
    forgotten_to: u64,
    /// The state at the highest seq received, and the latest changes of state (seq,
    /// state, ts), oldest first, at most [`STATES_KEPT`].
    state: Option<State>,
    states: std::collections::VecDeque<(u64, State, u64)>,
}

impl Stream {
    fn new(epoch: u64, seq: u64, state: Option<State>) -> Self {
        Stream {
            epoch,
            first: seq,
            last: seq,
            state,
            ..Stream::default()
        }
    }

    /// A tick came (whether or not it is newer than the symbol's latest value); seqs
    /// missing before it are a run lost for `why` (`None`: folded into it, not lost).
    fn received(&mut self, tick: &Tick, why: Option<GapReason>) {
        let (epoch, seq) = (tick.epoch, tick.seq);
        if epoch != self.epoch {
            // A new epoch: seqs jump forward, and nothing of the old one is owed.
            *self = Stream::new(epoch, seq, tick.state);
            return;
        }
        if seq > self.last
            && let Some(state) = tick.state
            && self.state != Some(state)
        {
            if self.states.len() == STATES_KEPT {
                self.states.pop_front();
            }
            self.states.push_back((seq, state, tick.ts));
            self.state = Some(state);
        }
        if let Some(why) = why
            && seq > self.last + 1
        {
            if self.gaps.len() == GAPS_KEPT
                && let Some((_, to, _)) = self.gaps.pop_front()
            {
                self.forgotten_to = to;
            }
            self.gaps.push_back((self.last + 1, seq - 1, why));
        }
        self.last = self.last.max(seq);
    }

    /// What an update with `tick` stands for, to a session that last had `had_seq` of
    /// `had_epoch`: the gaps to tell it of first (into `gaps`), and its `from_seq`. The
    /// stream is the symbol's, if the edge received any of it.
    fn cover(
        stream: Option<&Stream>,
        symbol: &Symbol,
        (had_epoch, had_seq): (u64, u64),
        tick: &Tick,
        gaps: &mut Vec<Gap>,
    ) -> Option<u64> {
        let mut gap = |from: u64, to: u64, reason: GapReason| {
            gaps.push(Gap {
                symbol: symbol.clone(),
                epoch: tick.epoch,
                from_seq: from,
                to_seq: to,
                reason,
            });
        };
        let from_stream =
            stream.filter(|s| tick.epoch == s.epoch && (s.first..=s.last).contains(&tick.seq));
        let Some(stream) = from_stream else {
            // A value the edge read from KV, not from its stream: what came between it
            // and what the session had never reached the edge.
            if had_epoch == tick.epoch && had_seq.saturating_add(1) < tick.seq {
                gap(had_seq + 1, tick.seq - 1, GapReason::Snapshot);
            }
            return None;
        };
        let first = stream.first;
        let mut start = had_seq.saturating_add(1);
        if start < first {
            if had_epoch == stream.epoch {
                gap(start, first - 1, GapReason::Snapshot);
            }
            start = first;
        }
        if stream.forgotten_to >= start {
            // Runs too old to be kept: they are reported as one, from where the session
            // stands, which may count ticks the edge did receive.
            gap(start, stream.forgotten_to, GapReason::Upstream);
            start = stream.forgotten_to + 1;
        }
        for &(from, to, why) in &stream.gaps {
            if to >= start && from < tick.seq {
                gap(from.max(start), to.min(tick.seq - 1), why);
                start = to + 1;
            }
        }
        (start < tick.seq).then_some(start)
    }

    /// The changes of state an update with `tick` passes over, to a session that last
    /// had `had_seq` of `had_epoch` in state `had`: those the stream kept, then the
    /// tick's own state if it still differs (a change the edge did not see, or forgot).
    fn states(
        stream: Option<&Stream>,
        (had_epoch, had_seq): (u64, u64),
        had: Option<State>,
        tick: &Tick,
    ) -> Vec<StateChange> {
        let mut out = Vec::new();
        let mut now = had;
        if let Some(stream) = stream.filter(|s| s.epoch == tick.epoch && had_epoch == s.epoch) {
            for &(seq, state, ts) in &stream.states {
                if seq > had_seq && seq <= tick.seq && now != Some(state) {
                    out.push(StateChange {
                        state,
                        was: now,
                        ts,
                    });
                    now = Some(state);
                }
            }
        }
        if let Some(state) = tick.state
            && now != Some(state)
        {
            out.push(StateChange {
                state,
                was: now,
                ts: tick.ts,
            });
        }
        out
    }
}

/// What a session must send now.
#[derive(Debug, Default)]
pub struct Drained {
    /// Awaited snapshots, to send before the frames: the tick and the mode of each.
    pub snapshots: Vec<(Arc<SharedTick>, Mode)>,
    /// Ticks that never reached the edge, to tell of before the frames.
    pub gaps: Vec<Gap>,
    pub frames: Vec<Frame>,
    /// The session was moved to conflation at this interval (`slow_consumer`).
    pub slow_consumer: Option<u32>,
    /// When to drain again if nothing wakes the session first.
    pub next_due: Option<Instant>,
    /// Bytes that were waiting in the every-tick queue (for the queue-size histogram).
    pub queued_bytes: usize,
}

impl Drained {
    /// Adds what another core had for the same session (delayed data): its snapshots,
    /// gaps and frames after these, the sooner of the two next drains.
    pub fn merge(&mut self, other: Drained) {
        self.snapshots.extend(other.snapshots);
        self.gaps.extend(other.gaps);
        self.frames.extend(other.frames);
        self.slow_consumer = self.slow_consumer.or(other.slow_consumer);
        self.next_due = match (self.next_due, other.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.queued_bytes += other.queued_bytes;
    }
}

/// Sizes of the collections the core keeps, summed over symbols and sessions: what a
/// test asserts stays bounded by the subscriptions. Costs a walk over both.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub sessions: usize,
    pub subscriptions: usize,
    /// Conflated subscriptions (interval > 0).
    pub conflated: usize,
    /// Carried symbols (slots).
    pub symbols: usize,
    pub armed: usize,
    pub live: usize,
    pub awaiting: usize,
    /// Entries of the sessions' interval groups' dirty sets.
    pub dirty: usize,
    pub groups: usize,
    /// Snapshots ready to go out.
    pub snapshots: usize,
    /// Ticks in the sessions' every-tick queues (bounded by the byte budget).
    pub queued: usize,
    /// Symbols the sessions left and remember.
    pub left: usize,
    /// Entries of the sessions' orders of the symbols they left.
    pub left_order: usize,
    /// The largest `left` of one session.
    pub max_left: usize,
    /// Per-symbol floors of seqs given to sessions that had to forget them.
    pub forgotten: usize,
}

#[derive(Debug)]
pub struct Fanout<W> {
    config: FanoutConfig,
    symbols: HashMap<Symbol, Slot>,
    sessions: Sessions<W>,
    /// Per symbol, the highest seq given to a session that has since had to forget it
    /// (see `Session::remember`): the floor of a forgetful session's next subscription,
    /// so that guarantee 1 holds without the session's memory growing. At most one entry
    /// per symbol that ever had a value on this edge.
    forgotten: HashMap<Symbol, u64>,
}

impl<W: Wake> Fanout<W> {
    pub fn new(config: FanoutConfig) -> Self {
        Fanout {
            config,
            symbols: HashMap::new(),
            sessions: Sessions::default(),
            forgotten: HashMap::new(),
        }
    }

    /// Registers a session that may hold up to `max_symbols`: it remembers as many of the
    /// symbols it leaves, so that subscribing to them again keeps the guarantees.
    pub fn add_session(&mut self, id: SessionId, waker: W, max_symbols: usize) {
        self.add_session_queued(id, waker, max_symbols, Queued::default());
    }

    /// Like [`Fanout::add_session`], with the session's every-tick queue counted in
    /// `queued`, which other cores holding the session's other symbols share: the byte
    /// budget is then over all of them.
    pub fn add_session_queued(
        &mut self,
        id: SessionId,
        waker: W,
        max_symbols: usize,
        queued: Queued,
    ) {
        self.sessions
            .insert(id, Session::new(waker, max_symbols, queued));
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

    /// Sizes of everything the core keeps (see [`Footprint`]).
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint {
            sessions: self.sessions.len(),
            symbols: self.symbols.len(),
            forgotten: self.forgotten.len(),
            ..Footprint::default()
        };
        for slot in self.symbols.values() {
            f.armed += slot.armed.len();
            f.live += slot.live.len();
            f.awaiting += slot.awaiting.len();
        }
        for s in self.sessions.values() {
            f.subscriptions += s.subs.len();
            f.conflated += s.subs.values().filter(|s| s.interval_ms > 0).count();
            f.dirty += s.groups.values().map(|g| g.dirty.len()).sum::<usize>();
            f.groups += s.groups.len();
            f.snapshots += s.snapshots.len();
            f.queued += s.live.len();
            f.left += s.left.len();
            f.left_order += s.left_order.len();
            f.max_left = f.max_left.max(s.left.len());
        }
        f
    }

    /// Subscribes (or changes mode and interval in place, keeping what the session has:
    /// no new snapshot, and no update sooner than the interval allows).
    pub fn subscribe(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        mode: Mode,
        interval_ms: u32,
    ) -> Subscribed {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Subscribed::default();
        };
        match session.subs.get(symbol).copied() {
            Some(old) => self.change(id, symbol, old, mode, interval_ms),
            None => self.add(id, symbol, mode, interval_ms),
        }
    }

    fn add(&mut self, id: SessionId, symbol: &Symbol, mode: Mode, interval_ms: u32) -> Subscribed {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Subscribed::default();
        };
        let (last_seq, last_sent) = session.recall(symbol.as_str(), &self.forgotten);
        let slot = self.symbols.entry(symbol.clone()).or_default();
        slot.count += 1;
        let feed = if interval_ms == 0 {
            Feed::Live(slot.enlist(List::Live, id))
        } else {
            session.join_group(interval_ms);
            Feed::Armed(slot.enlist(List::Armed, id))
        };
        let mut fetch = false;
        let snap = if slot.latest.is_some() {
            // Taken at once by `take_snapshot`, or sent by the next drain.
            session.snapshots.insert(symbol.clone());
            Snap::Ready
        } else {
            fetch = !std::mem::replace(&mut slot.fetching, true);
            Snap::Awaiting(slot.enlist(List::Awaiting, id))
        };
        session.subs.insert(
            symbol.clone(),
            Sub {
                mode,
                interval_ms,
                last_seq,
                last_epoch: 0,
                last_state: None,
                last_sent,
                feed,
                snap,
            },
        );
        Subscribed {
            new_interest: slot.count == 1,
            new_subscription: true,
            latest: slot.latest.clone(),
            fetch,
            snapshot: None,
        }
    }

    /// A subscribe for a symbol the session holds: mode and interval change in place.
    fn change(
        &mut self,
        id: SessionId,
        symbol: &Symbol,
        old: Sub,
        mode: Mode,
        interval_ms: u32,
    ) -> Subscribed {
        let Some(slot) = self.symbols.get_mut(symbol) else {
            return Subscribed::default();
        };
        let moves = old.interval_ms != interval_ms;
        if moves {
            match old.feed {
                Feed::Live(at) => delist(
                    slot,
                    List::Live,
                    at,
                    id,
                    symbol.as_str(),
                    &mut self.sessions,
                ),
                Feed::Armed(at) => delist(
                    slot,
                    List::Armed,
                    at,
                    id,
                    symbol.as_str(),
                    &mut self.sessions,
                ),
                Feed::Dirty => {}
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Subscribed::default();
        };
        if let Some(sub) = session.subs.get_mut(symbol) {
            sub.mode = mode;
        }
        if moves {
            if old.interval_ms > 0 {
                session.leave_group(old.interval_ms, symbol.as_str());
            }
            if interval_ms == 0 {
                feed_live(session, slot, id, symbol);
            } else {
                feed_conflated(session, slot, id, symbol, interval_ms);
            }
        }
        Subscribed {
            latest: slot.latest.clone(),
            ..Subscribed::default()
        }
    }

    /// The KV read started for a [`Subscribed::fetch`] finished: `candidate` becomes the
    /// symbol's latest value unless the edge already has a newer one, and every session
    /// awaiting a snapshot of the symbol gets it at its next drain. Returns how many
    /// sessions were served. If KV had no value (or could not be read), they keep waiting:
    /// the first live tick will be their snapshot.
    pub fn offer_snapshot(&mut self, symbol: &str, candidate: Option<Arc<SharedTick>>) -> usize {
        let Some((key, slot)) = self.symbols.get_key_value(symbol) else {
            return 0;
        };
        let key = key.clone();
        let fresher = candidate.filter(|c| slot.latest.as_ref().is_none_or(|l| l.seq() < c.seq()));
        let Some(slot) = self.symbols.get_mut(symbol) else {
            return 0;
        };
        slot.fetching = false;
        if fresher.is_some() {
            slot.latest = fresher;
        }
        if slot.latest.is_none() {
            return 0;
        }
        let waiting = std::mem::take(&mut slot.awaiting);
        let served = waiting.len();
        for id in waiting {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.snapshot_ready(&key);
            }
        }
        served
    }

    /// The symbol's latest value, if the edge carries it and has one.
    pub fn latest(&self, symbol: &str) -> Option<Arc<SharedTick>> {
        self.symbols.get(symbol)?.latest.clone()
    }

    /// Unsubscribes; returns true when nobody on this edge wants the symbol any more.
    pub fn unsubscribe(&mut self, id: SessionId, symbol: &str) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some((symbol, sub)) = session.subs.remove_entry(symbol) else {
            return false;
        };
        session.snapshots.remove(&symbol);
        if sub.interval_ms > 0 {
            session.leave_group(sub.interval_ms, symbol.as_str());
        }
        session.remember(symbol.clone(), &sub, &mut self.forgotten);
        self.release(id, &symbol, sub)
    }

    /// Takes a subscription that left its session out of its slot; true when the slot
    /// went with it.
    fn release(&mut self, id: SessionId, symbol: &Symbol, sub: Sub) -> bool {
        let Some(slot) = self.symbols.get_mut(symbol) else {
            return false;
        };
        match sub.feed {
            Feed::Live(at) => delist(
                slot,
                List::Live,
                at,
                id,
                symbol.as_str(),
                &mut self.sessions,
            ),
            Feed::Armed(at) => delist(
                slot,
                List::Armed,
                at,
                id,
                symbol.as_str(),
                &mut self.sessions,
            ),
            Feed::Dirty => {}
        }
        if let Snap::Awaiting(at) = sub.snap {
            delist(
                slot,
                List::Awaiting,
                at,
                id,
                symbol.as_str(),
                &mut self.sessions,
            );
        }
        slot.count = slot.count.saturating_sub(1);
        if slot.count == 0 {
            self.symbols.remove(symbol);
            return true;
        }
        false
    }

    /// Offers a snapshot candidate (from KV) for a new subscription and takes the
    /// subscription's snapshot if it can go out now: the fresher of `candidate` and the
    /// edge's own latest, if it is newer than anything the session already has and the
    /// session was not given the symbol within its interval. Otherwise the snapshot is
    /// awaited (the next tick, when nothing is newer) or held until the interval allows
    /// it, and comes out of [`Fanout::drain`]. A subscription that already had its
    /// snapshot (a change in place) gets none.
    pub fn take_snapshot(
        &mut self,
        id: SessionId,
        symbol: &str,
        candidate: Option<Arc<SharedTick>>,
        now: Instant,
    ) -> Option<Arc<SharedTick>> {
        let (key, slot) = self.symbols.get_key_value(symbol)?;
        let key = key.clone();
        let fresher = candidate.filter(|c| slot.latest.as_ref().is_none_or(|l| l.seq() < c.seq()));
        let slot = self.symbols.get_mut(symbol)?;
        if fresher.is_some() {
            slot.latest = fresher;
        }
        let best = slot.latest.clone()?;
        let sub = *self.sessions.get(&id)?.subs.get(symbol)?;
        if sub.snap == Snap::Sent {
            return None;
        }
        if best.seq() <= sub.last_seq {
            // Subscribed again with nothing newer yet: the next tick is the snapshot.
            if sub.snap == Snap::Ready {
                let at = slot.enlist(List::Awaiting, id);
                let session = self.sessions.get_mut(&id)?;
                session.snapshots.remove(symbol);
                session.subs.get_mut(symbol)?.snap = Snap::Awaiting(at);
            }
            return None;
        }
        if let Snap::Awaiting(at) = sub.snap {
            delist(slot, List::Awaiting, at, id, symbol, &mut self.sessions);
        }
        let session = self.sessions.get_mut(&id)?;
        let entry = session.subs.get_mut(symbol)?;
        if entry.held_until(now, self.config.beats.of(id)).is_some() {
            // Given within its interval before it left: the snapshot waits its turn.
            entry.snap = Snap::Ready;
            session.snapshots.insert(key);
            session.wake();
            return None;
        }
        entry.snap = Snap::Sent;
        entry.delivered(&best, now);
        session.snapshots.remove(symbol);
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
        let why = match (tick.delayed_ms, tick.after_reconnect) {
            (Some(_), _) => None,
            (None, true) => Some(GapReason::Reconnect),
            (None, false) => Some(GapReason::Upstream),
        };
        match &mut slot.stream {
            Some(stream) => stream.received(&tick.tick, why),
            None => {
                let t = &tick.tick;
                slot.stream = Some(Stream::new(t.epoch, t.seq, t.state));
            }
        }
        if slot.latest.as_ref().is_some_and(|l| l.seq() >= tick.seq()) {
            return false;
        }
        slot.latest = Some(tick.clone());
        // A first (or newer) value: it is the snapshot of whoever was waiting for one.
        for id in std::mem::take(&mut slot.awaiting) {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.snapshot_ready(&symbol);
            }
        }
        let beats = self.config.beats;
        for id in std::mem::take(&mut slot.armed) {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.mark_dirty(&symbol, beats.of(id));
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
            let mode = sub.mode;
            if session.enqueue(tick.clone(), mode) > budget {
                overflowed.push(id);
            }
        }
        for id in overflowed {
            self.fall_back_to_conflation(id, true);
        }
        true
    }

    /// Moves every every-tick subscription of a slow session to conflation; with
    /// `notify`, the session is told (`slow_consumer`) at its next drain. Another core
    /// that found the session over its budget tells it once for all.
    pub fn fall_back_to_conflation(&mut self, id: SessionId, notify: bool) {
        let interval = self.config.slow_interval_ms;
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        // What was queued is not lost: a symbol with a value the session has not had is
        // dirty at once in its new group.
        session.clear_queue();
        if notify {
            session.slow_notice = Some(interval);
            session.wake();
        }
        let moved: Vec<(Symbol, usize)> = session
            .subs
            .iter()
            .filter_map(|(symbol, sub)| match sub.feed {
                Feed::Live(at) => Some((symbol.clone(), at)),
                _ => None,
            })
            .collect();
        for (symbol, at) in moved {
            let Some(slot) = self.symbols.get_mut(&symbol) else {
                continue;
            };
            delist(
                slot,
                List::Live,
                at,
                id,
                symbol.as_str(),
                &mut self.sessions,
            );
            let Some(session) = self.sessions.get_mut(&id) else {
                return;
            };
            feed_conflated(session, slot, id, &symbol, interval);
        }
    }

    /// Everything the session must send now, and when to come back.
    pub fn drain(&mut self, id: SessionId, now: Instant) -> Drained {
        let mut out = Drained::default();
        let mut ticks = Frame::new();
        out.next_due = self.drain_into(id, now, &mut out, &mut ticks);
        into_frames(ticks, self.config.max_ticks_per_frame, &mut out.frames);
        out
    }

    /// [`Fanout::drain`] into what the caller collects from several cores: snapshots,
    /// the slow-consumer notice and queued bytes into `out`, the updates into `ticks` in
    /// the order they go out (`out.frames` and `out.next_due` are left alone). Returns
    /// when to drain this core again if nothing wakes the session first.
    pub fn drain_into(
        &mut self,
        id: SessionId,
        now: Instant,
        out: &mut Drained,
        frame: &mut Frame,
    ) -> Option<Instant> {
        let session = self.sessions.get_mut(&id)?;
        session.wake_pending = false;
        if let Some(interval) = session.slow_notice.take() {
            out.slow_consumer = Some(interval);
        }
        out.queued_bytes += session.unqueued();
        let beats = self.config.beats.of(id);
        let mut next_due: Option<Instant> = None;
        let mut keep = |at: Instant| next_due = Some(next_due.map_or(at, |n| n.min(at)));

        // Owed snapshots first: the latest value now, so that nothing queued for the
        // symbol before it goes out after it. One the interval does not allow yet waits.
        if !session.snapshots.is_empty() {
            let mut held = Vec::new();
            for symbol in session.snapshots.drain() {
                let Some(sub) = session.subs.get_mut(&symbol) else {
                    continue;
                };
                let Some(slot) = self.symbols.get_mut(&symbol) else {
                    continue;
                };
                let Some(latest) = &slot.latest else {
                    continue;
                };
                if sub.snap != Snap::Ready {
                    continue;
                }
                if latest.seq() <= sub.last_seq {
                    // Nothing newer than what the session had before it subscribed again:
                    // the next tick is its snapshot.
                    sub.snap = Snap::Awaiting(slot.enlist(List::Awaiting, id));
                } else if let Some(at) = sub.held_until(now, beats) {
                    keep(at);
                    held.push(symbol);
                } else {
                    sub.snap = Snap::Sent;
                    sub.delivered(latest, now);
                    out.snapshots.push((latest.clone(), sub.mode));
                }
            }
            session.snapshots.extend(held);
        }

        // Every-tick queue: in order, skipping anything the session already has, and
        // anything queued before the subscription left every-tick or subscribed again.
        while let Some((tick, _)) = session.live.pop_front() {
            let Some(sub) = session.subs.get_mut(tick.tick.symbol.as_str()) else {
                continue;
            };
            if !matches!(sub.feed, Feed::Live(_))
                || sub.snap != Snap::Sent
                || tick.seq() <= sub.last_seq
            {
                continue;
            }
            // The next seq after what the session had stands for itself alone, and no
            // tick can be missing before it: no lookup on the hot path.
            let next = tick.seq() == sub.last_seq + 1 && tick.tick.epoch == sub.last_epoch;
            let had = (sub.last_epoch, sub.last_seq);
            let (from_seq, states) = match next {
                // Its own state is the only change it can make.
                true => (None, Stream::states(None, had, sub.last_state, &tick.tick)),
                false => match self.symbols.get_key_value(tick.tick.symbol.as_str()) {
                    Some((symbol, slot)) => {
                        let stream = slot.stream.as_ref();
                        (
                            Stream::cover(stream, symbol, had, &tick.tick, &mut out.gaps),
                            Stream::states(stream, had, sub.last_state, &tick.tick),
                        )
                    }
                    None => (None, Stream::states(None, had, sub.last_state, &tick.tick)),
                },
            };
            sub.delivered(&tick, now);
            let mode = sub.mode;
            frame.push(Update {
                tick,
                mode,
                from_seq,
                states,
            });
        }

        // Conflated groups that are due: the latest value of each changed symbol, unless
        // the symbol went out within its interval (it subscribed again, or changed
        // interval): that one stays dirty for the group's next flush. On a shared clock
        // the value is the one every session flushing at the same instant gets.
        for group in session.groups.values_mut() {
            let Some(due) = group.due(now, beats) else {
                continue;
            };
            if due > now {
                group.hot = true;
                keep(due);
                continue;
            }
            // The flush instant this drain belongs to: the last one (now, without a
            // shared clock). The holds above keep it an interval after the last update.
            let at = beats.down(now, group.interval_ms);
            let interval = Duration::from_millis(u64::from(group.interval_ms));
            let mut held = Vec::new();
            let mut held_until: Option<Instant> = None;
            let mut hold = |symbol: Symbol, until: Instant| {
                held_until = Some(held_until.map_or(until, |h| h.min(until)));
                held.push(symbol);
            };
            let mut sent = false;
            for symbol in group.dirty.drain() {
                let Some(sub) = session.subs.get_mut(&symbol) else {
                    continue;
                };
                let Some(slot) = self.symbols.get_mut(&symbol) else {
                    continue;
                };
                if sub.behind(slot.latest.as_ref()) {
                    if let Some(until) = sub.held_until(at, beats) {
                        hold(symbol, until);
                        continue;
                    }
                    let value = if beats.is_shared() {
                        slot.at_beat(at)
                    } else {
                        slot.latest.as_ref()
                    };
                    match value {
                        Some(value) if value.seq() > sub.last_seq => {
                            let value = value.clone();
                            let had = (sub.last_epoch, sub.last_seq);
                            let from_seq = Stream::cover(
                                slot.stream.as_ref(),
                                &symbol,
                                had,
                                &value.tick,
                                &mut out.gaps,
                            );
                            let states = Stream::states(
                                slot.stream.as_ref(),
                                had,
                                sub.last_state,
                                &value.tick,
                            );
                            sub.delivered(&value, at);
                            frame.push(Update {
                                tick: value,
                                mode: sub.mode,
                                from_seq,
                                states,
                            });
                            sent = true;
                        }
                        _ => {
                            // What this instant sends is older than what the session
                            // has (a snapshot went out since): the next instant sends
                            // the newer value.
                            hold(symbol, beats.up(at + interval, group.interval_ms));
                            continue;
                        }
                    }
                }
                // Sent, or nothing to send (an owed snapshot carries the latest value).
                sub.feed = Feed::Armed(slot.enlist(List::Armed, id));
            }
            group.dirty.extend(held);
            if let (false, Some(until)) = (sent, held_until) {
                // Nothing went out: the group has not flushed, and comes back when the
                // first held symbol may go.
                keep(until);
                continue;
            }
            group.last_flush = Some(at);
            if std::mem::take(&mut group.hot) || held_until.is_some() {
                // It will most likely have changed again by its next flush: come back
                // then rather than be woken by the first change and sleep again.
                keep(beats.up(at + interval, group.interval_ms));
            }
        }
        session.timer = next_due;
        next_due
    }
}

/// Cuts `ticks` into frames of at most `max` (at least 1) ticks, in order. An update
/// that changes its symbol's state starts a frame, so that its `status` goes out right
/// before it.
pub fn into_frames(mut ticks: Frame, max: usize, frames: &mut Vec<Frame>) {
    let max = max.max(1);
    if ticks.iter().any(|u| !u.states.is_empty()) {
        let mut frame = Frame::new();
        for update in ticks {
            if frame.len() == max || (!update.states.is_empty() && !frame.is_empty()) {
                frames.push(std::mem::take(&mut frame));
            }
            frame.push(update);
        }
        if !frame.is_empty() {
            frames.push(frame);
        }
        return;
    }
    while ticks.len() > max {
        let rest = ticks.split_off(max);
        frames.push(std::mem::replace(&mut ticks, rest));
    }
    if !ticks.is_empty() {
        frames.push(ticks);
    }
}

/// Feeds a subscription every tick from now on. A value it has not had yet is queued
/// first, so that leaving conflation loses nothing.
fn feed_live<W: Wake>(session: &mut Session<W>, slot: &mut Slot, id: SessionId, symbol: &Symbol) {
    let Some(sub) = session.subs.get_mut(symbol) else {
        return;
    };
    sub.interval_ms = 0;
    sub.feed = Feed::Live(slot.enlist(List::Live, id));
    if sub.behind(slot.latest.as_ref())
        && let Some(latest) = &slot.latest
    {
        let mode = sub.mode;
        session.enqueue(latest.clone(), mode);
    }
}

/// Feeds a subscription conflated at `interval_ms` (> 0) from now on: dirty at once if the
/// symbol has a value the session has not had (it goes out at the group's next flush the
/// interval allows), armed otherwise.
fn feed_conflated<W: Wake>(
    session: &mut Session<W>,
    slot: &mut Slot,
    id: SessionId,
    symbol: &Symbol,
    interval_ms: u32,
) {
    let Some(sub) = session.subs.get_mut(symbol) else {
        return;
    };
    sub.interval_ms = interval_ms;
    let pending = sub.behind(slot.latest.as_ref());
    sub.feed = if pending {
        Feed::Dirty
    } else {
        Feed::Armed(slot.enlist(List::Armed, id))
    };
    let group = session.join_group(interval_ms);
    if pending {
        group.dirty.insert(symbol.clone());
        session.wake();
    }
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
            beats: Default::default(),
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
        let sub = f.sessions[&id].subs[symbol];
        if let Snap::Awaiting(at) = sub.snap {
            let slot = f.symbols.get_mut(symbol).unwrap();
            delist(slot, List::Awaiting, at, id, symbol, &mut f.sessions);
        }
        f.sessions.get_mut(&id).unwrap().snapshots.remove(symbol);
        f.sessions
            .get_mut(&id)
            .unwrap()
            .subs
            .get_mut(symbol)
            .unwrap()
            .snap = Snap::Sent;
    }

    fn seqs(d: &Drained) -> Vec<(String, u64)> {
        d.frames
            .iter()
            .flatten()
            .map(|u| (u.tick.tick.symbol.clone(), u.tick.seq()))
            .collect()
    }

    #[test]
    fn interest_is_reference_counted() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
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
        f.add_session(1, w.clone(), 100);
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
        f.add_session(1, w.clone(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        let start = Instant::now();
        let t0 = start + Duration::from_millis(250);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        f.offer_snapshot("AAPL", Some(tick("AAPL", 1, 1.0)));
        assert_eq!(f.drain(1, start).snapshots.len(), 1);
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
        f.add_session(1, w.clone(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        let start = Instant::now();
        let t0 = start + Duration::from_millis(250);
        f.offer_snapshot("AAPL", Some(tick("AAPL", 1, 1.0)));
        assert_eq!(f.drain(1, start).snapshots.len(), 1);
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
        f.add_session(1, w1.clone(), 100);
        f.add_session(2, w2.clone(), 100);
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
        f.add_session(3, Counter::default(), 100);
        let c = f.subscribe(3, &sym("AAPL"), Mode::Quote, 0);
        assert_eq!(c.latest.map(|t| t.seq()), Some(6));
        assert!(!c.fetch);
    }

    #[test]
    fn a_live_tick_before_the_kv_read_is_the_snapshot() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
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
        f.add_session(1, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        assert_eq!(f.offer_snapshot("AAPL", None), 0, "still waiting");
        assert!(f.drain(1, Instant::now()).snapshots.is_empty());
        f.publish(tick("AAPL", 3, 3.0));
        let d = f.drain(1, Instant::now());
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [3]);
        assert!(seqs(&d).is_empty(), "not sent again as an update");
        // A session that left before its snapshot came is not served.
        f.add_session(2, Counter::default(), 100);
        f.subscribe(2, &sym("MSFT"), Mode::Quote, 0);
        f.unsubscribe(2, "MSFT");
        f.subscribe(2, &sym("SPY"), Mode::Quote, 0);
        f.add_session(3, Counter::default(), 100);
        f.subscribe(3, &sym("SPY"), Mode::Quote, 0);
        f.remove_session(2);
        assert_eq!(f.offer_snapshot("SPY", Some(tick("SPY", 1, 1.0))), 1);
    }

    #[test]
    fn subscribing_again_gets_the_next_tick_as_snapshot_once_the_interval_allows() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 0);
        f.publish(tick("AAPL", 5, 5.0));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(f.drain(1, t0).snapshots.len(), 1);
        // Session 1 leaves AAPL and comes back while session 2 keeps it: nothing newer
        // than seq 5 yet, so no snapshot now...
        f.unsubscribe(1, "AAPL");
        let again = f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        assert_eq!(again.latest.map(|t| t.seq()), Some(5));
        assert!(f.take_snapshot(1, "AAPL", None, ms(5)).is_none());
        // ...and the next tick is its snapshot, once 1000 ms have passed since seq 5.
        f.publish(tick("AAPL", 6, 6.0));
        let d = f.drain(1, ms(10));
        assert!(d.snapshots.is_empty() && d.frames.is_empty());
        assert_eq!(d.next_due, Some(ms(1000)));
        f.publish(tick("AAPL", 7, 7.0));
        let d = f.drain(1, ms(1000));
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [7], "the latest value when it may go");
        assert!(d.frames.is_empty());
        // The same when the edge dropped the symbol and KV is behind the session.
        f.remove_session(2);
        f.unsubscribe(1, "AAPL");
        assert!(f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000).fetch);
        assert_eq!(f.offer_snapshot("AAPL", Some(tick("AAPL", 4, 4.0))), 1);
        assert!(f.drain(1, ms(2100)).snapshots.is_empty());
        f.publish(tick("AAPL", 8, 8.0));
        let d = f.drain(1, ms(2200));
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [8], "at once: seq 7 went out over an interval ago");
    }

    #[test]
    fn subscribing_and_unsubscribing_in_a_loop_leaves_no_waiter_behind() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
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
        f.add_session(1, Counter::default(), 100);
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
            .map(|u| (u.tick.tick.symbol.as_str(), u.mode))
            .collect();
        assert!(modes.contains(&("AAPL", Mode::Ltp)) && modes.contains(&("MSFT", Mode::Full)));
    }

    #[test]
    fn every_tick_forwards_in_order_and_never_repeats_a_seq() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 0);
        let snap = f
            .take_snapshot(1, "AAPL", Some(tick("AAPL", 5, 5.0)), Instant::now())
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
        f.add_session(1, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        f.publish(tick("AAPL", 9, 9.0));
        // KV is behind the live feed: the live value is the snapshot.
        assert_eq!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 3, 3.0)), Instant::now())
                .unwrap()
                .seq(),
            9
        );
        // The pending live tick 9 is not sent again.
        assert!(f.drain(1, Instant::now()).frames.is_empty());
        assert!(f.take_snapshot(1, "AAPL", None, Instant::now()).is_none());
    }

    #[test]
    fn slow_every_tick_session_moves_fall_back_to_conflation_without_touching_others() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
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
        f.add_session(1, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        for seq in 1..=100_000 {
            f.publish(tick("AAPL", seq, 0.0));
        }
        let s = &f.sessions[&1];
        assert_eq!(s.groups.values().map(|g| g.dirty.len()).sum::<usize>(), 1);
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
        f.add_session(1, Counter::default(), 100);
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
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 7, 7.0)), Instant::now())
                .is_none()
        );
        assert!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 5, 5.0)), Instant::now())
                .is_none()
        );
        // Newer, once its interval has passed since seq 7 went out.
        let later = Instant::now() + Duration::from_millis(100);
        assert_eq!(
            f.take_snapshot(1, "AAPL", Some(tick("AAPL", 8, 8.0)), later)
                .unwrap()
                .seq(),
            8
        );
    }

    #[test]
    fn an_interval_change_keeps_the_pending_update_and_the_interval() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 100);
        settled(&mut f, 1, "AAPL");
        f.publish(tick("AAPL", 1, 1.0));
        assert_eq!(f.drain(1, t0).frames.len(), 1);
        f.publish(tick("AAPL", 2, 2.0));
        // Pending in the 100 ms group; the subscription moves to 1000 ms: the update goes
        // once, by the new group, 1000 ms after seq 1 went out.
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000);
        assert_eq!(f.sessions[&1].groups.len(), 1, "the 100 ms group is gone");
        let d = f.drain(1, ms(100));
        assert!(d.frames.is_empty(), "1000 ms now");
        assert_eq!(d.next_due, Some(ms(1000)));
        assert_eq!(seqs(&f.drain(1, ms(1000))), [("AAPL".into(), 2)]);
        f.publish(tick("AAPL", 3, 3.0));
        assert!(f.drain(1, ms(1100)).frames.is_empty());
        assert_eq!(seqs(&f.drain(1, ms(2000))), [("AAPL".into(), 3)]);
        // Unsubscribe with an update pending, subscribe again at once: no stray flush,
        // and no snapshot before the interval allows it.
        f.publish(tick("AAPL", 4, 4.0));
        f.unsubscribe(1, "AAPL");
        // The edge dropped AAPL with its last subscriber: KV has seq 4.
        assert!(f.subscribe(1, &sym("AAPL"), Mode::Quote, 1000).fetch);
        f.offer_snapshot("AAPL", Some(tick("AAPL", 4, 4.0)));
        assert!(f.take_snapshot(1, "AAPL", None, ms(2100)).is_none());
        let d = f.drain(1, ms(2100));
        assert!(d.frames.is_empty() && d.snapshots.is_empty());
        assert_eq!(d.next_due, Some(ms(3000)));
        let d = f.drain(1, ms(3000));
        let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
        assert_eq!(got, [4]);
        assert!(d.frames.is_empty());
    }

    /// Updates and snapshots of `symbol` in a drain.
    fn deliveries(d: &Drained, symbol: &str) -> usize {
        let snapshots = d.snapshots.iter().map(|(t, _)| t);
        let updates = d.frames.iter().flatten().map(|u| &u.tick);
        snapshots
            .chain(updates)
            .filter(|t| t.tick.symbol == symbol)
            .count()
    }

    #[test]
    fn in_place_resubscribes_on_a_quiet_symbol_keep_one_armed_entry() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.subscribe(1, &sym("QUIET"), Mode::Quote, 1000);
        f.offer_snapshot("QUIET", Some(tick("QUIET", 1, 1.0)));
        for i in 0..100_000u32 {
            let mode = if i % 2 == 0 { Mode::Ltp } else { Mode::Quote };
            f.subscribe(1, &sym("QUIET"), mode, 1000);
        }
        assert_eq!(f.symbols["QUIET"].armed, [1]);
        // Unsubscribe/subscribe cycles and interval changes leave nothing behind either.
        for i in 0..10_000u32 {
            f.unsubscribe(1, "QUIET");
            f.subscribe(1, &sym("QUIET"), Mode::Quote, 1000 + i % 7);
        }
        let fp = f.footprint();
        assert_eq!((fp.armed, fp.live, fp.dirty), (1, 0, 0));
        assert_eq!(fp.groups, 1, "one group per interval in use");
        assert!(fp.left <= 1 && fp.snapshots + fp.awaiting <= 1, "{fp:?}");
        assert!(fp.left_order <= 2 * fp.left + 16, "{fp:?}");
        // The first tick walks one entry and marks the session dirty once.
        f.publish(tick("QUIET", 2, 2.0));
        assert_eq!(f.footprint().dirty, 1);
    }

    /// A client re-sending `subscribe` every 100 ms, the way the session glue handles it
    /// (a snapshot is taken for new subscriptions only), while the symbol ticks every
    /// 10 ms; `step` changes the request each time. Returns the deliveries per second.
    fn resend_every_100ms(
        step: impl Fn(&mut Fanout<Counter>, u32, Instant) -> usize,
    ) -> Vec<usize> {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 0);
        f.publish(tick("AAPL", 1, 1.0));
        let t0 = Instant::now();
        let mut per_second = vec![0; 5];
        let mut seq = 1;
        for ms in 0..5000u32 {
            let now = t0 + Duration::from_millis(u64::from(ms));
            if ms % 10 == 0 {
                seq += 1;
                f.publish(tick("AAPL", seq, 0.0));
            }
            let second = (ms / 1000) as usize;
            if ms % 100 == 0 {
                per_second[second] += step(&mut f, ms / 100, now);
            }
            let d = f.drain(1, now);
            per_second[second] += deliveries(&d, "AAPL");
            f.drain(2, now);
        }
        per_second
    }

    /// Returns 1 if a snapshot went out at once.
    fn subscribe_like_a_session(f: &mut Fanout<Counter>, interval_ms: u32, now: Instant) -> usize {
        let new = f
            .subscribe(1, &sym("AAPL"), Mode::Quote, interval_ms)
            .new_subscription;
        usize::from(new && f.take_snapshot(1, "AAPL", None, now).is_some())
    }

    #[test]
    fn re_sending_subscribe_never_beats_the_interval() {
        let resend = resend_every_100ms(|f, _, now| subscribe_like_a_session(f, 1000, now));
        let stepped = resend_every_100ms(|f, i, now| subscribe_like_a_session(f, 1000 + i, now));
        let cycled = resend_every_100ms(|f, _, now| {
            f.unsubscribe(1, "AAPL");
            subscribe_like_a_session(f, 1000, now)
        });
        for (what, per_second) in [("resend", resend), ("stepped", stepped), ("cycled", cycled)] {
            assert!(
                per_second.iter().all(|&n| n == 1),
                "{what}: {per_second:?} deliveries per second"
            );
        }
    }

    #[test]
    fn a_session_remembers_at_most_max_symbols_it_left_and_never_goes_back() {
        let mut f = core();
        f.add_session(1, Counter::default(), 3);
        f.add_session(2, Counter::default(), 3);
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_millis(300 * i);
        let names: Vec<String> = (0..10).map(|i| format!("S{i}")).collect();
        // Session 2 keeps every symbol on the edge, at seq 5 each.
        for name in &names {
            f.subscribe(2, &sym(name), Mode::Quote, 0);
            f.publish(tick(name, 5, 5.0));
        }
        for (i, name) in names.iter().enumerate() {
            f.subscribe(1, &sym(name), Mode::Quote, 250);
            let snapshot = f.take_snapshot(1, name, None, at(i as u64));
            assert_eq!(snapshot.map(|t| t.seq()), Some(5));
            f.unsubscribe(1, name);
        }
        let fp = f.footprint();
        assert_eq!(fp.max_left, 3, "capped at max_symbols");
        // Whether remembered or forgotten, seq 5 is never given again; seq 6 is, once
        // the interval allows.
        for (i, name) in names.iter().enumerate() {
            let later = at(10 + i as u64);
            f.subscribe(1, &sym(name), Mode::Quote, 250);
            assert!(f.take_snapshot(1, name, None, later).is_none(), "{name}");
            f.publish(tick(name, 6, 6.0));
            let d = f.drain(1, later);
            let got: Vec<_> = d.snapshots.iter().map(|(t, _)| t.seq()).collect();
            assert_eq!(got, [6], "{name}");
            f.unsubscribe(1, name);
        }
        assert!(f.footprint().max_left <= 3);
    }

    /// The symbols session 1 remembers having left, sorted.
    fn left_symbols(f: &Fanout<Counter>) -> Vec<String> {
        let mut left: Vec<String> = f.sessions[&1].left.keys().map(|s| s.to_string()).collect();
        left.sort();
        left
    }

    #[test]
    fn past_the_cap_the_symbol_left_longest_ago_is_forgotten() {
        let mut f = core();
        f.add_session(1, Counter::default(), 3);
        let now = Instant::now();
        let cycle = |f: &mut Fanout<Counter>, name: &str, seq: u64| {
            f.subscribe(1, &sym(name), Mode::Quote, 0);
            f.publish(tick(name, seq, 1.0));
            f.drain(1, now);
            f.unsubscribe(1, name);
        };
        for name in ["S0", "S1", "S2"] {
            cycle(&mut f, name, 5);
        }
        assert_eq!(left_symbols(&f), ["S0", "S1", "S2"]);
        cycle(&mut f, "S3", 5);
        assert_eq!(left_symbols(&f), ["S1", "S2", "S3"], "S0 went first");
        // S1 taken back and left again: now the latest left, so S2 goes next.
        cycle(&mut f, "S1", 6);
        assert_eq!(left_symbols(&f), ["S1", "S2", "S3"]);
        cycle(&mut f, "S4", 5);
        assert_eq!(left_symbols(&f), ["S1", "S3", "S4"], "S2 went, not S1");
        // What was forgotten is kept as the core's floor, so S0 and S2 never repeat.
        assert_eq!(
            (f.forgotten.get("S0"), f.forgotten.get("S2")),
            (Some(&5), Some(&5))
        );
        assert!(!f.forgotten.contains_key("S1") && !f.forgotten.contains_key("S3"));
    }

    /// A core on a shared clock (one slot) started at `origin`, with sessions 1 and 2
    /// subscribed to AAPL at 250 ms and seq 1 in hand for their snapshots.
    fn two_on_a_clock(origin: Instant) -> Fanout<Counter> {
        let mut f = Fanout::new(FanoutConfig {
            beats: Beats::shared(origin, 1),
            ..core().config
        });
        for id in [1, 2] {
            f.add_session(id, Counter::default(), 100);
            f.subscribe(id, &sym("AAPL"), Mode::Quote, 250);
        }
        f.offer_snapshot("AAPL", Some(tick("AAPL", 1, 1.0)));
        f
    }

    #[test]
    fn on_the_shared_clock_sessions_of_an_interval_flush_at_one_instant_with_one_frame() {
        let origin = Instant::now();
        let ms = |n: u64| origin + Duration::from_millis(n);
        let mut f = two_on_a_clock(origin);
        // Subscribed at different moments: each gets its snapshot at once.
        assert_eq!(f.drain(1, ms(0)).snapshots.len(), 1);
        assert_eq!(f.drain(2, ms(170)).snapshots.len(), 1);
        f.publish(tick("AAPL", 2, 2.0));
        // The next update comes at the first flush instant at least an interval after
        // the snapshot: 250 for the first session, 500 (not 420) for the second.
        let d = f.drain(1, ms(100));
        assert_eq!(d.next_due, Some(ms(250)));
        assert_eq!(seqs(&f.drain(1, ms(250))), [("AAPL".to_string(), 2)]);
        let d = f.drain(2, ms(260));
        assert!(d.frames.is_empty());
        assert_eq!(d.next_due, Some(ms(500)));
        f.publish(tick("AAPL", 3, 3.0));
        // From then on both flush at 500, 750, ...: what each gets at an instant is the
        // value the first of them took, although a newer tick came in between the two
        // drains, and its frame is one and the same.
        let first = f.drain(1, ms(500));
        f.publish(tick("AAPL", 4, 4.0));
        let second = f.drain(2, ms(503));
        assert_eq!(seqs(&first), [("AAPL".to_string(), 3)]);
        assert_eq!(seqs(&second), [("AAPL".to_string(), 3)]);
        let (a, b) = (&first.frames[0][0].tick, &second.frames[0][0].tick);
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(
            a.frame_alone(Format::Json, Mode::Quote).as_ptr(),
            b.frame_alone(Format::Json, Mode::Quote).as_ptr(),
            "the frame is built once"
        );
        // A session drained late (at 760, past 750) is given the value of 750, and its
        // next flush is still at 1000: late once, it does not lose its place.
        f.publish(tick("AAPL", 5, 5.0));
        assert_eq!(seqs(&f.drain(2, ms(760))), [("AAPL".to_string(), 5)]);
        f.publish(tick("AAPL", 6, 6.0));
        let d = f.drain(2, ms(990));
        assert!(d.frames.is_empty());
        assert_eq!(d.next_due, Some(ms(1000)));
        assert_eq!(seqs(&f.drain(2, ms(1000))), [("AAPL".to_string(), 6)]);
    }

    #[test]
    fn on_the_shared_clock_a_value_older_than_what_the_session_has_waits_for_the_next_instant() {
        let origin = Instant::now();
        let ms = |n: u64| origin + Duration::from_millis(n);
        let mut f = two_on_a_clock(origin);
        assert_eq!(f.drain(1, ms(0)).snapshots.len(), 1);
        assert_eq!(f.drain(2, ms(0)).snapshots.len(), 1);
        f.publish(tick("AAPL", 2, 2.0));
        assert_eq!(seqs(&f.drain(1, ms(250))), [("AAPL".to_string(), 2)]);
        assert_eq!(seqs(&f.drain(2, ms(250))), [("AAPL".to_string(), 2)]);
        // The first session takes seq 3 for the instant 500; the second re-subscribes
        // in between and, an interval after its last update, gets seq 4 as its snapshot.
        f.publish(tick("AAPL", 3, 3.0));
        assert_eq!(seqs(&f.drain(1, ms(500))), [("AAPL".to_string(), 3)]);
        f.publish(tick("AAPL", 4, 4.0));
        f.unsubscribe(2, "AAPL");
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 250);
        let d = f.drain(2, ms(501));
        assert_eq!(d.snapshots.len(), 1);
        assert_eq!(d.snapshots[0].0.seq(), 4);
        // Seq 3, what the instant 500 sends, is older: nothing goes back. The snapshot
        // went out at 501, so seq 5 waits for the first instant an interval after it.
        f.publish(tick("AAPL", 5, 5.0));
        let d = f.drain(2, ms(502));
        assert!(d.frames.is_empty(), "{:?}", seqs(&d));
        assert_eq!(d.next_due, Some(ms(1000)));
        assert_eq!(seqs(&f.drain(2, ms(1000))), [("AAPL".to_string(), 5)]);
        assert_eq!(seqs(&f.drain(1, ms(750))), [("AAPL".to_string(), 5)]);
    }

    fn in_state(s: &str, seq: u64, state: State) -> Arc<SharedTick> {
        let mut t = tick(s, seq, seq as f64).tick.clone();
        (t.state, t.ts) = (Some(state), 1000 + seq);
        Arc::new(SharedTick::new(t, 100))
    }

    /// Each frame's leading changes of state, then its seqs: what the session writes.
    fn told(d: &Drained) -> Vec<(Vec<State>, Vec<u64>)> {
        let frames = d.frames.iter();
        let state = |f: &Frame| f[0].states.iter().map(|c| c.state).collect();
        frames
            .map(|f| (state(f), f.iter().map(|u| u.tick.seq()).collect()))
            .collect()
    }

    #[test]
    fn a_change_of_state_is_never_conflated_away_and_goes_right_before_its_update() {
        use State::{Halted, Open};
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
        f.add_session(2, Counter::default(), 100);
        f.subscribe(1, &sym("AAPL"), Mode::Quote, 250);
        f.subscribe(2, &sym("AAPL"), Mode::Quote, 0);
        let t0 = Instant::now();
        f.publish(in_state("AAPL", 1, Open));
        assert_eq!(f.drain(1, t0).snapshots.len(), 1);
        assert_eq!(f.drain(2, t0).snapshots.len(), 1);
        // Halted at 3, open again at 5, all within one interval of the conflated session.
        for (seq, state) in [(2, Open), (3, Halted), (4, Halted), (5, Open), (6, Open)] {
            f.publish(in_state("AAPL", seq, state));
        }
        let every = f.drain(2, t0);
        assert_eq!(
            told(&every),
            [
                (vec![], vec![2]),
                (vec![Halted], vec![3, 4]),
                (vec![Open], vec![5, 6])
            ],
            "every tick: each change right before the tick that made it"
        );
        let reasons: Vec<_> = every.frames[1..]
            .iter()
            .map(|f| f[0].states[0].state.reason(f[0].states[0].was))
            .collect();
        assert_eq!(reasons, ["trading halted", "trading resumed"]);
        assert_eq!(every.frames[1][0].states[0].ts, 1003);
        let conflated = f.drain(1, t0 + Duration::from_millis(250));
        assert_eq!(
            told(&conflated),
            [(vec![Halted, Open], vec![6])],
            "conflated: the halt and the resume, both, before the one update"
        );
        // A change the edge never saw (ticks 7..=8 lost) is told from the tick itself.
        f.publish(in_state("AAPL", 9, Halted));
        let d = f.drain(2, t0 + Duration::from_millis(300));
        assert_eq!(told(&d), [(vec![Halted], vec![9])]);
        assert_eq!(d.gaps.len(), 1);
    }

    #[test]
    fn unsubscribed_symbols_stop() {
        let mut f = core();
        f.add_session(1, Counter::default(), 100);
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
