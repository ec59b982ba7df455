//! Ingest's boundary with NATS: the one module that speaks `async_nats`. The rest of
//! ingest sees narrow types of its own: a [`Client`] that publishes ticks and opens the
//! feed's buckets, buckets behind [`crate::kv::Bucket`], the lease's bucket behind
//! [`crate::lease::OpenLeases`], and a [`Tap`] for the subscribers (record, bench).
//!
//! - [`connect`]: the feed's connection, with the service's TLS and credentials
//!   (`tickmesh_service::nats::options`).
//! - [`buckets`]: `md_last`, `md_ref` and the lease bucket: created if missing, read, and
//!   written through [`crate::kv::Bucket`].
//! - [`Tap`]: a connection of its own for one subscriber, counting what NATS drops when
//!   the subscriber falls behind.

mod buckets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::bar::Bar;

use crate::config::NatsConfig;

pub use buckets::{all_keys, highest_seq, latest_bucket, stored_seq};

/// Commands queued in the client before `publish` waits; at ~400 B a tick, 16k of them
/// are a few MB while NATS is unreachable.
const CLIENT_CAPACITY: usize = 16 * 1024;

/// The feed's connection: publishes ticks and opens the feed's buckets.
#[derive(Debug, Clone)]
pub struct Client {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// A publish that could not be queued.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PublishError(#[from] async_nats::PublishError);

/// Connects to `config.urls`, retrying until a server answers.
pub async fn connect(config: &NatsConfig) -> anyhow::Result<Client> {
    let urls = config.urls.join(",");
    let client = tickmesh_service::nats::options(&config.tls, &config.auth)
        .await?
        .name(&config.name)
        .client_capacity(CLIENT_CAPACITY)
        // Tick subjects are built from validated symbols: no need to rescan each one.
        .skip_subject_validation(true)
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS");
        })
        .connect(config.urls.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))?;
    let js = jetstream::new(client.clone());
    Ok(Client { client, js })
}

impl Client {
    /// Queues one tick. A static subject: no reference count shared with the connection's
    /// thread (see `publisher::intern`).
    pub async fn publish(&self, subject: &'static str, payload: Bytes) -> Result<(), PublishError> {
        self.client.publish(subject, payload).await?;
        Ok(())
    }

    /// Publishes `ticks` (subject, payload) over and over, as fast as one task can, until
    /// `until`, then flushes: the ceiling of this client and server. Subjects are
    /// converted once, before the loop. Returns how many were published.
    pub async fn publish_until(
        &self,
        ticks: &[(String, Bytes)],
        until: Instant,
    ) -> anyhow::Result<u64> {
        let ticks: Vec<(async_nats::Subject, Bytes)> = ticks
            .iter()
            .map(|(subject, payload)| (subject.as_str().into(), payload.clone()))
            .collect();
        let mut n = 0u64;
        loop {
            for (subject, payload) in &ticks {
                self.client
                    .publish(subject.clone(), payload.clone())
                    .await?;
                n += 1;
            }
            if Instant::now() >= until {
                break;
            }
        }
        self.flush().await?;
        Ok(n)
    }

    /// Queues a bar, with a `Nats-TTL` header when the stream is to keep it only that
    /// long.
    pub async fn publish_with_ttl(
        &self,
        subject: &'static str,
        payload: Bytes,
        ttl: Option<&str>,
    ) -> Result<(), PublishError> {
        match ttl {
            None => self.client.publish(subject, payload).await?,
            Some(ttl) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-TTL", ttl);
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await?
            }
        }
        Ok(())
    }

    /// The last bar `stream` holds on each of `subjects`; none where it holds none or the
    /// read fails (logged): bars then start afresh.
    pub async fn last_bars(&self, stream: &str, subjects: &[&'static str; 5]) -> [Option<Bar>; 5] {
        let read = async {
            let stream = self.js.get_stream(stream).await?;
            let reads = subjects.map(|subject| {
                let stream = &stream;
                async move {
                    match stream.direct_get_last_for_subject(subject).await {
                        Ok(msg) => tickmesh_core::bar::decode_wire(&msg.payload).ok(),
                        Err(_) => None,
                    }
                }
            });
            anyhow::Ok(futures_util::future::join_all(reads).await)
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
            Ok(Ok(bars)) => bars.try_into().unwrap_or_default(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the last bars failed: they start afresh");
                Default::default()
            }
            Err(_) => {
                tracing::warn!("reading the last bars timed out: they start afresh");
                Default::default()
            }
        }
    }

    /// The bars stream, created if missing: see [`buckets::bars_stream`].
    pub async fn bars_stream(&self, name: &str, keep: i64, replicas: usize) -> anyhow::Result<()> {
        buckets::bars_stream(&self.js, name, keep, replicas).await
    }

    /// The stream of delayed samples, created if missing: see
    /// [`buckets::delayed_stream`].
    pub async fn delayed_stream(
        &self,
        name: &str,
        keep: std::time::Duration,
        replicas: usize,
    ) -> anyhow::Result<()> {
        buckets::delayed_stream(&self.js, name, keep, replicas).await
    }

    /// The stream of delayed trades and bars, created if missing: see
    /// [`buckets::delayed_tape_stream`].
    pub async fn delayed_tape_stream(
        &self,
        name: &str,
        origins: &[&str],
        keep: std::time::Duration,
        replicas: usize,
    ) -> anyhow::Result<()> {
        buckets::delayed_tape_stream(&self.js, name, origins, keep, replicas).await
    }

    /// Waits until the server has everything published so far.
    pub async fn flush(&self) -> anyhow::Result<()> {
        Ok(self.client.flush().await?)
    }

    /// The latest-value bucket (`kv.bucket`), created if missing: see [`latest_bucket`].
    pub async fn latest_bucket(&self, bucket: &str, replicas: usize) -> anyhow::Result<kv::Store> {
        latest_bucket(&self.js, bucket, replicas).await
    }

    /// The reference-data bucket (`refdata.bucket`), created (history 1) if missing.
    pub async fn ref_bucket(&self, bucket: &str, replicas: usize) -> anyhow::Result<kv::Store> {
        buckets::ref_bucket(&self.js, bucket, replicas).await
    }

    /// The trades stream, created if missing: see [`buckets::trades_stream`].
    pub async fn trades_stream(
        &self,
        name: &str,
        keep: i64,
        replicas: usize,
    ) -> anyhow::Result<()> {
        buckets::trades_stream(&self.js, name, keep, replicas).await
    }

    /// A bucket that must exist already.
    pub async fn bucket(&self, bucket: &str) -> anyhow::Result<kv::Store> {
        Ok(self.js.get_key_value(bucket).await?)
    }
}

/// A connection of its own for one subscriber: the service's TLS and credentials, its own
/// name and buffers, and a count of the messages NATS dropped because the subscriber fell
/// behind (slow-consumer events).
#[derive(Debug)]
pub struct Tap {
    client: async_nats::Client,
    slow: Arc<AtomicU64>,
}

/// A subscription of a [`Tap`].
#[derive(Debug)]
pub struct Subscription(async_nats::Subscriber);

/// A message received on a [`Subscription`].
#[derive(Debug)]
pub struct Message(async_nats::Message);

impl Tap {
    /// Connects as `name`, buffering up to `capacity` messages per subscription.
    pub async fn connect(
        config: &NatsConfig,
        name: String,
        capacity: usize,
    ) -> anyhow::Result<Tap> {
        let slow = Arc::new(AtomicU64::new(0));
        let counter = slow.clone();
        let client = tickmesh_service::nats::options(&config.tls, &config.auth)
            .await?
            .name(name)
            .subscription_capacity(capacity)
            .event_callback(move |event| {
                let counter = counter.clone();
                async move {
                    if let async_nats::Event::SlowConsumer(_) = event {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .connect(config.urls.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {}", config.urls.join(", ")))?;
        Ok(Tap { client, slow })
    }

    pub async fn subscribe(&self, subject: String) -> anyhow::Result<Subscription> {
        Ok(Subscription(self.client.subscribe(subject).await?))
    }

    /// Waits until the server has seen everything sent so far (a subscription included).
    pub async fn flush(&self) -> anyhow::Result<()> {
        Ok(self.client.flush().await?)
    }

    /// Slow-consumer events so far: each is one or more messages dropped.
    pub fn slow_consumer_events(&self) -> u64 {
        self.slow.load(Ordering::Relaxed)
    }
}

impl Subscription {
    /// The next message; `None` once the subscription is closed.
    pub async fn next(&mut self) -> Option<Message> {
        self.0.next().await.map(Message)
    }
}

impl Message {
    pub fn subject(&self) -> &str {
        self.0.subject.as_str()
    }

    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }
}
