//! What every session of an edge shares: its configuration, the sharded fan-out core, snapshots,
//! token verification, reference data, limits and the signals that tell sessions of
//! revocations, draining and the state of NATS. The server builds it; sessions, control
//! and revocations read it. It imports none of them.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickmesh_core::alive;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::bars::BarFeeds;
use crate::clock::Clock;
use crate::config::EdgeConfig;
use crate::fanout::{Beats, FanoutConfig};
use crate::limits::peers::AuthThrottle;
use crate::limits::{Registry, TokenBucket};
use crate::liveness::Owners;
use crate::nats::NatsLink;
use crate::nats::delayed::DelayedLink;
use crate::nats::delayed_tape::DelayedTapes;
use crate::refdata::RefData;
use crate::runtime::{Member, Runtime, default_shards};
use crate::snapshot::Snapshots;
use crate::tape::{TapeSource, Tapes};
use crate::usage::Usage;

/// Instants per interval the shared flush clock spreads sessions over: those of one slot
/// flush together and share their frames, and no instant wakes more than a
/// thirty-second of the sessions of an interval at once (a burst of work that would
/// otherwise age the values sent last and bunch their spacing).
pub const CLOCK_SLOTS: u32 = 32;

/// The sharded fan-out core over NATS, as sessions use it.
pub type EdgeRuntime = Runtime<NatsLink, Arc<tokio::sync::Notify>>;

/// The fan-out core of delayed data (symbols a token covers only by `dly`), fed from
/// the stream of delayed samples.
pub type DelayedRuntime = Runtime<DelayedLink, Arc<tokio::sync::Notify>>;

/// A session's place in the edge's runtime.
pub type EdgeMember = Member<Arc<tokio::sync::Notify>>;

/// State shared by every session of this edge.
#[derive(Debug)]
pub struct Edge {
    pub config: EdgeConfig,
    pub runtime: Arc<EdgeRuntime>,
    /// Delayed data, served `delayed.delay_ms` late: its own core, so that a delayed
    /// symbol and the same symbol in real time never share a value.
    pub delayed: Arc<DelayedRuntime>,
    pub nats: NatsLink,
    pub snapshots: Snapshots,
    pub verifier: Verifier,
    /// Instruments and option chains from KV `md_ref`.
    pub refdata: RefData,
    pub registry: Arc<Registry>,
    /// Failed upgrades per address (`limits.max_auth_failures_per_ip`).
    pub auth_throttle: AuthThrottle,
    /// New symbols carried per second, all sessions together
    /// (`limits.max_new_symbols_per_s`).
    pub new_interest: Mutex<TokenBucket>,
    /// Bumped on every revocation and key reload; sessions then check their grant.
    pub revocations: tokio::sync::watch::Sender<u64>,
    /// Set once the NATS server has confirmed the `ctl.revoke` subscription; the edge is
    /// not ready before, so that no revocation published after readiness can miss it.
    pub control_subscribed: AtomicBool,
    /// One more than the reconnect generation whose replay of KV `ctl_revoked` is done
    /// (0: none yet); see [`crate::revocations::is_replayed`].
    pub revocations_replayed: AtomicU64,
    /// Cancelled when the edge starts draining.
    pub shutdown: CancellationToken,
    /// Whether sessions' data is fresh, stale, or lost with the NATS connection.
    pub upstream: tokio::sync::watch::Receiver<crate::upstream::Upstream>,
    /// Wakes sessions whose flush is due (`session.shared_clock`).
    pub clock: Clock,
    /// Which shards' owner went quiet (ingest's `ctl.alive`).
    pub owners: Arc<Owners>,
    /// The tapes (`trades` subscriptions) this edge follows.
    pub tapes: Arc<Tapes<NatsLink>>,
    /// The (symbol, timeframe) bars (`bars` subscriptions) this edge follows.
    pub bar_feeds: Arc<BarFeeds<NatsLink>>,
    /// The tapes of delayed-only symbols, read from the delayed stream at now − delay.
    pub delayed_tapes: Arc<Tapes<DelayedTapes>>,
    /// The bars of delayed-only symbols, likewise.
    pub delayed_bar_feeds: Arc<BarFeeds<DelayedTapes>>,
    /// Usage records (`[usage]`).
    pub usage: Arc<Usage>,
}

impl Edge {
    /// The shared state of an edge with `config`: its NATS connection (which keeps trying
    /// in the background until a server answers), the sharded fan-out core over it, snapshots,
    /// reference data and the limits. Nothing is served yet.
    pub async fn new(config: EdgeConfig, verifier: Verifier) -> anyhow::Result<Arc<Edge>> {
        let kv_timeout = Duration::from_millis(config.snapshot.kv_timeout_ms);
        let nats = NatsLink::connect(&config.nats, config.shards, kv_timeout).await?;
        nats.open_kv();
        let fanout = FanoutConfig {
            live_budget_bytes: config.session.live_budget_bytes,
            slow_interval_ms: config.session.slow_interval_ms,
            max_ticks_per_frame: config.session.max_ticks_per_frame,
            beats: if config.session.shared_clock {
                Beats::shared(std::time::Instant::now(), CLOCK_SLOTS)
            } else {
                Beats::default()
            },
        };
        let runtime = Runtime::new(fanout.clone(), default_shards(), nats.clone());
        let delayed = Runtime::with_gauge(
            fanout,
            default_shards(),
            DelayedLink::start(&nats, &config.delayed, config.shards),
            "tickmesh_edge_delayed_symbols",
        );
        let owners = Owners::new(
            config.shards,
            Duration::from_millis(config.nats.stale_after_ms),
        );
        owners.spawn_checks(nats.connection());
        follow_liveness(&nats, &owners);
        let snapshots = Snapshots::new(nats.clone(), &config.snapshot);
        let config_js_domain = config.nats.js_domain.clone();
        let auth_throttle = AuthThrottle::new(
            config.limits.max_auth_failures_per_ip,
            Duration::from_millis(config.limits.auth_failure_window_ms),
            config.limits.max_tracked_ips,
        );
        let new_interest = Mutex::new(TokenBucket::new(
            config.limits.max_new_symbols_per_s,
            std::time::Instant::now(),
        ));
        let (config_stale_after_ms, config_move_after_ms) = (
            config.nats.stale_after_ms,
            config.nats.move_clients_after_ms,
        );
        let usage = Usage::new(&config.name, &config.usage);
        let delayed_tapes = DelayedTapes::new(&nats, &config.delayed);
        let refdata = RefData::new(match &config_js_domain {
            Some(domain) => async_nats::jetstream::with_domain(nats.client().clone(), domain),
            None => async_nats::jetstream::new(nats.client().clone()),
        });
        // A delayed-only user is told chains as they were `delay_ms` ago.
        refdata.keep_chain_changes(Duration::from_millis(config.delayed.delay_ms));
        let delay_ms = config.delayed.delay_ms;
        Ok(Arc::new(Edge {
            config,
            usage,
            runtime,
            delayed,
            nats: nats.clone(),
            snapshots,
            verifier,
            refdata,
            registry: Arc::new(Registry::default()),
            auth_throttle,
            new_interest,
            revocations: tokio::sync::watch::Sender::new(0),
            control_subscribed: AtomicBool::new(false),
            revocations_replayed: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            upstream: crate::upstream::spawn(
                nats.connection(),
                Duration::from_millis(config_stale_after_ms),
                Duration::from_millis(config_move_after_ms),
            ),
            clock: Clock::start(),
            owners,
            tapes: Tapes::new(nats.clone()),
            bar_feeds: release_bars(BarFeeds::new(nats.clone())),
            delayed_tapes: Tapes::delayed(delayed_tapes.clone(), Some(delay_ms)),
            delayed_bar_feeds: release_bars(BarFeeds::delayed(delayed_tapes, Some(delay_ms))),
        }))
    }
}

/// Sends bars in progress held back by their subscribers' intervals, every 50 ms, while
/// the edge lives.
fn release_bars<S: TapeSource>(feeds: Arc<BarFeeds<S>>) -> Arc<BarFeeds<S>> {
    let weak = Arc::downgrade(&feeds);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let Some(feeds) = weak.upgrade() else { return };
            feeds.release_due(std::time::Instant::now());
        }
    });
    feeds
}

/// Feeds ingest's liveness announcements into `owners` while the edge lives. One that is
/// too big or does not parse is counted and dropped.
fn follow_liveness(nats: &NatsLink, owners: &Arc<Owners>) {
    let owners = Arc::downgrade(owners);
    nats.follow(alive::SUBJECT, move |payload| {
        let Some(owners) = owners.upgrade() else {
            return false;
        };
        let parsed = (payload.len() <= alive::MAX_BYTES)
            .then(|| serde_json::from_slice::<alive::Alive>(payload).ok())
            .flatten();
        match parsed {
            Some(announcement) => owners.heard(&announcement, std::time::Instant::now()),
            None => {
                metrics::counter!("tickmesh_edge_liveness_invalid_total").increment(1);
                tracing::debug!(
                    bytes = payload.len(),
                    "dropped an invalid liveness announcement"
                );
            }
        }
        true
    });
}
