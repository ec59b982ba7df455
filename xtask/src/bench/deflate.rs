//! The `deflate` scenario: permessage-deflate beside plain frames, the same workload each
//! time. Every tick of 50 symbols to 1,000 clients (JSON, then MessagePack), the same
//! conflated to 250 ms (where sessions on the shared flush clock build the same frames),
//! and idle connections (memory per connection, each on an edge of its own). Bytes on the
//! wire are what the load generator read off its sockets. Its report is a section of its
//! own in docs/benchmarks.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::idle::{idle_args, per_conn};
use super::report::{commands, num, ratio, run_table};
use super::results::{Run, Stored};
use super::runner::{Env, Load, MeshSpec, loadgen, start_mesh, universe};
use super::throughput::busy_args;

const TICKS_PER_SEC: u32 = 1500;

#[derive(Debug, Serialize, Deserialize)]
pub struct Deflate {
    pub ticks_per_sec_in: u32,
    pub conns: u64,
    pub idle_conns: u64,
    pub runs: Vec<Run>,
}

/// The busy workloads: label stem, format, interval.
const BUSY: [(&str, &str, &str); 3] = [
    ("json-every-tick", "json", "0"),
    ("msgpack-every-tick", "msgpack", "0"),
    ("json-250ms", "json", "250"),
];

pub fn run(env: &Env) -> anyhow::Result<Deflate> {
    let conns = env.pick(1000u64, 200);
    let idle_conns = env.pick(19_500u64, 2_000);
    let symbols = universe(50);
    let duration = env.pick("15", "5");
    let mut runs = Vec::new();
    let mesh = start_mesh(env, &MeshSpec::new("deflate", &symbols, TICKS_PER_SEC))?;
    let mut net = 90;
    for (stem, format, interval) in BUSY {
        for deflate in [false, true] {
            net += 1;
            let mut a = busy_args(
                conns,
                &symbols,
                interval,
                format,
                &net.to_string(),
                duration,
            );
            if deflate {
                a.push("--deflate".into());
            }
            let label = format!("{stem}{}", if deflate { "-deflate" } else { "" });
            runs.push(loadgen(
                env,
                &mesh,
                "deflate",
                &Load {
                    label: &label,
                    nats: false,
                    args: a,
                },
            )?);
        }
    }
    mesh.stop();
    for deflate in [false, true] {
        // A fresh edge each: memory freed by a run before would hide this one's growth.
        let mesh = start_mesh(env, &MeshSpec::new("deflate-idle", &universe(10), 100))?;
        net += 1;
        let mut a = idle_args(idle_conns, env.pick("2", "1"), &net.to_string());
        if deflate {
            a.push("--deflate".into());
        }
        let label = if deflate { "idle-deflate" } else { "idle" };
        runs.push(loadgen(
            env,
            &mesh,
            "deflate",
            &Load {
                label,
                nats: false,
                args: a,
            },
        )?);
        mesh.stop();
    }
    Ok(Deflate {
        ticks_per_sec_in: TICKS_PER_SEC,
        conns,
        idle_conns,
        runs,
    })
}

/// Bytes read off the wire per update delivered (over the whole run).
fn wire_per_update(r: &Run) -> f64 {
    let c = &r.summary.counts;
    c.wire_bytes as f64 / c.updates_total.max(1) as f64
}

pub fn report(v: &Stored<Deflate>) -> anyhow::Result<String> {
    let quick = v.quick_mark();
    let r = &v.result;
    let mut d = String::new();
    let _ = writeln!(d, "## permessage-deflate{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over 50 symbols; {} clients each subscribe to all 50 \
         (`quote`), without and with `--deflate` (the load generator offers \
         `permessage-deflate; client_max_window_bits`, as Chrome does). Wire bytes are \
         what the clients read off their sockets, frame headers included, over the whole \
         run; updates per CPU-second count the edge and nats-server. Idle: {} connections \
         with no subscription, each run on a fresh edge. Produced by `{}`.\n",
        r.ticks_per_sec_in, r.conns, r.idle_conns, v.xtask_command
    );
    let _ = writeln!(
        d,
        "| workload | negotiated | updates/s | wire bytes per update | payload bytes per update | updates per CPU-s | edge cores | wire bytes, deflate ÷ plain | updates per CPU-s, deflate ÷ plain |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (stem, _, _) in BUSY {
        let plain = Run::find(&r.runs, stem)?;
        let z = Run::find(&r.runs, &format!("{stem}-deflate"))?;
        for (run, first) in [(plain, true), (z, false)] {
            let c = &run.summary.counts;
            let _ = writeln!(
                d,
                "| {} | {} of {} | {} | {:.1} | {:.1} | {} | {:.2} | {} | {} |",
                if first { stem } else { "" },
                c.deflate_connections,
                c.connected,
                num(run.summary.updates_per_s),
                wire_per_update(run),
                c.bytes as f64 / c.updates_total.max(1) as f64,
                num(run.per_cpu()?),
                run.cores("edge")?,
                if first {
                    String::new()
                } else {
                    ratio(wire_per_update(z), wire_per_update(plain))
                },
                if first {
                    String::new()
                } else {
                    ratio(z.per_cpu()?, plain.per_cpu()?)
                },
            );
        }
    }
    let idle = Run::find(&r.runs, "idle")?;
    let idle_z = Run::find(&r.runs, "idle-deflate")?;
    let _ = writeln!(
        d,
        "\nIdle connections: plain {} connected, {:.2} KiB each; deflate negotiated on {} of \
         {} connected, {:.2} KiB each (target ≤ 8 KiB: {}).\n",
        idle.summary.counts.connected,
        per_conn(idle, "edge")? / 1024.0,
        idle_z.summary.counts.deflate_connections,
        idle_z.summary.counts.connected,
        per_conn(idle_z, "edge")? / 1024.0,
        if per_conn(idle_z, "edge")? <= 8192.0 {
            "met"
        } else {
            "**missed**"
        }
    );
    let pairs: Vec<(String, &Run)> = r.runs.iter().map(|run| (run.label.clone(), run)).collect();
    let pairs: Vec<(&str, &Run)> = pairs.iter().map(|(l, run)| (l.as_str(), *run)).collect();
    run_table(&mut d, &pairs)?;
    commands(&mut d, &r.runs);
    Ok(d)
}
