//! Delayed data: what a token covers only by `dly` is served `delayed.delay_ms` late,
//! read from the stream of delayed samples ingest keeps (`md_delayed`, subjects
//! `mdd.<shard>.<symbol>`, at most one tick per symbol per step).
//!
//! The edge holds no queue per client, nor per symbol: every `delayed.poll_ms` one
//! batched direct get asks the stream for the last sample of each delayed symbol the edge
//! carries *stored at or before now − delay* (`multi_last` with `up_to_time`), and hands
//! what is newer than the symbol's last value to the delayed fan-out core, which serves
//! every delayed client of it as the live core serves real-time ones. The cost is one
//! read per poll for the whole edge and one sample per symbol, whatever the number of
//! delayed clients. A sample whose own `ts` is fresher than now − delay (a clock ahead on
//! the hub) is held back to the next poll: nothing fresher ever leaves the edge.
//!
//! Each sample stands for every tick of its symbol since the one before (the stream is
//! conflated by construction), so its skipped seqs are never told as a `gap`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickmesh_core::Symbol;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::subject::delayed_subject;
use tokio::sync::Notify;

use super::NatsLink;
use crate::config::DelayedConfig;
use crate::fanout::{SharedTick, TickSink, Upstream};

/// Subjects asked for in one batched direct get.
pub const SUBJECTS_PER_READ: usize = 256;

/// The delayed symbols an edge carries and the reader of their samples.
#[derive(Debug, Clone)]
pub struct DelayedLink(Arc<Followed>);

#[derive(Debug)]
struct Followed {
    /// Each carried symbol's sink, with the generation of the pump that put it there.
    sinks: Mutex<HashMap<Symbol, Placed>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Wakes the reader at once when a symbol is added, so that its first value (the
    /// snapshot of whoever subscribed) does not wait for the next poll.
    added: Arc<Notify>,
    delay_ms: u64,
}

/// A carried symbol's sink and the generation of the pump that put it there.
type Placed = (u64, Weak<dyn TickSink>);

/// A delayed symbol's place in the reader: it is read while this lives.
#[derive(Debug)]
pub struct DelayedPump {
    followed: Weak<Followed>,
    symbol: Symbol,
    generation: u64,
}

impl Drop for DelayedPump {
    fn drop(&mut self) {
        if let Some(followed) = self.followed.upgrade() {
            let mut sinks = followed.sinks.lock().unwrap_or_else(|e| e.into_inner());
            if sinks
                .get(&self.symbol)
                .is_some_and(|(g, _)| *g == self.generation)
            {
                sinks.remove(&self.symbol);
            }
        }
    }
}

impl Upstream for DelayedLink {
    type Pump = DelayedPump;

    fn start_pump(&self, sink: Weak<dyn TickSink>, symbol: Symbol) -> DelayedPump {
        let generation = self
            .0
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0
            .sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(symbol.clone(), (generation, sink));
        self.0.added.notify_one();
        DelayedPump {
            followed: Arc::downgrade(&self.0),
            symbol,
            generation,
        }
    }
}

impl DelayedLink {
    /// Starts the reader on the NATS thread; it ends when the link is dropped.
    pub fn start(nats: &NatsLink, config: &DelayedConfig, shards: u32) -> Self {
        let followed = Arc::new(Followed {
            sinks: Mutex::default(),
            next_generation: Default::default(),
            added: Arc::new(Notify::new()),
            delay_ms: config.delay_ms,
        });
        let reader = Reader {
            nats: nats.clone(),
            stream: config.stream.clone(),
            poll: Duration::from_millis(config.poll_ms),
            shards,
            added: followed.added.clone(),
            followed: Arc::downgrade(&followed),
        };
        nats.spawn(reader.run());
        DelayedLink(followed)
    }

    /// The delay applied, ms.
    pub fn delay_ms(&self) -> u64 {
        self.0.delay_ms
    }
}

struct Reader {
    nats: NatsLink,
    stream: String,
    poll: Duration,
    shards: u32,
    added: Arc<Notify>,
    followed: Weak<Followed>,
}

impl Reader {
    async fn run(self) {
        // Failed reads in a row: only the first of a streak is logged as a warning.
        let mut failures = 0u32;
        loop {
            let Some(followed) = self.followed.upgrade() else {
                return;
            };
            let symbols: Vec<(Symbol, Weak<dyn TickSink>)> = followed
                .sinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(s, (_, sink))| (s.clone(), sink.clone()))
                .collect();
            let delay_ms = followed.delay_ms;
            for chunk in symbols.chunks(SUBJECTS_PER_READ) {
                match self.read(chunk, delay_ms).await {
                    Ok(()) => failures = 0,
                    Err(e) => read_failed(&mut failures, "delayed samples", &e),
                }
            }
            // Not holding the link while asleep: once it is dropped, the next turn ends.
            drop(followed);
            let read_at = tokio::time::Instant::now();
            let added = self.added.notified();
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = added => {
                    // A new symbol is read at once, but every read covers them all: reads
                    // woken by new symbols are spaced by a fifth of the poll at least, so
                    // that symbols added faster cost no more reads.
                    tokio::time::sleep_until(read_at + self.poll / 5).await;
                }
            }
        }
    }

    /// Reads the sample of each of `symbols` due now and hands on those newer than what
    /// the core has.
    async fn read(
        &self,
        symbols: &[(Symbol, Weak<dyn TickSink>)],
        delay_ms: u64,
    ) -> anyhow::Result<()> {
        let names: Vec<&str> = symbols.iter().map(|(s, _)| s.as_str()).collect();
        let samples = samples_due(&self.nats, &self.stream, self.shards, &names, delay_ms).await?;
        let sinks: HashMap<&str, &Weak<dyn TickSink>> =
            symbols.iter().map(|(s, sink)| (s.as_str(), sink)).collect();
        for sample in samples {
            if let Some(sink) = sinks
                .get(sample.tick.symbol.as_str())
                .and_then(|s| s.upgrade())
            {
                sink.publish(sample);
            }
        }
        Ok(())
    }
}

/// Counts a failed read of delayed data (`what`) and logs it: the first of a streak as a
/// warning, the rest at debug level.
pub(super) fn read_failed(failures: &mut u32, what: &str, e: &anyhow::Error) {
    metrics::counter!("tickmesh_edge_delayed_read_errors_total").increment(1);
    let error = format!("{e:#}");
    match *failures {
        0 => tracing::warn!(error, "reading {what} failed"),
        n => tracing::debug!(error, failures = n + 1, "reading {what} failed again"),
    }
    *failures += 1;
}

/// The sample of each of `symbols` (at most [`SUBJECTS_PER_READ`]) that was current
/// `delay_ms` ago: the last stored at or before now − delay, in one batched direct get of
/// `stream`; each marked `delayed_ms`. A symbol with no such sample is left out, and so is
/// one stamped later than that instant (the hub's clock ahead of ours: it is due later).
pub async fn samples_due(
    nats: &NatsLink,
    stream: &str,
    shards: u32,
    symbols: &[&str],
    delay_ms: u64,
) -> anyhow::Result<Vec<Arc<SharedTick>>> {
    if symbols.is_empty() {
        return Ok(Vec::new());
    }
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let due_us = now_us.saturating_sub(delay_ms.saturating_mul(1000));
    let subjects: Vec<String> = symbols.iter().map(|s| delayed_subject(s, shards)).collect();
    let request = serde_json::json!({
        "multi_last": subjects,
        "up_to_time": tickmesh_core::date::rfc3339_micros(due_us),
        "batch": symbols.len(),
    });
    let msgs = nats
        .direct_get_batch(stream, request, symbols.len())
        .await?;
    let mut out = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let tick = match decode_wire(&msg.payload) {
            Ok(tick) => tick,
            Err(e) => {
                metrics::counter!("tickmesh_edge_delayed_invalid_total").increment(1);
                tracing::debug!(error = %e, "dropped an invalid delayed sample");
                continue;
            }
        };
        if tick.ts > due_us || !symbols.contains(&tick.symbol.as_str()) {
            continue;
        }
        let wire_len = msg.payload.len();
        let mut shared = SharedTick::new(tick, wire_len);
        shared.delayed_ms = Some(delay_ms);
        out.push(Arc::new(shared));
    }
    Ok(out)
}
