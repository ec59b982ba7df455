//! JetStream KV buckets as the mesh lays them out: a bucket on the hub, and a read-only
//! mirror of it in each region's JetStream domain.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::stream::{External, Source};
use async_nats::jetstream::{self, kv};

/// Creates the region's read-only mirror of `bucket` in JetStream domain `domain`, sourced
/// from `bucket` in `source_domain` (the hub's), keeping entries for `max_age` (zero: as
/// long as the source does not delete them), with `replicas` copies, unless a bucket of
/// that name exists there already. Returns whether it created one.
pub async fn ensure_mirror(
    client: &async_nats::Client,
    domain: &str,
    bucket: &str,
    source_domain: Option<&str>,
    max_age: Duration,
    replicas: usize,
) -> anyhow::Result<bool> {
    let js = jetstream::with_domain(client.clone(), domain);
    if js.get_key_value(bucket).await.is_ok() {
        return Ok(false);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_string(),
        description: format!("read-only mirror of {bucket} for region {domain}"),
        history: 1,
        max_age,
        num_replicas: replicas,
        // The source's domain as an explicit API prefix: async-nats passes a `domain`
        // field through to the server unchanged on this path, which the server refuses.
        mirror: Some(Source {
            name: bucket.to_string(),
            external: source_domain.map(|d| External {
                api_prefix: format!("$JS.{d}.API"),
                delivery_prefix: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .with_context(|| {
        format!(
            "creating the mirror of {bucket} in JetStream domain {domain} (from {source_domain:?})"
        )
    })?;
    Ok(true)
}
