//! What TickMesh's services (ingest, the edge, the order system, their tools) share at run
//! time, apart from the I/O-free vocabulary of `tickmesh-core`:
//!
//! - [`config`]: a service's config from its defaults, a TOML file and the environment.
//! - [`kv`]: KV buckets as the mesh lays them out (a region's mirror of a hub bucket).
//! - [`metrics`]: the process's Prometheus recorder, with each service's histogram buckets,
//!   and the responder that serves it.
//! - [`nats`]: connecting to NATS with TLS and credentials (`[nats.tls]`, `[nats.auth]`).
//! - [`revocation`]: the operator's side of the revocation bucket `ctl_revoked`.
//! - [`stream`]: streams and buckets opened, or created by the service that owns them.
//! - [`shutdown_signal`]: SIGINT or SIGTERM, which starts a service's orderly stop.
//! - [`init_logging`]: the services' log output (`RUST_LOG`, text or JSON lines).

pub mod config;
pub mod kv;
pub mod metrics;
pub mod nats;
pub mod revocation;
pub mod stream;

/// Logs to stderr as text, or as one JSON object per line (`--log-json`), at the level
/// `RUST_LOG` sets (default `info`).
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

/// Resolves on SIGINT or SIGTERM: what starts the drain of `tickmesh-edge` and the stop of
/// `tickmesh-ingest` and `tickmesh-oms`.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler only fails outside a runtime");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}
