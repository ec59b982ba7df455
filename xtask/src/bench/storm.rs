//! The `storm` scenario: many clients connect at the same instant and each subscribes to
//! 20 of 60 symbols; how soon each holds a value of all of them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{commands, ms, num, other, yes};
use super::results::{Run, Stored};
use super::runner::{
    Env, Load, MeshSpec, args, loadgen, metric, start_mesh, subscribers, universe,
};

#[derive(Debug, Serialize, Deserialize)]
pub struct Storm {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub symbols: usize,
    /// Snapshot reads on the edge during the TickMesh run, by where they came from.
    pub kv_reads: f64,
    pub local_reads: f64,
    pub cache_reads: f64,
    pub edge_times: EdgeTimes,
    pub runs: Vec<Run>,
}

/// The edge's own timing: upgrades (request to WebSocket) and subscribe-to-snapshots.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeTimes {
    pub handshake: Histogram,
    pub snapshot: Histogram,
}

/// A histogram from the edge's /metrics: its count and how many fell within 0.1, 0.5, 1
/// and 2.5 s.
#[derive(Debug, Serialize, Deserialize)]
pub struct Histogram {
    pub count: f64,
    #[serde(rename = "le_0.1")]
    pub le_0_1: f64,
    #[serde(rename = "le_0.5")]
    pub le_0_5: f64,
    pub le_1: f64,
    #[serde(rename = "le_2.5")]
    pub le_2_5: f64,
}

impl Histogram {
    fn read(port: u16, name: &str) -> anyhow::Result<Histogram> {
        let bucket = |le: &str| metric(port, &format!("{name}_bucket{{le=\"{le}\"}}"));
        Ok(Histogram {
            count: metric(port, &format!("{name}_count"))?,
            le_0_1: bucket("0.1")?,
            le_0_5: bucket("0.5")?,
            le_1: bucket("1")?,
            le_2_5: bucket("2.5")?,
        })
    }
}

/// Clients that connect (`connect_rate` a second, 0: all at once) and each subscribe to
/// 20 of `symbols` (`ltp`, 1 s conflation), counting how soon each holds a value of all
/// 20 (`full_picture_ms`); the storm's and the market open's.
pub fn reconnecting(
    conns: u64,
    symbols: &[String],
    connect_rate: u64,
    net: &str,
    duration_s: u64,
    full_picture_ms: u64,
) -> Vec<String> {
    let mut a = subscribers(conns, symbols, 20, 1000, "ltp");
    a.extend(args(&[
        "--connect-rate",
        &connect_rate.to_string(),
        "--threads",
        "2",
        "--source-net",
        net,
        "--settle-s",
        "0",
        "--warmup-s",
        "0",
        "--duration-s",
        &duration_s.to_string(),
        "--full-picture-ms",
        &full_picture_ms.to_string(),
    ]));
    a
}

pub fn run(env: &Env) -> anyhow::Result<Storm> {
    let conns = env.pick(10_000u64, 2_000);
    let symbols = universe(60);
    let rate = 200;
    let mesh = start_mesh(env, &MeshSpec::new("storm", &symbols, rate))?;
    let kv_metric = "tickmesh_edge_snapshot_reads_total{source=\"kv\"}";
    let before = metric(mesh.edge_port, kv_metric)?;
    let common = |net: &str| reconnecting(conns, &symbols, 0, net, 10, 2000);
    let tm = loadgen(
        env,
        &mesh,
        "storm",
        &Load {
            label: "tickmesh",
            nats: false,
            args: common("61"),
        },
    )?;
    let after = metric(mesh.edge_port, kv_metric)?;
    let local = metric(
        mesh.edge_port,
        "tickmesh_edge_snapshot_reads_total{source=\"local\"}",
    )?;
    let cache = metric(
        mesh.edge_port,
        "tickmesh_edge_snapshot_reads_total{source=\"cache\"}",
    )?;
    let edge_times = EdgeTimes {
        handshake: Histogram::read(mesh.edge_port, "tickmesh_edge_handshake_seconds")?,
        snapshot: Histogram::read(mesh.edge_port, "tickmesh_edge_snapshot_seconds")?,
    };
    let nats = loadgen(
        env,
        &mesh,
        "storm",
        &Load {
            label: "nats",
            nats: true,
            args: common("62"),
        },
    )?;
    mesh.stop();
    Ok(Storm {
        ticks_per_sec_in: rate,
        conns,
        symbols: symbols.len(),
        kv_reads: after - before,
        local_reads: local,
        cache_reads: cache,
        edge_times,
        runs: vec![tm, nats],
    })
}

pub fn report(v: &Stored<Storm>, md: &mut String, d: &mut String) -> anyhow::Result<()> {
    let quick = v.quick_mark();
    let r = &v.result;
    let tm = Run::find(&r.runs, "tickmesh")?;
    let nats = Run::find(&r.runs, "nats")?;
    let _ = writeln!(
        md,
        "| reconnect storm{quick} | {} clients at once × 20 symbols: every snapshot within 2 s, ≤ 1 KV read per symbol | {} of {} in 2 s (p99 {}, max {}); {} KV reads for {} symbols | first tick of each: {} of {} in 2 s (p99 {}) | | {} |",
        r.conns,
        tm.summary.counts.full_picture_in_time,
        r.conns,
        ms(tm.summary.full_picture.p99_us),
        ms(tm.summary.full_picture.max_us),
        num(r.kv_reads),
        r.symbols,
        nats.summary.counts.full_picture_in_time,
        r.conns,
        ms(nats.summary.full_picture.p99_us),
        yes(tm.summary.counts.full_picture_in_time >= r.conns && r.kv_reads <= r.symbols as f64)
    );
    let _ = writeln!(d, "### Reconnect storm{quick}\n");
    let _ = writeln!(
        d,
        "{} clients start connecting at the same instant (no pacing); each subscribes to 20 of \
         60 symbols (`ltp`, 1 s conflation) as soon as it is open. The time counted is from \
         that common start until the client holds a value of each of its 20 symbols: the \
         snapshots on TickMesh, the first live message of each subject on nats-server \
         (which has no snapshot; ingest publishes {} ticks/s, about {:.1} per symbol per \
         second). Snapshot reads on the edge: {} from KV, {} from the KV cache, {} from its \
         own latest value.\n",
        r.conns,
        r.ticks_per_sec_in,
        f64::from(r.ticks_per_sec_in) / (r.symbols as f64).max(1.0),
        num(r.kv_reads),
        num(r.cache_reads),
        num(r.local_reads)
    );
    for (what, h) in [
        ("upgrades (request to WebSocket)", &r.edge_times.handshake),
        (
            "snapshots (a subscribe's request read to its snapshots written; when they are \
             awaited, to the flush that sends them)",
            &r.edge_times.snapshot,
        ),
    ] {
        let _ = writeln!(
            d,
            "The edge's own timing of its {what}: {} in all; within 0.1 s {}, 0.5 s {}, 1 s {}, \
             2.5 s {}.\n",
            num(h.count),
            num(h.le_0_1),
            num(h.le_0_5),
            num(h.le_1),
            num(h.le_2_5),
        );
    }
    let _ = writeln!(
        d,
        "| run | connected | failed | open (TCP + upgrade) p50 / p99 | all values in 2 s | p50 | p99 | max | never | server cores | loadgen cores | other load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("TickMesh", tm), ("nats-server WS", nats)] {
        let s = &r.summary;
        let fp = &s.full_picture;
        let _ = writeln!(
            d,
            "| {label} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            s.counts.connected,
            s.counts.connect_failures,
            ms(s.connect.p50_us),
            ms(s.connect.p99_us),
            s.counts.full_picture_in_time,
            ms(fp.p50_us),
            ms(fp.p99_us),
            ms(fp.max_us),
            s.counts.full_picture_never,
            r.server_cores()?,
            s.loadgen_cores,
            other(r)
        );
    }
    d.push('\n');
    commands(d, &r.runs);
    Ok(())
}
