//! What sessions are told of the edge's NATS connection: after it has been down for
//! `nats.stale_after_ms` their symbols are stale, and after `nats.move_clients_after_ms`
//! they should move to another edge. A state machine over the connection's up/down watch,
//! with time as the only other input.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The edge's upstream, as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Connected, or down for less than `stale_after`.
    Fresh,
    /// Down for `stale_after` or more: the values sessions hold may be old.
    Stale,
    /// Down for `move_after` or more: clients should reconnect elsewhere.
    Lost,
}

/// Follows `connected` until it closes; the returned watch tells sessions.
pub fn spawn(
    mut connected: watch::Receiver<bool>,
    stale_after: Duration,
    move_after: Duration,
) -> watch::Receiver<Upstream> {
    let (tx, rx) = watch::channel(Upstream::Fresh);
    tokio::spawn(async move {
        loop {
            if connected.wait_for(|up| !*up).await.is_err() {
                return;
            }
            let down_at = Instant::now();
            for (after, state) in [(stale_after, Upstream::Stale), (move_after, Upstream::Lost)] {
                tokio::select! {
                    _ = tokio::time::sleep_until(down_at + after) => {
                        tracing::warn!(state = ?state, "NATS still down");
                        set(&tx, state);
                    }
                    up = connected.wait_for(|up| *up) => {
                        if up.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
            if connected.wait_for(|up| *up).await.is_err() {
                return;
            }
            set(&tx, Upstream::Fresh);
        }
    });
    rx
}

/// Publishes `state` if it is a change: sessions act on transitions only.
fn set(tx: &watch::Sender<Upstream>, state: Upstream) {
    tx.send_if_modified(|s| std::mem::replace(s, state) != state);
}
