//! An account subscription's NATS side: its snapshot from the bucket `acct_snap`, or the
//! place of `from_seq` in the stream `acct`, then every event through an ordered
//! consumer filtered to `acct.<account>.>`, all in `nats.js_domain` (the hub's, from a
//! region: accounts are few events and must be the writer's own, so they are read where
//! they are written rather than from a regional copy that could lag).

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures_util::StreamExt;
use tickmesh_core::account::{self, AccountState, Snapshot};
use tickmesh_core::protocol::ErrorCode;

use super::{NatsLink, PUMP_RESTART_DELAY, Pump};
use crate::account::{AccountItem, AccountOut};

/// The longest the snapshot read or the search for `from_seq` may take.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one pull of an account's consumer waits for events. The server sends an idle
/// heartbeat every half of it, and the consumer is made anew after two missed ones: when
/// the hub node holding it dies (it lives with the stream's leader), the account's events
/// flow again about two pulls after a new leader is elected, not after the client
/// library's default of 30 s. Each idle account costs a pull and two heartbeats per pull.
const PULL_EXPIRES: Duration = Duration::from_secs(4);

/// Where a subscription's events start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Read the snapshot; the events after it follow.
    Snapshot,
    /// Every event from this seq.
    From(u64),
}

/// Why a follower starts over.
enum Restart {
    /// The session is gone: stop.
    Gone,
    /// From the snapshot, after telling the client why.
    Fresh(ErrorCode, String),
    /// From the next seq due, after a pause (the link or the consumer failed).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Restart {
    fn from(e: anyhow::Error) -> Self {
        Restart::Failed(e)
    }
}

/// Where `from_seq` is in the stream.
enum Located {
    /// Start the consumer at this stream sequence: its first event of the account is
    /// `from_seq`.
    At(u64),
    /// The stream no longer holds `from_seq` (or never had it).
    Unavailable(String),
}

impl NatsLink {
    /// Follows `account` for a session, from its snapshot or from `from_seq`, until the
    /// returned pump is dropped or the session is gone. A failure (the link, the
    /// consumer) is retried from the next seq due, so the session sees each event once.
    pub fn follow_account(&self, account: String, from_seq: Option<u64>, out: AccountOut) -> Pump {
        let link = self.clone();
        self.spawn(async move {
            let mut start = from_seq.map_or(Start::Snapshot, Start::From);
            // Failures in a row: the wait before the next try doubles with each, to a
            // bound, and only the first of a streak is logged as a warning.
            let mut failures = 0u32;
            loop {
                let before = start;
                let restart = link.account_run(&account, &mut start, &out).await;
                if start != before {
                    failures = 0;
                }
                match restart {
                    Restart::Gone => return,
                    Restart::Fresh(code, message) => {
                        metrics::counter!("tickmesh_edge_account_restarts_total", "reason" => "fresh")
                            .increment(1);
                        let account = account.clone();
                        let told = AccountItem::Error {
                            account,
                            code,
                            message,
                        };
                        if !out.replay(told).await {
                            return;
                        }
                        start = Start::Snapshot;
                        failures = 0;
                    }
                    Restart::Failed(e) => {
                        metrics::counter!("tickmesh_edge_account_restarts_total", "reason" => "failed")
                            .increment(1);
                        let error = format!("{e:#}");
                        match failures {
                            0 => tracing::warn!(%account, error, "account follower failed; retrying"),
                            n => tracing::debug!(%account, error, failures = n + 1, "account follower failed again"),
                        }
                        let wait = PUMP_RESTART_DELAY * 2u32.saturating_pow(failures.min(5));
                        failures += 1;
                        tokio::time::sleep(wait).await;
                    }
                }
                if out.is_closed() {
                    return;
                }
            }
        })
        .abort_handle()
        .into()
    }

    /// One run of a follower: from `start` until the session is gone or something fails;
    /// `start` is kept at the next seq due.
    async fn account_run(&self, account: &str, start: &mut Start, out: &AccountOut) -> Restart {
        let stream = match self.hub_js.get_stream_no_info(&self.accounts_stream).await {
            Ok(stream) => stream,
            Err(e) => {
                return Restart::Failed(
                    anyhow::Error::new(e).context("opening the accounts stream"),
                );
            }
        };
        let filter = account::filter(account);
        let (policy, mut last) = match *start {
            Start::Snapshot => {
                let snap = tokio::time::timeout(START_TIMEOUT, self.account_snapshot(account))
                    .await
                    .context("reading the snapshot timed out")
                    .and_then(|r| r);
                let snap = match snap {
                    Ok(snap) => snap,
                    Err(e) => return Restart::Failed(e),
                };
                let (seq, stream_seq) = (snap.state.seq, snap.stream_seq);
                if !out.replay(AccountItem::Snapshot(snap.state)).await {
                    return Restart::Gone;
                }
                *start = Start::From(seq + 1);
                let policy = match stream_seq {
                    0 => DeliverPolicy::All,
                    s => DeliverPolicy::ByStartSequence {
                        start_sequence: s + 1,
                    },
                };
                (policy, seq)
            }
            Start::From(n) => {
                let located = tokio::time::timeout(START_TIMEOUT, locate(&stream, &filter, n))
                    .await
                    .context("finding from_seq timed out")
                    .and_then(|r| r);
                match located {
                    Ok(Located::At(s)) => {
                        (DeliverPolicy::ByStartSequence { start_sequence: s }, n - 1)
                    }
                    Ok(Located::Unavailable(why)) => {
                        return Restart::Fresh(ErrorCode::Unavailable, why);
                    }
                    Err(e) => return Restart::Failed(e),
                }
            }
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: policy,
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await;
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                return Restart::Failed(
                    anyhow::Error::new(e).context("creating the account consumer"),
                );
            }
        };
        // What the stream held for the account when the consumer was made is the replay:
        // it waits for the session. Every event after it is live, and a live event that
        // finds the session's queue full cuts the session (4008). (Counting, not waiting
        // for a moment with nothing pending: a stalled client's follower under a steady
        // writer may never see one, and would then wait for it for ever.)
        let mut replay_left = consumer.cached_info().num_pending;
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                return Restart::Failed(
                    anyhow::Error::new(e).context("reading the account consumer"),
                );
            }
        };
        let events_in = metrics::counter!("tickmesh_edge_account_events_in_total");
        while let Some(msg) = messages.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    return Restart::Failed(
                        anyhow::Error::new(e).context("reading an account event"),
                    );
                }
            };
            let pending = msg.info().map_or(0, |i| i.pending);
            let replaying = replay_left > 0;
            replay_left = match pending {
                0 => 0,
                _ => replay_left.saturating_sub(1),
            };
            let event = match account::decode_wire(&msg.payload) {
                Ok(e) if e.account == account => e,
                Ok(_) | Err(_) => {
                    // Its seq is then missing, which the next event's check tells.
                    metrics::counter!("tickmesh_edge_account_events_invalid_total").increment(1);
                    tracing::warn!(%account, subject = %msg.subject, "dropped an invalid account event");
                    continue;
                }
            };
            if event.seq <= last {
                continue;
            }
            if event.seq != last + 1 {
                let why = format!(
                    "events {} to {} of {account} are not in the stream: starting again from a snapshot",
                    last + 1,
                    event.seq - 1
                );
                return Restart::Fresh(ErrorCode::Unavailable, why);
            }
            events_in.increment(1);
            last = event.seq;
            *start = Start::From(last + 1);
            let item = AccountItem::Event(event);
            let handed = match replaying {
                false => out.live(item),
                true => out.replay(item).await,
            };
            if !handed {
                return Restart::Gone;
            }
        }
        Restart::Failed(anyhow::anyhow!("the account consumer ended"))
    }

    /// The account's state as of its writer's last event: none yet is an empty state.
    async fn account_snapshot(&self, account: &str) -> anyhow::Result<Snapshot> {
        let bucket = self
            .hub_js
            .get_key_value(&self.account_snapshots)
            .await
            .with_context(|| format!("opening bucket {}", self.account_snapshots))?;
        let entry = bucket
            .get(account)
            .await
            .with_context(|| format!("reading the snapshot of {account}"))?;
        let Some(bytes) = entry else {
            return Ok(Snapshot {
                state: AccountState::new(account),
                stream_seq: 0,
            });
        };
        let snap = account::decode_snapshot(&bytes)?;
        anyhow::ensure!(
            snap.state.account == account,
            "the snapshot under {account} is {}'s",
            snap.state.account
        );
        Ok(snap)
    }
}

/// The event of `filter` at or after stream sequence `at`: (its stream sequence, its
/// seq); `None` past the last one.
async fn next_event(
    stream: &Stream<()>,
    filter: &str,
    at: u64,
) -> anyhow::Result<Option<(u64, u64)>> {
    match stream
        .direct_get_next_for_subject(filter, Some(at.max(1)))
        .await
    {
        Ok(msg) => {
            let event = account::decode_wire(&msg.payload)
                .with_context(|| format!("event at stream sequence {}", msg.sequence))?;
            Ok(Some((msg.sequence, event.seq)))
        }
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("a direct get from the accounts stream")),
    }
}

/// Where the events from `from_seq` on start in the stream: a search over stream
/// sequences (the seqs of one account rise with them), one direct get per step, for the
/// first stream sequence whose next event of the account has a seq of at least
/// `from_seq` (galloping from the first event kept, then halving).
async fn locate(stream: &Stream<()>, filter: &str, from_seq: u64) -> anyhow::Result<Located> {
    let account = filter.trim_start_matches("acct.").trim_end_matches(".>");
    let Some((first_at, first_seq)) = next_event(stream, filter, 1).await? else {
        // Nothing kept: only a subscription from the very start can go on live.
        return Ok(match from_seq {
            1 => Located::At(1),
            n => Located::Unavailable(format!(
                "{account} has no event in the stream; from_seq {n} cannot be replayed"
            )),
        });
    };
    if first_seq >= from_seq {
        return Ok(match first_seq == from_seq {
            true => Located::At(first_at),
            false => Located::Unavailable(format!(
                "events of {account} before seq {first_seq} are no longer kept; from_seq {from_seq} cannot be replayed"
            )),
        });
    }
    // `lo`: an event of the account older than `from_seq` (its seq in `lo_seq`); `hi`: a
    // stream sequence whose next event (`hi_event`) is not.
    let (mut lo, mut lo_seq) = (first_at, first_seq);
    let mut step = 1u64;
    let (mut hi, mut hi_event) = loop {
        let x = lo.saturating_add(step);
        match next_event(stream, filter, x).await? {
            Some((at, seq)) if seq < from_seq && at > lo => {
                (lo, lo_seq) = (at, seq);
                step = step.saturating_mul(2);
            }
            other => break (x, other),
        }
    };
    while hi > lo.saturating_add(1) {
        let mid = lo + (hi - lo) / 2;
        match next_event(stream, filter, mid).await? {
            Some((at, seq)) if seq < from_seq && at < hi => (lo, lo_seq) = (at, seq),
            // A replica that had not caught up answered an earlier step: try again.
            Some((_, seq)) if seq < from_seq => anyhow::bail!("the stream moved during the search"),
            other => (hi, hi_event) = (mid, other),
        }
    }
    Ok(match hi_event {
        Some((at, seq)) if seq == from_seq => Located::At(at),
        Some((_, seq)) if seq > from_seq => Located::Unavailable(format!(
            "events {from_seq} to {} of {account} are not in the stream",
            seq - 1
        )),
        Some(_) => anyhow::bail!("the events of {account} are out of order in the stream"),
        // Just past the last event: live from there on.
        None if lo_seq + 1 == from_seq => Located::At(lo + 1),
        None => Located::Unavailable(format!(
            "from_seq {from_seq} is past the last event of {account} (seq {lo_seq})"
        )),
    })
}
