//! Developer commands. `cargo xtask demo` runs the local mesh; `cargo xtask test` runs
//! every test. Both install what they need into `.tools/` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod tools;

const USAGE: &str = "usage: cargo xtask <demo [--release] | test [nextest args...]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let root = root();
    let nats = tools::ensure(&root)?;
    let mut steps: Vec<(&str, Command)> = Vec::new();

    let mut cargo = Command::new(env!("CARGO"));
    if tools::has_nextest() {
        cargo.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cargo.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cargo
        .args(extra)
        .env("TICKMESH_NATS_SERVER", &nats)
        .current_dir(&root);
    steps.push(("rust", cargo));

    if root.join("tests/js").is_dir() {
        let mut node = Command::new("node");
        node.args(["--test", "tests/js/"]).current_dir(&root);
        steps.push(("javascript", node));
    }
    if root.join("terraform/tests/run.sh").is_file() {
        let mut tf = Command::new("bash");
        tf.arg("terraform/tests/run.sh").current_dir(&root);
        steps.push(("terraform", tf));
    }

    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        eprintln!("xtask: running {name} tests");
        if let Err(e) = run(&mut cmd) {
            eprintln!("xtask: {name} tests failed: {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// Children that are stopped (SIGTERM, then SIGKILL) when dropped.
struct Procs(Vec<(&'static str, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in self.0.iter().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(12);
        for (name, child) in self.0.iter_mut().rev() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("xtask: {name} did not stop; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn demo(args: &[String]) -> anyhow::Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let root = root();
    let nats = tools::ensure(&root)?;
    let profile = if release { "release" } else { "debug" };
    eprintln!("xtask: building tickmesh-ingest and tickmesh-edge ({profile})");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "-p", "tickmesh-ingest", "-p", "tickmesh-edge"])
        .current_dir(&root);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let bin = root.join("target").join(profile);

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing Ctrl-C handler")?;

    for port in [4222, 8222, 8080] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} on 127.0.0.1 is in use: stop whatever holds it and retry");
        }
    }
    let state = root.join(".tools/demo");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut procs = Procs(Vec::new());
    let server = Command::new(&nats)
        .args(["-c", "nats/local.conf"])
        .env("TICKMESH_NATS_PORT", "4222")
        .env("TICKMESH_NATS_HTTP_PORT", "8222")
        .env("TICKMESH_NATS_STORE", state.join("js"))
        .current_dir(&root)
        .spawn()
        .context("starting nats-server")?;
    procs.0.push(("nats-server", server));
    wait_http("http://127.0.0.1:8222/healthz", Duration::from_secs(10))?;

    let ingest = Command::new(bin.join("tickmesh-ingest"))
        .args(["--config", "config/ingest.toml"])
        .current_dir(&root)
        .spawn()
        .context("starting tickmesh-ingest")?;
    procs.0.push(("tickmesh-ingest", ingest));
    let edge = Command::new(bin.join("tickmesh-edge"))
        .args(["--config", "config/edge.toml"])
        .current_dir(&root)
        .spawn()
        .context("starting tickmesh-edge")?;
    procs.0.push(("tickmesh-edge", edge));
    wait_http("http://127.0.0.1:8080/readyz", Duration::from_secs(20))?;

    println!();
    println!("TickMesh demo is running:");
    println!("  dashboard:  http://127.0.0.1:8080/");
    println!("  WebSocket:  ws://127.0.0.1:8080/v1/stream");
    println!("  metrics:    http://127.0.0.1:8080/metrics");
    println!("Press Ctrl-C to stop.");
    while !stop.load(Ordering::SeqCst) {
        for (name, child) in procs.0.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited unexpectedly: {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping");
    drop(procs);
    Ok(())
}

/// Polls a plain-HTTP URL on loopback until it answers 200.
fn wait_http(url: &str, within: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').context("URL with a path")?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut buf).is_ok()
                && buf.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not become ready within {within:?}")
}
