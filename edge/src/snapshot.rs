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
use crate::hub::Hub;
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
        let nats = &self.nats;
        let read = async {
            // Within the read's timeout from the start of the wait for a permit.
            let permit = tokio::time::timeout(self.timeout, self.reads.acquire())
                .await
                .map_err(|_| anyhow::anyhow!("no KV read could start in time: too many in flight"))?
                .map_err(|_| anyhow::anyhow!("KV reads are closed"))?;
            let value = nats.kv_latest(symbol).await;
            drop(permit);
            value
        };
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

    /// Reads `symbol` for the sessions awaiting its snapshot and hands the value to the
    /// hub, on the NATS thread: one read per symbol, however many sessions wait.
    pub fn fetch_for(&self, hub: Arc<Hub>, symbol: Symbol) {
        let snapshots = self.clone();
        self.nats.spawn(async move {
            let (candidate, source) = snapshots.kv(&symbol).await;
            let waiting = hub.offer_snapshot(symbol.as_str(), candidate);
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
