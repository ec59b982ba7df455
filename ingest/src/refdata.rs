//! Reference data in KV `md_ref` (schema: [`tickmesh_core::refdata`]).
//!
//! The simulator hands over its whole reference data at the start and again when the
//! chains roll (with the delisted symbols); a replay registers each symbol when it first
//! appears ([`Catalog`]). Updates are coalesced by key in a [`RefWriter`] and written by
//! its own task, so the tick path never waits on KV.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::date::Date;
use tickmesh_core::occ::OptionSymbol;
use tickmesh_core::refdata::{self, Chain, ChainExpiry, Instrument, chain_key, instrument_key};
use tickmesh_core::{Kind, Tick};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::kv::Bucket;

/// Reference data to write: instruments and chains to put, symbols to delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefUpdate {
    pub instruments: Vec<Instrument>,
    pub chains: Vec<Chain>,
    /// Delisted symbols (their `instr.` keys are deleted).
    pub removed: Vec<String>,
}

impl RefUpdate {
    pub fn is_empty(&self) -> bool {
        self.instruments.is_empty() && self.chains.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Key → JSON value, or `None` to delete.
    ops: BTreeMap<String, Option<Bytes>>,
    /// [`refdata::COMPLETE_KEY`] has been written by this writer.
    marked: bool,
}

/// Coalesces reference-data updates by key for the writer task.
#[derive(Debug)]
pub struct RefWriter {
    enabled: bool,
    /// Stamped on every instrument written without one (`refdata.feed`).
    feed: Option<String>,
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Default for RefWriter {
    fn default() -> Self {
        RefWriter::new()
    }
}

impl RefWriter {
    pub fn new() -> Self {
        RefWriter {
            enabled: true,
            feed: None,
            pending: Mutex::default(),
            notify: Notify::new(),
        }
    }

    /// A writer that names `feed` as the feed of every instrument it writes without one.
    pub fn with_feed(feed: &str) -> Self {
        RefWriter {
            feed: Some(feed.to_string()),
            ..RefWriter::new()
        }
    }

    /// A writer that drops every update (`refdata.enabled = false`).
    pub fn disabled() -> Self {
        RefWriter {
            enabled: false,
            ..RefWriter::new()
        }
    }

    /// Queues `update`; a later value for the same key replaces an unwritten one.
    pub fn submit(&self, update: &RefUpdate) {
        if !self.enabled || update.is_empty() {
            return;
        }
        {
            let mut p = self.lock();
            for symbol in &update.removed {
                p.ops.insert(instrument_key(symbol), None);
            }
            for i in &update.instruments {
                let value = match (&i.feed, &self.feed) {
                    (None, Some(feed)) => json(&Instrument {
                        feed: Some(feed.clone()),
                        ..i.clone()
                    }),
                    _ => json(i),
                };
                p.ops.insert(instrument_key(&i.symbol), Some(value));
            }
            for c in &update.chains {
                p.ops.insert(chain_key(&c.underlying), Some(json(c)));
            }
        }
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .expect("ref writer mutex is never poisoned")
    }

    /// Keys not yet written.
    pub fn pending(&self) -> usize {
        self.lock().ops.len()
    }

    /// Writes queued updates until `cancel`, then once more (within 5 s). Failed writes
    /// are retried a second later.
    pub async fn run(&self, store: impl Bucket, cancel: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = self.notify.notified() => false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                _ = cancel.cancelled() => true,
            };
            let ops = std::mem::take(&mut self.lock().ops);
            if !ops.is_empty() {
                let round = self.write(&store, ops);
                if stopping {
                    if tokio::time::timeout(Duration::from_secs(5), round)
                        .await
                        .is_err()
                    {
                        tracing::warn!("final reference-data write timed out");
                    }
                } else {
                    round.await;
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn write(&self, store: &impl Bucket, ops: BTreeMap<String, Option<Bytes>>) {
        let writes = ops.into_iter().map(|(key, value)| async move {
            let result = match &value {
                Some(bytes) => store
                    .put(&key, bytes.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => store.delete(&key).await.map_err(|e| e.to_string()),
            };
            (key, value, result)
        });
        let mut results = futures_util::stream::iter(writes).buffer_unordered(64);
        let mut failed = 0;
        while let Some((key, value, result)) = results.next().await {
            match result {
                Ok(()) => metrics::counter!("tickmesh_ingest_refdata_writes_total").increment(1),
                Err(e) => {
                    failed += 1;
                    metrics::counter!("tickmesh_ingest_refdata_errors_total").increment(1);
                    tracing::debug!(%key, error = %e, "reference-data write failed");
                    self.lock().ops.entry(key).or_insert(value);
                }
            }
        }
        if failed > 0 {
            tracing::warn!(failed, "reference-data writes failed; retrying");
            return;
        }
        // Everything submitted so far is in the bucket: say so, once.
        if self.lock().marked || self.pending() > 0 {
            return;
        }
        let value = json(&serde_json::json!({"ts": tickmesh_core::tick::now_us()}));
        match store.put(refdata::COMPLETE_KEY, value).await {
            Ok(_) => {
                self.lock().marked = true;
                tracing::info!("reference data complete in the bucket");
            }
            Err(e) => {
                tracing::warn!(error = %e, "marking the reference data complete failed; retrying")
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("reference data always serializes: plain fields"))
}

/// Reference data learnt from the ticks themselves (replay): the instrument of each new
/// symbol, and chains from the OCC symbols of options.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Underlying → (root, expiry → strikes in thousandths).
    chains: BTreeMap<String, (String, BTreeMap<Date, BTreeSet<u64>>)>,
}

impl Catalog {
    /// What to write for a symbol seen for the first time in `tick`.
    pub fn observe(&mut self, tick: &Tick) -> RefUpdate {
        let option = OptionSymbol::parse(&tick.symbol)
            .ok()
            .filter(|_| tick.kind == Kind::Option);
        let mut instrument = Instrument {
            symbol: tick.symbol.clone(),
            kind: tick.kind,
            tick_size: None,
            decimals: None,
            lot: None,
            multiplier: None,
            underlying: tick.underlying.clone(),
            expiry: None,
            strike: None,
            right: None,
            feed: None,
        };
        let Some(o) = option else {
            return RefUpdate {
                instruments: vec![instrument],
                ..RefUpdate::default()
            };
        };
        let underlying = tick.underlying.clone().unwrap_or_else(|| o.root.clone());
        instrument.underlying = Some(underlying.clone());
        instrument.expiry = Some(o.expiry);
        instrument.strike = Some(o.strike());
        instrument.right = Some(o.right);
        instrument.multiplier = Some(100);
        let (root, expiries) = self
            .chains
            .entry(underlying.clone())
            .or_insert_with(|| (o.root.clone(), BTreeMap::new()));
        expiries.entry(o.expiry).or_default().insert(o.strike_milli);
        let chain = Chain {
            underlying,
            root: if root.is_empty() {
                refdata::occ_root(&o.root)
            } else {
                root.clone()
            },
            expiries: expiries
                .iter()
                .map(|(expiry, strikes)| ChainExpiry {
                    expiry: *expiry,
                    strikes: strikes.iter().map(|&k| k as f64 / 1000.0).collect(),
                })
                .collect(),
        };
        RefUpdate {
            instruments: vec![instrument],
            chains: vec![chain],
            removed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_builds_chains_from_option_symbols() {
        let mut c = Catalog::default();
        let eq = c.observe(&Tick {
            symbol: "AAPL".into(),
            ..Tick::default()
        });
        assert_eq!(eq.instruments[0].kind, Kind::Equity);
        assert!(eq.chains.is_empty());
        let opt = |s: &str| Tick {
            symbol: s.into(),
            kind: Kind::Option,
            underlying: Some("AAPL".into()),
            ..Tick::default()
        };
        c.observe(&opt("AAPL261218C00150000"));
        c.observe(&opt("AAPL261218P00145000"));
        let u = c.observe(&opt("AAPL260116C00200000"));
        let chain = &u.chains[0];
        assert_eq!(chain.underlying, "AAPL");
        assert_eq!(chain.expiries.len(), 2);
        assert_eq!(chain.expiries[0].expiry.to_string(), "2026-01-16");
        assert_eq!(chain.expiries[1].strikes, [145.0, 150.0]);
        assert_eq!(u.instruments[0].strike, Some(200.0));
    }

    #[test]
    fn the_writer_coalesces_by_key() {
        let w = RefWriter::new();
        let instrument = |kind| Instrument {
            symbol: "X".into(),
            kind,
            tick_size: None,
            decimals: None,
            lot: None,
            multiplier: None,
            underlying: None,
            expiry: None,
            strike: None,
            right: None,
            feed: None,
        };
        w.submit(&RefUpdate {
            instruments: vec![instrument(Kind::Equity)],
            ..RefUpdate::default()
        });
        w.submit(&RefUpdate {
            instruments: vec![instrument(Kind::Etf)],
            removed: vec!["OLD".into()],
            ..RefUpdate::default()
        });
        let ops = std::mem::take(&mut w.lock().ops);
        assert_eq!(ops.len(), 2);
        let v: serde_json::Value =
            serde_json::from_slice(ops["instr.X"].as_ref().unwrap()).unwrap();
        assert_eq!(v["kind"], "etf");
        assert_eq!(ops["instr.OLD"], None);
    }
}
