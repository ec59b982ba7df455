//! Ingest configuration: defaults, then a TOML file, then `TICKMESH_INGEST_*` variables
//! (nested keys with `__`, e.g. `TICKMESH_INGEST_SIM__TICKS_PER_SEC=5000`).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::sources::sim::InstrumentSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub nats: NatsConfig,
    /// Number of subject shards, deployment-wide (`md.<fnv1a_32(symbol) % shards>.<symbol>`).
    pub shards: u32,
    pub kv: KvConfig,
    pub sim: SimConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS server URLs, tried in order.
    pub urls: Vec<String>,
    /// Client name shown by the server.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// Latest-value bucket.
    pub bucket: String,
    /// A symbol's KV entry is written at most once per this many milliseconds; ticks in
    /// between are coalesced (latest wins). Default 250.
    pub interval_ms: u64,
    /// KV writes in flight at once. Default 64.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Random seed; the same seed gives the same sequence of price moves.
    pub seed: u64,
    /// Ticks per second over the whole universe. Default 2000.
    pub ticks_per_sec: u32,
    /// How often the generator wakes to emit the ticks due, in ms. Default 5.
    pub batch_ms: u64,
    /// The instruments; empty means the built-in universe of US equities and ETFs.
    pub universe: Vec<InstrumentSpec>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            nats: NatsConfig::default(),
            shards: tickmesh_core::subject::DEFAULT_SHARDS,
            kv: KvConfig::default(),
            sim: SimConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            name: "tickmesh-ingest".into(),
        }
    }
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            bucket: "md_last".into(),
            interval_ms: 250,
            max_in_flight: 64,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            ticks_per_sec: 2000,
            batch_ms: 5,
            universe: Vec::new(),
        }
    }
}

/// A config value that is well-typed but unusable; names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

impl IngestConfig {
    /// Loads defaults, then `file` (if given), then the environment; then validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(IngestConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        let config: IngestConfig = fig
            .merge(Env::prefixed("TICKMESH_INGEST_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats.urls.is_empty() {
            return Err(bad("nats.urls", "at least one URL is needed"));
        }
        if !(1..=65_536).contains(&self.shards) {
            return Err(bad(
                "shards",
                format!("must be 1..=65536, got {}", self.shards),
            ));
        }
        if self.kv.bucket.is_empty()
            || !self
                .kv
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "kv.bucket",
                format!("{:?} is not a valid bucket name", self.kv.bucket),
            ));
        }
        if !(10..=60_000).contains(&self.kv.interval_ms) {
            return Err(bad(
                "kv.interval_ms",
                format!("must be 10..=60000, got {}", self.kv.interval_ms),
            ));
        }
        if self.kv.max_in_flight == 0 {
            return Err(bad("kv.max_in_flight", "must be at least 1"));
        }
        if !(1..=5_000_000).contains(&self.sim.ticks_per_sec) {
            return Err(bad(
                "sim.ticks_per_sec",
                format!("must be 1..=5000000, got {}", self.sim.ticks_per_sec),
            ));
        }
        if !(1..=1000).contains(&self.sim.batch_ms) {
            return Err(bad(
                "sim.batch_ms",
                format!("must be 1..=1000, got {}", self.sim.batch_ms),
            ));
        }
        for (i, spec) in self.sim.universe.iter().enumerate() {
            spec.validate()
                .map_err(|reason| bad(&format!("sim.universe[{i}]"), reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        IngestConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = IngestConfig::default();
        c.kv.interval_ms = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("kv.interval_ms")
        );
        let mut c = IngestConfig::default();
        c.sim.universe = vec![InstrumentSpec {
            symbol: "bad.sym".into(),
            ..InstrumentSpec::default()
        }];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sim.universe[0]")
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn unknown_and_mistyped_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("i.toml", "[sim]\nticks_per_sek = 5\n")?;
            let e = IngestConfig::load(Some(Path::new("i.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ticks_per_sek"), "{e}");
            jail.create_file("j.toml", "[sim]\nticks_per_sec = \"fast\"\n")?;
            let e = IngestConfig::load(Some(Path::new("j.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ticks_per_sec"), "{e}");
            jail.set_env("TICKMESH_INGEST_SIM__TICKS_PER_SEC", "777");
            let c = IngestConfig::load(None).unwrap();
            assert_eq!(c.sim.ticks_per_sec, 777);
            Ok(())
        });
    }
}
