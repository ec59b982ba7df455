//! The tick path: stamp, encode once, publish `md.<shard>.<symbol>` through a
//! [`TickSink`] (the NATS connection, [`crate::nats::Client`]), hand the bytes to the KV
//! writer. [`connect`] and [`latest_bucket`] are the NATS boundary's, named here too for
//! the callers that set up a publisher.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tickmesh_core::bar::{Bar, Timeframe, bar_subject};
use tickmesh_core::codec::{MAX_WIRE_TICK, non_finite};
use tickmesh_core::subject::tick_subject;
use tickmesh_core::tick::MAX_SAFE_INTEGER;
use tickmesh_core::trade::{Trade, trade_subject};

use crate::bars::{Bars, BarsConfig};
use tickmesh_core::{Symbol, SymbolError, Tick};

use crate::nats;
pub use crate::nats::{connect, latest_bucket};
use crate::sequencer::Sequencer;
use crate::snapshot::Slots;
use crate::sources::Print;
use crate::wire::{self, Encoder};

/// Where published ticks go: NATS in service, a list in the unit tests.
pub trait TickSink: Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Queues `payload` on `subject`; waits only while the queue is full.
    fn publish(
        &self,
        subject: &'static str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Queues a bar: one in progress is kept by the stream for `ttl` only (`"15s"`).
    fn publish_bar(
        &self,
        subject: &'static str,
        payload: Bytes,
        ttl: Option<&str>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = ttl;
        self.publish(subject, payload)
    }

    /// The last bar `stream` holds on each of `subjects` (none where it holds none, or
    /// cannot be read).
    fn last_bars(
        &self,
        stream: &str,
        subjects: &[&'static str; 5],
    ) -> impl Future<Output = [Option<Bar>; 5]> + Send {
        let _ = (stream, subjects);
        std::future::ready(Default::default())
    }
}

impl TickSink for nats::Client {
    type Error = nats::PublishError;

    fn publish(
        &self,
        subject: &'static str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        nats::Client::publish(self, subject, payload)
    }

    fn publish_bar(
        &self,
        subject: &'static str,
        payload: Bytes,
        ttl: Option<&str>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        nats::Client::publish_with_ttl(self, subject, payload, ttl)
    }

    fn last_bars(
        &self,
        stream: &str,
        subjects: &[&'static str; 5],
    ) -> impl Future<Output = [Option<Bar>; 5]> + Send {
        nats::Client::last_bars(self, stream, subjects)
    }
}

/// `subject` as a `&'static str`, interned for the life of the process. A publish then
/// hands NATS a static subject: no reference count shared with the connection's thread
/// (it would bounce between the two cores on every tick). Subjects are few (one per
/// symbol ever published) and each is leaked once.
pub(crate) fn intern(subject: String) -> &'static str {
    static SUBJECTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = SUBJECTS
        .get_or_init(Mutex::default)
        .lock()
        .expect("the subject set's mutex is never poisoned: no panics under it");
    if let Some(s) = set.get(subject.as_str()) {
        return s;
    }
    let s: &'static str = Box::leak(subject.into_boxed_str());
    set.insert(s);
    s
}

/// Why a tick was refused at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invalid {
    NotFinite(&'static str),
    /// `src_ts` at or above 2^53, which JavaScript cannot read exactly.
    SrcTs,
    TooLarge,
}

impl Invalid {
    fn label(self) -> &'static str {
        match self {
            Invalid::NotFinite(_) => "not_finite",
            Invalid::SrcTs => "src_ts",
            Invalid::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::NotFinite(field) => write!(f, "{field} is not a finite number"),
            Invalid::SrcTs => write!(f, "src_ts is not below 2^53"),
            Invalid::TooLarge => write!(f, "larger than {MAX_WIRE_TICK} bytes on the wire"),
        }
    }
}

fn invalid(tick: &Tick) -> Option<Invalid> {
    if let Some(field) = non_finite(tick) {
        return Some(Invalid::NotFinite(field));
    }
    if tick.src_ts.is_some_and(|v| v > MAX_SAFE_INTEGER) {
        return Some(Invalid::SrcTs);
    }
    (!wire::fits(tick)).then_some(Invalid::TooLarge)
}

/// Totals of one [`Publisher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ticks the source produced.
    pub ticks_in: u64,
    /// Ticks published.
    pub ticks_out: u64,
    /// Ticks dropped as stale (older `src_ts`).
    pub stale: u64,
    /// Ticks refused as invalid, as an edge would refuse them: a NaN or infinite price or
    /// other float field, a `src_ts` not below 2^53, or larger than
    /// [`tickmesh_core::codec::MAX_WIRE_TICK`].
    pub invalid: u64,
    /// Prints published on `tr.*`.
    pub trades_out: u64,
    /// Prints refused: a price or size that is not positive.
    pub invalid_trades: u64,
    /// Bars published (in progress and final).
    pub bars_out: u64,
    /// (print, timeframe) pairs refused for bars: the print was older than the bar.
    pub bars_refused: u64,
}

/// Bars from the prints, and where they go.
#[derive(Debug)]
struct BarFeed {
    bars: Bars,
    stream: String,
    /// `Nats-TTL` of a bar in progress.
    ttl: String,
    /// Bars to publish.
    out: Vec<Bar>,
    /// Prints (symbol index, ts, price, size) of symbols whose last bars are to be read
    /// before they fold: see [`Publisher::flush_bars`].
    waiting: Vec<(usize, u64, f64, u64)>,
}

/// Prints held for bars while the last bars of their symbols are read; past this, more
/// are dropped for bars (counted), never for the tape.
const MAX_WAITING_PRINTS: usize = 100_000;

/// Invalid ticks logged one by one; after that, every 1000th.
const LOG_FIRST_INVALID: u64 = 20;

/// Whether the `n`th invalid tick (from 1) is logged: the first 20, then every 1000th.
fn log_invalid(n: u64) -> bool {
    n <= LOG_FIRST_INVALID || n.is_multiple_of(1000)
}

/// The tick path. Symbols get dense indices in the order they are registered; the
/// sequencer, the subjects and the KV slots share them.
#[derive(Debug)]
pub struct Publisher<S = nats::Client> {
    sink: S,
    shards: u32,
    source: &'static str,
    names: HashMap<Arc<str>, usize>,
    by_index: Vec<Arc<str>>,
    subjects: Vec<&'static str>,
    /// `tr.<shard>.<symbol>` of each symbol.
    trade_subjects: Vec<&'static str>,
    /// `bar.<tf>.<shard>.<symbol>` of each symbol, by timeframe.
    bar_subjects: Vec<[&'static str; 5]>,
    /// Bars from the prints (none: bars are off).
    bars: Option<BarFeed>,
    sequencer: Sequencer,
    slots: Arc<Slots>,
    /// The delayed sampler's slots (none: no delayed samples), indexed as `slots`.
    delayed: Option<Arc<Slots>>,
    /// A copy of the latest bytes of each symbol in the current batch, offered to KV at
    /// its end. A copy, not a clone of the published `Bytes`: the clones' reference count
    /// would bounce between this thread and the NATS connection's on every tick.
    latest: Vec<Vec<u8>>,
    touched: Vec<usize>,
    encoder: Encoder,
    counts: Counts,
    flushed: Counts,
}

impl<S: TickSink> Publisher<S> {
    pub fn new(sink: S, shards: u32, source: &'static str, slots: Arc<Slots>) -> Self {
        Publisher {
            sink,
            shards,
            source,
            names: HashMap::new(),
            by_index: Vec::new(),
            subjects: Vec::new(),
            trade_subjects: Vec::new(),
            bar_subjects: Vec::new(),
            bars: None,
            sequencer: Sequencer::new(0, 0),
            slots,
            delayed: None,
            latest: Vec::new(),
            touched: Vec::new(),
            encoder: Encoder::new(),
            counts: Counts::default(),
            flushed: Counts::default(),
        }
    }

    /// Symbols registered.
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Also offers the latest value of each symbol to the delayed sampler's `slots`
    /// ([`crate::delayed::run_sampler`]). Before any symbol is registered.
    /// Symbols that left the reference data (expired options): their `md_last` values
    /// are deleted by the KV writer.
    pub fn delist(&self, symbols: &[String]) {
        self.slots.delist(symbols);
    }

    pub fn with_delayed(mut self, slots: Arc<Slots>) -> Self {
        debug_assert!(
            self.is_empty(),
            "the delayed slots share the symbols' indices"
        );
        self.delayed = Some(slots);
        self
    }

    /// The index of `symbol`, registering it if new: (index, new).
    pub fn index_of(&mut self, symbol: &str) -> Result<(usize, bool), SymbolError> {
        if let Some(&i) = self.names.get(symbol) {
            return Ok((i, false));
        }
        let parsed = Symbol::parse(symbol)?;
        let i = self.subjects.len();
        self.subjects
            .push(intern(tick_subject(&parsed, self.shards)));
        self.trade_subjects
            .push(intern(trade_subject(&parsed, self.shards)));
        self.bar_subjects
            .push(Timeframe::ALL.map(|tf| intern(bar_subject(tf, &parsed, self.shards))));
        let name: Arc<str> = Arc::from(symbol);
        self.names.insert(name.clone(), i);
        self.by_index.push(name);
        self.sequencer.grow(i + 1);
        self.latest.push(Vec::new());
        let slot = self.slots.add_key(symbol);
        debug_assert_eq!(slot, i, "slots and subjects share indices");
        if let Some(delayed) = &self.delayed {
            let slot = delayed.add_key(symbol);
            debug_assert_eq!(slot, i, "delayed slots and subjects share indices");
        }
        Ok((i, true))
    }

    /// Every symbol with the last seq stamped in this epoch (if any).
    pub fn last_seqs(&self) -> Vec<(String, Option<u64>)> {
        self.by_index
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), self.sequencer.last_seq(i)))
            .collect()
    }

    /// Starts a new epoch (a new term of the lease, or the start).
    pub fn start_epoch(&mut self, epoch: u64) {
        self.sequencer.start_epoch(epoch);
        if let Some(feed) = &mut self.bars {
            feed.bars.new_term();
        }
    }

    /// Builds bars from the prints and publishes them (see [`crate::bars`]), kept by
    /// `stream`; a bar in progress is kept there for `live_ttl_s`.
    pub fn with_bars(mut self, config: &BarsConfig) -> Self {
        self.bars = Some(BarFeed {
            bars: Bars::new(config.update_ms),
            stream: config.stream.clone(),
            ttl: format!("{}s", config.live_ttl_s),
            out: Vec::new(),
            waiting: Vec::new(),
        });
        self
    }

    /// A new trading session begins at `now_us`: every bar in progress closes and goes
    /// out final, and the session's bars start anew (see [`Bars::restart`]).
    pub async fn restart_bars(&mut self, now_us: u64) -> Result<(), S::Error> {
        let Some(feed) = &mut self.bars else {
            return Ok(());
        };
        feed.bars.restart(now_us, &mut feed.out);
        self.send_bars().await
    }

    /// Closes the bars whose time is up and sends the bars in progress that changed, as
    /// of `now_us`.
    pub async fn flush_bars(&mut self, now_us: u64) -> Result<(), S::Error> {
        self.resume_waiting(now_us).await;
        let Some(feed) = &mut self.bars else {
            return Ok(());
        };
        feed.bars.close_due(now_us, &mut feed.out);
        self.send_bars().await
    }

    /// Publishes the bars waiting in the feed's `out`.
    async fn send_bars(&mut self) -> Result<(), S::Error> {
        let Some(feed) = &mut self.bars else {
            return Ok(());
        };
        let mut sent = 0u64;
        for bar in feed.out.drain(..) {
            let Some(&i) = self.names.get(bar.symbol.as_str()) else {
                continue;
            };
            let subject = self.bar_subjects[i][bar.tf.index()];
            let ttl = (!bar.closed).then_some(feed.ttl.as_str());
            let bytes = Bytes::from(tickmesh_core::bar::encode_wire(&bar));
            self.sink.publish_bar(subject, bytes, ttl).await?;
            sent += 1;
        }
        self.counts.bars_out += sent;
        Ok(())
    }

    /// Sequences (stamping `tick` in place) and publishes one tick of symbol `i`.
    /// `Ok(false)`: dropped as stale, or refused as invalid (before it takes a `seq`, so
    /// readers see no gap): whatever the source, no client ever reads a NaN as `null`,
    /// and no edge is sent a tick it would refuse.
    pub async fn emit(&mut self, i: usize, tick: &mut Tick, now_us: u64) -> Result<bool, S::Error> {
        self.counts.ticks_in += 1;
        if let Some(reason) = invalid(tick) {
            self.counts.invalid += 1;
            let n = self.counts.invalid;
            metrics::counter!("tickmesh_ingest_invalid_ticks_total", "source" => self.source, "reason" => reason.label())
                .increment(1);
            if log_invalid(n) {
                tracing::warn!(symbol = %tick.symbol, %reason, refused = n, "invalid tick refused");
            }
            return Ok(false);
        }
        if self.sequencer.stamp(i, tick, now_us).is_err() {
            self.counts.stale += 1;
            return Ok(false);
        }
        let bytes = self.encoder.encode(tick);
        let latest = &mut self.latest[i];
        if latest.is_empty() {
            self.touched.push(i);
        }
        latest.clear();
        latest.extend_from_slice(&bytes);
        self.sink.publish(self.subjects[i], bytes).await?;
        self.counts.ticks_out += 1;
        Ok(true)
    }

    /// Publishes the print of `tick`, which [`Publisher::emit`] has just stamped and
    /// published (symbol `i`): its seq and ts are the tick's, and so is its `trade_id`
    /// (seqs rise across epochs, so it is unique per symbol). A print with a price or size
    /// that is not positive is refused (counted, logged), never forwarded. Returns whether
    /// it was published.
    pub async fn emit_trade(
        &mut self,
        i: usize,
        tick: &Tick,
        print: Print,
    ) -> Result<bool, S::Error> {
        let trade = Trade {
            symbol: tick.symbol.clone(),
            seq: tick.seq,
            trade_id: tick.seq,
            price: print.price,
            size: print.size,
            ts: tick.ts,
            src_ts: tick.src_ts,
            conditions: print.conditions,
        };
        if let Err(reason) = tickmesh_core::trade::check(&trade) {
            self.counts.invalid_trades += 1;
            let n = self.counts.invalid_trades;
            metrics::counter!("tickmesh_ingest_invalid_trades_total", "source" => self.source)
                .increment(1);
            if log_invalid(n) {
                tracing::warn!(symbol = %trade.symbol, %reason, refused = n, "invalid trade refused");
            }
            return Ok(false);
        }
        let bytes = Bytes::from(tickmesh_core::trade::encode_wire(&trade));
        self.sink.publish(self.trade_subjects[i], bytes).await?;
        self.counts.trades_out += 1;
        if let Some(feed) = &mut self.bars {
            if feed.bars.needs_resume(i) {
                // The first print of the symbol this term: it waits for the symbol's last
                // bars, read (with those of every other new symbol) at the batch's end,
                // so that the ticks never wait for a read.
                if feed.waiting.len() < MAX_WAITING_PRINTS {
                    feed.waiting.push((i, trade.ts, trade.price, trade.size));
                } else {
                    metrics::counter!("tickmesh_ingest_bar_prints_dropped_total", "source" => self.source).increment(1);
                }
                return Ok(true);
            }
            self.fold(i, trade.ts, trade.price, trade.size);
            self.send_bars().await?;
        }
        Ok(true)
    }

    /// Folds a print of symbol `i` into its bars (which must be resumed).
    fn fold(&mut self, i: usize, ts: u64, price: f64, size: u64) {
        let Some(feed) = &mut self.bars else { return };
        let symbol = &self.by_index[i];
        let folded = feed
            .bars
            .on_print(i, symbol, ts, price, size, &mut feed.out);
        if folded.refused > 0 {
            self.counts.bars_refused += u64::from(folded.refused);
            metrics::counter!("tickmesh_ingest_bar_prints_refused_total", "source" => self.source)
                .increment(u64::from(folded.refused));
            if log_invalid(self.counts.bars_refused) {
                tracing::warn!(%symbol, ts, timeframes = folded.refused, "a print before its bar in progress, or in a closed bar, refused for bars");
            }
        }
    }

    /// Reads the last bars of the symbols whose first prints of the term wait for them,
    /// all at once, goes on from them, and folds the prints that waited.
    async fn resume_waiting(&mut self, now_us: u64) {
        let Some(feed) = &mut self.bars else { return };
        if feed.waiting.is_empty() {
            return;
        }
        let mut symbols: Vec<usize> = feed.waiting.iter().map(|w| w.0).collect();
        symbols.sort_unstable();
        symbols.dedup();
        symbols.retain(|&i| feed.bars.needs_resume(i));
        let (sink, stream, subjects) = (&self.sink, &feed.stream, &self.bar_subjects);
        let reads = symbols
            .iter()
            .map(|&i| sink.last_bars(stream, &subjects[i]));
        let lasts = futures_util::future::join_all(reads).await;
        for (i, last) in symbols.into_iter().zip(lasts) {
            feed.bars.resume(i, last, now_us, &mut feed.out);
        }
        for (i, ts, price, size) in std::mem::take(&mut feed.waiting) {
            self.fold(i, ts, price, size);
        }
    }

    /// Ends a batch: hands the latest bytes of each symbol to the KV writer and updates
    /// the metrics.
    pub fn end_batch(&mut self) {
        let latest = &mut self.latest;
        let batch = self.touched.drain(..).map(|i| {
            let bytes = Bytes::copy_from_slice(&latest[i]);
            latest[i].clear();
            (i, bytes)
        });
        match &self.delayed {
            Some(delayed) => {
                let batch: Vec<(usize, Bytes)> = batch.collect();
                delayed.offer_batch(batch.iter().cloned());
                self.slots.offer_batch(batch);
            }
            None => self.slots.offer_batch(batch),
        }
        let (now, before) = (self.counts, self.flushed);
        let source = self.source;
        metrics::counter!("tickmesh_ingest_ticks_in_total", "source" => source)
            .increment(now.ticks_in - before.ticks_in);
        metrics::counter!("tickmesh_ingest_ticks_out_total", "source" => source)
            .increment(now.ticks_out - before.ticks_out);
        // Also when 0: the series exists before the first stale tick.
        metrics::counter!("tickmesh_ingest_stale_ticks_total", "source" => source)
            .increment(now.stale - before.stale);
        metrics::counter!("tickmesh_ingest_trades_out_total", "source" => source)
            .increment(now.trades_out - before.trades_out);
        metrics::counter!("tickmesh_ingest_bars_out_total", "source" => source)
            .increment(now.bars_out - before.bars_out);
        self.flushed = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what is published.
    #[derive(Debug, Default)]
    struct Sent(Mutex<Vec<(&'static str, Bytes)>>);

    impl TickSink for Sent {
        type Error = std::convert::Infallible;

        async fn publish(&self, subject: &'static str, payload: Bytes) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push((subject, payload));
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_valid_fresh_ticks_take_a_seq_and_are_published_and_offered_to_kv() {
        let slots = Arc::new(Slots::new());
        let mut p = Publisher::new(Sent::default(), 16, "test", slots.clone());
        p.start_epoch(1_000);
        let (i, new) = p.index_of("AAPL").unwrap();
        assert!(new);
        let good = Tick {
            symbol: "AAPL".into(),
            src_ts: Some(10),
            last: Some(1.5),
            ..Tick::default()
        };
        let mut nan = Tick {
            bid: Some(f64::NAN),
            ..good.clone()
        };
        assert!(!p.emit(i, &mut nan, 1).await.unwrap());
        let mut t = good.clone();
        assert!(p.emit(i, &mut t, 2).await.unwrap());
        let mut stale = Tick {
            src_ts: Some(9),
            ..good.clone()
        };
        assert!(!p.emit(i, &mut stale, 3).await.unwrap());
        p.end_batch();
        let sent = p.sink.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        let symbol = Symbol::parse("AAPL").unwrap();
        assert_eq!(sent[0].0, tick_subject(&symbol, 16));
        let tick = tickmesh_core::codec::decode_wire(&sent[0].1).unwrap();
        assert_eq!((tick.seq, tick.ts), (1_001, 2));
        let counts = p.counts();
        assert_eq!(
            (
                counts.ticks_in,
                counts.ticks_out,
                counts.invalid,
                counts.stale
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(
            slots.pending(),
            1,
            "the published bytes wait for the KV writer"
        );
    }

    #[test]
    fn invalid_ticks_are_logged_the_first_20_then_every_1000th() {
        let logged: Vec<u64> = (1..=5000).filter(|&n| log_invalid(n)).collect();
        let want: Vec<u64> = (1..=20).chain([1000, 2000, 3000, 4000, 5000]).collect();
        assert_eq!(logged, want);
        assert!(log_invalid(1_000_000) && !log_invalid(1_000_001));
    }
}
