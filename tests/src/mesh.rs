//! The mesh on one machine: a 3-node hub cluster (JetStream domain `hub`) and regional
//! leaf clusters (JetStream domain = region name), all from `nats/hub.conf` and
//! `nats/leaf.conf` on free loopback ports. Each region's leaf-node links go through a
//! [`Proxy`], so a test can delay, black-hole or reset a region's WAN link.
//!
//! Every process is killed and every store removed on drop.
//!
//! - [`edge`]: an edge as its own process ([`EdgeProcess`]), to be SIGKILLed.
//! - [`roam`]: a client that reconnects to the next edge with jittered backoff ([`Roamer`]).

mod edge;
mod pki;
mod roam;

pub use edge::EdgeProcess;
pub use pki::Pki;
pub use roam::Roamer;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tickmesh_core::revocation::Revoked;
use tickmesh_devkit::NatsSpec;
use tickmesh_edge::EdgeConfig;
use tickmesh_ingest::IngestConfig;
use tickmesh_service::revocation;

use crate::proxy::Proxy;
use crate::{free_port, nats_server_bin};

/// The hub's JetStream domain (a contract: edges fall back to it).
pub const HUB_DOMAIN: &str = "hub";
/// The latest-value bucket.
pub const BUCKET: &str = "md_last";
/// The TTL of the `ctl_revoked` bucket the kit creates.
const REVOCATION_TTL: Duration = Duration::from_secs(3600);
const LEAF_USER: &str = "region";
const LEAF_PASSWORD: &str = "test-leaf-secret";

/// One nats-server process from a `nats/` template, restartable on the same ports and
/// store.
#[derive(Debug)]
pub struct NatsNode {
    pub name: String,
    spec: NatsSpec,
    child: Option<Child>,
    pub port: u16,
    pub http_port: u16,
    log: PathBuf,
}

impl NatsNode {
    /// A node of the mesh in `dir` (its store and log there), started at once.
    fn start(dir: &Path, name: &str, spec: NatsSpec) -> anyhow::Result<Self> {
        let mut node = NatsNode {
            name: name.to_string(),
            log: dir.join(format!("{name}.log")),
            port: spec.port,
            http_port: spec.http_port,
            spec,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .spec
            .command(&nats_server_bin())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `cargo xtask test` to install it)",
                    nats_server_bin().display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no lame-duck, no goodbye to peers or clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again with the same ports and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn monitor_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.http_port).into()
    }

    /// A monitoring endpoint (`/leafz?subs=1`, `/connz`, `/jsz`) as JSON.
    pub async fn monitor(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = http10_get(self.monitor_addr(), path).await?;
        anyhow::ensure!(status == 200, "{} {path}: HTTP {status}", self.name);
        serde_json::from_str(&body).with_context(|| format!("{} {path}: not JSON", self.name))
    }

    async fn healthy(&self) -> bool {
        http10_get(self.monitor_addr(), "/healthz")
            .await
            .is_ok_and(|(status, _)| status == 200)
    }

    /// The server's log so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The health check repeats itself every 100 ms: the lines before it say why.
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("Healthcheck failed"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// GET over HTTP/1.0, so that the answer is never chunked: (status, body).
async fn http10_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A region: its leaf cluster and the proxy its leaf-node links go through.
#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub leaves: Vec<NatsNode>,
    pub link: Proxy,
}

impl Region {
    /// The leaf nodes' client URLs, first leaf first (an edge's same-AZ order).
    pub fn urls(&self) -> Vec<String> {
        self.leaves.iter().map(NatsNode::url).collect()
    }
}

/// Hub plus regions; see the module docs.
#[derive(Debug)]
pub struct Mesh {
    pub hub: Vec<NatsNode>,
    pub regions: Vec<Region>,
    /// The TLS files and NATS users' passwords every server and client here uses.
    pub pki: Pki,
    dir: tempfile::TempDir,
}

pub(crate) fn list(items: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A mesh node from `conf` on these ports, its store in `dir`.
fn node_spec(conf: &str, dir: &Path, name: &str, [port, http, cluster]: [u16; 3]) -> NatsSpec {
    NatsSpec::new(conf, port, http, &dir.join(name))
        .name(name)
        .cluster_port(cluster)
}

impl Mesh {
    /// Three hub nodes and, per region, `leaves` leaf nodes; returns once every server is
    /// healthy (JetStream meta leaders elected) and every leaf node is linked to the hub.
    pub async fn start(regions: &[&str], leaves: usize) -> anyhow::Result<Mesh> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::create(dir.path())?;
        let mut hub = Vec::new();
        let hub_ports: Vec<[u16; 4]> = (0..3)
            .map(|_| [free_port(), free_port(), free_port(), free_port()])
            .collect();
        let routes = list(
            hub_ports
                .iter()
                .map(|p| format!("nats://127.0.0.1:{}", p[2])),
        );
        for (i, [port, http, cluster, leaf]) in hub_ports.iter().copied().enumerate() {
            let name = format!("hub-{}", i + 1);
            let spec = node_spec("nats/hub.conf", dir.path(), &name, [port, http, cluster])
                .envs([
                    ("TICKMESH_NATS_ROUTES", routes.clone()),
                    ("TICKMESH_NATS_LEAF_PORT", leaf.to_string()),
                    ("TICKMESH_NATS_LEAF_USER", LEAF_USER.to_string()),
                    ("TICKMESH_NATS_LEAF_PASSWORD", LEAF_PASSWORD.to_string()),
                ])
                .envs(pki.server_env());
            let node = NatsNode::start(dir.path(), &name, spec)?;
            hub.push(node);
        }
        let leaf_listeners: Vec<SocketAddr> = hub_ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p[3])))
            .collect();

        let mut out = Vec::new();
        for region in regions {
            let link = Proxy::start(leaf_listeners.clone()).await?;
            let hub_urls = list([format!(
                "nats-leaf://{LEAF_USER}:{LEAF_PASSWORD}@{}",
                link.addr()
            )]);
            let ports: Vec<[u16; 3]> = (0..leaves)
                .map(|_| [free_port(), free_port(), free_port()])
                .collect();
            let routes = list(ports.iter().map(|p| format!("nats://127.0.0.1:{}", p[2])));
            let mut nodes = Vec::new();
            for (i, [port, http, cluster]) in ports.iter().copied().enumerate() {
                let name = format!("{region}-{}", i + 1);
                let spec = node_spec("nats/leaf.conf", dir.path(), &name, [port, http, cluster])
                    .envs([
                        ("TICKMESH_REGION", region.to_string()),
                        ("TICKMESH_NATS_ROUTES", routes.clone()),
                        ("TICKMESH_HUB_LEAF_URLS", hub_urls.clone()),
                    ])
                    .envs(pki.server_env());
                let node = NatsNode::start(dir.path(), &name, spec)?;
                nodes.push(node);
            }
            out.push(Region {
                name: region.to_string(),
                leaves: nodes,
                link,
            });
        }
        let mut mesh = Mesh {
            hub,
            regions: out,
            pki,
            dir,
        };
        mesh.wait_healthy(Duration::from_secs(40)).await?;
        Ok(mesh)
    }

    /// Waits until every running server answers `/healthz` and every running leaf node
    /// has its link to the hub.
    pub async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut waiting = None;
            for node in self.hub.iter_mut() {
                if node.is_running() && !node.healthy().await {
                    waiting = Some(node.name.clone());
                }
            }
            for region in self.regions.iter_mut() {
                for node in region.leaves.iter_mut() {
                    if !node.is_running() {
                        continue;
                    }
                    let linked = node
                        .monitor("/leafz")
                        .await
                        .is_ok_and(|v| v["leafnodes"].as_u64() == Some(1));
                    if !linked || !node.healthy().await {
                        waiting = Some(node.name.clone());
                    }
                }
            }
            let Some(name) = waiting else { return Ok(()) };
            if Instant::now() > deadline {
                let log = self.node(&name).map(|n| n.log_tail(15)).unwrap_or_default();
                bail!("{name} not healthy within {within:?}; its log ends with:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn node(&self, name: &str) -> Option<&NatsNode> {
        self.hub
            .iter()
            .chain(self.regions.iter().flat_map(|r| r.leaves.iter()))
            .find(|n| n.name == name)
    }

    pub fn region(&self, name: &str) -> &Region {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .expect("the test started this region")
    }

    pub fn region_mut(&mut self, name: &str) -> &mut Region {
        self.regions
            .iter_mut()
            .find(|r| r.name == name)
            .expect("the test started this region")
    }

    pub fn hub_urls(&self) -> Vec<String> {
        self.hub.iter().map(NatsNode::url).collect()
    }

    /// Where the servers write their logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Ingest on the hub (every hub URL), `md_last` with 3 replicas.
    pub fn ingest_config(&self, ticks_per_sec: u32) -> IngestConfig {
        let mut c = crate::ingest_config(&self.hub[0].url(), ticks_per_sec);
        c.nats.urls = self.hub_urls();
        c.nats.tls = self.pki.tls();
        c.nats.auth = self.pki.auth("ingest");
        c.kv.replicas = 3;
        c
    }

    /// An edge in `region`: the region's leaf nodes (first one first), snapshots from the
    /// region's mirror with the hub as fall-back; listens on 127.0.0.1:0.
    pub fn edge_config(&self, region: &str) -> EdgeConfig {
        let r = self.region(region);
        let mut c = crate::edge_config(&r.leaves[0].url());
        c.name = format!("edge-{region}");
        c.nats.name = format!("tickmesh-edge-{region}");
        c.nats.urls = r.urls();
        c.nats.js_domain = Some(HUB_DOMAIN.into());
        c.nats.kv_bucket = BUCKET.into();
        c.nats.kv_mirror_domain = Some(region.into());
        c.nats.tls = self.pki.tls();
        c.nats.auth = self.pki.auth("edge");
        c
    }

    /// An operator's NATS client (user `admin`) on the hub (every hub URL).
    pub async fn hub_client(&self) -> anyhow::Result<async_nats::Client> {
        self.pki.connect("admin", &self.hub_urls()).await
    }

    /// A client of `user` (e.g. `ingest`, to write what only ingest may) on the hub.
    pub async fn hub_client_as(&self, user: &str) -> anyhow::Result<async_nats::Client> {
        self.pki.connect(user, &self.hub_urls()).await
    }

    /// An operator's NATS client (user `admin`) on a region's leaf cluster.
    pub async fn region_client(&self, region: &str) -> anyhow::Result<async_nats::Client> {
        self.pki.connect("admin", &self.region(region).urls()).await
    }

    /// Creates the region's read-only mirror of the hub's `md_last` (what an operator does
    /// once per region) and waits until it holds a value of `key`.
    pub async fn create_mirror(&self, region: &str, key: &str) -> anyhow::Result<()> {
        let client = self.region_client(region).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tickmesh_edge::nats::ensure_mirror(&client, region, BUCKET, Some(HUB_DOMAIN), 1)
                .await
            {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let js = async_nats::jetstream::with_domain(client, region);
        loop {
            if let Ok(kv) = js.get_key_value(BUCKET).await
                && let Ok(Some(_)) = kv.get(key).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the {region} mirror holds no {key} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a revocation made at `at` into the hub's `ctl_revoked` (as user `admin`, as
    /// `cargo xtask revoke` does), creating the bucket (TTL 1 h, 3 replicas) if missing.
    pub async fn revoke(&self, what: &Revoked, at: u64) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(self.hub_client().await?);
        let store = revocation::ensure_bucket(&js, REVOCATION_TTL, 3).await?;
        revocation::revoke(&store, what, at).await?;
        Ok(())
    }

    /// Creates the region's read-only mirror of the hub's `ctl_revoked` (what an operator
    /// does once per region).
    pub async fn create_revocation_mirror(&self, region: &str) -> anyhow::Result<()> {
        let client = self.region_client(region).await?;
        revocation::ensure_mirror(&client, region, Some(HUB_DOMAIN), REVOCATION_TTL, 1).await
    }

    /// Waits until the region's mirror of `ctl_revoked` holds `what`.
    pub async fn wait_mirrored(&self, region: &str, what: &Revoked) -> anyhow::Result<()> {
        let key = what.key()?;
        let js = async_nats::jetstream::with_domain(self.region_client(region).await?, region);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(kv) = js.get_key_value(tickmesh_core::revocation::BUCKET).await
                && let Ok(Some(_)) = kv.get(&key).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the {region} mirror of ctl_revoked holds no {key} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `md.` subjects the hub forwards to `region`: the interest its leaf nodes
    /// registered, as every running hub node's `/leafz?subs=1` reports it.
    pub async fn leaf_tick_subjects(&mut self, region: &str) -> anyhow::Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for leaf in self.leaf_links(region).await? {
            for s in leaf["subscriptions_list"].as_array().into_iter().flatten() {
                if let Some(s) = s.as_str()
                    && (s.starts_with("md.") || s == ">")
                {
                    out.insert(s.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Messages the hub has sent over `region`'s leaf links so far.
    pub async fn leaf_out_msgs(&mut self, region: &str) -> anyhow::Result<u64> {
        Ok(self
            .leaf_links(region)
            .await?
            .iter()
            .filter_map(|l| l["out_msgs"].as_u64())
            .sum())
    }

    async fn leaf_links(&mut self, region: &str) -> anyhow::Result<Vec<Value>> {
        let prefix = format!("{region}-");
        let mut out = Vec::new();
        for node in self.hub.iter_mut() {
            if !node.is_running() {
                continue;
            }
            let v = node.monitor("/leafz?subs=1").await?;
            for leaf in v["leafs"].as_array().into_iter().flatten() {
                if leaf["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    out.push(leaf.clone());
                }
            }
        }
        Ok(out)
    }

    /// The leaf-node URL a region dials (through its link), with the region's credentials:
    /// what a rogue server would present too.
    pub fn leaf_url(&self, region: &str) -> String {
        let link = self.region(region).link.addr();
        format!("nats-leaf://{LEAF_USER}:{LEAF_PASSWORD}@{link}")
    }

    /// Every `Permissions Violation` the servers have logged so far, and every violation of
    /// a leaf-node link (`Publish Violation on`, `Subscription Violation on`, which also cut
    /// the link), as `node: line`.
    pub fn permission_violations(&self) -> Vec<String> {
        let nodes = self
            .hub
            .iter()
            .chain(self.regions.iter().flat_map(|r| &r.leaves));
        let mut out = Vec::new();
        for node in nodes {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            out.extend(
                log.lines()
                    .filter(|l| {
                        l.contains("Permissions Violation")
                            || l.contains("Publish Violation on")
                            || l.contains("Subscription Violation on")
                    })
                    .map(|l| format!("{}: {l}", node.name)),
            );
        }
        out
    }

    /// The hub node that leads JetStream stream `stream` (`KV_<bucket>` for a bucket).
    pub async fn stream_leader(&mut self, stream: &str) -> anyhow::Result<usize> {
        let mut leader = None;
        for node in self.hub.iter_mut() {
            if !node.is_running() {
                continue;
            }
            let v = node.monitor("/jsz?accounts=true&streams=true").await?;
            let details = v["account_details"].as_array().into_iter().flatten();
            for s in details.flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()) {
                if s["name"] == stream {
                    leader = s["cluster"]["leader"].as_str().map(str::to_string);
                }
            }
        }
        let leader = leader.with_context(|| format!("no hub node reports {stream}"))?;
        self.hub
            .iter()
            .position(|n| n.name == leader)
            .with_context(|| format!("{stream} is led by {leader}, not a hub node"))
    }

    /// The leaf node of `region` that leads JetStream stream `stream` (a mirror, e.g.
    /// `KV_md_last`), and how many replicas the stream has.
    pub async fn region_stream_leader(
        &mut self,
        region: &str,
        stream: &str,
    ) -> Option<(usize, usize)> {
        for node in self.region_mut(region).leaves.iter_mut() {
            if !node.is_running() {
                continue;
            }
            let Ok(v) = node.monitor("/jsz?accounts=true&streams=true").await else {
                continue;
            };
            let details = v["account_details"].as_array().into_iter().flatten();
            for s in details.flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()) {
                if s["name"] == stream
                    && let Some(leader) = s["cluster"]["leader"].as_str()
                {
                    let replicas = 1 + s["cluster"]["replicas"].as_array().map_or(0, Vec::len);
                    let leaves = &self.region(region).leaves;
                    return leaves
                        .iter()
                        .position(|n| n.name == leader)
                        .map(|i| (i, replicas));
                }
            }
        }
        None
    }

    /// The hub node a client named `name` is connected to.
    pub async fn hub_node_of(&mut self, client_name: &str) -> anyhow::Result<usize> {
        for (i, node) in self.hub.iter_mut().enumerate() {
            if !node.is_running() {
                continue;
            }
            let v = node.monitor("/connz").await?;
            let found = v["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == client_name);
            if found {
                return Ok(i);
            }
        }
        bail!("no hub node has a client named {client_name}")
    }
}
