//! The account stream as a test reads it back: every event of an account with its stream
//! sequence and `Nats-Msg-Id`, the account's snapshot, and the order system on the test
//! universe at a quick pace.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::push::OrderedConfig};
use futures_util::StreamExt;
use tickmesh_core::account::{self, AccountState, Event, Snapshot};
use tickmesh_oms::OmsConfig;

use crate::Service;

/// One event as the stream holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub stream_seq: u64,
    pub msg_id: Option<String>,
    pub event: Event,
}

/// The order system on `nats_url` for `accounts`, trading the test universe of
/// [`crate::ingest_config`] with a decision every 100 ms or so per account.
pub fn oms_config(nats_url: &str, accounts: &[&str]) -> OmsConfig {
    let mut c = OmsConfig::default();
    c.nats.urls = vec![nats_url.to_string()];
    c.accounts = accounts.iter().map(|a| a.to_string()).collect();
    c.sim.symbols = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"]
        .map(String::from)
        .into();
    c.sim.order_interval_ms = 100;
    c.stream.append_timeout_ms = 30_000;
    c
}

pub fn start_oms(config: OmsConfig) -> Service {
    Service::spawn(|stop| tickmesh_oms::run(config, stop))
}

/// Every event the stream `acct` holds of `account`, oldest first. A read that fails
/// (no stream leader, no meta leader to place the consumer, after a server's loss) is
/// tried again, for 30 s in all.
pub async fn stored_events(js: &jetstream::Context, account: &str) -> anyhow::Result<Vec<Stored>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), read_events(js, account)).await;
        match read {
            Ok(Ok(events)) => return Ok(events),
            Ok(Err(e)) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) if std::time::Instant::now() > deadline => {
                bail!("reading {account}'s events took over 10 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every event the stream holds of `account` now, in one try of at most 10 s: for a test
/// that polls (an error when the stream does not exist yet, or has no leader).
pub async fn events_so_far(js: &jetstream::Context, account: &str) -> anyhow::Result<Vec<Stored>> {
    tokio::time::timeout(Duration::from_secs(10), read_events(js, account))
        .await
        .context("reading took over 10 s")?
}

async fn read_events(js: &jetstream::Context, account: &str) -> anyhow::Result<Vec<Stored>> {
    let stream = js.get_stream(account::STREAM).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: account::filter(account),
            ..Default::default()
        })
        .await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    while pending > 0 {
        let msg = messages.next().await.context("the consumer ended")??;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        pending = info.pending;
        out.push(Stored {
            stream_seq: info.stream_sequence,
            msg_id: msg
                .headers
                .as_ref()
                .and_then(|h| h.get(tickmesh_oms::writer::MSG_ID))
                .map(|v| v.to_string()),
            event: account::decode_wire(&msg.payload)?,
        });
    }
    Ok(out)
}

/// The account's snapshot in `acct_snap`.
pub async fn snapshot(js: &jetstream::Context, account: &str) -> anyhow::Result<Snapshot> {
    let kv = js.get_key_value(account::SNAPSHOTS).await?;
    let bytes = kv.get(account).await?.context("no snapshot")?;
    Ok(account::decode_snapshot(&bytes)?)
}

/// Checks that `events` are one account's, seq 1, 2, 3… with no gap and none twice, each
/// with the `Nats-Msg-Id` `<account>-<seq>`, and folds them.
pub fn fold(account: &str, events: &[Stored]) -> anyhow::Result<AccountState> {
    let mut state = AccountState::new(account);
    for (i, s) in events.iter().enumerate() {
        if s.event.seq != i as u64 + 1 {
            let seqs: Vec<u64> = events.iter().map(|s| s.event.seq).collect();
            bail!("{account}: event {i} has seq {}: {seqs:?}", s.event.seq);
        }
        let want = format!("{account}-{}", s.event.seq);
        if s.msg_id.as_deref() != Some(want.as_str()) {
            bail!("{account} seq {}: Nats-Msg-Id {:?}", s.event.seq, s.msg_id);
        }
        state.apply(&s.event)?;
    }
    Ok(state)
}
