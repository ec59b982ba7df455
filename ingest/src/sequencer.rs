//! Sequencing: the single writer of every symbol it carries.
//!
//! `epoch` is the ingest start time in µs; a symbol's `seq` is `epoch + n` for its n-th
//! tick of this run. A restart starts a larger epoch (the wall clock has moved on), and no
//! symbol ticks a million times a second, so `seq` keeps increasing across restarts and
//! stays below 2^53 for centuries. Within a run it grows by exactly 1 per published tick,
//! so a reader sees loss as a step above 1.

use tickmesh_core::Tick;

#[derive(Debug)]
pub struct Sequencer {
    epoch: u64,
    /// Ticks stamped so far, per symbol index.
    counts: Vec<u64>,
    /// Latest source timestamp seen, per symbol index: older input is stale.
    last_src_ts: Vec<u64>,
}

/// Why the sequencer refused a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source timestamp is older than one already sequenced.
    Stale,
}

impl Sequencer {
    /// A sequencer for `symbols` symbols, with `epoch` = the start time in µs.
    pub fn new(epoch: u64, symbols: usize) -> Self {
        Sequencer {
            epoch,
            counts: vec![0; symbols],
            last_src_ts: vec![0; symbols],
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Stamps `tick` (symbol index `i`) with `epoch`, the next `seq` and `ts = now_us`.
    pub fn stamp(&mut self, i: usize, tick: &mut Tick, now_us: u64) -> Result<(), Refused> {
        if let Some(src) = tick.src_ts {
            if src < self.last_src_ts[i] {
                return Err(Refused::Stale);
            }
            self.last_src_ts[i] = src;
        }
        self.counts[i] += 1;
        tick.epoch = self.epoch;
        tick.seq = self.epoch + self.counts[i];
        tick.ts = now_us;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_grows_by_one_per_symbol_and_jumps_at_a_new_epoch() {
        let mut s = Sequencer::new(1_000, 2);
        let mut t = Tick::default();
        s.stamp(0, &mut t, 5).unwrap();
        assert_eq!((t.seq, t.epoch, t.ts), (1_001, 1_000, 5));
        s.stamp(0, &mut t, 6).unwrap();
        assert_eq!(t.seq, 1_002);
        s.stamp(1, &mut t, 7).unwrap();
        assert_eq!(t.seq, 1_001);
        let mut later = Sequencer::new(2_000, 2);
        later.stamp(0, &mut t, 8).unwrap();
        assert!(t.seq > 1_002);
    }

    #[test]
    fn stale_source_input_is_refused_without_using_a_seq() {
        let mut s = Sequencer::new(0, 1);
        let mut t = Tick {
            src_ts: Some(100),
            ..Tick::default()
        };
        s.stamp(0, &mut t, 1).unwrap();
        let mut old = Tick {
            src_ts: Some(99),
            ..Tick::default()
        };
        assert_eq!(s.stamp(0, &mut old, 2), Err(Refused::Stale));
        let mut next = Tick {
            src_ts: Some(100),
            ..Tick::default()
        };
        s.stamp(0, &mut next, 3).unwrap();
        assert_eq!(next.seq, 2);
    }
}
