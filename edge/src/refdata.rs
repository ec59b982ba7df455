//! Reference data from KV `md_ref` (schema: [`tickmesh_core::refdata`]): the instruments
//! and option chains that ingest publishes, cached in memory and kept current by a KV
//! watch, so that validating a symbol or expanding a chain is a map lookup.
//!
//! A background task opens the bucket (retrying every second until ingest has created
//! it), loads every key, then applies changes as they come; after a NATS outage it loads
//! again and swaps the fresh set in whole, so deletions made meanwhile are not missed.
//! Until the first load completes [`RefData::is_loaded`] is false, and lookups answer as
//! if nothing were known: requests are then answered `unavailable` (a client never decides
//! what the edge carries), and `/readyz` says 503.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tickmesh_core::Symbol;
use tickmesh_core::protocol::ErrorCode;
use tickmesh_core::refdata::{
    self, Chain, ChainExpiry, ChainRef, ChainRefError, Instrument, RefKey, RefValue,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Why a chain could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(transparent)]
    BadChain(#[from] ChainRefError),
    #[error("reference data is not loaded yet")]
    NotLoaded,
    #[error("no option chain for {0}")]
    UnknownUnderlying(String),
    #[error("{underlying} has no options expiring {expiry}")]
    UnknownExpiry { underlying: String, expiry: String },
}

impl RefError {
    /// The protocol error code for a client: a malformed chain is `invalid_symbol`,
    /// reference data not loaded yet `unavailable`, anything unknown `unknown_symbol`.
    pub fn code(&self) -> ErrorCode {
        match self {
            RefError::BadChain(_) => ErrorCode::InvalidSymbol,
            RefError::NotLoaded => ErrorCode::Unavailable,
            _ => ErrorCode::UnknownSymbol,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    instruments: HashMap<String, Instrument>,
    chains: HashMap<String, Chain>,
    /// The writer said the bucket holds all it started with
    /// ([`refdata::COMPLETE_KEY`]).
    complete: bool,
}

impl Cache {
    fn apply(&mut self, entry: &kv::Entry) {
        let put = entry.operation == kv::Operation::Put;
        if entry.key == refdata::COMPLETE_KEY {
            self.complete |= put;
            return;
        }
        match refdata::parse_key(&entry.key) {
            Some(RefKey::Instrument(symbol)) if !put => {
                self.instruments.remove(symbol);
            }
            Some(RefKey::Chain(underlying)) if !put => {
                self.chains.remove(underlying);
            }
            Some(RefKey::Instrument(symbol) | RefKey::Chain(symbol)) => {
                match refdata::decode_value(&entry.key, &entry.value) {
                    Ok(Some(RefValue::Instrument(i))) => {
                        self.instruments.insert(symbol.to_string(), i);
                    }
                    Ok(Some(RefValue::Chain(c))) => {
                        self.chains.insert(symbol.to_string(), c);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "unreadable md_ref entry")
                    }
                }
            }
            None => {}
        }
    }
}

/// A chain as it was before a change, and when it changed: what a delayed-only user is
/// told of it until the delay has passed.
#[derive(Debug)]
struct ChainChange {
    at: Instant,
    underlying: String,
    before: Option<Chain>,
}

#[derive(Debug, Default)]
struct Shared {
    cache: RwLock<Cache>,
    /// Chain changes of the last `keep_changes_ms`, oldest first (see
    /// [`RefData::chains_as_of`]).
    chain_changes: Mutex<VecDeque<ChainChange>>,
    keep_changes_ms: AtomicU64,
    loaded: AtomicBool,
    changed: Notify,
    /// Bumped whenever instruments leave the reference data (an option expired, a symbol
    /// was delisted): sessions then drop what they hold of them.
    delisted: tokio::sync::watch::Sender<u64>,
}

/// The edge's view of `md_ref`. Cheap to clone; the watch stops when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct RefData {
    shared: Arc<Shared>,
    /// The watch; `None` for a fixed set.
    _task: Option<Arc<AbortOnDrop>>,
}

#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RefData {
    /// Watches the bucket `md_ref` through `js` (use the context of the JetStream domain
    /// that holds it, e.g. `jetstream::with_domain(client, "hub")`).
    pub fn new(js: jetstream::Context) -> Self {
        RefData::with_bucket(js, refdata::BUCKET)
    }

    /// Watches `bucket` instead of `md_ref`.
    pub fn with_bucket(js: jetstream::Context, bucket: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(watch(js, bucket.to_string(), shared.clone()));
        RefData {
            shared,
            _task: Some(Arc::new(AbortOnDrop(task.abort_handle()))),
        }
    }

    /// A fixed, loaded set of instruments and chains, with no watch: for tests and tools
    /// that check symbols offline.
    pub fn fixed(instruments: Vec<Instrument>, chains: Vec<Chain>) -> Self {
        let cache = Cache {
            instruments: instruments
                .into_iter()
                .map(|i| (i.symbol.clone(), i))
                .collect(),
            chains: chains
                .into_iter()
                .map(|c| (c.underlying.clone(), c))
                .collect(),
            complete: true,
        };
        let shared = Arc::new(Shared::default());
        publish(&shared, Some(cache));
        RefData {
            shared,
            _task: None,
        }
    }

    /// Changes whenever instruments leave the reference data: holders of a symbol no
    /// longer listed ([`RefData::is_known`] false) drop it.
    pub fn delistings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.delisted.subscribe()
    }

    /// True once the bucket has been read in full.
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// Waits up to `within` for the first full read; returns [`RefData::is_loaded`].
    pub async fn wait_loaded(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                if self.is_loaded() {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.shared
            .cache
            .read()
            .expect("reference-data lock is never poisoned: no panics under it")
    }

    /// Whether `symbol` is a listed instrument (false until loaded).
    pub fn is_known(&self, symbol: &str) -> bool {
        self.read().instruments.contains_key(symbol)
    }

    /// The underlying of a listed derivative.
    pub fn underlying_of(&self, symbol: &str) -> Option<String> {
        self.read()
            .instruments
            .get(symbol)
            .and_then(|i| i.underlying.clone())
    }

    /// The feed of each of `symbols` as usage reports name it: the instrument's `feed`,
    /// or [`tickmesh_core::usage::UNKNOWN_FEED`]. One lock for them all.
    pub fn feeds_of<'a>(&self, symbols: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let cache = self.read();
        symbols
            .into_iter()
            .map(|s| {
                let feed = cache.instruments.get(s).and_then(|i| i.feed.as_deref());
                feed.unwrap_or(tickmesh_core::usage::UNKNOWN_FEED)
                    .to_string()
            })
            .collect()
    }

    /// The instrument `symbol`, if listed.
    pub fn instrument(&self, symbol: &str) -> Option<Instrument> {
        self.read().instruments.get(symbol).cloned()
    }

    /// Instruments known.
    pub fn len(&self) -> usize {
        self.read().instruments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps what chains were for `keep` after they change, for
    /// [`RefData::chains_as_of`] (the longest delay served).
    pub fn keep_chain_changes(&self, keep: Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        self.shared.keep_changes_ms.store(ms, Ordering::Relaxed);
    }

    /// [`RefData::chains`] as it was `ago` (at most the `keep` of
    /// [`RefData::keep_chain_changes`]): the chain before the first change since then, if
    /// it changed.
    pub fn chains_as_of(&self, underlying: &str, ago: Duration) -> Option<Vec<ChainExpiry>> {
        if let Some(then) = Instant::now().checked_sub(ago) {
            let changes = self
                .shared
                .chain_changes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let first = changes
                .iter()
                .find(|c| c.at > then && c.underlying == underlying);
            if let Some(change) = first {
                let before = change.before.as_ref().map(|c| c.expiries.clone());
                return before.filter(|e| !e.is_empty());
            }
        }
        self.chains(underlying)
    }

    /// The expiries and strikes of `underlying`'s chain, ascending; `None` if it has no
    /// listed options. Each entry serializes as the protocol's
    /// `{"expiry": "YYYY-MM-DD", "strikes": [..]}`.
    pub fn chains(&self, underlying: &str) -> Option<Vec<ChainExpiry>> {
        self.read()
            .chains
            .get(underlying)
            .map(|c| c.expiries.clone())
            .filter(|e| !e.is_empty())
    }

    /// Every option of `UNDERLYING:YYYY-MM-DD`: by ascending strike, the call then the put.
    pub fn expand_chain(&self, spec: &str) -> Result<Vec<Symbol>, RefError> {
        let chain = ChainRef::parse(spec)?;
        if !self.is_loaded() {
            return Err(RefError::NotLoaded);
        }
        let cache = self.read();
        let underlying = chain.underlying.as_str();
        let c = cache
            .chains
            .get(underlying)
            .ok_or_else(|| RefError::UnknownUnderlying(underlying.to_string()))?;
        c.symbols(chain.expiry)
            .ok_or_else(|| RefError::UnknownExpiry {
                underlying: underlying.to_string(),
                expiry: chain.expiry.to_string(),
            })
    }
}

impl crate::auth::Families for RefData {
    fn underlying(&self, symbol: &str) -> Option<String> {
        self.underlying_of(symbol)
    }
}

/// Keeps `shared` in step with the bucket, forever (until aborted).
async fn watch(js: jetstream::Context, bucket: String, shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        match sync(&js, &bucket, &shared).await {
            Ok(()) => tracing::info!(%bucket, "reference-data watch ended; reloading"),
            Err(e) if failures == 0 => {
                tracing::info!(%bucket, error = %e, "reference data not available yet; retrying")
            }
            Err(e) => tracing::debug!(%bucket, error = %e, "reference data still not available"),
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Loads the whole bucket into a fresh cache, swaps it in, then applies live changes
/// until the watch ends or fails.
/// Reads the bucket and follows it. The reference data counts as loaded once it has been
/// read up to the present and the writer's [`refdata::COMPLETE_KEY`] is among it: before,
/// the bucket may hold a part of it (ingest writing it as the edge starts), and a symbol
/// not written yet would be refused as unknown.
async fn sync(js: &jetstream::Context, bucket: &str, shared: &Shared) -> anyhow::Result<()> {
    let store = js.get_key_value(bucket).await?;
    // The last value of every key (deletions included), then every change.
    let mut entries = store.watch_with_history(">").await?;
    let mut fresh = Some(Cache::default());
    let mut caught_up = false;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        match &mut fresh {
            Some(cache) => {
                cache.apply(&entry);
                caught_up |= entry.delta == 0;
                if caught_up && cache.complete {
                    publish(shared, fresh.take());
                }
            }
            None => {
                let mut cache = shared
                    .cache
                    .write()
                    .expect("reference-data lock is never poisoned");
                let before = cache.instruments.len();
                if let Some(RefKey::Chain(underlying)) = refdata::parse_key(&entry.key) {
                    let chain = cache.chains.get(underlying).cloned();
                    shared.chain_changed(underlying, chain);
                }
                cache.apply(&entry);
                let gone = cache.instruments.len() < before;
                drop(cache);
                shared.changed.notify_waiters();
                if gone {
                    shared.delisted.send_modify(|n| *n += 1);
                }
            }
        }
    }
    Ok(())
}

impl Shared {
    /// `underlying`'s chain is about to change from `before`: kept while
    /// `keep_changes_ms` asks (nothing kept when it is 0).
    fn chain_changed(&self, underlying: &str, before: Option<Chain>) {
        let keep = Duration::from_millis(self.keep_changes_ms.load(Ordering::Relaxed));
        if keep.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut changes = self.chain_changes.lock().unwrap_or_else(|e| e.into_inner());
        while changes.front().is_some_and(|c| c.at + keep < now) {
            changes.pop_front();
        }
        changes.push_back(ChainChange {
            at: now,
            underlying: underlying.to_string(),
            before,
        });
    }
}

fn publish(shared: &Shared, cache: Option<Cache>) {
    if let Some(cache) = cache {
        let (instruments, chains) = (cache.instruments.len(), cache.chains.len());
        let old = std::mem::replace(
            &mut *shared
                .cache
                .write()
                .expect("reference-data lock is never poisoned"),
            cache,
        );
        // A reload after an outage: what left meanwhile is delisted now.
        let gone = {
            let now = shared
                .cache
                .read()
                .expect("reference-data lock is never poisoned");
            old.instruments
                .keys()
                .any(|s| !now.instruments.contains_key(s))
        };
        if gone {
            shared.delisted.send_modify(|n| *n += 1);
        }
        shared.loaded.store(true, Ordering::Release);
        shared.changed.notify_waiters();
        tracing::info!(instruments, chains, "reference data loaded");
    }
}
