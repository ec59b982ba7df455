//! The market simulator: a random walk over a universe of instruments.
//!
//! Each instrument keeps a mid price on its tick size; every tick moves it by a small
//! random step, quotes a spread of one to a few ticks around it and prints a trade at the
//! bid or the ask. Deterministic for a given seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tickmesh_core::tick::round_to;
use tickmesh_core::{Kind, Tick};

/// One instrument of the simulated universe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstrumentSpec {
    pub symbol: String,
    pub kind: Kind,
    /// Starting price (also the previous close).
    pub price: f64,
    /// Price increment.
    pub tick_size: f64,
    /// Decimals that prices are rounded to.
    pub decimals: u32,
    /// Round lot: sizes are multiples of it.
    pub lot: u64,
    /// Daily volatility, as a fraction of the price (0.02 = 2 %).
    pub volatility: f64,
}

impl Default for InstrumentSpec {
    fn default() -> Self {
        InstrumentSpec {
            symbol: String::new(),
            kind: Kind::Equity,
            price: 100.0,
            tick_size: 0.01,
            decimals: 2,
            lot: 100,
            volatility: 0.02,
        }
    }
}

impl InstrumentSpec {
    pub fn validate(&self) -> Result<(), String> {
        tickmesh_core::symbol::validate(&self.symbol)
            .map_err(|e| format!("symbol {:?}: {e}", self.symbol))?;
        if !(self.price.is_finite() && self.price > 0.0) {
            return Err(format!("price must be positive, got {}", self.price));
        }
        if !(self.tick_size.is_finite() && self.tick_size > 0.0 && self.tick_size < self.price) {
            return Err(format!(
                "tick_size must be in (0, price), got {}",
                self.tick_size
            ));
        }
        if self.decimals > 8 {
            return Err(format!("decimals must be at most 8, got {}", self.decimals));
        }
        if self.lot == 0 {
            return Err("lot must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.volatility) {
            return Err(format!(
                "volatility must be in [0, 1], got {}",
                self.volatility
            ));
        }
        Ok(())
    }
}

/// The built-in universe: US equities and ETFs at plausible prices.
pub fn default_universe() -> Vec<InstrumentSpec> {
    const EQUITIES: &[(&str, f64)] = &[
        ("AAPL", 228.50),
        ("MSFT", 415.20),
        ("NVDA", 136.40),
        ("TSLA", 248.90),
        ("AMZN", 197.30),
        ("GOOGL", 176.80),
        ("META", 585.10),
        ("BRK-B", 462.70),
        ("AVGO", 171.60),
        ("JPM", 224.30),
        ("LLY", 812.40),
        ("V", 289.50),
        ("UNH", 561.20),
        ("XOM", 118.70),
        ("MA", 498.30),
        ("JNJ", 156.40),
        ("PG", 168.90),
        ("HD", 402.60),
        ("COST", 905.80),
        ("ABBV", 176.20),
        ("MRK", 101.30),
        ("CVX", 151.40),
        ("KO", 62.80),
        ("PEP", 158.70),
        ("ADBE", 506.90),
        ("CRM", 331.50),
        ("NFLX", 771.60),
        ("AMD", 139.80),
        ("INTC", 23.40),
        ("CSCO", 58.30),
        ("ORCL", 176.90),
        ("BAC", 44.60),
        ("WMT", 84.90),
        ("DIS", 113.20),
        ("NKE", 77.40),
        ("PFE", 26.10),
        ("T", 22.70),
        ("VZ", 41.80),
        ("BA", 155.30),
        ("CAT", 384.60),
        ("GS", 574.20),
        ("IBM", 212.80),
        ("QCOM", 158.40),
        ("TXN", 199.70),
        ("UBER", 71.90),
        ("PLTR", 61.30),
        ("COIN", 298.40),
        ("SHOP", 109.60),
    ];
    const ETFS: &[(&str, f64)] = &[
        ("SPY", 593.40),
        ("QQQ", 508.20),
        ("IWM", 232.60),
        ("DIA", 436.10),
        ("XLF", 49.30),
        ("XLE", 92.40),
        ("XLK", 233.80),
        ("GLD", 246.70),
        ("TLT", 91.20),
        ("EEM", 43.80),
        ("HYG", 79.60),
        ("VTI", 295.30),
    ];
    let equity = EQUITIES.iter().map(|&(s, p)| (s, p, Kind::Equity, 0.022));
    let etf = ETFS.iter().map(|&(s, p)| (s, p, Kind::Etf, 0.012));
    equity
        .chain(etf)
        .map(|(symbol, price, kind, volatility)| InstrumentSpec {
            symbol: symbol.into(),
            kind,
            price,
            volatility,
            ..InstrumentSpec::default()
        })
        .collect()
}

/// Per-instrument state of the walk.
#[derive(Debug, Clone)]
struct State {
    spec: InstrumentSpec,
    /// Mid in ticks (an integer count of tick sizes), so prices always sit on the grid.
    mid_ticks: i64,
    open: f64,
    high: f64,
    low: f64,
    volume: u64,
}

/// The simulator. `next_tick` picks an instrument and moves it.
#[derive(Debug)]
pub struct Simulator {
    rng: SmallRng,
    states: Vec<State>,
}

impl Simulator {
    /// A simulator over `universe` (the built-in one when empty).
    pub fn new(universe: &[InstrumentSpec], seed: u64) -> Self {
        let specs = if universe.is_empty() {
            default_universe()
        } else {
            universe.to_vec()
        };
        let states = specs
            .into_iter()
            .map(|spec| {
                let price = round_to(spec.price, spec.decimals);
                State {
                    mid_ticks: (spec.price / spec.tick_size).round() as i64,
                    open: price,
                    high: price,
                    low: price,
                    volume: 0,
                    spec,
                }
            })
            .collect();
        Simulator {
            rng: SmallRng::seed_from_u64(seed),
            states,
        }
    }

    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.states.iter().map(|s| s.spec.symbol.as_str())
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The next tick: (index of the instrument, tick without seq, epoch or ts).
    pub fn next_tick(&mut self) -> (usize, Tick) {
        let i = self.rng.random_range(0..self.states.len());
        let rng = &mut self.rng;
        let s = &mut self.states[i];
        let spec = &s.spec;
        // A step of the walk: volatility scaled to roughly 10k ticks a day per symbol,
        // uniform with the matching standard deviation (sqrt(3) · sigma).
        let sigma = spec.volatility / 100.0;
        let step = rng.random_range(-1.0..1.0) * sigma * 3f64.sqrt();
        let mid = s.mid_ticks as f64 * spec.tick_size * (1.0 + step);
        s.mid_ticks = ((mid / spec.tick_size).round() as i64).max(2);
        let half_spread = rng.random_range(1..=3i64);
        let bid_ticks = (s.mid_ticks - half_spread / 2 - half_spread % 2).max(1);
        let ask_ticks = bid_ticks + half_spread;
        let price = |ticks: i64| round_to(ticks as f64 * spec.tick_size, spec.decimals);
        let (bid, ask) = (price(bid_ticks), price(ask_ticks));
        let last = if rng.random_bool(0.5) { bid } else { ask };
        let last_size = spec.lot * rng.random_range(1..=10);
        s.volume += last_size;
        s.high = s.high.max(last);
        s.low = s.low.min(last);
        let tick = Tick {
            symbol: spec.symbol.clone(),
            kind: spec.kind,
            last: Some(last),
            last_size: Some(last_size),
            bid: Some(bid),
            ask: Some(ask),
            bid_size: Some(spec.lot * rng.random_range(1..=20)),
            ask_size: Some(spec.lot * rng.random_range(1..=20)),
            volume: Some(s.volume),
            open: Some(s.open),
            high: Some(s.high),
            low: Some(s.low),
            prev_close: Some(round_to(spec.price, spec.decimals)),
            ..Tick::default()
        };
        (i, tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_universe_is_big_enough_and_valid() {
        let u = default_universe();
        assert!(u.len() >= 50, "{}", u.len());
        for s in ["AAPL", "MSFT", "NVDA", "TSLA", "SPY"] {
            assert!(u.iter().any(|i| i.symbol == s), "{s}");
        }
        for i in &u {
            i.validate().unwrap();
        }
        let mut names: Vec<_> = u.iter().map(|i| &i.symbol).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), u.len(), "duplicate symbols");
    }

    #[test]
    fn same_seed_same_ticks() {
        let mut a = Simulator::new(&[], 42);
        let mut b = Simulator::new(&[], 42);
        for _ in 0..1000 {
            assert_eq!(a.next_tick(), b.next_tick());
        }
    }

    #[test]
    fn quotes_are_sane_and_on_the_grid() {
        let mut sim = Simulator::new(&[], 7);
        for _ in 0..20_000 {
            let (_, t) = sim.next_tick();
            let (bid, ask, last) = (t.bid.unwrap(), t.ask.unwrap(), t.last.unwrap());
            assert!(bid > 0.0 && bid < ask, "{t:?}");
            assert!(last == bid || last == ask);
            assert!(t.low.unwrap() <= last && last <= t.high.unwrap());
            for p in [bid, ask] {
                let cents = p * 100.0;
                assert!((cents - cents.round()).abs() < 1e-6, "{p} off the grid");
                assert!(
                    p.to_string().split('.').nth(1).is_none_or(|d| d.len() <= 2),
                    "{p}"
                );
            }
            assert_eq!(t.last_size.unwrap() % 100, 0);
        }
    }

    #[test]
    fn prices_stay_plausible_after_a_long_walk() {
        let mut sim = Simulator::new(&[], 3);
        let mut last_aapl = None;
        for _ in 0..200_000 {
            let (_, t) = sim.next_tick();
            if t.symbol == "AAPL" {
                last_aapl = t.last;
            }
        }
        let p = last_aapl.unwrap();
        assert!((100.0..500.0).contains(&p), "AAPL wandered to {p}");
    }
}
