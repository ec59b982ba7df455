//! `tickmesh-ingest record`: captures the live tick stream (`md.>` by default) and its
//! prints (`tr.>`) into a file that `replay` reads back: NDJSON or CSV by the file name,
//! gzipped when it ends in `.gz`. Ticks are written as they arrived, whole (`seq`,
//! `epoch`, `ts` included), each print on its tick's record (see [`crate::tickfile`]).
//!
//! Ticks and prints come on two subscriptions, each in order, but not in order with each
//! other: a print may be read just before or just after its tick. [`Pairing`] matches
//! them by symbol and seq (a print's seq is its tick's), holding each tick back for up to
//! [`HOLD`] for its print; a print whose tick was not captured (dropped, or outside the
//! subject filter) is counted as `unpaired` and not written.
//!
//! Decoding happens on the subscription task; a writer thread does the file I/O behind a
//! bounded channel ([`CHANNEL_BATCHES`] batches). If the disk cannot keep up, the channel
//! fills, the subscription's buffer fills, and NATS drops messages for this slow consumer
//! (reported as `dropped`); the stream is never slowed down for anyone else.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::FutureExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::trade::Trade;
use tokio::sync::mpsc;

use crate::config::NatsConfig;
use crate::nats;
use crate::tickfile::{self, FileFormat, FileTrade, Record};

/// Batches in flight to the writer thread.
pub const CHANNEL_BATCHES: usize = 64;
/// Messages a subscription buffers before NATS drops them for this slow consumer.
const BUFFERED: usize = 1 << 16;
const BATCH: usize = 256;
/// How long a tick waits for its print before it is written without one.
pub const HOLD: Duration = Duration::from_millis(250);
/// Most ticks held at once: past it the oldest is written without waiting longer.
const MAX_HELD: usize = 1 << 16;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub out: PathBuf,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many ticks.
    pub max_ticks: Option<u64>,
    /// Subject filter. Default `md.>`.
    pub subject: String,
    /// Also capture the prints of the ticks captured, on the subject that `subject` names
    /// with `tr.` for `md.` (`md.>` → `tr.>`). Default true.
    pub trades: bool,
    pub format: FileFormat,
}

/// What a recording did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub ticks: u64,
    /// Prints written, each with its tick.
    pub trades: u64,
    /// Messages that were not valid ticks or prints.
    pub invalid: u64,
    /// Prints not written: their tick was not captured, or it came later than [`HOLD`].
    pub unpaired: u64,
    /// Messages NATS dropped because this recorder fell behind.
    pub dropped: u64,
}

/// The subject of the prints of the ticks on `subject`: `tr.` for its leading `md.`.
pub fn trade_subject(subject: &str) -> Option<String> {
    subject.strip_prefix("md.").map(|rest| format!("tr.{rest}"))
}

/// Records until `shutdown`, `duration` or `max_ticks`, whichever comes first.
pub async fn record(
    nats_config: &NatsConfig,
    opts: &RecordOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RecordSummary> {
    let format = opts
        .format
        .resolve(&opts.out)
        .map_err(|e| anyhow::anyhow!(e))?;
    let gzip = opts.out.to_string_lossy().ends_with(".gz");
    let file =
        File::create(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let (tx, rx) = mpsc::channel::<Vec<Record>>(CHANNEL_BATCHES);
    let writer = std::thread::Builder::new()
        .name("tickmesh-record".into())
        .spawn(move || write_file(file, format, gzip, rx))
        .context("spawning the writer thread")?;

    // The service's TLS and credentials, with this recorder's own name and buffers.
    let tap = nats::Tap::connect(
        nats_config,
        format!("{}-record", nats_config.name),
        BUFFERED,
    )
    .await?;
    let mut sub = tap
        .subscribe(opts.subject.clone())
        .await
        .with_context(|| format!("subscribing to {}", opts.subject))?;
    let trades_subject = match (opts.trades, trade_subject(&opts.subject)) {
        (true, None) => {
            tracing::warn!(subject = %opts.subject, "the subject does not start with md.: prints are not recorded");
            None
        }
        (trades, subject) => subject.filter(|_| trades),
    };
    let mut prints = match &trades_subject {
        Some(subject) => Some(
            tap.subscribe(subject.clone())
                .await
                .with_context(|| format!("subscribing to {subject}"))?,
        ),
        None => None,
    };
    tap.flush().await?;
    tracing::info!(subject = %opts.subject, trades = ?trades_subject, out = %opts.out.display(), "recording");

    let mut summary = RecordSummary::default();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, until);
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let mut pairing = Pairing::default();
    let mut batch = Vec::with_capacity(BATCH);
    let limit = opts.max_ticks.unwrap_or(u64::MAX);
    let next_print = async |prints: &mut Option<nats::Subscription>| match prints {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    };
    while summary.ticks < limit {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut until => break,
            _ = flush.tick() => {
                summary.unpaired += pairing.release(Instant::now(), HOLD, &mut batch);
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(full).await.context("the writer thread stopped")?;
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                match decode_wire(msg.payload()) {
                    Ok(tick) => {
                        summary.ticks += 1;
                        pairing.tick(tick, Instant::now());
                        if pairing.held() > MAX_HELD {
                            summary.unpaired += pairing.release(Instant::now(), HOLD, &mut batch);
                        }
                        if batch.len() >= BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            tx.send(full).await.context("the writer thread stopped")?;
                        }
                    }
                    Err(e) => {
                        summary.invalid += 1;
                        tracing::warn!(subject = %msg.subject(), error = %e, "not a tick; skipped");
                    }
                }
            }
            msg = next_print(&mut prints) => {
                let Some(msg) = msg else {
                    prints = None;
                    continue;
                };
                on_print(&mut pairing, &msg, &mut summary);
            }
        }
    }
    drop(sub);
    // The prints already received of the last ticks read (at most a buffer's worth: the
    // stream goes on meanwhile).
    if let Some(sub) = &mut prints {
        for _ in 0..BUFFERED {
            let Some(Some(msg)) = sub.next().now_or_never() else {
                break;
            };
            on_print(&mut pairing, &msg, &mut summary);
        }
    }
    drop(prints);
    summary.unpaired += pairing.finish(&mut batch);
    summary.trades = pairing.paired;
    if !batch.is_empty() {
        tx.send(batch).await.context("the writer thread stopped")?;
    }
    drop(tx);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("joining the writer thread")?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
        .with_context(|| format!("writing {}", opts.out.display()))?;
    summary.dropped = tap.slow_consumer_events();
    tracing::info!(
        ticks = summary.ticks,
        trades = summary.trades,
        invalid = summary.invalid,
        unpaired = summary.unpaired,
        "recording done"
    );
    Ok(summary)
}

/// Decodes one message of the prints' subscription and hands it to `pairing`.
fn on_print(pairing: &mut Pairing, msg: &nats::Message, summary: &mut RecordSummary) {
    match tickmesh_core::trade::decode_wire(msg.payload()) {
        Ok(trade) => {
            if let Err(e) = pairing.trade(&trade, Instant::now()) {
                summary.invalid += 1;
                tracing::warn!(subject = %msg.subject(), error = %e, "a print a file cannot hold; skipped");
            }
        }
        Err(e) => {
            summary.invalid += 1;
            tracing::warn!(subject = %msg.subject(), error = %e, "not a print; skipped");
        }
    }
}

/// A print's tick: its symbol and seq.
type Key = (String, u64);

/// Ticks held back for their prints, in arrival order, and prints that came before their
/// tick. Bounded: a tick is held at most [`HOLD`] (or until [`MAX_HELD`] are), a print
/// waits at most as long.
#[derive(Debug, Default)]
pub struct Pairing {
    /// Ticks not yet written, oldest first, with when each came.
    held: VecDeque<(Instant, Record)>,
    /// The number (counting every tick ever held, from 0) of `held`'s front.
    front: u64,
    /// The number of the held tick of each key.
    by_key: HashMap<Key, u64>,
    /// Prints whose tick has not come yet, with when each came.
    early: HashMap<Key, (Instant, FileTrade)>,
    /// Prints matched with their tick.
    pub paired: u64,
}

impl Pairing {
    /// Ticks held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A tick, received at `now`.
    pub fn tick(&mut self, tick: Tick, now: Instant) {
        let key = (tick.symbol.clone(), tick.seq);
        let trade = self.early.remove(&key).map(|(_, t)| t);
        self.paired += u64::from(trade.is_some());
        if trade.is_none() {
            self.by_key.insert(key, self.front + self.held.len() as u64);
        }
        self.held.push_back((now, Record { tick, trade }));
    }

    /// A print, received at `now`. Refused when a file cannot hold it
    /// ([`tickfile::check_trade`]), so that whatever is written reads back.
    pub fn trade(&mut self, t: &Trade, now: Instant) -> Result<(), String> {
        let trade = FileTrade::from(t);
        tickfile::check_trade(&trade)?;
        let key = (t.symbol.clone(), t.seq);
        let held = self
            .by_key
            .remove(&key)
            .and_then(|n| usize::try_from(n.checked_sub(self.front)?).ok())
            .and_then(|at| self.held.get_mut(at));
        match held {
            Some((_, r)) => {
                r.trade = Some(trade);
                self.paired += 1;
            }
            None => {
                self.early.insert(key, (now, trade));
            }
        }
        Ok(())
    }

    /// Moves to `out`, oldest first, the ticks that are done: held since `hold` before
    /// `now`, or printed, or past [`MAX_HELD`], as long as none older is still waiting.
    /// Returns the prints dropped for having waited `hold` without their tick.
    pub fn release(&mut self, now: Instant, hold: Duration, out: &mut Vec<Record>) -> u64 {
        while let Some((at, r)) = self.held.front() {
            let done = r.trade.is_some()
                || now.saturating_duration_since(*at) >= hold
                || self.held.len() > MAX_HELD;
            if !done {
                break;
            }
            self.pop(out);
        }
        let before = self.early.len();
        self.early
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < hold);
        (before - self.early.len()) as u64
    }

    /// Moves every held tick to `out`; returns the prints that never found their tick.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> u64 {
        while !self.held.is_empty() {
            self.pop(out);
        }
        let unpaired = self.early.len() as u64;
        self.early.clear();
        unpaired
    }

    fn pop(&mut self, out: &mut Vec<Record>) {
        if let Some((_, r)) = self.held.pop_front() {
            if r.trade.is_none() {
                let key = (r.tick.symbol.clone(), r.tick.seq);
                // Unless a later tick of the same key took its place.
                if self.by_key.get(&key) == Some(&self.front) {
                    self.by_key.remove(&key);
                }
            }
            self.front += 1;
            out.push(r);
        }
    }
}

fn write_file(
    file: File,
    format: FileFormat,
    gzip: bool,
    rx: mpsc::Receiver<Vec<Record>>,
) -> std::io::Result<()> {
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        write_batches(&mut gz, format, rx)?;
        gz.finish()?.sync_all()
    } else {
        let mut file = file;
        write_batches(&mut file, format, rx)?;
        file.sync_all()
    }
}

fn write_batches(
    out: &mut impl Write,
    format: FileFormat,
    mut rx: mpsc::Receiver<Vec<Record>>,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(256 * 1024, out);
    if format == FileFormat::Csv {
        tickfile::write_csv_header(&mut w)?;
    }
    while let Some(batch) = rx.blocking_recv() {
        for record in &batch {
            match format {
                FileFormat::Csv => tickfile::write_csv(&mut w, record)?,
                _ => tickfile::write_ndjson(&mut w, record)?,
            }
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Just enough of a NATS server for a client to connect and subscribe: `INFO`, then
    /// `PONG` to every `PING`. Returns its URL and whether a client sent `CONNECT`.
    async fn fake_server() -> (String, tokio::sync::oneshot::Receiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connected, seen) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let info = format!(
                "INFO {{\"server_id\":\"fake\",\"server_name\":\"fake\",\"version\":\"2.10.0\",\
                 \"go\":\"go1\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\
                 \"max_payload\":1048576,\"proto\":1}}\r\n"
            );
            write.write_all(info.as_bytes()).await.unwrap();
            let mut connected = Some(connected);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("CONNECT")
                    && let Some(tx) = connected.take()
                {
                    let _ = tx.send(());
                }
                if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                    break;
                }
            }
        });
        (format!("nats://127.0.0.1:{port}"), seen)
    }

    fn tick(symbol: &str, seq: u64) -> Tick {
        Tick {
            symbol: symbol.into(),
            seq,
            last: Some(1.0),
            ..Tick::default()
        }
    }

    fn print(symbol: &str, seq: u64, size: u64) -> Trade {
        Trade {
            symbol: symbol.into(),
            seq,
            trade_id: seq,
            price: 1.0,
            size,
            ts: 5,
            src_ts: None,
            conditions: vec!["cross".into()],
        }
    }

    /// What a record's print was: its size, or none.
    fn sizes(records: &[Record]) -> Vec<(String, u64, Option<u64>)> {
        let size = |r: &Record| r.trade.as_ref().map(|t| t.size);
        records
            .iter()
            .map(|r| (r.tick.symbol.clone(), r.tick.seq, size(r)))
            .collect()
    }

    /// Prints are matched with their ticks whichever comes first; ticks are written in
    /// the order they came, each once; a print without its tick is dropped and counted.
    #[test]
    fn prints_find_their_ticks_in_either_order_and_ticks_keep_theirs() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Pairing::default();
        let mut out = Vec::new();
        p.trade(&print("MSFT", 7, 30), ms(0)).unwrap();
        p.tick(tick("AAPL", 1), ms(0));
        p.tick(tick("AAPL", 2), ms(1));
        p.tick(tick("MSFT", 7), ms(2));
        p.trade(&print("AAPL", 2, 20), ms(3)).unwrap();
        p.trade(&print("SPY", 9, 90), ms(3)).unwrap();
        // AAPL 1 may still print: nothing behind it goes first.
        assert_eq!(p.release(ms(100), HOLD, &mut out), 0);
        assert!(out.is_empty());
        p.trade(&print("AAPL", 1, 10), ms(120)).unwrap();
        assert_eq!(p.release(ms(120), HOLD, &mut out), 0);
        assert_eq!(
            sizes(&out),
            [
                ("AAPL".into(), 1, Some(10)),
                ("AAPL".into(), 2, Some(20)),
                ("MSFT".into(), 7, Some(30)),
            ]
        );
        // A tick that waited its time goes without a print; one that comes after it is
        // dropped with the print of no tick (SPY 9).
        p.tick(tick("AAPL", 3), ms(200));
        p.tick(tick("AAPL", 4), ms(300));
        assert_eq!(p.release(ms(460), HOLD, &mut out), 1, "SPY 9");
        p.trade(&print("AAPL", 3, 30), ms(470)).unwrap();
        assert_eq!(p.finish(&mut out), 1, "AAPL 3, late");
        assert_eq!(
            sizes(&out[3..]),
            [("AAPL".into(), 3, None), ("AAPL".into(), 4, None)]
        );
        assert_eq!((p.paired, p.held()), (3, 0));
        // A print a file could not hold is refused, not matched.
        p.tick(tick("AAPL", 5), ms(500));
        let mut bad = print("AAPL", 5, 50);
        bad.conditions = vec!["a,b".into()];
        assert!(p.trade(&bad, ms(500)).is_err());
        out.clear();
        assert_eq!(p.finish(&mut out), 0);
        assert_eq!(sizes(&out), [("AAPL".into(), 5, None)]);
    }

    #[test]
    fn the_prints_subject_follows_the_ticks_subject() {
        assert_eq!(trade_subject("md.>").as_deref(), Some("tr.>"));
        assert_eq!(trade_subject("md.3.AAPL").as_deref(), Some("tr.3.AAPL"));
        assert_eq!(trade_subject(">"), None);
    }

    #[tokio::test]
    async fn connects_to_a_list_of_urls() {
        // Nothing listens on the first URL: the client moves on to the second.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("nats://{}", closed.local_addr().unwrap());
        drop(closed);
        let (live, connected) = fake_server().await;
        let nats = NatsConfig {
            urls: vec![dead, live],
            ..NatsConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = RecordOptions {
            out: dir.path().join("ticks.ndjson"),
            duration: Some(Duration::from_millis(200)),
            max_ticks: None,
            subject: "md.>".into(),
            trades: true,
            format: FileFormat::Auto,
        };
        let summary = tokio::time::timeout(
            Duration::from_secs(10),
            record(&nats, &opts, std::future::pending()),
        )
        .await
        .expect("record returns after its duration")
        .expect("record connects through the second URL");
        assert_eq!(summary, RecordSummary::default());
        connected.await.expect("the client sent CONNECT");
    }
}
