//! The `market-open` scenario: at the open, ingest's tick rate steps up 10× while 10,000
//! clients (re)connect within 5 s; clients already connected keep streaming. Whether every
//! reconnecting client holds its snapshots within 1 s, and how much the latency of the
//! clients already connected grows. Its report is a section of its own in
//! docs/benchmarks.md.
//!
//! Each system gets a mesh of its own, its ingest starting [`PRE_OPEN_S`] seconds before
//! the open (`sim.session.start`, a pre-open at the base rate). On it, in turn:
//! - `before`: the steady population (latency workload: one symbol each, every tick)
//!   measured in the pre-open;
//! - `during`: the same population, connected anew while still in the pre-open, its window
//!   starting at the open;
//! - `open`: started when ingest's ticks published show the step, the reconnecting
//!   clients, each on 20 of the symbols (`ltp`, 1 s conflation), paced over 5 s.
//!
//! The steady population is measured by two runs, one after the other, because one run
//! has one window; both are the same clients on the same symbols, and the `during` ones
//! are connected and streaming before the open comes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::report::{ms, num, other, ratio, shorten_symbols, yes};
use super::results::{Run, Stored};
use super::runner::{
    Env, Load, Mesh, MeshSpec, OpenStep, args, fix_repeat, loadgen, metric, start_mesh, universe,
};
use super::{latency, storm};

/// Seconds from ingest's start to the open: the mesh's start, the `before` run and the
/// `during` run's connects all fit in it (about 18 s on the bench machine).
const PRE_OPEN_S: u32 = 25;
const FACTOR: f64 = 10.0;
const BASE_TICKS_PER_S: u32 = 1_000;
/// The reconnecting clients' deadline for their snapshots.
const DEADLINE_MS: u64 = 1_000;
/// Over how long the reconnecting clients connect.
const CONNECT_S: u64 = 5;
/// The steady clients' windows, before and from the open.
const BEFORE_S: u64 = 8;
const DURING_S: u64 = 10;
const TICKS_OUT: &str = "tickmesh_ingest_ticks_out_total";

#[derive(Debug, Serialize, Deserialize)]
pub struct MarketOpen {
    pub ticks_per_sec_before: u32,
    pub factor: f64,
    pub symbols: usize,
    pub steady_conns: u64,
    pub reconnecting_conns: u64,
    pub connect_s: u64,
    pub deadline_ms: u64,
    pub systems: Vec<System>,
}

/// One system's runs and the tick rates its edge saw.
#[derive(Debug, Serialize, Deserialize)]
pub struct System {
    pub label: String,
    /// Ticks/s ingest published over the `before` run, and over the 5 s from the open.
    pub ticks_out_before: f64,
    pub ticks_out_open: f64,
    /// How long after the `during` window started the step was seen, s (negative: before).
    pub open_after_window_start_s: f64,
    pub before: Run,
    pub during: Run,
    pub open: Run,
}

/// Ingest's ticks published so far, and when read.
fn ticks_out(mesh: &Mesh) -> anyhow::Result<(Instant, f64)> {
    Ok((Instant::now(), metric(mesh.ingest_port, TICKS_OUT)?))
}

fn rate(a: (Instant, f64), b: (Instant, f64)) -> f64 {
    (b.1 - a.1) / b.0.duration_since(a.0).as_secs_f64().max(1e-3)
}

/// Waits until ingest publishes at more than a third of the stepped-up rate over 250 ms;
/// returns when that window started.
fn wait_open(mesh: &Mesh, until: Instant) -> anyhow::Result<Instant> {
    let threshold = f64::from(BASE_TICKS_PER_S) * FACTOR / 3.0;
    let mut last = ticks_out(mesh)?;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        let now = ticks_out(mesh)?;
        if rate(last, now) > threshold {
            return Ok(last.0);
        }
        last = now;
    }
    bail!("ingest made no step up to {threshold:.0} ticks/s by the time the open was due")
}

/// The start of process `pid`, from its start time in /proc (clock ticks since boot).
fn started_at(pid: u32) -> anyhow::Result<Instant> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let start_ticks: f64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .context("/proc/<pid>/stat has no start time")?
        .parse()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .context("/proc/uptime is empty")?
        .parse()?;
    let ago = (uptime - start_ticks / 100.0).max(0.0);
    Ok(Instant::now() - Duration::from_secs_f64(ago))
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a load generator thread panicked"))?
}

pub fn run(env: &Env) -> anyhow::Result<MarketOpen> {
    let symbols = universe(100);
    // Every tick of one symbol each: 200 clients take 2k updates/s before the open and 20k
    // from it, where this box's latency curve is still flat (the 1,000 of the latency
    // scenario would take 100k/s from the open, which saturates it alone).
    let steady = env.pick(200u64, 50);
    let reconnecting = env.pick(10_000u64, 2_000);
    let steady_args = |net: &str, warmup: f64, duration: u64| {
        let mut a = latency::load(steady, &symbols, &duration.to_string(), net);
        a.extend(args(&[
            "--settle-s",
            "1",
            "--warmup-s",
            &format!("{warmup:.2}"),
            "--no-progress",
        ]));
        fix_repeat(a)
    };
    let open_args = |net: &str| {
        let mut a = storm::reconnecting(
            reconnecting,
            &symbols,
            reconnecting / CONNECT_S,
            net,
            3,
            DEADLINE_MS,
        );
        a.push("--no-progress".into());
        a
    };
    let mut systems = Vec::new();
    for (label, nats, nets) in [
        ("tickmesh", false, ["81", "82", "83"]),
        ("nats", true, ["84", "85", "86"]),
    ] {
        let name = format!("market-open-{label}");
        let spec = MeshSpec {
            open: Some(OpenStep {
                pre_open_s: PRE_OPEN_S,
                factor: FACTOR,
            }),
            ..MeshSpec::new(&name, &symbols, BASE_TICKS_PER_S).paced()
        };
        let mesh = start_mesh(env, &spec)?;
        let open_due = started_at(mesh.ingest_pid)? + Duration::from_secs(PRE_OPEN_S.into());
        let labels = ["before", "during", "open"].map(|what| format!("{label}-{what}"));
        let load = |k: usize, args: Vec<String>| Load {
            label: &labels[k],
            nats,
            args,
        };
        let at_before = ticks_out(&mesh)?;
        let before = loadgen(
            env,
            &mesh,
            "market-open",
            &load(0, steady_args(nets[0], 2.0, BEFORE_S)),
        )?;
        let before_rate = rate(at_before, ticks_out(&mesh)?);
        // The `during` window starts at the open: the run starts 0.3 s from now, its
        // connects take conns / 2000 s (the default rate), then 1 s of settling and the
        // warm-up.
        let lead = 0.3 + steady as f64 / 2000.0 + 1.0;
        let warmup = open_due
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            - lead;
        if warmup < 1.0 {
            bail!("the pre-open ({PRE_OPEN_S} s) is too short: {warmup:.1} s of warm-up left");
        }
        let window_start = Instant::now() + Duration::from_secs_f64(lead + warmup);
        let (during, open, open_at, open_rate) = std::thread::scope(|s| {
            let during = s.spawn(|| {
                loadgen(
                    env,
                    &mesh,
                    "market-open",
                    &load(1, steady_args(nets[1], warmup, DURING_S)),
                )
            });
            let open_at = wait_open(&mesh, open_due + Duration::from_secs(5))?;
            let open = s.spawn(|| loadgen(env, &mesh, "market-open", &load(2, open_args(nets[2]))));
            let a = ticks_out(&mesh)?;
            std::thread::sleep(Duration::from_secs(CONNECT_S));
            let open_rate = rate(a, ticks_out(&mesh)?);
            anyhow::Ok((joined(during)?, joined(open)?, open_at, open_rate))
        })?;
        mesh.stop();
        let after = open_at
            .saturating_duration_since(window_start)
            .as_secs_f64();
        let early = window_start
            .saturating_duration_since(open_at)
            .as_secs_f64();
        systems.push(System {
            label: label.to_string(),
            ticks_out_before: before_rate,
            ticks_out_open: open_rate,
            open_after_window_start_s: after - early,
            before,
            during,
            open,
        });
    }
    Ok(MarketOpen {
        ticks_per_sec_before: BASE_TICKS_PER_S,
        factor: FACTOR,
        symbols: symbols.len(),
        steady_conns: steady,
        reconnecting_conns: reconnecting,
        connect_s: CONNECT_S,
        deadline_ms: DEADLINE_MS,
        systems,
    })
}

/// The section's body.
pub fn report(v: &Stored<MarketOpen>) -> anyhow::Result<String> {
    let r = &v.result;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Market open{}\n\n\
         Ingest publishes {} ticks/s over {} symbols (1 ms steps) in a {PRE_OPEN_S} s pre-open, \
         then {}× that from the open (`sim.session.start` before the open, `open_burst = {}`, \
         no decay within the run). {} clients already connected stream every tick of one \
         symbol each (JSON `quote`); their latency is measured over {BEFORE_S} s of the \
         pre-open (`before`) and over the {DURING_S} s from the open (`during`: the same \
         workload, connected anew before the open). When ingest's published count shows the \
         step, {} clients \
         (re)connect, paced evenly over {} s, each subscribing to 20 symbols (`ltp`, 1 s \
         conflation); each counts from its own connect until it holds a value of all 20: \
         the snapshots on TickMesh, the first live message of each subject on nats-server \
         (which has no snapshot). Targets: every reconnecting client within {} ms; the \
         already-connected clients' p99 during the open ≤ 2× before. Produced by `{}`.\n",
        v.quick_mark(),
        num(f64::from(r.ticks_per_sec_before)),
        r.symbols,
        r.factor,
        r.factor,
        num(r.steady_conns as f64),
        num(r.reconnecting_conns as f64),
        r.connect_s,
        r.deadline_ms,
        v.xtask_command,
    );
    let _ = writeln!(
        md,
        "| server | ticks/s published, before / open | reconnecting: connected (failed) | values in {} ms | p50 | p99 | max | never | steady p50 / p99 before | steady p50 / p99 during | p99 during ÷ before (≤ 2×) | server cores before / during | other load during |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        r.deadline_ms
    );
    for s in &r.systems {
        let who = if s.label == "nats" {
            "nats-server WS"
        } else {
            "TickMesh"
        };
        let o = &s.open.summary;
        let fp = &o.full_picture;
        let (b, d) = (&s.before.summary.latency, &s.during.summary.latency);
        let all_in_time = o.counts.full_picture_in_time >= r.reconnecting_conns;
        let p99_ok = d.p99_us as f64 <= 2.0 * b.p99_us as f64;
        let _ = writeln!(
            md,
            "| {who} | {} / {} | {} ({}) | {} of {} ({}) | {} | {} | {} | {} | {} / {} | {} / {} | {} ({}) | {:.2} / {:.2} | {} |",
            num(s.ticks_out_before),
            num(s.ticks_out_open),
            o.counts.connected,
            o.counts.connect_failures,
            o.counts.full_picture_in_time,
            r.reconnecting_conns,
            yes(all_in_time),
            ms(fp.p50_us),
            ms(fp.p99_us),
            ms(fp.max_us),
            o.counts.full_picture_never,
            ms(b.p50_us),
            ms(b.p99_us),
            ms(d.p50_us),
            ms(d.p99_us),
            ratio(d.p99_us as f64, b.p99_us as f64),
            yes(p99_ok),
            s.before.server_cores()?,
            s.during.server_cores()?,
            other(&s.during),
        );
    }
    let _ = writeln!(
        md,
        "\nThe step was seen {} s after the `during` window started (TickMesh), {} s \
         (nats-server); a negative figure is a step before the window. Updates/s to the \
         steady clients before / during: {}.\n",
        open_offset(r, "tickmesh"),
        open_offset(r, "nats"),
        r.systems
            .iter()
            .map(|s| format!(
                "{} {} / {}",
                s.label,
                num(s.before.summary.updates_per_s),
                num(s.during.summary.updates_per_s)
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
    md.push_str("Load generator runs:\n\n");
    for s in &r.systems {
        for run in [&s.before, &s.during, &s.open] {
            let _ = writeln!(md, "- `{}`: `{}`", run.label, shorten_symbols(&run.command));
        }
    }
    md.push('\n');
    Ok(md)
}

fn open_offset(r: &MarketOpen, label: &str) -> String {
    r.systems.iter().find(|s| s.label == label).map_or_else(
        || "n/a".into(),
        |s| format!("{:.2}", s.open_after_window_start_s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{self, sample_run};

    #[test]
    fn a_late_client_and_a_p99_over_twice_the_baseline_are_misses() {
        let run =
            |label: &str, p99_us| sample_run(label, results::System::Tickmesh, 2000.0, 100, p99_us);
        let mut open = run("tickmesh-open", 0);
        open.summary.counts.full_picture_in_time = 9_999;
        let system = |during_p99_us| System {
            label: "tickmesh".into(),
            ticks_out_before: 1000.0,
            ticks_out_open: 10_000.0,
            open_after_window_start_s: 0.0,
            before: run("tickmesh-before", 1000),
            during: run("tickmesh-during", during_p99_us),
            open: open.clone(),
        };
        let stored = |during_p99_us| Stored {
            scenario: "market-open".into(),
            quick: false,
            took_s: 1,
            xtask_command: "cargo xtask bench --scenario market-open".into(),
            result: MarketOpen {
                ticks_per_sec_before: 1000,
                factor: 10.0,
                symbols: 100,
                steady_conns: 200,
                reconnecting_conns: 10_000,
                connect_s: 5,
                deadline_ms: 1000,
                systems: vec![system(during_p99_us)],
            },
        };
        let md = report(&stored(2000)).expect("a complete result");
        assert!(md.contains("| 9999 of 10000 (**no**) |"), "{md}");
        assert!(md.contains("| 2.00× (yes) |"), "{md}");
        assert!(md.contains("| 1,000 / 10,000 |"), "{md}");
        let md = report(&stored(2001)).expect("a complete result");
        assert!(md.contains("| 2.00× (**no**) |"), "{md}");
    }
}
