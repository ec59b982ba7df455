//! An edge as its own process, so that a test can kill it the hard way.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_edge::EdgeConfig;

use super::list;
use crate::{free_port, http_get};
use tickmesh_edge::config::AuthConfig;

/// The `TICKMESH_EDGE_AUTH__*` variables of `auth`'s anonymous access and tier table (the
/// whole table: a configured one replaces the built-in one).
fn anonymous_env(auth: &AuthConfig) -> Vec<(&'static str, String)> {
    let tiers: Vec<String> = auth
        .tiers
        .iter()
        .map(|(name, t)| {
            format!(
                "{name}={{min_interval_ms={},max_symbols={},max_msgs_per_s={}}}",
                t.min_interval_ms, t.max_symbols, t.max_msgs_per_s
            )
        })
        .collect();
    vec![
        ("TICKMESH_EDGE_AUTH__ANONYMOUS", auth.anonymous.to_string()),
        (
            "TICKMESH_EDGE_AUTH__ALLOW_OPEN_ANONYMOUS",
            auth.allow_open_anonymous.to_string(),
        ),
        (
            "TICKMESH_EDGE_AUTH__ANONYMOUS_TIER",
            auth.anonymous_tier.clone(),
        ),
        (
            "TICKMESH_EDGE_AUTH__ANONYMOUS_ENT",
            list(auth.anonymous_ent.iter().cloned()),
        ),
        (
            "TICKMESH_EDGE_AUTH__DEFAULT_TIER",
            auth.default_tier.clone(),
        ),
        (
            "TICKMESH_EDGE_AUTH__TIERS",
            format!("{{{}}}", tiers.join(",")),
        ),
    ]
}

/// An edge running as its own process (so that it can be SIGKILLed), configured through
/// `TICKMESH_EDGE_*` variables (the mesh's settings: name, listen, nats, shutdown, and
/// anonymous access with its tiers).
#[derive(Debug)]
pub struct EdgeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub name: String,
}

impl EdgeProcess {
    /// Starts `bin` (an integration test passes
    /// `env!("CARGO_BIN_EXE_tickmesh-test-edge")`, which cargo builds with the tests) on a
    /// free port and waits until `/readyz` says ready.
    pub async fn start(bin: &Path, config: &EdgeConfig) -> anyhow::Result<EdgeProcess> {
        EdgeProcess::start_from(bin, None, config, &[]).await
    }

    /// Like [`EdgeProcess::start`], from a config file (e.g. the demo's `config/edge.toml`)
    /// whose anonymous access and tiers hold, and whose other settings the mesh's (name,
    /// listen, nats, shutdown) and `env` (more `TICKMESH_EDGE_*` variables) override.
    pub async fn start_from(
        bin: &Path,
        file: Option<&Path>,
        config: &EdgeConfig,
        env: &[(&str, String)],
    ) -> anyhow::Result<EdgeProcess> {
        let mut edge = EdgeProcess::launch(bin, file, config, env).await?;
        edge.ready_within(Duration::from_secs(20)).await?;
        Ok(edge)
    }

    /// Like [`EdgeProcess::start_from`], but returns as soon as the edge answers HTTP
    /// (`/healthz`), ready or not: for a test of what an edge does before it is ready.
    pub async fn launch(
        bin: &Path,
        file: Option<&Path>,
        config: &EdgeConfig,
        env: &[(&str, String)],
    ) -> anyhow::Result<EdgeProcess> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let n = &config.nats;
        let mut cmd = Command::new(bin);
        if let Some(file) = file {
            cmd.arg("--config").arg(file);
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v)));
        cmd.env("TICKMESH_EDGE_NAME", &config.name)
            .env("TICKMESH_EDGE_LISTEN", addr.to_string())
            .env("TICKMESH_EDGE_NATS__URLS", list(n.urls.iter().cloned()))
            .env("TICKMESH_EDGE_NATS__NAME", &n.name)
            .env("TICKMESH_EDGE_NATS__KV_BUCKET", &n.kv_bucket)
            .env(
                "TICKMESH_EDGE_SHUTDOWN__RECONNECT_WINDOW_MS",
                config.shutdown.reconnect_window_ms.to_string(),
            )
            .env(
                "TICKMESH_EDGE_SHUTDOWN__GRACE_MS",
                config.shutdown.grace_ms.to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(d) = &n.js_domain {
            cmd.env("TICKMESH_EDGE_NATS__JS_DOMAIN", d);
        }
        if let Some(d) = &n.kv_mirror_domain {
            cmd.env("TICKMESH_EDGE_NATS__KV_MIRROR_DOMAIN", d);
        }
        if let Some(ca) = &n.tls.ca_file {
            cmd.env("TICKMESH_EDGE_NATS__TLS__CA_FILE", ca);
        }
        if let (Some(user), Some(password)) = (&n.auth.user, &n.auth.password_file) {
            cmd.env("TICKMESH_EDGE_NATS__AUTH__USER", user)
                .env("TICKMESH_EDGE_NATS__AUTH__PASSWORD_FILE", password);
        }
        if file.is_none() {
            // With a file, access and tiers are the file's.
            cmd.envs(anonymous_env(&config.auth));
        }
        let child = cmd.spawn().context("starting tickmesh-edge")?;
        let mut edge = EdgeProcess {
            child: Some(child),
            addr,
            name: config.name.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(addr, "/healthz")
                .await
                .is_ok_and(|(s, _)| s == 200)
            {
                return Ok(edge);
            }
            edge.exited()?;
            if Instant::now() > deadline {
                bail!("tickmesh-edge at {addr} not listening within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` says ready.
    pub async fn ready_within(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let said = http_get(self.addr, "/readyz").await;
            if said.as_ref().is_ok_and(|(s, _)| *s == 200) {
                return Ok(());
            }
            self.exited()?;
            if Instant::now() > deadline {
                bail!(
                    "tickmesh-edge at {} not ready within {within:?}: /readyz said {said:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error if the process has exited.
    fn exited(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!("tickmesh-edge exited: {status}");
        }
        Ok(())
    }

    /// SIGKILL: clients see their connections drop with no close frame.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
