//! `tickmesh-ingest bench`: ingest throughput against a running nats-server.
//!
//! First the tick path alone for a second (simulate, sequence, encode; no NATS), then
//! three phases, each `seconds` long, in one process:
//! 1. baseline: raw async-nats publishes of the same encoded ticks, as fast as one task
//!    can, to the same subjects: the ceiling of this client and server on this machine;
//! 2. ingest at `rate`: the real feed (simulator → sequencer → encode → publish, with the
//!    lease, the `md_last` writer and `md_ref`), nobody subscribed;
//! 3. ingest at `check_rate` with a subscriber on `md.>` that checks every symbol's seq
//!    steps by exactly 1 (no gap, no duplicate, nothing out of order) from the epoch's
//!    first tick, and counts what arrived against what was published.
//!
//! After phases 2 and 3 it reads `md_last` back: each symbol's value must carry the last
//! seq published (the KV writer kept up and flushed). It uses its own buckets
//! (`bench_last`, `bench_ref`, `bench_lease`), never the demo's.
//!
//! The report is a Markdown table followed by one HTML comment, `<!-- tickmesh-ingest
//! bench: {...} -->`, that carries the same figures as JSON ([`BenchReport::json`]):
//! invisible where the Markdown is rendered, read by `cargo xtask bench --scenario ingest`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::codec::{decode_wire, encode_wire};
use tickmesh_core::subject::tick_subject;
use tickmesh_core::{Symbol, Tick};
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, NatsConfig, SourceKind};
use crate::feed::{self, Summary};
use crate::nats;
use crate::sources::sim::{SimParams, Simulator};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub nats: NatsConfig,
    pub rate: u32,
    pub check_rate: u32,
    pub seconds: u64,
    pub shards: u32,
}

/// One ingest phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub target: u32,
    /// CPU time of this whole process during the phase (all threads), if known.
    pub process_cpu_secs: Option<f64>,
    pub summary: Summary,
    /// Symbols whose `md_last` value carries the last seq published, of those published.
    pub kv_current: (usize, usize),
    pub check: Option<Check>,
}

/// What the checking subscriber saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Check {
    pub received: u64,
    /// Seqs skipped (sum of steps above 1, and missing first ticks).
    pub gaps: u64,
    /// Seqs at or below one already received.
    pub out_of_order: u64,
    pub symbols: usize,
    pub slow_consumer_events: u64,
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Ticks simulated, sequenced and encoded in `cpu_secs` of wall time, without NATS.
    pub cpu_ticks: u64,
    pub cpu_secs: f64,
    /// The CPU time that took on its thread (the machine may be shared), if known.
    pub cpu_thread_secs: Option<f64>,
    pub baseline_msgs: u64,
    pub baseline_secs: f64,
    pub payload_bytes: usize,
    pub publish: Phase,
    pub checked: Phase,
}

fn bench_config(opts: &BenchOptions, rate: u32) -> IngestConfig {
    let mut c = IngestConfig {
        nats: opts.nats.clone(),
        shards: opts.shards,
        source: SourceKind::Sim,
        ..IngestConfig::default()
    };
    c.sim.ticks_per_sec = rate;
    c.sim.session.open_burst = 1.0;
    c.kv.bucket = "bench_last".into();
    c.refdata.bucket = "bench_ref".into();
    c.lease.bucket = "bench_lease".into();
    c.lease.name = "bench".into();
    c
}

/// Encoded ticks and their subjects, as the simulator makes them.
fn sample(opts: &BenchOptions) -> Vec<(String, Bytes)> {
    let mut sim = simulator(opts);
    (0..8192u64)
        .map(|n| {
            let (_, mut tick) = sim.next_tick();
            (tick.seq, tick.epoch, tick.ts) = (n + 1, 1, tickmesh_core::tick::now_us());
            let symbol = Symbol::parse(&tick.symbol).expect("simulated symbols are valid");
            (
                tick_subject(&symbol, opts.shards),
                Bytes::from(encode_wire(&tick)),
            )
        })
        .collect()
}

fn simulator(opts: &BenchOptions) -> Simulator {
    let config = bench_config(opts, opts.rate);
    Simulator::new(&SimParams {
        seed: 1,
        ticks_per_sec: 1e6,
        universe: &[],
        session: &config.sim.session,
        options: &config.sim.options,
        depth: config.sim.depth,
        today: tickmesh_core::date::Date::from_unix_us(tickmesh_core::tick::now_us()),
    })
}

/// CPU time of this process so far, all threads (Linux, 10 ms resolution), in seconds.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: utime is the 12th, stime
    // the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU time of the calling thread so far (Linux), in seconds.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Simulate, sequence and encode for about a second: the tick path's own cost.
fn tick_path_alone(opts: &BenchOptions) -> (u64, f64, Option<f64>) {
    let mut sim = simulator(opts);
    let mut seq = crate::sequencer::Sequencer::new(tickmesh_core::tick::now_us(), 0);
    let mut encoder = crate::wire::Encoder::new();
    let mut tick = Tick::default();
    let mut bytes = 0usize;
    let start = Instant::now();
    let cpu_start = thread_cpu_secs();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..4096 {
            let i = sim.next_tick_into(&mut tick);
            seq.grow(sim.len());
            // Simulated ticks carry no source time, so none is stale.
            let _ = seq.stamp(i, &mut tick, n);
            bytes += encoder.encode(&tick).len();
            n += 1;
        }
    }
    tracing::debug!(bytes, "tick path alone");
    let cpu = thread_cpu_secs()
        .zip(cpu_start)
        .map(|(end, begin)| end - begin);
    (n, start.elapsed().as_secs_f64(), cpu)
}

async fn baseline(opts: &BenchOptions) -> anyhow::Result<(u64, f64, usize)> {
    let client = nats::connect(&opts.nats).await?;
    let ticks = sample(opts);
    let bytes = ticks.iter().map(|(_, b)| b.len()).sum::<usize>() / ticks.len();
    let start = Instant::now();
    let n = client
        .publish_until(&ticks, start + Duration::from_secs(opts.seconds))
        .await?;
    Ok((n, start.elapsed().as_secs_f64(), bytes))
}

/// The seq of a wire tick, read from its first two map entries (`symbol`, `seq`), which
/// is where `encode_wire` puts them.
fn peek_seq(b: &[u8]) -> Option<u64> {
    let mut at = match *b.first()? {
        0x80..=0x8f => 1,
        0xde => 3,
        _ => return None,
    };
    let key = |at: &mut usize, k: &[u8]| -> Option<()> {
        let len = usize::from(*b.get(*at)? & 0x1f);
        (b.get(*at)? & 0xe0 == 0xa0 && b.get(*at + 1..*at + 1 + len)? == k).then_some(())?;
        *at += 1 + len;
        Some(())
    };
    key(&mut at, b"symbol")?;
    at += match *b.get(at)? {
        x @ 0xa0..=0xbf => 1 + usize::from(x & 0x1f),
        0xd9 => 2 + usize::from(*b.get(at + 1)?),
        _ => return None,
    };
    key(&mut at, b"seq")?;
    let int = |n: usize| -> Option<u64> {
        let bytes = b.get(at + 1..at + 1 + n)?;
        Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    match *b.get(at)? {
        x @ 0x00..=0x7f => Some(u64::from(x)),
        0xcc => int(1),
        0xcd => int(2),
        0xce => int(4),
        0xcf => int(8),
        _ => None,
    }
}

struct Checker {
    /// Per subject: the last seq seen.
    last: HashMap<Box<str>, u64>,
    check: Check,
}

impl Checker {
    fn see(&mut self, subject: &str, payload: &[u8]) {
        self.check.received += 1;
        let seq = match peek_seq(payload) {
            Some(seq) => seq,
            None => match decode_wire(payload) {
                Ok(t) => t.seq,
                Err(_) => return,
            },
        };
        match self.last.get_mut(subject) {
            Some(last) => {
                if seq <= *last {
                    self.check.out_of_order += 1;
                } else {
                    self.check.gaps += seq - *last - 1;
                    *last = seq;
                }
            }
            None => {
                // The first tick of the epoch is epoch + 1.
                if let Ok(Tick { epoch, .. }) = decode_wire(payload) {
                    self.check.gaps += seq.saturating_sub(epoch + 1);
                }
                self.last.insert(subject.into(), seq);
            }
        }
    }
}

async fn ingest_phase(opts: &BenchOptions, rate: u32, check: bool) -> anyhow::Result<Phase> {
    let config = bench_config(opts, rate);
    let stop = CancellationToken::new();
    let subscriber = if check {
        let tap = nats::Tap::connect(&opts.nats, "tickmesh-bench-check".into(), 1 << 20)
            .await
            .context("connecting the checking subscriber")?;
        let mut sub = tap.subscribe("md.>".into()).await?;
        tap.flush().await?;
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            let mut checker = Checker {
                last: HashMap::new(),
                check: Check::default(),
            };
            loop {
                let msg = if stop.is_cancelled() {
                    // The feed stopped: drain until the stream goes quiet.
                    let quiet = Duration::from_millis(500);
                    tokio::time::timeout(quiet, sub.next()).await.ok().flatten()
                } else {
                    tokio::select! {
                        msg = sub.next() => msg,
                        _ = stop.cancelled() => continue,
                    }
                };
                let Some(msg) = msg else { break };
                checker.see(msg.subject(), msg.payload());
            }
            checker.check.symbols = checker.last.len();
            checker.check.slow_consumer_events = tap.slow_consumer_events();
            checker.check
        }))
    } else {
        None
    };
    let seconds = Duration::from_secs(opts.seconds);
    let cpu_before = process_cpu_secs();
    let summary = feed::run_with_summary(config.clone(), tokio::time::sleep(seconds)).await?;
    let process_cpu_secs = process_cpu_secs().zip(cpu_before).map(|(a, b)| a - b);
    stop.cancel();
    let check = match subscriber {
        Some(task) => Some(task.await.context("checking subscriber")?),
        None => None,
    };
    let kv_current = kv_current(&config, &summary).await?;
    Ok(Phase {
        target: rate,
        process_cpu_secs,
        summary,
        kv_current,
        check,
    })
}

/// Symbols whose `md_last` value carries the last seq published.
async fn kv_current(config: &IngestConfig, summary: &Summary) -> anyhow::Result<(usize, usize)> {
    let store = nats::connect(&config.nats)
        .await?
        .bucket(&config.kv.bucket)
        .await?;
    let published: Vec<(String, u64)> = summary
        .last_seqs
        .iter()
        .filter_map(|(s, seq)| seq.map(|q| (s.clone(), q)))
        .collect();
    let store = &store;
    let current = futures_util::stream::iter(
        published
            .iter()
            .map(|(s, want)| async move { nats::stored_seq(store, s).await == Some(*want) }),
    )
    .buffer_unordered(64)
    .filter(|ok| std::future::ready(*ok))
    .count()
    .await;
    Ok((current, published.len()))
}

/// Runs the three phases.
pub async fn bench(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    tracing::info!("tick path alone (simulate, sequence, encode)");
    let (cpu_ticks, cpu_secs, cpu_thread_secs) = tick_path_alone(opts);
    tracing::info!(seconds = opts.seconds, "phase 1: raw async-nats publish");
    let (baseline_msgs, baseline_secs, payload_bytes) = baseline(opts).await?;
    tracing::info!(rate = opts.rate, "phase 2: ingest, no subscriber");
    let publish = ingest_phase(opts, opts.rate, false).await?;
    tracing::info!(
        rate = opts.check_rate,
        "phase 3: ingest with a gap-checking subscriber"
    );
    let checked = ingest_phase(opts, opts.check_rate, true).await?;
    Ok(BenchReport {
        cpu_ticks,
        cpu_secs,
        cpu_thread_secs,
        baseline_msgs,
        baseline_secs,
        payload_bytes,
        publish,
        checked,
    })
}

/// Starts the JSON comment that ends [`BenchReport::markdown`].
pub const JSON_MARK: &str = "<!-- tickmesh-ingest bench: ";

impl Phase {
    fn json(&self) -> serde_json::Value {
        let s = &self.summary;
        serde_json::json!({
            "target_ticks_per_s": self.target,
            "ticks_in": s.counts.ticks_in,
            "ticks_out": s.counts.ticks_out,
            "stale": s.counts.stale,
            "publish_secs": s.publish_secs,
            "ticks_per_s": s.counts.ticks_out as f64 / s.publish_secs.max(1e-9),
            "process_cpu_secs": self.process_cpu_secs,
            "kv_writes": s.kv_writes,
            "kv_errors": s.kv_errors,
            "kv_mean_lag_us": s.kv_mean_lag_us,
            "kv_max_lag_us": s.kv_max_lag_us,
            "kv_current": self.kv_current.0,
            "kv_symbols": self.kv_current.1,
            "check": self.check.map(|c| serde_json::json!({
                "received": c.received,
                "gaps": c.gaps,
                "out_of_order": c.out_of_order,
                "symbols": c.symbols,
                "slow_consumer_events": c.slow_consumer_events,
            })),
        })
    }
}

impl BenchReport {
    /// The figures as JSON: what [`BenchReport::markdown`] shows, unrounded.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tick_path": {
                "ticks": self.cpu_ticks,
                "secs": self.cpu_secs,
                "thread_cpu_secs": self.cpu_thread_secs,
                "ticks_per_s": self.cpu_ticks as f64 / self.cpu_secs.max(1e-9),
            },
            "baseline": {
                "msgs": self.baseline_msgs,
                "secs": self.baseline_secs,
                "msgs_per_s": self.baseline_msgs as f64 / self.baseline_secs.max(1e-9),
                "payload_bytes": self.payload_bytes,
            },
            "publish": self.publish.json(),
            "checked": self.checked.json(),
        })
    }

    /// The report as Markdown: a table, then the figures as JSON in an HTML comment.
    pub fn markdown(&self) -> String {
        let rate = |n: u64, s: f64| n as f64 / s.max(1e-9);
        let mut out = String::new();
        out += "| measure | value |\n|---|---|\n";
        let per_cpu = self
            .cpu_thread_secs
            .map(|c| {
                format!(
                    " ({:.0} per CPU-second on its thread)",
                    rate(self.cpu_ticks, c)
                )
            })
            .unwrap_or_default();
        out += &format!(
            "| tick path alone (simulate, sequence, encode; one thread, no NATS) | {:.0} ticks/s{per_cpu} |\n",
            rate(self.cpu_ticks, self.cpu_secs)
        );
        out += &format!(
            "| raw async-nats publish (same payloads, one task) | {:.0} msgs/s ({} B average) |\n",
            rate(self.baseline_msgs, self.baseline_secs),
            self.payload_bytes
        );
        for (name, p) in [("no subscriber", &self.publish), ("checked", &self.checked)] {
            let s = &p.summary;
            let cpu = p
                .process_cpu_secs
                .map(|c| {
                    format!(
                        "; process CPU {c:.1} s, {:.2} µs per tick",
                        c * 1e6 / s.counts.ticks_out.max(1) as f64
                    )
                })
                .unwrap_or_default();
            out += &format!(
                "| ingest, target {} ticks/s, {name} | {:.0} ticks/s published ({} ticks in {:.1} s; {} stale{cpu}) |\n",
                p.target,
                rate(s.counts.ticks_out, s.publish_secs),
                s.counts.ticks_out,
                s.publish_secs,
                s.counts.stale
            );
            out += &format!(
                "| `md_last` writer at {} ticks/s | {} puts, {} errors, lag mean {:.1} ms, max {:.1} ms; final values current for {}/{} symbols |\n",
                p.target,
                s.kv_writes,
                s.kv_errors,
                s.kv_mean_lag_us as f64 / 1e3,
                s.kv_max_lag_us as f64 / 1e3,
                p.kv_current.0,
                p.kv_current.1
            );
            if let Some(c) = &p.check {
                out += &format!(
                    "| subscriber at {} ticks/s | received {} of {} over {} symbols; seq gaps {}, out of order {}, slow-consumer events {} |\n",
                    p.target,
                    c.received,
                    s.counts.ticks_out,
                    c.symbols,
                    c.gaps,
                    c.out_of_order,
                    c.slow_consumer_events
                );
            }
        }
        out += &format!("\n{JSON_MARK}{} -->\n", self.json());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_seq_reads_what_encode_wire_writes() {
        for (symbol, seq) in [
            ("A", 5u64),
            ("AAPL", 200),
            ("SPY", 70_000),
            ("AAPL261218C00150000", 1_700_000_000_000_001),
            (&"X".repeat(40), 1 << 40),
        ] {
            let t = Tick {
                symbol: symbol.to_string(),
                seq,
                last: Some(1.0),
                ..Tick::default()
            };
            assert_eq!(peek_seq(&encode_wire(&t)), Some(seq), "{symbol}");
        }
        assert_eq!(peek_seq(b""), None);
        assert_eq!(peek_seq(b"\x81\xa3seq\x05"), None);
    }

    #[test]
    fn the_markdown_ends_with_its_figures_as_json() {
        let report = BenchReport {
            cpu_ticks: 4_000_000,
            cpu_secs: 1.0,
            baseline_msgs: 12_000_000,
            baseline_secs: 10.0,
            payload_bytes: 336,
            checked: Phase {
                target: 500_000,
                check: Some(Check {
                    received: 7,
                    gaps: 1,
                    ..Check::default()
                }),
                ..Phase::default()
            },
            ..BenchReport::default()
        };
        let text = report.markdown();
        let last = text.lines().last().unwrap();
        let body = last
            .strip_prefix(JSON_MARK)
            .and_then(|l| l.strip_suffix(" -->"))
            .expect("the last line is the JSON comment");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["baseline"]["msgs_per_s"], 1_200_000.0);
        assert_eq!(v["checked"]["target_ticks_per_s"], 500_000);
        assert_eq!(v["checked"]["check"]["gaps"], 1);
        assert!(v["publish"]["check"].is_null());
    }

    #[test]
    fn the_checker_counts_gaps_and_reordering() {
        let mut c = Checker {
            last: HashMap::new(),
            check: Check::default(),
        };
        let subject = "md.1.A";
        let tick = |seq| {
            encode_wire(&Tick {
                symbol: "A".into(),
                epoch: 100,
                seq,
                ..Tick::default()
            })
        };
        for seq in [101, 102, 105, 104, 106, 106] {
            c.see(subject, &tick(seq));
        }
        assert_eq!(
            (c.check.received, c.check.gaps, c.check.out_of_order),
            (6, 2, 2)
        );
        c.see("md.2.B", &tick(103));
        assert_eq!(
            c.check.gaps, 4,
            "a first tick above epoch + 1 means missed ticks"
        );
    }
}
