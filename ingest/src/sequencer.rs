//! Sequencing: the single writer of every symbol it carries.
//!
//! A symbol's `seq` is `epoch + n` for its n-th tick of the epoch, so within an epoch it
//! grows by exactly 1 per published tick and a reader sees loss as a step above 1. An
//! epoch is chosen by [`next_epoch`] at every start and every lease take-over: at least
//! the wall clock in µs, and above every seq already issued (read back from `md_last` and
//! from the lease), so seq keeps increasing across restarts, fail-overs and clock steps
//! backwards. No symbol ticks a million times a second, so `epoch + n` stays below the
//! next epoch; values stay below 2^53 for centuries.
//!
//! Input whose source timestamp (`src_ts`) is older than one already sequenced for the
//! symbol is stale: dropped and counted, never reordered.

use tickmesh_core::Tick;

/// Added to the highest seq found in `md_last` when choosing an epoch: covers ticks
/// published after the last KV write (which lags by at most a few `kv.interval_ms`), at
/// one tick per µs at most.
pub const MD_LAST_MARGIN_US: u64 = 5_000_000;

/// The epoch for a new term: the wall clock, unless a seq already issued says otherwise.
/// `md_last_max` is the highest seq in `md_last` for the feed's symbols (0 if none);
/// `lease_bound` the previous holder's bound (0 if none).
pub fn next_epoch(now_us: u64, md_last_max: u64, lease_bound: u64) -> u64 {
    let from_kv = if md_last_max == 0 {
        0
    } else {
        md_last_max + MD_LAST_MARGIN_US
    };
    now_us.max(from_kv).max(lease_bound + 1)
}

#[derive(Debug)]
pub struct Sequencer {
    epoch: u64,
    /// Ticks stamped in this epoch, per symbol index.
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

    /// Makes room for symbol indices below `symbols`.
    pub fn grow(&mut self, symbols: usize) {
        if symbols > self.counts.len() {
            self.counts.resize(symbols, 0);
            self.last_src_ts.resize(symbols, 0);
        }
    }

    /// Starts a new epoch (which must be larger): counts restart, source times are kept.
    pub fn start_epoch(&mut self, epoch: u64) {
        debug_assert!(epoch > self.epoch || self.counts.iter().all(|&c| c == 0));
        self.epoch = epoch;
        self.counts.iter_mut().for_each(|c| *c = 0);
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

    /// The last seq stamped for symbol `i`, if any in this epoch.
    pub fn last_seq(&self, i: usize) -> Option<u64> {
        self.counts
            .get(i)
            .filter(|&&c| c > 0)
            .map(|c| self.epoch + c)
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
        s.start_epoch(2_000);
        s.stamp(0, &mut t, 8).unwrap();
        assert_eq!((t.seq, t.epoch), (2_001, 2_000));
        assert_eq!(s.last_seq(0), Some(2_001));
        assert_eq!(s.last_seq(1), None);
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
        s.grow(3);
        s.stamp(2, &mut old, 4).unwrap();
        assert_eq!(old.seq, 1, "a new symbol has its own source clock");
    }

    #[test]
    fn the_epoch_stays_above_every_seq_already_issued() {
        let now = 1_700_000_000_000_000;
        // Nothing issued: the wall clock.
        assert_eq!(next_epoch(now, 0, 0), now);
        // md_last holds a seq from the past: the wall clock is already above it.
        assert_eq!(next_epoch(now, now - 60_000_000, 0), now);
        // The clock stepped back below what md_last holds: jump above it.
        let issued = now + 30_000_000;
        assert!(next_epoch(now, issued, 0) > issued + 1_000_000);
        // The previous holder's bound wins when it is the highest.
        assert_eq!(
            next_epoch(now, issued, issued + 9_000_000),
            issued + 9_000_001
        );
    }
}
