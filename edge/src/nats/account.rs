//! An account subscription's NATS side, all in `nats.js_domain` (the hub's, from a region:
//! accounts are few events and must be the writer's own, so they are read where they are
//! written rather than from a regional copy that could lag):
//!
//! 1. a plain subscription to `acctlive.<account>.>`, where the stream republishes each
//!    event once it is stored;
//! 2. the snapshot from the bucket `acct_snap`, or the place of `from_seq` in the stream
//!    `acct`;
//! 3. a catch-up: the events the stream holds after that (the replay, which waits for
//!    the session): whether there are any, from the last event of each of the account's
//!    subjects (one batched direct get); the first few by direct gets; the rest through an
//!    ordered consumer filtered to the account, dropped once it has read them;
//! 4. then the live events, each checked to be the last seq + 1. A gap, a reconnect of the
//!    NATS link, or a quiet spell after an event is followed by another catch-up, so an
//!    event the subscription lost is read from the stream instead.
//!
//! A subscription whose snapshot is current costs the servers one interest on a subject
//! and two direct gets, and no JetStream state while it is held: 10,000 subscribes in
//! five seconds made 10,000 consumers when every subscription had one, which nats-server's
//! JetStream API could not keep up with (docs/benchmarks.md, "Account channels").

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures_util::{StreamExt, TryFutureExt};
use tickmesh_core::account::{self, AccountState, Snapshot};
use tickmesh_core::protocol::ErrorCode;
use tokio::time::Instant;

use super::{NatsLink, PUMP_RESTART_DELAY, Pump};
use crate::account::{AccountItem, AccountOut};

/// The longest the snapshot read or the search for `from_seq` may take.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an account may be quiet (no event, after a catch-up or an event) before its
/// follower asks the stream whether it missed one.
const QUIET_CHECK: Duration = Duration::from_secs(3);

/// The longest one read of the stream may take (a direct get, a consumer's next event).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Events a catch-up reads one direct get each before it makes a consumer for the rest.
const SINGLE_READS: usize = 8;

/// Most messages in one batched direct get (the last event of each of an account's
/// subjects: four).
const READ_BATCH: usize = 64;

/// How long one pull of a catch-up's consumer waits for events. The server sends an idle
/// heartbeat every half of it, and the consumer is made anew after two missed ones: when
/// the hub node holding it dies (it lives with the stream's leader), the read goes on
/// about two pulls after a new leader is elected, not after the client library's default
/// of 30 s.
const PULL_EXPIRES: Duration = Duration::from_secs(4);

/// Where a follower is: the last seq handed to the session, and the stream sequence to
/// read from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    last: u64,
    next_stream_seq: u64,
}

/// How an event goes to the session: one the stream held when the subscription started
/// waits for room; a later one finds room or cuts the session.
#[derive(Clone, Copy)]
enum Hand {
    Replay,
    Live,
}

/// What a catch-up hands each event it reads to.
struct Take<'a> {
    account: &'a str,
    filter: &'a str,
    out: &'a AccountOut,
    hand: Hand,
    events_in: metrics::Counter,
}

impl Take<'_> {
    /// The event at `stream_seq`: handed to the session if it is the next seq, skipped if
    /// it was handed already, and a restart from a snapshot if seqs are missing from the
    /// stream.
    async fn event(
        &self,
        at: &mut Position,
        start: &mut Start,
        stream_seq: u64,
        payload: &[u8],
    ) -> Result<(), Restart> {
        let account = self.account;
        at.next_stream_seq = at.next_stream_seq.max(stream_seq + 1);
        let Some(event) = decode(account, payload, self.filter) else {
            return Ok(());
        };
        if event.seq <= at.last {
            return Ok(());
        }
        if event.seq != at.last + 1 {
            let why = format!(
                "events {} to {} of {account} are not in the stream: starting again from a snapshot",
                at.last + 1,
                event.seq - 1
            );
            return Err(Restart::Fresh(ErrorCode::Unavailable, why));
        }
        self.events_in.increment(1);
        at.last = event.seq;
        *start = Start::At(*at);
        let item = AccountItem::Event(event);
        let handed = match self.hand {
            Hand::Replay => self.out.replay(item).await,
            Hand::Live => self.out.live(item),
        };
        match handed {
            true => Ok(()),
            false => Err(Restart::Gone),
        }
    }
}

/// Where a subscription's events start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Read the snapshot; the events after it follow.
    Snapshot,
    /// Every event from this seq (the client's `from_seq`): found in the stream first.
    From(u64),
    /// Where a run left off: read on from there (no snapshot, no search).
    At(Position),
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
        // Live first, so that an event stored from now on is either read by the catch-up
        // below or delivered here (the subscription reaches the hub before the first read
        // does: both go out on this connection, in order).
        let mut live = match self.client.subscribe(account::live_filter(account)).await {
            Ok(s) => s,
            Err(e) => {
                return Restart::Failed(
                    anyhow::Error::new(e).context("subscribing to the account's live events"),
                );
            }
        };
        let stream = match self.hub_js.get_stream_no_info(&self.accounts_stream).await {
            Ok(stream) => stream,
            Err(e) => {
                return Restart::Failed(
                    anyhow::Error::new(e).context("opening the accounts stream"),
                );
            }
        };
        let filter = account::filter(account);
        let mut at = match *start {
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
                let at = Position {
                    last: seq,
                    next_stream_seq: stream_seq + 1,
                };
                *start = Start::At(at);
                at
            }
            Start::At(at) => at,
            Start::From(n) => {
                let located = tokio::time::timeout(START_TIMEOUT, locate(&stream, &filter, n))
                    .await
                    .context("finding from_seq timed out")
                    .and_then(|r| r);
                match located {
                    Ok(Located::At(s)) => Position {
                        last: n - 1,
                        next_stream_seq: s,
                    },
                    Ok(Located::Unavailable(why)) => {
                        return Restart::Fresh(ErrorCode::Unavailable, why);
                    }
                    Err(e) => return Restart::Failed(e),
                }
            }
        };
        // What the stream holds now is the replay: it waits for the session. Every event
        // after it is live, and a live event that finds the session's queue full cuts the
        // session (4008).
        if let Err(restart) = self
            .catch_up(account, &mut at, start, out, Hand::Replay)
            .await
        {
            return restart;
        }
        let events_in = metrics::counter!("tickmesh_edge_account_events_in_total");
        let mut reconnects = self.reconnects();
        reconnects.borrow_and_update();
        // When to ask the stream whether an event was missed: the live subscription can
        // lose one (while the link was down, or the stream changed leader), and when no
        // later event follows, only the stream can tell.
        let mut check_at = Some(Instant::now() + QUIET_CHECK);
        loop {
            let due = check_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = live.next() => {
                    let Some(msg) = msg else {
                        return Restart::Failed(anyhow::anyhow!("the live subscription ended"));
                    };
                    let stream_seq = header_u64(&msg, "Nats-Sequence");
                    let Some(event) = decode(account, &msg.payload, &msg.subject) else {
                        continue;
                    };
                    check_at = Some(Instant::now() + QUIET_CHECK);
                    if event.seq <= at.last {
                        continue;
                    }
                    if event.seq != at.last + 1 {
                        // Missed live: read the stream up to it.
                        metrics::counter!("tickmesh_edge_account_catch_ups_total", "reason" => "gap")
                            .increment(1);
                        if let Err(restart) = self.catch_up(account, &mut at, start, out, Hand::Live).await {
                            return restart;
                        }
                        if event.seq > at.last + 1 {
                            return Restart::Failed(anyhow::anyhow!(
                                "seq {} arrived live, but the stream answered only up to seq {}",
                                event.seq,
                                at.last
                            ));
                        }
                        continue;
                    }
                    events_in.increment(1);
                    at.last = event.seq;
                    if let Some(s) = stream_seq {
                        at.next_stream_seq = s + 1;
                    }
                    *start = Start::At(at);
                    if !out.live(AccountItem::Event(event)) {
                        return Restart::Gone;
                    }
                }
                changed = reconnects.changed() => {
                    if changed.is_err() {
                        return Restart::Gone;
                    }
                    metrics::counter!("tickmesh_edge_account_catch_ups_total", "reason" => "reconnect")
                        .increment(1);
                    if let Err(restart) = self.catch_up(account, &mut at, start, out, Hand::Live).await {
                        return restart;
                    }
                    check_at = Some(Instant::now() + QUIET_CHECK);
                }
                () = tokio::time::sleep_until(due), if check_at.is_some() => {
                    check_at = None;
                    metrics::counter!("tickmesh_edge_account_catch_ups_total", "reason" => "quiet")
                        .increment(1);
                    let before = at.last;
                    if let Err(restart) = self.catch_up(account, &mut at, start, out, Hand::Live).await {
                        return restart;
                    }
                    // It found events the live subscription did not bring: look again
                    // after the next quiet spell, for as long as that goes on.
                    if at.last != before {
                        check_at = Some(Instant::now() + QUIET_CHECK);
                    }
                }
            }
        }
    }

    /// Reads the account's events from the stream, from `at` until the stream has no
    /// more, handing each to the session as `hand` says; `at` and `start` follow.
    async fn catch_up(
        &self,
        account: &str,
        at: &mut Position,
        start: &mut Start,
        out: &AccountOut,
        hand: Hand,
    ) -> Result<(), Restart> {
        let filter = account::filter(account);
        let events_in = metrics::counter!("tickmesh_edge_account_events_in_total");
        let stream = self
            .hub_js
            .get_stream_no_info(&self.accounts_stream)
            .map_err(|e| anyhow::Error::new(e).context("opening the accounts stream"))
            .await?;
        // Nothing after where the follower is (the usual answer, at a subscribe and at a
        // quiet check): one look at the last event of each of the account's subjects.
        let last = tokio::time::timeout(READ_TIMEOUT, self.last_stream_seq(&filter))
            .await
            .context("reading the account's last event timed out")
            .and_then(|r| r)?;
        if last.is_none_or(|last| last < at.next_stream_seq) {
            return Ok(());
        }
        // The first few events one direct get each (a single get finds the account's
        // next event from the stream's index of subjects, cheap for the usual catch-up of
        // a few events), the rest through an ordered consumer filtered to the account.
        let take = Take {
            account,
            filter: &filter,
            out,
            hand,
            events_in,
        };
        for _ in 0..SINGLE_READS {
            let next = tokio::time::timeout(
                READ_TIMEOUT,
                next_message(&stream, &filter, at.next_stream_seq),
            )
            .await
            .context("reading the account's next event timed out")
            .and_then(|r| r)?;
            let Some((stream_seq, payload)) = next else {
                return Ok(());
            };
            take.event(at, start, stream_seq, &payload).await?;
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: at.next_stream_seq,
                },
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::Error::new(e).context("creating the account consumer"))?;
        // What the stream held when the consumer was made; later events come live.
        let mut left = consumer.cached_info().num_pending;
        if left == 0 {
            return Ok(());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::Error::new(e).context("reading the account consumer"))?;
        while left > 0 {
            let msg = tokio::time::timeout(READ_TIMEOUT, messages.next())
                .await
                .context("reading the account consumer timed out")?
                .context("the account consumer ended")?
                .map_err(|e| anyhow::Error::new(e).context("reading an account event"))?;
            let info = msg
                .info()
                .map_err(|e| anyhow::anyhow!("an account event without its metadata: {e}"))?;
            let stream_seq = info.stream_sequence;
            left = match info.pending {
                0 => 0,
                _ => left - 1,
            };
            take.event(at, start, stream_seq, &msg.payload).await?;
        }
        Ok(())
    }

    /// The stream sequence of the account's last event (the last of each of its subjects,
    /// in one batched direct get: the stream's index of subjects answers it without
    /// reading the messages between); `None` when the stream holds none.
    async fn last_stream_seq(&self, filter: &str) -> anyhow::Result<Option<u64>> {
        let request = serde_json::json!({ "multi_last": [filter], "batch": READ_BATCH });
        let stream = &self.accounts_stream;
        let events = self.direct_get_batch(stream, request, READ_BATCH).await?;
        let mut last = None;
        for msg in &events {
            let seq = header_u64(msg, "Nats-Sequence")
                .context("a direct get's reply without Nats-Sequence")?;
            last = last.max(Some(seq));
        }
        Ok(last)
    }

    /// The account's state as of its writer's last event: none yet is an empty state.
    async fn account_snapshot(&self, account: &str) -> anyhow::Result<Snapshot> {
        let bucket = self
            .account_snapshots_store
            .get_or_try_init(|| self.hub_js.get_key_value(&self.account_snapshots))
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

/// `payload` as an event of `account`; an invalid one is counted, logged and skipped (its
/// seq is then missing, which the next event's check tells).
fn decode(account: &str, payload: &[u8], subject: &str) -> Option<account::Event> {
    match account::decode_wire(payload) {
        Ok(e) if e.account == account => Some(e),
        Ok(_) | Err(_) => {
            metrics::counter!("tickmesh_edge_account_events_invalid_total").increment(1);
            tracing::warn!(%account, subject, "dropped an invalid account event");
            None
        }
    }
}

/// A numeric header of `msg`.
fn header_u64(msg: &async_nats::Message, name: &str) -> Option<u64> {
    msg.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

/// The message of `filter` at or after stream sequence `at`: (its stream sequence, its
/// payload); `None` past the last one.
async fn next_message(
    stream: &Stream<()>,
    filter: &str,
    at: u64,
) -> anyhow::Result<Option<(u64, bytes::Bytes)>> {
    match stream
        .direct_get_next_for_subject(filter, Some(at.max(1)))
        .await
    {
        Ok(msg) => Ok(Some((msg.sequence, msg.payload))),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("a direct get from the accounts stream")),
    }
}

/// The event of `filter` at or after stream sequence `at`: (its stream sequence, its
/// seq); `None` past the last one.
async fn next_event(
    stream: &Stream<()>,
    filter: &str,
    at: u64,
) -> anyhow::Result<Option<(u64, u64)>> {
    let Some((sequence, payload)) = next_message(stream, filter, at).await? else {
        return Ok(None);
    };
    let event = account::decode_wire(&payload)
        .with_context(|| format!("event at stream sequence {sequence}"))?;
    Ok(Some((sequence, event.seq)))
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
