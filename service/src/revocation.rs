//! The operator's side of the revocation bucket `ctl_revoked` (schema:
//! [`tickmesh_core::revocation`]): creating it on the hub, mirroring it into a region, and
//! writing a revocation. `cargo xtask revoke` and the tests use it, logged in as NATS user
//! `admin`; edges only read the bucket.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use tickmesh_core::revocation::{BUCKET, Revoked, Value};

/// Opens the bucket through `js` (the hub's JetStream), creating it when it is missing:
/// one value per key, entries dropped `ttl` after they were written, `replicas` copies.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    let config = kv::Config {
        bucket: BUCKET.to_string(),
        description: "revoked users and tokens (tickmesh_core::revocation)".into(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        ..Default::default()
    };
    crate::stream::open_or_create_bucket(js, config)
        .await
        .with_context(|| format!("creating KV bucket {BUCKET}"))
}

/// Creates the region's read-only mirror of the bucket in JetStream domain `domain`,
/// sourced from `source_domain` (the hub's), unless it exists. Its TTL is the source's,
/// so that the region keeps each revocation as long as the hub does.
pub async fn ensure_mirror(
    client: &async_nats::Client,
    domain: &str,
    source_domain: Option<&str>,
    ttl: Duration,
    replicas: usize,
) -> anyhow::Result<()> {
    crate::kv::ensure_mirror(client, domain, BUCKET, source_domain, ttl, replicas).await?;
    Ok(())
}

/// Writes the revocation of `what`, made at `at` (seconds since the Unix epoch); returns
/// the key written.
pub async fn revoke(store: &kv::Store, what: &Revoked, at: u64) -> anyhow::Result<String> {
    let key = what.key()?;
    store
        .put(&key, Value { at }.to_json().into())
        .await
        .with_context(|| format!("writing {BUCKET} {key}"))?;
    Ok(key)
}
