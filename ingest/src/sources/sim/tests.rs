use std::collections::HashMap;

use tickmesh_core::occ::OptionSymbol;
use tickmesh_core::symbol;

use super::*;

fn day(s: &str) -> Date {
    Date::parse(s).expect("test dates are valid")
}

fn sim_with(seed: u64, session: &SessionConfig, options: &OptionsConfig, rate: f64) -> Simulator {
    Simulator::new(&SimParams {
        seed,
        ticks_per_sec: rate,
        universe: &[],
        session,
        options,
        depth: 5,
        today: day("2026-03-02"),
    })
}

fn sim(seed: u64) -> Simulator {
    sim_with(
        seed,
        &SessionConfig::default(),
        &OptionsConfig::default(),
        2000.0,
    )
}

#[test]
fn same_seed_same_ticks_options_included() {
    let mut a = sim(42);
    let mut b = sim(42);
    let mut options = 0;
    for _ in 0..30_000 {
        let (ia, ta) = a.next_tick();
        let (ib, tb) = b.next_tick();
        assert_eq!((ia, &ta), (ib, &tb));
        options += usize::from(ta.kind == Kind::Option);
    }
    assert!(options > 1_000, "only {options} option ticks");
    let mut c = sim(43);
    let differs = (0..100).any(|_| a.next_tick() != c.next_tick());
    assert!(differs, "another seed gives other ticks");
}

#[test]
fn listed_quotes_are_sane_on_the_grid_with_depth() {
    let mut s = sim(7);
    let mut seen_index = false;
    for _ in 0..40_000 {
        let (i, t) = s.next_tick();
        assert_eq!(s.symbol(i), t.symbol);
        match t.kind {
            Kind::Option => continue,
            Kind::Index => {
                seen_index = true;
                assert!(t.bid.is_none() && t.bid_size.is_none() && t.volume.is_none());
                assert!(t.depth.is_none());
                let (last, low, high) = (t.last.unwrap(), t.low.unwrap(), t.high.unwrap());
                assert!(low <= last && last <= high, "{t:?}");
                assert!(t.prev_close.is_some() && t.open.is_some());
                continue;
            }
            _ => {}
        }
        let (bid, ask, last) = (t.bid.unwrap(), t.ask.unwrap(), t.last.unwrap());
        assert!(bid > 0.0 && bid < ask, "{t:?}");
        assert!(t.low.unwrap() <= last && last <= t.high.unwrap());
        for p in [bid, ask, last] {
            let cents = p * 100.0;
            assert!((cents - cents.round()).abs() < 1e-6, "{p} off the grid");
            assert!(
                p.to_string().split('.').nth(1).is_none_or(|d| d.len() <= 2),
                "{p}"
            );
        }
        assert_eq!(t.bid_size.unwrap() % 100, 0);
        let d = t.depth.as_ref().unwrap();
        assert_eq!((d.bids.len(), d.asks.len()), (5, 5));
        assert_eq!(d.bids[0], (bid, t.bid_size.unwrap()));
        assert_eq!(d.asks[0], (ask, t.ask_size.unwrap()));
        assert!(d.bids.windows(2).all(|w| w[0].0 > w[1].0), "best first");
        assert!(d.asks.windows(2).all(|w| w[0].0 < w[1].0), "best first");
    }
    assert!(seen_index);
}

#[test]
fn prices_stay_plausible_after_a_long_walk() {
    let mut s = sim(3);
    let mut last = HashMap::new();
    for _ in 0..300_000 {
        let (_, t) = s.next_tick();
        last.insert(t.symbol.clone(), t.last.unwrap_or_default());
    }
    let aapl = last["AAPL"];
    assert!((150.0..350.0).contains(&aapl), "AAPL wandered to {aapl}");
    assert!(last["SPX"] > 4_000.0, "{}", last["SPX"]);
}

#[test]
fn the_open_is_busier_than_later() {
    let session = SessionConfig {
        speed: 60.0,
        ..SessionConfig::default()
    };
    let none = OptionsConfig {
        underlyings: vec![],
        ..OptionsConfig::default()
    };
    let mut s = sim_with(1, &session, &none, 1000.0);
    let mut count_until = |wall: f64| {
        let mut n = 0;
        while s.next_due() < wall {
            s.next_tick();
            n += 1;
        }
        n
    };
    let first_second = count_until(1.0);
    count_until(60.0);
    let later_second = count_until(61.0);
    // 4× at the open, decaying over 300 simulated seconds (5 wall seconds here).
    assert!((3_300..=4_000).contains(&first_second), "{first_second}");
    assert!((990..=1_010).contains(&later_second), "{later_second}");
}

#[test]
fn default_chains_list_valid_occ_symbols_with_greeks() {
    let mut s = sim(5);
    assert_eq!(s.live_options(), 672);
    let refs = s
        .take_ref_update()
        .expect("the start publishes reference data");
    assert!(s.take_ref_update().is_none());
    assert_eq!(refs.chains.len(), 4);
    assert_eq!(refs.instruments.len(), 65 + 672);
    let aapl = refs.chains.iter().find(|c| c.underlying == "AAPL").unwrap();
    let expiries: Vec<String> = aapl.expiries.iter().map(|e| e.expiry.to_string()).collect();
    assert_eq!(
        expiries,
        ["2026-03-06", "2026-03-13", "2026-03-20", "2026-04-17"]
    );
    assert!(aapl.expiries.iter().all(|e| e.strikes.len() == 21));
    for i in refs.instruments.iter().filter(|i| i.kind == Kind::Option) {
        symbol::validate(&i.symbol).unwrap();
        let o = OptionSymbol::parse(&i.symbol).unwrap();
        assert_eq!(Some(o.strike()), i.strike);
        assert_eq!(Some(o.expiry), i.expiry);
    }
    let mut got = 0;
    for _ in 0..5_000 {
        let (i, t) = s.next_tick();
        if t.kind != Kind::Option {
            continue;
        }
        got += 1;
        let o = OptionSymbol::parse(s.symbol(i)).unwrap();
        assert_eq!(t.strike, Some(o.strike()));
        assert_eq!(t.expiry.as_deref(), Some(o.expiry.to_string().as_str()));
        assert_eq!(t.right, Some(o.right));
        assert!(t.underlying.is_some());
        for g in [t.iv, t.delta, t.gamma, t.theta, t.vega] {
            assert!(g.is_some_and(f64::is_finite), "{t:?}");
        }
        assert!(t.bid.unwrap() < t.ask.unwrap());
    }
    assert!(
        got >= 672,
        "every option quotes at the first re-pricing, got {got}"
    );
}

#[test]
fn the_close_rolls_the_day_and_the_chains() {
    // Friday 2026-03-06 near the close: its weekly expires, Monday lists a new one.
    let session = SessionConfig {
        date: Some(day("2026-03-06")),
        start: Some("15:59:58".into()),
        ..SessionConfig::default()
    };
    let mut s = sim_with(9, &session, &OptionsConfig::default(), 2000.0);
    let start = s.take_ref_update().unwrap();
    let mut last_aapl = None;
    while s.market_time().0 == day("2026-03-06") {
        let (_, t) = s.next_tick();
        if t.symbol == "AAPL" {
            last_aapl = t.last;
        }
    }
    assert_eq!(s.market_time().0, day("2026-03-09"));
    let rolled = s
        .take_ref_update()
        .expect("a roll publishes reference data");
    assert_eq!(rolled.removed.len(), 4 * 21 * 2);
    assert!(rolled.removed.iter().all(|r| r.contains("260306")));
    let aapl = rolled
        .chains
        .iter()
        .find(|c| c.underlying == "AAPL")
        .unwrap();
    assert_eq!(aapl.expiries.len(), 4);
    assert_eq!(aapl.expiries[0].expiry, day("2026-03-13"));
    assert!(start.chains[0].expiries[0].expiry < aapl.expiries[0].expiry);
    assert_eq!(s.live_options(), 672);
    // The close's ticks come first (closed, at yesterday's last), then the new day's.
    let t = loop {
        let (_, t) = s.next_tick();
        if t.symbol == "AAPL" && t.state != Some(State::Closed) {
            break t;
        }
        if t.symbol == "AAPL" {
            assert_eq!(t.last, last_aapl, "the close is at the last print");
        }
    };
    assert_eq!(t.state, Some(State::PreOpen));
    assert_eq!(t.prev_close, last_aapl, "yesterday's last is today's close");
    assert_eq!(t.last, last_aapl, "nothing traded yet today");
}

/// A whole day at 600× with frequent halts: pre-open without trades, every instrument
/// opening, single names halting (quiet while halted, options following), the close, and
/// the next day's pre-open.
#[test]
fn a_trading_day_opens_halts_names_and_closes() {
    let session = SessionConfig {
        start: Some("09:29:00".into()),
        speed: 600.0,
        pre_open_s: 30.0,
        halts_per_hour: 60.0,
        halt_s: 120.0,
        ..SessionConfig::default()
    };
    assert!(session.validate().is_ok());
    let options = OptionsConfig::default();
    let mut s = sim_with(3, &session, &options, 2000.0);
    let listed = s.listed.len();
    let mut state: HashMap<String, State> = HashMap::new();
    let mut halted_at: HashMap<String, f64> = HashMap::new();
    let mut last_pre_open: HashMap<String, (f64, u64)> = HashMap::new();
    let (mut halts, mut option_halts, mut closed, mut reopened) = (0, 0, 0, 0);
    let day_one = s.market_time().0;
    for _ in 0..400_000 {
        let (i, t) = s.next_tick();
        let (date, secs) = s.market_time();
        let now = state.get(&t.symbol).copied();
        let new = t.state.expect("every simulated tick has a state");
        if t.kind == Kind::Index {
            assert_ne!(new, State::Halted, "{} is an index", t.symbol);
        }
        match new {
            State::PreOpen => {
                // Nothing trades before the open: last and volume stand still.
                let seen = (t.last.unwrap_or(0.0), t.volume.unwrap_or(0));
                if now != Some(State::PreOpen) {
                    last_pre_open.remove(&t.symbol);
                    assert!(t.open.is_none(), "{}: an open before the open", t.symbol);
                }
                if let Some(before) = last_pre_open.insert(t.symbol.clone(), seen) {
                    assert_eq!(before, seen, "{} traded in pre-open", t.symbol);
                }
            }
            State::Halted => {
                assert_ne!(now, Some(State::Halted), "{}: two halted ticks", t.symbol);
                if i < listed {
                    halts += 1;
                    halted_at.insert(t.symbol.clone(), s.trading_secs);
                } else {
                    option_halts += 1;
                }
            }
            State::Open if now == Some(State::Halted) && i < listed => {
                let out = s.trading_secs - halted_at[&t.symbol];
                assert!((out - 120.0).abs() < 2.0, "{} halted {out} s", t.symbol);
                reopened += 1;
            }
            State::Closed => closed += 1,
            State::Open => {}
        }
        if now == Some(State::Halted) && new != State::Halted {
            halted_at.remove(&t.symbol);
        }
        if now == Some(State::Closed) {
            assert_eq!(new, State::PreOpen, "{}: the day after the close", t.symbol);
        }
        if date != day_one && secs > session_open() + 60.0 {
            break;
        }
        state.insert(t.symbol.clone(), new);
    }
    assert!(s.market_time().0 != day_one, "the day never closed");
    assert!(
        halts >= 3 && reopened >= 3,
        "{halts} halts, {reopened} resumed"
    );
    assert!(
        option_halts > 0,
        "no option followed its underlying into a halt"
    );
    assert!(
        closed >= listed,
        "{closed} closed ticks for {listed} listed"
    );
}

fn session_open() -> f64 {
    super::super::session::parse_time("09:30").unwrap()
}
