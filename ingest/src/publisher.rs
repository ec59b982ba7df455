//! The ingest loop: the only module that talks to NATS.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tickmesh_core::Symbol;
use tickmesh_core::codec::encode_wire;
use tickmesh_core::subject::tick_subject;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, NatsConfig};
use crate::sequencer::Sequencer;
use crate::snapshot::{self, Slots};
use crate::sources::sim::Simulator;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn connect(config: &NatsConfig) -> anyhow::Result<async_nats::Client> {
    let urls = config.urls.join(",");
    async_nats::ConnectOptions::new()
        .name(&config.name)
        .retry_on_initial_connect()
        .connect(urls.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))
}

/// Opens the latest-value bucket, creating it (history 1) if it does not exist.
pub async fn latest_bucket(js: &jetstream::Context, bucket: &str) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        description: "TickMesh latest value per symbol".into(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating KV bucket {bucket}"))
}

/// Runs the simulator feed until `shutdown` completes.
pub async fn run(config: IngestConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client = connect(&config.nats).await?;
    let js = jetstream::new(client.clone());
    let store = latest_bucket(&js, &config.kv.bucket).await?;

    let mut sim = Simulator::new(&config.sim.universe, config.sim.seed);
    let symbols: Vec<String> = sim.symbols().map(str::to_owned).collect();
    let subjects: Vec<async_nats::Subject> = symbols
        .iter()
        .map(|s| {
            let symbol =
                Symbol::parse(s).context("universe symbols are validated with the config")?;
            Ok(tick_subject(&symbol, config.shards).into())
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sequencer = Sequencer::new(now_us(), symbols.len());
    tracing::info!(
        epoch = sequencer.epoch(),
        symbols = symbols.len(),
        rate = config.sim.ticks_per_sec,
        "ingest started"
    );

    let slots = Arc::new(Slots::new(symbols));
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(snapshot::run_writer(
        store,
        slots.clone(),
        Duration::from_millis(config.kv.interval_ms),
        config.kv.max_in_flight,
        cancel.clone(),
    ));

    let rate = f64::from(config.sim.ticks_per_sec);
    let mut timer = tokio::time::interval(Duration::from_millis(config.sim.batch_ms));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let ticks = metrics::counter!("tickmesh_ingest_ticks_total", "source" => "sim");
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = timer.tick() => {}
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        // After a stall, do not burst more than one second's worth.
        if due > sent + rate as u64 {
            sent = due - rate as u64;
        }
        let mut failed = None;
        while sent < due {
            let (i, mut tick) = sim.next_tick();
            if sequencer.stamp(i, &mut tick, now_us()).is_err() {
                metrics::counter!("tickmesh_ingest_stale_total", "source" => "sim").increment(1);
                continue;
            }
            let bytes = Bytes::from(encode_wire(&tick));
            if let Err(e) = client.publish(subjects[i].clone(), bytes.clone()).await {
                failed = Some(e);
                break;
            }
            slots.offer(i, bytes);
            sent += 1;
            ticks.increment(1);
        }
        if let Some(e) = failed {
            break Err(anyhow::Error::new(e).context("publishing ticks"));
        }
    };
    cancel.cancel();
    writer.await.context("KV writer task")?;
    client.flush().await.context("flushing NATS")?;
    tracing::info!(ticks = sent, "ingest stopped");
    result
}
