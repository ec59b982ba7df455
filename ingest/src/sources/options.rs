//! Listed options: the expiry calendar, the strike grid, and quotes from Black-Scholes.
//!
//! - Expiries: the next `weeklies` Fridays (today's counts on a Friday), plus the next
//!   `monthlies` third Fridays beyond them. No holiday calendar.
//! - Strikes: `strikes` per expiry, centred on the money when the expiry is listed, on the
//!   grid of [`strike_step`]; they stay put while the underlying moves, as listed strikes do.
//! - Quotes: the model value from [`pricing::black_scholes`] with the smile's volatility,
//!   a spread of about 4 % (at least a tick each side) on the option tick grid ($0.01 below
//!   $3 and $0.05 above, or $0.01 everywhere for the penny-wide ETFs SPY, QQQ and IWM).

use rand::Rng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use tickmesh_core::date::{Date, Weekday};
use tickmesh_core::occ::OptionSymbol;
use tickmesh_core::refdata::Instrument;
use tickmesh_core::tick::{Depth, Kind, Right, State, Tick, round_to};

use super::Print;
use super::pricing::{self, Inputs, Smile};
use super::session::SessionClock;

/// `[sim.options]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionsConfig {
    /// Underlyings with listed options; each must be in the universe. Default AAPL, SPY,
    /// NVDA, TSLA; empty lists no options.
    pub underlyings: Vec<String>,
    /// Weekly expiries listed (the next Fridays). Default 2.
    pub weeklies: u32,
    /// Monthly expiries listed (third Fridays after the weeklies). Default 2.
    pub monthlies: u32,
    /// Strikes per expiry, centred on the money. Default 21.
    pub strikes: u32,
    /// Chains are re-priced every this many ms of wall time; an option ticks only when
    /// its quote changes or it trades. Default 500.
    pub reprice_ms: u64,
    /// Risk-free rate, continuous. Default 0.04.
    pub rate: f64,
    /// Smile skew: how much more volatility the downside carries. Default 0.15.
    pub skew: f64,
    /// Smile curvature: how much both wings lift. Default 0.3.
    pub smile: f64,
    /// Chance that an option trades at a re-pricing. Default 0.05.
    pub trade_probability: f64,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        OptionsConfig {
            underlyings: ["AAPL", "SPY", "NVDA", "TSLA"].map(String::from).to_vec(),
            weeklies: 2,
            monthlies: 2,
            strikes: 21,
            reprice_ms: 500,
            rate: 0.04,
            skew: 0.15,
            smile: 0.3,
            trade_probability: 0.05,
        }
    }
}

/// Most options the simulator lists at once.
pub const MAX_OPTIONS: u64 = 50_000;

impl OptionsConfig {
    /// Options listed at once.
    pub fn count(&self) -> u64 {
        self.underlyings.len() as u64
            * u64::from(self.weeklies + self.monthlies)
            * u64::from(self.strikes)
            * 2
    }

    /// Checks the values; errors name the key below `sim.options`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.count() > MAX_OPTIONS {
            return Err((
                "strikes",
                format!(
                    "{} options in all; the limit is {MAX_OPTIONS}",
                    self.count()
                ),
            ));
        }
        if !self.underlyings.is_empty() && self.weeklies + self.monthlies == 0 {
            return Err(("weeklies", "list at least one expiry".into()));
        }
        if !self.underlyings.is_empty() && self.strikes == 0 {
            return Err(("strikes", "must be at least 1".into()));
        }
        if !(50..=60_000).contains(&self.reprice_ms) {
            return Err((
                "reprice_ms",
                format!("must be 50..=60000, got {}", self.reprice_ms),
            ));
        }
        if !(-0.1..=0.5).contains(&self.rate) {
            return Err(("rate", format!("must be in [-0.1, 0.5], got {}", self.rate)));
        }
        if !(0.0..=1.0).contains(&self.skew) || !(0.0..=2.0).contains(&self.smile) {
            return Err(("skew", "skew must be in [0, 1] and smile in [0, 2]".into()));
        }
        if !(0.0..=1.0).contains(&self.trade_probability) {
            return Err(("trade_probability", "must be in [0, 1]".into()));
        }
        Ok(())
    }
}

/// The listed expiries as of `today`, ascending: Fridays, each moved to the trading day
/// before it when it is one of `holidays` (a Good Friday's options expire on Thursday).
pub fn expiries(today: Date, weeklies: u32, monthlies: u32, holidays: &[Date]) -> Vec<Date> {
    let before_holiday = |mut d: Date| {
        while holidays.contains(&d) || d.is_weekend() {
            d = d.add_days(-1);
        }
        d
    };
    let to_friday = (Weekday::Fri as i64 - today.weekday() as i64).rem_euclid(7);
    let first = today.add_days(to_friday);
    let mut out: Vec<Date> = (0..i64::from(weeklies))
        .map(|k| before_holiday(first.add_days(7 * k)))
        .collect();
    let mut month = today.first_of_month();
    let mut monthly = 0;
    while monthly < monthlies {
        let third = before_holiday(month.third_friday());
        if third >= today && !out.contains(&third) {
            out.push(third);
            monthly += 1;
        }
        month = month.next_month();
    }
    out.retain(|e| *e >= today);
    out.sort();
    out.dedup();
    out
}

/// The strike increment for an underlying at `spot`: $1 for ETFs, $5 for indices; for
/// stocks $0.50 below $25, $1 below $100, $2.50 below $200, $5 below $500, else $10.
pub fn strike_step(spot: f64, kind: Kind) -> f64 {
    match kind {
        Kind::Etf => 1.0,
        Kind::Index => 5.0,
        _ if spot < 25.0 => 0.5,
        _ if spot < 100.0 => 1.0,
        _ if spot < 200.0 => 2.5,
        _ if spot < 500.0 => 5.0,
        _ => 10.0,
    }
}

/// `n` strikes on the `step` grid around `spot` (the nearest in the middle), ascending,
/// all positive.
pub fn strikes(spot: f64, step: f64, n: u32) -> Vec<f64> {
    let atm = (spot / step).round() as i64;
    let below = i64::from(n / 2);
    let lowest = (atm - below).max(1);
    (0..i64::from(n))
        .map(|k| round_to((lowest + k) as f64 * step, 3))
        .collect()
}

/// The option tick size at `price`.
pub fn option_tick(price: f64, penny_everywhere: bool) -> f64 {
    if penny_everywhere || price < 3.0 {
        0.01
    } else {
        0.05
    }
}

/// Underlyings whose options are quoted in pennies at every price.
pub fn penny_everywhere(underlying: &str) -> bool {
    matches!(underlying, "SPY" | "QQQ" | "IWM")
}

/// One listed option and its market.
#[derive(Debug, Clone)]
pub struct OptionState {
    pub symbol: String,
    pub id: OptionSymbol,
    pub underlying: String,
    /// Symbol index of the underlying.
    pub underlying_index: usize,
    expiry_text: String,
    penny: bool,
    quote: Option<(f64, f64)>,
    last: f64,
    last_size: Option<u64>,
    volume: u64,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    prev_close: f64,
    pub expired: bool,
    /// Its trading state: its underlying's.
    state: State,
    /// The print of its last tick, if it printed.
    print: Option<Print>,
}

/// Model inputs shared by a chain at one re-pricing.
#[derive(Debug, Clone, Copy)]
pub struct Market<'a> {
    pub spot: f64,
    pub smile: Smile,
    pub config: &'a OptionsConfig,
    pub clock: &'a SessionClock,
    pub depth: usize,
}

impl OptionState {
    pub fn new(id: OptionSymbol, underlying: &str, underlying_index: usize, m: &Market) -> Self {
        let mut o = OptionState {
            symbol: id.to_string(),
            expiry_text: id.expiry.to_string(),
            penny: penny_everywhere(underlying),
            underlying: underlying.to_string(),
            underlying_index,
            id,
            quote: None,
            last: 0.0,
            last_size: None,
            volume: 0,
            open: None,
            high: None,
            low: None,
            prev_close: 0.0,
            expired: false,
            state: m.clock.phase(),
            print: None,
        };
        let value = o.model(m).price;
        o.prev_close = round_to(
            (value / option_tick(value, o.penny)).round() * option_tick(value, o.penny),
            2,
        );
        o.last = o.prev_close;
        o
    }

    fn model(&self, m: &Market) -> pricing::Greeks {
        let strike = self.id.strike();
        let t = m.clock.years_to_close_of(self.id.expiry);
        pricing::black_scholes(Inputs {
            right: self.id.right,
            spot: m.spot,
            strike,
            t,
            rate: m.config.rate,
            dividend: 0.0,
            vol: m.smile.vol(m.spot, strike, t),
        })
    }

    /// A new trading day: the last price becomes the previous close.
    pub fn roll_day(&mut self) {
        self.prev_close = self.last;
        self.volume = 0;
        self.last_size = None;
        (self.open, self.high, self.low) = (None, None, None);
    }

    /// The print of the tick [`OptionState::reprice`] returned last, once.
    pub fn take_print(&mut self) -> Option<Print> {
        self.print.take()
    }

    /// A tick in `state` (its underlying's new state), re-priced.
    pub fn restate(&mut self, state: State, m: &Market, rng: &mut SmallRng) -> Tick {
        self.state = state;
        self.quote = None;
        self.reprice(m, rng)
            .expect("a quote that was cleared always changes")
    }

    /// Re-prices; returns a tick when the quote changed or the option traded.
    pub fn reprice(&mut self, m: &Market, rng: &mut SmallRng) -> Option<Tick> {
        let g = self.model(m);
        let strike = self.id.strike();
        let vol = m
            .smile
            .vol(m.spot, strike, m.clock.years_to_close_of(self.id.expiry));
        let tick = option_tick(g.price, self.penny);
        let half = (g.price * 0.02).max(tick);
        let bid_ticks = ((g.price - half) / tick).floor().max(0.0) as i64;
        let ask_ticks = (((g.price + half) / tick).ceil() as i64).max(bid_ticks + 1);
        let (bid, ask) = (
            round_to(bid_ticks as f64 * tick, 2),
            round_to(ask_ticks as f64 * tick, 2),
        );
        let changed = self.quote != Some((bid, ask));
        self.quote = Some((bid, ask));
        let traded =
            self.state == State::Open && bid > 0.0 && rng.random_bool(m.config.trade_probability);
        self.print = None;
        if traded {
            let price = if rng.random_bool(0.5) { bid } else { ask };
            let size = rng.random_range(1..=20u64);
            self.print = Some(Print::regular(price, size));
            self.last = price;
            self.last_size = Some(size);
            self.volume += size;
            self.open.get_or_insert(price);
            self.high = Some(self.high.map_or(price, |h| h.max(price)));
            self.low = Some(self.low.map_or(price, |l| l.min(price)));
        }
        if !(changed || traded) {
            return None;
        }
        let bid_size = rng.random_range(1..=100u64);
        let ask_size = rng.random_range(1..=100u64);
        let depth = (m.depth > 0).then(|| {
            let mut d = Depth {
                bids: Vec::with_capacity(m.depth),
                asks: Vec::with_capacity(m.depth),
            };
            for k in 0..m.depth as i64 {
                let size = |rng: &mut SmallRng, first| {
                    if k == 0 {
                        first
                    } else {
                        rng.random_range(1..=200u64)
                    }
                };
                if bid_ticks - k > 0 {
                    let s = size(rng, bid_size);
                    d.bids.push((round_to((bid_ticks - k) as f64 * tick, 2), s));
                }
                let s = size(rng, ask_size);
                d.asks.push((round_to((ask_ticks + k) as f64 * tick, 2), s));
            }
            d
        });
        Some(Tick {
            symbol: self.symbol.clone(),
            kind: Kind::Option,
            last: Some(self.last),
            last_size: self.last_size,
            bid: Some(bid),
            ask: Some(ask),
            bid_size: Some(if bid > 0.0 { bid_size } else { 0 }),
            ask_size: Some(ask_size),
            volume: Some(self.volume),
            open: self.open,
            high: self.high,
            low: self.low,
            prev_close: Some(self.prev_close),
            depth,
            underlying: Some(self.underlying.clone()),
            expiry: Some(self.expiry_text.clone()),
            strike: Some(strike),
            right: Some(self.id.right),
            iv: Some(round_to(vol, 4)),
            delta: Some(round_to(g.delta, 4)),
            gamma: Some(round_to(g.gamma, 5)),
            theta: Some(round_to(g.theta, 4)),
            vega: Some(round_to(g.vega, 4)),
            state: Some(self.state),
            ..Tick::default()
        })
    }

    /// The option's `md_ref` instrument.
    pub fn instrument(&self) -> Instrument {
        Instrument {
            symbol: self.symbol.clone(),
            kind: Kind::Option,
            tick_size: self.penny.then_some(0.01),
            decimals: Some(2),
            lot: Some(1),
            multiplier: Some(100),
            underlying: Some(self.underlying.clone()),
            expiry: Some(self.id.expiry),
            strike: Some(self.id.strike()),
            right: Some(self.id.right),
            feed: None,
        }
    }
}

/// Both rights of every strike of one expiry.
pub fn contracts(root: &str, expiry: Date, strikes: &[f64]) -> Vec<OptionSymbol> {
    strikes
        .iter()
        .flat_map(|&k| {
            [Right::Call, Right::Put]
                .into_iter()
                .filter_map(move |r| OptionSymbol::new(root, expiry, r, k).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn expiries_are_fridays_weeklies_then_monthlies() {
        // Monday 2026-03-02: Fridays 03-06 and 03-13; third Fridays 03-20 and 04-17.
        let e: Vec<String> = expiries(day("2026-03-02"), 2, 2, &[])
            .iter()
            .map(Date::to_string)
            .collect();
        assert_eq!(e, ["2026-03-06", "2026-03-13", "2026-03-20", "2026-04-17"]);
        // A Friday lists itself; a weekly that is also the monthly is not listed twice.
        let e: Vec<String> = expiries(day("2026-03-13"), 2, 2, &[])
            .iter()
            .map(Date::to_string)
            .collect();
        assert_eq!(e, ["2026-03-13", "2026-03-20", "2026-04-17", "2026-05-15"]);
        for d in expiries(day("2026-12-29"), 3, 3, &[]) {
            assert_eq!(d.weekday(), Weekday::Fri);
        }
        // Christmas on a Friday: that week's options expire on Thursday.
        let e: Vec<String> = expiries(day("2026-12-21"), 2, 1, &[day("2026-12-25")])
            .iter()
            .map(Date::to_string)
            .collect();
        assert_eq!(e, ["2026-12-24", "2027-01-01", "2027-01-15"]);
    }

    #[test]
    fn strikes_sit_on_the_grid_around_the_money() {
        assert_eq!(strike_step(228.5, Kind::Equity), 5.0);
        assert_eq!(strike_step(136.4, Kind::Equity), 2.5);
        assert_eq!(strike_step(593.4, Kind::Etf), 1.0);
        let s = strikes(228.5, 5.0, 21);
        assert_eq!(s.len(), 21);
        assert_eq!((s[0], s[10], s[20]), (180.0, 230.0, 280.0));
        let s = strikes(136.4, 2.5, 5);
        assert_eq!(s, [132.5, 135.0, 137.5, 140.0, 142.5]);
        assert!(strikes(1.2, 0.5, 21).iter().all(|&k| k > 0.0));
    }

    #[test]
    fn defaults_list_about_seven_hundred_options() {
        let c = OptionsConfig::default();
        assert_eq!(c.count(), 672);
        c.validate().unwrap();
        let mut big = c.clone();
        big.strikes = 10_000;
        assert_eq!(big.validate().unwrap_err().0, "strikes");
    }

    #[test]
    fn option_quotes_bracket_the_model_on_the_tick_grid() {
        use rand::SeedableRng;
        let config = OptionsConfig::default();
        let clock = SessionClock::new(&Default::default(), day("2026-03-02"));
        let m = Market {
            spot: 228.5,
            smile: Smile {
                atm: 0.35,
                skew: config.skew,
                smile: config.smile,
            },
            config: &config,
            clock: &clock,
            depth: 5,
        };
        let mut rng = SmallRng::seed_from_u64(1);
        for strike in [150.0, 225.0, 230.0, 300.0] {
            for right in [Right::Call, Right::Put] {
                let id = OptionSymbol::new("AAPL", day("2026-03-20"), right, strike).unwrap();
                let mut o = OptionState::new(id, "AAPL", 0, &m);
                let t = o.reprice(&m, &mut rng).expect("a first quote always ticks");
                let (bid, ask) = (t.bid.unwrap(), t.ask.unwrap());
                let value = o.model(&m).price;
                assert!(bid <= value && value <= ask && bid < ask, "{t:?} {value}");
                let grid = option_tick(value, false);
                for p in [bid, ask] {
                    let n = p / grid;
                    assert!((n - n.round()).abs() < 1e-6, "{p} off the {grid} grid");
                }
                let d = t.delta.unwrap();
                assert!(if right == Right::Call {
                    d > 0.0
                } else {
                    d < 0.0
                });
                assert!(t.gamma.unwrap() >= 0.0 && t.vega.unwrap() >= 0.0);
                assert!(t.theta.unwrap() <= 0.0 || right == Right::Put);
                let depth = t.depth.unwrap();
                assert!(depth.asks.windows(2).all(|w| w[0].0 < w[1].0));
                assert!(depth.bids.windows(2).all(|w| w[0].0 > w[1].0));
                assert_eq!(depth.asks.len(), 5);
                let before = o.volume;
                let again = o.reprice(&m, &mut rng);
                assert_eq!(
                    again.is_some(),
                    o.volume > before,
                    "an unchanged quote ticks only on a trade"
                );
            }
        }
    }
}
