//! NASDAQ TotalView-ITCH 5.0: files of order-level messages in, a book per stock, ticks
//! out.
//!
//! - [`msg`]: the decoder, one pure function over one message's bytes; [`encode`] its
//!   inverse. Written here rather than taken from a crate: the maintained ITCH crate
//!   (`itchy`) copies every message into owned types, refuses a message whose coded
//!   fields hold a value it does not list, stops at the first frame it cannot parse,
//!   panics on a stock name that is not UTF-8, and has no `h` (operational halt) or `O`
//!   (DLCR) message; this decoder borrows from the input, reads only fixed offsets, and
//!   leaves recovery to the framing. The tests check it against `itchy` message by
//!   message.
//! - [`frames`]: the length prefixes, gzip, and recovery from bad frames.
//! - [`book`]: orders by reference and price levels per stock.
//! - [`day`]: frames → books and counters, the pure core that the feed, the tests and
//!   the bench share.
//! - [`generate`]: a synthetic day from the simulator's universe.
//!
//! The reader thread ([`spawn`]) replays the files like [`super::replay`]: batches of
//! ticks through a bounded channel, paced by source time in the feed loop (`speed`,
//! `max_wait_ms`, `loop`). A stock ticks only when a message changed its top
//! [`book::DEPTH`] levels, its last print or its volume; the tick carries the whole
//! level 1, the depth and the trading `state` ([`book::state_of`]; a change of state is a
//! change of the tick). See `docs/itch.md` for the field mapping.
//!
//! Every print (`E`, printable `C`, `P`, `Q`) goes out as a [`Print`] with the tick that
//! shows it, and from there on `tr.*` as every source's prints do. Ticks are built after
//! every message and a message prints at most once, so each print has a tick of its own
//! (its `last`, `last_size` and `volume` show that print) and its own seq and
//! `trade_id`; none is folded into another. Conditions: [`conditions`].

pub mod book;
pub mod day;
pub mod encode;
pub mod frames;
pub mod generate;
pub mod msg;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tickmesh_core::tick::{Depth, Kind, Tick, now_us};
use tokio::sync::mpsc;

use super::replay::{BATCH, CHANNEL_BATCHES, ReplayStats, Replayed, validate_pace};
use super::{OPENING, Print};
use book::{Book, DEPTH, Printed, Sale};
use day::Day;

/// Bad frames and refused messages logged one by one per file; after that, every 1000th.
const LOG_FIRST: u64 = 20;

/// `[itch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItchConfig {
    /// ITCH 5.0 files (plain or gzip), replayed in order; each is one day with its own
    /// books.
    pub files: Vec<PathBuf>,
    /// Pace: 1 = as recorded, N = N× faster, 0 = as fast as possible. Default 1.
    pub speed: f64,
    /// Start over at the end. Default false.
    #[serde(rename = "loop")]
    pub repeat: bool,
    /// The trading day (`YYYY-MM-DD`) that ITCH times (ns since midnight) count from.
    /// Default: today (UTC).
    pub date: Option<String>,
    /// The feed's midnight as an offset from UTC, in minutes: -300 for New York in
    /// winter (EST), -240 in summer (EDT). Default -300.
    pub utc_offset_minutes: i32,
    /// Longest pause between two ticks, in ms; longer gaps in source time (the night
    /// before the open) are shortened to it. Default 60000.
    pub max_wait_ms: u64,
}

impl Default for ItchConfig {
    fn default() -> Self {
        ItchConfig {
            files: Vec::new(),
            speed: 1.0,
            repeat: false,
            date: None,
            utc_offset_minutes: -300,
            max_wait_ms: 60_000,
        }
    }
}

impl ItchConfig {
    /// Checks the values (the files only when ITCH is the source); errors name the key
    /// below `itch`.
    pub fn validate(&self, active: bool) -> Result<(), (&'static str, String)> {
        validate_pace(self.speed, self.max_wait_ms)?;
        if let Some(date) = &self.date {
            tickmesh_core::date::Date::parse(date).map_err(|e| ("date", e.to_string()))?;
        }
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err((
                "utc_offset_minutes",
                format!("must be -720..=840, got {}", self.utc_offset_minutes),
            ));
        }
        if !active {
            return Ok(());
        }
        if self.files.is_empty() {
            return Err(("files", "list at least one ITCH file".into()));
        }
        match self.files.iter().find(|f| !f.is_file()) {
            Some(f) => Err(("files", format!("{} is not a readable file", f.display()))),
            None => Ok(()),
        }
    }

    /// The feed's midnight in µs since the Unix epoch.
    fn midnight_us(&self) -> u64 {
        let today = tickmesh_core::date::Date::from_unix_us(now_us());
        let date = self
            .date
            .as_deref()
            .and_then(|d| tickmesh_core::date::Date::parse(d).ok())
            .unwrap_or(today);
        let secs = date.days() * 86_400 - i64::from(self.utc_offset_minutes) * 60;
        u64::try_from(secs).unwrap_or(0).saturating_mul(1_000_000)
    }
}

/// A Price(4) as a number: an integer divided by a power of ten is the nearest double
/// to the decimal, so it prints short (189.12, never 189.12000000001).
pub fn price(p: u32) -> f64 {
    f64::from(p) / 10_000.0
}

/// The tick of a book: level 1, the top [`DEPTH`] levels per side, last print, volume.
pub fn tick_of(book: &Book, src_ts: u64) -> Tick {
    let levels = |side: &book::Side| -> Vec<(f64, u64)> {
        side.best_first()
            .take(DEPTH)
            .map(|(p, s)| (price(p), s))
            .collect()
    };
    let depth = Depth {
        bids: levels(&book.bids),
        asks: levels(&book.asks),
    };
    Tick {
        symbol: book.symbol.clone(),
        src_ts: Some(src_ts),
        kind: if book.etp { Kind::Etf } else { Kind::Equity },
        last: book.last.map(|(p, _)| price(p)),
        last_size: book.last.map(|(_, s)| u64::from(s)),
        bid: depth.bids.first().map(|l| l.0),
        bid_size: depth.bids.first().map(|l| l.1),
        ask: depth.asks.first().map(|l| l.0),
        ask_size: depth.asks.first().map(|l| l.1),
        volume: Some(book.volume),
        depth: Some(depth),
        state: Some(book.state),
        ..Tick::default()
    }
}

/// The sale conditions of a print: none for an execution of a displayed order (`E`,
/// printable `C`); `non_displayed` for `P`; `cross` for `Q`, and with it `opening` for
/// the opening cross (as the simulator's opening print), `closing` for the closing cross,
/// `reopening` for a halt or IPO cross.
pub fn conditions(sale: Sale) -> &'static [&'static str] {
    match sale {
        Sale::Execution => &[],
        Sale::NonDisplayed => &["non_displayed"],
        Sale::Cross(b'O') => &["cross", OPENING],
        Sale::Cross(b'C') => &["cross", "closing"],
        Sale::Cross(b'H') => &["cross", "reopening"],
        Sale::Cross(_) => &["cross"],
    }
}

/// The [`Print`] of a book's print: price and size as the tick shows them.
pub fn print_of(p: Printed) -> Print {
    Print::with(price(p.price), u64::from(p.shares), conditions(p.sale))
}

/// Reads a whole file (plain or gzip) into one [`Day`], as fast as it goes.
pub fn read_day(input: impl std::io::Read) -> std::io::Result<Day> {
    let mut day = Day::new();
    let mut changed = Vec::new();
    frames::read(input, &mut |_, frame| {
        if day.on_frame(frame).is_ok() {
            day.books.take_changed(&mut changed);
        }
        ControlFlow::Continue(())
    })?;
    Ok(day)
}

/// Starts the reader thread. The channel closes after the last file (never, with `loop`,
/// unless a whole pass yields nothing), or when the receiver is dropped. `stats.records`
/// counts messages, `stats.corrupt` bad frames and refused messages.
pub fn spawn(config: &ItchConfig, stats: Arc<ReplayStats>) -> mpsc::Receiver<Vec<Replayed>> {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let config = config.clone();
    std::thread::Builder::new()
        .name("tickmesh-itch".into())
        .spawn(move || read_passes(&config, &stats, &tx))
        .expect("spawning the ITCH reader thread");
    rx
}

/// Source time of the last tick sent, and the batch being filled.
struct Out<'a> {
    tx: &'a mpsc::Sender<Vec<Replayed>>,
    batch: Vec<Replayed>,
    last_src: u64,
    ticks: u64,
}

impl Out<'_> {
    fn push(&mut self, tick: Tick, src: u64, print: Option<Print>) -> ControlFlow<()> {
        self.last_src = src;
        self.ticks += 1;
        self.batch.push(Replayed {
            tick,
            src_ts: Some(src),
            print,
        });
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            if self.tx.blocking_send(full).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

fn read_passes(config: &ItchConfig, stats: &ReplayStats, tx: &mpsc::Sender<Vec<Replayed>>) {
    let midnight = config.midnight_us();
    let mut out = Out {
        tx,
        batch: Vec::with_capacity(BATCH),
        last_src: 0,
        ticks: 0,
    };
    loop {
        let before = out.ticks;
        for file in &config.files {
            match replay_file(file, midnight, stats, &mut out) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => return,
                Err(e) => {
                    stats.failed_files.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(file = %file.display(), error = %e, "cannot replay ITCH file");
                }
            }
        }
        if !out.batch.is_empty() && tx.blocking_send(std::mem::take(&mut out.batch)).is_err() {
            return;
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
        if !config.repeat {
            return;
        }
        if out.ticks == before {
            tracing::error!("a whole ITCH pass yielded no ticks; not looping");
            return;
        }
    }
}

/// Replays one file as one day. Its source times are moved forward, if need be, so that
/// it starts just after the last tick sent (the file before, or the pass before).
fn replay_file(
    file: &std::path::Path,
    midnight: u64,
    stats: &ReplayStats,
    out: &mut Out<'_>,
) -> std::io::Result<ControlFlow<()>> {
    let corrupt_total =
        metrics::counter!("tickmesh_ingest_corrupt_records_total", "source" => "itch");
    let mut day = Day::new();
    let mut changed = Vec::new();
    // Stocks not published, each logged once; a day names a few thousand stocks.
    let mut unpublishable: Vec<u16> = Vec::new();
    let mut shift: Option<u64> = None;
    let floor = out.last_src;
    let mut logged = 0u64;
    let mut on_frame = |offset: u64, frame: frames::Frame<'_>| {
        let ts_ns = match day.on_frame(frame) {
            Ok(ts) => ts,
            Err(e) => {
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                corrupt_total.increment(1);
                logged += 1;
                if logged <= LOG_FIRST || logged.is_multiple_of(1000) {
                    tracing::warn!(file = %file.display(), offset, error = %e, "bad ITCH message skipped");
                }
                return ControlFlow::Continue(());
            }
        };
        stats.records.fetch_add(1, Ordering::Relaxed);
        day.books.take_changed(&mut changed);
        let raw = midnight + ts_ns / 1000;
        let shift = *shift.get_or_insert(match floor {
            0 => 0,
            f => (f + 1).saturating_sub(raw),
        });
        for &locate in &changed {
            let print = day.books.take_print(locate).map(print_of);
            let Some(book) = day.books.book(locate) else {
                continue;
            };
            if !book.publishable {
                if !unpublishable.contains(&locate) {
                    unpublishable.push(locate);
                    tracing::warn!(file = %file.display(), stock = %book.symbol.escape_debug(), locate, "stock name is not a TickMesh symbol; its book is not published");
                }
                continue;
            }
            out.push(tick_of(book, raw + shift), raw + shift, print)?;
        }
        ControlFlow::Continue(())
    };
    let f = std::fs::File::open(file)?;
    let read = frames::read(f, &mut on_frame);
    let bytes = read?;
    let c = &day.counts;
    tracing::info!(
        file = %file.display(),
        bytes,
        messages = c.messages(),
        bad_frames = c.bad_frames(),
        refused = day.books.malformed.total(),
        stocks = day.books.iter().count(),
        "replayed ITCH file"
    );
    Ok(match out.tx.is_closed() {
        true => ControlFlow::Break(()),
        false => ControlFlow::Continue(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_looped_file_keeps_source_times_increasing_and_books_start_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.itch");
        let universe = crate::sources::universe::default_universe();
        let params = generate::GenParams {
            seed: 9,
            universe: &universe[..3],
            events: 300,
        };
        generate::write_file(&path, &params).unwrap();
        let mut config = ItchConfig {
            files: vec![path],
            speed: 0.0,
            repeat: false,
            date: Some("2026-03-02".into()),
            ..ItchConfig::default()
        };
        // Every pass yields the same ticks: count one pass's.
        let mut once = spawn(&config, Arc::new(ReplayStats::default()));
        let mut pass_len = 0;
        while let Some(batch) = once.recv().await {
            pass_len += batch.len();
        }
        config.repeat = true;
        let stats = Arc::new(ReplayStats::default());
        let mut rx = spawn(&config, stats.clone());
        let mut got: Vec<Replayed> = Vec::new();
        while got.len() < 2 * pass_len {
            got.extend(rx.recv().await.unwrap());
        }
        drop(rx);
        let times: Vec<u64> = got.iter().map(|r| r.src_ts.unwrap()).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "source times go back"
        );
        // 2026-03-02 00:00 in New York (UTC-5), in µs.
        let midnight = 1_772_427_600_000_000u64;
        assert!(times[0] >= midnight + 4 * 3_600_000_000, "{}", times[0]);
        // The second pass starts with empty books again: its first tick of a stock shows
        // what the first pass's first tick of it showed.
        let first = |from: usize| {
            got[from..]
                .iter()
                .find(|r| r.tick.symbol == "AAPL")
                .unwrap()
        };
        let (a, b) = (first(0), first(pass_len));
        assert_eq!(a.tick.depth, b.tick.depth);
        assert_eq!(a.tick.volume, b.tick.volume);
        assert!(b.src_ts > got[pass_len - 1].src_ts);
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_stock_whose_name_is_not_a_symbol_is_booked_but_not_published() {
        use msg::{Body, Header, Message};
        let mut bytes = Vec::new();
        for (locate, stock) in [(1u16, b"BRK.A   "), (2, b"AAPL    ")] {
            let add = Body::AddOrder {
                reference: u64::from(locate),
                side: b'S',
                shares: 100,
                stock,
                price: 1_000_000,
                attribution: None,
            };
            let header = Header {
                locate,
                tracking: 0,
                ts_ns: 36_000_000_000_000,
            };
            encode::encode(&Message { header, body: add }, &mut bytes);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.itch");
        std::fs::write(&path, &bytes).unwrap();
        let config = ItchConfig {
            files: vec![path.clone()],
            speed: 0.0,
            ..ItchConfig::default()
        };
        let mut rx = spawn(&config, Arc::new(ReplayStats::default()));
        let mut symbols = Vec::new();
        while let Some(batch) = rx.recv().await {
            symbols.extend(batch.into_iter().map(|r| r.tick.symbol));
        }
        assert_eq!(symbols, ["AAPL"]);
        let day = read_day(std::fs::File::open(&path).unwrap()).unwrap();
        let brk = day.books.book(1).unwrap();
        assert_eq!((brk.symbol.as_str(), brk.publishable), ("BRK.A", false));
        assert_eq!(
            brk.asks.best_first().collect::<Vec<_>>(),
            [(1_000_000, 100)]
        );
    }

    #[test]
    fn config_checks_files_date_and_offset() {
        let c = ItchConfig::default();
        c.validate(false).unwrap();
        assert_eq!(c.validate(true).unwrap_err().0, "files");
        let bad_date = ItchConfig {
            date: Some("2026-02-30".into()),
            ..ItchConfig::default()
        };
        assert_eq!(bad_date.validate(false).unwrap_err().0, "date");
        let bad_offset = ItchConfig {
            utc_offset_minutes: 900,
            ..ItchConfig::default()
        };
        assert_eq!(
            bad_offset.validate(false).unwrap_err().0,
            "utc_offset_minutes"
        );
        let day = ItchConfig {
            date: Some("1970-01-02".into()),
            utc_offset_minutes: 60,
            ..ItchConfig::default()
        };
        assert_eq!(day.midnight_us(), (86_400 - 3_600) * 1_000_000);
    }
}
