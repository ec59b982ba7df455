//! The `idle` scenario: memory per idle connection, on one edge beside one nats-server,
//! then over several edges sharing the port.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, other, ratio, yes};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, fix_repeat, loadgen, start_mesh, universe};

#[derive(Debug, Serialize, Deserialize)]
pub struct Idle {
    pub edges_many: usize,
    pub conns_one: u64,
    pub conns_many: u64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Idle> {
    let one = env.pick(19_500u64, 2_000);
    let many = env.pick(100_000u64, 10_000);
    let edges = env.pick(6usize, 2);
    let procs_one = env.pick("2", "1");
    let mut runs = Vec::new();
    let mesh = start_mesh(env, &MeshSpec::new("idle", &universe(10), 100))?;
    for (label, nats, net) in [
        ("tickmesh-1-edge", false, "11"),
        ("nats-1-server", true, "12"),
    ] {
        runs.push(loadgen(
            env,
            &mesh,
            "idle",
            &Load {
                label,
                nats,
                args: idle_args(one, procs_one, net),
            },
        )?);
    }
    mesh.stop();
    let spec = MeshSpec {
        edges,
        ..MeshSpec::new("idle-many", &universe(10), 100)
    };
    let mesh = start_mesh(env, &spec)?;
    let procs = many.div_ceil(17_000).max(1).to_string();
    let mut a = idle_args(many, &procs, "13");
    a.extend(args(&["--source-addrs", "16"]));
    runs.push(loadgen(
        env,
        &mesh,
        "idle",
        &Load {
            label: "tickmesh-many-edges",
            nats: false,
            args: fix_repeat(a),
        },
    )?);
    mesh.stop();
    Ok(Idle {
        edges_many: edges,
        conns_one: one,
        conns_many: many,
        runs,
    })
}

/// The load generator's arguments for `n` connections with no subscription, over `procs`
/// processes, from source net `net`: opened at 3,000/s and held for a 5 s window.
pub(super) fn idle_args(n: u64, procs: &str, net: &str) -> Vec<String> {
    args(&[
        "--conns",
        &n.to_string(),
        "--per-conn",
        "0",
        "--symbols",
        "S0000",
        "--procs",
        procs,
        "--source-addrs",
        "8",
        "--source-net",
        net,
        "--connect-rate",
        "3000",
        "--settle-s",
        "3",
        "--warmup-s",
        "3",
        "--duration-s",
        "5",
    ])
}

/// Server RSS growth from before the first connect to the window start, per connection
/// open, bytes.
pub(super) fn per_conn(r: &Run, who: &str) -> anyhow::Result<f64> {
    let conns = (r.summary.counts.connected as f64).max(1.0);
    Ok(
        (r.kib(who, |t| t.rss_window_start_kib)? - r.kib(who, |t| t.rss_before_kib)?) * 1024.0
            / conns,
    )
}

pub fn report(v: &Stored<Idle>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tm = Run::find(&r.runs, "tickmesh-1-edge")?;
    let nats = Run::find(&r.runs, "nats-1-server")?;
    let many = Run::find(&r.runs, "tickmesh-many-edges")?;
    let tm_per = per_conn(tm, "edge")?;
    let nats_per = per_conn(nats, "nats-server")?;
    let many_per = per_conn(many, "edge")?;
    let _ = writeln!(
        md,
        "| idle{quick} | {} conns on 1 edge at ≤ 8 KiB each | {} conns, {:.1} KiB/conn | {} conns, {:.1} KiB/conn | {} memory per connection | {} |",
        r.conns_one,
        tm.summary.counts.connected,
        tm_per / 1024.0,
        nats.summary.counts.connected,
        nats_per / 1024.0,
        ratio(nats_per, tm_per).replace('×', "× less"),
        yes(tm.summary.counts.connected >= r.conns_one && tm_per <= 8192.0)
    );
    let _ = writeln!(
        md,
        "| idle{quick} | {} conns over {} edges (SO_REUSEPORT) | {} conns, {:.1} KiB/conn | one nats-server process holds < 20,000 | | {} |",
        r.conns_many,
        r.edges_many,
        many.summary.counts.connected,
        many_per / 1024.0,
        yes(many.summary.counts.connected >= 100_000)
    );
    let _ = writeln!(d, "### Idle connections{quick}\n");
    let _ = writeln!(
        d,
        "Connections with no subscription, opened at 3,000/s from 127.0.K.x source \
         addresses, held for a 5 s window (heartbeats and pings still flow). Memory per \
         connection = server RSS growth from before the first connect to the window start, \
         divided by the connections open.\n"
    );
    let _ = writeln!(
        d,
        "| run | connected | failed | RSS before | RSS with connections | per connection | server cores | loadgen cores | other load |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (label, r, who) in [
        ("TickMesh, 1 edge", tm, "edge"),
        ("nats-server WS", nats, "nats-server"),
        ("TickMesh, several edges", many, "edge"),
    ] {
        let _ = writeln!(
            d,
            "| {label} | {} | {} | {:.1} MiB | {:.1} MiB | {:.2} KiB | {:.2} | {:.2} | {} |",
            r.summary.counts.connected,
            r.summary.counts.connect_failures,
            r.kib(who, |t| t.rss_before_kib)? / 1024.0,
            r.kib(who, |t| t.rss_window_start_kib)? / 1024.0,
            per_conn(r, who)? / 1024.0,
            r.server_cores()?,
            r.summary.loadgen_cores,
            other(r),
        );
    }
    d.push('\n');
    commands(d, &r.runs);
    Ok(())
}
