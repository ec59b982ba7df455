//! `tickmesh-loadgen append`: the account events' writer of a benchmark. It appends to the
//! stream `acct` as an account's single writer does: the next seq of the account, stamped
//! with the time just before the append (`ts`, the start of the latency the subscribers
//! measure), checked by JetStream with `Nats-Expected-Last-Subject-Sequence` over
//! `acct.<account>.>` and deduplicated by `Nats-Msg-Id`. Acknowledgements are awaited
//! by a task of their own, so appends are pipelined (async-nats bounds those in flight).
//!
//! Paced (the default): `--per-s` events a second over `--accounts` accounts in turn, in
//! 1 ms steps, for `--duration-s`. Bulk (`--bulk N`): N events of each account as fast as
//! the acknowledgements allow, without the expected-sequence check (an acknowledgement
//! may still be out when the next event of the account goes), for a replay to read.
//!
//! It creates the stream and the bucket `acct_snap` if they are missing, and keeps each
//! account's snapshot there as the order system does (paced: after every
//! `--snapshot-every` acknowledged events of the account; bulk: none), so that a
//! subscriber without `from_seq` starts from a recent state and reads only the events
//! after it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use clap::Parser;
use serde::Serialize;
use tickmesh_core::account::{self, Balance, Data, Event};
use tokio::sync::mpsc;

use crate::account::name;
use crate::conn::now_unix_us;

/// Appends account events to nats-server's stream `acct` (loopback only).
#[derive(Debug, Clone, Parser)]
#[command(name = "tickmesh-loadgen append")]
struct AppendArgs {
    /// nats-server's client port, e.g. 127.0.0.1:4222.
    #[arg(long)]
    nats: SocketAddr,
    /// Accounts `<account-prefix>0` .. `<account-prefix><accounts - 1>`.
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    #[arg(long, default_value = "B")]
    account_prefix: String,
    /// Events a second over all the accounts, in turn (paced).
    #[arg(long, default_value_t = 1000.0)]
    per_s: f64,
    /// How long to append (paced), s.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Append this many events of each account as fast as possible instead.
    #[arg(long)]
    bulk: Option<u64>,
    /// Put the account's snapshot after every this many of its acknowledged events
    /// (paced only; 0: never). The order system puts one after each.
    #[arg(long, default_value_t = 1)]
    snapshot_every: u64,
    /// JSON summary file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What the writer did.
#[derive(Debug, Default, Serialize)]
struct AppendSummary {
    appended: u64,
    acknowledged: u64,
    /// Appends the stream refused or did not acknowledge in time.
    failed: u64,
    /// First few failures, for diagnosis.
    samples: Vec<String>,
    seconds: f64,
    events_per_s: f64,
    /// Acknowledgement round trips (publish to ack), µs.
    ack_p50_us: u64,
    ack_p99_us: u64,
}

/// The stream's bound on consumers: above the subscribers of the largest run.
const MAX_CONSUMERS: i32 = 100_000;
/// Acknowledgements awaited at once (async-nats also bounds them, to 5,000 by default,
/// and waits for room).
const ACKS_QUEUED: usize = 10_000;
/// The longest the last acknowledgements may take after the last append.
const ACK_WAIT: Duration = Duration::from_secs(30);

pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = AppendArgs::parse_from(args);
    if !args.nats.ip().is_loopback() {
        bail!("--nats {} is not a loopback address", args.nats);
    }
    if args.accounts == 0
        || args.per_s.is_nan()
        || args.per_s <= 0.0
        || !(0.0..=3600.0).contains(&args.duration_s)
    {
        bail!("--accounts must be at least 1, --per-s above 0, --duration-s 0 to 3600");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = rt.block_on(append(&args))?;
    let json = serde_json::to_string_pretty(&summary)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}

/// The stream and bucket the edge reads, created if missing.
async fn open(js: &jetstream::Context) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: account::STREAM.into(),
        subjects: vec!["acct.>".into()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(3600),
        // As the order system's stream: an explicit bound past nats-server's default of
        // 1,000 consumers a stream (2.15); an edge's replay makes one.
        max_consumers: MAX_CONSUMERS,
        allow_direct: true,
        // Edges follow accounts live on the republished events.
        republish: Some(stream::Republish {
            source: account::LIVE_SOURCE.into(),
            destination: account::LIVE_DESTINATION.into(),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .context("opening the stream acct")?;
    if js.get_key_value(account::SNAPSHOTS).await.is_err() {
        js.create_key_value(kv::Config {
            bucket: account::SNAPSHOTS.into(),
            history: 1,
            ..Default::default()
        })
        .await
        .context("creating the bucket acct_snap")?;
    }
    Ok(())
}

/// An acknowledgement to wait for: the account's index, when its event went, the event.
type Pending = (usize, Instant, Event, jetstream::context::PublishAckFuture);

async fn append(args: &AppendArgs) -> anyhow::Result<AppendSummary> {
    let client = async_nats::connect(format!("nats://{}", args.nats)).await?;
    let js = jetstream::new(client);
    open(&js).await?;
    let names: Vec<String> = (0..args.accounts)
        .map(|n| name(&args.account_prefix, n))
        .collect();
    // Each account's last stream sequence, as its acknowledgement said.
    let last: Arc<Vec<AtomicU64>> = Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect());
    let (tx, rx) = mpsc::channel::<Pending>(ACKS_QUEUED);
    let snapshot_every = match args.bulk {
        Some(_) => 0,
        None => args.snapshot_every,
    };
    let acks = tokio::spawn(await_acks(rx, last.clone(), js.clone(), snapshot_every));

    let started = Instant::now();
    let mut seqs = vec![0u64; names.len()];
    let mut appended = 0u64;
    let check = args.bulk.is_none();
    let total = match args.bulk {
        Some(n) => n.saturating_mul(args.accounts),
        None => (args.per_s * args.duration_s) as u64,
    };
    while appended < total {
        let due = match args.bulk {
            Some(_) => total,
            None => ((started.elapsed().as_secs_f64() * args.per_s) as u64).min(total),
        };
        while appended < due {
            let i = (appended % args.accounts) as usize;
            seqs[i] += 1;
            let expected = check.then(|| last[i].load(Ordering::Acquire));
            let (event, ack) = publish(&js, &names[i], seqs[i], expected).await?;
            tx.send((i, Instant::now(), event, ack))
                .await
                .context("the acknowledgement task ended")?;
            appended += 1;
        }
        if args.bulk.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(tx);
    let mut summary = tokio::time::timeout(ACK_WAIT, acks)
        .await
        .context("waiting for the last acknowledgements")??;
    summary.appended = appended;
    summary.seconds = seconds;
    summary.events_per_s = appended as f64 / seconds.max(1e-3);
    Ok(summary)
}

/// Appends event `seq` of `account`; `expected`: the account's last stream sequence
/// (0: none yet), checked by the stream.
async fn publish(
    js: &jetstream::Context,
    account: &str,
    seq: u64,
    expected: Option<u64>,
) -> anyhow::Result<(Event, jetstream::context::PublishAckFuture)> {
    let event = Event {
        account: account.into(),
        seq,
        ts: now_unix_us(),
        data: Data::Balance(Balance {
            currency: "USD".into(),
            cash: 1_000_000.0 - seq as f64,
            realized_pnl: 0.0,
        }),
    };
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{account}-{seq}"));
    if let Some(n) = expected {
        headers.insert("Nats-Expected-Last-Subject-Sequence", n.to_string());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence-Subject",
            account::filter(account),
        );
    }
    let payload = account::encode_wire(&event);
    let ack = js
        .publish_with_headers(event.subject(), headers, payload.into())
        .await?;
    Ok((event, ack))
}

/// Awaits acknowledgements in the order of the appends, keeping each account's last
/// stream sequence and, every `snapshot_every` events of an account (0: never), its
/// snapshot: a plain publish to the bucket's subject, without an acknowledgement (a lost
/// one only makes a subscriber read a few more events). Not a JetStream publish: that
/// would wait for room among the acknowledgements in flight, which the events queued
/// before it hold until this task awaits them.
async fn await_acks(
    mut rx: mpsc::Receiver<Pending>,
    last: Arc<Vec<AtomicU64>>,
    js: jetstream::Context,
    snapshot_every: u64,
) -> AppendSummary {
    let mut s = AppendSummary::default();
    let mut states: Vec<Option<account::AccountState>> = (0..last.len()).map(|_| None).collect();
    let mut rtt = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("static histogram bounds are valid");
    while let Some((i, sent, event, ack)) = rx.recv().await {
        match ack.await {
            Ok(ack) => {
                last[i].store(ack.sequence, Ordering::Release);
                s.acknowledged += 1;
                rtt.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                if snapshot_every > 0 {
                    let state =
                        states[i].get_or_insert_with(|| account::AccountState::new(&event.account));
                    // An event whose predecessor failed leaves the state behind: no more
                    // snapshots of that account (its subscribers read from the last one).
                    if state.apply(&event).is_ok() && event.seq % snapshot_every == 0 {
                        let snap = account::Snapshot {
                            state: state.clone(),
                            stream_seq: ack.sequence,
                        };
                        let subject = format!("$KV.{}.{}", account::SNAPSHOTS, event.account);
                        let bytes = serde_json::to_vec(&snap).expect("a snapshot serializes");
                        if let Err(e) = js.client().publish(subject, bytes.into()).await {
                            s.failed += 1;
                            if s.samples.len() < 10 {
                                s.samples.push(format!("snapshot: {e}"));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                s.failed += 1;
                if s.samples.len() < 10 {
                    s.samples.push(format!("{e}"));
                }
            }
        }
    }
    s.ack_p50_us = rtt.value_at_quantile(0.5);
    s.ack_p99_us = rtt.value_at_quantile(0.99);
    s
}
