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

/// The least `nats.subscription_capacity` accepted.
pub const MIN_SUBSCRIPTION_CAPACITY: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This gateway's name, sent in `welcome.edge`.
    pub name: String,
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// Where to serve Prometheus `/metrics` instead of on `listen`: a private address
    /// (e.g. `10.0.1.5:9102`) that only the monitoring network reaches. When set, `listen`
    /// answers 404 for `/metrics`. Default unset: `/metrics` is served on `listen`.
    pub metrics_listen: Option<SocketAddr>,
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
    pub delayed: DelayedConfig,
    pub usage: UsageConfig,
}

/// `[usage]`: every session's usage (user, account of record, feed, real time or
/// delayed, display or not, first and last seen, sessions), kept in a JetStream stream of
/// the edge's own NATS domain for the monthly report (`tickmesh usage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Record usage. Default true.
    pub enabled: bool,
    /// The stream, made by the edge when missing (file storage, subjects `usage.>`, one
    /// message kept per subject). Default `usage`.
    pub stream: String,
    /// Copies of the stream when the edge makes it. Default 1.
    pub replicas: usize,
    /// How long records are kept when the edge makes the stream, days. Default 400.
    pub keep_days: u64,
    /// How often changed records are written, ms: a crash loses at most this much new
    /// usage. Default 5000.
    pub flush_ms: u64,
    /// How often a session still holding data is seen again (its `last_seen`), ms.
    /// Default 60000.
    pub touch_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            stream: "usage".into(),
            replicas: 1,
            keep_days: 400,
            flush_ms: 5000,
            touch_ms: 60_000,
        }
    }
}

/// `[delayed]`: symbols a token covers only by `dly` are served `delay_ms` late, from
/// the stream of delayed samples ingest keeps (`md_delayed`), read at now − delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelayedConfig {
    /// How late delayed data is, ms: nothing fresher reaches a delayed-only user.
    /// Default 900000 (15 minutes); the demo runs with 60000.
    pub delay_ms: u64,
    /// The stream of delayed samples, in `nats.js_domain`. Default `md_delayed`.
    pub stream: String,
    /// How often the edge reads the samples now due, ms (one batched read for all the
    /// delayed symbols it carries, however many clients hold them). Default 250.
    pub poll_ms: u64,
    /// The stream of delayed trades and bars (every print and bar message, kept for the
    /// delay plus a margin), in `nats.js_domain`. Default `md_delayed_tape`.
    pub tape_stream: String,
}

impl Default for DelayedConfig {
    fn default() -> Self {
        DelayedConfig {
            delay_ms: 900_000,
            stream: tickmesh_core::subject::DELAYED_STREAM.into(),
            poll_ms: 250,
            tape_stream: tickmesh_core::subject::DELAYED_TAPE_STREAM.into(),
        }
    }
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
    /// The stream that keeps each symbol's recent prints (in `js_domain`), read once per
    /// followed tape for its history. Default `md_trades`.
    pub trades_stream: String,
    /// The stream that keeps each symbol's bars (in `js_domain`), read once per followed
    /// (symbol, timeframe) for its history. Default `md_bars`.
    pub bars_stream: String,
    /// The stream of the accounts' events (in `js_domain`): read (direct gets, an ordered
    /// consumer) to start and catch up an account subscription, and followed live on
    /// `acctlive.>`, where it republishes what it stores. Default `acct`.
    pub accounts_stream: String,
    /// The KV bucket of each account's state as of its writer's last event (in
    /// `js_domain`), where an account subscription without `from_seq` starts. Default
    /// `acct_snap`.
    pub account_snapshots: String,
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
    /// Ticks buffered per symbol subscription (one per carried symbol) between the NATS
    /// connection and the symbol's pump, messages. When full, async-nats drops the newest
    /// ticks of that symbol and reports a slow consumer (counted in
    /// `tickmesh_edge_nats_events_total{event="slow_consumer"}`); sessions then get the
    /// next tick that arrives, which carries the whole current state. The same bound holds
    /// for every subscription of the connection, the `md_ref` and revocation watches too:
    /// their ordered consumers recover from a drop by starting again after the last entry
    /// they got, so a small bound slows them down. Default 1024, at least 64.
    pub subscription_capacity: usize,
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
    /// Prints and bars a session with `trades` or `bars` subscriptions may have waiting
    /// to be written, beyond the room each subscription held makes for its history (500
    /// per tape, 1,001 per bars); a session that falls further behind is cut with 4008
    /// (a tape is never conflated). Default 4096.
    pub tape_queue: usize,
    /// Account events a session may have waiting to be written once its account
    /// subscriptions are live (a replay waits for the session instead); a session that
    /// falls further behind is cut with 4008 (account events are never conflated or
    /// dropped). Default 1024.
    pub account_queue: usize,
    /// Most accounts one session may hold. Default 8.
    pub max_accounts: usize,
    /// Account subscribes (first or repeated) one session may make per minute, past a
    /// burst of twice `max_accounts`: each reads the account's stream on the hub (a
    /// replay from an old `from_seq` reads all of it), so a client re-subscribing at its
    /// message rate would cost the hub far more than itself. Over it: `rate_limited`
    /// with `retry_ms`. Default 30.
    pub account_subscribes_per_min: u32,
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
    /// Conflated subscriptions flush on a clock shared by every session: those of
    /// interval N at the instants `start + k·N`, shifted by one of 32 slots per session,
    /// so that the sessions of a slot flush together, sending one value per symbol and
    /// instant in frames built once, woken by one timer for the edge. `false`: each
    /// session flushes on its own phase, with a timer of its own. Default false: on this
    /// project's benchmarks the shared clock saves no measurable CPU (docs/benchmarks.md)
    /// and spaces a few updates closer than their interval on the wire.
    pub shared_clock: bool,
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
    /// Snapshot KV reads in flight at once. More wait their turn (one read per symbol
    /// however many sessions wait for it); a read that cannot start and finish within
    /// `kv_timeout_ms` is abandoned and the first live tick is the snapshot. Default 64.
    pub max_kv_reads: usize,
    /// How long a symbol found to have no value in KV is not read again, ms: its sessions'
    /// snapshot is then the first live tick, and a REST snapshot answers without it. No
    /// longer than a value is kept (`cache_ttl_ms`), so that a symbol's first value is
    /// in a REST answer as soon as a change of value would be. Default 1000.
    pub negative_ttl_ms: u64,
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
    /// Most connections from one address (an IPv6 address counts as its /64) that have not
    /// sent their first request yet, waiting for a handshake slot included. More are
    /// closed at once, before any TLS or token check. Default 256.
    pub max_handshakes_per_ip: usize,
    /// Failed upgrades (a refused token) from one address (IPv6: its /64) within
    /// `auth_failure_window_ms`; past this, every upgrade from it gets HTTP 429 until the
    /// window ends. Default 20.
    pub max_auth_failures_per_ip: u32,
    /// The window of `max_auth_failures_per_ip`, ms. Default 60000.
    pub auth_failure_window_ms: u64,
    /// Most addresses whose failed upgrades are tracked. When full, windows that ended
    /// are forgotten; if none has, a new address is not tracked (and not throttled)
    /// until one ends. Default 100000.
    pub max_tracked_ips: usize,
    /// Most distinct symbols held by the sessions of one address (IPv6: its /64), counted
    /// once however many of its sessions hold a symbol; more get `too_many_symbols`.
    /// Default 20000.
    pub max_symbols_per_ip: usize,
    /// Most distinct symbols held by the sessions of one user (`sub`); more get
    /// `too_many_symbols`. Default 5000.
    pub max_symbols_per_user: usize,
    /// Most symbols this edge carries (one NATS subscription each); a subscription that
    /// would carry one more gets `unavailable` with `retry_ms`. Default 100000.
    pub max_carried_symbols: usize,
    /// New symbols this edge starts carrying per second, all sessions together (token
    /// bucket, burst twice the rate); past it a symbol gets `unavailable` with `retry_ms`.
    /// Default 2000.
    pub max_new_symbols_per_s: u32,
    /// A subscribe or unsubscribe is read up to this many times the session's
    /// `max_symbols` entries (`symbols`, then `chains`): the entries past it are not read
    /// and get one `too_many_symbols` with `count`. Its chains expand up to that many
    /// symbols in all: the options and chains past it get `too_many_symbols` (one by one,
    /// then summed up past `max_errors_per_request`). Default 2 (a session can never hold more than `max_symbols`; the
    /// margin lets a request name symbols it is refused, e.g. `not_entitled`, and still
    /// fill the session).
    pub request_entries_factor: usize,
    /// Refused symbols reported one by one per request; the others are summed up in one
    /// `error` per code, with `count`. Default 20.
    pub max_errors_per_request: usize,
    /// A subscribe or unsubscribe costs one message of the sender's rate per this many
    /// entries (`symbols` plus `chains`, rounded up); one whose cost is not available is
    /// refused whole with `rate_limited`. Default 100.
    pub entries_per_message: usize,
    /// `retry_ms` in `unavailable` errors, ms. Default 2000.
    pub retry_after_ms: u64,
    /// REST requests per second from one address (IPv6: its /64), all its users together
    /// (token bucket, burst twice the rate); past it HTTP 429 with `Retry-After`. A
    /// snapshot costs one request per `entries_per_message` symbols read (rounded up).
    /// Default 50 (an office behind one address polls from many desks).
    pub rest_requests_per_s_per_ip: u32,
    /// REST requests per second of one user (`sub`), from anywhere (token bucket, burst
    /// twice the rate); past it HTTP 429 with `Retry-After`. Default 20.
    pub rest_requests_per_s_per_user: u32,
    /// Reads REST requests may have in flight at once, all together: KV reads of values
    /// the edge does not carry (a snapshot) and stream reads of closed bars the edge does
    /// not follow. More wait their turn within `snapshot.kv_timeout_ms`, then get
    /// `unavailable` with `retry_ms`; WebSocket snapshots have their own
    /// (`snapshot.max_kv_reads`). Default 16.
    pub rest_max_reads: usize,
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
    /// Whether connections without a token are accepted, with `anonymous_tier` and
    /// `anonymous_ent`. Default false: every session needs a token.
    pub anonymous: bool,
    /// Tier of connections without a token. Default `anonymous`.
    pub anonymous_tier: String,
    /// Entitlement patterns of anonymous sessions. Default empty: with `anonymous = true`
    /// they must be listed, or the edge refuses to start.
    pub anonymous_ent: Vec<String>,
    /// Patterns of symbols anonymous sessions may see delayed only (the token claim
    /// `dly`): free delayed data for visitors, say. Default empty.
    pub anonymous_dly: Vec<String>,
    /// Lets anonymous sessions have `*` in `anonymous_ent`, or a tier whose
    /// `min_interval_ms` is 0: every symbol, or every tick, to anyone who can connect.
    /// Default false: with anonymous access on, such a config is refused at start.
    /// Development and tests only.
    pub allow_open_anonymous: bool,
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
    /// Default unset (no limit). A longer token is refused (401 `token lifetime over N s`;
    /// in-band `auth`: `unauthorized`, close 4401).
    pub max_token_lifetime_s: Option<u64>,
    /// Tier of tokens without a `tier` claim. Default `pro`.
    pub default_tier: String,
    /// The tier table. A configured table is used as it is, never merged with the
    /// built-in one: only the tiers configured exist. Default, when no tier is configured
    /// at all: [`AuthConfig::builtin_tiers`].
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
            max_handshakes_per_ip: 256,
            max_auth_failures_per_ip: 20,
            auth_failure_window_ms: 60_000,
            max_tracked_ips: 100_000,
            max_symbols_per_ip: 20_000,
            max_symbols_per_user: 5000,
            max_carried_symbols: 100_000,
            max_new_symbols_per_s: 2000,
            request_entries_factor: 2,
            max_errors_per_request: 20,
            entries_per_message: 100,
            retry_after_ms: 2000,
            rest_requests_per_s_per_ip: 50,
            rest_requests_per_s_per_user: 20,
            rest_max_reads: 16,
        }
    }
}

impl AuthConfig {
    /// The tiers of an edge whose config names none (min_interval_ms, max_symbols,
    /// max_msgs_per_s): `anonymous` 1000, 50, 10; `delayed` 1000, 50, 10; `pro` 250, 500,
    /// 50; `realtime` 0, 2000, 100.
    pub fn builtin_tiers() -> BTreeMap<String, TierConfig> {
        let tier = |min_interval_ms, max_symbols, max_msgs_per_s| TierConfig {
            min_interval_ms,
            max_symbols,
            max_msgs_per_s,
        };
        BTreeMap::from([
            ("anonymous".into(), tier(1000, 50, 10)),
            ("delayed".into(), tier(1000, 50, 10)),
            ("pro".into(), tier(250, 500, 50)),
            ("realtime".into(), tier(0, 2000, 100)),
        ])
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous: false,
            anonymous_tier: "anonymous".into(),
            anonymous_ent: Vec::new(),
            anonymous_dly: Vec::new(),
            allow_open_anonymous: false,
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
            tiers: Self::builtin_tiers(),
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            name: "edge-1".into(),
            listen: ([127, 0, 0, 1], 8080).into(),
            metrics_listen: None,
            shards: tickmesh_core::subject::DEFAULT_SHARDS,
            nats: NatsConfig::default(),
            session: SessionConfig::default(),
            snapshot: SnapshotConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            shutdown: ShutdownConfig::default(),
            delayed: DelayedConfig::default(),
            usage: UsageConfig::default(),
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
            trades_stream: tickmesh_core::trade::STREAM.into(),
            bars_stream: tickmesh_core::bar::STREAM.into(),
            accounts_stream: tickmesh_core::account::STREAM.into(),
            account_snapshots: tickmesh_core::account::SNAPSHOTS.into(),
            kv_mirror_domain: None,
            kv_mirror_max_idle_ms: 3000,
            kv_mirror_create: false,
            kv_mirror_replicas: 1,
            subscription_capacity: 1024,
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
            tape_queue: 4096,
            account_queue: 1024,
            max_accounts: 8,
            account_subscribes_per_min: 30,
            write_timeout_ms: 5000,
            close_linger_ms: 5000,
            max_ticks_per_frame: 500,
            shared_clock: false,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            cache_ttl_ms: 1000,
            cache_capacity: 100_000,
            kv_timeout_ms: 2000,
            max_kv_reads: 64,
            negative_ttl_ms: 1000,
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
        // figment merges maps key by key: with the built-in tiers among the defaults, an
        // operator's own table would silently gain them. The defaults carry none; the
        // built-in table is filled in only when nothing configured a tier.
        let mut defaults = EdgeConfig::default();
        defaults.auth.tiers.clear();
        let mut fig = Figment::from(Serialized::defaults(defaults));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        let mut config: EdgeConfig = fig
            .merge(Env::prefixed("TICKMESH_EDGE_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        if config.auth.tiers.is_empty() {
            config.auth.tiers = AuthConfig::builtin_tiers();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        check(
            (1000..=86_400_000).contains(&self.delayed.delay_ms),
            "delayed.delay_ms",
            || format!("must be 1000..=86400000, got {}", self.delayed.delay_ms),
        )?;
        check(
            (50..=5000).contains(&self.delayed.poll_ms),
            "delayed.poll_ms",
            || format!("must be 50..=5000, got {}", self.delayed.poll_ms),
        )?;
        for (key, name) in [
            ("delayed.stream", &self.delayed.stream),
            ("delayed.tape_stream", &self.delayed.tape_stream),
        ] {
            check(tickmesh_service::config::is_name(name, 64), key, || {
                format!("{name:?}: 1 to 64 letters, digits, '-' or '_'")
            })?;
        }
        let u = &self.usage;
        check(
            tickmesh_service::config::is_name(&u.stream, 64),
            "usage.stream",
            || format!("{:?}: 1 to 64 letters, digits, '-' or '_'", u.stream),
        )?;
        check((1..=5).contains(&u.replicas), "usage.replicas", || {
            format!("must be 1..=5, got {}", u.replicas)
        })?;
        check((1..=3650).contains(&u.keep_days), "usage.keep_days", || {
            format!("must be 1..=3650, got {}", u.keep_days)
        })?;
        check(
            (100..=60_000).contains(&u.flush_ms),
            "usage.flush_ms",
            || format!("must be 100..=60000, got {}", u.flush_ms),
        )?;
        check(
            (1000..=3_600_000).contains(&u.touch_ms),
            "usage.touch_ms",
            || format!("must be 1000..=3600000, got {}", u.touch_ms),
        )?;
        check(
            !self.name.is_empty() && self.name.len() <= 64,
            "name",
            || format!("must be 1 to 64 characters, got {:?}", self.name),
        )?;
        check((1..=65_536).contains(&self.shards), "shards", || {
            format!("must be 1..=65536, got {}", self.shards)
        })?;
        if let Some(metrics) = self.metrics_listen {
            check(
                metrics.port() == 0 || metrics.port() != self.listen.port(),
                "metrics_listen",
                || format!("must not share the port of listen ({})", self.listen),
            )?;
        }
        check(!self.nats.urls.is_empty(), "nats.urls", || {
            "at least one URL is needed".into()
        })?;
        check(!self.nats.kv_bucket.is_empty(), "nats.kv_bucket", || {
            "must not be empty".into()
        })?;
        check(
            !self.nats.bars_stream.is_empty(),
            "nats.bars_stream",
            || "must not be empty".into(),
        )?;
        check(
            !self.nats.trades_stream.is_empty(),
            "nats.trades_stream",
            || "must not be empty".into(),
        )?;
        check(
            !self.nats.accounts_stream.is_empty(),
            "nats.accounts_stream",
            || "must not be empty".into(),
        )?;
        check(
            !self.nats.account_snapshots.is_empty(),
            "nats.account_snapshots",
            || "must not be empty".into(),
        )?;
        check(
            (16..=1_000_000).contains(&self.session.account_queue),
            "session.account_queue",
            || format!("must be 16..=1000000, got {}", self.session.account_queue),
        )?;
        check(
            (1..=1000).contains(&self.session.max_accounts),
            "session.max_accounts",
            || format!("must be 1..=1000, got {}", self.session.max_accounts),
        )?;
        check(
            (1..=6000).contains(&self.session.account_subscribes_per_min),
            "session.account_subscribes_per_min",
            || {
                format!(
                    "must be 1..=6000, got {}",
                    self.session.account_subscribes_per_min
                )
            },
        )?;
        check(
            (16..=1_000_000).contains(&self.session.tape_queue),
            "session.tape_queue",
            || format!("must be 16..=1000000, got {}", self.session.tape_queue),
        )?;
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
        self.validate_abuse_bounds()?;
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
    /// The bounds that keep one client's requests from costing the edge or others.
    fn validate_abuse_bounds(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let at_least_one = || "must be at least 1".to_string();
        check(
            self.nats.subscription_capacity >= MIN_SUBSCRIPTION_CAPACITY,
            "nats.subscription_capacity",
            || {
                format!(
                    "must be at least {MIN_SUBSCRIPTION_CAPACITY} (the md_ref and revocation watches share it), got {}",
                    self.nats.subscription_capacity
                )
            },
        )?;
        check(
            self.snapshot.max_kv_reads > 0,
            "snapshot.max_kv_reads",
            at_least_one,
        )?;
        check(
            l.max_handshakes_per_ip > 0,
            "limits.max_handshakes_per_ip",
            at_least_one,
        )?;
        check(
            l.max_auth_failures_per_ip > 0,
            "limits.max_auth_failures_per_ip",
            at_least_one,
        )?;
        check(
            l.auth_failure_window_ms >= 100,
            "limits.auth_failure_window_ms",
            || format!("must be at least 100, got {}", l.auth_failure_window_ms),
        )?;
        check(
            l.max_tracked_ips > 0,
            "limits.max_tracked_ips",
            at_least_one,
        )?;
        check(
            l.max_symbols_per_ip > 0,
            "limits.max_symbols_per_ip",
            at_least_one,
        )?;
        check(
            l.max_symbols_per_user > 0,
            "limits.max_symbols_per_user",
            at_least_one,
        )?;
        check(
            l.max_carried_symbols > 0,
            "limits.max_carried_symbols",
            at_least_one,
        )?;
        check(
            l.max_new_symbols_per_s > 0,
            "limits.max_new_symbols_per_s",
            at_least_one,
        )?;
        check(
            (1..=100).contains(&l.request_entries_factor),
            "limits.request_entries_factor",
            || format!("must be 1..=100, got {}", l.request_entries_factor),
        )?;
        check(
            l.entries_per_message > 0,
            "limits.entries_per_message",
            at_least_one,
        )?;
        check(
            (1..=600_000).contains(&l.retry_after_ms),
            "limits.retry_after_ms",
            || format!("must be 1..=600000, got {}", l.retry_after_ms),
        )?;
        for (key, rate) in [
            (
                "limits.rest_requests_per_s_per_ip",
                l.rest_requests_per_s_per_ip,
            ),
            (
                "limits.rest_requests_per_s_per_user",
                l.rest_requests_per_s_per_user,
            ),
        ] {
            check((1..=1_000_000).contains(&rate), key, || {
                format!("must be 1..=1000000, got {rate}")
            })?;
        }
        check(
            (1..=1024).contains(&l.rest_max_reads),
            "limits.rest_max_reads",
            || format!("must be 1..=1024, got {}", l.rest_max_reads),
        )?;
        Ok(())
    }

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
            self.validate_anonymous()?;
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

    /// Anonymous access is limited unless `auth.allow_open_anonymous` says otherwise: no
    /// `*`, no every-tick tier, and some pattern to see.
    fn validate_anonymous(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        let name = &a.anonymous_tier;
        let Some(tier) = a.tiers.get(name) else {
            return Err(ConfigError {
                key: "auth.anonymous_tier",
                reason: format!("{name:?} is not in auth.tiers"),
            });
        };
        check(
            !a.anonymous_ent.is_empty() || !a.anonymous_dly.is_empty(),
            "auth.anonymous_ent",
            || {
                "anonymous access is on, but no pattern (anonymous_ent or anonymous_dly) says \
                 what anonymous sessions may see"
                    .into()
            },
        )?;
        if a.allow_open_anonymous {
            return Ok(());
        }
        check(tier.min_interval_ms > 0, "auth.anonymous_tier", || {
            format!(
                "tier {name:?} has min_interval_ms = 0: every tick to anyone who connects; \
                 give anonymous sessions a tier with a minimum interval, or set \
                 auth.allow_open_anonymous = true"
            )
        })?;
        check(
            !a.anonymous_ent.iter().any(|p| p.trim() == "*"),
            "auth.anonymous_ent",
            || {
                "\"*\" entitles anyone who connects to every symbol; list what anonymous \
                 sessions may see, or set auth.allow_open_anonymous = true"
                    .into()
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-for-these-tests-32-bytes-long";

    /// An edge that verifies tokens: the smallest config that may start.
    fn with_key() -> EdgeConfig {
        let mut c = EdgeConfig::default();
        c.auth.hs256_secret = Some(SECRET.into());
        c
    }

    #[test]
    fn defaults_are_closed() {
        let c = EdgeConfig::default();
        assert!(!c.auth.anonymous && c.auth.anonymous_ent.is_empty());
        assert!(!c.auth.allow_open_anonymous);
        // Without a key nobody could connect: the edge refuses to start.
        assert_eq!(c.validate().map_err(|e| e.key), Err("auth"));
        with_key().validate().unwrap();
        assert!(
            AuthConfig::builtin_tiers()["anonymous"].min_interval_ms > 0,
            "the built-in anonymous tier is limited"
        );
    }

    #[test]
    fn open_anonymous_access_needs_its_opt_in() {
        let anonymous = |f: fn(&mut AuthConfig)| {
            let mut c = with_key();
            c.auth.anonymous = true;
            c.auth.anonymous_ent = vec!["AAPL".into(), "SPY".into()];
            f(&mut c.auth);
            c.validate().map_err(|e| e.key)
        };
        // Limited: the built-in anonymous tier (1000 ms) and a list of patterns.
        assert_eq!(anonymous(|_| {}), Ok(()));
        assert_eq!(
            anonymous(|a| a.anonymous_ent = Vec::new()),
            Err("auth.anonymous_ent")
        );
        // Delayed data alone is something to see.
        assert_eq!(
            anonymous(|a| {
                a.anonymous_ent = Vec::new();
                a.anonymous_dly = vec!["*".into()];
            }),
            Ok(())
        );
        assert_eq!(
            anonymous(|a| a.anonymous_ent.push("*".into())),
            Err("auth.anonymous_ent")
        );
        assert_eq!(
            anonymous(|a| a.anonymous_tier = "realtime".into()),
            Err("auth.anonymous_tier")
        );
        assert_eq!(
            anonymous(|a| a.anonymous_tier = "gold".into()),
            Err("auth.anonymous_tier")
        );
        assert_eq!(
            anonymous(|a| {
                a.allow_open_anonymous = true;
                a.anonymous_tier = "realtime".into();
                a.anonymous_ent = vec!["*".into()];
            }),
            Ok(())
        );
    }

    #[test]
    fn an_hs256_secret_under_32_bytes_is_refused() {
        let mut c = with_key();
        c.auth.hs256_secret = Some("s".repeat(32));
        c.validate().unwrap();
        c.auth.hs256_secret = Some("s".repeat(31));
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "auth.hs256_secret");
        assert!(e.to_string().contains("at least 32 bytes"), "{e}");
    }

    #[test]
    fn metrics_listener_needs_its_own_port() {
        let mut c = with_key();
        c.metrics_listen = Some(([127, 0, 0, 1], 9102).into());
        c.validate().unwrap();
        c.metrics_listen = Some(([10, 0, 0, 1], c.listen.port()).into());
        assert_eq!(c.validate().map_err(|e| e.key), Err("metrics_listen"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn refusals_at_start_name_the_key_and_the_opt_in() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "open.toml",
                &format!(
                    "[auth]\nhs256_secret = \"{SECRET}\"\nanonymous = true\n\
                     anonymous_ent = [\"*\"]\n"
                ),
            )?;
            let e = EdgeConfig::load(Some(Path::new("open.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("auth.anonymous_ent") && e.contains("auth.allow_open_anonymous"),
                "{e}"
            );
            jail.set_env("TICKMESH_EDGE_AUTH__ALLOW_OPEN_ANONYMOUS", "true");
            let c = EdgeConfig::load(Some(Path::new("open.toml"))).unwrap();
            assert!(c.auth.anonymous && c.auth.allow_open_anonymous);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn a_configured_tier_table_replaces_the_builtin_one() {
        figment::Jail::expect_with(|jail| {
            let auth = format!("[auth]\nhs256_secret = \"{SECRET}\"\n");
            jail.create_file("builtin.toml", &auth)?;
            let c = EdgeConfig::load(Some(Path::new("builtin.toml"))).unwrap();
            assert_eq!(c.auth.tiers, AuthConfig::builtin_tiers());
            jail.create_file(
                "own.toml",
                &format!(
                    "{auth}default_tier = \"gold\"\n\
                     [auth.tiers.gold]\nmin_interval_ms = 500\nmax_symbols = 20\n\
                     max_msgs_per_s = 5\n"
                ),
            )?;
            let c = EdgeConfig::load(Some(Path::new("own.toml"))).unwrap();
            let names: Vec<&str> = c.auth.tiers.keys().map(String::as_str).collect();
            assert_eq!(names, ["gold"], "only the operator's tiers exist");
            // A table from the environment replaces it just the same.
            jail.set_env(
                "TICKMESH_EDGE_AUTH__TIERS",
                "{gold={min_interval_ms=100,max_symbols=9,max_msgs_per_s=3}}",
            );
            let c = EdgeConfig::load(Some(Path::new("builtin.toml"))).unwrap_err();
            assert!(c.to_string().contains("auth.default_tier"), "{c}");
            Ok(())
        });
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
        let limits = |f: fn(&mut LimitsConfig)| {
            let mut c = with_key();
            f(&mut c.limits);
            c.validate().map_err(|e| e.key)
        };
        assert_eq!(limits(|_| {}), Ok(()));
        assert_eq!(
            limits(|l| l.rest_requests_per_s_per_ip = 0),
            Err("limits.rest_requests_per_s_per_ip")
        );
        assert_eq!(
            limits(|l| l.rest_requests_per_s_per_user = 2_000_000),
            Err("limits.rest_requests_per_s_per_user")
        );
        assert_eq!(
            limits(|l| l.rest_max_reads = 0),
            Err("limits.rest_max_reads")
        );
        let usage = |f: fn(&mut UsageConfig)| {
            let mut c = with_key();
            f(&mut c.usage);
            c.validate().map_err(|e| e.key)
        };
        assert_eq!(usage(|_| {}), Ok(()));
        assert_eq!(usage(|u| u.flush_ms = 0), Err("usage.flush_ms"));
        assert_eq!(usage(|u| u.touch_ms = 10), Err("usage.touch_ms"));
        assert_eq!(usage(|u| u.stream = "us.age".into()), Err("usage.stream"));
        assert_eq!(usage(|u| u.replicas = 0), Err("usage.replicas"));
        assert_eq!(usage(|u| u.keep_days = 0), Err("usage.keep_days"));
    }

    #[test]
    fn mirror_settings_are_checked_before_anything_starts() {
        let region = |f: fn(&mut NatsConfig)| {
            let mut c = with_key();
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
            let mut c = with_key();
            c.nats.js_domain = Some("hub".into());
            c.nats.kv_mirror_domain = Some("region-a".into());
            c.nats.kv_mirror_replicas = replicas;
            assert_eq!(
                c.validate().map_err(|e| e.key),
                Err("nats.kv_mirror_replicas")
            );
        }
        let mut c = with_key();
        c.nats.auth.user = Some("edge".into());
        assert_eq!(c.validate().map_err(|e| e.key), Err("nats.auth"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn file_then_env_and_unknown_keys_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "e.toml",
                &format!(
                    "name = \"edge-a\"\n[session]\nheartbeat_ms = 500\n\
                     [auth]\nhs256_secret = \"{SECRET}\"\n"
                ),
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
