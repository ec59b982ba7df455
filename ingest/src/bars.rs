//! Bars from prints: for every symbol the node publishes, one bar in progress per
//! timeframe (1s, 1m, 5m, 1h, 1d), folded from its prints by the print's `ts`.
//!
//! - A print of a later bar closes the bar in progress (it goes out once more, `final`);
//!   so does the clock ([`Bars::close_due`]) when a bar's time is up and no print came.
//! - A bar in progress that changed goes out at most every `bars.update_ms`.
//! - A print older than the bar in progress (its `ts` went back) is refused for that
//!   timeframe: counted and logged, never folded into the wrong bar.
//! - A new trading session restarts the bars ([`Bars::restart`]): every bar in progress
//!   closes, and the session's first bar of each timeframe starts at the session's start
//!   (rounded up to a whole second) when that is later than its period's start, so that
//!   no bar holds prints of two sessions and starts stay in order.
//! - A new term (a node that took the feed over, or the start) goes on from what the
//!   stream holds: before the first print of a symbol, the last bar of each of its
//!   subjects is read ([`Bars::resume`]). A bar in progress of the same period is
//!   continued; one of an earlier period is closed (its owner stopped before it could);
//!   a closed bar of the same period stays closed (prints for it are refused), so no bar
//!   ever gets a second, different final.

use tickmesh_core::bar::{Bar, Timeframe};

/// `[bars]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarsConfig {
    /// Build and publish bars (needs `trades.enabled`). Default true.
    pub enabled: bool,
    /// The stream that keeps them (subjects `bar.>`), created with `kv.replicas` copies
    /// if missing. Default `md_bars`.
    pub stream: String,
    /// Closed bars kept per subject. Default 1000.
    pub keep: i64,
    /// A changed bar in progress goes out at most this often, ms. Default 250.
    pub update_ms: u64,
    /// How long the stream keeps a bar in progress, s: a node that takes the feed over
    /// within this long goes on with it. Default 15.
    pub live_ttl_s: u64,
}

impl Default for BarsConfig {
    fn default() -> Self {
        BarsConfig {
            enabled: true,
            stream: tickmesh_core::bar::STREAM.into(),
            keep: 1000,
            update_ms: 250,
            live_ttl_s: 15,
        }
    }
}

#[derive(Debug, Clone)]
struct Open {
    bar: Bar,
    /// Changed since it last went out.
    dirty: bool,
    /// When it last went out, µs (0: never).
    sent_at: u64,
}

/// What [`Bars::on_print`] did with a print, per timeframe.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Timeframes that refused it (its `ts` is before their bar in progress, or in a
    /// bar already closed).
    pub refused: u32,
}

/// Every symbol's bars in progress.
#[derive(Debug, Default)]
pub struct Bars {
    /// By symbol index, one per timeframe.
    open: Vec<[Option<Open>; 5]>,
    /// The last closed bar's start per symbol and timeframe (prints of it are refused).
    closed: Vec<[u64; 5]>,
    /// The symbol's stream was read this term.
    resumed: Vec<bool>,
    update_us: u64,
    /// When the trading session began, µs (a whole second; 0: not known): no bar starts
    /// before it.
    session_start: u64,
}

impl Bars {
    pub fn new(update_ms: u64) -> Self {
        Bars {
            update_us: update_ms.saturating_mul(1000),
            ..Bars::default()
        }
    }

    fn grow(&mut self, i: usize) {
        if self.open.len() <= i {
            self.open.resize_with(i + 1, Default::default);
            self.closed.resize(i + 1, [0; 5]);
            self.resumed.resize(i + 1, false);
        }
    }

    /// A new term: what is in progress is dropped, and each symbol goes on from the
    /// stream again before its next print.
    pub fn new_term(&mut self) {
        for (open, resumed) in self.open.iter_mut().zip(&mut self.resumed) {
            *open = Default::default();
            *resumed = false;
        }
    }

    /// Whether symbol `i` must be resumed from the stream before its next print.
    pub fn needs_resume(&self, i: usize) -> bool {
        !self.resumed.get(i).copied().unwrap_or(false)
    }

    /// Goes on from the last bar the stream holds of each timeframe of symbol `i`
    /// (`last[tf]`), as of `now` (µs): a bar in progress of an earlier period is closed
    /// into `out`.
    pub fn resume(&mut self, i: usize, last: [Option<Bar>; 5], now: u64, out: &mut Vec<Bar>) {
        self.grow(i);
        self.resumed[i] = true;
        for (k, bar) in last.into_iter().enumerate() {
            let Some(mut bar) = bar else { continue };
            if bar.closed {
                self.closed[i][k] = self.closed[i][k].max(bar.t);
                if bar.end() > now + RESTART_SKEW_US {
                    // Closed well before its time (more than two owners' clocks can
                    // differ by): by a session's restart, which this term goes on after.
                    self.session_start = self.session_start.max(whole_second(now));
                }
            } else if bar.end() <= now {
                bar.closed = true;
                self.closed[i][k] = bar.t;
                out.push(bar);
            } else {
                self.open[i][k] = Some(Open {
                    bar,
                    dirty: false,
                    sent_at: 0,
                });
            }
        }
    }

    /// Folds a print of symbol `i` (`symbol`) at `ts` into its bars; bars it closes go
    /// into `out`. A print before the session's start (in the second it started in)
    /// counts from that start.
    pub fn on_print(
        &mut self,
        i: usize,
        symbol: &str,
        ts: u64,
        price: f64,
        size: u64,
        out: &mut Vec<Bar>,
    ) -> Folded {
        self.grow(i);
        let mut folded = Folded::default();
        for tf in Timeframe::ALL {
            let k = tf.index();
            // A print in the rest of the second a session restarted in counts from
            // the session's start.
            let at = ts.max(self.session_start);
            let period = tf.start_of(at);
            let start = period.max(self.session_start);
            if self.closed[i][k] >= start && self.closed[i][k] != 0 {
                folded.refused += 1;
                continue;
            }
            match &mut self.open[i][k] {
                // The bar of this period (which may have started with the session).
                Some(open) if tf.start_of(open.bar.t) == period && open.bar.t <= at => {
                    open.bar.add(price, size);
                    open.dirty = true;
                }
                Some(open) if open.bar.t > start => folded.refused += 1,
                slot => {
                    if let Some(mut done) = slot.take() {
                        done.bar.closed = true;
                        self.closed[i][k] = done.bar.t;
                        out.push(done.bar);
                    }
                    *slot = Some(Open {
                        bar: Bar {
                            t: start,
                            ..Bar::open_with(symbol, tf, ts, price, size)
                        },
                        dirty: true,
                        sent_at: 0,
                    });
                }
            }
        }
        folded
    }

    /// A new trading session begins at `now` (µs): every bar in progress closes (final)
    /// into `out`, and no bar starts before `now` (rounded up to a whole second).
    pub fn restart(&mut self, now: u64, out: &mut Vec<Bar>) {
        for (i, bars) in self.open.iter_mut().enumerate() {
            for (k, slot) in bars.iter_mut().enumerate() {
                if let Some(open) = slot.take() {
                    let mut done = open.bar;
                    done.closed = true;
                    self.closed[i][k] = done.t;
                    out.push(done);
                }
            }
        }
        self.session_start = self.session_start.max(whole_second(now));
    }

    /// At `now` (µs): bars whose time is up close (final) into `out`, and bars in
    /// progress that changed and last went out at least `update_ms` ago go out.
    pub fn close_due(&mut self, now: u64, out: &mut Vec<Bar>) {
        for (i, bars) in self.open.iter_mut().enumerate() {
            for (k, slot) in bars.iter_mut().enumerate() {
                let Some(open) = slot else { continue };
                if open.bar.end() <= now {
                    let mut done = slot.take().expect("matched just above").bar;
                    done.closed = true;
                    self.closed[i][k] = done.t;
                    out.push(done);
                } else if open.dirty && now.saturating_sub(open.sent_at) >= self.update_us {
                    open.dirty = false;
                    open.sent_at = now;
                    out.push(open.bar.clone());
                }
            }
        }
    }
}

/// A closed bar read back whose period ends later than this after now was closed by a
/// session's restart, not by an owner whose clock was ahead.
const RESTART_SKEW_US: u64 = 5_000_000;

/// `us` rounded up to a whole second.
fn whole_second(us: u64) -> u64 {
    us.div_ceil(1_000_000) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_699_920_000_000_000; // a whole day, hour and minute (UTC)
    const S: u64 = 1_000_000;

    fn finals(out: &[Bar], tf: Timeframe) -> Vec<&Bar> {
        out.iter().filter(|b| b.tf == tf && b.closed).collect()
    }

    #[test]
    fn prints_fold_into_bars_that_close_on_a_later_print_or_on_time() {
        let mut bars = Bars::new(250);
        let mut out = Vec::new();
        bars.on_print(0, "AAPL", T0 + 100, 10.0, 100, &mut out);
        bars.on_print(0, "AAPL", T0 + 200_000, 11.0, 50, &mut out);
        bars.on_print(0, "AAPL", T0 + 900_000, 9.0, 10, &mut out);
        assert!(out.is_empty(), "nothing closed yet");
        // A print of the next second closes the 1s bar.
        bars.on_print(0, "AAPL", T0 + S + 5, 9.5, 1, &mut out);
        let s1 = finals(&out, Timeframe::S1);
        assert_eq!(s1.len(), 1);
        let b = s1[0];
        assert_eq!(
            (b.t, b.open, b.high, b.low, b.close),
            (T0, 10.0, 11.0, 9.0, 9.0)
        );
        assert_eq!((b.volume, b.trades), (160, 3));
        out.clear();
        // In progress: the 1s bar of T0+1s and the 1m bar (4 prints) go out once.
        bars.close_due(T0 + S + 10, &mut out);
        let m1: Vec<_> = out.iter().filter(|b| b.tf == Timeframe::M1).collect();
        assert_eq!((m1.len(), m1[0].trades, m1[0].closed), (1, 4, false));
        out.clear();
        bars.close_due(T0 + S + 20, &mut out);
        assert!(out.is_empty(), "unchanged bars do not go out again");
        // The clock closes the 1s bar when its second is over, and the 1m bar after the
        // minute, with no print.
        bars.close_due(T0 + 2 * S, &mut out);
        assert_eq!(finals(&out, Timeframe::S1).len(), 1);
        bars.close_due(T0 + 60 * S, &mut out);
        let m1 = finals(&out, Timeframe::M1);
        assert_eq!((m1.len(), m1[0].volume), (1, 161));
    }

    #[test]
    fn a_print_back_in_time_is_refused_not_folded() {
        let mut bars = Bars::new(250);
        let mut out = Vec::new();
        bars.on_print(0, "AAPL", T0 + 2 * S, 10.0, 1, &mut out);
        let folded = bars.on_print(0, "AAPL", T0 + S, 99.0, 1, &mut out);
        assert_eq!(folded.refused, 1, "only the 1s bar is later than it");
        bars.close_due(T0 + 3 * S, &mut out);
        assert_eq!(finals(&out, Timeframe::S1)[0].high, 10.0);
    }

    #[test]
    fn a_new_owner_goes_on_with_the_bar_in_progress_and_never_closes_one_twice() {
        let mut old = Bars::new(0);
        let mut out = Vec::new();
        old.on_print(0, "AAPL", T0 + 10 * S, 10.0, 100, &mut out);
        old.on_print(0, "AAPL", T0 + 11 * S, 12.0, 100, &mut out);
        old.close_due(T0 + 11 * S + 1, &mut out);
        // What the stream holds last per timeframe: the 1s bar of T0+10s closed, the
        // others in progress. The old owner dies here.
        let mut last: [Option<Bar>; 5] = Default::default();
        for b in &out {
            last[b.tf.index()] = Some(b.clone());
        }
        let mut new = Bars::new(0);
        let mut out = Vec::new();
        assert!(new.needs_resume(0));
        new.resume(0, last, T0 + 11 * S + 500_000, &mut out);
        assert!(out.is_empty());
        new.on_print(0, "AAPL", T0 + 11 * S + 600_000, 8.0, 100, &mut out);
        new.close_due(T0 + 61 * S, &mut out);
        let m1 = finals(&out, Timeframe::M1);
        assert_eq!(m1.len(), 1);
        assert_eq!(
            (m1[0].open, m1[0].high, m1[0].low, m1[0].trades),
            (10.0, 12.0, 8.0, 3),
            "the minute's bar holds the old owner's prints too"
        );
        // A late print of a bar already closed (by the old owner) is refused.
        let mut last: [Option<Bar>; 5] = Default::default();
        last[0] = Some(Bar {
            closed: true,
            ..Bar::open_with("AAPL", Timeframe::S1, T0, 1.0, 1)
        });
        let mut again = Bars::new(0);
        again.resume(0, last, T0 + 500_000, &mut out);
        assert_eq!(
            again
                .on_print(0, "AAPL", T0 + 600_000, 2.0, 1, &mut out)
                .refused,
            1
        );
    }

    #[test]
    fn a_new_session_closes_every_bar_and_starts_its_own_at_the_session_start() {
        let mut bars = Bars::new(0);
        let mut out = Vec::new();
        bars.on_print(0, "AAPL", T0 + 10 * S, 10.0, 100, &mut out);
        // The session restarts 20.5 s into the minute (and the hour, and the day).
        bars.restart(T0 + 20 * S + 500_000, &mut out);
        let closed: Vec<Bar> = out.iter().filter(|b| b.closed).cloned().collect();
        assert_eq!(closed.len(), 5, "every bar in progress closes: {out:?}");
        assert!(
            closed
                .iter()
                .all(|b| b.trades == 1 && b.t == Timeframe::S1.start_of(b.t))
        );
        out.clear();
        // A print in the rest of that second counts from the session's start (21 s).
        let folded = bars.on_print(0, "AAPL", T0 + 20 * S + 700_000, 11.0, 5, &mut out);
        assert_eq!(folded.refused, 0);
        bars.on_print(0, "AAPL", T0 + 30 * S, 12.0, 5, &mut out);
        bars.close_due(T0 + 60 * S, &mut out);
        let m1 = finals(&out, Timeframe::M1);
        assert_eq!(
            (m1[0].t, m1[0].open, m1[0].close, m1[0].trades),
            (T0 + 21 * S, 11.0, 12.0, 2),
            "the session's first minute bar starts with it and ends with the minute"
        );
        assert!(tickmesh_core::bar::check(m1[0]).is_ok());
        // The next minute's bar is the minute's own again; the day's bar goes on.
        bars.on_print(0, "AAPL", T0 + 61 * S, 13.0, 1, &mut out);
        bars.close_due(T0 + 120 * S, &mut out);
        assert_eq!(finals(&out, Timeframe::M1).last().unwrap().t, T0 + 60 * S);
        bars.close_due(T0 + 121 * S, &mut out);
        let day = out.iter().rfind(|b| b.tf == Timeframe::D1).unwrap();
        assert_eq!((day.t, day.closed, day.trades), (T0 + 21 * S, false, 3));

        // A new owner that reads the bars the restart closed goes on with the session.
        let mut last: [Option<Bar>; 5] = Default::default();
        for b in closed {
            let k = b.tf.index();
            last[k] = Some(b);
        }
        let mut new = Bars::new(0);
        let mut out = Vec::new();
        new.resume(0, last, T0 + 25 * S, &mut out);
        let folded = new.on_print(0, "AAPL", T0 + 26 * S, 11.0, 1, &mut out);
        assert_eq!(folded.refused, 0, "none refused as if in a closed bar");
    }
}
