//! Latest-value reads. In a region, `md_last` is read from the region's read-only mirror
//! (a local read, so a reconnect storm never crosses the WAN); when that mirror is stale
//! or missing, from the hub's bucket through the hub's JetStream domain.
//!
//! A monitor task asks the region's JetStream once a second how long ago the mirror last
//! heard from its source (`mirror.active`). Older than `nats.kv_mirror_max_idle_ms`, or no
//! mirror at all, counts as stale. A fresh mirror's miss is final (no read of the hub).
//! When a stale mirror turns fresh again (the region's link to the hub is back), every
//! carried symbol is re-read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;

use crate::config::NatsConfig;

/// How often the mirror's freshness is checked.
const MIRROR_CHECK: Duration = Duration::from_secs(1);

/// Where a value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFrom {
    Mirror,
    Hub,
}

impl ReadFrom {
    fn label(self) -> &'static str {
        match self {
            ReadFrom::Mirror => "mirror",
            ReadFrom::Hub => "hub",
        }
    }
}

/// One KV bucket in one JetStream domain, opened on first use (an error is not cached, so
/// a bucket created later is found).
#[derive(Debug)]
struct Bucket {
    js: jetstream::Context,
    name: String,
    store: OnceCell<kv::Store>,
    source: ReadFrom,
}

impl Bucket {
    /// Opens the bucket now if it is not open yet; an error is left for the first read.
    async fn open(&self) {
        let _ = self
            .store
            .get_or_try_init(|| self.js.get_key_value(&self.name))
            .await;
    }

    async fn get(&self, key: &str, timeout: Duration) -> anyhow::Result<Option<Bytes>> {
        let read = async {
            let store = self
                .store
                .get_or_try_init(|| self.js.get_key_value(&self.name))
                .await
                .with_context(|| {
                    format!("opening KV bucket {} ({})", self.name, self.source.label())
                })?;
            store.get(key).await.context("KV read")
        };
        let result = tokio::time::timeout(timeout, read)
            .await
            .context("KV read timed out")
            .and_then(|r| r);
        let outcome = match &result {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(_) => "error",
        };
        metrics::counter!("tickmesh_edge_kv_reads_total", "source" => self.source.label(), "result" => outcome)
            .increment(1);
        result
    }
}

/// Stops the monitor task when the last [`KvReader`] clone goes.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Mirror {
    bucket: Bucket,
    fresh: Arc<AtomicBool>,
    _monitor: AbortOnDrop,
}

/// Reads `md_last` from the regional mirror when fresh, else from the hub.
#[derive(Debug)]
pub struct KvReader {
    hub: Bucket,
    mirror: Option<Mirror>,
    timeout: Duration,
}

impl KvReader {
    /// `resync` is bumped when a stale mirror turns fresh.
    pub fn new(
        client: &async_nats::Client,
        config: &NatsConfig,
        timeout: Duration,
        resync: Arc<watch::Sender<u64>>,
    ) -> anyhow::Result<Self> {
        let hub_js = match &config.js_domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        let hub = Bucket {
            js: hub_js,
            name: config.kv_bucket.clone(),
            store: OnceCell::new(),
            source: ReadFrom::Hub,
        };
        let mirror = match &config.kv_mirror_domain {
            None => None,
            Some(domain) => {
                // EdgeConfig::validate has checked the domain and the idle bound.
                let js = jetstream::with_domain(client.clone(), domain);
                let fresh = Arc::new(AtomicBool::new(false));
                let monitor = tokio::spawn(monitor(
                    MirrorWatch {
                        js: js.clone(),
                        client: client.clone(),
                        domain: domain.clone(),
                        bucket: config.kv_bucket.clone(),
                        source_domain: config.js_domain.clone(),
                        create: config.kv_mirror_create,
                        replicas: config.kv_mirror_replicas,
                        max_idle: Duration::from_millis(config.kv_mirror_max_idle_ms),
                        timeout,
                    },
                    fresh.clone(),
                    resync,
                ))
                .abort_handle();
                Some(Mirror {
                    bucket: Bucket {
                        js,
                        name: config.kv_bucket.clone(),
                        store: OnceCell::new(),
                        source: ReadFrom::Mirror,
                    },
                    fresh,
                    _monitor: AbortOnDrop(monitor),
                })
            }
        };
        Ok(KvReader {
            hub,
            mirror,
            timeout,
        })
    }

    /// Opens the buckets ahead of the first snapshot, so that the first reads after a start
    /// (a reconnect storm onto a new edge) cost one request each, not two.
    pub async fn open(&self) {
        self.hub.open().await;
        if let Some(m) = &self.mirror {
            m.bucket.open().await;
        }
    }

    /// Whether snapshots currently come from the regional mirror.
    pub fn mirror_fresh(&self) -> Option<bool> {
        self.mirror
            .as_ref()
            .map(|m| m.fresh.load(Ordering::Relaxed))
    }

    /// The latest value of `key` for a snapshot: the mirror when fresh (the hub only when
    /// the mirror fails: a fresh mirror's miss is the answer, so that clients asking for
    /// symbols without a value cannot send reads across the WAN), else the hub (the stale
    /// mirror when the hub fails).
    pub async fn latest(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match &self.mirror {
            Some(m) if m.fresh.load(Ordering::Relaxed) => {
                match m.bucket.get(key, self.timeout).await {
                    Ok(v) => Ok(v),
                    Err(_) => self.hub.get(key, self.timeout).await,
                }
            }
            Some(m) => self.hub_then(&m.bucket, key).await,
            None => self.hub.get(key, self.timeout).await,
        }
    }

    /// The latest value of `key` after a resync: the hub first (the freshest there is),
    /// the mirror only when the hub cannot be read.
    pub async fn latest_authoritative(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match &self.mirror {
            Some(m) => self.hub_then(&m.bucket, key).await,
            None => self.hub.get(key, self.timeout).await,
        }
    }

    async fn hub_then(&self, fallback: &Bucket, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.hub.get(key, self.timeout).await {
            Ok(v) => Ok(v),
            Err(hub_err) => match fallback.get(key, self.timeout).await {
                Ok(v) => Ok(v),
                Err(_) => Err(hub_err),
            },
        }
    }
}

struct MirrorWatch {
    js: jetstream::Context,
    client: async_nats::Client,
    domain: String,
    bucket: String,
    source_domain: Option<String>,
    create: bool,
    replicas: usize,
    max_idle: Duration,
    timeout: Duration,
}

impl MirrorWatch {
    /// Fresh when the mirror exists and heard from its source within `max_idle`.
    async fn check(&self) -> Result<bool, String> {
        let stream = format!("KV_{}", self.bucket);
        let info = tokio::time::timeout(self.timeout, self.js.get_stream(&stream))
            .await
            .map_err(|_| "stream info timed out".to_string())?;
        match info {
            Ok(stream) => {
                let Some(source) = &stream.cached_info().mirror else {
                    return Err(format!("KV_{} is not a mirror", self.bucket));
                };
                Ok(source.active.is_some_and(|a| a <= self.max_idle))
            }
            Err(e) => {
                let missing = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref err)
                        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                if !(self.create && missing) {
                    return Err(e.to_string());
                }
                match ensure_mirror(
                    &self.client,
                    &self.domain,
                    &self.bucket,
                    self.source_domain.as_deref(),
                    self.replicas,
                )
                .await
                {
                    Ok(()) => Err("created just now; waiting for its first values".into()),
                    Err(e) => Err(format!("{e:#}")),
                }
            }
        }
    }
}

async fn monitor(w: MirrorWatch, fresh: Arc<AtomicBool>, resync: Arc<watch::Sender<u64>>) {
    let gauge = metrics::gauge!("tickmesh_edge_kv_mirror_fresh");
    let mut was: Option<bool> = None;
    let mut timer = tokio::time::interval(MIRROR_CHECK);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let (now, why) = match w.check().await {
            Ok(now) => (now, None),
            Err(why) => (false, Some(why)),
        };
        fresh.store(now, Ordering::Relaxed);
        gauge.set(if now { 1.0 } else { 0.0 });
        if was != Some(now) {
            if now {
                tracing::info!(domain = %w.domain, bucket = %w.bucket, "KV mirror fresh: snapshots read locally");
            } else {
                tracing::warn!(domain = %w.domain, bucket = %w.bucket, reason = why.as_deref().unwrap_or("idle"),
                    "KV mirror stale or missing: snapshots read from the hub");
            }
            if was == Some(false) && now {
                metrics::counter!("tickmesh_edge_resyncs_total", "cause" => "mirror").increment(1);
                resync.send_modify(|g| *g += 1);
            }
            was = Some(now);
        }
    }
}

/// Creates the region's read-only mirror of `bucket` in `domain`, sourced from `bucket` in
/// `source_domain` (the hub's), with `replicas` copies, unless a bucket of that name
/// exists there already.
pub async fn ensure_mirror(
    client: &async_nats::Client,
    domain: &str,
    bucket: &str,
    source_domain: Option<&str>,
    replicas: usize,
) -> anyhow::Result<()> {
    let created = tickmesh_service::kv::ensure_mirror(
        client,
        domain,
        bucket,
        source_domain,
        Duration::ZERO,
        replicas,
    )
    .await?;
    if created {
        tracing::info!(%domain, %bucket, "created the regional KV mirror");
    }
    Ok(())
}
