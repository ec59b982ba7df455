//! Delayed trades and bars: the tapes and bars of symbols a token covers only by `dly`,
//! served `delayed.delay_ms` late from the stream ingest keeps of every print and bar
//! message (`md_delayed_tape`, sourced from the trades and bars streams, subjects as they
//! are, kept for the delay plus a margin).
//!
//! The edge follows a delayed (symbol, stream) as it follows a real-time one, once for all
//! the sessions that hold it ([`crate::tape::Tapes`], [`crate::bars::BarFeeds`]), and
//! reads the stream in two ways:
//!
//! - **Live: one reader for the edge.** While the edge follows any delayed subject, one
//!   task reads the stream in order (batched direct gets by sequence, no subject filter:
//!   the cheapest read a stream has) from the instant now − delay on, and hands each
//!   message on when it is due, `delay` after it was stored, to the follower of its
//!   subject if there is one. It holds at most one batch read ahead, and trails the
//!   stream by exactly the delay; its cost is the stream's rate, whatever the number of
//!   subjects followed or of their clients.
//! - **History: from what the real-time streams keep.** When the edge starts following
//!   a subject, its history is what the trades or bars stream (`md_trades`, `md_bars`:
//!   in memory, per subject) keeps of it that was stored by the delayed instant: the last
//!   prints it keeps (up to 500), the closed bars (up to 1000); a few such reads at a time
//!   for the edge ([`HISTORY_READS`]). The bar in progress then is not kept there: it
//!   comes with its next update. History and live join as for real-time tapes: live
//!   messages that come first are held back, and those the history has too are dropped.
//!   (Reading each subject's past from the delayed stream instead makes the server scan
//!   that interleaved file stream per subject: too slow for hundreds of subjects.)
//!
//! A read that fails is retried every `poll_ms`: nothing is skipped, since the stream
//! keeps the messages and the reader keeps its place in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use tickmesh_core::bar::bar_subject;
use tickmesh_core::date::{parse_rfc3339_utc, rfc3339_micros};
use tickmesh_core::trade::trade_subject;
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;

use super::NatsLink;
use crate::config::DelayedConfig;
use crate::tape::{FeedKey, FollowSink, TapeSource};

/// Messages asked for in one batched direct get of the live reader: the most it holds
/// read ahead.
const BATCH: usize = 256;
/// History reads in flight at once, for the whole edge: many subjects followed at once
/// (a client subscribing to hundreds) queue rather than swamp the stream.
const HISTORY_READS: usize = 8;
/// A reader that caught up with the stream reads again this much before the earliest
/// instant a message stored after that read could be due: room for the hub's clock
/// being behind the edge's.
const CLOCK_MARGIN_US: u64 = 1_000_000;

/// Where delayed tapes and bars come from: `delayed.tape_stream`, read at now − delay.
#[derive(Debug, Clone)]
pub struct DelayedTapes(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    nats: NatsLink,
    stream: String,
    delay_us: u64,
    poll: Duration,
    /// Followed subjects: the key, its sink, and the generation of the follower that
    /// put it there.
    followed: Mutex<HashMap<String, Followed>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Wakes the reader when it has nothing to follow and is given something.
    added: Notify,
    history_reads: Semaphore,
}

#[derive(Debug)]
struct Followed {
    generation: u64,
    key: FeedKey,
    sink: Weak<dyn FollowSink>,
}

/// A followed subject's place in the reader: followed while this lives.
#[derive(Debug)]
pub struct DelayedFollower {
    shared: Weak<Shared>,
    subject: String,
    generation: u64,
    history: AbortHandle,
}

impl Drop for DelayedFollower {
    fn drop(&mut self) {
        self.history.abort();
        if let Some(shared) = self.shared.upgrade() {
            let mut followed = shared.followed.lock().unwrap_or_else(|e| e.into_inner());
            if followed
                .get(&self.subject)
                .is_some_and(|f| f.generation == self.generation)
            {
                followed.remove(&self.subject);
            }
        }
    }
}

impl DelayedTapes {
    /// The source, and its live reader on the NATS thread (it ends with the source).
    pub fn new(nats: &NatsLink, config: &DelayedConfig) -> Self {
        let shared = Arc::new(Shared {
            nats: nats.clone(),
            stream: config.tape_stream.clone(),
            delay_us: config.delay_ms.saturating_mul(1000),
            poll: Duration::from_millis(config.poll_ms),
            followed: Mutex::default(),
            next_generation: Default::default(),
            added: Notify::new(),
            history_reads: Semaphore::new(HISTORY_READS),
        });
        nats.spawn(read_live(Arc::downgrade(&shared)));
        DelayedTapes(shared)
    }
}

impl TapeSource for DelayedTapes {
    type Follower = DelayedFollower;

    fn follow(&self, sink: Weak<dyn FollowSink>, key: FeedKey) -> DelayedFollower {
        let shared = &self.0;
        let shards = shared.nats.shards;
        let subject = match key.tf {
            None => trade_subject(&key.symbol, shards),
            Some(tf) => bar_subject(tf, &key.symbol, shards),
        };
        let generation = shared
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let followed = Followed {
            generation,
            key: key.clone(),
            sink: sink.clone(),
        };
        let first = {
            let mut map = shared.followed.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(subject.clone(), followed);
            map.len() == 1
        };
        if first {
            shared.added.notify_one();
        }
        let history = shared
            .nats
            .spawn(read_history(Arc::downgrade(shared), key, sink))
            .abort_handle();
        DelayedFollower {
            shared: Arc::downgrade(shared),
            subject,
            generation,
            history,
        }
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Waits until `at_us` (µs since the Unix epoch) by the wall clock.
async fn sleep_until_us(at_us: u64) {
    let now = now_us();
    if at_us > now {
        tokio::time::sleep(Duration::from_micros(at_us - now)).await;
    }
}

/// A message read: its stream sequence and subject, when it is due (µs since the Unix
/// epoch: stored, plus the delay), and what it is.
struct Read {
    seq: u64,
    subject: String,
    due_us: u64,
    payload: Bytes,
}

impl Shared {
    /// One batched direct get of the stream, `request` its body; the messages read.
    async fn read(&self, request: serde_json::Value, max: usize) -> anyhow::Result<Vec<Read>> {
        let msgs = self
            .nats
            .direct_get_batch(&self.stream, request, max)
            .await?;
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let header = |name: &str| {
                let value = msg.headers.as_ref().and_then(|h| h.get(name));
                value.map(|v| v.as_str().to_string())
            };
            let seq: u64 = header("Nats-Sequence")
                .and_then(|s| s.parse().ok())
                .context("a delayed message without its Nats-Sequence")?;
            let stored = header("Nats-Time-Stamp")
                .and_then(|s| parse_rfc3339_utc(&s))
                .context("a delayed message without its Nats-Time-Stamp")?;
            let subject =
                header("Nats-Subject").context("a delayed message without its subject")?;
            out.push(Read {
                seq,
                subject,
                due_us: stored.saturating_add(self.delay_us),
                payload: msg.payload,
            });
        }
        Ok(out)
    }

    fn sink_of(&self, subject: &str) -> Option<(FeedKey, Arc<dyn FollowSink>)> {
        let followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let f = followed.get(subject)?;
        Some((f.key.clone(), f.sink.upgrade()?))
    }

    fn idle(&self) -> bool {
        let followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        followed.is_empty()
    }
}

/// The live reader: while anything is followed, every message of the stream in order,
/// each handed to its subject's follower (if any) when it is due.
async fn read_live(shared: Weak<Shared>) {
    // The next sequence to read; none: start at the delayed instant.
    let mut cursor: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.idle() {
            cursor = None;
            // Held while asleep, a poll at most: the reader ends at the next turn after
            // the source is dropped.
            tokio::select! {
                () = s.added.notified() => {}
                () = tokio::time::sleep(s.poll) => {}
            }
            continue;
        }
        let read_at = now_us();
        let request = match cursor {
            Some(seq) => serde_json::json!({"seq": seq, "batch": BATCH}),
            None => serde_json::json!({
                "start_time": rfc3339_micros(read_at.saturating_sub(s.delay_us)),
                "batch": BATCH,
            }),
        };
        let batch = match s.read(request, BATCH).await {
            Ok(batch) => {
                failures = 0;
                batch
            }
            Err(e) => {
                super::delayed::read_failed(&mut failures, "delayed prints and bars", &e);
                let poll = s.poll;
                drop(s);
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        let full = batch.len() == BATCH;
        let delay_us = s.delay_us;
        let poll_us = s.poll.as_micros() as u64;
        drop(s);
        let mut batch = std::collections::VecDeque::from(batch);
        while let Some(first) = batch.front() {
            // Every message waits for its time, followed or not: one whose subject is
            // followed later must not have been passed over before it was due. Those
            // due by a wake-up go out together (a timer's resolution is a millisecond).
            sleep_until_us(first.due_us).await;
            let now = now_us();
            let Some(s) = shared.upgrade() else { return };
            while batch.front().is_some_and(|r| r.due_us <= now) {
                let Some(read) = batch.pop_front() else { break };
                cursor = Some(read.seq + 1);
                let Some((key, sink)) = s.sink_of(&read.subject) else {
                    continue;
                };
                // A print is due no sooner than its own time either (the hub's clock
                // behind the edge's): held back until then.
                if key.tf.is_none()
                    && let Ok(t) = tickmesh_core::trade::decode_wire(&read.payload)
                {
                    sleep_until_us(t.ts.saturating_add(delay_us)).await;
                }
                sink.publish(&key, &read.payload);
            }
        }
        if full {
            continue;
        }
        // Caught up at `read_at`: whatever was stored later is due after read_at + delay.
        let next = (read_at + delay_us).saturating_sub(CLOCK_MARGIN_US);
        sleep_until_us(next.max(read_at + poll_us)).await;
    }
}

/// What `key` held by the delayed instant, handed to `sink` as its history: what the
/// (real-time) trades or bars stream keeps of it that was stored `delay` ago or earlier
/// (the last prints it keeps, the closed bars); nothing, if it cannot be read.
async fn read_history(shared: Weak<Shared>, key: FeedKey, sink: Weak<dyn FollowSink>) {
    let Some(s) = shared.upgrade() else { return };
    let read = async {
        let _permit = s.history_reads.acquire().await?;
        let by = now_us().saturating_sub(s.delay_us);
        s.nats.kept_by(&key, by).await
    };
    let history = match read.await {
        Ok(kept) => kept,
        Err(e) => {
            metrics::counter!("tickmesh_edge_history_errors_total").increment(1);
            let error = format!("{e:#}");
            tracing::warn!(symbol = %key.symbol, error, "reading a delayed history failed");
            Vec::new()
        }
    };
    drop(s);
    if let Some(sink) = sink.upgrade() {
        sink.history(&key, history);
    }
}
