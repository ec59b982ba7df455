//! Order system configuration: defaults, then a TOML file, then `TICKMESH_OMS_*` variables
//! (nested keys with `__`, e.g. `TICKMESH_OMS_STREAM__REPLICAS=3`). Unknown keys are
//! refused; every value is checked, and a bad one named, before anything connects.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use tickmesh_service::nats::NatsConfig;

use crate::desk::SimConfig;
use crate::writer::StreamConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OmsConfig {
    /// The hub's servers, as user `oms` on the mesh (`[nats]`, `[nats.tls]`, `[nats.auth]`).
    pub nats: NatsConfig,
    /// Number of subject shards, deployment-wide; must match ingest's (prints are followed
    /// on `tr.<fnv1a_32(symbol) % shards>.<symbol>`). Default 64.
    pub shards: u32,
    /// The accounts this process writes, and is the only writer of. Default DEMO1 to DEMO5.
    pub accounts: Vec<String>,
    pub stream: StreamConfig,
    pub sim: SimConfig,
    /// Where to serve Prometheus `/metrics` (e.g. `127.0.0.1:9103`); not served when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, what is being appended (a decision, or a fill and its order, position
    /// and balance) is finished for up to this long, ms, then the process exits; anything
    /// left half-written is finished at the next start. Default 5000.
    pub stop_grace_ms: u64,
}

impl Default for OmsConfig {
    fn default() -> Self {
        OmsConfig {
            nats: NatsConfig::named("tickmesh-oms"),
            shards: tickmesh_core::subject::DEFAULT_SHARDS,
            accounts: (1..=5).map(|i| format!("DEMO{i}")).collect(),
            stream: StreamConfig::default(),
            sim: SimConfig::default(),
            metrics_listen: None,
            stop_grace_ms: 5000,
        }
    }
}

pub use tickmesh_service::config::ConfigError;
use tickmesh_service::config::bad;

impl OmsConfig {
    /// Loads defaults, then `file` (if given), then the environment; then validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let config = tickmesh_service::config::load(Self::default(), file, "TICKMESH_OMS_")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nats
            .validate()
            .map_err(|(key, reason)| bad(key, reason))?;
        if !(1..=65_536).contains(&self.shards) {
            return Err(bad(
                "shards",
                format!("must be 1..=65536, got {}", self.shards),
            ));
        }
        if self.stop_grace_ms > 600_000 {
            return Err(bad(
                "stop_grace_ms",
                format!("must be at most 600000, got {}", self.stop_grace_ms),
            ));
        }
        if self.accounts.is_empty() || self.accounts.len() > 10_000 {
            return Err(bad("accounts", "list 1 to 10000 accounts"));
        }
        for (i, name) in self.accounts.iter().enumerate() {
            let key = format!("accounts[{i}]");
            tickmesh_core::account::validate(name).map_err(|e| bad(&key, e.to_string()))?;
            if self.accounts[..i].contains(name) {
                return Err(bad(key, format!("{name} is listed twice")));
            }
        }
        self.stream
            .validate()
            .map_err(|(key, reason)| bad(format!("stream.{key}"), reason))?;
        self.sim
            .validate()
            .map_err(|(key, reason)| bad(format!("sim.{key}"), reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        OmsConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let key_of = |c: OmsConfig| c.validate().unwrap_err().key;
        let mut c = OmsConfig::default();
        c.accounts.push("DEMO1".into());
        assert_eq!(key_of(c), "accounts[5]");
        let mut c = OmsConfig::default();
        c.accounts[1] = "DE.MO".into();
        assert_eq!(key_of(c), "accounts[1]");
        let mut c = OmsConfig::default();
        c.stream.replicas = 7;
        assert_eq!(key_of(c), "stream.replicas");
        let mut c = OmsConfig::default();
        c.sim.symbols[2] = "md.>".into();
        assert_eq!(key_of(c), "sim.symbols[2]");
        let mut c = OmsConfig::default();
        c.sim.max_qty = 150;
        assert_eq!(key_of(c), "sim.max_qty");
        let mut c = OmsConfig::default();
        c.sim.market_ratio = 1.5;
        assert_eq!(key_of(c), "sim.market_ratio");
        let mut c = OmsConfig::default();
        c.sim.initial_cash = f64::NAN;
        assert_eq!(key_of(c), "sim.initial_cash");
        let c = OmsConfig {
            shards: 0,
            ..OmsConfig::default()
        };
        assert_eq!(key_of(c), "shards");
        let mut c = OmsConfig::default();
        c.nats.urls.clear();
        assert_eq!(key_of(c), "nats.urls");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn the_demo_config_loads_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/oms.toml");
            jail.set_env("TICKMESH_OMS_STREAM__REPLICAS", "3");
            let c = OmsConfig::load(Some(Path::new(demo))).unwrap();
            assert_eq!(c.stream.replicas, 3);
            assert_eq!(c.accounts.len(), 5);
            jail.create_file("o.toml", "[sim]\norder_intervall_ms = 5\n")?;
            let e = OmsConfig::load(Some(Path::new("o.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("order_intervall_ms"), "{e}");
            jail.create_file("p.toml", "[stream]\nmax_age_s = 5\n")?;
            let e = OmsConfig::load(Some(Path::new("p.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("stream.max_age_s"), "{e}");
            Ok(())
        });
    }
}
