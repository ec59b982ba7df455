//! Developer commands. `cargo xtask demo` runs the local mesh; `cargo xtask test` runs
//! every test. Both install what they need into `.tools/` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_devkit::{NatsSpec, wait_http};

mod bench;
mod feed;
mod fuzz;
mod pki;
mod revoke;
mod token;
mod tools;
mod usage;

const USAGE: &str = "usage: cargo xtask <demo [--release] [--tls] [--feed sim|itch[:FILE]] [--day-speed N] | test [nextest args...] | token [--help] | revoke [--help] | usage [--month YYYY-MM] [--format text|csv|json] [--users] | bench [--quick] [--scenario NAME] | fuzz [--seconds N] [TARGET]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("token") => token::token(&root(), &args[1..]),
        Some("revoke") => revoke::revoke(&root(), &args[1..]),
        Some("fuzz") => fuzz::fuzz(&root(), &args[1..]),
        Some("usage") => usage::usage(&root(), &args[1..]),
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

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SMOKE_SECONDS: &str = "4";

fn test(extra: &[String]) -> anyhow::Result<()> {
    let root = root();
    let nats = tools::ensure(&root)?;
    let mut steps: Vec<(&str, Command)> = Vec::new();

    // One build of every target, the services' binaries among them, with the feature set
    // the test run uses: the test run then builds nothing, and the browser tests find
    // target/debug/tickmesh-{ingest,edge} without a second build under other features.
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--workspace", "--all-targets"])
        .current_dir(&root);
    eprintln!("xtask: building every target");
    run(&mut build)?;

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

    if root.join("clients/js/test").is_dir() {
        let mut node = Command::new("node");
        node.args(["--test", "clients/js/test/"]).current_dir(&root);
        steps.push(("javascript", node));
        let mut types = Command::new("bash");
        types.arg("clients/js/typecheck.sh").current_dir(&root);
        steps.push(("javascript types", types));
    }
    // The repository's checks (tests/py) and the Python client's own tests, unit and
    // against a real mesh of target/debug's binaries (clients/python/tests), in one run.
    let mut py = Command::new(root.join(".tools/venv/bin/python"));
    py.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(["tests/py", "clients/python/tests"])
        .env("TICKMESH_NATS_SERVER", &nats)
        .current_dir(&root);
    steps.push(("python", py));
    if root.join("tests/browser/setup.sh").is_file() {
        let mut setup = Command::new("bash");
        setup.arg("tests/browser/setup.sh").current_dir(&root);
        steps.push(("browser setup", setup));
        let mut browser = Command::new("node");
        browser
            .args(["--test", "tests/browser/"])
            .env("TICKMESH_NATS_SERVER", &nats)
            .current_dir(&root);
        steps.push(("browser", browser));
    }
    // A short run of every fuzz target: it proves they build against the decoders' current
    // API and run, and replays the seeds and the corpus a longer local run left in
    // target/fuzz. Through cargo: the workspace build above may have replaced this binary.
    let mut fuzz = Command::new(env!("CARGO"));
    fuzz.args(["run", "--quiet", "--package", "xtask", "--"])
        .args(["fuzz", "--seconds", FUZZ_SMOKE_SECONDS])
        .current_dir(&root);
    steps.push(("fuzz smoke", fuzz));
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

/// The demo mesh's hub nodes: (name, client, monitoring, route, leaf-node) ports.
const DEMO_HUB: [(&str, u16, u16, u16, u16); 3] = [
    ("hub-1", 4222, 8222, 6222, 7422),
    ("hub-2", 4223, 8223, 6223, 7423),
    ("hub-3", 4224, 8224, 6224, 7424),
];

/// A demo region: its leaf nodes (name, client, monitoring, route ports) and its edge.
/// Creates each demo region's read-only mirror of the hub's `md_last`, as an operator does
/// once per region: the edges' NATS user may not create streams
/// (`nats/include/permissions.conf`). Retried for 30 s while a region's JetStream settles.
fn demo_mirrors(pki: &pki::Pki) -> anyhow::Result<()> {
    use tickmesh_service::nats::{NatsAuth, NatsTls, options};
    let tls = NatsTls {
        ca_file: Some(pki.ca.clone()),
        ..Default::default()
    };
    let auth = NatsAuth {
        user: Some("admin".into()),
        password_file: Some(pki.password_file("admin")),
        creds_file: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for region in &DEMO_REGIONS {
            let url = format!("nats://127.0.0.1:{}", region.leaves[0].1);
            let client = options(&tls, &auth)
                .await?
                .connect(url.as_str())
                .await
                .with_context(|| format!("connecting to {url} as admin"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let made = tickmesh_edge::nats::ensure_mirror(
                    &client,
                    region.name,
                    "md_last",
                    Some("hub"),
                    1,
                )
                .await;
                match made {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        Ok(())
    })
}

struct DemoRegion {
    name: &'static str,
    leaves: [(&'static str, u16, u16, u16); 2],
    edge: (&'static str, u16),
}

const DEMO_REGIONS: [DemoRegion; 2] = [
    DemoRegion {
        name: "region-a",
        leaves: [
            ("region-a-1", 4231, 8231, 6231),
            ("region-a-2", 4232, 8232, 6232),
        ],
        edge: ("edge-a", 8080),
    },
    DemoRegion {
        name: "region-b",
        leaves: [
            ("region-b-1", 4241, 8241, 6241),
            ("region-b-2", 4242, 8242, 6242),
        ],
        edge: ("edge-b", 8081),
    },
];

/// A NATS config list value: `["a", "b"]`.
fn conf_list(items: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Runs the mesh on 127.0.0.1: a 3-node hub with ingest and the simulated order system,
/// and two regions, each a 2-node leaf cluster with its KV mirror and an edge (region A
/// on :8080, region B on :8081).
fn demo(args: &[String]) -> anyhow::Result<()> {
    let (mut release, mut tls, mut feed) = (false, false, feed::Feed::Sim);
    let mut day_speed: Option<f64> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--release" => release = true,
            "--tls" => tls = true,
            "--feed" => {
                let value = rest.next().context("--feed needs sim, itch or itch:FILE")?;
                feed = feed::Feed::parse(value)?;
            }
            "--day-speed" => {
                let value = rest.next().context("--day-speed needs a number, e.g. 60")?;
                let speed: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| (1.0..=10_000.0).contains(s))
                    .context("--day-speed takes 1 to 10000 (simulated seconds per second)")?;
                day_speed = Some(speed);
            }
            other => bail!(
                "unknown demo option {other}: the options are --release, --tls (wss:// edges), \
                 --feed sim|itch[:FILE] and --day-speed N (the simulated day N times faster)"
            ),
        }
    }
    let root = root();
    let nats = tools::ensure(&root)?;
    token::ensure_dev_secret(&root)?;
    let profile = if release { "release" } else { "debug" };
    eprintln!("xtask: building tickmesh-ingest, tickmesh-oms and tickmesh-edge ({profile})");
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "-p",
            "tickmesh-ingest",
            "-p",
            "tickmesh-oms",
            "-p",
            "tickmesh-edge",
        ])
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

    let hub_ports = DEMO_HUB.iter().flat_map(|h| [h.1, h.2, h.3, h.4]);
    let leaf_ports = DEMO_REGIONS.iter().flat_map(|r| {
        r.leaves
            .iter()
            .flat_map(|l| [l.1, l.2, l.3])
            .chain([r.edge.1])
    });
    for port in hub_ports.chain(leaf_ports) {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} on 127.0.0.1 is in use: stop whatever holds it and retry");
        }
    }
    let state = root.join(".tools/demo");
    let _ = std::fs::remove_dir_all(&state);
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    // TLS everywhere and a least-privilege NATS user per service, new for every run.
    let pki = pki::Pki::create(&state)?;
    let mut procs = Procs(Vec::new());

    let routes = conf_list(DEMO_HUB.iter().map(|h| format!("nats://127.0.0.1:{}", h.3)));
    for (name, port, http, cluster, leaf) in DEMO_HUB {
        let node = nats_node(&nats, "nats/hub.conf", name, [port, http, cluster], &state)?
            .env("TICKMESH_NATS_ROUTES", &routes)
            .env("TICKMESH_NATS_LEAF_PORT", leaf.to_string())
            .envs(pki.server_env())
            .spawn()
            .with_context(|| format!("starting nats-server {name}"))?;
        procs.0.push((name, node));
    }
    eprintln!("xtask: waiting for the hub's JetStream cluster");
    for (_, _, http, _, _) in DEMO_HUB {
        demo_wait(&format!("http://127.0.0.1:{http}/healthz"), None, &stop)?;
    }

    let hub_leaf_urls = conf_list(DEMO_HUB.iter().map(|h| {
        format!(
            "nats-leaf://region:{}@127.0.0.1:{}",
            pki.password("region"),
            h.4
        )
    }));
    for region in &DEMO_REGIONS {
        let routes = conf_list(
            region
                .leaves
                .iter()
                .map(|l| format!("nats://127.0.0.1:{}", l.3)),
        );
        for (name, port, http, cluster) in region.leaves {
            let node = nats_node(&nats, "nats/leaf.conf", name, [port, http, cluster], &state)?
                .env("TICKMESH_REGION", region.name)
                .env("TICKMESH_NATS_ROUTES", &routes)
                .env("TICKMESH_HUB_LEAF_URLS", &hub_leaf_urls)
                .envs(pki.server_env())
                .spawn()
                .with_context(|| format!("starting nats-server {name}"))?;
            procs.0.push((name, node));
        }
    }
    eprintln!("xtask: waiting for the regions' leaf clusters");
    for region in &DEMO_REGIONS {
        for (_, _, http, _) in region.leaves {
            demo_wait(&format!("http://127.0.0.1:{http}/healthz"), None, &stop)?;
        }
    }

    eprintln!("xtask: creating the regions' md_last mirrors (as admin)");
    demo_mirrors(&pki)?;

    let hub_urls = conf_list(DEMO_HUB.iter().map(|h| format!("nats://127.0.0.1:{}", h.1)));
    let mut ingest = Command::new(bin.join("tickmesh-ingest"));
    feed.configure(&bin.join("tickmesh-ingest"), &state, &mut ingest)?;
    let ingest = own_group(&mut ingest)
        .args(["--config", "config/ingest.toml"])
        .env("TICKMESH_INGEST_NATS__URLS", &hub_urls)
        .env("TICKMESH_INGEST_KV__REPLICAS", "3")
        .envs(day_speed.map(|v| ("TICKMESH_INGEST_SIM__SESSION__SPEED", v.to_string())))
        .envs(pki.service_env("TICKMESH_INGEST_", "ingest"))
        .current_dir(&root)
        .spawn()
        .context("starting tickmesh-ingest")?;
    procs.0.push(("tickmesh-ingest", ingest));
    // The simulated order system, after ingest: its demo accounts trade at ingest's
    // prints, and it creates the account stream (3 replicas) on the hub.
    let oms = own_group(&mut Command::new(bin.join("tickmesh-oms")))
        .args(["--config", "config/oms.toml"])
        .env("TICKMESH_OMS_NATS__URLS", &hub_urls)
        .env("TICKMESH_OMS_STREAM__REPLICAS", "3")
        .envs(pki.service_env("TICKMESH_OMS_", "oms"))
        .current_dir(&root)
        .spawn()
        .context("starting tickmesh-oms")?;
    procs.0.push(("tickmesh-oms", oms));
    for region in &DEMO_REGIONS {
        let (name, port) = region.edge;
        let urls = conf_list(
            region
                .leaves
                .iter()
                .map(|l| format!("nats://127.0.0.1:{}", l.1)),
        );
        let mut edge = Command::new(bin.join("tickmesh-edge"));
        if tls {
            edge.env("TICKMESH_EDGE_TLS__CERT_FILE", &pki.cert)
                .env("TICKMESH_EDGE_TLS__KEY_FILE", &pki.key);
        }
        let edge = own_group(&mut edge)
            .args(["--config", "config/edge.toml"])
            .envs(pki.service_env("TICKMESH_EDGE_", "edge"))
            .env("TICKMESH_EDGE_NAME", name)
            .env("TICKMESH_EDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("TICKMESH_EDGE_NATS__URLS", urls)
            .env("TICKMESH_EDGE_NATS__NAME", format!("tickmesh-{name}"))
            .env("TICKMESH_EDGE_NATS__JS_DOMAIN", "hub")
            .env("TICKMESH_EDGE_NATS__KV_MIRROR_DOMAIN", region.name)
            .current_dir(&root)
            .spawn()
            .with_context(|| format!("starting tickmesh-edge {name}"))?;
        procs.0.push((name, edge));
    }
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    for region in &DEMO_REGIONS {
        let url = format!("{http}://127.0.0.1:{}/readyz", region.edge.1);
        demo_wait(&url, tls.then_some(pki.ca.as_path()), &stop)?;
    }

    // The dashboard with a development token that names the account DEMO1: its blotter.
    let dev_token = token::demo_token(&root)?;
    println!();
    println!("TickMesh demo mesh is running (hub: 3 nodes; regions A and B: 2 leaf nodes each):");
    for region in &DEMO_REGIONS {
        let port = region.edge.1;
        println!("  {}:", region.name);
        println!("    dashboard:  {http}://127.0.0.1:{port}/?token={dev_token}");
        println!("    WebSocket:  {ws}://127.0.0.1:{port}/v1/stream");
        println!("    metrics:    {http}://127.0.0.1:{port}/metrics");
    }
    println!("  hub monitoring: http://127.0.0.1:8222/leafz?subs=1  (what crosses to each region)");
    println!(
        "  order system: accounts DEMO1 to DEMO5 trading on the hub (stream acct), \
         metrics http://127.0.0.1:9103/metrics"
    );
    println!("  nats-server logs: {}", logs.display());
    if tls {
        println!(
            "  TLS: the demo's own CA signed the certificates; trust {} in the browser, \
             or accept the warning.",
            pki.ca.display()
        );
    }
    println!("  usage report: cargo xtask usage  (this month's, both regions; docs/operations.md)");
    println!("  A nats-server may be killed to watch the fail-over (docs/operations.md).");
    println!("Press Ctrl-C to stop.");
    let services = ["edge-a", "edge-b", "tickmesh-ingest", "tickmesh-oms"];
    let mut gone: Vec<&str> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for (name, child) in procs.0.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                if services.contains(name) {
                    bail!("{name} exited unexpectedly: {status}");
                }
                if !gone.contains(name) {
                    gone.push(name);
                    eprintln!(
                        "xtask: nats-server {name} exited ({status}); the mesh carries on without it"
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping");
    // The services first, while NATS still runs (the edges drain their sessions, ingest
    // writes its last KV values, the order system finishes its append), then the servers.
    let (first, rest): (Vec<_>, Vec<_>) = procs
        .0
        .drain(..)
        .partition(|(name, _)| services.contains(name));
    procs.0 = rest;
    drop(Procs(first));
    drop(procs);
    Ok(())
}

/// Puts a demo child in its own process group: Ctrl-C reaches only xtask, which then
/// stops the children in order.
fn own_group(cmd: &mut Command) -> &mut Command {
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    cmd
}

/// Waits up to 30 s for `url` to answer 200 (over TLS with certificates of `ca`, when
/// given); gives up at once on Ctrl-C.
fn demo_wait(url: &str, ca: Option<&Path>, stop: &AtomicBool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {url}");
        }
        let ready = match ca {
            Some(ca) => https_ok(url, ca),
            None => wait_http(url, Duration::from_millis(500)),
        };
        match ready {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
    }
}

/// A nats-server command for one mesh node from a `nats/` template: name, client,
/// monitoring and route ports, its own store under `state`, its log in `state/logs`.
fn nats_node(
    nats: &Path,
    conf: &str,
    name: &str,
    [port, http, cluster]: [u16; 3],
    state: &Path,
) -> anyhow::Result<Command> {
    let log = std::fs::File::create(state.join("logs").join(format!("{name}.log")))?;
    let mut cmd = NatsSpec::new(conf, port, http, &state.join(name))
        .name(name)
        .cluster_port(cluster)
        .command(nats);
    own_group(&mut cmd).stderr(log);
    Ok(cmd)
}

/// One GET over TLS on loopback, verifying the server with `ca`: Ok if it answers 200.
fn https_ok(url: &str, ca: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let rest = url.strip_prefix("https://").context("https URL")?;
    let (host, path) = rest.split_once('/').context("URL with a path")?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = host.split(':').next().unwrap_or(host).to_string();
    let server = rustls::pki_types::ServerName::try_from(name)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server)?;
    let tcp = std::net::TcpStream::connect(host)?;
    tcp.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())?;
    let mut head = [0u8; 12];
    tls.read_exact(&mut head)?;
    if &head == b"HTTP/1.1 200" {
        Ok(())
    } else {
        std::thread::sleep(Duration::from_millis(100));
        bail!("{url}: {}", String::from_utf8_lossy(&head))
    }
}
