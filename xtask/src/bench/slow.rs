//! The `slow` scenario: the latency workload with every 10th client not reading, beside
//! the same workload without them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::latency;
use super::report::{commands, ms, num, ratio, run_table, yes};
use super::results::{Run, Stored, raw};
use super::runner::{Env, Load, MeshSpec, args, fix_repeat, loadgen, metric, start_mesh, universe};

#[derive(Debug, Serialize, Deserialize)]
pub struct Slow {
    pub ticks_per_sec_in: u32,
    /// The edge's `tickmesh_edge_slow_consumer_total` after the runs, by action.
    pub edge_slow_consumer_closed: f64,
    pub edge_slow_consumer_conflated: f64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Slow> {
    let symbols = universe(100);
    let rate = 10_000;
    let mesh = start_mesh(env, &MeshSpec::new("slow", &symbols, rate).paced())?;
    let duration = env.pick("30", "12");
    let mut runs = Vec::new();
    for (label, nats, skip, net) in [
        ("tickmesh-baseline", false, true, "51"),
        ("tickmesh-with-slow", false, false, "52"),
        ("nats-baseline", true, true, "53"),
        ("nats-with-slow", true, false, "54"),
    ] {
        let mut a = latency::load(1000, &symbols, duration, net);
        a.extend(args(&[
            "--slow-every",
            "10",
            "--slow-per-conn",
            "100",
            "--warmup-s",
            "1",
            "--resume-s",
            "10",
        ]));
        let mut a = fix_repeat(a);
        if skip {
            a.push("--slow-skip".into());
        }
        runs.push(loadgen(
            env,
            &mesh,
            "slow",
            &Load {
                label,
                nats,
                args: a,
            },
        )?);
    }
    let closed = metric(
        mesh.edge_port,
        "tickmesh_edge_slow_consumer_total{action=\"closed\"}",
    )?;
    let conflated = metric(
        mesh.edge_port,
        "tickmesh_edge_slow_consumer_total{action=\"conflated\"}",
    )?;
    mesh.stop();
    Ok(Slow {
        ticks_per_sec_in: rate,
        edge_slow_consumer_closed: closed,
        edge_slow_consumer_conflated: conflated,
        runs,
    })
}

/// What the server did to a run's slow clients.
fn outcome(r: &Run) -> String {
    let c = &r.summary.counts;
    let s = &c.slow;
    format!(
        "{} slow clients: {} told `slow_consumer`, {} closed with 4008, {} cut without a 4008 close frame, {} still open with no notice when they stopped reading again; closes seen {}",
        s.clients,
        s.told_slow_consumer,
        s.closed_4008,
        s.dropped_without_close,
        s.untouched,
        raw(&c.closes)
    )
}

pub fn report(v: &Stored<Slow>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tb = Run::find(&r.runs, "tickmesh-baseline")?;
    let ts = Run::find(&r.runs, "tickmesh-with-slow")?;
    let nb = Run::find(&r.runs, "nats-baseline")?;
    let ns = Run::find(&r.runs, "nats-with-slow")?;
    let p99 = |r: &Run| r.summary.latency.p99_us;
    let slow = &ts.summary.counts.slow;
    let handled = slow.closed_4008 + slow.told_slow_consumer + slow.dropped_without_close;
    let _ = writeln!(
        md,
        "| slow consumers{quick} | 10 % of 1,000 clients stop reading: others' p99 ≤ 2× baseline, RSS bounded | p99 {} vs {} ({}), edge RSS max {:.0} MiB | p99 {} vs {} ({}), RSS max {:.0} MiB | | {} |",
        ms(p99(ts)),
        ms(p99(tb)),
        ratio(p99(ts) as f64, p99(tb) as f64),
        ts.kib("edge", |t| t.rss_max_kib)? / 1024.0,
        ms(p99(ns)),
        ms(p99(nb)),
        ratio(p99(ns) as f64, p99(nb) as f64),
        ns.kib("nats-server", |t| t.rss_max_kib)? / 1024.0,
        yes(p99(ts) <= 2 * p99(tb) && handled >= slow.clients)
    );
    let _ = writeln!(d, "### Slow consumers{quick}\n");
    let _ = writeln!(
        d,
        "The latency workload (1,000 clients, one symbol each, every tick, 10k ticks/s in, \
         paced in 1 ms steps). \
         Every 10th client instead subscribes to all 100 symbols (10k ticks/s for it alone), \
         with an 8 KiB receive buffer, and never reads after subscribing; after the window it \
         reads again for a few seconds to learn what the server did. The window starts 1 s \
         after the last connect, so it spans the server's reaction. The baseline runs leave \
         those 100 clients out. The edge runs with its defaults: 1 MiB every-tick budget, \
         5 s write timeout.\n"
    );
    run_table(
        d,
        &[
            ("TickMesh baseline", tb),
            ("TickMesh with slow clients", ts),
            ("nats-server WS baseline", nb),
            ("nats-server WS with slow clients", ns),
        ],
    )?;
    let _ = writeln!(d, "- TickMesh: {}.", outcome(ts));
    let _ = writeln!(
        d,
        "- The edge's own count after the runs: `tickmesh_edge_slow_consumer_total` closed {}, conflated {}.",
        num(r.edge_slow_consumer_closed),
        num(r.edge_slow_consumer_conflated.abs())
    );
    let _ = writeln!(
        d,
        "- nats-server WS: {}; errors {}.\n",
        outcome(ns),
        raw(&ns.summary.counts.errors_by_code)
    );
    commands(d, &r.runs);
    Ok(())
}
