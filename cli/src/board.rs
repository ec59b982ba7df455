//! Per-symbol state: the seq gate, and the latest quote of each watched symbol.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use tickmesh_core::Tick;

/// Checks continuity (docs/protocol.md): each live update stands for the ticks from just
/// after what the client had (or after the last `gap` told), through its own seq; every
/// seq in between was either folded into an update or told as lost.
#[derive(Debug, Default)]
pub struct Continuity {
    /// Per symbol: the last epoch and seq had, and since then the highest seq a gap told
    /// of and how many seqs the gaps named.
    had: HashMap<String, (u64, u64, u64, u64)>,
    /// Ticks the edge said never reached it.
    pub lost: u64,
    /// Ticks folded into updates.
    pub conflated: u64,
    /// Updates that skipped seqs neither folded nor told as lost.
    pub broken: u64,
}

impl Continuity {
    pub fn gap(&mut self, symbol: &str, from: u64, to: u64) {
        let n = to.saturating_sub(from) + 1;
        self.lost += n;
        if let Some((_, _, told_to, told)) = self.had.get_mut(symbol) {
            *told_to = (*told_to).max(to);
            *told += n;
        }
    }

    /// A tick passed by the seq gate; false if it breaks continuity. A `from_seq` below
    /// what the client expects is an overlap (after a reconnect, what the edge sent last
    /// may not be what this client kept), not a break.
    /// A new epoch (an ingest fail-over or restart) jumps seq forward: nothing is owed.
    pub fn tick(
        &mut self,
        symbol: &str,
        (epoch, seq): (u64, u64),
        from_seq: Option<u64>,
        snapshot: bool,
    ) -> bool {
        let before = self.had.insert(symbol.to_string(), (epoch, seq, 0, 0));
        let Some((_, had, told_to, told)) = before.filter(|b| !snapshot && b.0 == epoch) else {
            return true;
        };
        self.conflated += seq.saturating_sub(had + 1).saturating_sub(told);
        let ok = from_seq.unwrap_or(seq) <= had.max(told_to) + 1;
        if !ok {
            self.broken += 1;
        }
        ok
    }
}

/// Passes a tick only if its seq is above the last one passed for its symbol: no
/// duplicate, no reordering, no stale snapshot after a fresher tick, on this connection or
/// the next (the gate outlives reconnects). A symbol's ticks that move between real time
/// and delayed (an `auth` moved it) start over: the other side's seqs may be lower.
#[derive(Debug, Default)]
pub struct SeqGate {
    /// The last seq passed per symbol, and whether it was delayed.
    last: HashMap<String, (u64, bool)>,
    stale: u64,
}

impl SeqGate {
    pub fn admit(&mut self, symbol: &str, seq: u64, delayed: bool) -> bool {
        match self.last.get_mut(symbol) {
            Some((last, side)) if seq <= *last && *side == delayed => {
                self.stale += 1;
                false
            }
            Some(last) => {
                *last = (seq, delayed);
                true
            }
            None => {
                self.last.insert(symbol.to_string(), (seq, delayed));
                true
            }
        }
    }

    /// Ticks dropped so far.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    pub fn last(&self, symbol: &str) -> Option<u64> {
        self.last.get(symbol).map(|(seq, _)| *seq)
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub symbol: String,
    /// The latest tick (every tick carries the whole state of its fields).
    pub tick: Option<Tick>,
    /// Why the edge refused the symbol (`not_entitled`, ...).
    pub refused: Option<String>,
    /// When the last price last moved, and which way.
    pub moved: Option<(Instant, Ordering)>,
}

/// The watched symbols in the order they were asked for.
#[derive(Debug, Clone)]
pub struct Board {
    rows: Vec<Row>,
    index: HashMap<String, usize>,
}

impl Board {
    pub fn new(symbols: &[String]) -> Self {
        let rows: Vec<Row> = symbols
            .iter()
            .map(|s| Row {
                symbol: s.clone(),
                tick: None,
                refused: None,
                moved: None,
            })
            .collect();
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.symbol.clone(), i))
            .collect();
        Board { rows, index }
    }

    /// Takes a tick that passed the gate; one of a symbol not on the board is ignored.
    pub fn update(&mut self, tick: Tick, now: Instant) {
        let Some(&i) = self.index.get(tick.symbol.as_str()) else {
            return;
        };
        let row = &mut self.rows[i];
        let before = row.tick.as_ref().and_then(|t| t.last);
        if let (Some(a), Some(b)) = (before, tick.last)
            && let Some(o @ (Ordering::Greater | Ordering::Less)) = b.partial_cmp(&a)
        {
            row.moved = Some((now, o));
        }
        row.refused = None;
        row.tick = Some(tick);
    }

    pub fn refuse(&mut self, symbol: &str, reason: &str) {
        if let Some(&i) = self.index.get(symbol) {
            self.rows[i].refused = Some(reason.to_string());
        }
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(symbol: &str, seq: u64, last: f64) -> Tick {
        Tick {
            symbol: symbol.into(),
            seq,
            last: Some(last),
            ..Default::default()
        }
    }

    #[test]
    fn continuity_accounts_for_every_seq_as_folded_or_lost() {
        let mut c = Continuity::default();
        assert!(
            c.tick("AAPL", (1, 10), None, true),
            "a snapshot starts the count"
        );
        assert!(c.tick("AAPL", (1, 11), None, false));
        assert!(c.tick("AAPL", (1, 15), Some(12), false), "12..=15 folded");
        c.gap("AAPL", 16, 18);
        assert!(c.tick("AAPL", (1, 20), Some(19), false), "after the gap");
        assert_eq!((c.conflated, c.lost, c.broken), (4, 3, 0));
        assert!(
            !c.tick("AAPL", (1, 25), Some(23), false),
            "21 and 22 unaccounted for"
        );
        assert_eq!(c.broken, 1);
        assert!(
            c.tick("AAPL", (1, 30), None, true),
            "a new snapshot starts over"
        );
        assert!(
            c.tick("AAPL", (2, 900), None, false),
            "a new epoch owes nothing"
        );
        assert_eq!(c.broken, 1);
    }

    #[test]
    fn the_gate_passes_only_newer_seqs_per_symbol() {
        let mut g = SeqGate::default();
        assert!(g.admit("AAPL", 10, false));
        assert!(!g.admit("AAPL", 10, false), "duplicate");
        assert!(!g.admit("AAPL", 9, false), "older");
        assert!(g.admit("MSFT", 3, false), "another symbol has its own seq");
        assert!(g.admit("AAPL", 12, false), "a gap is fine");
        assert!(!g.admit("AAPL", 11, false));
        // Moved to delayed: samples 15 minutes behind, lower seqs; then back.
        assert!(g.admit("AAPL", 5, true), "the delayed side starts over");
        assert!(!g.admit("AAPL", 5, true));
        assert!(g.admit("AAPL", 6, true));
        assert!(g.admit("AAPL", 14, false), "and so does real time");
        assert_eq!(g.stale(), 4);
        assert_eq!(g.last("AAPL"), Some(14));
    }

    #[test]
    fn the_board_keeps_the_asked_order_and_notes_moves() {
        let mut b = Board::new(&["SPY".into(), "AAPL".into()]);
        let t0 = Instant::now();
        b.update(tick("AAPL", 1, 100.0), t0);
        b.update(tick("NOPE", 1, 1.0), t0);
        assert_eq!(b.rows()[0].symbol, "SPY");
        assert!(b.rows()[0].tick.is_none());
        assert_eq!(b.rows()[1].moved, None, "no move on the first price");
        b.update(tick("AAPL", 2, 99.5), t0);
        assert_eq!(b.rows()[1].moved, Some((t0, Ordering::Less)));
        assert_eq!(b.rows()[1].tick.as_ref().unwrap().last, Some(99.5));
        b.refuse("SPY", "not_entitled");
        assert_eq!(b.rows()[0].refused.as_deref(), Some("not_entitled"));
    }
}
