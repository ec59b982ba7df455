//! Edge configuration: defaults, then a TOML file, then `TICKMESH_EDGE_*` variables
//! (nested keys with `__`, e.g. `TICKMESH_EDGE_SESSION__HEARTBEAT_MS=500`). Unknown keys
//! are refused; every value is checked before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tickmesh_service::nats::{NatsAuth, NatsTls};

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
    pub auth: AuthConfig,
    /// Serve `wss://` when set.
    pub tls: Option<TlsConfig>,
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM, each client is told to reconnect after a random delay below this, ms,
    /// so that they do not all come back at once; its session streams until that delay
    /// is over, then closes with 4001. Default 5000.
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
    /// JetStream domain of the region's read-only mirror of `kv_bucket` (same bucket name);
    /// snapshots are read there first, and from `js_domain` when it is stale or missing.
    /// None: read `js_domain` only.
    pub kv_mirror_domain: Option<String>,
    /// The mirror is stale when it has heard nothing from its source for this long, ms.
    /// Default 3000.
    pub kv_mirror_max_idle_ms: u64,
    /// Create the mirror if it is missing (needs the right to create streams in
    /// `kv_mirror_domain`; otherwise an operator creates it once). Default false.
    pub kv_mirror_create: bool,
    /// Replicas of the mirror the edge creates: 1 (default), or 3 for a region of three
    /// or more leaf nodes that must keep its mirror through the loss of one.
    pub kv_mirror_replicas: usize,
    /// After the NATS connection has been down this long, sessions get `status` with
    /// `stale: true` for each subscribed symbol (and `stale: false` when it is back), ms.
    /// Default 2000.
    pub stale_after_ms: u64,
    /// After the NATS connection has been down this long, sessions are sent `reconnect`
    /// (with `after_ms` drawn from `shutdown.reconnect_window_ms`) and then closed with
    /// 4001, so that clients move to a healthy edge; must exceed `stale_after_ms`, ms.
    /// Default 30000.
    pub move_clients_after_ms: u64,
    /// TLS towards NATS (`[nats.tls]`).
    pub tls: NatsTls,
    /// Credentials on NATS (`[nats.auth]`).
    pub auth: NatsAuth,
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
    /// How long a session closed as a slow consumer keeps trying to write its
    /// `slow_consumer` notice and 4008 close behind the stalled data, ms: a client that
    /// reads again within this finds them at the end of what was sent. The session has
    /// left the fan-out by then; it holds its socket and its place in the connection
    /// counts until the write side is shut down. Default 5000.
    pub close_linger_ms: u64,
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

/// Connection and request limits of this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most open WebSocket sessions in this process; more get HTTP 503. Default 19000
    /// (the process may hold 20000 open files).
    pub max_connections: usize,
    /// Most sessions from one IP address; more get HTTP 429. Default 2000.
    pub max_connections_per_ip: usize,
    /// Most sessions of one user (`sub`); more get HTTP 429. Default 50.
    pub max_sessions_per_user: usize,
    /// A client over its tier's `max_msgs_per_s` gets `rate_limited`; after this many
    /// refused messages in a row it is closed with 4029. Default 20.
    pub rate_limit_strikes: u32,
    /// Time from the accept to a connection's first request head: the wait for a
    /// handshake slot, TLS, and the request itself, ms. Default 10000.
    pub handshake_timeout_ms: u64,
    /// Most connections in their handshake at once: the TLS handshake and the first HTTP
    /// request. Connections are still accepted at the cap; they wait (first come, first
    /// served, within `handshake_timeout_ms` of the accept) for a handshake to end.
    /// Established sessions are not affected. Default 2048.
    pub max_handshakes: usize,
}

/// What a tier of user may do (`tier` claim, or the anonymous tier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Smallest `interval_ms`; smaller requests are raised to it.
    pub min_interval_ms: u32,
    /// Most symbols one session may hold (a token's `max_symbols` can only lower it).
    pub max_symbols: u32,
    /// Client messages per second (token bucket, burst of twice the rate).
    pub max_msgs_per_s: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether connections without a token are accepted (with `anonymous_tier`).
    /// Default true; production configs turn it off.
    pub anonymous: bool,
    /// Tier of connections without a token. Default `anonymous`.
    pub anonymous_tier: String,
    /// Entitlement patterns of anonymous sessions. Default `["*"]`.
    pub anonymous_ent: Vec<String>,
    /// HS256 shared secret (prefer `hs256_secret_file`).
    pub hs256_secret: Option<String>,
    /// File holding the HS256 shared secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys accepted for RS256.
    pub rsa_public_keys: Vec<PathBuf>,
    /// PEM public keys accepted for EdDSA (Ed25519).
    pub ed25519_public_keys: Vec<PathBuf>,
    /// A JWKS file (RS256 / EdDSA keys by `kid`), reloaded when it changes.
    pub jwks_file: Option<PathBuf>,
    /// How often key files are checked for changes, ms. Default 5000.
    pub key_reload_ms: u64,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds. Default 5.
    pub leeway_s: u64,
    /// Longest a token may live (`exp - iat`), seconds; when set, `iat` is required.
    /// Default unset (no limit).
    pub max_token_lifetime_s: Option<u64>,
    /// Tier of tokens without a `tier` claim. Default `pro`.
    pub default_tier: String,
    /// The tier table.
    pub tiers: BTreeMap<String, TierConfig>,
}

/// TLS for `wss://`. Certificate and key files are reloaded when they change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for changes, ms. Default 5000.
    #[serde(default = "default_reload_ms")]
    pub reload_ms: u64,
}

fn default_reload_ms() -> u64 {
    5000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 19_000,
            max_connections_per_ip: 2000,
            max_sessions_per_user: 50,
            rate_limit_strikes: 20,
            handshake_timeout_ms: 10_000,
            max_handshakes: 2048,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        let tier = |min_interval_ms, max_symbols, max_msgs_per_s| TierConfig {
            min_interval_ms,
            max_symbols,
            max_msgs_per_s,
        };
        AuthConfig {
            anonymous: true,
            anonymous_tier: "anonymous".into(),
            anonymous_ent: vec!["*".into()],
            hs256_secret: None,
            hs256_secret_file: None,
            rsa_public_keys: Vec::new(),
            ed25519_public_keys: Vec::new(),
            jwks_file: None,
            key_reload_ms: 5000,
            audience: None,
            issuer: None,
            leeway_s: 5,
            max_token_lifetime_s: None,
            default_tier: "pro".into(),
            tiers: BTreeMap::from([
                ("anonymous".into(), tier(0, 500, 50)),
                ("delayed".into(), tier(1000, 50, 10)),
                ("pro".into(), tier(250, 500, 50)),
                ("realtime".into(), tier(0, 2000, 100)),
            ]),
        }
    }
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
            auth: AuthConfig::default(),
            tls: None,
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
            kv_mirror_domain: None,
            kv_mirror_max_idle_ms: 3000,
            kv_mirror_create: false,
            kv_mirror_replicas: 1,
            stale_after_ms: 2000,
            move_clients_after_ms: 30_000,
            tls: NatsTls::default(),
            auth: NatsAuth::default(),
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
            close_linger_ms: 5000,
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
            self.nats.stale_after_ms >= 100,
            "nats.stale_after_ms",
            || format!("must be at least 100, got {}", self.nats.stale_after_ms),
        )?;
        check(
            self.nats.move_clients_after_ms > self.nats.stale_after_ms,
            "nats.move_clients_after_ms",
            || {
                format!(
                    "must exceed nats.stale_after_ms ({}), got {}",
                    self.nats.stale_after_ms, self.nats.move_clients_after_ms
                )
            },
        )?;
        if let Some(domain) = &self.nats.kv_mirror_domain {
            check(
                !domain.is_empty() && self.nats.js_domain.as_deref() != Some(domain.as_str()),
                "nats.kv_mirror_domain",
                || {
                    format!(
                        "must name the region's domain, not be empty or equal to \
                         nats.js_domain ({:?})",
                        self.nats.js_domain
                    )
                },
            )?;
            check(
                (1..=5).contains(&self.nats.kv_mirror_replicas),
                "nats.kv_mirror_replicas",
                || format!("must be 1..=5, got {}", self.nats.kv_mirror_replicas),
            )?;
            check(
                self.nats.kv_mirror_max_idle_ms >= 100,
                "nats.kv_mirror_max_idle_ms",
                || {
                    format!(
                        "must be at least 100, got {}",
                        self.nats.kv_mirror_max_idle_ms
                    )
                },
            )?;
        }
        let nats = self
            .nats
            .tls
            .validate()
            .and_then(|()| self.nats.auth.validate());
        nats.map_err(|(key, reason)| ConfigError { key, reason })?;
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
        check(
            s.close_linger_ms <= 60_000,
            "session.close_linger_ms",
            || format!("must be at most 60000, got {}", s.close_linger_ms),
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
        let l = &self.limits;
        check(l.max_connections > 0, "limits.max_connections", || {
            "must be at least 1".into()
        })?;
        check(
            l.max_connections_per_ip > 0,
            "limits.max_connections_per_ip",
            || "must be at least 1".into(),
        )?;
        check(
            l.max_sessions_per_user > 0,
            "limits.max_sessions_per_user",
            || "must be at least 1".into(),
        )?;
        check(
            l.rate_limit_strikes > 0,
            "limits.rate_limit_strikes",
            || "must be at least 1".into(),
        )?;
        check(
            (100..=120_000).contains(&l.handshake_timeout_ms),
            "limits.handshake_timeout_ms",
            || format!("must be 100..=120000, got {}", l.handshake_timeout_ms),
        )?;
        check(
            (1..=100_000).contains(&l.max_handshakes),
            "limits.max_handshakes",
            || format!("must be 1..=100000, got {}", l.max_handshakes),
        )?;
        self.validate_auth()?;
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

impl EdgeConfig {
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        for (name, t) in &a.tiers {
            check(
                t.max_symbols > 0 && t.max_msgs_per_s > 0 && t.min_interval_ms <= 60_000,
                "auth.tiers",
                || {
                    format!(
                        "tier {name:?}: max_symbols and max_msgs_per_s must be at least 1 and min_interval_ms at most 60000"
                    )
                },
            )?;
        }
        check(
            a.tiers.contains_key(&a.default_tier),
            "auth.default_tier",
            || format!("{:?} is not in auth.tiers", a.default_tier),
        )?;
        if a.anonymous {
            let t = &a.anonymous_tier;
            check(a.tiers.contains_key(t), "auth.anonymous_tier", || {
                format!("{t:?} is not in auth.tiers")
            })?;
        }
        check(
            !(a.hs256_secret.is_some() && a.hs256_secret_file.is_some()),
            "auth.hs256_secret",
            || "set auth.hs256_secret or auth.hs256_secret_file, not both".into(),
        )?;
        if let Some(s) = &a.hs256_secret {
            check(s.len() >= 32, "auth.hs256_secret", || {
                "must be at least 32 bytes".into()
            })?;
        }
        check(a.key_reload_ms >= 100, "auth.key_reload_ms", || {
            format!("must be at least 100, got {}", a.key_reload_ms)
        })?;
        let has_keys = a.hs256_secret.is_some()
            || a.hs256_secret_file.is_some()
            || !a.rsa_public_keys.is_empty()
            || !a.ed25519_public_keys.is_empty()
            || a.jwks_file.is_some();
        check(has_keys || a.anonymous, "auth", || {
            "no key is configured and anonymous access is off: nobody could connect".into()
        })?;
        if let Some(tls) = &self.tls {
            check(tls.reload_ms >= 100, "tls.reload_ms", || {
                format!("must be at least 100, got {}", tls.reload_ms)
            })?;
        }
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
        let mut c = EdgeConfig::default();
        c.limits.max_handshakes = 0;
        assert_eq!(
            c.validate().map_err(|e| e.key),
            Err("limits.max_handshakes")
        );
    }

    #[test]
    fn mirror_settings_are_checked_before_anything_starts() {
        let region = |f: fn(&mut NatsConfig)| {
            let mut c = EdgeConfig::default();
            c.nats.js_domain = Some("hub".into());
            c.nats.kv_mirror_domain = Some("region-a".into());
            f(&mut c.nats);
            c.validate().map_err(|e| e.key)
        };
        assert_eq!(region(|_| {}), Ok(()));
        assert_eq!(
            region(|n| n.kv_mirror_domain = Some("hub".into())),
            Err("nats.kv_mirror_domain")
        );
        assert_eq!(
            region(|n| n.kv_mirror_domain = Some(String::new())),
            Err("nats.kv_mirror_domain")
        );
        assert_eq!(
            region(|n| n.kv_mirror_max_idle_ms = 10),
            Err("nats.kv_mirror_max_idle_ms")
        );
        for replicas in [0, 6] {
            let mut c = EdgeConfig::default();
            c.nats.js_domain = Some("hub".into());
            c.nats.kv_mirror_domain = Some("region-a".into());
            c.nats.kv_mirror_replicas = replicas;
            assert_eq!(
                c.validate().map_err(|e| e.key),
                Err("nats.kv_mirror_replicas")
            );
        }
        let mut c = EdgeConfig::default();
        c.nats.auth.user = Some("edge".into());
        assert_eq!(c.validate().map_err(|e| e.key), Err("nats.auth"));
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
