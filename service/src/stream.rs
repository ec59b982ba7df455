//! JetStream streams and KV buckets as their owning service creates them: opened when they
//! exist (as they are: an operator may have tuned them), created when they do not.

use anyhow::Context;
use async_nats::jetstream::{self, kv, stream};

/// Opens the stream `config` names, or creates it (with `description`).
pub async fn open_or_create(
    js: &jetstream::Context,
    config: stream::Config,
    description: &str,
) -> anyhow::Result<stream::Stream> {
    if let Ok(stream) = js.get_stream(&config.name).await {
        return Ok(stream);
    }
    let (name, replicas) = (config.name.clone(), config.num_replicas);
    js.create_stream(stream::Config {
        description: Some(description.into()),
        ..config
    })
    .await
    .with_context(|| format!("creating stream {name} with {replicas} replicas"))
}

/// Opens the bucket `config` names, or creates it.
pub async fn open_or_create_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    js.create_key_value(config).await
}
