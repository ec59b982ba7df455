//! The `conflation` scenario: one symbol at 20k ticks/s to many clients at 250 ms on the
//! edge; nats-server WS, which cannot conflate, to a few clients at every tick.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, ms, num, run_table, yes};
use super::results::{Run, Stored, raw};
use super::runner::{Env, Load, MeshSpec, args, loadgen, start_mesh};

#[derive(Debug, Serialize, Deserialize)]
pub struct Conflation {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub nats_conns: u64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Conflation> {
    let conns = env.pick(10_000u64, 2_000);
    let nats_conns = env.pick(100u64, 20);
    let rate = 20_000;
    let mesh = start_mesh(env, &MeshSpec::new("conflation", &["AAPL".into()], rate))?;
    let duration = env.pick("10", "5");
    let common = |n: u64, net: &str, threads: &str| {
        args(&[
            "--conns",
            &n.to_string(),
            "--symbols",
            "AAPL",
            "--per-conn",
            "1",
            "--interval-ms",
            "250",
            "--mode",
            "quote",
            "--threads",
            threads,
            "--source-net",
            net,
            "--connect-rate",
            "3000",
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
            "conflation",
            &Load {
                label: "tickmesh",
                nats: false,
                args: common(conns, "41", "1"),
            },
        )?,
        loadgen(
            env,
            &mesh,
            "conflation",
            &Load {
                label: "nats",
                nats: true,
                args: common(nats_conns, "42", "2"),
            },
        )?,
    ];
    mesh.stop();
    Ok(Conflation {
        ticks_per_sec_in: rate,
        conns,
        nats_conns,
        runs,
    })
}

/// The most updates one client got per second of the window (no client counted: 0).
fn max_rate(r: &Run) -> f64 {
    r.summary.counts.max_conn_updates.unwrap_or(0) as f64 / r.summary.window_s.max(1e-3)
}

pub fn report(v: &Stored<Conflation>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tm = Run::find(&r.runs, "tickmesh")?;
    let nats = Run::find(&r.runs, "nats")?;
    let window = tm.summary.window_s.max(1e-3);
    let edge = tm.cores("edge")?;
    let c = &tm.summary.counts;
    let _ = writeln!(
        md,
        "| conflation{quick} | 1 symbol at 20k ticks/s to {} clients at 250 ms: ≤ 4 updates/s each, latest value, edge < 0.5 core | ≤ {:.2} updates/s per client, age p99 {}, edge {:.2} cores | every tick: {:.0} msgs/s per client ({} clients), {:.2} cores | | {} |",
        r.conns,
        max_rate(tm),
        ms(tm.summary.latency.p99_us),
        edge,
        max_rate(nats),
        r.nats_conns,
        nats.cores("nats-server")?,
        yes(max_rate(tm) <= 4.1 && edge < 0.5 && c.interval_violations == 0)
    );
    let _ = writeln!(d, "### Conflation{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes one symbol at {} ticks/s. TickMesh: {} clients at `interval_ms` 250. \
         nats-server has no conflation, so each of its clients gets every tick; it is driven \
         with only {} clients (the full count would be {} messages/s). The latency of a \
         conflated update is the age of the value when it arrives: a small age means it was \
         the latest tick at flush time.\n",
        r.ticks_per_sec_in,
        r.conns,
        r.nats_conns,
        num(f64::from(r.ticks_per_sec_in) * r.conns as f64)
    );
    run_table(d, &[("TickMesh", tm), ("nats-server WS", nats)])?;
    let _ = writeln!(
        d,
        "TickMesh per client: fewest {} and most {} updates in the {:.1} s window; {} updates \
         came sooner than 90 % of the interval after the previous one.\n",
        raw(&c.min_conn_updates),
        raw(&c.max_conn_updates),
        window,
        c.interval_violations
    );
    commands(d, &r.runs);
    Ok(())
}
