//! The `latency` scenario: 1,000 clients, each on every tick of one of 100 symbols at
//! 10k ticks/s in, ingest paced in 1 ms steps.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, ms, num, ratio, run_table, yes};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, loadgen, start_mesh, subscribers, universe};

#[derive(Debug, Serialize, Deserialize)]
pub struct Latency {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub runs: Vec<Run>,
}

/// The latency workload (also the slow-consumer scenario's and the curve's): `conns`
/// clients, each on every tick of one of `symbols`, JSON `quote`.
pub fn load(conns: u64, symbols: &[String], duration: &str, net: &str) -> Vec<String> {
    let mut a = subscribers(conns, symbols, 1, 0, "quote");
    a.extend(args(&[
        "--format",
        "json",
        "--threads",
        "1",
        "--source-net",
        net,
        "--warmup-s",
        "3",
        "--duration-s",
        duration,
    ]));
    a
}

pub fn run(env: &Env) -> anyhow::Result<Latency> {
    let symbols = universe(100);
    let rate = 10_000;
    let mesh = start_mesh(env, &MeshSpec::new("latency", &symbols, rate).paced())?;
    let duration = env.pick("15", "5");
    let mut runs = Vec::new();
    for (label, nats, net) in [("tickmesh", false, "31"), ("nats", true, "32")] {
        runs.push(loadgen(
            env,
            &mesh,
            "latency",
            &Load {
                label,
                nats,
                args: load(1000, &symbols, duration, net),
            },
        )?);
    }
    mesh.stop();
    Ok(Latency {
        ticks_per_sec_in: rate,
        conns: 1000,
        runs,
    })
}

pub fn report(v: &Stored<Latency>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tm = Run::find(&r.runs, "tickmesh")?;
    let nats = Run::find(&r.runs, "nats")?;
    let (tl, nl) = (&tm.summary.latency, &nats.summary.latency);
    let _ = writeln!(
        md,
        "| latency{quick} | 10k ticks/s in, ~100k updates/s out: p50 ≤ 0.25 ms, p99 ≤ 2 ms | p50 {}, p99 {} ({} /s) | p50 {}, p99 {} ({} /s) | TickMesh's p99 is {} nats-server's | {} |",
        ms(tl.p50_us),
        ms(tl.p99_us),
        num(tm.summary.updates_per_s),
        ms(nl.p50_us),
        ms(nl.p99_us),
        num(nats.summary.updates_per_s),
        ratio(tl.p99_us as f64, nl.p99_us as f64),
        yes(tl.p50_us <= 250 && tl.p99_us <= 2000)
    );
    let _ = writeln!(d, "### Latency{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over 100 symbols, paced in 1 ms steps (`sim.batch_ms = \
         1`; the default 5 ms sends each step's ticks as one burst); 1,000 clients subscribe \
         to one symbol each (10 per symbol), every tick, JSON `quote`.\n",
        r.ticks_per_sec_in
    );
    run_table(d, &[("TickMesh", tm), ("nats-server WS", nats)])?;
    commands(d, &r.runs);
    Ok(())
}
