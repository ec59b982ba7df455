//! The edge's only NATS code: the connection, one subscription per carried symbol (its
//! pump), and KV reads for snapshots.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tickmesh_core::Symbol;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::subject::tick_subject;
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use crate::config::NatsConfig;
use crate::fanout::SharedTick;
use crate::hub::Hub;

#[derive(Debug, Clone)]
pub struct NatsLink {
    client: async_nats::Client,
    js: jetstream::Context,
    shards: u32,
    bucket: String,
    store: Arc<OnceCell<kv::Store>>,
    kv_timeout: Duration,
}

impl NatsLink {
    pub async fn connect(
        config: &NatsConfig,
        shards: u32,
        kv_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let urls = config.urls.join(",");
        let client = async_nats::ConnectOptions::new()
            .name(&config.name)
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                metrics::counter!("tickmesh_edge_nats_events_total", "event" => event_name(&event))
                    .increment(1);
                tracing::info!(%event, "NATS");
            })
            .connect(urls.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {urls}"))?;
        let js = match &config.js_domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        Ok(NatsLink {
            client,
            js,
            shards,
            bucket: config.kv_bucket.clone(),
            store: Arc::new(OnceCell::new()),
            kv_timeout,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Subscribes to the symbol's subject and feeds every valid tick to the hub, until
    /// aborted (which drops the subscription) or the hub is gone.
    pub fn start_pump(&self, hub: Weak<Hub>, symbol: Symbol) -> AbortHandle {
        let client = self.client.clone();
        let subject = tick_subject(&symbol, self.shards);
        tokio::spawn(async move {
            let mut sub = match client.subscribe(subject.clone()).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::error!(%subject, error = %e, "subscribe failed");
                    return;
                }
            };
            let ticks_in = metrics::counter!("tickmesh_edge_ticks_in_total");
            while let Some(msg) = sub.next().await {
                let Some(hub) = hub.upgrade() else { return };
                match decode_wire(&msg.payload) {
                    Ok(tick) if tick.symbol == symbol.as_str() => {
                        ticks_in.increment(1);
                        if !hub.publish(Arc::new(SharedTick::new(tick, msg.payload.len()))) {
                            metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "stale").increment(1);
                        }
                    }
                    Ok(_) => {
                        metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "wrong_subject").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "invalid").increment(1);
                        tracing::warn!(%subject, error = %e, "dropped an invalid tick");
                    }
                }
            }
        })
        .abort_handle()
    }

    /// The latest value of `symbol` in KV, if any. Errors (no bucket yet, a timeout) are
    /// returned so that they are not cached.
    pub async fn kv_latest(&self, symbol: &Symbol) -> anyhow::Result<Option<Arc<SharedTick>>> {
        let store = self
            .store
            .get_or_try_init(|| async { self.js.get_key_value(&self.bucket).await })
            .await
            .with_context(|| format!("opening KV bucket {}", self.bucket))?;
        let entry = tokio::time::timeout(self.kv_timeout, store.get(symbol.as_str()))
            .await
            .context("KV read timed out")?
            .context("KV read")?;
        let Some(bytes) = entry else { return Ok(None) };
        let tick = decode_wire(&bytes).with_context(|| format!("decoding KV value of {symbol}"))?;
        Ok(Some(Arc::new(SharedTick::new(tick, bytes.len()))))
    }

    pub async fn drain(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "NATS drain");
        }
    }
}

fn event_name(event: &async_nats::Event) -> &'static str {
    match event {
        async_nats::Event::Connected => "connected",
        async_nats::Event::Disconnected => "disconnected",
        async_nats::Event::LameDuckMode => "lame_duck",
        async_nats::Event::SlowConsumer(_) => "slow_consumer",
        async_nats::Event::ServerError(_) => "server_error",
        async_nats::Event::ClientError(_) => "client_error",
        _ => "other",
    }
}
