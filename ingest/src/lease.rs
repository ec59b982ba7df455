//! The feed lease: one writer per symbol, even with a standby ingest node running.
//!
//! Every node of a feed uses the same lease, the KV entry `<lease.bucket>/<lease.name>`;
//! each symbol belongs to exactly one feed. Only the holder publishes.
//!
//! - Acquire: a standby polls the entry. If it is absent, deleted or marked released it
//!   takes it at once; otherwise it takes it only after the entry's revision has not
//!   changed for `ttl` on its own monotonic clock. Taking is a KV create or an update
//!   with the observed revision, so of several standbys exactly one wins.
//! - Renew: the holder rewrites the entry every `ttl/3`, each time with the revision of
//!   its previous write. A write refused for a wrong revision means another node took
//!   the lease: the holder has lost it.
//! - Fence: the holder publishes only while its last successful renewal was *sent* less
//!   than `2·ttl/3` ago. A standby waits `ttl` after it first *saw* that revision, which
//!   is after it was sent, so the old holder has stopped before the new one starts, with
//!   a `ttl/3` margin, whatever the wall clocks say (only clock rates matter).
//! - Sequence bound: each renewal also records `seq_bound`, above every seq the holder
//!   can stamp until it fences (its epoch plus the µs elapsed since its term began plus
//!   the fence, since no symbol ticks more than once a µs). The next holder starts its
//!   epoch above it, so seq keeps increasing across a fail-over even between nodes whose
//!   clocks disagree.
//! - Release: on shutdown the holder marks the entry released (keeping `seq_bound`), so
//!   a standby or a restarted node takes over without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use tickmesh_core::tick::now_us;

use crate::kv::{Bucket, Entry, UpdateError};

/// `[lease]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Publish only while holding the feed's lease; a second node waits as a standby.
    /// Default true.
    pub enabled: bool,
    /// Bucket of the leases. Default `md_lease`.
    pub bucket: String,
    /// The feed's name, which is the lease key; every node of one feed uses the same name.
    /// `A-Z a-z 0-9 _ -`. Default `main`.
    pub name: String,
    /// A holder that has not renewed for this long loses the lease, in ms. Default 3000.
    pub ttl_ms: u64,
    /// This node's name in the lease entry. Default: host name, process id and a random
    /// suffix.
    pub node: Option<String>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            enabled: true,
            bucket: "md_lease".into(),
            name: "main".into(),
            ttl_ms: 3000,
            node: None,
        }
    }
}

impl LeaseConfig {
    /// Checks the values; errors name the key below `lease`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token(&self.name) {
            return Err((
                "name",
                format!("{:?} must be 1-64 of A-Za-z0-9_-", self.name),
            ));
        }
        if let Some(node) = &self.node
            && (node.is_empty() || node.len() > 128)
        {
            return Err(("node", "must be 1 to 128 characters".into()));
        }
        if !(300..=600_000).contains(&self.ttl_ms) {
            return Err((
                "ttl_ms",
                format!("must be 300..=600000, got {}", self.ttl_ms),
            ));
        }
        Ok(())
    }

    fn node_name(&self) -> String {
        if let Some(node) = &self.node {
            return node.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ingest".into());
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    }
}

/// The lease entry's value (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub holder: String,
    /// The holder's epoch (0 until its first term starts).
    pub epoch: u64,
    /// Every seq the holder stamped or can stamp before it fences is below this.
    pub seq_bound: u64,
    /// The holder let go; take over at once.
    pub released: bool,
    /// Wall time of the write, µs (for people reading the entry).
    pub renewed_us: u64,
}

/// What a standby does after looking at the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Wait,
    /// No entry: create it.
    Create,
    /// Take it over by updating this revision.
    Take(u64),
}

/// A standby's view of the entry: when it first saw the current revision.
#[derive(Debug)]
pub struct Standby {
    ttl: Duration,
    seen: Option<(u64, Instant)>,
}

/// What the entry looked like: `None` if absent; else revision and whether it is free
/// (deleted, purged or released).
pub type Observed = Option<(u64, bool)>;

impl Standby {
    pub fn new(ttl: Duration) -> Self {
        Standby { ttl, seen: None }
    }

    pub fn observe(&mut self, entry: Observed, now: Instant) -> Action {
        match entry {
            None => Action::Create,
            Some((revision, true)) => Action::Take(revision),
            Some((revision, false)) => match self.seen {
                Some((seen, since)) if seen == revision => {
                    if now.duration_since(since) >= self.ttl {
                        Action::Take(revision)
                    } else {
                        Action::Wait
                    }
                }
                _ => {
                    self.seen = Some((revision, now));
                    Action::Wait
                }
            },
        }
    }
}

/// Where the bucket of leases is kept: JetStream, through [`crate::nats`].
pub trait OpenLeases {
    /// Opens the bucket of leases, creating it (history 1, `replicas` copies) if needed.
    fn open_leases(
        &self,
        bucket: &str,
        replicas: usize,
    ) -> impl Future<Output = anyhow::Result<Arc<dyn Bucket>>> + Send;
}

/// The feed's lease in KV.
#[derive(Debug, Clone)]
pub struct Lease {
    store: Arc<dyn Bucket>,
    key: String,
    node: String,
    ttl: Duration,
}

/// The lease's value in `entry`, if it holds one that reads.
fn value_of(entry: Option<&Entry>) -> Option<LeaseValue> {
    let bytes = entry?.value.as_ref()?;
    serde_json::from_slice(bytes).ok()
}

impl Lease {
    /// Opens the lease bucket, creating it if needed.
    pub async fn open(
        buckets: &(impl OpenLeases + ?Sized),
        config: &LeaseConfig,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let store = buckets.open_leases(&config.bucket, replicas).await?;
        Ok(Lease::in_bucket(store, config))
    }

    /// The lease of `config` in `store`.
    fn in_bucket(store: Arc<dyn Bucket>, config: &LeaseConfig) -> Self {
        Lease {
            store,
            key: config.name.clone(),
            node: config.node_name(),
            ttl: Duration::from_millis(config.ttl_ms),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Waits until this node holds the lease; `None` if `cancel` fires first. KV errors
    /// are logged and retried: a standby outlives a NATS outage.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Option<Held> {
        let mut standby = Standby::new(self.ttl);
        let poll = (self.ttl / 6).max(Duration::from_millis(50));
        let mut waiting_logged = false;
        loop {
            match self.try_take(&mut standby).await {
                Ok(Some(held)) => return Some(held),
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!(lease = %self.key, node = %self.node, "standby: another node holds the lease");
                        waiting_logged = true;
                    }
                }
                Err(e) => tracing::warn!(lease = %self.key, error = %e, "lease poll failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn try_take(&self, standby: &mut Standby) -> anyhow::Result<Option<Held>> {
        let entry = self.store.entry(&self.key).await?;
        let prior = value_of(entry.as_ref());
        // Free: deleted, released, or our own entry from a term that lapsed (taking it
        // back is a compare-and-set like any other, so a standby elsewhere cannot also win).
        let observed = entry.as_ref().map(|e| {
            let free = e.value.is_none()
                || prior
                    .as_ref()
                    .is_some_and(|p| p.released || p.holder == self.node);
            (e.revision, free)
        });
        let prior_bound = prior.as_ref().map_or(0, |p| p.seq_bound);
        let value = LeaseValue {
            holder: self.node.clone(),
            epoch: 0,
            seq_bound: prior_bound,
            released: false,
            renewed_us: now_us(),
        };
        let sent = Instant::now();
        let bytes = Bytes::from(serde_json::to_vec(&value)?);
        let won = match standby.observe(observed, sent) {
            Action::Wait => return Ok(None),
            Action::Create => self.store.create(&self.key, bytes).await.ok(),
            Action::Take(revision) => self.store.update(&self.key, bytes, revision).await.ok(),
        };
        let Some(revision) = won else {
            return Ok(None);
        };
        tracing::info!(lease = %self.key, node = %self.node, previous = ?prior.map(|p| p.holder), "lease acquired");
        metrics::counter!("tickmesh_ingest_lease_events_total", "event" => "acquired").increment(1);
        Ok(Some(Held::start(self.clone(), value, revision, sent)))
    }
}

/// State shared between a held lease and its renewal task.
#[derive(Debug)]
struct Shared {
    base: Instant,
    /// Publishing is allowed until this many ns after `base`.
    valid_until_ns: AtomicU64,
    lost: CancellationToken,
    /// The value and revision of the holder's last write.
    last: Mutex<(LeaseValue, u64)>,
    term: std::sync::Mutex<Option<(u64, Instant)>>,
}

/// A lease this node holds, renewed in the background until released, lost or dropped.
#[derive(Debug)]
pub struct Held {
    lease: Lease,
    shared: Arc<Shared>,
    stop: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl Held {
    fn start(lease: Lease, value: LeaseValue, revision: u64, sent: Instant) -> Held {
        let shared = Arc::new(Shared {
            base: sent,
            valid_until_ns: AtomicU64::new(0),
            lost: CancellationToken::new(),
            last: Mutex::new((value, revision)),
            term: std::sync::Mutex::new(None),
        });
        shared.extend(sent, lease.ttl);
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(lease.clone(), shared.clone(), stop.clone()));
        metrics::gauge!("tickmesh_ingest_lease_held").set(1.0);
        Held {
            lease,
            shared,
            stop,
            renewer,
        }
    }

    /// The previous holder's sequence bound (0 if none was recorded).
    pub async fn prior_bound(&self) -> u64 {
        self.shared.last.lock().await.0.seq_bound
    }

    /// True while this node may publish.
    pub fn is_valid(&self) -> bool {
        let now = self.shared.base.elapsed().as_nanos() as u64;
        !self.shared.lost.is_cancelled() && now < self.shared.valid_until_ns.load(Ordering::Acquire)
    }

    /// Completes when the lease is lost (or has lapsed).
    pub async fn lost(&self) {
        self.shared.lost.cancelled().await
    }

    /// Starts publishing with `epoch`: records the epoch and the sequence bound in the
    /// entry before the first tick goes out.
    pub async fn start_term(&self, epoch: u64) -> anyhow::Result<()> {
        *self
            .shared
            .term
            .lock()
            .expect("term mutex is never poisoned") = Some((epoch, Instant::now()));
        anyhow::ensure!(
            write(&self.lease, &self.shared).await?,
            "lost the lease before the first tick"
        );
        Ok(())
    }

    /// Stops renewing and marks the entry released, so that a standby takes over at once.
    pub async fn release(mut self) {
        self.stop.cancel();
        let _ = (&mut self.renewer).await;
        metrics::gauge!("tickmesh_ingest_lease_held").set(0.0);
        if self.shared.lost.is_cancelled() {
            return;
        }
        let (mut value, revision) = self.shared.last.lock().await.clone();
        value.seq_bound = value.seq_bound.max(self.shared.bound(self.lease.ttl));
        value.released = true;
        value.renewed_us = now_us();
        let Ok(bytes) = serde_json::to_vec(&value) else {
            return;
        };
        match self
            .lease
            .store
            .update(&self.lease.key, bytes.into(), revision)
            .await
        {
            Ok(_) => {
                metrics::counter!("tickmesh_ingest_lease_events_total", "event" => "released")
                    .increment(1);
                tracing::info!(lease = %self.lease.key, "lease released");
            }
            Err(e) => {
                tracing::warn!(lease = %self.lease.key, error = %e, "lease release failed; a standby takes over after the ttl")
            }
        }
    }
}

impl Drop for Held {
    /// A holder dropped without [`Held::release`] (its task aborted) stops renewing, so the
    /// lease lapses as if the process had died.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    fn extend(&self, sent: Instant, ttl: Duration) {
        let until = sent.duration_since(self.base) + ttl * 2 / 3;
        self.valid_until_ns
            .fetch_max(until.as_nanos() as u64, Ordering::AcqRel);
    }

    /// Above every seq stamped until the fence, if a renewal sent now succeeds.
    fn bound(&self, ttl: Duration) -> u64 {
        let term = *self.term.lock().expect("term mutex is never poisoned");
        term.map_or(0, |(epoch, began)| {
            epoch + began.elapsed().as_micros() as u64 + (ttl * 2 / 3).as_micros() as u64 + 1
        })
    }

    fn lose(&self, why: &str, key: &str) {
        if !self.lost.is_cancelled() {
            tracing::warn!(lease = %key, why, "lease lost: publishing stops");
            metrics::counter!("tickmesh_ingest_lease_events_total", "event" => "lost").increment(1);
            metrics::gauge!("tickmesh_ingest_lease_held").set(0.0);
            self.lost.cancel();
        }
    }
}

/// One renewal. Ok(false) if the lease turned out to be someone else's.
async fn write(lease: &Lease, shared: &Shared) -> anyhow::Result<bool> {
    let mut last = shared.last.lock().await;
    let sent = Instant::now();
    let mut value = last.0.clone();
    if let Some((epoch, _)) = *shared.term.lock().expect("term mutex is never poisoned") {
        value.epoch = epoch;
    }
    value.seq_bound = value.seq_bound.max(shared.bound(lease.ttl));
    value.renewed_us = now_us();
    let bytes = Bytes::from(serde_json::to_vec(&value)?);
    let result =
        tokio::time::timeout(lease.ttl / 3, lease.store.update(&lease.key, bytes, last.1)).await;
    match result {
        Ok(Ok(revision)) => {
            *last = (value, revision);
            shared.extend(sent, lease.ttl);
            Ok(true)
        }
        Ok(Err(UpdateError::WrongRevision(_))) => {
            // Our own write may have landed with its acknowledgement lost.
            let entry = lease.store.entry(&lease.key).await?;
            let current = value_of(entry.as_ref());
            match (entry, current) {
                (Some(e), Some(v)) if v.holder == lease.node && !v.released => {
                    *last = (v, e.revision);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("lease renewal timed out"),
    }
}

async fn renew(lease: Lease, shared: Arc<Shared>, stop: CancellationToken) {
    let every = lease.ttl / 3;
    loop {
        let valid_until =
            shared.base + Duration::from_nanos(shared.valid_until_ns.load(Ordering::Acquire));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = tokio::time::sleep_until(valid_until.into()) => {}
        }
        if Instant::now() >= valid_until {
            // Nothing confirmed in time: stop publishing; a standby may take over soon.
            shared.lose("renewals failed for too long", &lease.key);
            return;
        }
        match write(&lease, &shared).await {
            Ok(true) => {}
            Ok(false) => {
                shared.lose("another node took the lease", &lease.key);
                return;
            }
            Err(e) => tracing::warn!(lease = %lease.key, error = %e, "lease renewal failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::Memory;

    fn in_memory(kv: &Memory, node: &str) -> Lease {
        let config = LeaseConfig {
            ttl_ms: 300,
            node: Some(node.into()),
            ..LeaseConfig::default()
        };
        Lease::in_bucket(Arc::new(kv.clone()), &config)
    }

    fn stored(kv: &Memory) -> LeaseValue {
        serde_json::from_slice(&kv.value("main").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_an_overwritten_one_is_lost() {
        let kv = Memory::default();
        let (a, b) = (in_memory(&kv, "a"), in_memory(&kv, "b"));
        let never = CancellationToken::new();
        let held_a = a.acquire(&never).await.unwrap();
        held_a.start_term(1_000).await.unwrap();
        assert!(held_a.is_valid());
        assert_eq!(
            (stored(&kv).holder.as_str(), stored(&kv).epoch),
            ("a", 1_000)
        );

        // b sees a renewed entry: it waits.
        let mut standby = Standby::new(b.ttl);
        assert!(b.try_take(&mut standby).await.unwrap().is_none());
        // a lets go, keeping its bound: b takes over without waiting for the ttl.
        held_a.release().await;
        assert!(stored(&kv).released);
        let held_b = b
            .try_take(&mut standby)
            .await
            .unwrap()
            .expect("released: free");
        assert!(held_b.prior_bound().await > 1_000);
        assert_eq!(stored(&kv).holder, "b");

        // Another node writes the entry over: b notices at its next renewal and stops.
        let other = LeaseValue {
            holder: "intruder".into(),
            ..LeaseValue::default()
        };
        kv.put("main", serde_json::to_vec(&other).unwrap().into())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), held_b.lost())
            .await
            .expect("the holder notices it lost the lease");
        assert!(!held_b.is_valid());
    }

    #[test]
    fn standby_takes_a_free_lease_at_once() {
        let mut s = Standby::new(Duration::from_secs(3));
        let now = Instant::now();
        assert_eq!(s.observe(None, now), Action::Create);
        assert_eq!(s.observe(Some((7, true)), now), Action::Take(7));
    }

    #[test]
    fn standby_waits_a_full_ttl_of_silence_from_when_it_saw_the_revision() {
        let ttl = Duration::from_secs(3);
        let mut s = Standby::new(ttl);
        let t0 = Instant::now();
        assert_eq!(s.observe(Some((5, false)), t0), Action::Wait);
        assert_eq!(s.observe(Some((5, false)), t0 + ttl / 2), Action::Wait);
        // The holder renewed: the wait starts over.
        assert_eq!(s.observe(Some((6, false)), t0 + ttl), Action::Wait);
        assert_eq!(
            s.observe(Some((6, false)), t0 + ttl + ttl / 2),
            Action::Wait
        );
        assert_eq!(s.observe(Some((6, false)), t0 + 2 * ttl), Action::Take(6));
    }

    #[test]
    fn the_holder_fences_itself_before_a_standby_may_take_over() {
        // The holder may publish until 2/3 ttl after *sending* its last renewal; a
        // standby waits a full ttl after *seeing* it, which is later.
        let ttl = Duration::from_millis(3000);
        let base = Instant::now();
        let shared = Shared {
            base,
            valid_until_ns: AtomicU64::new(0),
            lost: CancellationToken::new(),
            last: Mutex::new((LeaseValue::default(), 1)),
            term: std::sync::Mutex::new(None),
        };
        shared.extend(base, ttl);
        let until = base + Duration::from_nanos(shared.valid_until_ns.load(Ordering::Acquire));
        let mut s = Standby::new(ttl);
        assert_eq!(s.observe(Some((1, false)), base), Action::Wait);
        assert_eq!(s.observe(Some((1, false)), until), Action::Wait);
        assert!(until + ttl / 3 <= base + ttl);
        // An older renewal never shortens the validity.
        shared.extend(base, ttl / 2);
        assert_eq!(
            base + Duration::from_nanos(shared.valid_until_ns.load(Ordering::Acquire)),
            until
        );
    }

    #[test]
    fn config_is_checked() {
        LeaseConfig::default().validate().unwrap();
        let bad = LeaseConfig {
            name: "a.b".into(),
            ..LeaseConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "name");
        let bad = LeaseConfig {
            ttl_ms: 10,
            ..LeaseConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "ttl_ms");
        assert!(LeaseConfig::default().node_name().contains('-'));
    }
}
