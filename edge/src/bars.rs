//! Live bars: the `bars` stream of a subscription, by (symbol, timeframe). Ingest builds
//! the bars; the edge follows each (symbol, timeframe) a session holds, as it follows
//! tapes ([`crate::tape`]): one NATS subscription on `bar.<tf>.<shard>.<symbol>` and one
//! read of what `md_bars` kept, then the last [`KEEP`] closed bars and the bar in
//! progress in memory.
//!
//! A subscriber gets its history (closed bars and the bar in progress) first; then each
//! bar in progress at most once per its interval (the newest; one held back goes out when
//! the interval is up, see [`BarFeeds::release_due`]), and every closed bar (`final`)
//! exactly once, never conflated: a final also stands for any update of that bar held
//! back. A session whose queue is full is cut, as for tapes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_core::Symbol;
use tickmesh_core::bar::{Bar, Timeframe};

use crate::fanout::SessionId;
use crate::tape::{FeedKey, FollowSink, Inbox, Shared, SharedBar, TapeItem, TapeSource};

/// Closed bars kept per followed (symbol, timeframe): the most a `history` may ask for.
pub const KEEP: usize = 1000;
/// Live bars held back per (symbol, timeframe) while its history is read.
const EARLY_KEPT: usize = 1000;

struct Sub {
    inbox: Inbox,
    /// Closed bars of history still owed (sent when loaded).
    owed: Option<usize>,
    interval: Duration,
    /// When a bar in progress last went to it.
    last_live: Option<Instant>,
    /// The newest bar in progress held back by the interval.
    held: Option<Arc<SharedBar>>,
    /// When `held` is due: its place in [`Book::due`].
    due: Option<Instant>,
}

/// A subscriber's held bar, by when it is due.
type Due = (Instant, SessionId, Symbol, Timeframe);

impl Sub {
    /// Holds `bar` back until the interval is up (listed in `due` if nothing was held).
    fn hold(&mut self, bar: Arc<SharedBar>, now: Instant, id: SessionId, at: Place<'_>) {
        let (key, due) = at;
        if self.due.is_none() {
            let when = self.last_live.map_or(now, |last| last + self.interval);
            due.insert((when, id, key.0.clone(), key.1));
            self.due = Some(when);
        }
        self.held = Some(bar);
    }

    /// Forgets the bar held back, if any.
    fn unhold(&mut self, id: SessionId, (key, due): Place<'_>) {
        self.held = None;
        if let Some(at) = self.due.take() {
            due.remove(&(at, id, key.0.clone(), key.1));
        }
    }
}

type Dues = BTreeSet<Due>;
/// A feed's key and the held bars' due list: where a subscriber's held bar is listed.
type Place<'a> = (&'a (Symbol, Timeframe), &'a mut Dues);

struct Feed<F> {
    /// Served delayed by this much, ms.
    delayed_ms: Option<u64>,
    closed: VecDeque<Arc<SharedBar>>,
    live: Option<Arc<SharedBar>>,
    loaded: bool,
    ever_loaded: bool,
    early: VecDeque<Bar>,
    subs: HashMap<SessionId, Sub>,
    _follower: F,
}

impl<F> Feed<F> {
    /// What a new subscriber gets first: the last `n` closed bars and the bar in
    /// progress.
    fn history(&self, n: usize) -> Vec<Arc<SharedBar>> {
        let skip = self.closed.len().saturating_sub(n);
        let closed = self.closed.iter().skip(skip).cloned();
        closed.chain(self.live.clone()).collect()
    }

    /// A bar of a loaded feed (`key`): kept and delivered, unless the feed has it or a
    /// later one.
    fn apply(&mut self, bar: Bar, now: Instant, key: &(Symbol, Timeframe), due: &mut Dues) {
        let last_closed = self.closed.back().map(|b| b.item.t);
        if last_closed.is_some_and(|t| t >= bar.t) {
            // That bar closed already (a history read again holds it too).
            return;
        }
        if self.live.as_ref().is_some_and(|l| l.item.t > bar.t) {
            return;
        }
        let bar = Arc::new(Shared::delayed(bar, self.delayed_ms));
        if bar.item.closed {
            if self.closed.len() == KEEP {
                self.closed.pop_front();
            }
            self.closed.push_back(bar.clone());
            if self.live.as_ref().is_some_and(|l| l.item.t <= bar.item.t) {
                self.live = None;
            }
            self.subs.retain(|&id, sub| {
                if sub.held.as_ref().is_some_and(|h| h.item.t <= bar.item.t) {
                    sub.unhold(id, (key, due));
                }
                sub.inbox.offer(TapeItem::Bar(bar.clone()))
            });
            return;
        }
        self.live = Some(bar.clone());
        self.subs.retain(|&id, sub| {
            if sub
                .last_live
                .is_some_and(|at| now.duration_since(at) < sub.interval)
            {
                sub.hold(bar.clone(), now, id, (key, due));
                return true;
            }
            sub.last_live = Some(now);
            sub.unhold(id, (key, due));
            sub.inbox.offer(TapeItem::Bar(bar.clone()))
        });
    }
}

/// Feeds by (symbol, timeframe).
type ByKey<F> = HashMap<(Symbol, Timeframe), Feed<F>>;

/// The feeds, and the bars in progress their subscribers hold back, by when each is due:
/// the sweep ([`BarFeeds::release_due`]) looks at what is due, not at every subscriber.
struct Book<F> {
    feeds: ByKey<F>,
    due: Dues,
}

/// Every (symbol, timeframe) this edge follows.
pub struct BarFeeds<S: TapeSource> {
    source: S,
    /// Served delayed by this much, ms: the bars of delayed-only symbols.
    delayed_ms: Option<u64>,
    book: Mutex<Book<S::Follower>>,
    me: Weak<BarFeeds<S>>,
}

impl<S: TapeSource> std::fmt::Debug for BarFeeds<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarFeeds")
            .field("followed", &self.followed())
            .finish()
    }
}

/// A bar from the wire; an invalid one is counted and logged, and dropped.
fn decode(key: &FeedKey, payload: &[u8]) -> Option<Bar> {
    match tickmesh_core::bar::decode_wire(payload) {
        Ok(b) if b.symbol == key.symbol.as_str() && Some(b.tf) == key.tf => Some(b),
        Ok(_) => {
            metrics::counter!("tickmesh_edge_bars_dropped_total", "reason" => "wrong_subject")
                .increment(1);
            None
        }
        Err(e) => {
            metrics::counter!("tickmesh_edge_bars_dropped_total", "reason" => "invalid")
                .increment(1);
            tracing::warn!(symbol = %key.symbol, error = %e, "dropped an invalid bar");
            None
        }
    }
}

/// The valid bars of `payloads` (what a stream kept of one subject), by start and with
/// each bar in progress before its final.
fn decode_all(key: &FeedKey, payloads: &[Bytes]) -> Vec<Bar> {
    let mut kept: Vec<Bar> = payloads.iter().filter_map(|p| decode(key, p)).collect();
    kept.sort_by_key(|b| (b.t, b.closed));
    kept
}

/// What a stream kept of one (symbol, timeframe), `kept` as [`decode_all`] orders it:
/// the last [`KEEP`] closed bars, and the newest bar in progress if it is later than
/// they.
fn first_load(
    kept: Vec<Bar>,
    delayed_ms: Option<u64>,
) -> (VecDeque<Arc<SharedBar>>, Option<Arc<SharedBar>>) {
    let mut closed: VecDeque<Arc<SharedBar>> = VecDeque::new();
    let mut live = None;
    for bar in kept {
        let last = closed.back().map(|b| b.item.t);
        if last.is_some_and(|t| t >= bar.t) {
            continue;
        }
        if bar.closed {
            if closed.len() == KEEP {
                closed.pop_front();
            }
            closed.push_back(Arc::new(Shared::delayed(bar, delayed_ms)));
        } else {
            live = Some(Arc::new(Shared::delayed(bar, delayed_ms)));
        }
    }
    if let (Some(l), Some(last)) = (&live, closed.back())
        && l.item.t <= last.item.t
    {
        live = None;
    }
    (closed, live)
}

/// The last `n` closed bars, oldest first, among the messages a stream kept of
/// `symbol`'s `tf` bars (in any order; invalid ones are dropped).
pub fn closed_in(
    symbol: &Symbol,
    tf: Timeframe,
    payloads: &[Bytes],
    n: usize,
) -> Vec<Arc<SharedBar>> {
    let key = FeedKey {
        symbol: symbol.clone(),
        tf: Some(tf),
    };
    let (closed, _) = first_load(decode_all(&key, payloads), None);
    let skip = closed.len().saturating_sub(n);
    closed.into_iter().skip(skip).collect()
}

impl<S: TapeSource> BarFeeds<S> {
    pub fn new(source: S) -> Arc<Self> {
        Self::delayed(source, None)
    }

    /// Bars told as served `delayed_ms` late (when that is some).
    pub fn delayed(source: S, delayed_ms: Option<u64>) -> Arc<Self> {
        Arc::new_cyclic(|me| BarFeeds {
            source,
            delayed_ms,
            book: Mutex::new(Book {
                feeds: HashMap::new(),
                due: BTreeSet::new(),
            }),
            me: me.clone(),
        })
    }

    /// The gauge of the bars followed: real-time and delayed ones apart.
    fn gauge(&self) -> &'static str {
        match self.delayed_ms {
            None => "tickmesh_edge_bar_feeds",
            Some(_) => "tickmesh_edge_delayed_bar_feeds",
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book<S::Follower>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (symbol, timeframe) pairs followed now.
    pub fn followed(&self) -> usize {
        self.lock().feeds.len()
    }

    pub fn is_followed(&self, symbol: &Symbol, tf: Timeframe) -> bool {
        self.lock().feeds.contains_key(&(symbol.clone(), tf))
    }

    /// The last `n` closed bars of `symbol`'s `tf`, oldest first, if the edge follows them
    /// and has read their history.
    pub fn closed(&self, symbol: &Symbol, tf: Timeframe, n: usize) -> Option<Vec<Arc<SharedBar>>> {
        let book = self.lock();
        let feed = book.feeds.get(&(symbol.clone(), tf))?;
        if !feed.loaded {
            return None;
        }
        let skip = feed.closed.len().saturating_sub(n);
        Some(feed.closed.iter().skip(skip).cloned().collect())
    }

    /// Bars in progress held back now, by every subscriber.
    pub fn held(&self) -> usize {
        self.lock().due.len()
    }

    /// Subscribes session `id` to `symbol`'s `tf` bars: `history` closed bars and the bar
    /// in progress first, then updates at most every `interval_ms`. A session that holds
    /// it already changes its interval only. Returns true when the edge starts following
    /// it.
    pub fn subscribe(
        &self,
        id: SessionId,
        symbol: &Symbol,
        tf: Timeframe,
        history: usize,
        interval_ms: u32,
        inbox: &Inbox,
    ) -> bool {
        let interval = Duration::from_millis(u64::from(interval_ms));
        let history = history.min(KEEP);
        let mut book = self.lock();
        let Book { feeds, due } = &mut *book;
        let key = (symbol.clone(), tf);
        if let Some(feed) = feeds.get_mut(&key) {
            if let Some(sub) = feed.subs.get_mut(&id) {
                sub.interval = interval;
                // A bar held back is due by the new interval.
                if let Some(bar) = sub.held.take() {
                    sub.unhold(id, (&key, due));
                    sub.hold(bar, Instant::now(), id, (&key, due));
                }
                return false;
            }
            let mut owed = Some(history);
            if feed.loaded {
                if !inbox.offer(TapeItem::BarHistory(tf, feed.history(history))) {
                    return false;
                }
                owed = None;
            }
            feed.subs.insert(id, sub(inbox, owed, interval));
            return false;
        }
        let sink: Weak<dyn FollowSink> = self.me.clone();
        let follower = self.source.follow(
            sink,
            FeedKey {
                symbol: symbol.clone(),
                tf: Some(tf),
            },
        );
        let mut subs = HashMap::new();
        subs.insert(id, sub(inbox, Some(history), interval));
        feeds.insert(
            key,
            Feed {
                delayed_ms: self.delayed_ms,
                closed: VecDeque::new(),
                live: None,
                loaded: false,
                ever_loaded: false,
                early: VecDeque::new(),
                subs,
                _follower: follower,
            },
        );
        metrics::gauge!(self.gauge()).set(feeds.len() as f64);
        true
    }

    /// Takes session `id` off `symbol`'s `tf` bars; whether it held them.
    pub fn unsubscribe(&self, id: SessionId, symbol: &Symbol, tf: Timeframe) -> bool {
        let mut book = self.lock();
        let Book { feeds, due } = &mut *book;
        let key = (symbol.clone(), tf);
        let Some(feed) = feeds.get_mut(&key) else {
            return false;
        };
        let held = match feed.subs.remove(&id) {
            Some(mut sub) => {
                sub.unhold(id, (&key, due));
                true
            }
            None => false,
        };
        if feed.subs.is_empty() {
            feeds.remove(&key);
            metrics::gauge!(self.gauge()).set(feeds.len() as f64);
        }
        held
    }

    /// Sends each bar in progress held back by an interval that is now up.
    pub fn release_due(&self, now: Instant) {
        let mut book = self.lock();
        let Book { feeds, due } = &mut *book;
        while let Some(first) = due.first()
            && first.0 <= now
        {
            let Some((at, id, symbol, tf)) = due.pop_first() else {
                break;
            };
            let key = (symbol, tf);
            let Some(feed) = feeds.get_mut(&key) else {
                continue;
            };
            let Some(sub) = feed.subs.get_mut(&id) else {
                continue;
            };
            if sub.due != Some(at) {
                continue;
            }
            sub.due = None;
            if let Some(bar) = sub.held.take() {
                sub.last_live = Some(now);
                if !sub.inbox.offer(TapeItem::Bar(bar)) {
                    feed.subs.remove(&id);
                }
            }
        }
    }
}

fn sub(inbox: &Inbox, owed: Option<usize>, interval: Duration) -> Sub {
    Sub {
        inbox: inbox.clone(),
        owed,
        interval,
        last_live: None,
        held: None,
        due: None,
    }
}

impl<S: TapeSource> FollowSink for BarFeeds<S> {
    fn reload(&self, key: &FeedKey) {
        let Some(tf) = key.tf else { return };
        if let Some(feed) = self.lock().feeds.get_mut(&(key.symbol.clone(), tf)) {
            feed.loaded = false;
        }
    }

    fn history(&self, key: &FeedKey, payloads: Vec<Bytes>) {
        let Some(tf) = key.tf else { return };
        let mut kept = decode_all(key, &payloads);
        let now = Instant::now();
        let mut book = self.lock();
        let Book { feeds, due } = &mut *book;
        let key = (key.symbol.clone(), tf);
        let Some(feed) = feeds.get_mut(&key) else {
            return;
        };
        if feed.loaded {
            return;
        }
        if !feed.ever_loaded {
            (feed.closed, feed.live) = first_load(std::mem::take(&mut kept), feed.delayed_ms);
        }
        (feed.loaded, feed.ever_loaded) = (true, true);
        for sub in feed.subs.values_mut() {
            if let Some(n) = sub.owed.take() {
                let closed = feed.closed.len().saturating_sub(n);
                let history = feed.closed.iter().skip(closed).cloned();
                let history = history.chain(feed.live.clone()).collect();
                sub.inbox.offer(TapeItem::BarHistory(tf, history));
                sub.last_live = Some(now);
            }
        }
        feed.subs.retain(|_, sub| !sub.inbox.overflowed());
        // Read again after a reconnect: what is newer than the feed was missed.
        for bar in kept.into_iter().chain(std::mem::take(&mut feed.early)) {
            feed.apply(bar, now, &key, due);
        }
    }

    fn publish(&self, key: &FeedKey, payload: &[u8]) {
        let Some(tf) = key.tf else { return };
        let Some(bar) = decode(key, payload) else {
            return;
        };
        let mut book = self.lock();
        let Book { feeds, due } = &mut *book;
        let key = (key.symbol.clone(), tf);
        let Some(feed) = feeds.get_mut(&key) else {
            return;
        };
        if !feed.loaded {
            if feed.early.len() == EARLY_KEPT {
                feed.early.pop_front();
            }
            feed.early.push_back(bar);
            return;
        }
        feed.apply(bar, Instant::now(), &key, due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::InboxRx;

    struct Manual;
    impl TapeSource for Manual {
        type Follower = ();
        fn follow(&self, _: Weak<dyn FollowSink>, _: FeedKey) {}
    }

    const T0: u64 = 1_699_920_000_000_000; // a whole day
    const MIN: u64 = 60_000_000;

    fn key() -> FeedKey {
        FeedKey {
            symbol: Symbol::parse("AAPL").unwrap(),
            tf: Some(Timeframe::M1),
        }
    }

    fn bar(k: u64, close: f64, closed: bool) -> Bytes {
        let mut b = Bar::open_with("AAPL", Timeframe::M1, T0 + k * MIN, 10.0, 1);
        b.add(close, 1);
        b.closed = closed;
        tickmesh_core::bar::encode_wire(&b).into()
    }

    /// (minute, close, final) of a bar.
    type Seen = (u64, f64, bool);

    /// (snapshot?, bars) per item.
    fn drain(rx: &mut InboxRx) -> Vec<(bool, Vec<Seen>)> {
        let seen = |b: &SharedBar| ((b.item.t - T0) / MIN, b.item.close, b.item.closed);
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            out.push(match item {
                TapeItem::BarHistory(_, h) => (true, h.iter().map(|b| seen(b)).collect()),
                TapeItem::Bar(b) => (false, vec![seen(&b)]),
                _ => unreachable!("bars only"),
            });
        }
        out
    }

    #[test]
    fn history_then_the_bar_in_progress_at_the_interval_and_every_final_once() {
        let feeds = BarFeeds::new(Manual);
        let aapl = Symbol::parse("AAPL").unwrap();
        let (inbox, mut rx) = Inbox::new(100);
        assert!(feeds.subscribe(1, &aapl, Timeframe::M1, 2, 60_000, &inbox));
        // Minute 3 updates while the history (minutes 0..=2 closed, 3 in progress) is read.
        feeds.publish(&key(), &bar(3, 12.0, false));
        let kept = vec![
            bar(0, 1.0, true),
            bar(1, 2.0, true),
            bar(2, 3.0, true),
            bar(3, 11.0, false),
        ];
        feeds.history(&key(), kept);
        assert_eq!(
            drain(&mut rx),
            [
                (true, vec![(1, 2.0, true), (2, 3.0, true), (3, 11.0, false)]),
                // The update that came during the read; no interval has run since the
                // history, which was sent just now: held back.
            ]
        );
        // Within the interval, updates are held; the final goes out at once and stands
        // for them.
        feeds.publish(&key(), &bar(3, 13.0, false));
        feeds.publish(&key(), &bar(3, 14.0, true));
        feeds.publish(&key(), &bar(3, 14.0, true));
        feeds.release_due(Instant::now() + Duration::from_secs(61));
        assert_eq!(drain(&mut rx), [(false, vec![(3, 14.0, true)])]);
        // Past the interval, the held update goes out when it is due.
        feeds.publish(&key(), &bar(4, 15.0, false));
        feeds.release_due(Instant::now() + Duration::from_secs(61));
        assert_eq!(drain(&mut rx), [(false, vec![(4, 15.0, false)])]);
        assert!(feeds.unsubscribe(1, &aapl, Timeframe::M1));
        assert_eq!(feeds.followed(), 0);
    }

    /// Only subscribers that hold a bar back are on the due list, each once; the sweep
    /// sends what is due and leaves the rest; a new interval and an unsubscribe update
    /// the list.
    #[test]
    fn the_due_list_holds_the_held_bars_only_and_the_sweep_sends_what_is_due() {
        let feeds = BarFeeds::new(Manual);
        let aapl = Symbol::parse("AAPL").unwrap();
        let (inbox, mut rx) = Inbox::new(100_000);
        for id in 0..1000 {
            feeds.subscribe(id, &aapl, Timeframe::M1, 0, 1000, &inbox);
        }
        feeds.subscribe(1000, &aapl, Timeframe::M1, 0, 60_000, &inbox);
        feeds.history(&key(), vec![bar(3, 11.0, false)]);
        assert_eq!(drain(&mut rx).len(), 1001, "every history");
        assert_eq!(feeds.held(), 0, "nothing held back yet");

        let start = Instant::now();
        feeds.publish(&key(), &bar(3, 12.0, false));
        feeds.publish(&key(), &bar(3, 13.0, false));
        assert_eq!(feeds.held(), 1001, "each subscriber listed once");
        feeds.release_due(start);
        assert!(drain(&mut rx).is_empty(), "nothing due yet");
        feeds.release_due(start + Duration::from_secs(2));
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1000, "the 1 s subscribers' held bar");
        assert!(sent.iter().all(|s| s == &(false, vec![(3, 13.0, false)])));
        assert_eq!(feeds.held(), 1, "the 60 s one still holds it");

        // Down to 1 s, the held bar is due a second after the last one sent.
        feeds.subscribe(1000, &aapl, Timeframe::M1, 0, 1000, &inbox);
        assert_eq!(feeds.held(), 1);
        feeds.release_due(start + Duration::from_secs(2));
        assert_eq!(drain(&mut rx), [(false, vec![(3, 13.0, false)])]);
        assert_eq!(feeds.held(), 0);

        // A final takes a held bar off the list; so does an unsubscribe.
        feeds.publish(&key(), &bar(3, 14.0, false));
        assert_eq!(feeds.held(), 1001);
        feeds.publish(&key(), &bar(3, 14.0, true));
        assert_eq!(feeds.held(), 0);
        assert_eq!(drain(&mut rx).len(), 1001, "the final, once each");
        feeds.publish(&key(), &bar(4, 15.0, false));
        for id in 0..=1000 {
            feeds.unsubscribe(id, &aapl, Timeframe::M1);
        }
        assert_eq!((feeds.held(), feeds.followed()), (0, 0));
    }
}
