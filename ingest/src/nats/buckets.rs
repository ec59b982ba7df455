//! Ingest's JetStream KV buckets: `md_last` (the latest tick per symbol), `md_ref`
//! (reference data) and the lease bucket, each created with history 1 if missing, and
//! written through [`crate::kv::Bucket`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use tickmesh_core::codec::decode_wire;
use tickmesh_service::stream::open_or_create;

use crate::kv::{Bucket, Entry, UpdateError};
use crate::lease::OpenLeases;

/// Opens `bucket`, or creates it (history 1) with `replicas` copies if it does not exist.
async fn get_or_create(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    description: &str,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        num_replicas: replicas,
        description: description.into(),
        ..Default::default()
    };
    tickmesh_service::stream::open_or_create_bucket(js, config).await
}

/// Opens the latest-value bucket, creating it (history 1, `replicas` copies) if it does
/// not exist.
pub async fn latest_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    anyhow::ensure!(
        (1..=5).contains(&replicas),
        "invalid config: kv.replicas: must be 1..=5, got {replicas}"
    );
    get_or_create(js, bucket, replicas, "TickMesh latest value per symbol")
        .await
        .with_context(|| format!("creating KV bucket {bucket} with {replicas} replicas"))
}

/// Opens the reference-data bucket, creating it (history 1) if needed.
pub(super) async fn ref_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    let description = "TickMesh reference data: instruments and option chains";
    get_or_create(js, bucket, replicas, description)
        .await
        .with_context(|| format!("creating KV bucket {bucket}"))
}

impl OpenLeases for jetstream::Context {
    async fn open_leases(&self, bucket: &str, replicas: usize) -> anyhow::Result<Arc<dyn Bucket>> {
        let description = "TickMesh feed leases: one writer per feed";
        let store = get_or_create(self, bucket, replicas, description)
            .await
            .with_context(|| format!("creating KV bucket {bucket}"))?;
        Ok(Arc::new(store))
    }
}

impl OpenLeases for super::Client {
    async fn open_leases(&self, bucket: &str, replicas: usize) -> anyhow::Result<Arc<dyn Bucket>> {
        self.js.open_leases(bucket, replicas).await
    }
}

/// The seq of the tick stored under `key`; `None` if there is none or it is unreadable.
pub async fn stored_seq(store: &kv::Store, key: &str) -> Option<u64> {
    let bytes = store.get(key).await.ok().flatten()?;
    decode_wire(&bytes).ok().map(|t| t.seq)
}

/// The highest `seq` in `store` among `keys` (0 if none). Unreadable entries, and reads
/// that take over 5 s, are skipped: this feeds [`crate::sequencer::next_epoch`], which
/// also has the wall clock.
pub async fn highest_seq(store: &kv::Store, keys: Vec<String>) -> u64 {
    let gets = keys.into_iter().map(|key| async move {
        let seq = tokio::time::timeout(Duration::from_secs(5), stored_seq(store, &key)).await;
        seq.ok().flatten().unwrap_or(0)
    });
    futures_util::stream::iter(gets)
        .buffer_unordered(64)
        .fold(0, |max, seq| async move { max.max(seq) })
        .await
}

/// Every key of `store` (within 10 s).
pub async fn all_keys(store: &kv::Store) -> anyhow::Result<Vec<String>> {
    let keys = async {
        let keys = store.keys().await.context("listing KV keys")?;
        keys.try_collect::<Vec<String>>()
            .await
            .context("listing KV keys")
    };
    tokio::time::timeout(Duration::from_secs(10), keys)
        .await
        .context("listing KV keys timed out")?
}

impl Bucket for kv::Store {
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Entry>>> {
        Box::pin(async move {
            let entry = kv::Store::entry(self, key).await?;
            Ok(entry.map(|e| Entry {
                revision: e.revision,
                value: (e.operation == kv::Operation::Put).then_some(e.value),
            }))
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>> {
        Box::pin(async move { Ok(kv::Store::create(self, key, value).await?) })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, UpdateError>> {
        Box::pin(async move {
            kv::Store::update(self, key, value, revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => UpdateError::WrongRevision(e.into()),
                    _ => UpdateError::Other(e.into()),
                })
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>> {
        Box::pin(async move { Ok(kv::Store::put(self, key, value).await?) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(kv::Store::delete(self, key).await?) })
    }
}

/// Opens the trades stream (subjects `tr.>`), creating it if missing: the last `keep`
/// prints of each subject, `replicas` copies, in memory (a restart of the whole cluster
/// loses the tape's history, never a live print).
pub(super) async fn trades_stream(
    js: &jetstream::Context,
    name: &str,
    keep: i64,
    replicas: usize,
) -> anyhow::Result<()> {
    let config = kept_per_subject(name, "tr.>", keep, replicas);
    let description = "TickMesh time and sales: the recent prints of each symbol";
    open_or_create(js, config, description).await?;
    Ok(())
}

/// Opens the stream of delayed samples (subjects `mdd.>`), creating it if missing:
/// every sample kept `keep`, on file (a delay of minutes over many symbols outgrows
/// memory), with direct gets, which is how edges read it at now − delay.
pub(super) async fn delayed_stream(
    js: &jetstream::Context,
    name: &str,
    keep: std::time::Duration,
    replicas: usize,
) -> anyhow::Result<()> {
    let config = jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec!["mdd.>".into()],
        max_age: keep,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let description =
        "TickMesh delayed data: a sample of each symbol per step, read at now - delay";
    open_or_create(js, config, description).await?;
    Ok(())
}

/// Opens the stream of delayed trades and bars, creating it if missing: every message of
/// the `origins` (the trades and bars streams), sourced from them from now on with their
/// subjects, kept `keep` on file, with direct gets (edges read each followed subject of
/// it at now − delay).
pub(super) async fn delayed_tape_stream(
    js: &jetstream::Context,
    name: &str,
    origins: &[&str],
    keep: std::time::Duration,
    replicas: usize,
) -> anyhow::Result<()> {
    if js.get_stream(name).await.is_ok() {
        return Ok(());
    }
    let mut sources = Vec::with_capacity(origins.len());
    for origin in origins {
        let mut stream = js
            .get_stream(*origin)
            .await
            .with_context(|| format!("opening stream {origin}"))?;
        let last = stream
            .info()
            .await
            .with_context(|| format!("reading the state of stream {origin}"))?
            .state
            .last_sequence;
        // What the origin kept before is not copied: it would be stored as new.
        sources.push(jetstream::stream::Source {
            name: origin.to_string(),
            start_sequence: Some(last + 1),
            ..Default::default()
        });
    }
    let config = jetstream::stream::Config {
        name: name.to_string(),
        sources: Some(sources),
        max_age: keep,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let description = "TickMesh delayed trades and bars: every print and bar, read at now - delay";
    open_or_create(js, config, description).await?;
    Ok(())
}

/// Opens the bars stream (subjects `bar.>`), creating it if missing: the last `keep`
/// bars of each subject, `replicas` copies, in memory, with per-message TTLs (a bar in
/// progress is kept only a while) and direct gets (a new owner reads the last bar of each
/// subject).
pub(super) async fn bars_stream(
    js: &jetstream::Context,
    name: &str,
    keep: i64,
    replicas: usize,
) -> anyhow::Result<()> {
    let config = jetstream::stream::Config {
        allow_direct: true,
        allow_message_ttl: true,
        ..kept_per_subject(name, "bar.>", keep, replicas)
    };
    let description = "TickMesh bars: the closed bars of each symbol and timeframe";
    open_or_create(js, config, description).await?;
    Ok(())
}

/// A stream of `subjects` in memory that keeps the last `keep` messages of each subject.
fn kept_per_subject(
    name: &str,
    subjects: &str,
    keep: i64,
    replicas: usize,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.into()],
        max_messages_per_subject: keep,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas,
        discard: jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    }
}
