//! One order system process: connect, open the stream and the bucket, rebuild every
//! account, finish a fill a previous run left half-written, fund new accounts, then trade
//! until shutdown: each print fills what it reaches, each tick of the clock lets the due
//! accounts decide.
//!
//! Everything runs on one task, so each account's events are appended one after another
//! and in order. A stop is taken between two steps (never between a fill and the events it
//! entails) unless the step outlasts the grace; a crash may cut anywhere, and the next
//! start finishes what it cut. While an append waits (no stream leader), the whole desk waits; prints
//! that arrive meanwhile queue up to `nats.subscription_capacity` and then are dropped,
//! which only means they fill nothing.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use tickmesh_core::account::{Balance, Data, Fill};
use tickmesh_core::trade::Trade;
use tokio_util::sync::CancellationToken;

use crate::config::{NatsConfig, OmsConfig};
use crate::desk::{self, Desk};
use crate::ledger::{self, AFTER_FILL, CURRENCY};
use crate::market::Prints;
use crate::writer::{AccountLog, Writer, WriterError};

/// Runs the order system until `shutdown` resolves, then lets it finish what it is
/// appending (a decision, or a fill's four events) for up to `stop_grace_ms`. Returns an
/// error when it cannot start, or when an account cannot be written (its appends refused
/// by another writer, or the stream unavailable for `stream.append_timeout_ms`): the
/// process then exits, and a restart rebuilds every account from the stream.
pub async fn run(config: OmsConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    if let Some(addr) = config.metrics_listen {
        let handle = crate::telemetry::prometheus();
        tickmesh_service::metrics::serve(addr, handle, background.clone()).await?;
    }
    let stop = CancellationToken::new();
    let mut work = std::pin::pin!(trade(&config, &stop));
    tokio::select! {
        _ = shutdown => {
            tracing::info!("stopping");
            stop.cancel();
            let grace = Duration::from_millis(config.stop_grace_ms);
            match tokio::time::timeout(grace, &mut work).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?grace, "stopped in the middle of an append: the next start finishes it");
                    Ok(())
                }
            }
        }
        result = &mut work => result,
    }
}

async fn trade(config: &OmsConfig, stop: &CancellationToken) -> anyhow::Result<()> {
    let client = connect(&config.nats, config.sim.prints_buffer).await?;
    let writer = Writer::open(jetstream::new(client.clone()), &config.stream).await?;
    let mut accounts = Vec::with_capacity(config.accounts.len());
    for name in &config.accounts {
        let log = writer
            .account(name)
            .await
            .with_context(|| format!("rebuilding account {name}"))?;
        tracing::info!(account = %name, seq = log.state().seq, "account rebuilt");
        accounts.push(log);
    }
    let mut prints = Prints::follow(&client, &config.sim.symbols, config.shards).await?;
    for log in accounts.iter_mut() {
        finish_unfinished_fill(log).await?;
        if !log.state().balances.contains_key(CURRENCY) {
            let deposit = Balance {
                currency: CURRENCY.into(),
                cash: config.sim.initial_cash,
                realized_pnl: 0.0,
            };
            log.append(Data::Balance(deposit)).await?;
        }
    }
    let mut desk = Desk::new(&config.sim, accounts.len(), now_ms());
    let mut clock = tokio::time::interval(Duration::from_millis(
        (config.sim.order_interval_ms / 4).clamp(1, 100),
    ));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            print = prints.next() => {
                let print = print.context("the NATS connection closed")?;
                desk.on_print(&print);
                fill(&mut accounts, &print).await?;
            }
            _ = clock.tick() => {
                for (i, log) in accounts.iter_mut().enumerate() {
                    if let Some(order) = desk.decide(i, log.state(), now_ms()) {
                        log.append(order).await?;
                    }
                }
            }
        }
    }
}

/// Fills what `print` reaches, account by account (starting from one that turns with the
/// print's id, so that no account always goes first), up to the print's size.
async fn fill(accounts: &mut [AccountLog], print: &Trade) -> Result<(), WriterError> {
    let mut left = print.size;
    let n = accounts.len();
    let first = (print.trade_id % n as u64) as usize;
    for i in (0..n).map(|k| (first + k) % n) {
        let log = &mut accounts[i];
        while let Some(fill) = desk::match_print(log.state(), print, left) {
            left -= fill.qty;
            log.append(Data::Fill(fill.clone())).await?;
            finish_fill(log, &fill, 0).await?;
        }
    }
    Ok(())
}

/// Appends the events `fill` entails from the `done`-th on.
async fn finish_fill(log: &mut AccountLog, fill: &Fill, done: usize) -> Result<(), WriterError> {
    for step in &AFTER_FILL[done..] {
        if let Some(data) = ledger::after_fill(log.state(), fill, *step) {
            log.append(data).await?;
        }
    }
    Ok(())
}

/// A previous run may have stopped between a fill and the events it entails: appends
/// those that are missing, from the rebuilt state.
async fn finish_unfinished_fill(log: &mut AccountLog) -> Result<(), WriterError> {
    let after = AFTER_FILL.len() as u64;
    let Some((event, done)) = log.unfinished_fill(after) else {
        return Ok(());
    };
    let Data::Fill(fill) = event.data.clone() else {
        return Ok(());
    };
    tracing::info!(account = %event.account, seq = event.seq, done, "finishing a fill");
    finish_fill(log, &fill, done as usize).await
}

/// Connects to `config.urls`, retrying until a server answers; each subscription holds
/// up to `capacity` messages.
async fn connect(config: &NatsConfig, capacity: usize) -> anyhow::Result<async_nats::Client> {
    let urls = config.urls.join(",");
    tickmesh_service::nats::options(&config.tls, &config.auth)
        .await?
        .name(&config.name)
        .subscription_capacity(capacity)
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS");
        })
        .connect(config.urls.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))
}

fn now_ms() -> u64 {
    tickmesh_core::tick::now_us() / 1000
}
