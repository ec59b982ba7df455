//! The `resubscribe` scenario: client-driven state stays bounded under a flood of
//! repeated subscribes. Its report is a section of its own in docs/benchmarks.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{num, shorten_symbols};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, join, loadgen, metric, start_mesh, universe};

#[derive(Debug, Serialize, Deserialize)]
pub struct Resubscribe {
    pub conns: u64,
    pub symbols: usize,
    pub resubscribe_per_s: u64,
    pub duration_s: String,
    /// The edge's `tickmesh_edge_sessions` after the runs.
    pub edge_sessions_after: f64,
    pub runs: Vec<Run>,
}

/// Client-driven state stays bounded: 20 sessions re-send a 200-symbol subscribe (`quote`,
/// 250 ms conflation) at their tier's rate limit (100 requests/s, a 200-entry subscribe
/// costing 2) for two minutes, with ingest stopped so that every symbol is quiet (the case
/// where per-subscribe state once grew until a tick came). The edge's RSS at the start and
/// end of the window, beside nats-server's with the same clients re-sending UNSUB and SUB.
pub fn run(env: &Env) -> anyhow::Result<Resubscribe> {
    let symbols = universe(200);
    let mut mesh = start_mesh(env, &MeshSpec::new("resubscribe", &symbols, 400))?;
    mesh.stop_ingest();
    let duration = env.pick("120", "20");
    let common = |net: &str| {
        args(&[
            "--conns",
            "20",
            "--symbols",
            &join(&symbols),
            "--per-conn",
            "200",
            "--interval-ms",
            "250",
            "--mode",
            "quote",
            "--resubscribe-per-s",
            "50",
            "--source-net",
            net,
            "--settle-s",
            "1",
            "--warmup-s",
            "3",
            "--duration-s",
            duration,
        ])
    };
    let mut runs = Vec::new();
    for (label, nats, net) in [("tickmesh", false, "71"), ("nats", true, "72")] {
        runs.push(loadgen(
            env,
            &mesh,
            "resubscribe",
            &Load {
                label,
                nats,
                args: common(net),
            },
        )?);
    }
    let edge_sessions = metric(mesh.edge_port, "tickmesh_edge_sessions ")?;
    mesh.stop();
    Ok(Resubscribe {
        conns: 20,
        symbols: symbols.len(),
        resubscribe_per_s: 50,
        duration_s: duration.to_string(),
        edge_sessions_after: edge_sessions,
        runs,
    })
}

/// The section's body.
pub fn report(v: &Stored<Resubscribe>) -> anyhow::Result<String> {
    let r = &v.result;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Memory under a resubscribe flood{}\n\n\
         {} sessions each re-send a subscribe of the same {} symbols (`quote`, 250 ms \
         conflation) {} times a second, their tier's rate limit, for {} s, with ingest stopped \
         (every symbol quiet). nats-server WS: the same clients re-send `UNSUB` and `SUB` of \
         each subject as often. Produced by `{}`.\n",
        v.quick_mark(),
        r.conns,
        r.symbols,
        r.resubscribe_per_s,
        r.duration_s,
        v.xtask_command,
    );
    let _ = writeln!(
        md,
        "| server | requests re-sent | refused `rate_limited` | RSS before clients | RSS window start | RSS window end | RSS max | cores | other load |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (label, who, name) in [
        ("tickmesh", "TickMesh edge", "edge"),
        ("nats", "nats-server WS", "nats-server"),
    ] {
        let run = Run::find(&r.runs, label)?;
        let c = &run.summary.counts;
        let mib = |field: fn(&tickmesh_loadgen::summary::Resource) -> u64| {
            run.kib(name, field)
                .map(|kib| format!("{:.1} MiB", kib / 1024.0))
        };
        // The counts by error code hold the codes that came: none refused is no entry.
        let refused = c.errors_by_code.get("rate_limited").copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {who} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} cores |",
            num(c.resubscribes as f64),
            num(refused as f64),
            mib(|t| t.rss_before_kib)?,
            mib(|t| t.rss_window_start_kib)?,
            mib(|t| t.rss_end_kib)?,
            mib(|t| t.rss_max_kib)?,
            run.cores(name)?,
            run.summary.other_cores,
        );
    }
    let _ = writeln!(
        md,
        "\nLoad generator commands: {}.\n",
        r.runs
            .iter()
            .map(|r| format!("`{}`", shorten_symbols(&r.command)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(md)
}
