//! What every scenario runs on: a mesh of nats-server, ingest and edge processes on free
//! loopback ports, the load generator, and the figures read from the edge's `/metrics`
//! and from `/proc`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_devkit::{NatsSpec, free_port, wait_http};
use tickmesh_loadgen::summary::Summary;

use super::results::{self, Run, System};
use crate::Procs;

/// What every scenario runs with.
pub struct Env {
    /// The nats-server binary.
    pub nats: PathBuf,
    /// Where the release binaries are.
    pub bin: PathBuf,
    /// target/bench: result files, generated configs, logs.
    pub out: PathBuf,
    pub quick: bool,
}

impl Env {
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A running nats-server, ingest and edge(s).
pub struct Mesh {
    procs: Procs,
    pub nats_pid: u32,
    /// nats-server's client port.
    pub nats_port: u16,
    pub ingest_pid: u32,
    pub edge_pids: Vec<u32>,
    pub edge_port: u16,
    pub ws_port: u16,
    /// Ingest's /metrics.
    pub ingest_port: u16,
    /// More processes for the load generator to sample, NAME=PID.
    pub extra_targets: Vec<String>,
    _store: TempDir,
}

pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct MeshSpec<'a> {
    pub name: &'a str,
    pub universe: Vec<String>,
    pub ticks_per_sec: u32,
    pub edges: usize,
    pub edge_env: Vec<(&'a str, String)>,
    /// Ingest's pacing step (`sim.batch_ms`): the ticks due in each step go out together.
    pub batch_ms: u64,
    /// A step up in ingest's tick rate: none (a steady rate) unless set.
    pub open: Option<OpenStep>,
}

/// The market open as ingest simulates it: `pre_open_s` seconds of pre-open at the base
/// rate from ingest's start, then `factor` times the rate for the rest of the run.
#[derive(Debug, Clone, Copy)]
pub struct OpenStep {
    pub pre_open_s: u32,
    pub factor: f64,
}

impl OpenStep {
    /// Ingest's `[sim.session]`: a start `pre_open_s` before the 09:30 open, and a burst
    /// that does not decay within any run (10⁹ s).
    fn session_toml(&self) -> String {
        let start = 9 * 3600 + 30 * 60 - self.pre_open_s;
        format!(
            "start = \"{:02}:{:02}:{:02}\"\nopen_burst = {:.1}\nburst_decay_s = 1e9\n",
            start / 3600,
            start / 60 % 60,
            start % 60,
            self.factor
        )
    }
}

impl<'a> MeshSpec<'a> {
    /// One edge with its bench settings, ingest at `ticks_per_sec` over `universe` in its
    /// default 5 ms steps.
    pub fn new(name: &'a str, universe: &[String], ticks_per_sec: u32) -> Self {
        MeshSpec {
            name,
            universe: universe.to_vec(),
            ticks_per_sec,
            edges: 1,
            edge_env: vec![],
            batch_ms: 5,
            open: None,
        }
    }

    /// Ingest paced in [`LATENCY_BATCH_MS`] steps.
    pub fn paced(self) -> Self {
        MeshSpec {
            batch_ms: LATENCY_BATCH_MS,
            ..self
        }
    }
}

fn log_file(env: &Env, name: &str) -> anyhow::Result<Stdio> {
    Ok(std::fs::File::create(env.out.join("logs").join(name))?.into())
}

/// A nats-server from `conf` (nats/local.conf or nats/websocket.conf) on free loopback
/// ports, with its own store, registered in `procs`; returns (pid, client port, store)
/// once it is healthy. `ws_port` fills TICKMESH_NATS_WS_PORT.
pub fn start_nats(
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

pub fn start_mesh(env: &Env, spec: &MeshSpec) -> anyhow::Result<Mesh> {
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

    // A steady rate (no burst at the open) unless a step is asked for, level-1 ticks only
    // (no depth, no options), so that NATS payloads and TickMesh `quote` objects carry the
    // same fields.
    let session = spec
        .open
        .map_or_else(|| "open_burst = 1.0\n".to_string(), |o| o.session_toml());
    let mut toml = format!(
        "# Generated by cargo xtask bench.\n[sim]\ndepth = 0\n\n[sim.session]\n{session}\n\
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
    let ingest_port = free_port();
    let ingest = Command::new(env.bin.join("tickmesh-ingest"))
        .arg("--config")
        .arg(&ingest_toml)
        .env("TICKMESH_INGEST_NATS__URLS", &url)
        .env(
            "TICKMESH_INGEST_SIM__TICKS_PER_SEC",
            spec.ticks_per_sec.to_string(),
        )
        .env("TICKMESH_INGEST_SIM__BATCH_MS", spec.batch_ms.to_string())
        .env(
            "TICKMESH_INGEST_METRICS_LISTEN",
            format!("127.0.0.1:{ingest_port}"),
        )
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
        nats_port: port,
        ingest_pid,
        edge_pids,
        edge_port,
        ws_port,
        ingest_port,
        extra_targets: Vec::new(),
        _store: store,
    })
}

impl Mesh {
    /// Stops ingest (SIGTERM, then SIGKILL after 10 s): no tick flows from here on.
    pub fn stop_ingest(&mut self) {
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
        v.extend(self.extra_targets.iter().cloned());
        v
    }

    pub fn stop(self) {
        drop(self.procs);
    }
}

/// One load generator run.
pub struct Load<'a> {
    pub label: &'a str,
    pub nats: bool,
    pub args: Vec<String>,
}

pub fn universe(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i:04}")).collect()
}

pub fn loadgen(env: &Env, mesh: &Mesh, scenario: &str, load: &Load) -> anyhow::Result<Run> {
    let out = env.out.join(format!("{scenario}-{}.json", load.label));
    let _ = std::fs::remove_file(&out);
    let port = if load.nats {
        mesh.ws_port
    } else {
        mesh.edge_port
    };
    let system = System::of(load.nats);
    let mut cmd = Command::new(env.bin.join("tickmesh-loadgen"));
    cmd.arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--target", system.name()])
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
    let summary: Summary = results::parse(&text).with_context(|| out.display().to_string())?;
    Ok(Run {
        label: load.label.to_string(),
        system,
        command: format!(
            "tickmesh-loadgen --server 127.0.0.1:PORT --target {} {}",
            system.name(),
            load.args.join(" ")
        ),
        summary,
    })
}

/// The head of most workloads: `conns` clients, each on `per_conn` of `symbols` in
/// `mode` at `interval_ms` (0: every tick).
pub fn subscribers(
    conns: u64,
    symbols: &[String],
    per_conn: u32,
    interval_ms: u64,
    mode: &str,
) -> Vec<String> {
    args(&[
        "--conns",
        &conns.to_string(),
        "--symbols",
        &join(symbols),
        "--per-conn",
        &per_conn.to_string(),
        "--interval-ms",
        &interval_ms.to_string(),
        "--mode",
        mode,
    ])
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn join(symbols: &[String]) -> String {
    symbols.join(",")
}

/// Reads one counter from the /metrics on `port` (an edge's or ingest's).
pub fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
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

/// Later occurrences of a flag replace earlier ones.
pub fn fix_repeat(a: Vec<String>) -> Vec<String> {
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

/// CPU seconds used so far by process `pid` (all threads), from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses), utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
