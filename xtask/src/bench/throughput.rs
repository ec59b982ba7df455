//! The `throughput` scenario: 1,000 clients on every tick of 50 symbols, MessagePack and
//! JSON on the edge beside nats-server WS.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, num, ratio, run_table, yes};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, join, loadgen, start_mesh, universe};

#[derive(Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Throughput> {
    let conns = env.pick(1000u64, 200);
    let symbols = universe(50);
    let rate = 1500;
    let mesh = start_mesh(env, &MeshSpec::new("throughput", &symbols, rate))?;
    let duration = env.pick("15", "5");
    let mut runs = Vec::new();
    for (label, nats, format, net) in [
        ("tickmesh-msgpack", false, "msgpack", "21"),
        ("tickmesh-json", false, "json", "22"),
        ("nats", true, "msgpack", "23"),
    ] {
        runs.push(loadgen(
            env,
            &mesh,
            "throughput",
            &Load {
                label,
                nats,
                args: busy_args(conns, &symbols, "0", format, net, duration),
            },
        )?);
    }
    mesh.stop();
    Ok(Throughput {
        ticks_per_sec_in: rate,
        conns,
        runs,
    })
}

/// The load generator's arguments for `conns` clients on every one of `symbols`, each
/// every `interval_ms` (0: every tick), `quote` in `format`, from source net `net`.
pub(super) fn busy_args(
    conns: u64,
    symbols: &[String],
    interval_ms: &str,
    format: &str,
    net: &str,
    duration: &str,
) -> Vec<String> {
    args(&[
        "--conns",
        &conns.to_string(),
        "--symbols",
        &join(symbols),
        "--per-conn",
        &symbols.len().to_string(),
        "--interval-ms",
        interval_ms,
        "--mode",
        "quote",
        "--format",
        format,
        "--threads",
        "2",
        "--source-net",
        net,
        "--warmup-s",
        "3",
        "--duration-s",
        duration,
    ])
}

pub fn report(v: &Stored<Throughput>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let mp = Run::find(&r.runs, "tickmesh-msgpack")?;
    let js = Run::find(&r.runs, "tickmesh-json")?;
    let nats = Run::find(&r.runs, "nats")?;
    let best = if mp.summary.updates_per_s >= js.summary.updates_per_s {
        mp
    } else {
        js
    };
    let _ = writeln!(
        md,
        "| throughput{quick} | {} clients × 50 symbols, every tick: ≥ 1.5 M updates/s | {} /s ({}); {} per CPU-s | {} /s; {} per CPU-s | {} per CPU-s (aim 3×) | {} |",
        r.conns,
        num(best.summary.updates_per_s),
        best.label,
        num(best.per_cpu()?),
        num(nats.summary.updates_per_s),
        num(nats.per_cpu()?),
        ratio(best.per_cpu()?, nats.per_cpu()?),
        yes(best.summary.updates_per_s >= 1_500_000.0 && best.per_cpu()? > nats.per_cpu()?)
    );
    let _ = writeln!(d, "### Throughput{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over 50 symbols; each of {} clients subscribes to all 50, \
         every tick, `quote` mode: an offered load of {} updates/s.\n",
        r.ticks_per_sec_in,
        r.conns,
        num(f64::from(r.ticks_per_sec_in) * r.conns as f64)
    );
    run_table(
        d,
        &[
            ("TickMesh (MessagePack)", mp),
            ("TickMesh (JSON)", js),
            ("nats-server WS", nats),
        ],
    )?;
    let _ = writeln!(
        d,
        "Updates per server CPU-second: TickMesh MessagePack {}, JSON {}, nats-server WS {}.\n",
        num(mp.per_cpu()?),
        num(js.per_cpu()?),
        num(nats.per_cpu()?)
    );
    commands(d, &r.runs);
    Ok(())
}
