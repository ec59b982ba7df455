//! The `delayed` scenario: what delayed data costs the edge beside real time, the same
//! clients and symbols each time. Ingest publishes 500 symbols; every client subscribes
//! to 5 of them at a 1 s interval, as real-time (`ent`) on one edge and as delayed-only
//! (`dly`, a 5 s delay) on another; nats-server WS serves the real-time ticks (every tick:
//! it cannot conflate) to the same number of clients in the same run. The same clients
//! then follow the same symbols' tapes (`stream: "trades"`), real-time and delayed. Its report is a
//! section of its own in docs/benchmarks.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::idle::per_conn;
use super::report::{commands, ms, num, run_table};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, args, loadgen, start_mesh, subscribers, universe};

const TICKS_PER_SEC: u32 = 5000;
const SYMBOLS: usize = 500;
const DELAY_MS: u64 = 5000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Delayed {
    pub ticks_per_sec_in: u32,
    pub symbols: usize,
    pub conns: u64,
    pub delay_ms: u64,
    pub runs: Vec<Run>,
}

fn clients(conns: u64, symbols: &[String], net: &str, duration: &str) -> Vec<String> {
    let mut a = subscribers(conns, symbols, 5, 1000, "quote");
    a.extend(common(net, duration));
    a
}

/// The same clients on the symbols' tapes (`stream: "trades"`): every print, never
/// conflated.
fn tape_clients(conns: u64, symbols: &[String], net: &str, duration: &str) -> Vec<String> {
    let mut a = subscribers(conns, symbols, 5, 1000, "quote");
    a.extend(args(&["--stream", "trades"]));
    a.extend(common(net, duration));
    a
}

fn common(net: &str, duration: &str) -> Vec<String> {
    args(&[
        "--threads",
        "2",
        "--source-net",
        net,
        "--connect-rate",
        "3000",
        // Past the delay and a sampling step: every delayed symbol has its samples due.
        "--warmup-s",
        "8",
        "--duration-s",
        duration,
    ])
}

pub fn run(env: &Env) -> anyhow::Result<Delayed> {
    let conns = env.pick(10_000u64, 1_000);
    let symbols = universe(SYMBOLS);
    let duration = env.pick("10", "5");
    let mut runs = Vec::new();
    // Real time, and nats-server WS beside it.
    let mesh = start_mesh(env, &MeshSpec::new("delayed-rt", &symbols, TICKS_PER_SEC))?;
    for (label, nats, net) in [("real-time", false, "61"), ("nats", true, "62")] {
        runs.push(loadgen(
            env,
            &mesh,
            "delayed",
            &Load {
                label,
                nats,
                args: clients(conns, &symbols, net, duration),
            },
        )?);
    }
    runs.push(loadgen(
        env,
        &mesh,
        "delayed",
        &Load {
            label: "real-time-trades",
            nats: false,
            args: tape_clients(conns, &symbols, "64", duration),
        },
    )?);
    mesh.stop();
    // Delayed only: anonymous sessions covered by `dly` alone.
    let spec = MeshSpec {
        edge_env: vec![
            ("TICKMESH_EDGE_AUTH__ANONYMOUS_ENT", "[]".into()),
            ("TICKMESH_EDGE_AUTH__ANONYMOUS_DLY", "[\"*\"]".into()),
            ("TICKMESH_EDGE_DELAYED__DELAY_MS", DELAY_MS.to_string()),
        ],
        ..MeshSpec::new("delayed-dly", &symbols, TICKS_PER_SEC)
    };
    let mesh = start_mesh(env, &spec)?;
    runs.push(loadgen(
        env,
        &mesh,
        "delayed",
        &Load {
            label: "delayed",
            nats: false,
            args: clients(conns, &symbols, "63", duration),
        },
    )?);
    runs.push(loadgen(
        env,
        &mesh,
        "delayed",
        &Load {
            label: "delayed-trades",
            nats: false,
            args: tape_clients(conns, &symbols, "65", duration),
        },
    )?);
    mesh.stop();
    Ok(Delayed {
        ticks_per_sec_in: TICKS_PER_SEC,
        symbols: SYMBOLS,
        conns,
        delay_ms: DELAY_MS,
        runs,
    })
}

pub fn report(v: &Stored<Delayed>) -> anyhow::Result<String> {
    let quick = v.quick_mark();
    let r = &v.result;
    let rt = Run::find(&r.runs, "real-time")?;
    let dly = Run::find(&r.runs, "delayed")?;
    let nats = Run::find(&r.runs, "nats")?;
    let rt_trades = Run::find(&r.runs, "real-time-trades")?;
    let dly_trades = Run::find(&r.runs, "delayed-trades")?;
    let mut d = String::new();
    let _ = writeln!(d, "## Delayed data beside real time{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over {} symbols (and samples each at most once a \
         second into `md_delayed`). {} clients each subscribe to 5 of them (`quote`, \
         `interval_ms` 1000): on one edge in real time (`ent`), on another delayed only \
         (`dly`, `delay_ms` {}), read by the edge from the stream at now − delay. \
         nats-server WS serves the same clients every tick of the same subjects (it cannot \
         conflate). Memory is the edge's growth from before the clients connected to the \
         start of the window. Produced by `{}`.\n",
        r.ticks_per_sec_in, r.symbols, r.conns, r.delay_ms, v.xtask_command
    );
    let _ = writeln!(
        d,
        "| run | updates/s delivered | age p50 | age p99 | edge cores | edge memory per client | nats-server cores |\n|---|---|---|---|---|---|---|"
    );
    for (label, run) in [
        ("real time", rt),
        ("delayed", dly),
        ("real time, trades", rt_trades),
        ("delayed, trades", dly_trades),
    ] {
        let _ = writeln!(
            d,
            "| TickMesh, {label} | {} | {} | {} | {:.2} | {:.2} KiB | {:.2} |",
            num(run.summary.updates_per_s),
            ms(run.summary.latency.p50_us),
            ms(run.summary.latency.p99_us),
            run.cores("edge")?,
            per_conn(run, "edge")? / 1024.0,
            run.cores("nats-server")?,
        );
    }
    let _ = writeln!(
        d,
        "| nats-server WS, every tick | {} | {} | {} | | | {:.2} |\n",
        num(nats.summary.updates_per_s),
        ms(nats.summary.latency.p50_us),
        ms(nats.summary.latency.p99_us),
        nats.cores("nats-server")?,
    );
    let _ = writeln!(
        d,
        "The age of a delayed update is the delay plus up to a sampling step (1 s) plus the \
         edge's poll (250 ms): what was current `delay_ms` ago, never fresher. The trades \
         rows are the same clients on the same symbols' tapes (`stream: \"trades\"`, every \
         print): real time from `tr.>`, delayed from `md_delayed_tape`, each print handed \
         on when it is `delay_ms` old, by one follower per symbol.\n"
    );
    run_table(
        &mut d,
        &[
            ("TickMesh, real time", rt),
            ("TickMesh, delayed", dly),
            ("TickMesh, real time, trades", rt_trades),
            ("TickMesh, delayed, trades", dly_trades),
            ("nats-server WS", nats),
        ],
    )?;
    commands(&mut d, &r.runs);
    Ok(d)
}
