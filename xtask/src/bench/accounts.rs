//! The `accounts` scenario: account channels (protocol 1.1). The writer is
//! `tickmesh-loadgen append`, appending to the stream `acct` with the expected-last-
//! subject-sequence check and stamping each event's `ts` just before its append, so that
//! latency is append to client on one clock.
//!
//! - Live: 10,000 accounts × 1 event/s, and 10,000 subscribers on one edge, one account
//!   each (`subscribe` with `account`, from the snapshot). nats-server's WebSocket beside
//!   it: the same number of clients, each `SUB acct.<account>.>` (other accounts, the same
//!   rate: a run's subscribers start at seq 1 of fresh accounts on both).
//! - Replay: 100,000 events of one account, then one client subscribing with
//!   `from_seq: 1`; the time from its subscribe until seq 100,000 arrives. nats-server's
//!   WebSocket beside it: a JetStream push consumer of the account created by the client
//!   through the JetStream API.
//!
//! Its report is a section of its own in docs/benchmarks.md.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::report::{commands, ms, num, other, yes};
use super::results::{Run, Stored};
use super::runner::{Env, Load, Mesh, MeshSpec, args, loadgen, start_mesh};

/// The edge's HS256 secret in this scenario; each client signs its own token with it.
const SECRET: &str = "bench-accounts-hs256-secret-of-32-bytes";
/// Targets (issue 16).
const TARGET_P99_US: u64 = 20_000;
const TARGET_REPLAY_PER_S: f64 = 50_000.0;
const CONNECT_RATE: u64 = 2_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Accounts {
    pub accounts: u64,
    pub events_per_s: f64,
    pub replay_events: u64,
    pub runs: Vec<Run>,
    /// The writers' own summaries (`tickmesh-loadgen append --out`), by run label.
    pub writers: Vec<(String, serde_json::Value)>,
    /// The edge's account counters after the runs.
    pub edge_counters: Vec<(String, f64)>,
}

pub fn run(env: &Env) -> anyhow::Result<Accounts> {
    let accounts = env.pick(10_000u64, 1_000);
    let replay_events = env.pick(100_000u64, 10_000);
    let window = env.pick(20u64, 8);
    let mut spec = MeshSpec::new("accounts", &["AAPL".into()], 10);
    spec.edge_env = vec![
        ("TICKMESH_EDGE_AUTH__HS256_SECRET", SECRET.into()),
        (
            "TICKMESH_EDGE_LIMITS__MAX_CONNECTIONS_PER_IP",
            "100000".into(),
        ),
    ];
    let mut mesh = start_mesh(env, &spec)?;
    let mut runs = Vec::new();
    let mut writers = Vec::new();

    // Live: the writer runs through the connects, the settle, the warm-up and the window.
    let (settle, warmup) = (2u64, 3u64);
    let live_s = accounts.div_ceil(CONNECT_RATE) + settle + warmup + window + 2;
    // nats-server's run first: the edge's consumers outlive its sessions for a while.
    for (label, nats, prefix, net) in [
        ("nats-live", true, "N", "92"),
        ("tickmesh-live", false, "B", "91"),
    ] {
        let out = env.out.join(format!("accounts-writer-{label}.json"));
        let mut writer = start_writer(
            env,
            &mesh,
            &out,
            &[
                "--accounts",
                &accounts.to_string(),
                "--account-prefix",
                prefix,
                "--per-s",
                &accounts.to_string(),
                "--duration-s",
                &live_s.to_string(),
            ],
        )?;
        mesh.extra_targets = vec![format!("writer={}", writer.id())];
        let mut a = args(&[
            "--conns",
            &accounts.to_string(),
            "--accounts",
            &accounts.to_string(),
            "--account-prefix",
            prefix,
            "--threads",
            "2",
            "--source-net",
            net,
            "--connect-rate",
            &CONNECT_RATE.to_string(),
            "--settle-s",
            &settle.to_string(),
            "--warmup-s",
            &warmup.to_string(),
            "--duration-s",
            &window.to_string(),
        ]);
        if !nats {
            a.extend(args(&["--token-secret", SECRET]));
        }
        let load = Load {
            label,
            nats,
            args: a,
        };
        let run = loadgen(env, &mesh, "accounts", &load);
        let written = finish_writer(&mut writer, &out, Duration::from_secs(live_s + 40));
        runs.push(run?);
        writers.push((label.to_string(), written?));
    }
    mesh.extra_targets.clear();

    // Replay: the account's events first, then one client from seq 1.
    let out = env.out.join("accounts-writer-replay.json");
    let mut writer = start_writer(
        env,
        &mesh,
        &out,
        &[
            "--accounts",
            "1",
            "--account-prefix",
            "R",
            "--bulk",
            &replay_events.to_string(),
        ],
    )?;
    writers.push((
        "replay".to_string(),
        finish_writer(&mut writer, &out, Duration::from_secs(300))?,
    ));
    for (label, nats, net) in [
        ("tickmesh-replay", false, "93"),
        ("nats-replay", true, "94"),
    ] {
        let mut a = args(&[
            "--conns",
            "1",
            "--accounts",
            "1",
            "--account-prefix",
            "R",
            "--from-seq",
            "1",
            "--caught-up-seq",
            &replay_events.to_string(),
            "--settle-s",
            "0",
            "--warmup-s",
            "0",
            "--duration-s",
            env.pick("20", "10"),
            "--source-net",
            net,
        ]);
        if !nats {
            a.extend(args(&["--token-secret", SECRET]));
        }
        runs.push(loadgen(
            env,
            &mesh,
            "accounts",
            &Load {
                label,
                nats,
                args: a,
            },
        )?);
    }
    let port = mesh.edge_port;
    let edge_counters = [
        "tickmesh_edge_account_events_in_total",
        "tickmesh_edge_account_restarts_total",
        "tickmesh_edge_slow_consumer_total",
    ]
    .iter()
    .map(|n| Ok((n.to_string(), super::runner::metric(port, n)?)))
    .collect::<anyhow::Result<_>>()?;
    mesh.stop();
    Ok(Accounts {
        accounts,
        events_per_s: accounts as f64,
        replay_events,
        runs,
        writers,
        edge_counters,
    })
}

/// `tickmesh-loadgen append` against the mesh's nats-server, its summary to `out`.
fn start_writer(
    env: &Env,
    mesh: &Mesh,
    out: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let _ = std::fs::remove_file(out);
    eprintln!(
        "xtask: accounts: tickmesh-loadgen append {}",
        extra.join(" ")
    );
    Command::new(env.bin.join("tickmesh-loadgen"))
        .arg("append")
        .arg("--nats")
        .arg(format!("127.0.0.1:{}", mesh.nats_port))
        .args(extra)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tickmesh-loadgen append")
}

/// Waits (at most `limit`) for the writer to end; its summary.
fn finish_writer(
    writer: &mut Child,
    out: &std::path::Path,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = writer.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = writer.kill();
            let _ = writer.wait();
            bail!(
                "the account writer did not end within {} s",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("the account writer failed: {status}");
    }
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// A figure of a writer's summary.
fn written(r: &Accounts, label: &str, field: &str) -> anyhow::Result<f64> {
    r.writers
        .iter()
        .find(|(l, _)| l == label)
        .and_then(|(_, v)| v[field].as_f64())
        .with_context(|| format!("no `{field}` in the writer summary of {label}"))
}

/// Events delivered out of order, twice or never (gaps), and other protocol errors.
fn faults(run: &Run) -> String {
    let c = &run.summary.counts;
    format!(
        "{} gaps ({} missing), {} regressions, {} other",
        c.seq_gaps,
        c.seq_missing,
        c.seq_regressions,
        c.protocol_errors + c.connect_failures
    )
}

pub fn report(v: &Stored<Accounts>) -> anyhow::Result<String> {
    let quick = v.quick_mark();
    let r = &v.result;
    let mut d = String::new();
    let _ = writeln!(d, "## Account channels{quick}\n");
    let _ = writeln!(
        d,
        "The writer (`tickmesh-loadgen append`) appends {} events/s over {} accounts (1 \
         event/s each) to the stream `acct`, in 1 ms steps, each with the expected-last-\
         subject-sequence check over `acct.<account>.>` and its `ts` stamped just before \
         the append; acknowledgements are awaited in a pipeline. TickMesh: {} clients on \
         one edge, one account each (`subscribe` with `account`, from its snapshot; each \
         client's token names its account). nats-server WS: as many clients, each `SUB \
         acct.<account>.>` (other accounts at the same rate). Latency is the client's wall \
         clock at receipt minus the event's `ts` (same host, one clock). Every seq must \
         arrive once and in order. Targets: p99 append to client ≤ {} ms; a replay of {} \
         events ≥ {} events/s. Produced by `{}`.\n",
        num(r.events_per_s),
        num(r.accounts as f64),
        num(r.accounts as f64),
        TARGET_P99_US / 1000,
        num(r.replay_events as f64),
        num(TARGET_REPLAY_PER_S),
        v.xtask_command
    );
    let _ = writeln!(
        d,
        "| run | subscribers connected | events/s delivered | p50 | p99 | p99.9 | max | seqs | edge cores | nats-server cores | writer cores | loadgen cores | other load | p99 ≤ {} ms? |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        TARGET_P99_US / 1000
    );
    for (label, name) in [
        ("tickmesh-live", "TickMesh"),
        ("nats-live", "nats-server WS"),
    ] {
        let run = Run::find(&r.runs, label)?;
        let s = &run.summary;
        let l = &s.latency;
        let edge = match label {
            "nats-live" => "".to_string(),
            _ => format!("{:.2}", run.cores("edge")?),
        };
        let _ = writeln!(
            d,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            s.counts.connected,
            num(s.updates_per_s),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            faults(run),
            edge,
            run.cores("nats-server")?,
            run.cores("writer")?,
            s.loadgen_cores,
            other(run),
            yes(l.count > 0 && l.p99_us <= TARGET_P99_US)
        );
    }
    d.push('\n');
    for label in ["tickmesh-live", "nats-live"] {
        let _ = writeln!(
            d,
            "- Writer of `{label}`: {} appended at {} events/s, {} refused or not \
             acknowledged; acknowledgement p50 {}, p99 {}.",
            num(written(r, label, "appended")?),
            num(written(r, label, "events_per_s")?),
            num(written(r, label, "failed")?),
            ms(written(r, label, "ack_p50_us")? as u64),
            ms(written(r, label, "ack_p99_us")? as u64)
        );
    }
    let run = Run::find(&r.runs, "tickmesh-live")?;
    let _ = writeln!(
        d,
        "- TickMesh closes by code: {:?}; errors: {:?}. The edge's counters after every run: {}.\n",
        run.summary.counts.closes,
        run.summary.counts.errors_by_code,
        r.edge_counters
            .iter()
            .map(|(n, v)| format!("`{n}` {}", num(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(
        d,
        "### Replay\n\n{} events of one account appended ({} events/s by the bulk writer, \
         no expected-sequence check), then one client subscribes from seq 1 and is caught \
         up when seq {} arrives.\n",
        num(r.replay_events as f64),
        num(written(r, "replay", "events_per_s")?),
        num(r.replay_events as f64)
    );
    let _ = writeln!(
        d,
        "| run | caught up after | events/s | seqs | ≥ {} events/s? |\n|---|---|---|---|---|",
        num(TARGET_REPLAY_PER_S)
    );
    for (label, name) in [
        ("tickmesh-replay", "TickMesh (`from_seq: 1`)"),
        ("nats-replay", "nats-server WS (JetStream push consumer)"),
    ] {
        let run = Run::find(&r.runs, label)?;
        let f = &run.summary.full_picture;
        let rate = match f.count {
            0 => 0.0,
            _ => r.replay_events as f64 / (f.max_us as f64 / 1e6),
        };
        let _ = writeln!(
            d,
            "| {name} | {} | {} | {} | {} |",
            match f.count {
                0 => "never".to_string(),
                _ => ms(f.max_us),
            },
            num(rate),
            faults(run),
            yes(rate >= TARGET_REPLAY_PER_S)
        );
    }
    d.push('\n');
    commands(&mut d, &r.runs);
    Ok(d)
}
