//! Delayed trades and bars: the tapes and bars of symbols a token covers only by `dly`,
//! served `delayed.delay_ms` late from the stream ingest keeps of every print and bar
//! message (`md_delayed_tape`, sourced from the trades and bars streams, subjects as they
//! are, kept for the delay plus a margin).
//!
//! The edge follows a delayed (symbol, stream) as it follows a real-time one, once for all
//! the sessions that hold it ([`crate::tape::Tapes`], [`crate::bars::BarFeeds`]): one
//! follower reads the subject from the stream in batched direct gets, in stream order, and
//! hands each message on when it is due, `delay` after it was stored (for a print, after
//! its own `ts` too, whichever is later). What it holds is at most one batch read ahead;
//! no client and no symbol has a queue of the delay's length. What is due when the first
//! session subscribes is the history (the last prints, or the bars closed by then and
//! the bar in progress then); a bar closed long before the stream's window comes from
//! the bars stream, which keeps the closed bars.
//!
//! A follower reads again when what it read has gone out: at once when the batch was
//! full, else when whatever was stored after that read could be due (the delay later,
//! less a margin for the clocks). A read that fails is retried every `poll_ms`; nothing is
//! lost meanwhile, since the stream keeps the messages and the follower goes on from its
//! place in it.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use tickmesh_core::bar::{Bar, Timeframe, bar_subject};
use tickmesh_core::date::parse_rfc3339_utc;
use tickmesh_core::trade::trade_subject;

use super::{NatsLink, Pump};
use crate::config::DelayedConfig;
use crate::tape::{FeedKey, FollowSink, TapeSource};

/// Messages asked for in one batched direct get: the most a follower holds read ahead.
const BATCH: usize = 256;
/// A follower that caught up with the stream reads again this much before the earliest
/// instant a message stored after that read could be due: room for the hub's clock
/// being behind the edge's.
const CLOCK_MARGIN_US: u64 = 1_000_000;
/// A bar of the bars stream counts as closed by the delayed instant only if it ended
/// this long before it (its final goes out within about a second of its end); later ones
/// come from the delayed stream, as they went out.
const CLOSED_MARGIN_US: u64 = 5_000_000;
/// The most messages a follower keeps while it reads its first history (the newest).
const HISTORY_KEPT: usize = 10_000;

/// Where delayed tapes and bars come from: `delayed.tape_stream`, read at now − delay.
#[derive(Debug, Clone)]
pub struct DelayedTapes {
    nats: NatsLink,
    stream: String,
    delay_us: u64,
    poll: Duration,
}

impl DelayedTapes {
    pub fn new(nats: &NatsLink, config: &DelayedConfig) -> Self {
        DelayedTapes {
            nats: nats.clone(),
            stream: config.tape_stream.clone(),
            delay_us: config.delay_ms.saturating_mul(1000),
            poll: Duration::from_millis(config.poll_ms),
        }
    }

    /// The delay applied, ms.
    pub fn delay_ms(&self) -> u64 {
        self.delay_us / 1000
    }
}

impl TapeSource for DelayedTapes {
    type Follower = Pump;

    fn follow(&self, sink: Weak<dyn FollowSink>, key: FeedKey) -> Pump {
        let shards = self.nats.shards;
        let subject = match key.tf {
            None => trade_subject(&key.symbol, shards),
            Some(tf) => bar_subject(tf, &key.symbol, shards),
        };
        let follower = Follower {
            source: self.clone(),
            subject,
            key,
            sink,
        };
        self.nats.spawn(follower.run()).abort_handle().into()
    }
}

struct Follower {
    source: DelayedTapes,
    subject: String,
    key: FeedKey,
    sink: Weak<dyn FollowSink>,
}

/// A message read ahead: when it is due (µs since the Unix epoch), and what it is.
struct Due {
    at_us: u64,
    payload: Bytes,
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

impl Follower {
    async fn run(self) {
        let delay_us = self.source.delay_us;
        // Bars closed before the delayed stream's window: from the bars stream.
        let mut history: VecDeque<Bytes> = match self.key.tf {
            Some(tf) => {
                self.closed_bars(tf, now_us().saturating_sub(delay_us))
                    .await
            }
            None => VecDeque::new(),
        };
        let closed_before = history.len();
        let mut cursor = 1u64;
        let mut ahead: VecDeque<Due> = VecDeque::new();
        // The history was handed on; `floor_us`: messages due before it were history
        // that could not be read (a read failed first) and are not told as live.
        let mut loaded = false;
        let mut floor_us = 0u64;
        let mut failures = 0u32;
        loop {
            if self.sink.strong_count() == 0 {
                return;
            }
            let read_at = now_us();
            let full = match self.read(&mut cursor, &mut ahead).await {
                Ok(full) => {
                    failures = 0;
                    full
                }
                Err(e) => {
                    metrics::counter!("tickmesh_edge_delayed_read_errors_total").increment(1);
                    let error = format!("{e:#}");
                    match failures {
                        0 => {
                            tracing::warn!(subject = %self.subject, error, "reading delayed prints or bars failed")
                        }
                        n => {
                            tracing::debug!(subject = %self.subject, error, failures = n + 1, "reading delayed prints or bars failed again")
                        }
                    }
                    failures += 1;
                    if !loaded {
                        // The subscribers wait for no more than this read: on without it.
                        loaded = true;
                        floor_us = now_us();
                        self.hand_history(std::mem::take(&mut history));
                    }
                    tokio::time::sleep(self.source.poll).await;
                    continue;
                }
            };
            if !loaded {
                let now = now_us();
                while ahead.front().is_some_and(|d| d.at_us <= now) {
                    let Some(due) = ahead.pop_front() else { break };
                    if history.len() == closed_before + HISTORY_KEPT {
                        history.remove(closed_before);
                    }
                    history.push_back(due.payload);
                }
                if full && ahead.is_empty() {
                    // The stream keeps more than one batch that is due already: read on.
                    continue;
                }
                loaded = true;
                self.hand_history(std::mem::take(&mut history));
            }
            while let Some(due) = ahead.pop_front() {
                if due.at_us < floor_us {
                    continue;
                }
                sleep_until_us(due.at_us).await;
                let Some(sink) = self.sink.upgrade() else {
                    return;
                };
                sink.publish(&self.key, &due.payload);
            }
            if full {
                continue;
            }
            // Caught up at `read_at`: whatever was stored later is due after read_at + delay.
            let poll = self.source.poll.as_micros() as u64;
            let next = (read_at + delay_us).saturating_sub(CLOCK_MARGIN_US);
            sleep_until_us(next.max(read_at + poll)).await;
        }
    }

    fn hand_history(&self, history: VecDeque<Bytes>) {
        if let Some(sink) = self.sink.upgrade() {
            sink.history(&self.key, history.into());
        }
    }

    /// Reads the next batch of the subject from `cursor` (a stream seq) into `ahead`;
    /// whether the batch was full (more may follow at once).
    async fn read(&self, cursor: &mut u64, ahead: &mut VecDeque<Due>) -> anyhow::Result<bool> {
        let request = serde_json::json!({
            "seq": *cursor,
            "next_by_subj": self.subject,
            "batch": BATCH,
        });
        let source = &self.source;
        let msgs = source
            .nats
            .direct_get_batch(&source.stream, request, BATCH)
            .await?;
        let n = msgs.len();
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
            *cursor = seq + 1;
            // A print is due no sooner than its own time either (the hub's clock behind).
            let at = match self.key.tf {
                None => tickmesh_core::trade::decode_wire(&msg.payload)
                    .map_or(stored, |t| t.ts.max(stored)),
                Some(_) => stored,
            };
            ahead.push_back(Due {
                at_us: at.saturating_add(source.delay_us),
                payload: msg.payload,
            });
        }
        Ok(n == BATCH)
    }

    /// The bars of `tf` the bars stream keeps that had closed by `due_us` with room to
    /// spare (see [`CLOSED_MARGIN_US`]), oldest first; none when it cannot be read.
    async fn closed_bars(&self, tf: Timeframe, due_us: u64) -> VecDeque<Bytes> {
        let kept = match self.source.nats.read_bars(&self.key.symbol, tf).await {
            Ok(kept) => kept,
            Err(e) => {
                metrics::counter!("tickmesh_edge_history_errors_total").increment(1);
                tracing::warn!(subject = %self.subject, error = %e, "reading the closed bars failed");
                return VecDeque::new();
            }
        };
        kept.into_iter()
            .filter(|payload| {
                tickmesh_core::bar::decode_wire(payload).is_ok_and(|b| closed_by(&b, due_us))
            })
            .collect()
    }
}

/// Whether `bar`, as the bars stream keeps it, had surely closed by `due_us` (µs since
/// the Unix epoch): it is a final that ended [`CLOSED_MARGIN_US`] before then at least.
pub fn closed_by(bar: &Bar, due_us: u64) -> bool {
    bar.closed && bar.end() + CLOSED_MARGIN_US <= due_us
}
