//! Which shards' owner went quiet. Ingest announces itself on `ctl.alive` every few hundred
//! ms, naming the shards it owns (see `tickmesh_core::alive`); a shard whose owner has not
//! been heard for `nats.stale_after_ms` is *quiet*, and sessions mark its subscribed
//! symbols stale (`status`) until it is heard again. A shard never heard since the edge
//! started is not quiet: an edge cannot vouch for a feed it never saw, nor condemn it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickmesh_core::alive::Alive;
use tokio::sync::watch;

/// The quiet shards, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quiet(Vec<u64>);

impl Quiet {
    pub fn contains(&self, shard: u32) -> bool {
        let (word, bit) = ((shard / 64) as usize, shard % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn insert(&mut self, shard: u32) {
        let (word, bit) = ((shard / 64) as usize, shard % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }
}

/// When each shard's owner was last heard.
#[derive(Debug)]
pub struct Owners {
    shards: u32,
    stale_after: Duration,
    heard: Mutex<Heard>,
    quiet: watch::Sender<Arc<Quiet>>,
}

#[derive(Debug)]
struct Heard {
    at: Vec<Option<Instant>>,
    /// Whether the edge's NATS link is up: while it is down nothing is heard, and that is
    /// the link's staleness (`crate::upstream`), not the feed's; once it is back, owners
    /// get `stale_after` from then to be heard again.
    link_up: bool,
    link_back: Option<Instant>,
}

impl Owners {
    pub fn new(shards: u32, stale_after: Duration) -> Arc<Owners> {
        Arc::new(Owners {
            shards,
            stale_after,
            heard: Mutex::new(Heard {
                at: vec![None; shards as usize],
                link_up: true,
                link_back: None,
            }),
            quiet: watch::Sender::new(Arc::new(Quiet::default())),
        })
    }

    /// An announcement came.
    pub fn heard(&self, alive: &Alive, now: Instant) {
        {
            let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
            for shard in alive.owned(self.shards) {
                heard.at[shard as usize] = Some(now);
            }
        }
        self.update(now);
    }

    /// Works out the quiet shards as of `now`; sessions are told only of a change.
    pub fn update(&self, now: Instant) {
        let mut quiet = Quiet::default();
        {
            let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
            if heard.link_up {
                for (shard, at) in heard.at.iter().enumerate() {
                    let since = at.map(|at| heard.link_back.map_or(at, |back| at.max(back)));
                    if since.is_some_and(|t| now.saturating_duration_since(t) > self.stale_after) {
                        quiet.insert(shard as u32);
                    }
                }
            }
        }
        self.quiet.send_if_modified(|current| {
            let changed = **current != quiet;
            if changed {
                *current = Arc::new(quiet);
            }
            changed
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Quiet>> {
        self.quiet.subscribe()
    }

    /// The edge's NATS link went down or came back.
    pub fn link(&self, up: bool, now: Instant) {
        {
            let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
            if up && !heard.link_up {
                heard.link_back = Some(now);
            }
            heard.link_up = up;
        }
        self.update(now);
    }

    /// Checks every quarter of `stale_after`, and follows the NATS link (`connected`),
    /// until the edge is dropped.
    pub fn spawn_checks(self: &Arc<Self>, mut connected: watch::Receiver<bool>) {
        let owners = Arc::downgrade(self);
        let every = (self.stale_after / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut link_open = true;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = connected.changed(), if link_open => link_open = changed.is_ok(),
                }
                let Some(owners) = owners.upgrade() else {
                    return;
                };
                let up = *connected.borrow_and_update();
                owners.link(up, Instant::now());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(shards: Vec<[u32; 2]>) -> Alive {
        Alive {
            node: "ingest-1".into(),
            epoch: 1,
            shards,
            ts: 0,
            every_ms: 500,
        }
    }

    #[test]
    fn a_shard_is_quiet_once_its_owner_is_unheard_for_stale_after_and_never_before_it_was_heard() {
        let owners = Owners::new(128, Duration::from_millis(2000));
        let quiet = owners.subscribe();
        let t0 = Instant::now();
        owners.update(t0 + Duration::from_secs(60));
        assert!(quiet.borrow().is_empty(), "never heard: not quiet");
        owners.heard(&alive(vec![[0, 99]]), t0);
        owners.update(t0 + Duration::from_millis(2000));
        assert!(quiet.borrow().is_empty(), "heard 2000 ms ago: not yet");
        owners.update(t0 + Duration::from_millis(2001));
        let q = quiet.borrow().clone();
        assert!(q.contains(0) && q.contains(70) && q.contains(99));
        assert!(!q.contains(100) && !q.contains(127), "never heard");
        owners.heard(&alive(vec![[64, 127]]), t0 + Duration::from_millis(2500));
        let q = quiet.borrow().clone();
        assert!(q.contains(63) && !q.contains(64), "64.. heard again: {q:?}");
        // The edge's own link drops: that is not the feed's doing. Back, owners get
        // stale_after from then to be heard again.
        owners.link(false, t0 + Duration::from_millis(3000));
        assert!(quiet.borrow().is_empty());
        owners.link(true, t0 + Duration::from_millis(9000));
        assert!(quiet.borrow().is_empty());
        owners.update(t0 + Duration::from_millis(11_001));
        assert!(quiet.borrow().contains(0));
    }
}
