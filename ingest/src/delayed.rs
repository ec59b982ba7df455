//! The delayed sampler: every `delayed.step_ms`, the latest tick of each symbol that
//! ticked since the step before is published on `mdd.<shard>.<symbol>`, which the stream
//! `md_delayed` keeps for `delayed.keep_ms`. Edges serve delayed data from that stream,
//! read at now − delay, so the stream holds at most one tick per symbol per step however
//! fast the symbol ticks.
//!
//! The tick path only offers the encoded bytes (the same [`Slots`] the KV writer uses:
//! latest wins, no await), so a slow stream never slows the ticks.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::subject::delayed_subject;
use tokio_util::sync::CancellationToken;

use crate::nats;
use crate::publisher::intern;
use crate::snapshot::Slots;

/// Runs until `cancel`, publishing each step's samples.
pub async fn run_sampler(
    client: nats::Client,
    slots: Arc<Slots>,
    shards: u32,
    step: Duration,
    cancel: CancellationToken,
) {
    // The subject of each symbol index, made once.
    let mut subjects: Vec<Option<&'static str>> = Vec::new();
    let mut timer = tokio::time::interval(step);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            () = cancel.cancelled() => return,
        }
        let due = slots.take_all();
        let mut sent = 0u64;
        for (i, key, bytes) in due {
            if i >= subjects.len() {
                subjects.resize(i + 1, None);
            }
            let subject = *subjects[i].get_or_insert_with(|| intern(delayed_subject(&key, shards)));
            match client.publish(subject, bytes).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    metrics::counter!("tickmesh_ingest_delayed_errors_total").increment(1);
                    tracing::debug!(error = %e, subject, "publishing a delayed sample failed");
                }
            }
        }
        metrics::counter!("tickmesh_ingest_delayed_samples_total").increment(sent);
    }
}
