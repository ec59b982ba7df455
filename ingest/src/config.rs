//! Ingest configuration: defaults, then a TOML file, then `TICKMESH_INGEST_*` variables
//! (nested keys with `__`, e.g. `TICKMESH_INGEST_SIM__TICKS_PER_SEC=5000`).

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use tickmesh_service::nats::NatsConfig;

use crate::lease::LeaseConfig;
use crate::sources::itch::ItchConfig;
use crate::sources::options::OptionsConfig;
use crate::sources::replay::ReplayConfig;
use crate::sources::session::SessionConfig;
use crate::sources::sim::InstrumentSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub nats: NatsConfig,
    /// Number of subject shards, deployment-wide (`md.<fnv1a_32(symbol) % shards>.<symbol>`).
    pub shards: u32,
    pub kv: KvConfig,
    /// The feed: `sim` (default), `replay` or `itch`.
    pub source: SourceKind,
    pub sim: SimConfig,
    pub replay: ReplayConfig,
    pub itch: ItchConfig,
    pub refdata: RefDataConfig,
    pub trades: TradesConfig,
    pub bars: crate::bars::BarsConfig,
    pub delayed: DelayedConfig,
    pub lease: LeaseConfig,
    /// Where to serve Prometheus `/metrics` (e.g. `127.0.0.1:9101`); not served when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the node announces, while it publishes, that it is alive and which shards
    /// it owns (`ctl.alive`), ms; 0 = never (edges then cannot tell a quiet feed from a dead
    /// one). Default 500: well below the edges' `nats.stale_after_ms` (2000).
    pub liveness_ms: u64,
}

/// Which feed `run` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The market simulator (`[sim]`).
    #[default]
    Sim,
    /// Recorded files (`[replay]`).
    Replay,
    /// NASDAQ TotalView-ITCH 5.0 files (`[itch]`).
    Itch,
}

impl SourceKind {
    /// The feed named in reference data when `refdata.feed` is unset.
    pub fn default_feed(self) -> &'static str {
        match self {
            SourceKind::Sim => "SIM",
            SourceKind::Replay => "REPLAY",
            SourceKind::Itch => "XNAS",
        }
    }
}

/// `[refdata]`: the reference-data bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefDataConfig {
    /// Bucket name. Default `md_ref`.
    pub bucket: String,
    /// Write instruments and chains. Default true.
    pub enabled: bool,
    /// The exchange or feed named on every instrument written, for usage reports.
    /// Default: by `source`, `SIM`, `REPLAY` or `XNAS` (ITCH is NASDAQ's feed).
    pub feed: Option<String>,
}

/// `[trades]`: every print on `tr.<shard>.<symbol>`, the recent ones kept in a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TradesConfig {
    /// Publish prints. Default true.
    pub enabled: bool,
    /// The stream that keeps the recent prints of each symbol (subjects `tr.>`),
    /// created with `kv.replicas` copies if missing. Default `md_trades`.
    pub stream: String,
    /// Prints kept per symbol. Default 500 (the most a client's history asks for).
    pub keep: i64,
}

/// `[delayed]`: the stream edges serve delayed data from: at most one tick per symbol
/// per `step_ms` (the latest at each step), kept `keep_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelayedConfig {
    /// Publish delayed samples. Default true.
    pub enabled: bool,
    /// The stream (subjects `mdd.>`, file storage, direct gets), created with
    /// `kv.replicas` copies if missing. Default `md_delayed`.
    pub stream: String,
    /// At most one sample per symbol this often, ms: the step of delayed data. Default
    /// 1000.
    pub step_ms: u64,
    /// How long samples (and delayed trades and bars) are kept, ms: the longest delay an
    /// edge serves plus a margin. Default 1200000 (20 minutes, for the 15-minute delay).
    pub keep_ms: u64,
    /// The stream of delayed trades and bars: every message of `trades.stream` and
    /// `bars.stream`, sourced from them and kept `keep_ms` on file, with direct gets;
    /// created (with `kv.replicas` copies) when trades are published. Default
    /// `md_delayed_tape`.
    pub tape_stream: String,
}

impl Default for DelayedConfig {
    fn default() -> Self {
        DelayedConfig {
            enabled: true,
            stream: tickmesh_core::subject::DELAYED_STREAM.into(),
            step_ms: 1000,
            keep_ms: 1_200_000,
            tape_stream: tickmesh_core::subject::DELAYED_TAPE_STREAM.into(),
        }
    }
}

impl Default for TradesConfig {
    fn default() -> Self {
        TradesConfig {
            enabled: true,
            stream: tickmesh_core::trade::STREAM.into(),
            keep: 500,
        }
    }
}

impl Default for RefDataConfig {
    fn default() -> Self {
        RefDataConfig {
            bucket: tickmesh_core::refdata::BUCKET.into(),
            enabled: true,
            feed: None,
        }
    }
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
    /// Replicas of the bucket when ingest creates it: 3 on the hub cluster (one per AZ),
    /// 1 on a single server; an existing bucket is used as it is. 1..=5, default 1.
    pub replicas: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Random seed; the same seed and config give the same sequence of ticks.
    pub seed: u64,
    /// Ticks per wall second of the equities, ETFs and indices (option ticks come on top,
    /// from re-pricing), before the burst at the open. Default 2000.
    pub ticks_per_sec: u32,
    /// How often the generator wakes to emit the ticks due, in ms. Default 5.
    pub batch_ms: u64,
    /// Depth levels per side in every tick (0 for none). Default 5.
    pub depth: usize,
    /// The instruments; empty means the built-in universe of US equities, ETFs and indices.
    pub universe: Vec<InstrumentSpec>,
    pub session: SessionConfig,
    pub options: OptionsConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            nats: NatsConfig::named("tickmesh-ingest"),
            shards: tickmesh_core::subject::DEFAULT_SHARDS,
            kv: KvConfig::default(),
            source: SourceKind::Sim,
            sim: SimConfig::default(),
            replay: ReplayConfig::default(),
            itch: ItchConfig::default(),
            refdata: RefDataConfig::default(),
            trades: TradesConfig::default(),
            bars: crate::bars::BarsConfig::default(),
            delayed: DelayedConfig::default(),
            lease: LeaseConfig::default(),
            metrics_listen: None,
            liveness_ms: 500,
        }
    }
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            bucket: "md_last".into(),
            interval_ms: 250,
            max_in_flight: 64,
            replicas: 1,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            ticks_per_sec: 2000,
            batch_ms: 5,
            depth: 5,
            universe: Vec::new(),
            session: SessionConfig::default(),
            options: OptionsConfig::default(),
        }
    }
}

pub use tickmesh_service::config::ConfigError;
use tickmesh_service::config::bad;

impl IngestConfig {
    /// Loads defaults, then `file` (if given), then the environment; then validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let config = tickmesh_service::config::load(Self::default(), file, "TICKMESH_INGEST_")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nats
            .validate()
            .map_err(|(key, reason)| bad(key, reason))?;
        if self.liveness_ms > 60_000 {
            return Err(bad(
                "liveness_ms",
                format!("must be 0 (off) or at most 60000, got {}", self.liveness_ms),
            ));
        }
        if !(1..=65_536).contains(&self.shards) {
            return Err(bad(
                "shards",
                format!("must be 1..=65536, got {}", self.shards),
            ));
        }
        for (key, bucket) in [
            ("kv.bucket", &self.kv.bucket),
            ("refdata.bucket", &self.refdata.bucket),
            ("lease.bucket", &self.lease.bucket),
            ("trades.stream", &self.trades.stream),
            ("bars.stream", &self.bars.stream),
            ("delayed.stream", &self.delayed.stream),
            ("delayed.tape_stream", &self.delayed.tape_stream),
        ] {
            if !valid_bucket(bucket) {
                return Err(bad(key, format!("{bucket:?} is not a valid bucket name")));
            }
        }
        if let Some(feed) = &self.refdata.feed
            && !tickmesh_service::config::is_name(feed, 32)
        {
            return Err(bad(
                "refdata.feed",
                format!("{feed:?}: 1 to 32 letters, digits, '-' or '_'"),
            ));
        }
        if !(1..=100_000).contains(&self.bars.keep) {
            return Err(bad(
                "bars.keep",
                format!("must be 1..=100000, got {}", self.bars.keep),
            ));
        }
        if !(10..=60_000).contains(&self.bars.update_ms) {
            return Err(bad(
                "bars.update_ms",
                format!("must be 10..=60000, got {}", self.bars.update_ms),
            ));
        }
        if !(1..=86_400).contains(&self.bars.live_ttl_s) {
            return Err(bad(
                "bars.live_ttl_s",
                format!("must be 1..=86400, got {}", self.bars.live_ttl_s),
            ));
        }
        if !(1..=10_000).contains(&self.trades.keep) {
            return Err(bad(
                "trades.keep",
                format!("must be 1..=10000, got {}", self.trades.keep),
            ));
        }
        if !(100..=60_000).contains(&self.delayed.step_ms) {
            return Err(bad(
                "delayed.step_ms",
                format!("must be 100..=60000, got {}", self.delayed.step_ms),
            ));
        }
        if !(10_000..=604_800_000).contains(&self.delayed.keep_ms) {
            return Err(bad(
                "delayed.keep_ms",
                format!("must be 10000..=604800000, got {}", self.delayed.keep_ms),
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
                .map_err(|reason| bad(format!("sim.universe[{i}]"), reason))?;
        }
        self.validate_sim()?;
        self.replay
            .validate(self.source == SourceKind::Replay)
            .map_err(|(key, reason)| bad(format!("replay.{key}"), reason))?;
        self.itch
            .validate(self.source == SourceKind::Itch)
            .map_err(|(key, reason)| bad(format!("itch.{key}"), reason))?;
        self.lease
            .validate()
            .map_err(|(key, reason)| bad(format!("lease.{key}"), reason))
    }

    fn validate_sim(&self) -> Result<(), ConfigError> {
        let sim = &self.sim;
        if sim.depth > 10 {
            return Err(bad(
                "sim.depth",
                format!("must be 0..=10, got {}", sim.depth),
            ));
        }
        sim.session
            .validate()
            .map_err(|(key, reason)| bad(format!("sim.session.{key}"), reason))?;
        sim.options
            .validate()
            .map_err(|(key, reason)| bad(format!("sim.options.{key}"), reason))?;
        let universe: Vec<InstrumentSpec> = if sim.universe.is_empty() {
            crate::sources::universe::default_universe()
        } else {
            sim.universe.clone()
        };
        let mut seen = std::collections::HashSet::new();
        for (i, spec) in universe.iter().enumerate() {
            if !seen.insert(spec.symbol.as_str()) {
                return Err(bad(
                    format!("sim.universe[{i}]"),
                    format!("{} is listed twice", spec.symbol),
                ));
            }
        }
        for (i, name) in sim.options.underlyings.iter().enumerate() {
            match universe.iter().find(|s| &s.symbol == name) {
                Some(spec) if spec.kind != tickmesh_core::Kind::Option => {}
                _ => {
                    return Err(bad(
                        format!("sim.options.underlyings[{i}]"),
                        format!("{name:?} is not in the universe"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_bucket(name: &str) -> bool {
    tickmesh_service::config::is_name(name, 255)
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
    fn sim_replay_and_lease_errors_name_their_key() {
        let key_of = |c: IngestConfig| c.validate().unwrap_err().key;
        let mut c = IngestConfig::default();
        c.sim.options.underlyings = vec!["AAPL".into(), "NOPE".into()];
        assert_eq!(key_of(c), "sim.options.underlyings[1]");
        let mut c = IngestConfig::default();
        c.sim.session.open = "9:30".into();
        assert_eq!(key_of(c), "sim.session.open");
        let c = IngestConfig {
            source: SourceKind::Replay,
            ..IngestConfig::default()
        };
        assert_eq!(key_of(c), "replay.files");
        let c = IngestConfig {
            source: SourceKind::Itch,
            ..IngestConfig::default()
        };
        assert_eq!(key_of(c), "itch.files");
        let mut c = IngestConfig::default();
        c.itch.date = Some("2026-13-01".into());
        assert_eq!(key_of(c), "itch.date");
        let mut c = IngestConfig::default();
        c.lease.name = "a.b".into();
        assert_eq!(key_of(c), "lease.name");
        let mut c = IngestConfig::default();
        c.refdata.bucket = "md ref".into();
        assert_eq!(key_of(c), "refdata.bucket");
        let mut c = IngestConfig::default();
        c.sim.depth = 11;
        assert_eq!(key_of(c), "sim.depth");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn the_demo_config_loads() {
        figment::Jail::expect_with(|jail| {
            let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/ingest.toml");
            jail.set_env("TICKMESH_INGEST_METRICS_LISTEN", "127.0.0.1:19101");
            let c = IngestConfig::load(Some(Path::new(demo))).unwrap();
            assert_eq!(c.sim.options.count(), 672);
            assert_eq!(c.metrics_listen, Some(([127, 0, 0, 1], 19101).into()));
            Ok(())
        });
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
