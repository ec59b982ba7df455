//! Snapshots on subscribe: the edge's own latest value when it carries the symbol, else a
//! KV read through a moka cache that coalesces concurrent misses, so a reconnect storm
//! costs one KV read per symbol, not one per client.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tickmesh_core::Symbol;

use crate::fanout::SharedTick;
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

    /// The KV latest value of `symbol`, through the cache. `None` when KV has none or
    /// cannot be read (the first live tick then follows).
    pub async fn kv(&self, symbol: &Symbol) -> Option<Arc<SharedTick>> {
        let nats = &self.nats;
        let entry = self
            .cache
            .entry_by_ref(symbol)
            .or_try_insert_with(async { nats.kv_latest(symbol).await })
            .await;
        match entry {
            Ok(entry) => {
                let source = if entry.is_fresh() { "kv" } else { "cache" };
                metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => source)
                    .increment(1);
                entry.into_value()
            }
            Err(e) => {
                metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => "error")
                    .increment(1);
                tracing::warn!(%symbol, error = %e, "snapshot read failed");
                None
            }
        }
    }
}
