//! Snapshots on subscribe: the edge's own latest value when it carries the symbol, else a
//! KV read through a moka cache that coalesces concurrent misses, so a reconnect storm
//! costs one KV read per symbol, not one per client.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tickmesh_core::Symbol;

use crate::fanout::SharedTick;
use crate::hub::Hub;
use crate::nats::NatsLink;

#[derive(Debug, Clone)]
pub struct Snapshots {
    nats: NatsLink,
    cache: Cache<Symbol, Option<Arc<SharedTick>>>,
}

impl Snapshots {
    pub fn new(nats: NatsLink, ttl: Duration, capacity: u64) -> Self {
        Snapshots {
            nats,
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The KV latest value of `symbol`, through the cache, and where it came from: `kv`
    /// (read now), `cache`, or `error`. `None` when KV has none or cannot be read (the
    /// first live tick then follows).
    pub async fn kv(&self, symbol: &Symbol) -> (Option<Arc<SharedTick>>, &'static str) {
        let nats = &self.nats;
        let entry = self
            .cache
            .entry_by_ref(symbol)
            .or_try_insert_with(async { nats.kv_latest(symbol).await })
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
