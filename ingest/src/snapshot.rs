//! The KV snapshot writer: keeps `md_last/<symbol>` at the latest tick, writing each
//! symbol at most once per `interval_ms`.
//!
//! The tick path only [`Slots::offer`]s the encoded bytes (a short mutex, latest wins, no
//! await); this task takes whatever changed once per interval and writes it with a
//! bounded number of puts in flight. A slow KV therefore coalesces more, and never slows
//! the ticks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Latest encoded tick per symbol index, not yet written to KV.
#[derive(Debug)]
pub struct Slots {
    keys: Vec<String>,
    pending: Mutex<HashMap<usize, Bytes>>,
}

impl Slots {
    pub fn new(keys: Vec<String>) -> Self {
        Slots {
            keys,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Records `bytes` as the latest value of symbol `i`, replacing any unwritten one.
    pub fn offer(&self, i: usize, bytes: Bytes) {
        self.pending
            .lock()
            .expect("slots mutex is never poisoned: no panics under it")
            .insert(i, bytes);
    }

    fn take(&self) -> HashMap<usize, Bytes> {
        std::mem::take(&mut *self.pending.lock().expect("slots mutex is never poisoned"))
    }

    /// Puts back values that were not due yet, unless a newer one arrived meanwhile.
    fn put_back(&self, i: usize, bytes: Bytes) {
        self.pending
            .lock()
            .expect("slots mutex is never poisoned")
            .entry(i)
            .or_insert(bytes);
    }
}

/// Runs until `cancel`, then writes what is pending one last time.
pub async fn run_writer(
    kv: Store,
    slots: std::sync::Arc<Slots>,
    interval: Duration,
    max_in_flight: usize,
    cancel: CancellationToken,
) {
    let mut last_put: Vec<Option<Instant>> = vec![None; slots.keys.len()];
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = timer.tick() => false,
            _ = cancel.cancelled() => true,
        };
        let now = Instant::now();
        let mut due = Vec::new();
        for (i, bytes) in slots.take() {
            match last_put[i] {
                Some(t) if !stopping && now.duration_since(t) < interval => {
                    slots.put_back(i, bytes)
                }
                _ => due.push((i, bytes)),
            }
        }
        for (i, _) in &due {
            last_put[*i] = Some(now);
        }
        write_all(&kv, &slots.keys, due, max_in_flight).await;
        metrics::histogram!("tickmesh_ingest_kv_round_seconds").record(now.elapsed().as_secs_f64());
        if stopping {
            return;
        }
    }
}

async fn write_all(kv: &Store, keys: &[String], due: Vec<(usize, Bytes)>, max_in_flight: usize) {
    let puts = due.into_iter().map(|(i, bytes)| {
        let key = &keys[i];
        async move { (key, kv.put(key, bytes).await) }
    });
    let mut results = futures_util::stream::iter(puts).buffer_unordered(max_in_flight);
    while let Some((key, result)) = results.next().await {
        match result {
            Ok(_) => metrics::counter!("tickmesh_ingest_kv_writes_total").increment(1),
            Err(e) => {
                metrics::counter!("tickmesh_ingest_kv_errors_total").increment(1);
                tracing::warn!(%key, error = %e, "KV write failed; the next tick of this symbol retries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offer_wins_and_put_back_never_overwrites_newer() {
        let s = Slots::new(vec!["A".into()]);
        s.offer(0, Bytes::from_static(b"1"));
        s.offer(0, Bytes::from_static(b"2"));
        let taken = s.take();
        assert_eq!(taken[&0], Bytes::from_static(b"2"));
        s.offer(0, Bytes::from_static(b"3"));
        s.put_back(0, Bytes::from_static(b"2"));
        assert_eq!(s.take()[&0], Bytes::from_static(b"3"));
        assert!(s.take().is_empty());
    }
}
