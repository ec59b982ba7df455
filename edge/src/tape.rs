//! Time and sales: the `trades` stream of a subscription. A tape is never conflated:
//! every print reaches every subscriber, in order, or the subscriber is cut (4008).
//!
//! The edge follows a symbol's tape while any session holds it: one NATS subscription on
//! `tr.<shard>.<symbol>` and one read of the prints `md_trades` kept (the history), both
//! started with the first subscriber. The edge keeps the last [`KEEP`] prints in memory,
//! so a later subscriber's history costs no read of JetStream. History and live prints
//! join without a gap or a duplicate: the live subscription is made first and what it
//! brings before the history is read is held back, then every print not newer (by seq)
//! than the history's last is dropped.
//!
//! Each session has an [`Inbox`]: a queue of [`TapeItem`]s that its task writes out,
//! bounded by the prints and bars it holds. A print that does not fit cuts the session:
//! it is marked [`Inbox::overflowed`], dropped from every tape, and the session closes
//! with 4008.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tickmesh_core::bar::{Bar, Timeframe};
use tickmesh_core::trade::{Trade, encode_client_delayed};
use tickmesh_core::{Format, Symbol};
use tokio::sync::mpsc;

use crate::fanout::SessionId;

/// Prints kept per followed symbol: the most a `history` may ask for.
pub const KEEP: usize = 500;
/// Live prints held back per symbol while its history is read; past this the oldest are
/// dropped (they are in the history, which is read after they were published).
const EARLY_KEPT: usize = 10_000;

/// What a client gets an object of: a print or a bar.
pub trait ClientObject {
    /// The client object in `format`, with `delayed_ms` when served delayed.
    fn encode(&self, format: Format, delayed_ms: Option<u64>) -> Vec<u8>;
}

impl ClientObject for Trade {
    fn encode(&self, format: Format, delayed_ms: Option<u64>) -> Vec<u8> {
        encode_client_delayed(self, format, delayed_ms)
    }
}

impl ClientObject for Bar {
    fn encode(&self, format: Format, delayed_ms: Option<u64>) -> Vec<u8> {
        tickmesh_core::bar::encode_client_delayed(self, format, delayed_ms)
    }
}

/// One print or bar, shared by every session, with its client encodings built once per
/// format.
#[derive(Debug)]
pub struct Shared<T> {
    pub item: T,
    /// Served delayed by this much, ms (told as `delayed_ms`).
    delayed_ms: Option<u64>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl<T: ClientObject> Shared<T> {
    pub fn new(item: T) -> Self {
        Self::delayed(item, None)
    }

    /// `item`, served `delayed_ms` late when that is some.
    pub fn delayed(item: T, delayed_ms: Option<u64>) -> Self {
        Shared {
            item,
            delayed_ms,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// Whether it is served delayed.
    pub fn is_delayed(&self) -> bool {
        self.delayed_ms.is_some()
    }

    /// The object in `format`.
    pub fn encoded(&self, format: Format) -> &Bytes {
        let cell = match format {
            Format::Json => &self.json,
            Format::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| self.item.encode(format, self.delayed_ms).into())
    }
}

pub type SharedTrade = Shared<Trade>;
pub type SharedBar = Shared<Bar>;

/// What a session's tapes hand it, in the order it must go out.
#[derive(Debug)]
pub enum TapeItem {
    /// The last prints of a symbol, oldest first: the `trades` message with
    /// `snapshot: true` that a subscription starts with.
    History(Vec<Arc<SharedTrade>>),
    /// One live print.
    Trade(Arc<SharedTrade>),
    /// The closed bars of a (symbol, timeframe), oldest first, and the bar in progress:
    /// the `bars` message with `snapshot: true` that a subscription starts with.
    BarHistory(Timeframe, Vec<Arc<SharedBar>>),
    /// A bar in progress, or closed (`final`).
    Bar(Arc<SharedBar>),
}

impl TapeItem {
    /// What the item weighs in a session's queue: the prints or bars it holds (at least
    /// one), so that a queue's bound is a bound on what it keeps alive.
    pub fn weight(&self) -> usize {
        match self {
            TapeItem::History(h) => h.len().max(1),
            TapeItem::BarHistory(_, h) => h.len().max(1),
            TapeItem::Trade(_) | TapeItem::Bar(_) => 1,
        }
    }
}

/// What the two ends of an inbox share.
#[derive(Debug)]
struct Load {
    /// Prints and bars queued, by [`TapeItem::weight`].
    queued: AtomicUsize,
    /// Room for the histories of the subscriptions held (see [`Inbox::allow`]).
    allowance: AtomicUsize,
    /// Room for everything else.
    live: usize,
    overflowed: AtomicBool,
}

/// A session's queue of tape items: the sending side, held by the tapes it follows.
///
/// It is bounded by weight, not by items: it may hold `live` prints and bars (the
/// session's `session.tape_queue`) plus the history that each subscription it holds may
/// bring (a history, or the prints missed while the edge's link was down), which the
/// session [allows](Inbox::allow) for as it subscribes and takes back as it unsubscribes.
/// A session that subscribes and unsubscribes without reading is cut as soon as what it
/// left queued passes that bound.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::UnboundedSender<TapeItem>,
    load: Arc<Load>,
}

/// A session's queue of tape items: the receiving side.
#[derive(Debug)]
pub struct InboxRx {
    rx: mpsc::UnboundedReceiver<TapeItem>,
    load: Arc<Load>,
}

impl Inbox {
    /// An inbox with room for `live` prints and bars beyond its allowance, and its
    /// receiving end.
    pub fn new(live: usize) -> (Inbox, InboxRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(Load {
            queued: AtomicUsize::new(0),
            allowance: AtomicUsize::new(0),
            live: live.max(1),
            overflowed: AtomicBool::new(false),
        });
        let inbox = Inbox {
            tx,
            load: load.clone(),
        };
        (inbox, InboxRx { rx, load })
    }

    /// Makes room for `entries` more (a subscription's history), or takes it back
    /// (`allow(n, false)`) as the subscription goes.
    pub fn allow(&self, entries: usize, more: bool) {
        let allowance = &self.load.allowance;
        match more {
            true => allowance.fetch_add(entries, Ordering::AcqRel),
            false => allowance.fetch_sub(entries, Ordering::AcqRel),
        };
    }

    /// The session fell a whole queue behind: it is to be cut (4008).
    pub fn overflowed(&self) -> bool {
        self.load.overflowed.load(Ordering::Acquire)
    }

    /// Queues `item`; false (and the inbox marked overflowed, unless the session is gone)
    /// when it does not fit or the session is gone.
    pub(crate) fn offer(&self, item: TapeItem) -> bool {
        let load = &self.load;
        if load.overflowed.load(Ordering::Acquire) {
            return false;
        }
        let weight = item.weight();
        let bound = load.live + load.allowance.load(Ordering::Acquire);
        let queued = load.queued.fetch_add(weight, Ordering::AcqRel) + weight;
        if queued > bound {
            load.queued.fetch_sub(weight, Ordering::AcqRel);
            if !self.tx.is_closed() && !load.overflowed.swap(true, Ordering::AcqRel) {
                metrics::counter!("tickmesh_edge_slow_consumer_total", "action" => "cut_tape")
                    .increment(1);
            }
            return false;
        }
        if self.tx.send(item).is_err() {
            load.queued.fetch_sub(weight, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl InboxRx {
    /// The next item, waiting for it; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<TapeItem> {
        let item = self.rx.recv().await?;
        self.load.queued.fetch_sub(item.weight(), Ordering::AcqRel);
        Some(item)
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<TapeItem> {
        let item = self.rx.try_recv().ok()?;
        self.load.queued.fetch_sub(item.weight(), Ordering::AcqRel);
        Some(item)
    }

    /// Prints and bars queued.
    pub fn queued(&self) -> usize {
        self.load.queued.load(Ordering::Acquire)
    }
}

/// What is followed: a symbol's prints (`tf` none) or its bars of one timeframe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeedKey {
    pub symbol: Symbol,
    pub tf: Option<Timeframe>,
}

/// Where a followed subject's NATS follower delivers (the raw messages): the tapes' or
/// the bars' side of it.
pub trait FollowSink: Send + Sync + 'static {
    /// The edge's NATS connection came back: live messages are held back until
    /// [`FollowSink::history`] has filled in what was published meanwhile.
    fn reload(&self, key: &FeedKey);
    /// What the stream kept of the subject (oldest first), read after the live
    /// subscription was made (or made again).
    fn history(&self, key: &FeedKey, payloads: Vec<Bytes>);
    /// One live message.
    fn publish(&self, key: &FeedKey, payload: &[u8]);
}

/// Where followed subjects come from: starts following one into a sink (the subject
/// and stream follow from the key); dropping what it returns stops it.
pub trait TapeSource: Send + Sync + 'static {
    type Follower: Send + 'static;
    fn follow(&self, sink: Weak<dyn FollowSink>, key: FeedKey) -> Self::Follower;
}

/// A print from the wire; an invalid one is counted and logged, and dropped.
fn decode(symbol: &Symbol, payload: &[u8]) -> Option<Trade> {
    match tickmesh_core::trade::decode_wire(payload) {
        Ok(t) if t.symbol == symbol.as_str() => Some(t),
        Ok(_) => {
            metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "wrong_subject")
                .increment(1);
            None
        }
        Err(e) => {
            metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "invalid")
                .increment(1);
            tracing::warn!(%symbol, error = %e, "dropped an invalid print");
            None
        }
    }
}

/// One followed symbol.
struct Tape<F> {
    /// The last [`KEEP`] prints, oldest first (empty until the history is read).
    ring: VecDeque<Arc<SharedTrade>>,
    /// The history has been read: live prints go out as they come. False again while it
    /// is read again after a reconnect.
    loaded: bool,
    /// The history was read once: a later read only fills in prints missed meanwhile.
    ever_loaded: bool,
    /// Live prints that came before the history was read.
    early: VecDeque<Arc<SharedTrade>>,
    /// Subscribers, and how many prints of history each is still owed (sent when
    /// loaded).
    subs: HashMap<SessionId, (Inbox, Option<usize>)>,
    _follower: F,
}

/// Every tape this edge follows.
pub struct Tapes<S: TapeSource> {
    source: S,
    /// Served delayed by this much, ms: the tapes of delayed-only symbols.
    delayed_ms: Option<u64>,
    tapes: Mutex<HashMap<Symbol, Tape<S::Follower>>>,
    me: Weak<Tapes<S>>,
}

impl<S: TapeSource> std::fmt::Debug for Tapes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tapes")
            .field("followed", &self.followed())
            .finish()
    }
}

impl<S: TapeSource> Tapes<S> {
    pub fn new(source: S) -> Arc<Self> {
        Self::delayed(source, None)
    }

    /// Tapes whose prints are told as served `delayed_ms` late (when that is some).
    pub fn delayed(source: S, delayed_ms: Option<u64>) -> Arc<Self> {
        Arc::new_cyclic(|me| Tapes {
            source,
            delayed_ms,
            tapes: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// The gauge of the tapes followed: real-time and delayed ones apart.
    fn gauge(&self) -> &'static str {
        match self.delayed_ms {
            None => "tickmesh_edge_tapes",
            Some(_) => "tickmesh_edge_delayed_tapes",
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Symbol, Tape<S::Follower>>> {
        self.tapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Symbols followed now.
    pub fn followed(&self) -> usize {
        self.lock().len()
    }

    /// Whether the edge follows `symbol`'s tape.
    pub fn is_followed(&self, symbol: &str) -> bool {
        self.lock().contains_key(symbol)
    }

    /// Subscribes session `id` to `symbol`'s tape with `history` prints first (at most
    /// [`KEEP`]); again, it only changes nothing. Returns true when the edge starts
    /// following the symbol (new interest).
    pub fn subscribe(&self, id: SessionId, symbol: &Symbol, history: usize, inbox: &Inbox) -> bool {
        let history = history.min(KEEP);
        let mut tapes = self.lock();
        if let Some(tape) = tapes.get_mut(symbol) {
            if tape.subs.contains_key(&id) {
                return false;
            }
            let mut owed = Some(history);
            if tape.loaded {
                if !inbox.offer(TapeItem::History(last(&tape.ring, history))) {
                    return false;
                }
                owed = None;
            }
            tape.subs.insert(id, (inbox.clone(), owed));
            return false;
        }
        let sink: Weak<dyn FollowSink> = self.me.clone();
        let key = FeedKey {
            symbol: symbol.clone(),
            tf: None,
        };
        let follower = self.source.follow(sink, key);
        let mut subs = HashMap::new();
        subs.insert(id, (inbox.clone(), Some(history)));
        tapes.insert(
            symbol.clone(),
            Tape {
                ring: VecDeque::new(),
                loaded: false,
                ever_loaded: false,
                early: VecDeque::new(),
                subs,
                _follower: follower,
            },
        );
        metrics::gauge!(self.gauge()).set(tapes.len() as f64);
        true
    }

    /// Takes session `id` off `symbol`'s tape; the edge stops following a symbol nobody
    /// holds. Returns whether the session held it.
    pub fn unsubscribe(&self, id: SessionId, symbol: &str) -> bool {
        let mut tapes = self.lock();
        let Some(tape) = tapes.get_mut(symbol) else {
            return false;
        };
        let held = tape.subs.remove(&id).is_some();
        if tape.subs.is_empty() {
            tapes.remove(symbol);
            metrics::gauge!(self.gauge()).set(tapes.len() as f64);
        }
        held
    }
}

impl<S: TapeSource> FollowSink for Tapes<S> {
    fn reload(&self, key: &FeedKey) {
        if let Some(tape) = self.lock().get_mut(&key.symbol) {
            tape.loaded = false;
        }
    }

    fn history(&self, key: &FeedKey, payloads: Vec<Bytes>) {
        let trades: Vec<Trade> = payloads
            .iter()
            .filter_map(|p| decode(&key.symbol, p))
            .collect();
        let mut tapes = self.lock();
        let Some(tape) = tapes.get_mut(&key.symbol) else {
            return;
        };
        if tape.loaded {
            return;
        }
        let skip = trades.len().saturating_sub(KEEP);
        let trades = trades
            .into_iter()
            .skip(skip)
            .map(|t| Arc::new(Shared::delayed(t, self.delayed_ms)));
        let catch_up: Vec<Arc<SharedTrade>> = match tape.ever_loaded {
            false => {
                tape.ring = trades.collect();
                Vec::new()
            }
            // Read again after a reconnect: what is newer than the tape was missed.
            true => trades.collect(),
        };
        (tape.loaded, tape.ever_loaded) = (true, true);
        for (inbox, owed) in tape.subs.values_mut() {
            if let Some(n) = owed.take() {
                inbox.offer(TapeItem::History(last(&tape.ring, n)));
            }
        }
        tape.subs.retain(|_, (inbox, _)| !inbox.overflowed());
        for trade in catch_up.into_iter().chain(std::mem::take(&mut tape.early)) {
            push(tape, trade);
        }
    }

    fn publish(&self, key: &FeedKey, payload: &[u8]) {
        let Some(trade) = decode(&key.symbol, payload) else {
            return;
        };
        metrics::counter!("tickmesh_edge_trades_in_total").increment(1);
        let mut tapes = self.lock();
        let Some(tape) = tapes.get_mut(trade.symbol.as_str()) else {
            return;
        };
        let trade = Arc::new(Shared::delayed(trade, self.delayed_ms));
        if !tape.loaded {
            if tape.early.len() == EARLY_KEPT {
                tape.early.pop_front();
            }
            tape.early.push_back(trade);
            return;
        }
        push(tape, trade);
    }
}

/// The last `n` prints of `ring`, oldest first.
fn last(ring: &VecDeque<Arc<SharedTrade>>, n: usize) -> Vec<Arc<SharedTrade>> {
    ring.iter()
        .skip(ring.len().saturating_sub(n))
        .cloned()
        .collect()
}

/// A print of a loaded tape: kept and delivered unless the tape has it already (the
/// history read after the live subscription was made can hold it too).
fn push<F>(tape: &mut Tape<F>, trade: Arc<SharedTrade>) {
    if tape
        .ring
        .back()
        .is_some_and(|last| last.item.seq >= trade.item.seq)
    {
        metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "duplicate")
            .increment(1);
        return;
    }
    if tape.ring.len() == KEEP {
        tape.ring.pop_front();
    }
    tape.ring.push_back(trade.clone());
    tape.subs
        .retain(|_, (inbox, _)| inbox.offer(TapeItem::Trade(trade.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows nothing: the test drives the sink.
    struct Manual;
    impl TapeSource for Manual {
        type Follower = ();
        fn follow(&self, _: Weak<dyn FollowSink>, _: FeedKey) {}
    }

    fn key() -> FeedKey {
        FeedKey {
            symbol: Symbol::parse("AAPL").unwrap(),
            tf: None,
        }
    }

    /// Feeds `tapes` as NATS would: wire bytes.
    trait Feed {
        fn live(&self, seq: u64);
        fn kept(&self, seqs: std::ops::RangeInclusive<u64>);
    }
    impl Feed for Tapes<Manual> {
        fn live(&self, seq: u64) {
            self.publish(&key(), &tickmesh_core::trade::encode_wire(&print(seq)));
        }
        fn kept(&self, seqs: std::ops::RangeInclusive<u64>) {
            let wire = seqs.map(|s| tickmesh_core::trade::encode_wire(&print(s)).into());
            self.history(&key(), wire.collect());
        }
    }

    fn print(seq: u64) -> Trade {
        Trade {
            symbol: "AAPL".into(),
            seq,
            trade_id: seq,
            price: 100.0 + seq as f64 / 100.0,
            size: 100,
            ts: seq,
            src_ts: None,
            conditions: Vec::new(),
        }
    }

    /// What a session's inbox holds: (history?, seqs) per item.
    fn drain(rx: &mut InboxRx) -> Vec<(bool, Vec<u64>)> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            out.push(match item {
                TapeItem::History(h) => (true, h.iter().map(|t| t.item.seq).collect()),
                TapeItem::Trade(t) => (false, vec![t.item.seq]),
                _ => unreachable!("prints only"),
            });
        }
        out
    }

    #[test]
    fn history_and_live_join_without_a_gap_or_a_duplicate() {
        let tapes = Tapes::new(Manual);
        let aapl = Symbol::parse("AAPL").unwrap();
        let (a, mut rx_a) = Inbox::new(100);
        assert!(tapes.subscribe(1, &aapl, 3, &a));
        // Live prints 5 and 6 come while the history is read; it has 1..=5.
        tapes.live(5);
        tapes.live(6);
        assert!(drain(&mut rx_a).is_empty(), "nothing before the history");
        tapes.kept(1..=5);
        tapes.live(6);
        tapes.live(7);
        assert_eq!(
            drain(&mut rx_a),
            [(true, vec![3, 4, 5]), (false, vec![6]), (false, vec![7])]
        );
        // A later subscriber's history comes from memory, then the live prints.
        let (b, mut rx_b) = Inbox::new(100);
        assert!(!tapes.subscribe(2, &aapl, 50, &b), "not new interest");
        tapes.live(8);
        assert_eq!(
            drain(&mut rx_b),
            [(true, (1..=7).collect()), (false, vec![8])]
        );
        assert!(tapes.unsubscribe(1, "AAPL"));
        assert!(tapes.unsubscribe(2, "AAPL"));
        assert_eq!(tapes.followed(), 0, "nobody holds it: not followed");
    }

    #[test]
    fn after_a_reconnect_the_prints_missed_meanwhile_are_filled_in_in_order() {
        let tapes = Tapes::new(Manual);
        let aapl = Symbol::parse("AAPL").unwrap();
        let (a, mut rx) = Inbox::new(100);
        tapes.subscribe(1, &aapl, 2, &a);
        tapes.kept(1..=3);
        // The link drops; 4 and 5 are published meanwhile; 6 arrives live as it returns.
        tapes.reload(&key());
        tapes.live(6);
        tapes.kept(1..=6);
        tapes.live(7);
        assert_eq!(
            drain(&mut rx),
            [
                (true, vec![2, 3]),
                (false, vec![4]),
                (false, vec![5]),
                (false, vec![6]),
                (false, vec![7])
            ]
        );
    }

    #[test]
    fn a_subscriber_that_falls_a_queue_behind_is_cut_and_the_others_go_on() {
        let tapes = Tapes::new(Manual);
        let aapl = Symbol::parse("AAPL").unwrap();
        let (slow, _rx_slow) = Inbox::new(4);
        let (fast, mut rx_fast) = Inbox::new(1000);
        tapes.subscribe(1, &aapl, 0, &slow);
        tapes.subscribe(2, &aapl, 0, &fast);
        tapes.history(&key(), Vec::new());
        for seq in 1..=100 {
            tapes.live(seq);
        }
        assert!(slow.overflowed(), "the slow session is to be cut");
        assert!(!fast.overflowed());
        let got = drain(&mut rx_fast);
        assert_eq!(got.len(), 101, "history and every print");
        assert!(!tapes.unsubscribe(1, "AAPL"), "the slow one was dropped");
    }
}
