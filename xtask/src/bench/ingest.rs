//! The `ingest` scenario: `tickmesh-ingest bench` against its own nats-server, the
//! publish rate of ingest beside the raw async-nats publish rate of the same run.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::report::{ms, num, ratio, yes};
use super::results::{self, Stored};
use super::runner::{Env, args, loadavg, proc_cpu_secs, start_nats};
use crate::Procs;

#[derive(Debug, Serialize, Deserialize)]
pub struct Ingest {
    pub rate: u32,
    pub check_rate: u32,
    pub seconds: u64,
    pub command: String,
    pub wall_s: f64,
    /// Measured from /proc: null when it could not be read, but never left out.
    #[serde(deserialize_with = "Option::deserialize")]
    pub nats_server_cpu_s: Option<f64>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub loadavg_before: Option<f64>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub loadavg_after: Option<f64>,
    pub bench: Figures,
}

/// The figures `tickmesh-ingest bench` prints as JSON after its table
/// (`BenchReport::json` in ingest/src/bench.rs).
#[derive(Debug, Serialize, Deserialize)]
pub struct Figures {
    pub tick_path: TickPath,
    pub baseline: Baseline,
    pub publish: Phase,
    pub checked: Phase,
}

/// The tick path alone: simulate, sequence, encode on one thread, no NATS.
#[derive(Debug, Serialize, Deserialize)]
pub struct TickPath {
    pub ticks: u64,
    pub secs: f64,
    #[serde(deserialize_with = "Option::deserialize")]
    pub thread_cpu_secs: Option<f64>,
    pub ticks_per_s: f64,
}

/// The raw async-nats publish rate of the same payloads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub msgs: u64,
    pub secs: f64,
    pub msgs_per_s: f64,
    pub payload_bytes: u64,
}

/// One paced phase of ingest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Phase {
    pub target_ticks_per_s: u32,
    pub ticks_in: u64,
    pub ticks_out: u64,
    pub stale: u64,
    pub publish_secs: f64,
    pub ticks_per_s: f64,
    #[serde(deserialize_with = "Option::deserialize")]
    pub process_cpu_secs: Option<f64>,
    pub kv_writes: u64,
    pub kv_errors: u64,
    pub kv_mean_lag_us: u64,
    pub kv_max_lag_us: u64,
    pub kv_current: usize,
    pub kv_symbols: usize,
    /// The gap-checking subscriber's findings (the checked phase only).
    #[serde(deserialize_with = "Option::deserialize")]
    pub check: Option<Check>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Check {
    pub received: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub symbols: usize,
    pub slow_consumer_events: u64,
}

impl Phase {
    /// A phase is paced at its target: 99 % of it counts as reached.
    fn reached(&self) -> bool {
        self.ticks_per_s >= 0.99 * f64::from(self.target_ticks_per_s)
    }

    fn kv_ok(&self) -> bool {
        self.kv_errors == 0 && self.kv_current == self.kv_symbols
    }
}

/// Target rates of the ingest scenario: the publish phase, and the phase with the
/// gap-checking subscriber.
const INGEST_RATE: u32 = 1_000_000;
const INGEST_CHECK_RATE: u32 = 500_000;

/// `tickmesh-ingest bench` against its own nats-server: the tick path alone, the raw
/// async-nats publish rate, ingest at 1 M ticks/s, then ingest at 500k ticks/s with a
/// subscriber that checks every symbol's seq.
pub fn run(env: &Env) -> anyhow::Result<Ingest> {
    let seconds = env.pick(10u64, 3);
    let mut procs = Procs(Vec::new());
    let (nats_pid, port, _store) = start_nats(env, &mut procs, "nats/local.conf", "ingest", None)?;
    let bench_args = args(&[
        "bench",
        "--rate",
        &INGEST_RATE.to_string(),
        "--check-rate",
        &INGEST_CHECK_RATE.to_string(),
        "--seconds",
        &seconds.to_string(),
    ]);
    eprintln!("xtask: ingest: tickmesh-ingest {}", bench_args.join(" "));
    let (load_before, nats_cpu_before) = (loadavg(), proc_cpu_secs(nats_pid));
    let started = Instant::now();
    let mut child = Command::new(env.bin.join("tickmesh-ingest"))
        .args(&bench_args)
        .env(
            "TICKMESH_INGEST_NATS__URLS",
            format!("[\"nats://127.0.0.1:{port}\"]"),
        )
        .env("RUST_LOG", "warn,tickmesh_ingest::bench=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tickmesh-ingest bench")?;
    // Its logs share stdout with the report: pass them on as they come, keep the report
    // (the table, then the JSON comment).
    let stdout = child.stdout.take().context("the bench's stdout")?;
    let read = (|| -> anyhow::Result<String> {
        let mut text = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.context("reading the bench's output")?;
            if text.is_empty() && !line.starts_with('|') {
                eprintln!("{line}");
            } else {
                text.push_str(&line);
                text.push('\n');
            }
        }
        Ok(text)
    })();
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().context("running tickmesh-ingest bench")?;
    let text = read?;
    let wall_s = started.elapsed().as_secs_f64();
    let nats_cpu = proc_cpu_secs(nats_pid)
        .zip(nats_cpu_before)
        .map(|(after, before)| after - before);
    let load_after = loadavg();
    drop(procs);
    if !status.success() {
        bail!("tickmesh-ingest bench failed: {status}");
    }
    std::fs::write(env.out.join("ingest.md"), &text)?;
    // The report ends with its figures as JSON in an HTML comment.
    const MARK: &str = "<!-- tickmesh-ingest bench: ";
    let figures = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(MARK)?.strip_suffix(" -->"))
        .context("tickmesh-ingest bench printed no figures")?;
    let bench: Figures = results::parse(figures).context("the bench's figures")?;
    Ok(Ingest {
        rate: INGEST_RATE,
        check_rate: INGEST_CHECK_RATE,
        seconds,
        command: format!("tickmesh-ingest {}", bench_args.join(" ")),
        wall_s,
        nats_server_cpu_s: nats_cpu,
        loadavg_before: load_before,
        loadavg_after: load_after,
        bench,
    })
}

/// A figure read from /proc with `decimals` places, or "unknown" when it could not be read.
fn measured(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "unknown".into(), |x| format!("{x:.decimals$}"))
}

pub fn report(v: &Stored<Ingest>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let b = &r.bench;
    let (publish, checked) = (&b.publish, &b.checked);
    let baseline = b.baseline.msgs_per_s;
    let c = checked
        .check
        .as_ref()
        .context("the checked phase has no `check` figures")?;
    let clean = c.gaps == 0 && c.out_of_order == 0 && c.received == checked.ticks_out;
    let _ = writeln!(
        md,
        "| ingest{quick} | 1 process: ≥ {} ticks/s for {} s, `md_last` keeps up | {} ticks/s; `md_last` lag max {}, current {} of {} symbols | raw async-nats publish: {} msgs/s | ingest (paced) at {} the raw rate | {} |",
        num(f64::from(r.rate)),
        r.seconds,
        num(publish.ticks_per_s),
        ms(publish.kv_max_lag_us),
        publish.kv_current,
        publish.kv_symbols,
        num(baseline),
        ratio(publish.ticks_per_s, baseline),
        yes(publish.reached() && publish.kv_ok())
    );
    let _ = writeln!(
        md,
        "| ingest{quick} | a subscriber sees no seq gap at {} ticks/s | {} ticks/s: {} of {} received, {} gaps, {} out of order; `md_last` lag max {} | | | {} |",
        num(f64::from(r.check_rate)),
        num(checked.ticks_per_s),
        num(c.received as f64),
        num(checked.ticks_out as f64),
        num(c.gaps as f64),
        num(c.out_of_order as f64),
        ms(checked.kv_max_lag_us),
        yes(checked.reached() && clean && checked.kv_ok())
    );
    let _ = writeln!(d, "### Ingest{quick}\n");
    let _ = writeln!(
        d,
        "One `tickmesh-ingest bench` process against its own nats-server (`nats/local.conf`), \
         {} s per phase: the raw async-nats publish rate of the same encoded ticks (one task, \
         as fast as it goes), then the real feed (the default universe with its option chains \
         and depth, the lease, the `md_last` and `md_ref` writers) paced at {} ticks/s with \
         nobody subscribed, then at {} ticks/s with a subscriber on `md.>` in the same process \
         that checks every symbol's seq. A paced phase counts as at its target from 99 % of \
         it. \"current\" counts the symbols whose `md_last` value, read back after the phase, \
         carries the last seq published.\n",
        r.seconds,
        num(f64::from(r.rate)),
        num(f64::from(r.check_rate))
    );
    let _ = writeln!(d, "| measure | value |\n|---|---|");
    let tick_path = &b.tick_path;
    let per_cpu = match tick_path.thread_cpu_secs {
        Some(secs) if secs > 0.0 => format!(
            " ({} per CPU-second of its thread)",
            num(tick_path.ticks as f64 / secs)
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        d,
        "| tick path alone (simulate, sequence, encode; one thread, no NATS) | {} ticks/s{per_cpu} |",
        num(tick_path.ticks_per_s)
    );
    let _ = writeln!(
        d,
        "| raw async-nats publish (same payloads, one task) | {} msgs/s ({} B average) |",
        num(baseline),
        b.baseline.payload_bytes
    );
    for (name, p) in [("no subscriber", publish), ("checked", checked)] {
        let cpu = match p.process_cpu_secs {
            Some(secs) => format!(
                "; process CPU {secs:.1} s, {:.2} µs per tick",
                secs * 1e6 / (p.ticks_out as f64).max(1.0)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            d,
            "| ingest, target {} ticks/s, {name} | **{}** ticks/s published ({} ticks in {:.1} s; {} stale{cpu}) |",
            num(f64::from(p.target_ticks_per_s)),
            num(p.ticks_per_s),
            num(p.ticks_out as f64),
            p.publish_secs,
            num(p.stale as f64)
        );
        let _ = writeln!(
            d,
            "| `md_last` writer at that rate | {} puts, {} errors, lag mean {}, max {}; current for {}/{} symbols |",
            num(p.kv_writes as f64),
            num(p.kv_errors as f64),
            ms(p.kv_mean_lag_us),
            ms(p.kv_max_lag_us),
            p.kv_current,
            p.kv_symbols
        );
        if let Some(c) = &p.check {
            let _ = writeln!(
                d,
                "| checking subscriber | received {} of {} over {} symbols; **seq gaps {}**, out of order {}, slow-consumer events {} |",
                num(c.received as f64),
                num(p.ticks_out as f64),
                c.symbols,
                num(c.gaps as f64),
                num(c.out_of_order as f64),
                num(c.slow_consumer_events as f64)
            );
        }
    }
    let nats_cores = r.nats_server_cpu_s.map(|cpu| cpu / r.wall_s.max(1e-3));
    let _ = writeln!(
        d,
        "\nnats-server used {} CPU-seconds over the {:.0} s run ({} cores on \
         average); load average {} at the start, {} at the end.\n",
        measured(r.nats_server_cpu_s, 1),
        r.wall_s,
        measured(nats_cores, 2),
        measured(r.loadavg_before, 1),
        measured(r.loadavg_after, 1)
    );
    let _ = writeln!(
        d,
        "Bench run: `{}` (`TICKMESH_INGEST_NATS__URLS` set to that server).\n",
        r.command
    );
    Ok(())
}
