//! `[stream]`: the stream `acct` and the bucket `acct_snap` as the writer wants them.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use serde::{Deserialize, Serialize};
use tickmesh_core::account::STREAM;

/// `[stream]`: the account stream `acct` and the snapshot bucket `acct_snap`, as the
/// writer creates them (an existing stream's limits and replicas are brought to these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Copies of the stream and of the bucket: 3 on the hub cluster (one per availability
    /// zone), 1 on a single server. 1..=5, default 1.
    pub replicas: usize,
    /// Events older than this are dropped, seconds: how far back a client's `from_seq`
    /// reaches (a snapshot is never dropped). Default 604800 (7 days).
    pub max_age_s: u64,
    /// The most the stream holds, bytes; the oldest events go first when it is full.
    /// -1: no bound but age. Default 536870912 (512 MiB: the hub's JetStream file store
    /// is 1 GB per node).
    pub max_bytes: i64,
    /// How long the stream remembers an event's `Nats-Msg-Id`, seconds. Default 120.
    pub duplicate_window_s: u64,
    /// The most consumers the stream may have at once: an edge's catch-ups of more than a
    /// few events (a replay, a long gap), operators' tools and this writer's rebuild.
    /// nats-server's own default, when a stream names none, is 1,000. -1: no bound.
    /// Default 100000.
    pub max_consumers: i32,
    /// How long one append is retried (no leader, no answer, a lost acknowledgement)
    /// before the writer gives up on it, ms; the account's trading waits meanwhile.
    /// Default 60000.
    pub append_timeout_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            replicas: 1,
            max_age_s: 7 * 24 * 3600,
            max_bytes: 512 * 1024 * 1024,
            duplicate_window_s: 120,
            max_consumers: 100_000,
            append_timeout_ms: 60_000,
        }
    }
}

impl StreamConfig {
    /// The first setting that is out of range: (key under `[stream]`, why).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=5).contains(&self.replicas) {
            return Err(("replicas", format!("must be 1..=5, got {}", self.replicas)));
        }
        if !(60..=10 * 365 * 24 * 3600).contains(&self.max_age_s) {
            return Err((
                "max_age_s",
                format!("must be 60 s to 10 years, got {}", self.max_age_s),
            ));
        }
        if self.max_bytes != -1 && self.max_bytes < 1 << 20 {
            return Err((
                "max_bytes",
                format!(
                    "must be -1 (no bound) or at least 1 MiB, got {}",
                    self.max_bytes
                ),
            ));
        }
        if self.duplicate_window_s == 0 || self.duplicate_window_s > self.max_age_s {
            return Err((
                "duplicate_window_s",
                format!(
                    "must be 1 to max_age_s ({}), got {}",
                    self.max_age_s, self.duplicate_window_s
                ),
            ));
        }
        if self.max_consumers != -1 && self.max_consumers < 1 {
            return Err((
                "max_consumers",
                format!(
                    "must be -1 (no bound) or at least 1, got {}",
                    self.max_consumers
                ),
            ));
        }
        if !(100..=3_600_000).contains(&self.append_timeout_ms) {
            return Err((
                "append_timeout_ms",
                format!("must be 100..=3600000, got {}", self.append_timeout_ms),
            ));
        }
        Ok(())
    }

    /// The stream `acct` as these settings make it.
    pub(super) fn stream(&self) -> stream::Config {
        stream::Config {
            name: STREAM.into(),
            subjects: vec!["acct.>".into()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: Duration::from_secs(self.max_age_s),
            max_bytes: self.max_bytes,
            duplicate_window: Duration::from_secs(self.duplicate_window_s),
            num_replicas: self.replicas,
            max_consumers: self.max_consumers,
            // Edges read an account's snapshot position and replays from any replica.
            allow_direct: true,
            republish: Some(republish()),
            ..Default::default()
        }
    }
}

/// Each stored event again on `acctlive.<account>.<kind>`, where edges follow accounts
/// live (see [`tickmesh_core::account::LIVE_SOURCE`]).
pub(super) fn republish() -> stream::Republish {
    stream::Republish {
        source: tickmesh_core::account::LIVE_SOURCE.into(),
        destination: tickmesh_core::account::LIVE_DESTINATION.into(),
        headers_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stream_keeps_a_week_and_each_setting_is_checked_by_name() {
        let c = StreamConfig::default();
        c.validate().unwrap();
        let s = c.stream();
        assert_eq!(s.max_age, Duration::from_secs(604_800));
        assert_eq!((s.storage, s.allow_direct), (StorageType::File, true));
        assert_eq!(s.subjects, ["acct.>"]);
        let live = s.republish.expect("stored events are republished");
        assert_eq!(
            (live.source.as_str(), live.destination.as_str()),
            ("acct.>", "acctlive.>")
        );
        assert_eq!(s.max_consumers, 100_000);
        let bad = [
            (
                StreamConfig {
                    replicas: 0,
                    ..c.clone()
                },
                "replicas",
            ),
            (
                StreamConfig {
                    max_age_s: 1,
                    ..c.clone()
                },
                "max_age_s",
            ),
            (
                StreamConfig {
                    max_bytes: 10,
                    ..c.clone()
                },
                "max_bytes",
            ),
            (
                StreamConfig {
                    duplicate_window_s: c.max_age_s + 1,
                    ..c.clone()
                },
                "duplicate_window_s",
            ),
            (
                StreamConfig {
                    max_consumers: 0,
                    ..c.clone()
                },
                "max_consumers",
            ),
            (
                StreamConfig {
                    append_timeout_ms: 0,
                    ..c.clone()
                },
                "append_timeout_ms",
            ),
        ];
        for (config, key) in bad {
            assert_eq!(config.validate().unwrap_err().0, key);
        }
    }
}
