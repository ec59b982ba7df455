//! Ingest's liveness: while it publishes, the ingest node that holds the feed announces
//! itself every `every_ms` on [`SUBJECT`], naming the shards it owns, so that an edge can
//! tell a symbol whose owner went quiet (stale) from one that merely did not change.

use serde::{Deserialize, Serialize};

/// The subject of the announcements (core NATS, not retained).
pub const SUBJECT: &str = "ctl.alive";

/// Largest announcement an edge reads; a bigger one is dropped.
pub const MAX_BYTES: usize = 4096;

/// One announcement, JSON on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// The ingest node (its NATS client name).
    pub node: String,
    /// The epoch it publishes in.
    pub epoch: u64,
    /// The shards it owns, as inclusive ranges `[first, last]`.
    pub shards: Vec<[u32; 2]>,
    /// When it was sent, µs since the Unix epoch.
    pub ts: u64,
    /// How often it is sent, ms.
    pub every_ms: u64,
}

impl Alive {
    /// The shards named, each at most once, below `shards` (others are ignored), at most
    /// `shards` of them however the ranges are written.
    pub fn owned(&self, shards: u32) -> impl Iterator<Item = u32> + '_ {
        let mut seen = vec![false; shards as usize];
        self.shards
            .iter()
            .filter(move |_| shards > 0)
            .flat_map(move |&[a, b]| a..=b.min(shards - 1))
            .filter(move |s| !std::mem::replace(&mut seen[*s as usize], true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_shards_are_clipped_to_the_deployment_and_counted_once() {
        let a = Alive {
            node: "ingest-1".into(),
            epoch: 7,
            shards: vec![[0, 3], [2, 5], [60, 1_000_000], [9, 1]],
            ts: 1,
            every_ms: 500,
        };
        let owned: Vec<u32> = a.owned(64).collect();
        assert_eq!(owned, [0, 1, 2, 3, 4, 5, 60, 61, 62, 63]);
        assert_eq!(a.owned(0).count(), 0);
    }
}
