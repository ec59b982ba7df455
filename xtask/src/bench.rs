//! `cargo xtask bench [--quick] [--scenario NAME]...`: builds release binaries, runs each
//! scenario on loopback against TickMesh and against nats-server's own WebSocket listener
//! with the same workload, and writes `docs/benchmarks.md`.
//!
//! Each scenario starts its own nats-server (nats/websocket.conf), ingest (a generated
//! universe at a given rate) and edge process(es), runs `tickmesh-loadgen` once per system,
//! and keeps its results in `target/bench/<scenario>.json`. The `ingest` scenario instead
//! runs `tickmesh-ingest bench` against its own nats-server (nats/local.conf): ingest's
//! publish rate beside the raw async-nats publish rate of the same run, a gap-checking
//! subscriber and the `md_last` writer's lag. The report is rebuilt from
//! every result there, so one scenario can be re-run alone (`--report-only` rebuilds the
//! report alone). Only the part of the report between its `bench:begin` and `bench:end`
//! markers is rewritten.
//!
//! - [`runner`]: the processes a scenario runs (the mesh, the load generator) and what is
//!   read from /proc and the edge's /metrics.
//! - [`results`]: the result files' types; a missing figure is an error, never a zero.
//! - [`report`]: docs/benchmarks.md's generated sections.
//! - one module per scenario: its run and its part of the report.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::{root, run, tools};
use report::{
    ACCOUNTS_BEGIN, ACCOUNTS_END, BEGIN, CURVE_BEGIN, CURVE_END, DEFLATE_BEGIN, DEFLATE_END,
    DELAYED_BEGIN, DELAYED_END, END, MARKET_OPEN_BEGIN, MARKET_OPEN_END, RESUBSCRIBE_BEGIN,
    RESUBSCRIBE_END, TRADES_BEGIN, TRADES_END, with_section,
};
use results::Stored;
use runner::Env;

mod accounts;
mod conflation;
mod curve;
mod deflate;
mod delayed;
mod idle;
mod ingest;
mod latency;
mod market_open;
mod report;
mod resubscribe;
mod results;
mod runner;
mod slow;
mod storm;
mod throughput;
mod trades;

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--scenario NAME]... [--no-build] [--report-only]
scenarios: idle, throughput, latency, conflation, slow, storm, ingest, resubscribe, curve,
market-open, trades, accounts, deflate, delayed (default: all)";

const SCENARIOS: [&str; 14] = [
    "idle",
    "throughput",
    "latency",
    "conflation",
    "slow",
    "storm",
    "ingest",
    "resubscribe",
    "curve",
    "market-open",
    "trades",
    "accounts",
    "deflate",
    "delayed",
];

/// Scenarios with a section of their own in docs/benchmarks.md, outside the main block:
/// running one alone leaves the main block as it is.
const OWN_SECTION: [&str; 7] = [
    "resubscribe",
    "curve",
    "market-open",
    "trades",
    "accounts",
    "deflate",
    "delayed",
];

struct Opts {
    quick: bool,
    report_only: bool,
    scenarios: Vec<String>,
    build: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        report_only: false,
        scenarios: Vec::new(),
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.build = false,
            "--report-only" => o.report_only = true,
            "--scenario" => {
                let name = it.next().context("--scenario needs a name")?;
                for n in name.split(',') {
                    if !SCENARIOS.contains(&n) {
                        bail!("unknown scenario {n:?}\n{USAGE}");
                    }
                    o.scenarios.push(n.to_string());
                }
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    Ok(o)
}

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let root = root();
    let nats = tools::ensure(&root)?;
    if opts.build && !opts.report_only {
        eprintln!("xtask: building release binaries (a cold build takes about 10 minutes)");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--release", "-p", "tickmesh-ingest"])
            .current_dir(&root);
        // The ingest scenario needs ingest alone; the others an edge and the load generator.
        if opts.scenarios.iter().any(|n| n != "ingest") {
            build.args(["-p", "tickmesh-edge", "-p", "tickmesh-loadgen"]);
        }
        run(&mut build)?;
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(out_dir.join("logs"))?;
    let env = Env {
        nats,
        bin: root.join("target/release"),
        out: out_dir.clone(),
        quick: opts.quick,
    };
    let command = format!(
        "cargo xtask bench{}",
        args.iter().fold(String::new(), |mut s, a| {
            s.push(' ');
            s.push_str(a);
            s
        })
    );
    let scenarios = if opts.report_only {
        &[][..]
    } else {
        &opts.scenarios[..]
    };
    for name in scenarios {
        eprintln!("xtask: scenario {name}");
        let started = Instant::now();
        let keep = Keep {
            dir: &out_dir,
            name,
            quick: opts.quick,
            started,
            command: &command,
        };
        let result = match name.as_str() {
            "idle" => idle::run(&env).and_then(|r| keep.write(r)),
            "throughput" => throughput::run(&env).and_then(|r| keep.write(r)),
            "latency" => latency::run(&env).and_then(|r| keep.write(r)),
            "conflation" => conflation::run(&env).and_then(|r| keep.write(r)),
            "slow" => slow::run(&env).and_then(|r| keep.write(r)),
            "storm" => storm::run(&env).and_then(|r| keep.write(r)),
            "ingest" => ingest::run(&env).and_then(|r| keep.write(r)),
            "resubscribe" => resubscribe::run(&env).and_then(|r| keep.write(r)),
            "curve" => curve::run(&env).and_then(|r| keep.write(r)),
            "market-open" => market_open::run(&env).and_then(|r| keep.write(r)),
            "trades" => trades::run(&env).and_then(|r| keep.write(r)),
            "accounts" => accounts::run(&env).and_then(|r| keep.write(r)),
            "deflate" => deflate::run(&env).and_then(|r| keep.write(r)),
            "delayed" => delayed::run(&env).and_then(|r| keep.write(r)),
            _ => unreachable!("scenario names are checked when parsed"),
        };
        result.with_context(|| format!("scenario {name}"))?;
    }
    let path = root.join("docs/benchmarks.md");
    let page = std::fs::read_to_string(&path).unwrap_or_default();
    let ran_main = opts.report_only || scenarios.iter().any(|n| is_main(n));
    let complete = main_results_complete(|n| results::path(&out_dir, n).exists());
    if ran_main && !complete {
        // A partial set would put "not run" over the figures of the run the page shows:
        // the main block is rewritten only from a result of every main scenario, and a
        // partial one goes where it can be read without losing anything.
        let partial = out_dir.join("report.md");
        std::fs::write(&partial, report::report(&out_dir, &env.nats)?)?;
        eprintln!(
            "xtask: wrote {} (the main block of docs/benchmarks.md is rewritten only when \
             {} has a result of every main scenario)",
            partial.display(),
            out_dir.display()
        );
    }
    let (page, svg) = rebuild(&page, &out_dir, &env.nats, ran_main && complete)?;
    if let Some(svg) = svg {
        std::fs::write(root.join("docs/bench-curve.svg"), svg)?;
    }
    std::fs::write(&path, page)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// A scenario of the main block (not one with a section of its own).
fn is_main(name: &str) -> bool {
    !OWN_SECTION.contains(&name)
}

/// Whether every main scenario has a result (`has` says whether one has).
fn main_results_complete(has: impl Fn(&str) -> bool) -> bool {
    SCENARIOS.iter().filter(|n| is_main(n)).all(|n| has(n))
}

/// `page` (docs/benchmarks.md) with its generated sections rebuilt from the results in
/// `dir`, the main block only when `main`; and the curve's SVG when the curve has run.
fn rebuild(
    page: &str,
    dir: &Path,
    nats: &Path,
    main: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let mut page = page.to_string();
    if main {
        page = with_section(&page, BEGIN, END, &report::report(dir, nats)?);
    }
    if let Some(v) = results::load(dir, "resubscribe")? {
        let section = resubscribe::report(&v)
            .with_context(|| results::path(dir, "resubscribe").display().to_string())?;
        page = with_section(&page, RESUBSCRIBE_BEGIN, RESUBSCRIBE_END, &section);
    }
    if let Some(v) = results::load(dir, "market-open")? {
        let section = market_open::report(&v)
            .with_context(|| results::path(dir, "market-open").display().to_string())?;
        page = with_section(&page, MARKET_OPEN_BEGIN, MARKET_OPEN_END, &section);
    }
    if let Some(v) = results::load(dir, "trades")? {
        let section = trades::report(&v)
            .with_context(|| results::path(dir, "trades").display().to_string())?;
        page = with_section(&page, TRADES_BEGIN, TRADES_END, &section);
    }
    if let Some(v) = results::load(dir, "accounts")? {
        let section = accounts::report(&v)
            .with_context(|| results::path(dir, "accounts").display().to_string())?;
        page = with_section(&page, ACCOUNTS_BEGIN, ACCOUNTS_END, &section);
    }
    if let Some(v) = results::load(dir, "deflate")? {
        let section = deflate::report(&v)
            .with_context(|| results::path(dir, "deflate").display().to_string())?;
        page = with_section(&page, DEFLATE_BEGIN, DEFLATE_END, &section);
    }
    if let Some(v) = results::load(dir, "delayed")? {
        let section = delayed::report(&v)
            .with_context(|| results::path(dir, "delayed").display().to_string())?;
        page = with_section(&page, DELAYED_BEGIN, DELAYED_END, &section);
    }
    let mut svg = None;
    if let Some(v) = results::load(dir, "curve")? {
        let (section, drawing) =
            curve::report(&v).with_context(|| results::path(dir, "curve").display().to_string())?;
        page = with_section(&page, CURVE_BEGIN, CURVE_END, &section);
        svg = Some(drawing);
    }
    Ok((page, svg))
}

/// Where and how a scenario's result is kept: `<dir>/<name>.json`, with how it was run.
struct Keep<'a> {
    dir: &'a Path,
    name: &'a str,
    quick: bool,
    started: Instant,
    command: &'a str,
}

impl Keep<'_> {
    fn write<T: Serialize>(&self, result: T) -> anyhow::Result<()> {
        let stored = Stored {
            scenario: self.name.to_string(),
            quick: self.quick,
            took_s: self.started.elapsed().as_secs(),
            xtask_command: self.command.to_string(),
            result,
        };
        std::fs::write(
            results::path(self.dir, self.name),
            serde_json::to_string_pretty(&stored)?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_block_is_rewritten_only_from_a_result_of_every_main_scenario() {
        assert!(main_results_complete(|_| true));
        // One main scenario run alone, on a machine with no other results: the block
        // with the committed figures must stay.
        assert!(!main_results_complete(|n| n == "conflation"));
        // The scenarios with sections of their own are not needed.
        assert!(main_results_complete(is_main));
        assert!(!main_results_complete(|n| n != "ingest"));
    }
}
