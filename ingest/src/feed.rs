//! An ingest node: connects, takes the feed's lease, chooses an epoch, and runs the
//! source through the [`Publisher`] until shutdown, the end of a replay, or the loss of
//! the lease (then it waits as a standby again, and starts a new epoch if it wins).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, SourceKind};
use crate::lease::{Held, Lease};
use crate::nats;
use crate::publisher::{Counts, Publisher};
use crate::refdata::{Catalog, RefWriter};
use crate::sequencer::next_epoch;
use crate::snapshot::{self, Slots};
use crate::sources::replay::{self, Pacer, ReplayStats, Replayed};
use crate::sources::sim::{SimParams, Simulator};
use crate::sources::{Print, itch};
use crate::telemetry;
use tickmesh_core::Tick;
use tickmesh_core::tick::now_us;

/// After a stall the simulator catches up at most this much; older ticks are skipped.
const MAX_CATCH_UP_S: f64 = 1.0;
/// Replay waits only for gaps longer than this; shorter ones go out with the batch.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    /// The epoch of each term, in order.
    pub epochs: Vec<u64>,
    pub kv_writes: u64,
    pub kv_errors: u64,
    /// Largest `md_last` write lag, µs.
    pub kv_max_lag_us: u64,
    pub kv_mean_lag_us: u64,
    /// Replay: records read and corrupt records skipped (ITCH: messages read, and bad
    /// frames and refused messages).
    pub replay_records: u64,
    pub replay_corrupt: u64,
    /// Time spent publishing (all terms), seconds.
    pub publish_secs: f64,
    /// Every symbol with the last seq of the last term.
    pub last_seqs: Vec<(String, Option<u64>)>,
}

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    /// The replay reached the end of its files.
    Done,
    LeaseLost,
}

enum Source {
    Sim(Box<Simulator>),
    Replay {
        rx: tokio::sync::mpsc::Receiver<Vec<Replayed>>,
        stats: Arc<ReplayStats>,
        /// Unused: each term paces with a fresh copy.
        pacer: Pacer,
        catalog: Catalog,
    },
}

/// Runs the configured feed until `shutdown` completes (or a replay ends).
pub async fn run(config: IngestConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with_summary(config, shutdown).await.map(drop)
}

/// [`run`], returning what was published.
pub async fn run_with_summary(
    config: IngestConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    config.validate()?;
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let watcher = async {
        tokio::select! {
            _ = shutdown => stop.cancel(),
            _ = done.cancelled() => {}
        }
    };
    let body = async {
        let result = node(&config, &stop).await;
        done.cancel();
        result
    };
    let (result, ()) = tokio::join!(body, watcher);
    result
}

async fn node(config: &IngestConfig, stop: &CancellationToken) -> anyhow::Result<Summary> {
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    if let Some(addr) = config.metrics_listen {
        telemetry::serve(addr, background.clone()).await?;
    }
    let client = nats::connect(&config.nats).await?;
    let store = client
        .latest_bucket(&config.kv.bucket, config.kv.replicas)
        .await?;
    if config.trades.enabled {
        let t = &config.trades;
        client
            .trades_stream(&t.stream, t.keep, config.kv.replicas)
            .await?;
        if config.bars.enabled {
            let b = &config.bars;
            client
                .bars_stream(&b.stream, b.keep, config.kv.replicas)
                .await?;
        }
    }
    if config.delayed.enabled {
        let d = &config.delayed;
        client
            .delayed_stream(
                &d.stream,
                Duration::from_millis(d.keep_ms),
                config.kv.replicas,
            )
            .await?;
        if config.trades.enabled {
            let mut origins = vec![config.trades.stream.as_str()];
            if config.bars.enabled {
                origins.push(config.bars.stream.as_str());
            }
            let keep = Duration::from_millis(d.keep_ms);
            client
                .delayed_tape_stream(&d.tape_stream, &origins, keep, config.kv.replicas)
                .await?;
        }
    }
    let lease = match config.lease.enabled {
        true => Some(Lease::open(&client, &config.lease, config.kv.replicas).await?),
        false => None,
    };
    let refs = Arc::new(match config.refdata.enabled {
        true => RefWriter::with_feed(
            config
                .refdata
                .feed
                .as_deref()
                .unwrap_or(config.source.default_feed()),
        ),
        false => RefWriter::disabled(),
    });
    let ref_task = match config.refdata.enabled {
        true => {
            let store = client
                .ref_bucket(&config.refdata.bucket, config.kv.replicas)
                .await?;
            let (refs, cancel) = (refs.clone(), background.clone());
            Some(tokio::spawn(async move { refs.run(store, cancel).await }))
        }
        false => None,
    };
    let slots = Arc::new(Slots::new());
    let writer = tokio::spawn(snapshot::run_writer(
        store.clone(),
        slots.clone(),
        Duration::from_millis(config.kv.interval_ms),
        config.kv.max_in_flight,
        background.clone(),
    ));

    let mut source = open_source(config);
    let name = match config.source {
        SourceKind::Sim => "sim",
        SourceKind::Replay => "replay",
        SourceKind::Itch => "itch",
    };
    let mut publisher = Publisher::new(client.clone(), config.shards, name, slots.clone());
    let sampler = match config.delayed.enabled {
        true => {
            let delayed = Arc::new(Slots::new());
            publisher = publisher.with_delayed(delayed.clone());
            Some(tokio::spawn(crate::delayed::run_sampler(
                client.clone(),
                delayed,
                config.shards,
                Duration::from_millis(config.delayed.step_ms),
                background.clone(),
            )))
        }
        false => None,
    };
    if config.trades.enabled && config.bars.enabled {
        publisher = publisher.with_bars(&config.bars);
    }
    if let Source::Sim(sim) = &source {
        for symbol in sim.symbols() {
            publisher
                .index_of(symbol)
                .context("simulated symbols are valid")?;
        }
    }
    let mut summary = Summary::default();
    let result = loop {
        let held = match &lease {
            Some(lease) => match lease.acquire(stop).await {
                Some(held) => Some(held),
                None => break Ok(()),
            },
            None => None,
        };
        let keys = match &source {
            Source::Sim(sim) => sim.symbols().map(str::to_owned).collect(),
            Source::Replay { .. } => nats::all_keys(&store).await.unwrap_or_default(),
        };
        let floor = nats::highest_seq(&store, keys).await;
        let bound = match &held {
            Some(h) => h.prior_bound().await,
            None => 0,
        };
        let epoch = next_epoch(now_us(), floor, bound);
        if let Some(h) = &held
            && let Err(e) = h.start_term(epoch).await
        {
            tracing::warn!(error = %e, "could not start a term; back to standby");
            drop(held);
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        publisher.start_epoch(epoch);
        summary.epochs.push(epoch);
        metrics::gauge!("tickmesh_ingest_epoch").set(epoch as f64);
        tracing::info!(
            epoch,
            md_last_max = floor,
            lease_bound = bound,
            symbols = publisher.len(),
            source = name,
            "publishing"
        );
        let announcing = crate::liveness::announce(
            client.clone(),
            config.nats.name.clone(),
            epoch,
            config.shards,
            config.liveness_ms,
        );
        let began = Instant::now();
        let end = match &mut source {
            Source::Sim(sim) => {
                sim_term(sim, &mut publisher, held.as_ref(), stop, config, &refs).await
            }
            Source::Replay {
                rx, pacer, catalog, ..
            } => {
                replay_term(
                    rx,
                    pacer.clone(),
                    catalog,
                    &mut publisher,
                    held.as_ref(),
                    stop,
                    &refs,
                    config.trades.enabled,
                )
                .await
            }
        };
        drop(announcing);
        publisher.end_batch();
        summary.publish_secs += began.elapsed().as_secs_f64();
        match end {
            Ok(End::LeaseLost) => {
                tracing::warn!(epoch, "lease lost: stopped publishing; standing by");
                if let Some(h) = held {
                    h.release().await;
                }
            }
            Ok(End::Shutdown | End::Done) => {
                if let Some(h) = held {
                    h.release().await;
                }
                break Ok(());
            }
            Err(e) => {
                if let Some(h) = held {
                    h.release().await;
                }
                break Err(e);
            }
        }
    };
    background.cancel();
    writer.await.context("KV writer task")?;
    if let Some(task) = ref_task {
        task.await.context("reference-data writer task")?;
    }
    if let Some(task) = sampler {
        task.await.context("delayed sampler task")?;
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        tracing::warn!(error = %e, "flushing NATS at shutdown timed out");
    }
    summary.counts = publisher.counts();
    summary.last_seqs = publisher.last_seqs();
    let stats = slots.stats();
    summary.kv_writes = stats.writes.load(Ordering::Relaxed);
    summary.kv_errors = stats.errors.load(Ordering::Relaxed);
    summary.kv_max_lag_us = stats.max_lag_us.load(Ordering::Relaxed);
    summary.kv_mean_lag_us = stats.lag_sum_us.load(Ordering::Relaxed) / summary.kv_writes.max(1);
    if let Source::Replay { stats, .. } = &source {
        summary.replay_records = stats.records.load(Ordering::Relaxed);
        summary.replay_corrupt = stats.corrupt.load(Ordering::Relaxed);
    }
    tracing::info!(
        published = summary.counts.ticks_out,
        stale = summary.counts.stale,
        "ingest stopped"
    );
    result.map(|()| summary)
}

fn open_source(config: &IngestConfig) -> Source {
    match config.source {
        SourceKind::Sim => {
            let sim = &config.sim;
            Source::Sim(Box::new(Simulator::new(&SimParams {
                seed: sim.seed,
                ticks_per_sec: f64::from(sim.ticks_per_sec),
                universe: &sim.universe,
                session: &sim.session,
                options: &sim.options,
                depth: sim.depth,
                today: config.sim.session.today(now_us()),
            })))
        }
        SourceKind::Replay => replayed(
            |stats| replay::spawn(&config.replay, stats),
            config.replay.speed,
            config.replay.max_wait_ms,
        ),
        // ITCH books become ticks in the reader thread; from there on they are replayed
        // ticks like any other.
        SourceKind::Itch => replayed(
            |stats| itch::spawn(&config.itch, stats),
            config.itch.speed,
            config.itch.max_wait_ms,
        ),
    }
}

/// A source of replayed ticks, started by `spawn`.
fn replayed(
    spawn: impl FnOnce(Arc<ReplayStats>) -> tokio::sync::mpsc::Receiver<Vec<Replayed>>,
    speed: f64,
    max_wait_ms: u64,
) -> Source {
    let stats = Arc::new(ReplayStats::default());
    Source::Replay {
        rx: spawn(stats.clone()),
        stats,
        pacer: Pacer::new(speed, Duration::from_millis(max_wait_ms)),
        catalog: Catalog::default(),
    }
}

fn still_valid(held: Option<&Held>) -> bool {
    held.is_none_or(Held::is_valid)
}

async fn lost(held: Option<&Held>) {
    match held {
        Some(h) => h.lost().await,
        None => std::future::pending().await,
    }
}

/// One term of the simulator: paced by the wall clock, `sim.batch_ms` at a time.
async fn sim_term(
    sim: &mut Simulator,
    p: &mut Publisher,
    held: Option<&Held>,
    stop: &CancellationToken,
    config: &IngestConfig,
    refs: &RefWriter,
) -> anyhow::Result<End> {
    let mut timer = tokio::time::interval(Duration::from_millis(config.sim.batch_ms));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let base = sim.next_due();
    let mut tick = Tick::default();
    let trades = config.trades.enabled;
    loop {
        if let Some(update) = sim.take_ref_update() {
            refs.submit(&update);
            p.delist(&update.removed);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(End::Shutdown),
            _ = lost(held) => return Ok(End::LeaseLost),
            _ = timer.tick() => {}
        }
        if !still_valid(held) {
            return Ok(End::LeaseLost);
        }
        let wall = base + start.elapsed().as_secs_f64();
        if wall - sim.next_due() > MAX_CATCH_UP_S {
            sim.skip_to(wall - MAX_CATCH_UP_S);
        }
        let mut now = now_us();
        let mut n = 0u32;
        while sim.next_due() <= wall {
            let i = sim.next_tick_into(&mut tick);
            if sim.take_day_rolled() {
                now = now_us();
                p.restart_bars(now).await.context("publishing bars")?;
            }
            while p.len() <= i {
                p.index_of(sim.symbol(p.len()))
                    .context("simulated symbols are valid")?;
            }
            publish(p, i, &mut tick, sim.take_print(), now, trades).await?;
            n = n.wrapping_add(1);
            if n.is_multiple_of(256) {
                now = now_us();
                if stop.is_cancelled() {
                    return Ok(End::Shutdown);
                }
                if !still_valid(held) {
                    return Ok(End::LeaseLost);
                }
            }
        }
        p.end_batch();
        p.flush_bars(now_us()).await.context("publishing bars")?;
    }
}

/// One term of a replay: paced by the recorded source times (see [`Pacer`]). Prints go
/// out as the simulator's do.
#[allow(clippy::too_many_arguments)]
async fn replay_term(
    rx: &mut tokio::sync::mpsc::Receiver<Vec<Replayed>>,
    mut pacer: Pacer,
    catalog: &mut Catalog,
    p: &mut Publisher,
    held: Option<&Held>,
    stop: &CancellationToken,
    refs: &RefWriter,
    trades: bool,
) -> anyhow::Result<End> {
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return Ok(End::Shutdown),
            _ = lost(held) => return Ok(End::LeaseLost),
            batch = rx.recv() => batch,
        };
        let Some(batch) = batch else {
            return Ok(End::Done);
        };
        let mut now = now_us();
        for (k, mut item) in batch.into_iter().enumerate() {
            if let Some(due) = item.src_ts.and_then(|src| pacer.due(src, Instant::now()))
                && due > Instant::now() + MIN_SLEEP
            {
                p.end_batch();
                tokio::select! {
                    _ = stop.cancelled() => return Ok(End::Shutdown),
                    _ = lost(held) => return Ok(End::LeaseLost),
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                now = now_us();
            }
            if k % 256 == 255 {
                now = now_us();
            }
            if !still_valid(held) {
                return Ok(End::LeaseLost);
            }
            let (i, new) = p
                .index_of(&item.tick.symbol)
                .context("replayed symbols are validated when read")?;
            if new {
                refs.submit(&catalog.observe(&item.tick));
            }
            publish(p, i, &mut item.tick, item.print, now, trades).await?;
        }
        p.end_batch();
        p.flush_bars(now_us()).await.context("publishing bars")?;
    }
}

/// Publishes one tick of symbol `i` and then, if the tick was published and prints are
/// on (`trades.enabled`), the trade it printed: the one path of every source's prints.
async fn publish(
    p: &mut Publisher,
    i: usize,
    tick: &mut Tick,
    print: Option<Print>,
    now: u64,
    trades: bool,
) -> anyhow::Result<()> {
    let published = p.emit(i, tick, now).await.context("publishing ticks")?;
    if let Some(print) = print
        && published
        && trades
    {
        p.emit_trade(i, tick, print)
            .await
            .context("publishing trades")?;
    }
    Ok(())
}
