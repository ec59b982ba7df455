//! Edge configuration: defaults, then a TOML file, then `TICKMESH_EDGE_*` variables
//! (nested keys with `__`, e.g. `TICKMESH_EDGE_SESSION__HEARTBEAT_MS=500`). Unknown keys
//! are refused; every value is checked before any port is bound.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This gateway's name, sent in `welcome.edge`.
    pub name: String,
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// Number of subject shards, deployment-wide; must match ingest.
    pub shards: u32,
    pub nats: NatsConfig,
    pub session: SessionConfig,
    pub snapshot: SnapshotConfig,
    pub limits: LimitsConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM, clients are told to reconnect after a random delay below this, ms,
    /// so that they do not all come back at once. Default 5000.
    pub reconnect_window_ms: u64,
    /// The process exits at the latest this long after SIGTERM, ms. Default 10000.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            reconnect_window_ms: 5000,
            grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS URLs, same-AZ server first.
    pub urls: Vec<String>,
    /// Client name shown by the server.
    pub name: String,
    /// JetStream domain to read KV from (the region's or `hub`); none for a plain server.
    pub js_domain: Option<String>,
    /// Latest-value KV bucket.
    pub kv_bucket: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `hb` period, ms. Default 1000.
    pub heartbeat_ms: u32,
    /// WebSocket ping period, ms. Default 15000.
    pub ping_interval_ms: u64,
    /// A client that sends nothing (not even a pong) for this long is closed, ms. Default 45000.
    pub idle_timeout_ms: u64,
    /// Largest client message, bytes; larger closes with 1009. Default 65536.
    pub max_message_bytes: usize,
    /// Byte budget of one session's every-tick queue. When full, the session's every-tick
    /// subscriptions move to `slow_interval_ms` and it gets `slow_consumer`. Default 1 MiB.
    pub live_budget_bytes: usize,
    /// Conflation interval for sessions that overran their budget, ms. Default 250.
    pub slow_interval_ms: u32,
    /// A write to a client that does not finish in this long closes it with 4008, ms.
    /// Default 5000.
    pub write_timeout_ms: u64,
    /// Most ticks in one `ticks` frame. Default 500.
    pub max_ticks_per_frame: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// How long a KV read is reused for other sessions, ms. Default 1000.
    pub cache_ttl_ms: u64,
    /// Most symbols kept in the KV cache. Default 100000.
    pub cache_capacity: u64,
    /// A KV read that takes longer is abandoned (the first live tick follows), ms. Default 2000.
    pub kv_timeout_ms: u64,
}

/// The limits of an anonymous session (sent in `welcome.limits`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most symbols one session may hold. Default 500.
    pub max_symbols: u32,
    /// Client messages per second a session may send (advertised). Default 50.
    pub max_msgs_per_s: u32,
    /// Smallest `interval_ms`; smaller requests are raised to it. Default 0 (every tick).
    pub min_interval_ms: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            name: "edge-1".into(),
            listen: ([127, 0, 0, 1], 8080).into(),
            shards: tickmesh_core::subject::DEFAULT_SHARDS,
            nats: NatsConfig::default(),
            session: SessionConfig::default(),
            snapshot: SnapshotConfig::default(),
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            name: "tickmesh-edge".into(),
            js_domain: None,
            kv_bucket: "md_last".into(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_ms: 1000,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            max_message_bytes: 64 * 1024,
            live_budget_bytes: 1024 * 1024,
            slow_interval_ms: 250,
            write_timeout_ms: 5000,
            max_ticks_per_frame: 500,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            cache_ttl_ms: 1000,
            cache_capacity: 100_000,
            kv_timeout_ms: 2000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_symbols: 500,
            max_msgs_per_s: 50,
            min_interval_ms: 0,
        }
    }
}

/// A config value that is well-typed but unusable; names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn check(ok: bool, key: &'static str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            reason: reason(),
        })
    }
}

impl EdgeConfig {
    /// Loads defaults, then `file` (if given), then the environment; then validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(EdgeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        let config: EdgeConfig = fig
            .merge(Env::prefixed("TICKMESH_EDGE_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        check(
            !self.name.is_empty() && self.name.len() <= 64,
            "name",
            || format!("must be 1 to 64 characters, got {:?}", self.name),
        )?;
        check((1..=65_536).contains(&self.shards), "shards", || {
            format!("must be 1..=65536, got {}", self.shards)
        })?;
        check(!self.nats.urls.is_empty(), "nats.urls", || {
            "at least one URL is needed".into()
        })?;
        check(!self.nats.kv_bucket.is_empty(), "nats.kv_bucket", || {
            "must not be empty".into()
        })?;
        check(
            (50..=60_000).contains(&s.heartbeat_ms),
            "session.heartbeat_ms",
            || format!("must be 50..=60000, got {}", s.heartbeat_ms),
        )?;
        check(
            (100..=300_000).contains(&s.ping_interval_ms),
            "session.ping_interval_ms",
            || format!("must be 100..=300000, got {}", s.ping_interval_ms),
        )?;
        check(
            s.idle_timeout_ms > s.ping_interval_ms,
            "session.idle_timeout_ms",
            || {
                format!(
                    "must be above session.ping_interval_ms ({}), got {}",
                    s.ping_interval_ms, s.idle_timeout_ms
                )
            },
        )?;
        check(
            (256..=16 << 20).contains(&s.max_message_bytes),
            "session.max_message_bytes",
            || format!("must be 256..=16777216, got {}", s.max_message_bytes),
        )?;
        check(
            s.live_budget_bytes >= 1024,
            "session.live_budget_bytes",
            || format!("must be at least 1024, got {}", s.live_budget_bytes),
        )?;
        check(
            (1..=60_000).contains(&s.slow_interval_ms),
            "session.slow_interval_ms",
            || format!("must be 1..=60000, got {}", s.slow_interval_ms),
        )?;
        check(s.write_timeout_ms >= 10, "session.write_timeout_ms", || {
            format!("must be at least 10, got {}", s.write_timeout_ms)
        })?;
        check(
            (1..=65_535).contains(&s.max_ticks_per_frame),
            "session.max_ticks_per_frame",
            || format!("must be 1..=65535, got {}", s.max_ticks_per_frame),
        )?;
        check(
            self.snapshot.cache_capacity > 0,
            "snapshot.cache_capacity",
            || "must be at least 1".into(),
        )?;
        check(
            self.snapshot.kv_timeout_ms >= 10,
            "snapshot.kv_timeout_ms",
            || format!("must be at least 10, got {}", self.snapshot.kv_timeout_ms),
        )?;
        check(self.limits.max_symbols > 0, "limits.max_symbols", || {
            "must be at least 1".into()
        })?;
        check(
            self.limits.min_interval_ms <= 60_000,
            "limits.min_interval_ms",
            || format!("must be at most 60000, got {}", self.limits.min_interval_ms),
        )?;
        check(
            self.shutdown.grace_ms >= self.shutdown.reconnect_window_ms,
            "shutdown.grace_ms",
            || {
                format!(
                    "must be at least shutdown.reconnect_window_ms ({}), got {}",
                    self.shutdown.reconnect_window_ms, self.shutdown.grace_ms
                )
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EdgeConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = EdgeConfig::default();
        c.session.heartbeat_ms = 5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("session.heartbeat_ms")
        );
        let mut c = EdgeConfig::default();
        c.session.idle_timeout_ms = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("session.idle_timeout_ms")
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn file_then_env_and_unknown_keys_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "e.toml",
                "name = \"edge-a\"\n[session]\nheartbeat_ms = 500\n",
            )?;
            jail.set_env("TICKMESH_EDGE_SESSION__HEARTBEAT_MS", "700");
            let c = EdgeConfig::load(Some(Path::new("e.toml"))).unwrap();
            assert_eq!((c.name.as_str(), c.session.heartbeat_ms), ("edge-a", 700));
            jail.create_file("bad.toml", "[session]\nheartbeat = 500\n")?;
            let e = EdgeConfig::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("heartbeat"), "{e}");
            jail.create_file("typed.toml", "listen = \"nowhere\"\n")?;
            let e = EdgeConfig::load(Some(Path::new("typed.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("listen"), "{e}");
            Ok(())
        });
    }
}
