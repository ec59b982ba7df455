//! The `trades` scenario: time and sales. One symbol at 25,000 ticks/s, about 10,000
//! prints/s (ingest prints on 40 % of the simulator's ticks), to tape clients on the edge
//! (`stream: "trades"`, no history): 1,000 of them (10 M prints/s asked of the box), and
//! 100 (1 M/s); nats-server's WebSocket to 100 clients subscribed to the symbol's
//! `tr.<shard>.<symbol>`, the same 1 M/s. A tape is never conflated, so every client gets
//! every print or is cut with 4008. Its report is a section of its own in
//! docs/benchmarks.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, num, run_table};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, loadgen, start_mesh};

const TICKS_PER_SEC: u32 = 25_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Trades {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub nats_conns: u64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Trades> {
    let conns = env.pick(1_000u64, 200);
    let nats_conns = env.pick(100u64, 20);
    let mesh = start_mesh(
        env,
        &MeshSpec::new("trades", &["AAPL".into()], TICKS_PER_SEC),
    )?;
    let duration = env.pick("10", "5");
    let common = |n: u64, net: &str, threads: &str| {
        args(&[
            "--conns",
            &n.to_string(),
            "--symbols",
            "AAPL",
            "--per-conn",
            "1",
            "--stream",
            "trades",
            "--threads",
            threads,
            "--source-net",
            net,
            "--connect-rate",
            "2000",
            "--warmup-s",
            "2",
            "--duration-s",
            duration,
        ])
    };
    let runs = vec![
        loadgen(
            env,
            &mesh,
            "trades",
            &Load {
                label: "tickmesh",
                nats: false,
                args: common(conns, "43", "1"),
            },
        )?,
        loadgen(
            env,
            &mesh,
            "trades",
            &Load {
                label: "tickmesh-100",
                nats: false,
                args: common(nats_conns, "45", "1"),
            },
        )?,
        loadgen(
            env,
            &mesh,
            "trades",
            &Load {
                label: "nats",
                nats: true,
                args: common(nats_conns, "44", "1"),
            },
        )?,
    ];
    mesh.stop();
    Ok(Trades {
        ticks_per_sec_in: TICKS_PER_SEC,
        conns,
        nats_conns,
        runs,
    })
}

/// Prints per second per client: what each got in the window, on average.
fn per_client(r: &Run) -> f64 {
    let c = &r.summary.counts;
    let clients = c.connected.max(1) as f64;
    c.updates as f64 / r.summary.window_s.max(1e-3) / clients
}

pub fn report(v: &Stored<Trades>) -> anyhow::Result<String> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tm = Run::find(&r.runs, "tickmesh")?;
    let tm_small = Run::find(&r.runs, "tickmesh-100")?;
    let nats = Run::find(&r.runs, "nats")?;
    let mut d = String::new();
    let _ = writeln!(d, "### Time and sales{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes one symbol at {} ticks/s, about {} prints/s on `tr.<shard>.AAPL`. \
         TickMesh: {} clients with `stream: \"trades\"` (no history), each to get every \
         print, then {} clients. nats-server: {} clients subscribed to the same subject. \
         Latency is the print's `ts` (stamped by ingest) to its receipt.\n",
        r.ticks_per_sec_in,
        num(per_client(nats)),
        r.conns,
        r.nats_conns,
        r.nats_conns
    );
    run_table(
        &mut d,
        &[
            ("TickMesh", tm),
            ("TickMesh, fewer clients", tm_small),
            ("nats-server WS", nats),
        ],
    )?;
    for (label, run) in [("TickMesh", tm), ("TickMesh, fewer clients", tm_small)] {
        let c = &run.summary.counts;
        let edge = run.cores("edge")?;
        let per_s = c.updates as f64 / run.summary.window_s.max(1e-3);
        let _ = writeln!(
            d,
            "- {label}: {} prints/s per client on average ({} in all), {} out of order or \
             twice; edge {:.2} cores, {:.2} µs of edge CPU per print delivered; closes by \
             code: {:?}.",
            num(per_client(run)),
            num(per_s),
            c.seq_regressions,
            edge,
            edge * 1e6 / per_s.max(1.0),
            c.closes
        );
    }
    d.push('\n');
    commands(&mut d, &r.runs);
    Ok(d)
}
