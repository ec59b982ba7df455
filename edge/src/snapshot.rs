//! Snapshots on subscribe: the edge's own latest value when it carries the symbol, else a
//! KV read through a moka cache that coalesces concurrent misses, so a reconnect storm
//! costs one KV read per symbol, not one per client.
//!
//! What clients can make the edge read is bounded: at most `snapshot.max_kv_reads` reads
//! are in flight, and a symbol found to have no value is not read again for
//! `snapshot.negative_ttl_ms` (a subscribe/unsubscribe loop on a quiet symbol costs one
//! read per that time, not one per request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use tickmesh_core::Symbol;
use tokio::sync::Semaphore;

use crate::config::SnapshotConfig;
use crate::fanout::SharedTick;
use crate::nats::NatsLink;

type Value = Option<Arc<SharedTick>>;

/// How long a read is reused: a value for `ttl`, "no value" for `negative_ttl`.
struct Ttl {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<Symbol, Value> for Ttl {
    fn expire_after_create(&self, _: &Symbol, value: &Value, _: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }
}

/// Runs `read` once a permit of `reads` is free, waiting at most `timeout` for one.
async fn bounded<T>(
    reads: &Semaphore,
    timeout: Duration,
    read: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let _permit = tokio::time::timeout(timeout, reads.acquire())
        .await
        .map_err(|_| anyhow::anyhow!("no KV read could start in time: too many in flight"))?
        .map_err(|_| anyhow::anyhow!("KV reads are closed"))?;
    read.await
}

#[derive(Debug, Clone)]
pub struct Snapshots {
    nats: NatsLink,
    cache: Cache<Symbol, Value>,
    /// `snapshot.max_kv_reads`.
    reads: Arc<Semaphore>,
    timeout: Duration,
}

impl Snapshots {
    pub fn new(nats: NatsLink, config: &SnapshotConfig) -> Self {
        Snapshots {
            nats,
            cache: Cache::builder()
                .max_capacity(config.cache_capacity)
                .expire_after(Ttl {
                    ttl: Duration::from_millis(config.cache_ttl_ms),
                    negative_ttl: Duration::from_millis(config.negative_ttl_ms),
                })
                .build(),
            reads: Arc::new(Semaphore::new(config.max_kv_reads)),
            timeout: Duration::from_millis(config.kv_timeout_ms),
        }
    }

    /// The KV latest value of `symbol`, through the cache, and where it came from: `kv`
    /// (read now), `cache`, or `error`. `None` when KV has none or cannot be read (the
    /// first live tick then follows).
    pub async fn kv(&self, symbol: &Symbol) -> (Option<Arc<SharedTick>>, &'static str) {
        self.kv_within(symbol, &self.reads).await
    }

    /// As [`Snapshots::kv`], a read that has to start being one of `reads` (a caller's
    /// own bound; the cache and its coalescing are shared).
    pub async fn kv_within(
        &self,
        symbol: &Symbol,
        reads: &Semaphore,
    ) -> (Option<Arc<SharedTick>>, &'static str) {
        let nats = &self.nats;
        let read = bounded(reads, self.timeout, nats.kv_latest(symbol));
        let entry = self
            .cache
            .entry_by_ref(symbol)
            .or_try_insert_with(read)
            .await;
        match entry {
            Ok(entry) => {
                let source = if entry.is_fresh() { "kv" } else { "cache" };
                (entry.into_value(), source)
            }
            Err(e) => {
                tracing::warn!(%symbol, error = %e, "snapshot read failed");
                (None, "error")
            }
        }
    }

    /// Reads `symbol` for the sessions awaiting its snapshot and hands the value to
    /// `offer` (the core's `offer_snapshot`, which returns how many sessions it served),
    /// on the NATS thread: one read per symbol, however many sessions wait.
    pub fn fetch_for(
        &self,
        symbol: Symbol,
        offer: impl FnOnce(&str, Value) -> usize + Send + 'static,
    ) {
        let snapshots = self.clone();
        self.nats.spawn(async move {
            let (candidate, source) = snapshots.kv(&symbol).await;
            let waiting = offer(symbol.as_str(), candidate);
            // The read itself counts where it came from; the others waiting on it were
            // served from what it read, as from a cache.
            let (first, rest) = match source {
                "kv" => (1, waiting.saturating_sub(1)),
                _ => (0, waiting),
            };
            metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => "kv")
                .increment(first as u64);
            let rest_source = if source == "error" { "error" } else { "cache" };
            metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => rest_source)
                .increment(rest as u64);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// With `max_kv_reads` = 2 and reads that never finish, two start; the others wait
    /// their turn for the read timeout and then give up (the first live tick becomes their
    /// snapshot) without ever reaching KV.
    #[tokio::test(start_paused = true)]
    async fn at_most_max_kv_reads_are_in_flight() {
        let reads = Arc::new(Semaphore::new(2));
        let started = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (reads, started) = (reads.clone(), started.clone());
                tokio::spawn(async move {
                    let never = async {
                        started.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<anyhow::Result<()>>().await
                    };
                    bounded(&reads, Duration::from_millis(500), never).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(started.load(Ordering::SeqCst), 2, "reads in flight");
        let mut gave_up = 0;
        for t in tasks {
            if t.is_finished() {
                let e = t.await.unwrap().unwrap_err();
                assert!(e.to_string().contains("too many in flight"), "{e}");
                gave_up += 1;
            }
        }
        assert_eq!(gave_up, 3, "reads that waited past the timeout");
    }
}
