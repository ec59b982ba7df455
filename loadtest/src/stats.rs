//! What each worker counts and how the counts merge (across threads and processes). The
//! JSON summary's types live in the library ([`tickmesh_loadgen::summary`]), which
//! `cargo xtask bench` reads them with.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
pub use tickmesh_loadgen::summary::{Counts, Percentiles, Resource, Summary};

/// Latencies are recorded in µs, from 1 µs to 10 minutes, at 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// Counts of one worker (or, merged, of the whole run).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Ingest-to-client latency of live updates in the measurement window, µs.
    pub latency: Histogram<u64>,
    /// Time from the start of the run until a connection had a value of every symbol it
    /// subscribed to (snapshot or live), µs.
    pub full_picture: Histogram<u64>,
    /// Time from a connection's scheduled start until its upgrade completed, µs.
    pub connect: Histogram<u64>,
    pub counts: Counts,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: histogram(),
            full_picture: histogram(),
            connect: histogram(),
            counts: Counts::default(),
        }
    }
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.latency
            .add(&o.latency)
            .expect("histograms share their bounds");
        self.full_picture
            .add(&o.full_picture)
            .expect("histograms share their bounds");
        self.connect
            .add(&o.connect)
            .expect("histograms share their bounds");
        self.counts.merge(&o.counts);
    }

    /// The form a child process hands to its parent.
    pub fn to_wire(&self) -> WireStats {
        let dump = |h: &Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        WireStats {
            latency: dump(&self.latency),
            full_picture: dump(&self.full_picture),
            connect: dump(&self.connect),
            counts: self.counts.clone(),
        }
    }

    pub fn from_wire(w: &WireStats) -> anyhow::Result<Stats> {
        let mut s = Stats {
            counts: w.counts.clone(),
            ..Stats::default()
        };
        for &(v, n) in &w.latency {
            s.latency.record_n(v, n)?;
        }
        for &(v, n) in &w.full_picture {
            s.full_picture.record_n(v, n)?;
        }
        for &(v, n) in &w.connect {
            s.connect.record_n(v, n)?;
        }
        Ok(s)
    }
}

/// Stats as a child process prints them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStats {
    pub latency: Vec<(u64, u64)>,
    pub full_picture: Vec<(u64, u64)>,
    pub connect: Vec<(u64, u64)>,
    pub counts: Counts,
    // Resources are measured by the parent.
}
