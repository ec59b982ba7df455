//! While a term lasts, the node announces itself every `liveness_ms` on
//! [`tickmesh_core::alive::SUBJECT`] (see there), naming the shards it owns: all of them,
//! since one node holds the feed's lease.

use std::time::Duration;

use tickmesh_core::alive::{Alive, SUBJECT};
use tickmesh_core::tick::now_us;

use crate::nats::Client;

/// Stops the announcements when dropped (the term ended).
pub struct Announcing(Option<tokio::task::JoinHandle<()>>);

impl Drop for Announcing {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Announces `node` in `epoch` every `every_ms` (never when 0) until dropped.
pub fn announce(
    client: Client,
    node: String,
    epoch: u64,
    shards: u32,
    every_ms: u64,
) -> Announcing {
    if every_ms == 0 || shards == 0 {
        return Announcing(None);
    }
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let alive = Alive {
                node: node.clone(),
                epoch,
                shards: vec![[0, shards - 1]],
                ts: now_us(),
                every_ms,
            };
            let payload = serde_json::to_vec(&alive).expect("an announcement serializes");
            if let Err(e) = client.publish(SUBJECT, payload.into()).await {
                tracing::warn!(error = %e, "could not announce liveness");
            }
        }
    });
    Announcing(Some(task))
}
