//! The simulated universe: instrument specs and the built-in list of US equities, ETFs
//! and indices at plausible prices.

use serde::{Deserialize, Serialize};
use tickmesh_core::Kind;

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
        if (tickmesh_core::tick::round_to(self.tick_size, self.decimals) - self.tick_size).abs()
            > 1e-12
        {
            return Err(format!(
                "tick_size {} has more than {} decimals",
                self.tick_size, self.decimals
            ));
        }
        if self.kind == Kind::Option {
            return Err("options are listed by [sim.options], not in the universe".into());
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

/// The built-in universe: 48 US equities, 12 ETFs and 5 indices (SPX, NDX, DJI, RUT, VIX)
/// at plausible prices.
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
    const INDICES: &[(&str, f64, f64)] = &[
        ("SPX", 5_912.40, 0.011),
        ("NDX", 21_034.70, 0.014),
        ("DJI", 43_870.35, 0.009),
        ("RUT", 2_326.10, 0.016),
        ("VIX", 16.42, 0.060),
    ];
    let equity = EQUITIES.iter().map(|&(s, p)| (s, p, Kind::Equity, 0.022));
    let etf = ETFS.iter().map(|&(s, p)| (s, p, Kind::Etf, 0.012));
    let index = INDICES.iter().map(|&(s, p, v)| (s, p, Kind::Index, v));
    equity
        .chain(etf)
        .chain(index)
        .map(|(symbol, price, kind, volatility)| InstrumentSpec {
            symbol: symbol.into(),
            kind,
            price,
            volatility,
            ..InstrumentSpec::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_universe_is_big_enough_and_valid() {
        let u = default_universe();
        assert_eq!(u.len(), 65);
        for s in ["AAPL", "MSFT", "NVDA", "TSLA", "SPY", "SPX", "VIX"] {
            assert!(u.iter().any(|i| i.symbol == s), "{s}");
        }
        assert_eq!(u.iter().filter(|i| i.kind == Kind::Index).count(), 5);
        for i in &u {
            i.validate().unwrap();
        }
        let mut names: Vec<_> = u.iter().map(|i| &i.symbol).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), u.len(), "duplicate symbols");
    }

    #[test]
    fn specs_off_their_own_grid_are_refused() {
        let spec = InstrumentSpec {
            symbol: "X".into(),
            tick_size: 0.005,
            decimals: 2,
            ..InstrumentSpec::default()
        };
        assert!(spec.validate().unwrap_err().contains("tick_size"));
        let spec = InstrumentSpec {
            symbol: "X".into(),
            kind: Kind::Option,
            ..InstrumentSpec::default()
        };
        assert!(spec.validate().is_err());
    }
}
