//! `cargo xtask bench [--quick] [--scenario NAME]...`: builds release binaries, runs each
//! scenario on loopback against TickMesh and against nats-server's own WebSocket listener
//! with the same workload, and writes `docs/benchmarks.md`.
//!
//! Each scenario starts its own nats-server (nats/websocket.conf), ingest (a generated
//! universe at a given rate) and edge process(es), runs `tickmesh-loadgen` once per system,
//! and keeps its results in `target/bench/<scenario>.json`. The `ingest` scenario instead
//! runs `tickmesh-ingest bench` against its own nats-server (nats/local.conf): ingest's
//! publish rate beside the raw async-nats publish rate of the same run, a gap-checking
//! subscriber and the `md_last` writer's lag. The report is rebuilt from
//! every result there, so one scenario can be re-run alone (`--report-only` rebuilds the
//! report alone). Only the part of the report between its `bench:begin` and `bench:end`
//! markers is rewritten.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use tickmesh_devkit::{NatsSpec, free_port, wait_http};

use crate::{Procs, root, run, tools};

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--scenario NAME]... [--no-build] [--report-only]
scenarios: idle, throughput, latency, conflation, slow, storm, ingest, resubscribe, curve (default: all)";

mod curve;

const SCENARIOS: [&str; 9] = [
    "idle",
    "throughput",
    "latency",
    "conflation",
    "slow",
    "storm",
    "ingest",
    "resubscribe",
    "curve",
];

/// Scenarios with a section of their own in docs/benchmarks.md, outside the main block:
/// running one alone leaves the main block as it is.
const OWN_SECTION: [&str; 2] = ["resubscribe", "curve"];

/// The generated part of docs/benchmarks.md lies between these lines; text outside them
/// (the analysis, other benchmarks' sections) is kept when the report is rebuilt.
const BEGIN: &str =
    "<!-- bench:begin: written by `cargo xtask bench`; edit outside these markers -->";
const END: &str = "<!-- bench:end -->";
const RESUBSCRIBE_BEGIN: &str =
    "<!-- bench:resubscribe:begin: written by `cargo xtask bench --scenario resubscribe` -->";
const RESUBSCRIBE_END: &str = "<!-- bench:resubscribe:end -->";
const CURVE_BEGIN: &str =
    "<!-- bench:curve:begin: written by `cargo xtask bench --scenario curve` -->";
const CURVE_END: &str = "<!-- bench:curve:end -->";

struct Opts {
    quick: bool,
    report_only: bool,
    scenarios: Vec<String>,
    build: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        report_only: false,
        scenarios: Vec::new(),
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.build = false,
            "--report-only" => o.report_only = true,
            "--scenario" => {
                let name = it.next().context("--scenario needs a name")?;
                for n in name.split(',') {
                    if !SCENARIOS.contains(&n) {
                        bail!("unknown scenario {n:?}\n{USAGE}");
                    }
                    o.scenarios.push(n.to_string());
                }
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    Ok(o)
}

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let root = root();
    let nats = tools::ensure(&root)?;
    if opts.build && !opts.report_only {
        eprintln!("xtask: building release binaries (a cold build takes about 10 minutes)");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--release", "-p", "tickmesh-ingest"])
            .current_dir(&root);
        // The ingest scenario needs ingest alone; the others an edge and the load generator.
        if opts.scenarios.iter().any(|n| n != "ingest") {
            build.args(["-p", "tickmesh-edge", "-p", "tickmesh-loadgen"]);
        }
        run(&mut build)?;
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(out_dir.join("logs"))?;
    let env = Env {
        nats,
        bin: root.join("target/release"),
        out: out_dir.clone(),
        quick: opts.quick,
    };
    let command = format!(
        "cargo xtask bench{}",
        args.iter().fold(String::new(), |mut s, a| {
            s.push(' ');
            s.push_str(a);
            s
        })
    );
    let scenarios = if opts.report_only {
        &[][..]
    } else {
        &opts.scenarios[..]
    };
    for name in scenarios {
        eprintln!("xtask: scenario {name}");
        let started = Instant::now();
        let result = match name.as_str() {
            "idle" => idle(&env),
            "throughput" => throughput(&env),
            "latency" => latency(&env),
            "conflation" => conflation(&env),
            "slow" => slow(&env),
            "storm" => storm(&env),
            "ingest" => ingest(&env),
            "resubscribe" => resubscribe(&env),
            "curve" => curve::run(&env),
            _ => unreachable!("scenario names are checked when parsed"),
        };
        let mut result = result.with_context(|| format!("scenario {name}"))?;
        result["quick"] = json!(opts.quick);
        result["took_s"] = json!(started.elapsed().as_secs());
        result["xtask_command"] = json!(command);
        std::fs::write(
            out_dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(&result)?,
        )?;
    }
    let path = root.join("docs/benchmarks.md");
    let mut page = std::fs::read_to_string(&path).unwrap_or_default();
    // The main block from the main scenarios' results; never from none (it would say
    // "not run" over the figures of an earlier run).
    let main = |n: &str| !OWN_SECTION.contains(&n);
    let have_main = SCENARIOS.iter().any(|n| main(n) && load(&env, n).is_some());
    let ran_main = opts.report_only || scenarios.iter().any(|n| main(n));
    if have_main && ran_main {
        page = with_section(&page, BEGIN, END, &report(&env)?);
    }
    if let Some(v) = load(&env, "resubscribe") {
        page = with_section(
            &page,
            RESUBSCRIBE_BEGIN,
            RESUBSCRIBE_END,
            &resubscribe_report(&v),
        );
    }
    if let Some(v) = load(&env, "curve") {
        let (section, svg) = curve::report(&v)?;
        page = with_section(&page, CURVE_BEGIN, CURVE_END, &section);
        std::fs::write(root.join("docs/bench-curve.svg"), svg)?;
    }
    std::fs::write(&path, page)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// `page` with the text between `begin` and `end` replaced by `body` (appended, with the
/// markers, when they are missing).
fn with_section(page: &str, begin: &str, end: &str, body: &str) -> String {
    match (page.find(begin), page.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{body}{}", &page[..b], &page[e..]),
        _ if page.trim().is_empty() => format!("# Benchmarks\n\n{begin}\n{body}{end}\n"),
        _ => format!("{}\n\n{begin}\n{body}{end}\n", page.trim_end()),
    }
}

struct Env {
    nats: PathBuf,
    bin: PathBuf,
    out: PathBuf,
    quick: bool,
}

impl Env {
    fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A running nats-server, ingest and edge(s).
struct Mesh {
    procs: Procs,
    nats_pid: u32,
    ingest_pid: u32,
    edge_pids: Vec<u32>,
    edge_port: u16,
    ws_port: u16,
    _store: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct MeshSpec<'a> {
    name: &'a str,
    universe: Vec<String>,
    ticks_per_sec: u32,
    edges: usize,
    edge_env: Vec<(&'a str, String)>,
    /// Ingest's pacing step (`sim.batch_ms`): the ticks due in each step go out together.
    batch_ms: u64,
}

fn log_file(env: &Env, name: &str) -> anyhow::Result<Stdio> {
    Ok(std::fs::File::create(env.out.join("logs").join(name))?.into())
}

/// A nats-server from `conf` (nats/local.conf or nats/websocket.conf) on free loopback
/// ports, with its own store, registered in `procs`; returns (pid, client port, store)
/// once it is healthy. `ws_port` fills TICKMESH_NATS_WS_PORT.
fn start_nats(
    env: &Env,
    procs: &mut Procs,
    conf: &str,
    name: &str,
    ws_port: Option<u16>,
) -> anyhow::Result<(u32, u16, TempDir)> {
    let store = TempDir(env.out.join(format!("store-{name}")));
    let _ = std::fs::remove_dir_all(&store.0);
    std::fs::create_dir_all(&store.0)?;
    let mut spec = NatsSpec::new(conf, free_port(), free_port(), &store.0.join("js"));
    spec.ws_port = ws_port;
    let server = spec
        .command(&env.nats)
        .stdout(log_file(env, &format!("{name}-nats.log"))?)
        .stderr(log_file(env, &format!("{name}-nats.err"))?)
        .spawn()
        .context("starting nats-server")?;
    let pid = server.id();
    procs.0.push(("nats-server", server));
    if let Some((_, server)) = procs.0.last_mut() {
        spec.wait_healthy(server, Duration::from_secs(10))?;
    }
    Ok((pid, spec.port, store))
}

/// Ingest's pacing step in the latency-bound scenarios: 1 ms, so that ticks leave about
/// when they are due, as from a feed, rather than in 5 ms bursts (the default) that every
/// server then has to work through client by client.
const LATENCY_BATCH_MS: u64 = 1;

fn start_mesh(env: &Env, spec: &MeshSpec) -> anyhow::Result<Mesh> {
    let (ws_port, edge_port) = (free_port(), free_port());
    let mut procs = Procs(Vec::new());
    let (nats_pid, port, store) = start_nats(
        env,
        &mut procs,
        "nats/websocket.conf",
        spec.name,
        Some(ws_port),
    )?;
    let url = format!("[\"nats://127.0.0.1:{port}\"]");

    // A steady rate (no burst at the open), level-1 ticks only (no depth, no options), so
    // that NATS payloads and TickMesh `quote` objects carry the same fields.
    let mut toml = String::from(
        "# Generated by cargo xtask bench.\n[sim]\ndepth = 0\n\n[sim.session]\nopen_burst = 1.0\n\n\
         [sim.options]\nunderlyings = []\n\n",
    );
    for (i, s) in spec.universe.iter().enumerate() {
        let _ = write!(
            toml,
            "[[sim.universe]]\nsymbol = \"{s}\"\nprice = {}\n",
            50 + i % 400
        );
    }
    let ingest_toml = env.out.join(format!("{}-ingest.toml", spec.name));
    std::fs::write(&ingest_toml, toml)?;
    let ingest = Command::new(env.bin.join("tickmesh-ingest"))
        .arg("--config")
        .arg(&ingest_toml)
        .env("TICKMESH_INGEST_NATS__URLS", &url)
        .env(
            "TICKMESH_INGEST_SIM__TICKS_PER_SEC",
            spec.ticks_per_sec.to_string(),
        )
        .env("TICKMESH_INGEST_SIM__BATCH_MS", spec.batch_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(log_file(env, &format!("{}-ingest.log", spec.name))?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tickmesh-ingest")?;
    let ingest_pid = ingest.id();
    procs.0.push(("tickmesh-ingest", ingest));

    let mut edge_pids = Vec::new();
    for k in 0..spec.edges {
        let mut cmd = Command::new(env.bin.join("tickmesh-edge"));
        cmd.env("TICKMESH_EDGE_LISTEN", format!("127.0.0.1:{edge_port}"))
            .env("TICKMESH_EDGE_NATS__URLS", &url)
            .env("TICKMESH_EDGE_NAME", format!("bench-edge-{}", k + 1))
            // The load comes from a few loopback addresses as anonymous sessions: lift
            // the per-address and per-user caps, and the process cap to what 20,000
            // open files allow.
            .env("TICKMESH_EDGE_LIMITS__MAX_CONNECTIONS", "19500")
            .env("TICKMESH_EDGE_LIMITS__MAX_CONNECTIONS_PER_IP", "100000")
            .env("TICKMESH_EDGE_LIMITS__MAX_SESSIONS_PER_USER", "100000")
            // Anonymous sessions with every symbol at every tick: the edge refuses that
            // unless it is asked for by name.
            .env("TICKMESH_EDGE_AUTH__ANONYMOUS", "true")
            .env("TICKMESH_EDGE_AUTH__ALLOW_OPEN_ANONYMOUS", "true")
            .env("TICKMESH_EDGE_AUTH__ANONYMOUS_ENT", "[\"*\"]")
            .env("TICKMESH_EDGE_AUTH__ANONYMOUS_TIER", "realtime")
            .env("TICKMESH_EDGE_LIMITS__MAX_HANDSHAKES_PER_IP", "100000")
            .env("TICKMESH_EDGE_LIMITS__MAX_SYMBOLS_PER_IP", "1000000")
            .env("TICKMESH_EDGE_LIMITS__MAX_NEW_SYMBOLS_PER_S", "1000000")
            .env("RUST_LOG", "warn")
            .stdout(log_file(env, &format!("{}-edge{}.log", spec.name, k + 1))?)
            .stderr(Stdio::inherit());
        for (key, value) in &spec.edge_env {
            cmd.env(key, value);
        }
        let edge = cmd.spawn().context("starting tickmesh-edge")?;
        edge_pids.push(edge.id());
        procs.0.push(("tickmesh-edge", edge));
    }
    wait_http(
        &format!("http://127.0.0.1:{edge_port}/readyz"),
        Duration::from_secs(20),
    )?;
    // Every edge binds before it reports ready; give the others as long, and the KV
    // writer two rounds so that snapshots exist.
    std::thread::sleep(Duration::from_millis(1500));
    for (name, child) in procs.0.iter_mut() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited at start: {status}");
        }
    }
    Ok(Mesh {
        procs,
        nats_pid,
        ingest_pid,
        edge_pids,
        edge_port,
        ws_port,
        _store: store,
    })
}

impl Mesh {
    /// Stops ingest (SIGTERM, then SIGKILL after 10 s): no tick flows from here on.
    fn stop_ingest(&mut self) {
        if let Some(i) = self
            .procs
            .0
            .iter()
            .position(|(n, _)| *n == "tickmesh-ingest")
        {
            let (_, mut child) = self.procs.0.remove(i);
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            self.ingest_pid = 0;
        }
    }

    fn target_pids(&self) -> Vec<String> {
        let mut v = vec![format!("nats-server={}", self.nats_pid)];
        if self.ingest_pid != 0 {
            v.push(format!("ingest={}", self.ingest_pid));
        }
        for (k, pid) in self.edge_pids.iter().enumerate() {
            v.push(format!("edge{}={pid}", k + 1));
        }
        v
    }

    fn stop(self) {
        drop(self.procs);
    }
}

/// One load generator run.
struct Load<'a> {
    label: &'a str,
    nats: bool,
    args: Vec<String>,
}

fn universe(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i:04}")).collect()
}

fn loadgen(env: &Env, mesh: &Mesh, scenario: &str, load: &Load) -> anyhow::Result<Value> {
    let out = env.out.join(format!("{scenario}-{}.json", load.label));
    let _ = std::fs::remove_file(&out);
    let port = if load.nats {
        mesh.ws_port
    } else {
        mesh.edge_port
    };
    let mut cmd = Command::new(env.bin.join("tickmesh-loadgen"));
    cmd.arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--target", if load.nats { "nats" } else { "tickmesh" }])
        .args(&load.args)
        .arg("--out")
        .arg(&out);
    for t in mesh.target_pids() {
        cmd.arg("--target-pid").arg(t);
    }
    eprintln!(
        "xtask: {scenario}/{}: tickmesh-loadgen {}",
        load.label,
        load.args.join(" ")
    );
    let status = cmd
        .stdout(Stdio::inherit())
        .status()
        .context("running tickmesh-loadgen")?;
    if !status.success() {
        bail!("tickmesh-loadgen failed: {status}");
    }
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let mut v: Value = serde_json::from_str(&text)?;
    v["label"] = json!(load.label);
    v["system"] = json!(if load.nats { "nats" } else { "tickmesh" });
    v["command"] = json!(format!(
        "tickmesh-loadgen --server 127.0.0.1:PORT --target {} {}",
        if load.nats { "nats" } else { "tickmesh" },
        load.args.join(" ")
    ));
    Ok(v)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn join(symbols: &[String]) -> String {
    symbols.join(",")
}

/// Reads one counter from the edge's /metrics.
fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// A histogram from the edge's /metrics: its count and how many fell within 0.1, 0.5, 1
/// and 2.5 s.
fn histogram(port: u16, name: &str) -> anyhow::Result<Value> {
    let bucket = |le: &str| metric(port, &format!("{name}_bucket{{le=\"{le}\"}}"));
    Ok(json!({
        "count": metric(port, &format!("{name}_count"))?,
        "le_0.1": bucket("0.1")?,
        "le_0.5": bucket("0.5")?,
        "le_1": bucket("1")?,
        "le_2.5": bucket("2.5")?,
    }))
}

fn idle(env: &Env) -> anyhow::Result<Value> {
    let one = env.pick(19_500u64, 2_000);
    let many = env.pick(100_000u64, 10_000);
    let edges = env.pick(6usize, 2);
    let procs_one = env.pick("2", "1");
    let mut runs = Vec::new();
    let spec = MeshSpec {
        name: "idle",
        universe: universe(10),
        ticks_per_sec: 100,
        edges: 1,
        edge_env: vec![],
        batch_ms: 5,
    };
    let mesh = start_mesh(env, &spec)?;
    let common = |n: u64, procs: &str, net: &str| {
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
    };
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
                args: common(one, procs_one, net),
            },
        )?);
    }
    mesh.stop();
    let spec = MeshSpec {
        name: "idle-many",
        universe: universe(10),
        ticks_per_sec: 100,
        edges,
        edge_env: vec![],
        batch_ms: 5,
    };
    let mesh = start_mesh(env, &spec)?;
    let procs = many.div_ceil(17_000).max(1).to_string();
    let mut a = common(many, &procs, "13");
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
    Ok(json!({
        "scenario": "idle",
        "edges_many": edges,
        "conns_one": one,
        "conns_many": many,
        "runs": runs,
    }))
}

/// Later occurrences of a flag replace earlier ones.
fn fix_repeat(a: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < a.len() {
        if a[i].starts_with("--") && i + 1 < a.len() && !a[i + 1].starts_with("--") {
            if let Some(p) = out.iter().position(|x| *x == a[i]) {
                out[p + 1] = a[i + 1].clone();
            } else {
                out.push(a[i].clone());
                out.push(a[i + 1].clone());
            }
            i += 2;
        } else {
            out.push(a[i].clone());
            i += 1;
        }
    }
    out
}

fn throughput(env: &Env) -> anyhow::Result<Value> {
    let conns = env.pick(1000u64, 200);
    let symbols = universe(50);
    let rate = 1500;
    let mesh = start_mesh(
        env,
        &MeshSpec {
            name: "throughput",
            universe: symbols.clone(),
            ticks_per_sec: rate,
            edges: 1,
            edge_env: vec![],
            batch_ms: 5,
        },
    )?;
    let duration = env.pick("15", "5");
    let common = |format: &str, net: &str| {
        args(&[
            "--conns",
            &conns.to_string(),
            "--symbols",
            &join(&symbols),
            "--per-conn",
            "50",
            "--interval-ms",
            "0",
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
    };
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
                args: common(format, net),
            },
        )?);
    }
    mesh.stop();
    Ok(json!({
        "scenario": "throughput",
        "ticks_per_sec_in": rate,
        "conns": conns,
        "runs": runs,
    }))
}

fn latency_load(conns: u64, symbols: &[String], duration: &str, net: &str) -> Vec<String> {
    args(&[
        "--conns",
        &conns.to_string(),
        "--symbols",
        &join(symbols),
        "--per-conn",
        "1",
        "--interval-ms",
        "0",
        "--mode",
        "quote",
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
    ])
}

fn latency(env: &Env) -> anyhow::Result<Value> {
    let symbols = universe(100);
    let rate = 10_000;
    let mesh = start_mesh(
        env,
        &MeshSpec {
            name: "latency",
            universe: symbols.clone(),
            ticks_per_sec: rate,
            edges: 1,
            edge_env: vec![],
            batch_ms: LATENCY_BATCH_MS,
        },
    )?;
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
                args: latency_load(1000, &symbols, duration, net),
            },
        )?);
    }
    mesh.stop();
    Ok(json!({
        "scenario": "latency",
        "ticks_per_sec_in": rate,
        "conns": 1000,
        "runs": runs,
    }))
}

fn conflation(env: &Env) -> anyhow::Result<Value> {
    let conns = env.pick(10_000u64, 2_000);
    let nats_conns = env.pick(100u64, 20);
    let rate = 20_000;
    let mesh = start_mesh(
        env,
        &MeshSpec {
            name: "conflation",
            universe: vec!["AAPL".into()],
            ticks_per_sec: rate,
            edges: 1,
            edge_env: vec![],
            batch_ms: 5,
        },
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
    Ok(json!({
        "scenario": "conflation",
        "ticks_per_sec_in": rate,
        "conns": conns,
        "nats_conns": nats_conns,
        "runs": runs,
    }))
}

fn slow(env: &Env) -> anyhow::Result<Value> {
    let symbols = universe(100);
    let rate = 10_000;
    let mesh = start_mesh(
        env,
        &MeshSpec {
            name: "slow",
            universe: symbols.clone(),
            ticks_per_sec: rate,
            edges: 1,
            edge_env: vec![],
            batch_ms: LATENCY_BATCH_MS,
        },
    )?;
    let duration = env.pick("30", "12");
    let mut runs = Vec::new();
    for (label, nats, skip, net) in [
        ("tickmesh-baseline", false, true, "51"),
        ("tickmesh-with-slow", false, false, "52"),
        ("nats-baseline", true, true, "53"),
        ("nats-with-slow", true, false, "54"),
    ] {
        let mut a = latency_load(1000, &symbols, duration, net);
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
    Ok(json!({
        "scenario": "slow",
        "ticks_per_sec_in": rate,
        "edge_slow_consumer_closed": closed,
        "edge_slow_consumer_conflated": conflated,
        "runs": runs,
    }))
}

fn storm(env: &Env) -> anyhow::Result<Value> {
    let conns = env.pick(10_000u64, 2_000);
    let symbols = universe(60);
    let rate = 200;
    let mesh = start_mesh(
        env,
        &MeshSpec {
            name: "storm",
            universe: symbols.clone(),
            ticks_per_sec: rate,
            edges: 1,
            edge_env: vec![],
            batch_ms: 5,
        },
    )?;
    let kv_metric = "tickmesh_edge_snapshot_reads_total{source=\"kv\"}";
    let before = metric(mesh.edge_port, kv_metric)?;
    let common = |net: &str| {
        args(&[
            "--conns",
            &conns.to_string(),
            "--symbols",
            &join(&symbols),
            "--per-conn",
            "20",
            "--interval-ms",
            "1000",
            "--mode",
            "ltp",
            "--connect-rate",
            "0",
            "--threads",
            "2",
            "--source-net",
            net,
            "--settle-s",
            "0",
            "--warmup-s",
            "0",
            "--duration-s",
            "10",
            "--full-picture-ms",
            "2000",
        ])
    };
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
    // The edge's own view: upgrade (request to WebSocket) and subscribe-to-snapshots times.
    let edge_times = json!({
        "handshake": histogram(mesh.edge_port, "tickmesh_edge_handshake_seconds")?,
        "snapshot": histogram(mesh.edge_port, "tickmesh_edge_snapshot_seconds")?,
    });
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
    Ok(json!({
        "scenario": "storm",
        "ticks_per_sec_in": rate,
        "conns": conns,
        "symbols": symbols.len(),
        "kv_reads": after - before,
        "local_reads": local,
        "cache_reads": cache,
        "edge_times": edge_times,
        "runs": [tm, nats],
    }))
}

/// Client-driven state stays bounded: 20 sessions re-send a 200-symbol subscribe (`quote`,
/// 250 ms conflation) at their tier's rate limit (100 requests/s, a 200-entry subscribe
/// costing 2) for two minutes, with ingest stopped so that every symbol is quiet (the case
/// where per-subscribe state once grew until a tick came). The edge's RSS at the start and
/// end of the window, beside nats-server's with the same clients re-sending UNSUB and SUB.
fn resubscribe(env: &Env) -> anyhow::Result<Value> {
    let symbols = universe(200);
    let mut mesh = start_mesh(
        env,
        &MeshSpec {
            name: "resubscribe",
            universe: symbols.clone(),
            ticks_per_sec: 400,
            edges: 1,
            edge_env: vec![],
            batch_ms: 5,
        },
    )?;
    mesh.stop_ingest();
    let duration = env.pick("120", "20");
    let common = |net: &str| {
        args(&[
            "--conns",
            "20",
            "--symbols",
            &join(&symbols),
            "--per-conn",
            "200",
            "--interval-ms",
            "250",
            "--mode",
            "quote",
            "--resubscribe-per-s",
            "50",
            "--source-net",
            net,
            "--settle-s",
            "1",
            "--warmup-s",
            "3",
            "--duration-s",
            duration,
        ])
    };
    let mut runs = Vec::new();
    for (label, nats, net) in [("tickmesh", false, "71"), ("nats", true, "72")] {
        runs.push(loadgen(
            env,
            &mesh,
            "resubscribe",
            &Load {
                label,
                nats,
                args: common(net),
            },
        )?);
    }
    let edge_sessions = metric(mesh.edge_port, "tickmesh_edge_sessions ")?;
    mesh.stop();
    Ok(json!({
        "scenario": "resubscribe",
        "conns": 20,
        "symbols": symbols.len(),
        "resubscribe_per_s": 50,
        "duration_s": duration,
        "edge_sessions_after": edge_sessions,
        "runs": runs,
    }))
}

/// A command line with a long `--symbols` list shown by its ends and count.
fn shorten_symbols(command: &str) -> String {
    let mut words: Vec<String> = command.split(' ').map(str::to_string).collect();
    for i in 1..words.len() {
        if words[i - 1] == "--symbols" {
            let list: Vec<&str> = words[i].split(',').collect();
            if list.len() > 4 {
                words[i] = format!(
                    "{},{},…,{} ({} symbols)",
                    list[0],
                    list[1],
                    list[list.len() - 1],
                    list.len()
                );
            }
        }
    }
    words.join(" ")
}

fn resubscribe_report(v: &Value) -> String {
    let mut md = String::new();
    let quick = if v["quick"] == true { " (--quick)" } else { "" };
    let _ = writeln!(
        md,
        "## Memory under a resubscribe flood{quick}\n\n\
         {} sessions each re-send a subscribe of the same {} symbols (`quote`, 250 ms \
         conflation) {} times a second, their tier's rate limit, for {} s, with ingest stopped \
         (every symbol quiet). nats-server WS: the same clients re-send `UNSUB` and `SUB` of \
         each subject as often. Produced by `{}`.\n",
        v["conns"],
        v["symbols"],
        v["resubscribe_per_s"],
        v["duration_s"].as_str().unwrap_or("?"),
        v["xtask_command"]
            .as_str()
            .unwrap_or("cargo xtask bench --scenario resubscribe"),
    );
    let _ = writeln!(
        md,
        "| server | requests re-sent | refused `rate_limited` | RSS before clients | RSS window start | RSS window end | RSS max | cores | other load |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (label, who, name) in [
        ("tickmesh", "TickMesh edge", "edge"),
        ("nats", "nats-server WS", "nats-server"),
    ] {
        let r = run_of(v, label);
        if r.is_null() {
            continue;
        }
        let mib = |field: &str| format!("{:.1} MiB", kib(r, name, field) / 1024.0);
        let _ = writeln!(
            md,
            "| {who} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} cores |",
            num(f(&r["counts"]["resubscribes"])),
            num(f(&r["counts"]["errors_by_code"]["rate_limited"])),
            mib("rss_before_kib"),
            mib("rss_window_start_kib"),
            mib("rss_end_kib"),
            mib("rss_max_kib"),
            cores(r, name),
            f(&r["other_cores"]),
        );
    }
    let _ = writeln!(
        md,
        "\nLoad generator commands: {}.\n",
        v["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["command"].as_str())
            .map(|c| format!("`{}`", shorten_symbols(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md
}

/// Target rates of the ingest scenario: the publish phase, and the phase with the
/// gap-checking subscriber.
const INGEST_RATE: u32 = 1_000_000;
const INGEST_CHECK_RATE: u32 = 500_000;

/// CPU seconds used so far by process `pid` (all threads), from `/proc/<pid>/stat`.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses), utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `tickmesh-ingest bench` against its own nats-server: the tick path alone, the raw
/// async-nats publish rate, ingest at 1 M ticks/s, then ingest at 500k ticks/s with a
/// subscriber that checks every symbol's seq.
fn ingest(env: &Env) -> anyhow::Result<Value> {
    let seconds = env.pick(10u64, 3);
    let mut procs = Procs(Vec::new());
    let (nats_pid, port, _store) = start_nats(env, &mut procs, "nats/local.conf", "ingest", None)?;
    let bench_args = args(&[
        "bench",
        "--rate",
        &INGEST_RATE.to_string(),
        "--check-rate",
        &INGEST_CHECK_RATE.to_string(),
        "--seconds",
        &seconds.to_string(),
    ]);
    eprintln!("xtask: ingest: tickmesh-ingest {}", bench_args.join(" "));
    let (load_before, nats_cpu_before) = (loadavg(), proc_cpu_secs(nats_pid));
    let started = Instant::now();
    let mut child = Command::new(env.bin.join("tickmesh-ingest"))
        .args(&bench_args)
        .env(
            "TICKMESH_INGEST_NATS__URLS",
            format!("[\"nats://127.0.0.1:{port}\"]"),
        )
        .env("RUST_LOG", "warn,tickmesh_ingest::bench=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tickmesh-ingest bench")?;
    // Its logs share stdout with the report: pass them on as they come, keep the report
    // (the table, then the JSON comment).
    let stdout = child.stdout.take().context("the bench's stdout")?;
    let read = (|| -> anyhow::Result<String> {
        let mut text = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.context("reading the bench's output")?;
            if text.is_empty() && !line.starts_with('|') {
                eprintln!("{line}");
            } else {
                text.push_str(&line);
                text.push('\n');
            }
        }
        Ok(text)
    })();
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().context("running tickmesh-ingest bench")?;
    let text = read?;
    let wall_s = started.elapsed().as_secs_f64();
    let nats_cpu = proc_cpu_secs(nats_pid)
        .zip(nats_cpu_before)
        .map(|(after, before)| after - before);
    let load_after = loadavg();
    drop(procs);
    if !status.success() {
        bail!("tickmesh-ingest bench failed: {status}");
    }
    std::fs::write(env.out.join("ingest.md"), &text)?;
    // The report ends with its figures as JSON in an HTML comment.
    const MARK: &str = "<!-- tickmesh-ingest bench: ";
    let figures = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(MARK)?.strip_suffix(" -->"))
        .context("tickmesh-ingest bench printed no figures")?;
    let figures: Value = serde_json::from_str(figures).context("the bench's figures")?;
    Ok(json!({
        "scenario": "ingest",
        "rate": INGEST_RATE,
        "check_rate": INGEST_CHECK_RATE,
        "seconds": seconds,
        "command": format!("tickmesh-ingest {}", bench_args.join(" ")),
        "wall_s": wall_s,
        "nats_server_cpu_s": nats_cpu,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "bench": figures,
    }))
}

// ---------------------------------------------------------------------------------------
// The report.

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// CPU cores of the named targets in a run ("edge" matches edge1, edge2...).
fn cores(run: &Value, prefix: &str) -> f64 {
    run["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|t| f(&t["cores"]))
        .sum()
}

fn kib(run: &Value, prefix: &str, field: &str) -> f64 {
    run["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|t| f(&t[field]))
        .sum()
}

/// The serving system's cores: edges and nats-server for TickMesh, nats-server alone for
/// the comparison (ingest feeds both and is shown apart).
fn server_cores(run: &Value) -> f64 {
    if run["system"] == "nats" {
        cores(run, "nats-server")
    } else {
        cores(run, "edge") + cores(run, "nats-server")
    }
}

fn per_cpu(run: &Value) -> f64 {
    let c = server_cores(run);
    if c > 0.0 {
        f(&run["updates_per_s"]) / c
    } else {
        0.0
    }
}

fn ms(us: &Value) -> String {
    if f(us) == 0.0 {
        return "none".into();
    }
    format!("{:.2} ms", f(us) / 1000.0)
}

fn num(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

fn machine(env: &Env) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |k| format!("{:.1} GiB", k / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nats = Command::new(&env.nats)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let v: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "open files per process: {} soft, {} hard",
                        v.get(3).unwrap_or(&"?"),
                        v.get(4).unwrap_or(&"?")
                    )
                })
        })
        .unwrap_or_default();
    format!(
        "- CPU: {cpu}, {nproc} cores (`nproc`)\n- memory: {mem}\n- kernel: Linux {kernel}\n\
         - {nofile}\n- {nats}\n"
    )
}

fn load(env: &Env, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(env.out.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn run_of<'a>(v: &'a Value, label: &str) -> &'a Value {
    v["runs"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["label"] == label))
        .unwrap_or(&Value::Null)
}

fn report(env: &Env) -> anyhow::Result<String> {
    let mut commands: Vec<String> = SCENARIOS
        .iter()
        .filter_map(|n| load(env, n))
        .filter_map(|v| v["xtask_command"].as_str().map(str::to_string))
        .collect();
    commands.dedup();
    if commands.is_empty() {
        commands.push("cargo xtask bench".into());
    }
    let command = commands
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", then ");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by {command} (release build) on one machine, with nats-server, \
         `tickmesh-ingest`, the edge(s) and `tickmesh-loadgen` all sharing it over loopback. \
         The machine is shared with other work and noisy: figures move by 10–30 % between \
         runs; read ratios and orders of magnitude, not the last digit.\n"
    );
    let _ = writeln!(md, "## Machine\n\n{}", machine(env));
    let _ = writeln!(
        md,
        "## How to read this\n\n\
         - **Latency** is ingest-to-client: the loadgen's wall clock at receipt minus the \
           tick's `ts`, which ingest stamps just before it publishes (one clock: same host).\n\
         - **nats-server WS** is the same workload on nats-server's own WebSocket listener \
           (`nats/websocket.conf`): each client sends `SUB md.<shard>.<symbol>` per symbol and \
           gets every tick as a NATS `MSG` with the MessagePack tick as payload.\n\
         - **CPU** is cores busy on average over the measurement window, from \
           `/proc/<pid>/stat`. TickMesh's server CPU is edge(s) + nats-server (which feeds the \
           edges); the comparison's is nats-server alone. Ingest feeds both and is shown apart.\n\
         - **Updates per CPU-second** = updates delivered per second ÷ server cores.\n\
         - Each scenario's raw results, with the exact load generator command line, are in \
           `target/bench/<scenario>*.json` after a run.\n"
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| scenario | target | TickMesh | nats-server WS | ratio | target met? |\n|---|---|---|---|---|---|"
    );
    let mut details = String::new();
    for name in SCENARIOS.iter().filter(|n| !OWN_SECTION.contains(n)) {
        let name = *name;
        let Some(v) = load(env, name) else {
            let _ = writeln!(md, "| {name} | | not run | | | |");
            continue;
        };
        let quick = if v["quick"] == true { " (--quick)" } else { "" };
        match name {
            "idle" => idle_report(&v, quick, &mut md, &mut details),
            "throughput" => throughput_report(&v, quick, &mut md, &mut details),
            "latency" => latency_report(&v, quick, &mut md, &mut details),
            "conflation" => conflation_report(&v, quick, &mut md, &mut details),
            "slow" => slow_report(&v, quick, &mut md, &mut details),
            "storm" => storm_report(&v, quick, &mut md, &mut details),
            "ingest" => ingest_report(&v, quick, &mut md, &mut details),
            _ => {}
        }
    }
    md.push('\n');
    md.push_str(&details);
    Ok(md)
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn run_table(details: &mut String, runs: &[(&str, &Value)]) {
    let _ = writeln!(
        details,
        "| run | connected | updates/s | p50 | p99 | p99.9 | max | seq gaps | errors | server cores | ingest cores | loadgen cores | other load | server RSS max |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (label, r) in runs {
        if r.is_null() {
            continue;
        }
        let l = &r["latency"];
        let c = &r["counts"];
        let rss = if r["system"] == "nats" {
            kib(r, "nats-server", "rss_max_kib")
        } else {
            kib(r, "edge", "rss_max_kib")
        };
        let _ = writeln!(
            details,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} MiB |",
            c["connected"],
            num(f(&r["updates_per_s"])),
            ms(&l["p50_us"]),
            ms(&l["p99_us"]),
            ms(&l["p999_us"]),
            ms(&l["max_us"]),
            c["seq_gaps"],
            f(&c["protocol_errors"]) + f(&c["connect_failures"]),
            server_cores(r),
            cores(r, "ingest"),
            f(&r["loadgen_cores"]),
            other(r),
            rss / 1024.0
        );
    }
    details.push('\n');
}

/// Other work on the machine during a run: cores busy outside the servers and the load
/// generator, cores stolen by the hypervisor, and the load average.
fn other(r: &Value) -> String {
    if r.get("other_cores").is_none() {
        return "not recorded".into();
    }
    format!(
        "{:.2} cores, steal {:.2}, load avg {:.1}",
        f(&r["other_cores"]),
        f(&r["machine_steal_cores"]),
        f(&r["loadavg"][1])
    )
}

/// A command line with long `--symbols` lists shortened to their ends.
fn short_command(cmd: &str) -> String {
    let mut out = Vec::new();
    let mut symbols_next = false;
    for word in cmd.split(' ') {
        if symbols_next && word.matches(',').count() > 4 {
            let first = word.split(',').next().unwrap_or_default();
            let last = word.rsplit(',').next().unwrap_or_default();
            out.push(format!("{first},…,{last}"));
        } else {
            out.push(word.to_string());
        }
        symbols_next = word == "--symbols";
    }
    out.join(" ")
}

fn commands(details: &mut String, v: &Value) {
    details.push_str("Load generator runs:\n\n");
    for r in v["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            details,
            "- `{}`: `{}`",
            r["label"].as_str().unwrap_or(""),
            short_command(r["command"].as_str().unwrap_or(""))
        );
    }
    details.push('\n');
}

fn idle_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let tm = run_of(v, "tickmesh-1-edge");
    let nats = run_of(v, "nats-1-server");
    let many = run_of(v, "tickmesh-many-edges");
    let per = |r: &Value, who: &str| {
        let conns = f(&r["counts"]["connected"]).max(1.0);
        (kib(r, who, "rss_window_start_kib") - kib(r, who, "rss_before_kib")) * 1024.0 / conns
    };
    let tm_per = per(tm, "edge");
    let nats_per = per(nats, "nats-server");
    let many_per = per(many, "edge");
    let _ = writeln!(
        md,
        "| idle{quick} | {} conns on 1 edge at ≤ 8 KiB each | {} conns, {:.1} KiB/conn | {} conns, {:.1} KiB/conn | {} memory per connection | {} |",
        v["conns_one"],
        tm["counts"]["connected"],
        tm_per / 1024.0,
        nats["counts"]["connected"],
        nats_per / 1024.0,
        ratio(nats_per, tm_per).replace('×', "× less"),
        yes(f(&tm["counts"]["connected"]) >= f(&v["conns_one"]) && tm_per <= 8192.0)
    );
    let _ = writeln!(
        md,
        "| idle{quick} | {} conns over {} edges (SO_REUSEPORT) | {} conns, {:.1} KiB/conn | one nats-server process holds < 20,000 | | {} |",
        v["conns_many"],
        v["edges_many"],
        many["counts"]["connected"],
        many_per / 1024.0,
        yes(f(&many["counts"]["connected"]) >= 100_000.0)
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
        if r.is_null() {
            continue;
        }
        let _ = writeln!(
            d,
            "| {label} | {} | {} | {:.1} MiB | {:.1} MiB | {:.2} KiB | {:.2} | {:.2} | {} |",
            r["counts"]["connected"],
            r["counts"]["connect_failures"],
            kib(r, who, "rss_before_kib") / 1024.0,
            kib(r, who, "rss_window_start_kib") / 1024.0,
            per(r, who) / 1024.0,
            server_cores(r),
            f(&r["loadgen_cores"]),
            other(r),
        );
    }
    d.push('\n');
    commands(d, v);
}

fn throughput_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let mp = run_of(v, "tickmesh-msgpack");
    let js = run_of(v, "tickmesh-json");
    let nats = run_of(v, "nats");
    let best = if f(&mp["updates_per_s"]) >= f(&js["updates_per_s"]) {
        mp
    } else {
        js
    };
    let _ = writeln!(
        md,
        "| throughput{quick} | {} clients × 50 symbols, every tick: ≥ 1.5 M updates/s | {} /s ({}); {} per CPU-s | {} /s; {} per CPU-s | {} per CPU-s (aim 3×) | {} |",
        v["conns"],
        num(f(&best["updates_per_s"])),
        best["label"].as_str().unwrap_or(""),
        num(per_cpu(best)),
        num(f(&nats["updates_per_s"])),
        num(per_cpu(nats)),
        ratio(per_cpu(best), per_cpu(nats)),
        yes(f(&best["updates_per_s"]) >= 1_500_000.0 && per_cpu(best) > per_cpu(nats))
    );
    let _ = writeln!(d, "### Throughput{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over 50 symbols; each of {} clients subscribes to all 50, \
         every tick, `quote` mode: an offered load of {} updates/s.\n",
        v["ticks_per_sec_in"],
        v["conns"],
        num(f(&v["ticks_per_sec_in"]) * f(&v["conns"]))
    );
    run_table(
        d,
        &[
            ("TickMesh (MessagePack)", mp),
            ("TickMesh (JSON)", js),
            ("nats-server WS", nats),
        ],
    );
    let _ = writeln!(
        d,
        "Updates per server CPU-second: TickMesh MessagePack {}, JSON {}, nats-server WS {}.\n",
        num(per_cpu(mp)),
        num(per_cpu(js)),
        num(per_cpu(nats))
    );
    commands(d, v);
}

fn latency_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let tm = run_of(v, "tickmesh");
    let nats = run_of(v, "nats");
    let _ = writeln!(
        md,
        "| latency{quick} | 10k ticks/s in, ~100k updates/s out: p50 ≤ 0.25 ms, p99 ≤ 2 ms | p50 {}, p99 {} ({} /s) | p50 {}, p99 {} ({} /s) | TickMesh's p99 is {} nats-server's | {} |",
        ms(&tm["latency"]["p50_us"]),
        ms(&tm["latency"]["p99_us"]),
        num(f(&tm["updates_per_s"])),
        ms(&nats["latency"]["p50_us"]),
        ms(&nats["latency"]["p99_us"]),
        num(f(&nats["updates_per_s"])),
        ratio(f(&tm["latency"]["p99_us"]), f(&nats["latency"]["p99_us"])),
        yes(f(&tm["latency"]["p50_us"]) <= 250.0 && f(&tm["latency"]["p99_us"]) <= 2000.0)
    );
    let _ = writeln!(d, "### Latency{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes {} ticks/s over 100 symbols, paced in 1 ms steps (`sim.batch_ms = \
         1`; the default 5 ms sends each step's ticks as one burst); 1,000 clients subscribe \
         to one symbol each (10 per symbol), every tick, JSON `quote`.\n",
        v["ticks_per_sec_in"]
    );
    run_table(d, &[("TickMesh", tm), ("nats-server WS", nats)]);
    commands(d, v);
}

fn conflation_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let tm = run_of(v, "tickmesh");
    let nats = run_of(v, "nats");
    let window = f(&tm["window_s"]).max(1e-3);
    let max_rate = f(&tm["counts"]["max_conn_updates"]) / window;
    let nats_rate = f(&nats["counts"]["max_conn_updates"]) / f(&nats["window_s"]).max(1e-3);
    let edge = cores(tm, "edge");
    let _ = writeln!(
        md,
        "| conflation{quick} | 1 symbol at 20k ticks/s to {} clients at 250 ms: ≤ 4 updates/s each, latest value, edge < 0.5 core | ≤ {:.2} updates/s per client, age p99 {}, edge {:.2} cores | every tick: {:.0} msgs/s per client ({} clients), {:.2} cores | | {} |",
        v["conns"],
        max_rate,
        ms(&tm["latency"]["p99_us"]),
        edge,
        nats_rate,
        v["nats_conns"],
        cores(nats, "nats-server"),
        yes(max_rate <= 4.1 && edge < 0.5 && f(&tm["counts"]["interval_violations"]) == 0.0)
    );
    let _ = writeln!(d, "### Conflation{quick}\n");
    let _ = writeln!(
        d,
        "Ingest publishes one symbol at {} ticks/s. TickMesh: {} clients at `interval_ms` 250. \
         nats-server has no conflation, so each of its clients gets every tick; it is driven \
         with only {} clients (the full count would be {} messages/s). The latency of a \
         conflated update is the age of the value when it arrives: a small age means it was \
         the latest tick at flush time.\n",
        v["ticks_per_sec_in"],
        v["conns"],
        v["nats_conns"],
        num(f(&v["ticks_per_sec_in"]) * f(&v["conns"]))
    );
    run_table(d, &[("TickMesh", tm), ("nats-server WS", nats)]);
    let _ = writeln!(
        d,
        "TickMesh per client: fewest {} and most {} updates in the {:.1} s window; {} updates \
         came sooner than 90 % of the interval after the previous one.\n",
        tm["counts"]["min_conn_updates"],
        tm["counts"]["max_conn_updates"],
        window,
        tm["counts"]["interval_violations"]
    );
    commands(d, v);
}

fn slow_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let tb = run_of(v, "tickmesh-baseline");
    let ts = run_of(v, "tickmesh-with-slow");
    let nb = run_of(v, "nats-baseline");
    let ns = run_of(v, "nats-with-slow");
    let p99 = |r: &Value| f(&r["latency"]["p99_us"]);
    let slow = &ts["counts"]["slow"];
    let handled = f(&slow["closed_4008"])
        + f(&slow["told_slow_consumer"])
        + f(&slow["dropped_without_close"]);
    let _ = writeln!(
        md,
        "| slow consumers{quick} | 10 % of 1,000 clients stop reading: others' p99 ≤ 2× baseline, RSS bounded | p99 {} vs {} ({}), edge RSS max {:.0} MiB | p99 {} vs {} ({}), RSS max {:.0} MiB | | {} |",
        ms(&ts["latency"]["p99_us"]),
        ms(&tb["latency"]["p99_us"]),
        ratio(p99(ts), p99(tb)),
        kib(ts, "edge", "rss_max_kib") / 1024.0,
        ms(&ns["latency"]["p99_us"]),
        ms(&nb["latency"]["p99_us"]),
        ratio(p99(ns), p99(nb)),
        kib(ns, "nats-server", "rss_max_kib") / 1024.0,
        yes(p99(ts) <= 2.0 * p99(tb) && handled >= f(&slow["clients"]))
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
    );
    let outcome = |r: &Value| {
        let s = &r["counts"]["slow"];
        format!(
            "{} slow clients: {} told `slow_consumer`, {} closed with 4008, {} cut without a 4008 close frame, {} still open with no notice when they stopped reading again; closes seen {}",
            s["clients"],
            s["told_slow_consumer"],
            s["closed_4008"],
            s["dropped_without_close"],
            s["untouched"],
            r["counts"]["closes"]
        )
    };
    let _ = writeln!(d, "- TickMesh: {}.", outcome(ts));
    let _ = writeln!(
        d,
        "- The edge's own count after the runs: `tickmesh_edge_slow_consumer_total` closed {}, conflated {}.",
        num(f(&v["edge_slow_consumer_closed"])),
        num(f(&v["edge_slow_consumer_conflated"]).abs())
    );
    let _ = writeln!(
        d,
        "- nats-server WS: {}; errors {}.\n",
        outcome(ns),
        ns["counts"]["errors_by_code"]
    );
    commands(d, v);
}

fn storm_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let tm = run_of(v, "tickmesh");
    let nats = run_of(v, "nats");
    let conns = f(&v["conns"]);
    let _ = writeln!(
        md,
        "| reconnect storm{quick} | {} clients at once × 20 symbols: every snapshot within 2 s, ≤ 1 KV read per symbol | {} of {} in 2 s (p99 {}, max {}); {} KV reads for {} symbols | first tick of each: {} of {} in 2 s (p99 {}) | | {} |",
        v["conns"],
        tm["counts"]["full_picture_in_time"],
        v["conns"],
        ms(&tm["full_picture"]["p99_us"]),
        ms(&tm["full_picture"]["max_us"]),
        num(f(&v["kv_reads"])),
        v["symbols"],
        nats["counts"]["full_picture_in_time"],
        v["conns"],
        ms(&nats["full_picture"]["p99_us"]),
        yes(f(&tm["counts"]["full_picture_in_time"]) >= conns
            && f(&v["kv_reads"]) <= f(&v["symbols"]))
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
        v["conns"],
        v["ticks_per_sec_in"],
        f(&v["ticks_per_sec_in"]) / f(&v["symbols"]).max(1.0),
        num(f(&v["kv_reads"])),
        num(f(&v["cache_reads"])),
        num(f(&v["local_reads"]))
    );
    for (what, key) in [
        ("upgrades (request to WebSocket)", "handshake"),
        (
            "snapshots (a subscribe's request read to its snapshots written; when they are \
             awaited, to the flush that sends them)",
            "snapshot",
        ),
    ] {
        let h = &v["edge_times"][key];
        if h.is_null() {
            continue;
        }
        let _ = writeln!(
            d,
            "The edge's own timing of its {what}: {} in all; within 0.1 s {}, 0.5 s {}, 1 s {}, \
             2.5 s {}.\n",
            num(f(&h["count"])),
            num(f(&h["le_0.1"])),
            num(f(&h["le_0.5"])),
            num(f(&h["le_1"])),
            num(f(&h["le_2.5"])),
        );
    }
    let _ = writeln!(
        d,
        "| run | connected | failed | open (TCP + upgrade) p50 / p99 | all values in 2 s | p50 | p99 | max | never | server cores | loadgen cores | other load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("TickMesh", tm), ("nats-server WS", nats)] {
        let fp = &r["full_picture"];
        let _ = writeln!(
            d,
            "| {label} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            r["counts"]["connected"],
            r["counts"]["connect_failures"],
            ms(&r["connect"]["p50_us"]),
            ms(&r["connect"]["p99_us"]),
            r["counts"]["full_picture_in_time"],
            ms(&fp["p50_us"]),
            ms(&fp["p99_us"]),
            ms(&fp["max_us"]),
            r["counts"]["full_picture_never"],
            server_cores(r),
            f(&r["loadgen_cores"]),
            other(r)
        );
    }
    d.push('\n');
    commands(d, v);
}

fn ingest_report(v: &Value, quick: &str, md: &mut String, d: &mut String) {
    let b = &v["bench"];
    let (publish, checked) = (&b["publish"], &b["checked"]);
    let baseline = f(&b["baseline"]["msgs_per_s"]);
    let rate = |p: &Value| f(&p["ticks_per_s"]);
    // A phase is paced at its target: 99 % of it counts as reached.
    let reached = |p: &Value| rate(p) >= 0.99 * f(&p["target_ticks_per_s"]);
    let kv_ok = |p: &Value| f(&p["kv_errors"]) == 0.0 && f(&p["kv_current"]) == f(&p["kv_symbols"]);
    let c = &checked["check"];
    let clean = f(&c["gaps"]) == 0.0
        && f(&c["out_of_order"]) == 0.0
        && f(&c["received"]) == f(&checked["ticks_out"]);
    let _ = writeln!(
        md,
        "| ingest{quick} | 1 process: ≥ {} ticks/s for {} s, `md_last` keeps up | {} ticks/s; `md_last` lag max {}, current {} of {} symbols | raw async-nats publish: {} msgs/s | ingest (paced) at {} the raw rate | {} |",
        num(f(&v["rate"])),
        v["seconds"],
        num(rate(publish)),
        ms(&publish["kv_max_lag_us"]),
        publish["kv_current"],
        publish["kv_symbols"],
        num(baseline),
        ratio(rate(publish), baseline),
        yes(reached(publish) && kv_ok(publish))
    );
    let _ = writeln!(
        md,
        "| ingest{quick} | a subscriber sees no seq gap at {} ticks/s | {} ticks/s: {} of {} received, {} gaps, {} out of order; `md_last` lag max {} | | | {} |",
        num(f(&v["check_rate"])),
        num(rate(checked)),
        num(f(&c["received"])),
        num(f(&checked["ticks_out"])),
        num(f(&c["gaps"])),
        num(f(&c["out_of_order"])),
        ms(&checked["kv_max_lag_us"]),
        yes(reached(checked) && clean && kv_ok(checked))
    );
    let _ = writeln!(d, "### Ingest{quick}\n");
    let _ = writeln!(
        d,
        "One `tickmesh-ingest bench` process against its own nats-server (`nats/local.conf`), \
         {} s per phase: the raw async-nats publish rate of the same encoded ticks (one task, \
         as fast as it goes), then the real feed (the default universe with its option chains \
         and depth, the lease, the `md_last` and `md_ref` writers) paced at {} ticks/s with \
         nobody subscribed, then at {} ticks/s with a subscriber on `md.>` in the same process \
         that checks every symbol's seq. A paced phase counts as at its target from 99 % of \
         it. \"current\" counts the symbols whose `md_last` value, read back after the phase, \
         carries the last seq published.\n",
        v["seconds"],
        num(f(&v["rate"])),
        num(f(&v["check_rate"]))
    );
    let _ = writeln!(d, "| measure | value |\n|---|---|");
    let tick_path = &b["tick_path"];
    let per_cpu = if f(&tick_path["thread_cpu_secs"]) > 0.0 {
        format!(
            " ({} per CPU-second of its thread)",
            num(f(&tick_path["ticks"]) / f(&tick_path["thread_cpu_secs"]))
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        d,
        "| tick path alone (simulate, sequence, encode; one thread, no NATS) | {} ticks/s{per_cpu} |",
        num(f(&tick_path["ticks_per_s"]))
    );
    let _ = writeln!(
        d,
        "| raw async-nats publish (same payloads, one task) | {} msgs/s ({} B average) |",
        num(baseline),
        b["baseline"]["payload_bytes"]
    );
    for (name, p) in [("no subscriber", publish), ("checked", checked)] {
        let cpu = if p["process_cpu_secs"].is_number() {
            format!(
                "; process CPU {:.1} s, {:.2} µs per tick",
                f(&p["process_cpu_secs"]),
                f(&p["process_cpu_secs"]) * 1e6 / f(&p["ticks_out"]).max(1.0)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            d,
            "| ingest, target {} ticks/s, {name} | **{}** ticks/s published ({} ticks in {:.1} s; {} stale{cpu}) |",
            num(f(&p["target_ticks_per_s"])),
            num(rate(p)),
            num(f(&p["ticks_out"])),
            f(&p["publish_secs"]),
            num(f(&p["stale"]))
        );
        let _ = writeln!(
            d,
            "| `md_last` writer at that rate | {} puts, {} errors, lag mean {}, max {}; current for {}/{} symbols |",
            num(f(&p["kv_writes"])),
            num(f(&p["kv_errors"])),
            ms(&p["kv_mean_lag_us"]),
            ms(&p["kv_max_lag_us"]),
            p["kv_current"],
            p["kv_symbols"]
        );
        let c = &p["check"];
        if c.is_object() {
            let _ = writeln!(
                d,
                "| checking subscriber | received {} of {} over {} symbols; **seq gaps {}**, out of order {}, slow-consumer events {} |",
                num(f(&c["received"])),
                num(f(&p["ticks_out"])),
                c["symbols"],
                num(f(&c["gaps"])),
                num(f(&c["out_of_order"])),
                num(f(&c["slow_consumer_events"]))
            );
        }
    }
    let nats_cores = f(&v["nats_server_cpu_s"]) / f(&v["wall_s"]).max(1e-3);
    let _ = writeln!(
        d,
        "\nnats-server used {:.1} CPU-seconds over the {:.0} s run ({nats_cores:.2} cores on \
         average); load average {:.1} at the start, {:.1} at the end.\n",
        f(&v["nats_server_cpu_s"]),
        f(&v["wall_s"]),
        f(&v["loadavg_before"]),
        f(&v["loadavg_after"])
    );
    let _ = writeln!(
        d,
        "Bench run: `{}` (`TICKMESH_INGEST_NATS__URLS` set to that server).\n",
        v["command"].as_str().unwrap_or("")
    );
}
