//! What TickMesh's services (ingest, the edge, their tools) share at run time, apart from
//! the I/O-free vocabulary of `tickmesh-core`:
//!
//! - [`nats`]: connecting to NATS with TLS and credentials (`[nats.tls]`, `[nats.auth]`).
//! - [`revocation`]: the operator's side of the revocation bucket `ctl_revoked`.
//! - [`shutdown_signal`]: SIGINT or SIGTERM, which starts a service's orderly stop.

pub mod nats;
pub mod revocation;

/// Resolves on SIGINT or SIGTERM: what starts the drain of `tickmesh-edge` and the stop of
/// `tickmesh-ingest`.
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
