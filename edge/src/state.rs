//! What every session of an edge shares: its configuration, the fan-out hub, snapshots,
//! token verification, reference data, limits and the signals that tell sessions of
//! revocations, draining and the state of NATS. The server builds it; sessions, control
//! and revocations read it. It imports none of them.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::EdgeConfig;
use crate::hub::Hub;
use crate::limits::peers::AuthThrottle;
use crate::limits::{Registry, TokenBucket};
use crate::refdata::RefData;
use crate::snapshot::Snapshots;

/// State shared by every session of this edge.
#[derive(Debug)]
pub struct Edge {
    pub config: EdgeConfig,
    pub hub: Arc<Hub>,
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
}
