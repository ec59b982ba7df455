//! The KV snapshot writer: keeps `md_last/<symbol>` at the latest tick, writing each
//! symbol at most once per `interval_ms`.
//!
//! The tick path only offers the encoded bytes ([`Slots::offer_batch`]: one short mutex
//! per batch of ticks, latest wins, no await); this task takes whatever is due and writes
//! it with a bounded number of puts in flight. A slow KV therefore coalesces more, and
//! never slows the ticks. The lag of a write is the age of the oldest value it covers:
//! from when the symbol first changed after its previous write until the put is
//! acknowledged (`tickmesh_ingest_kv_lag_seconds`).
//!
//! Each write names the revision it replaces ([`write_checked`]), so `md_last` never goes
//! backwards: when another writer got in first (after a fail-over, the former holder of
//! the lease may still be flushing), the stored value is read back, and if its
//! `(epoch, seq)` is not older than ours it stays and ours is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::codec::decode_wire;
use tokio_util::sync::CancellationToken;

use crate::kv::{Bucket, UpdateError};

/// How long the final write at shutdown may take.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Pending {
    bytes: Bytes,
    /// When the symbol first changed since its last write.
    since: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    keys: Vec<Arc<str>>,
    pending: Vec<Option<Pending>>,
    /// Indices with a pending value, each once.
    dirty: Vec<usize>,
    /// Keys to delete (delisted symbols: expired options), after the round's writes.
    delisted: Vec<Arc<str>>,
}

/// Latest encoded tick per symbol index, not yet written to KV.
#[derive(Debug, Default)]
pub struct Slots {
    inner: Mutex<Inner>,
    stats: KvStats,
}

/// Counters of the writer, readable while it runs.
#[derive(Debug, Default)]
pub struct KvStats {
    pub writes: AtomicU64,
    pub errors: AtomicU64,
    /// Values dropped because KV already held a newer tick of the symbol.
    pub superseded: AtomicU64,
    /// Largest lag of a write so far, µs.
    pub max_lag_us: AtomicU64,
    /// Sum of lags, µs (with `writes`, the mean).
    pub lag_sum_us: AtomicU64,
}

impl Slots {
    pub fn new() -> Self {
        Slots::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("slots mutex is never poisoned: no panics under it")
    }

    /// Adds the key of the next symbol index; returns that index.
    pub fn add_key(&self, key: &str) -> usize {
        let mut inner = self.lock();
        inner.keys.push(Arc::from(key));
        inner.pending.push(None);
        inner.keys.len() - 1
    }

    /// Records the latest values of several symbols, replacing unwritten ones.
    pub fn offer_batch(&self, values: impl IntoIterator<Item = (usize, Bytes)>) {
        let now = Instant::now();
        let mut inner = self.lock();
        for (i, bytes) in values {
            match &mut inner.pending[i] {
                Some(p) => p.bytes = bytes,
                slot @ None => {
                    *slot = Some(Pending { bytes, since: now });
                    inner.dirty.push(i);
                }
            }
        }
    }

    /// Records `bytes` as the latest value of symbol `i`.
    pub fn offer(&self, i: usize, bytes: Bytes) {
        self.offer_batch([(i, bytes)]);
    }

    /// Delists `symbols`: their unwritten values are dropped and their keys deleted by
    /// the writer's next round, after any write already in flight (an expired option
    /// ticks no more, so nothing puts them back).
    pub fn delist(&self, symbols: &[String]) {
        if symbols.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        for symbol in symbols {
            if let Some(i) = inner.keys.iter().position(|k| **k == **symbol) {
                inner.pending[i] = None;
                inner.dirty.retain(|&d| d != i);
            }
            inner.delisted.push(Arc::from(symbol.as_str()));
        }
    }

    fn take_delisted(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.lock().delisted)
    }

    /// Symbols with a value not yet written.
    pub fn pending(&self) -> usize {
        self.lock().dirty.len()
    }

    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// Puts back a value whose write failed, unless a newer one arrived meanwhile.
    fn put_back(&self, i: usize, p: Pending) {
        let mut inner = self.lock();
        if inner.pending[i].is_none() {
            inner.pending[i] = Some(p);
            inner.dirty.push(i);
        }
    }

    /// Takes every pending value: (index, key, bytes).
    pub fn take_all(&self) -> Vec<(usize, Arc<str>, Bytes)> {
        self.take_due(|_| true)
            .into_iter()
            .map(|(i, key, p)| (i, key, p.bytes))
            .collect()
    }

    /// Takes the pending values whose symbol is `due`, leaving the others.
    fn take_due(&self, mut due: impl FnMut(usize) -> bool) -> Vec<(usize, Arc<str>, Pending)> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut out = Vec::new();
        inner.dirty.retain(|&i| {
            if !due(i) {
                return true;
            }
            if let Some(p) = inner.pending[i].take() {
                out.push((i, inner.keys[i].clone(), p));
            }
            false
        });
        out
    }
}

/// Runs until `cancel`, then writes what is pending one last time (within 5 s).
pub async fn run_writer(
    kv: impl Bucket,
    slots: Arc<Slots>,
    interval: Duration,
    max_in_flight: usize,
    cancel: CancellationToken,
) {
    let mut last_put: Vec<Option<Instant>> = Vec::new();
    // The revision of each symbol's value as this writer last saw it (0: none known).
    let mut revisions: Vec<u64> = Vec::new();
    // Rounds come five times per interval, so a write is at most 1.2 intervals apart.
    let mut timer = tokio::time::interval((interval / 5).max(Duration::from_millis(5)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = timer.tick() => false,
            _ = cancel.cancelled() => true,
        };
        let now = Instant::now();
        let due = slots.take_due(|i| {
            if i >= last_put.len() {
                last_put.resize(i + 1, None);
            }
            let due = stopping || last_put[i].is_none_or(|t| now.duration_since(t) >= interval);
            if due {
                last_put[i] = Some(now);
            }
            due
        });
        metrics::gauge!("tickmesh_ingest_kv_pending").set(slots.pending() as f64);
        let round = write_all(&kv, &slots, due, &mut revisions, max_in_flight);
        if stopping {
            if tokio::time::timeout(FINAL_FLUSH, round).await.is_err() {
                tracing::warn!("final KV write did not finish within {FINAL_FLUSH:?}");
            }
            return;
        }
        round.await;
        for key in slots.take_delisted() {
            match kv.delete(&key).await {
                Ok(()) => metrics::counter!("tickmesh_ingest_kv_delisted_total").increment(1),
                Err(e) => {
                    // Left as it is: edges refuse the symbol anyway (it left md_ref).
                    tracing::warn!(%key, error = %e, "deleting a delisted symbol's value failed")
                }
            }
        }
        metrics::histogram!("tickmesh_ingest_kv_round_seconds").record(now.elapsed().as_secs_f64());
    }
}

/// What a checked write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, at this revision.
    Stored(u64),
    /// KV holds a tick at least as new (at this revision); ours was dropped.
    Superseded(u64),
}

/// Conflicts (another writer in between) one write gives way to before it fails.
const WRITE_ATTEMPTS: usize = 3;

/// `(epoch, seq)` of an encoded tick: the order of values of one symbol.
fn order(bytes: &[u8]) -> Option<(u64, u64)> {
    decode_wire(bytes).ok().map(|t| (t.epoch, t.seq))
}

/// Writes `bytes` (an encoded tick) as the value of `key`, replacing revision `known`
/// (0: none). If the key has moved on since (another writer), the stored value is read
/// back: one whose `(epoch, seq)` is not older than ours stays; otherwise ours replaces
/// it, at most [`WRITE_ATTEMPTS`] times.
pub async fn write_checked(
    kv: &(impl Bucket + ?Sized),
    key: &str,
    bytes: Bytes,
    mut known: u64,
) -> anyhow::Result<Written> {
    let ours = order(&bytes);
    for _ in 0..WRITE_ATTEMPTS {
        match kv.update(key, bytes.clone(), known).await {
            Ok(revision) => return Ok(Written::Stored(revision)),
            Err(UpdateError::WrongRevision(_)) => {}
            Err(UpdateError::Other(e)) => return Err(e),
        }
        match kv.entry(key).await? {
            Some(entry) => {
                if let Some(value) = &entry.value
                    && order(value) >= ours
                {
                    return Ok(Written::Superseded(entry.revision));
                }
                known = entry.revision;
            }
            None => known = 0,
        }
    }
    anyhow::bail!("{key} changed under {WRITE_ATTEMPTS} writes in a row")
}

async fn write_all(
    kv: &impl Bucket,
    slots: &Slots,
    due: Vec<(usize, Arc<str>, Pending)>,
    revisions: &mut Vec<u64>,
    max_in_flight: usize,
) {
    let stats = &slots.stats;
    if let Some(top) = due.iter().map(|(i, _, _)| *i).max()
        && top >= revisions.len()
    {
        revisions.resize(top + 1, 0);
    }
    let known = &*revisions;
    let puts = due.into_iter().map(|(i, key, p)| async move {
        let result = write_checked(kv, &key, p.bytes.clone(), known[i]).await;
        (i, key, p, result)
    });
    let mut results = futures_util::stream::iter(puts).buffer_unordered(max_in_flight);
    let lag_hist = metrics::histogram!("tickmesh_ingest_kv_lag_seconds");
    // Both counters exist from the first round, so that a first error shows in `increase()`.
    metrics::counter!("tickmesh_ingest_kv_writes_total").increment(0);
    metrics::counter!("tickmesh_ingest_kv_errors_total").increment(0);
    metrics::counter!("tickmesh_ingest_kv_superseded_total").increment(0);
    let mut seen = Vec::new();
    let mut superseded = 0u64;
    while let Some((i, key, p, result)) = results.next().await {
        match result {
            Ok(Written::Superseded(revision)) => {
                seen.push((i, revision));
                superseded += 1;
                stats.superseded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tickmesh_ingest_kv_superseded_total").increment(1);
            }
            Ok(Written::Stored(revision)) => {
                seen.push((i, revision));
                let lag = p.since.elapsed();
                lag_hist.record(lag.as_secs_f64());
                let lag_us = lag.as_micros() as u64;
                stats.writes.fetch_add(1, Ordering::Relaxed);
                stats.lag_sum_us.fetch_add(lag_us, Ordering::Relaxed);
                stats.max_lag_us.fetch_max(lag_us, Ordering::Relaxed);
                metrics::counter!("tickmesh_ingest_kv_writes_total").increment(1);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tickmesh_ingest_kv_errors_total").increment(1);
                tracing::warn!(%key, error = %e, "KV write failed; retried at the next round");
                slots.put_back(i, p);
            }
        }
    }
    drop(results);
    for (i, revision) in seen {
        revisions[i] = revision;
    }
    if superseded > 0 {
        tracing::warn!(
            superseded,
            "md_last already held newer ticks (another writer took over?); kept them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::Memory;
    use tickmesh_core::Tick;
    use tickmesh_core::codec::encode_wire;

    fn tick(epoch: u64, n: u64) -> Bytes {
        encode_wire(&Tick {
            symbol: "A".into(),
            epoch,
            seq: epoch + n,
            ..Tick::default()
        })
        .into()
    }

    fn seq(bytes: Option<Bytes>) -> Option<u64> {
        order(&bytes?).map(|(_, seq)| seq)
    }

    #[tokio::test]
    async fn a_checked_write_gives_way_to_a_newer_tick_only() {
        let kv = Memory::default();
        let Written::Stored(old) = write_checked(&kv, "A", tick(100, 5), 0).await.unwrap() else {
            panic!("the first write stores");
        };
        // A new writer that knows no revision reads the older value back and replaces it.
        let Written::Stored(new) = write_checked(&kv, "A", tick(200, 1), 0).await.unwrap() else {
            panic!("a newer tick replaces an older one");
        };
        // The former writer, from the revision it last wrote, gives way.
        let late = write_checked(&kv, "A", tick(100, 6), old).await.unwrap();
        assert_eq!(late, Written::Superseded(new));
        assert_eq!(seq(kv.value("A")), Some(201));
        // A deleted key is written again.
        kv.delete("A").await.unwrap();
        let again = write_checked(&kv, "A", tick(100, 7), new).await.unwrap();
        assert!(matches!(again, Written::Stored(_)));
        assert_eq!(seq(kv.value("A")), Some(107));
    }

    #[tokio::test]
    async fn the_writer_writes_each_symbol_once_per_interval_and_the_rest_at_the_end() {
        let kv = Memory::default();
        let slots = Arc::new(Slots::new());
        slots.add_key("A");
        slots.add_key("B");
        slots.offer_batch([(0, tick(100, 1)), (0, tick(100, 2)), (1, tick(100, 1))]);
        let cancel = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            kv.clone(),
            slots.clone(),
            Duration::from_secs(3600),
            4,
            cancel.clone(),
        ));
        let stats = slots.stats();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.writes.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < deadline, "the first round wrote nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seq(kv.value("A")), Some(102), "the latest offer is written");
        // Written a moment ago: the next values wait for the interval, or the end.
        slots.offer(0, tick(100, 3));
        slots.offer(0, tick(100, 4));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seq(kv.value("A")), Some(102));
        assert_eq!(slots.pending(), 1);
        cancel.cancel();
        writer.await.unwrap();
        assert_eq!(seq(kv.value("A")), Some(104));
        assert_eq!(stats.writes.load(Ordering::Relaxed), 3);
        assert_eq!(slots.pending(), 0);
    }

    #[tokio::test]
    async fn a_delisted_symbol_loses_its_value_and_its_unwritten_offer() {
        let kv = Memory::default();
        let slots = Arc::new(Slots::new());
        slots.add_key("OPT");
        slots.add_key("B");
        slots.offer_batch([(0, tick(100, 1)), (1, tick(100, 1))]);
        let cancel = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            kv.clone(),
            slots.clone(),
            Duration::from_millis(20),
            4,
            cancel.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while kv.value("OPT").is_none() {
            assert!(Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Its closing tick offered, then the day roll delists it.
        slots.offer(0, tick(100, 2));
        slots.delist(&["OPT".to_string()]);
        while kv.value("OPT").is_some() {
            assert!(Instant::now() < deadline, "still in md_last");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        writer.await.unwrap();
        assert_eq!(
            kv.value("OPT"),
            None,
            "the final flush does not bring it back"
        );
        assert_eq!(seq(kv.value("B")), Some(101));
    }

    #[test]
    fn latest_offer_wins_and_each_symbol_is_taken_once() {
        let s = Slots::new();
        assert_eq!(s.add_key("A"), 0);
        assert_eq!(s.add_key("B"), 1);
        s.offer(0, Bytes::from_static(b"1"));
        s.offer_batch([(0, Bytes::from_static(b"2")), (1, Bytes::from_static(b"x"))]);
        assert_eq!(s.pending(), 2);
        let taken = s.take_due(|i| i == 0);
        assert_eq!(taken.len(), 1);
        assert_eq!((&*taken[0].1, &taken[0].2.bytes[..]), ("A", &b"2"[..]));
        assert_eq!(s.pending(), 1, "B was not due and stays");
        s.offer(0, Bytes::from_static(b"3"));
        let taken = s.take_due(|_| true);
        let mut keys: Vec<&str> = taken.iter().map(|(_, k, _)| &**k).collect();
        keys.sort();
        assert_eq!(keys, ["A", "B"]);
        assert!(s.take_due(|_| true).is_empty());
        let (i, _, p) = taken.into_iter().next().unwrap();
        s.put_back(i, p.clone());
        assert_eq!(s.pending(), 1, "a failed write is retried");
        s.offer(i, Bytes::from_static(b"newer"));
        s.put_back(i, p);
        assert_eq!(&s.take_due(|_| true)[0].2.bytes[..], b"newer");
    }

    #[test]
    fn lag_counts_from_the_first_unwritten_change() {
        let s = Slots::new();
        s.add_key("A");
        s.offer(0, Bytes::from_static(b"1"));
        let first = s.lock().pending[0].as_ref().unwrap().since;
        std::thread::sleep(Duration::from_millis(5));
        s.offer(0, Bytes::from_static(b"2"));
        let taken = s.take_due(|_| true);
        assert_eq!(taken[0].2.since, first);
        assert_eq!(&taken[0].2.bytes[..], b"2");
    }
}
