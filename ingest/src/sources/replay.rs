//! Replay of recorded tick files (see [`crate::tickfile`] for the formats).
//!
//! A reader thread parses the files in order and sends batches through a bounded channel
//! (capacity [`CHANNEL_BATCHES`] batches: when full, the reader waits; nothing is
//! dropped). Each tick's source time is its `src_ts`, else the `ts` it was recorded with;
//! it is republished with that as `src_ts` and a fresh `seq`, `epoch` and `ts`, so the
//! sequencer drops input that goes back in time for a symbol. Pacing happens in the feed
//! loop: `speed` 1 keeps the recorded gaps, N divides them by N, 0 sends as fast as
//! NATS takes them. With `loop`, every pass shifts source times by the span of the first
//! pass (plus 1 µs), so they keep increasing and nothing is dropped as stale.
//!
//! A record's print goes with its tick as a [`Print`] (its recorded conditions kept, its
//! recorded `trade_id` not: the print takes the replayed tick's new seq as its id, as
//! every print does). The feed loop publishes it on `tr.*` when the tick itself was
//! published, as it does the simulator's; a file replays with its tape, and with the
//! states its ticks carry (a halt and its resume replay as recorded).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tickmesh_core::Tick;
use tokio::sync::mpsc;

use super::Print;
use crate::tickfile::{self, Corrupt, FileFormat, FileTrade, Record};

/// Batches in flight between the reader thread and the feed loop.
pub const CHANNEL_BATCHES: usize = 16;
/// Ticks per batch.
pub const BATCH: usize = 512;
/// Corrupt records logged one by one per file; after that, every 1000th.
const LOG_FIRST: u64 = 20;

/// `[replay]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Files replayed in order.
    pub files: Vec<PathBuf>,
    /// Pace: 1 = as recorded, N = N× faster, 0 = as fast as possible. Default 1.
    pub speed: f64,
    /// Start over at the end. Default false.
    #[serde(rename = "loop")]
    pub repeat: bool,
    /// `auto` (from the file name), `ndjson` or `csv`. Default `auto`.
    pub format: FileFormat,
    /// Longest record (an NDJSON line, a CSV row) read, in bytes. A longer one is skipped
    /// without being read into memory, logged with its line and byte offset, and counted
    /// in `tickmesh_ingest_corrupt_records_total`. Default 65536.
    pub max_record_bytes: usize,
    /// Longest pause between two ticks, in ms. Pacing follows the recorded source times; a
    /// longer gap (a break in the recording, or one far-future `src_ts`) is shortened to
    /// this and pacing goes on from there, so that no record stalls the replay. Default
    /// 60000.
    pub max_wait_ms: u64,
    /// Largest step forward in source time from one record to the next, in ms. A record
    /// further ahead (a far-future `src_ts`) is skipped, logged and counted in
    /// `tickmesh_ingest_corrupt_records_total`: taken, it would make its symbol's later
    /// ticks stale and, with `loop`, push every later pass that far ahead. Default
    /// 2592000000 (30 days).
    pub max_src_jump_ms: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            files: Vec::new(),
            speed: 1.0,
            repeat: false,
            format: FileFormat::Auto,
            max_record_bytes: tickfile::DEFAULT_MAX_RECORD,
            max_wait_ms: 60_000,
            max_src_jump_ms: 30 * 86_400_000,
        }
    }
}

impl ReplayConfig {
    /// Checks the values (the files only when replay is the source); errors name the key
    /// below `replay`.
    pub fn validate(&self, active: bool) -> Result<(), (&'static str, String)> {
        validate_pace(self.speed, self.max_wait_ms)?;
        if !(256..=16 << 20).contains(&self.max_record_bytes) {
            return Err((
                "max_record_bytes",
                format!("must be 256..=16777216, got {}", self.max_record_bytes),
            ));
        }
        if !(1_000..=10 * 365 * 86_400_000).contains(&self.max_src_jump_ms) {
            return Err((
                "max_src_jump_ms",
                format!("must be 1000..=315360000000, got {}", self.max_src_jump_ms),
            ));
        }
        if !active {
            return Ok(());
        }
        if self.files.is_empty() {
            return Err(("files", "list at least one file to replay".into()));
        }
        for f in &self.files {
            if !f.is_file() {
                return Err(("files", format!("{} is not a readable file", f.display())));
            }
            self.format.resolve(f).map_err(|e| ("format", e))?;
        }
        Ok(())
    }
}

/// Checks the pacing keys that replayed sources share: `speed` and `max_wait_ms`.
pub(crate) fn validate_pace(speed: f64, max_wait_ms: u64) -> Result<(), (&'static str, String)> {
    if !(0.0..=1_000_000.0).contains(&speed) {
        return Err(("speed", format!("must be in [0, 1000000], got {speed}")));
    }
    if !(1..=86_400_000).contains(&max_wait_ms) {
        return Err((
            "max_wait_ms",
            format!("must be 1..=86400000, got {max_wait_ms}"),
        ));
    }
    Ok(())
}

/// One tick to republish, with its (shifted) source time and the trade it printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub tick: Tick,
    pub src_ts: Option<u64>,
    pub print: Option<Print>,
}

impl From<FileTrade> for Print {
    fn from(t: FileTrade) -> Print {
        Print {
            price: t.price,
            size: t.size,
            conditions: t.conditions,
        }
    }
}

/// Counters of a replay, readable while it runs.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub records: AtomicU64,
    pub corrupt: AtomicU64,
    /// Files that could not be read at all.
    pub failed_files: AtomicU64,
    /// Passes completed.
    pub passes: AtomicU64,
}

/// Starts the reader thread. The channel closes after the last file (never, with
/// `loop`, unless a whole pass yields nothing), or when the receiver is dropped.
pub fn spawn(config: &ReplayConfig, stats: Arc<ReplayStats>) -> mpsc::Receiver<Vec<Replayed>> {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let config = config.clone();
    std::thread::Builder::new()
        .name("tickmesh-replay".into())
        .spawn(move || read_passes(&config, &stats, &tx))
        .expect("spawning the replay reader thread");
    rx
}

fn read_passes(config: &ReplayConfig, stats: &ReplayStats, tx: &mpsc::Sender<Vec<Replayed>>) {
    let corrupt_total =
        metrics::counter!("tickmesh_ingest_corrupt_records_total", "source" => "replay");
    let mut span: Option<(u64, u64)> = None;
    let mut shift = 0u64;
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let mut pass_records = 0u64;
        let mut first_pass_span = span;
        // Source time of the record before, for the jump check.
        let mut prev: Option<u64> = None;
        let max_jump_us = config.max_src_jump_ms.saturating_mul(1000);
        for file in &config.files {
            let mut jumps = 0u64;
            let mut logged = 0u64;
            let on_corrupt = |c: Corrupt| {
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                corrupt_total.increment(1);
                logged += 1;
                if logged <= LOG_FIRST || logged.is_multiple_of(1000) {
                    tracing::warn!(file = %c.file.display(), line = c.line, offset = c.offset, error = %c.error, "corrupt record skipped");
                }
            };
            let on_record = |Record { mut tick, trade }: Record| {
                let src = tick.src_ts.or((tick.ts > 0).then_some(tick.ts));
                if let (Some(s), Some(p)) = (src, prev)
                    && s > p.saturating_add(max_jump_us)
                {
                    stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    corrupt_total.increment(1);
                    jumps += 1;
                    if jumps <= LOG_FIRST || jumps.is_multiple_of(1000) {
                        let ahead_s = (s - p) / 1_000_000;
                        tracing::warn!(file = %file.display(), symbol = %tick.symbol, src_ts = s, ahead_s, "source time jumps too far ahead; record skipped");
                    }
                    return ControlFlow::Continue(());
                }
                prev = src.or(prev);
                if span.is_none()
                    && let Some(s) = src
                {
                    let (lo, hi) = first_pass_span.get_or_insert((s, s));
                    (*lo, *hi) = ((*lo).min(s), (*hi).max(s));
                }
                let src = src.map(|s| s.saturating_add(shift));
                (tick.seq, tick.epoch, tick.ts, tick.src_ts) = (0, 0, 0, src);
                batch.push(Replayed {
                    tick,
                    src_ts: src,
                    print: trade.map(Print::from),
                });
                pass_records += 1;
                stats.records.fetch_add(1, Ordering::Relaxed);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if tx.blocking_send(full).is_err() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            };
            let max = config.max_record_bytes;
            match tickfile::read_file(file, config.format, max, on_record, on_corrupt) {
                Ok(s) => {
                    tracing::info!(file = %file.display(), ticks = s.ticks, trades = s.trades, corrupt = s.corrupt, "replayed file")
                }
                Err(e) => {
                    stats.failed_files.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(file = %file.display(), error = %e, "cannot replay file");
                }
            }
            if tx.is_closed() {
                return;
            }
        }
        if !batch.is_empty() && tx.blocking_send(batch).is_err() {
            return;
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
        span = span.or(first_pass_span);
        if !config.repeat {
            return;
        }
        if pass_records == 0 {
            tracing::error!("a whole replay pass yielded no ticks; not looping");
            return;
        }
        shift = shift.saturating_add(span.map_or(0, |(lo, hi)| hi - lo + 1));
    }
}

/// When each replayed tick is due: its source time's distance from the first one, divided
/// by `speed`, except that no tick is due more than `max_wait` after the one before it.
/// A gap in source time longer than that moves the anchor forward by the excess, so that
/// one far-future `src_ts` costs at most `max_wait`, and the ticks after it (earlier in
/// source time) go out at once rather than waiting for it.
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: f64,
    /// The longest gap kept, in source µs (`max_wait` × `speed`).
    max_gap_us: u64,
    /// (source time, instant) the offsets count from.
    anchor: Option<(u64, Instant)>,
    /// Highest source time so far.
    high: u64,
}

impl Pacer {
    /// `speed` 0 paces nothing.
    pub fn new(speed: f64, max_wait: Duration) -> Self {
        Pacer {
            speed,
            max_gap_us: (max_wait.as_secs_f64() * 1e6 * speed) as u64,
            anchor: None,
            high: 0,
        }
    }

    /// When a tick with source time `src` is due; `None`: at once.
    pub fn due(&mut self, src: u64, now: Instant) -> Option<Instant> {
        if self.speed <= 0.0 {
            return None;
        }
        let (src0, at0) = self.anchor.get_or_insert((src, now));
        if src > self.high {
            let gap = if self.high == 0 { 0 } else { src - self.high };
            *src0 += gap.saturating_sub(self.max_gap_us);
            self.high = src;
        }
        let offset = src.saturating_sub(*src0) as f64 / 1e6 / self.speed;
        Some(*at0 + Duration::from_secs_f64(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_far_ahead_of_the_one_before_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        let t0 = 1_700_000_000_000_000u64;
        let century = 100 * 365 * 86_400 * 1_000_000u64;
        let lines = [t0, t0 + century, t0 + 10, t0 + 86_400_000_000]
            .map(|t| format!("{{\"symbol\":\"AAPL\",\"src_ts\":{t},\"last\":1}}"));
        std::fs::write(&path, lines.join("\n")).unwrap();
        let config = ReplayConfig {
            files: vec![path],
            repeat: true,
            max_src_jump_ms: 2 * 86_400_000,
            ..ReplayConfig::default()
        };
        let stats = Arc::new(ReplayStats::default());
        let mut rx = spawn(&config, stats.clone());
        let mut got = Vec::new();
        while got.len() < 6 {
            got.extend(rx.recv().await.unwrap());
        }
        drop(rx);
        let times: Vec<u64> = got.iter().map(|r| r.src_ts.unwrap() - t0).collect();
        // The loop shifts by the span of what was taken: a day, not a century.
        let day = 86_400_000_000;
        assert_eq!(times[..6], [0, 10, day, day + 1, day + 11, 2 * day + 1]);
        assert!(stats.corrupt.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_far_future_source_time_costs_at_most_the_longest_wait() {
        let max_wait = Duration::from_secs(2);
        let t0 = Instant::now();
        let year_us = 365 * 86_400 * 1_000_000u64;
        let start = 1_700_000_000_000_000u64;
        for speed in [1.0, 10.0] {
            let mut p = Pacer::new(speed, max_wait);
            let at = |p: &mut Pacer, src| p.due(src, t0).unwrap() - t0;
            assert_eq!(at(&mut p, start), Duration::ZERO);
            // Recorded gaps are kept, divided by the speed.
            let one = at(&mut p, start + 1_000_000).as_secs_f64();
            assert!((one - 1.0 / speed).abs() < 1e-6, "{one}");
            // A century ahead: due at most `max_wait` after the tick before it.
            let far = at(&mut p, start + 100 * year_us);
            assert!(far <= Duration::from_secs_f64(one) + max_wait, "{far:?}");
            // The ticks after it, back at the recorded times: no later than the far one.
            assert!(at(&mut p, start + 2_000_000) <= far);
            // A recorded gap of an hour is shortened to the longest wait.
            let later = at(&mut p, start + 100 * year_us + 3_600_000_000);
            assert!(later <= far + max_wait, "{later:?}");
        }
        assert_eq!(Pacer::new(0.0, max_wait).due(start, t0), None);
    }

    #[tokio::test]
    async fn loops_shift_source_times_so_they_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        std::fs::write(
            &path,
            "{\"symbol\":\"AAPL\",\"src_ts\":100,\"last\":1}\nnot json\n{\"symbol\":\"AAPL\",\"ts\":150,\"last\":2,\"seq\":77}\n",
        )
        .unwrap();
        let config = ReplayConfig {
            files: vec![path],
            repeat: true,
            ..ReplayConfig::default()
        };
        let stats = Arc::new(ReplayStats::default());
        let mut rx = spawn(&config, stats.clone());
        let mut got = Vec::new();
        while got.len() < 6 {
            got.extend(rx.recv().await.unwrap());
        }
        drop(rx);
        let times: Vec<u64> = got.iter().map(|r| r.src_ts.unwrap()).collect();
        assert_eq!(times[..6], [100, 150, 151, 201, 202, 252]);
        assert!(got.iter().all(|r| r.tick.seq == 0 && r.tick.ts == 0));
        assert_eq!(got[1].tick.src_ts, Some(150));
        assert!(stats.corrupt.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn config_checks_files_only_when_replaying() {
        let c = ReplayConfig::default();
        c.validate(false).unwrap();
        assert_eq!(c.validate(true).unwrap_err().0, "files");
        let c = ReplayConfig {
            files: vec!["/nonexistent/x.ndjson".into()],
            ..ReplayConfig::default()
        };
        assert_eq!(c.validate(true).unwrap_err().0, "files");
        let c = ReplayConfig {
            speed: -1.0,
            ..ReplayConfig::default()
        };
        assert_eq!(c.validate(false).unwrap_err().0, "speed");
    }
}
