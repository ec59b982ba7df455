//! The market simulator: equities, ETFs and indices on a random walk, and option chains
//! priced off them.
//!
//! - Each listed instrument keeps a continuous mid; every tick moves it by a step with the
//!   instrument's daily volatility scaled to the simulated time since its last tick, then
//!   quotes a one-to-three-tick spread around it on the tick grid, with sizes in round
//!   lots and top-of-book depth. About 40 % of ticks print a trade at the bid or ask.
//!   Indices carry only a value (`last`) with open, high, low and previous close.
//! - Time comes from the [`SessionClock`]: `ticks_per_sec` is the rate of listed ticks per
//!   wall second, multiplied by the clock's activity (bursting at the open). Each session
//!   opens with a gap from the previous close; at the close the next day begins, expired
//!   options are delisted and new expiries listed (see [`Simulator::take_ref_update`]).
//! - Option chains are re-priced every `options.reprice_ms` (see [`super::options`]).
//! - Every tick carries the instrument's trading `state`. Before the open quotes move but
//!   nothing trades; at the open every listed instrument ticks `open`; at the close every
//!   instrument ticks `closed`, and the next day starts in pre-open. A volatility halt
//!   (`session.halts_per_hour`) stops one name: one `halted` tick, nothing while it lasts,
//!   then an `open` tick that reprices by the time it was out. Options follow their
//!   underlying's state (one tick at each change; no trades unless open).
//!
//! Deterministic for a given seed and configuration: the sequence of ticks depends on
//! nothing else (the wall clock only decides how many are due at once).

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use tickmesh_core::date::Date;
use tickmesh_core::refdata::{self, Chain, ChainExpiry, Instrument};
use tickmesh_core::tick::{Kind, State, Tick, round_to};

use super::Print;
use super::options::{self, Market, OptionState, OptionsConfig};
use super::pricing::Smile;
use super::session::{SessionClock, SessionConfig};
pub use super::universe::{InstrumentSpec, default_universe};
pub use crate::refdata::RefUpdate;

/// What the simulator needs from the config.
#[derive(Debug, Clone)]
pub struct SimParams<'a> {
    pub seed: u64,
    pub ticks_per_sec: f64,
    pub universe: &'a [InstrumentSpec],
    pub session: &'a SessionConfig,
    pub options: &'a OptionsConfig,
    /// Depth levels per side; 0 for none.
    pub depth: usize,
    /// The date used when `session.date` is not set.
    pub today: Date,
}

/// A uniform draw in [0, 1) from 53 random bits.
fn uniform(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Prices on an instrument's tick grid, printing short.
#[derive(Debug, Clone, Copy)]
struct Grid {
    tick_size: f64,
    decimals: u32,
    /// Ticks per unit of price when that is a whole number (0.01 → 100): then a price is
    /// `ticks / per_unit`, an integer over an integer, which is already the nearest double
    /// to the decimal, with no rounding call.
    per_unit: Option<f64>,
}

impl Grid {
    fn new(tick_size: f64, decimals: u32) -> Self {
        let per_unit = (1.0 / tick_size).round();
        let whole = (per_unit * tick_size - 1.0).abs() < 1e-9 && per_unit < 1e9;
        Grid {
            tick_size,
            decimals,
            per_unit: whole.then_some(per_unit),
        }
    }

    fn price(self, ticks: i64) -> f64 {
        match self.per_unit {
            Some(n) => ticks as f64 / n,
            None => round_to(ticks as f64 * self.tick_size, self.decimals),
        }
    }
}

/// A listed (non-option) instrument's walk.
#[derive(Debug, Clone)]
struct Listed {
    spec: InstrumentSpec,
    grid: Grid,
    mid: f64,
    last: f64,
    last_size: u64,
    volume: u64,
    open: f64,
    high: f64,
    low: f64,
    prev_close: f64,
    /// Simulated trading seconds at its last move.
    moved_at: f64,
    /// Halted until this many simulated trading seconds.
    halted_until: Option<f64>,
}

/// The options of one underlying.
#[derive(Debug, Clone)]
struct ChainState {
    underlying: usize,
    root: String,
    expiries: Vec<(Date, Vec<f64>)>,
    /// Its live options, as indices into `Simulator::opts`.
    members: Vec<usize>,
    atm_vol: f64,
}

#[derive(Debug)]
pub struct Simulator {
    rng: SmallRng,
    clock: SessionClock,
    /// Simulated trading seconds so far (excludes the nights).
    trading_secs: f64,
    rate: f64,
    depth: usize,
    options: OptionsConfig,
    /// Wall seconds since the start at which the next listed tick is due.
    at: f64,
    reprice_at: f64,
    reprice_every: f64,
    /// Listed instruments: symbol index `i < listed.len()`.
    listed: Vec<Listed>,
    /// Options ever listed: symbol index `listed.len() + k`.
    opts: Vec<OptionState>,
    chains: Vec<ChainState>,
    pending: VecDeque<(usize, Tick, Option<Print>)>,
    /// The print of the tick returned last, if it printed.
    print: Option<Print>,
    ref_update: Option<RefUpdate>,
    /// The day rolled (see [`Simulator::take_day_rolled`]).
    day_rolled: bool,
    /// The market's phase: pre-open or open (an instrument may be halted within it).
    phase: State,
    /// Mean simulated seconds between halts (infinite: none).
    halt_every: f64,
    halt_s: f64,
    /// Simulated trading seconds at which the next halt starts.
    next_halt: f64,
    /// Listed instruments halted now.
    halted: Vec<usize>,
}

impl Simulator {
    /// A simulator over `p.universe` (the built-in one when empty). Option underlyings
    /// missing from the universe are skipped (the config refuses them beforehand).
    pub fn new(p: &SimParams) -> Self {
        let specs = if p.universe.is_empty() {
            default_universe()
        } else {
            p.universe.to_vec()
        };
        let mut sim = Simulator {
            rng: SmallRng::seed_from_u64(p.seed),
            clock: SessionClock::new(p.session, p.today),
            trading_secs: 0.0,
            rate: p.ticks_per_sec.max(1.0),
            depth: p.depth,
            options: p.options.clone(),
            at: 0.0,
            reprice_at: 0.0,
            reprice_every: p.options.reprice_ms as f64 / 1000.0,
            listed: Vec::with_capacity(specs.len()),
            opts: Vec::new(),
            chains: Vec::new(),
            pending: VecDeque::new(),
            print: None,
            ref_update: None,
            day_rolled: false,
            phase: SessionClock::new(p.session, p.today).phase(),
            halt_every: match p.session.halts_per_hour > 0.0 {
                true => 3600.0 / p.session.halts_per_hour,
                false => f64::INFINITY,
            },
            halt_s: p.session.halt_s,
            next_halt: f64::INFINITY,
            halted: Vec::new(),
        };
        sim.next_halt = sim.draw_halt_gap();
        for spec in specs {
            let price = spec.price;
            let mut l = Listed {
                mid: price,
                last: price,
                last_size: 0,
                volume: 0,
                open: price,
                high: price,
                low: price,
                prev_close: round_to(price, spec.decimals),
                moved_at: 0.0,
                halted_until: None,
                grid: Grid::new(spec.tick_size, spec.decimals),
                spec,
            };
            overnight(&mut l, &mut sim.rng);
            if sim.phase == State::Open {
                opening_print(&mut l, &mut sim.rng);
            }
            sim.listed.push(l);
        }
        for name in &p.options.underlyings {
            if let Some(i) = sim.listed.iter().position(|l| &l.spec.symbol == name) {
                let l = &sim.listed[i];
                sim.chains.push(ChainState {
                    underlying: i,
                    root: refdata::occ_root(name),
                    expiries: Vec::new(),
                    members: Vec::new(),
                    atm_vol: l.spec.volatility * 252f64.sqrt(),
                });
            }
        }
        sim.list_expiries();
        sim.ref_update = Some(sim.reference());
        sim
    }

    /// Every symbol ever listed, by index (delisted options keep their index).
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        let listed = self.listed.iter().map(|l| l.spec.symbol.as_str());
        listed.chain(self.opts.iter().map(|o| o.symbol.as_str()))
    }

    /// The symbol of index `i` (below [`Simulator::len`]).
    pub fn symbol(&self, i: usize) -> &str {
        match i.checked_sub(self.listed.len()) {
            None => &self.listed[i].spec.symbol,
            Some(k) => &self.opts[k].symbol,
        }
    }

    pub fn len(&self) -> usize {
        self.listed.len() + self.opts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Options listed now.
    pub fn live_options(&self) -> usize {
        self.chains.iter().map(|c| c.members.len()).sum()
    }

    /// The simulated date and seconds since midnight.
    pub fn market_time(&self) -> (Date, f64) {
        (self.clock.date(), self.clock.secs())
    }

    /// Wall seconds since the start at which the next tick is due.
    pub fn next_due(&self) -> f64 {
        if self.pending.is_empty() {
            self.at.min(self.reprice_at)
        } else {
            0.0
        }
    }

    /// Jumps to `wall` seconds after a stall, skipping the ticks in between.
    pub fn skip_to(&mut self, wall: f64) {
        if wall > self.at {
            self.advance_clock(wall - self.at);
            self.at = wall;
        }
        self.reprice_at = self.reprice_at.max(wall);
    }

    /// The print of the tick returned last (by [`Simulator::next_tick_into`]), once.
    pub fn take_print(&mut self) -> Option<Print> {
        self.print.take()
    }

    /// Reference data changed since the last call (the whole set at the start).
    pub fn take_ref_update(&mut self) -> Option<RefUpdate> {
        self.ref_update.take()
    }

    /// Whether the trading day rolled since this was last asked: a new session begins,
    /// and bars restart.
    pub fn take_day_rolled(&mut self) -> bool {
        std::mem::take(&mut self.day_rolled)
    }

    /// The next tick: (symbol index, tick without seq, epoch or ts).
    pub fn next_tick(&mut self) -> (usize, Tick) {
        let mut tick = Tick::default();
        let i = self.next_tick_into(&mut tick);
        (i, tick)
    }

    /// [`Simulator::next_tick`] into `out`, reusing its allocations; returns the index.
    pub fn next_tick_into(&mut self, out: &mut Tick) -> usize {
        loop {
            if let Some((i, t, print)) = self.pending.pop_front() {
                *out = t;
                self.print = print;
                return i;
            }
            if self.reprice_at <= self.at && !self.chains.is_empty() {
                self.reprice();
                self.reprice_at += self.reprice_every;
                continue;
            }
            self.reprice_at = self.reprice_at.max(self.at);
            if let Some(i) = self.halt_due() {
                return self.halt_or_resume(i, out);
            }
            let i = self.rng.random_range(0..self.listed.len());
            let dt = 1.0 / (self.rate * self.clock.activity());
            if self.listed[i].halted_until.is_some() {
                // A halted name stays quiet: its turn passes.
                self.at += dt;
                self.advance_clock(dt);
                continue;
            }
            self.print = self.listed_tick(i, out, self.phase, true);
            self.at += dt;
            self.advance_clock(dt);
            return i;
        }
    }

    /// Simulated seconds to the next halt: exponential with the configured mean.
    fn draw_halt_gap(&mut self) -> f64 {
        let u = uniform(self.rng.next_u64());
        self.trading_secs - self.halt_every * (1.0 - u).ln()
    }

    /// A listed instrument whose halt ends now, or one that halts now.
    fn halt_due(&mut self) -> Option<usize> {
        let now = self.trading_secs;
        if let Some(k) = self
            .halted
            .iter()
            .position(|&i| self.listed[i].halted_until.is_some_and(|t| t <= now))
        {
            return Some(self.halted.swap_remove(k));
        }
        if self.phase != State::Open || now < self.next_halt {
            return None;
        }
        self.next_halt = self.draw_halt_gap();
        let i = self.rng.random_range(0..self.listed.len());
        let l = &mut self.listed[i];
        if l.spec.kind == Kind::Index || l.halted_until.is_some() {
            return None;
        }
        l.halted_until = Some(now + self.halt_s);
        self.halted.push(i);
        Some(i)
    }

    /// The tick of a halt starting (`halted`, no trade) or ending (`open`, repriced by
    /// the time it was out), and a tick of each of its options in the new state.
    fn halt_or_resume(&mut self, i: usize, out: &mut Tick) -> usize {
        let state = match self.halted.contains(&i) {
            true => State::Halted,
            false => {
                self.listed[i].halted_until = None;
                self.phase
            }
        };
        self.print = self.listed_tick(i, out, state, true);
        self.restate_options(Some(i), state);
        i
    }

    /// A tick of every live option (of `underlying` only, when given) in `state`.
    fn restate_options(&mut self, underlying: Option<usize>, state: State) {
        for c in 0..self.chains.len() {
            let chain = &self.chains[c];
            if underlying.is_some_and(|u| u != chain.underlying) {
                continue;
            }
            let market = market(&self.listed, chain, &self.options, &self.clock, self.depth);
            for &k in &chain.members {
                let tick = self.opts[k].restate(state, &market, &mut self.rng);
                let print = self.opts[k].take_print();
                self.pending.push_back((self.listed.len() + k, tick, print));
            }
        }
    }

    /// A tick of every listed instrument in `state`, and of every live option.
    fn restate_all(&mut self, state: State) {
        for i in 0..self.listed.len() {
            let mut tick = Tick::default();
            let state = match self.listed[i].halted_until {
                Some(_) if state == State::Open => State::Halted,
                _ => state,
            };
            self.listed_tick(i, &mut tick, state, false);
            // The open's tick carries the opening print.
            let l = &self.listed[i];
            let print = (state == State::Open && l.spec.kind != Kind::Index)
                .then(|| Print::with(l.open, l.last_size, &[super::OPENING]));
            self.pending.push_back((i, tick, print));
        }
        self.restate_options(None, state);
    }

    fn advance_clock(&mut self, wall: f64) {
        self.trading_secs += wall * self.clock.speed();
        if self.clock.advance(wall) {
            self.restate_all(State::Closed);
            self.roll_day();
        }
        let phase = self.clock.phase();
        if phase != self.phase {
            self.phase = phase;
            if phase == State::Open {
                for l in &mut self.listed {
                    opening_print(l, &mut self.rng);
                }
            }
            self.restate_all(phase);
        }
    }

    /// A tick of listed instrument `i` in `state`, and its print: when `may_trade`, open,
    /// and the draw says so.
    fn listed_tick(
        &mut self,
        i: usize,
        out: &mut Tick,
        state: State,
        may_trade: bool,
    ) -> Option<Print> {
        let l = &mut self.listed[i];
        let rng = &mut self.rng;
        let session = self.clock.session_secs();
        let dt = (self.trading_secs - l.moved_at).clamp(0.0, session);
        l.moved_at = self.trading_secs;
        // Two draws per tick: one for the price step, one sliced into the discrete choices.
        let z = (uniform(rng.next_u64()) * 2.0 - 1.0) * 3f64.sqrt();
        let r = rng.next_u64();
        let byte = |k: u32| (r >> (8 * k)) & 0xff;
        let tick_size = l.spec.tick_size;
        l.mid =
            (l.mid * (1.0 + l.spec.volatility * (dt / session).sqrt() * z)).max(2.0 * tick_size);
        let grid = l.grid;
        let price = |ticks: i64| grid.price(ticks);
        // Open, high and low exist once the session has opened (a halt keeps them).
        let traded = state != State::PreOpen;
        let mut book = out.depth.take();
        let mut symbol = std::mem::take(&mut out.symbol);
        symbol.clear();
        symbol.push_str(&l.spec.symbol);
        if l.spec.kind == Kind::Index {
            // An index is computed from its members' prints: it moves only while they trade.
            let value = match state {
                State::Open => price((l.mid / tick_size).round() as i64),
                _ => l.last,
            };
            l.last = value;
            l.high = l.high.max(value);
            l.low = l.low.min(value);
            *out = Tick {
                symbol,
                kind: Kind::Index,
                last: Some(value),
                open: traded.then_some(l.open),
                high: traded.then_some(l.high),
                low: traded.then_some(l.low),
                prev_close: Some(l.prev_close),
                state: Some(state),
                ..Tick::default()
            };
            return None;
        }
        // Spread of 1 tick, 2 with chance 0.3, 3 with chance 0.03.
        let spread = 1 + i64::from(byte(0) < 77) + i64::from(byte(0) < 77 && byte(1) < 26);
        let bid_ticks = ((l.mid / tick_size - spread as f64 / 2.0).round() as i64).max(1);
        let ask_ticks = bid_ticks + spread;
        let (bid, ask) = (price(bid_ticks), price(ask_ticks));
        let mut print = None;
        if byte(2) < 102 && state == State::Open && may_trade {
            // A trade (chance 0.4), at the bid or the ask, of 1 to 10 lots.
            l.last = if byte(3) & 1 == 0 { bid } else { ask };
            l.last_size = l.spec.lot * (1 + byte(4) % 10);
            l.volume += l.last_size;
            l.high = l.high.max(l.last);
            l.low = l.low.min(l.last);
            print = Some(Print::regular(l.last, l.last_size));
        }
        let lot = l.spec.lot;
        let bid_size = lot * (1 + byte(5) % 20);
        let ask_size = lot * (1 + byte(6) % 20);
        let depth = (self.depth > 0).then(|| {
            let mut d = book.take().unwrap_or_default();
            d.bids.clear();
            d.asks.clear();
            let mut sizes = rng.next_u64();
            for k in 0..self.depth as i64 {
                let (bs, asz) = if k == 0 {
                    (bid_size, ask_size)
                } else {
                    if sizes == 0 {
                        sizes = rng.next_u64();
                    }
                    let pair = (
                        lot * (1 + (sizes & 0xff) % 40),
                        lot * (1 + (sizes >> 8 & 0xff) % 40),
                    );
                    sizes >>= 16;
                    pair
                };
                if bid_ticks - k > 0 {
                    d.bids.push((price(bid_ticks - k), bs));
                }
                d.asks.push((price(ask_ticks + k), asz));
            }
            d
        });
        *out = Tick {
            symbol,
            kind: l.spec.kind,
            last: Some(l.last),
            last_size: (l.last_size > 0).then_some(l.last_size),
            bid: Some(bid),
            ask: Some(ask),
            bid_size: Some(bid_size),
            ask_size: Some(ask_size),
            volume: Some(l.volume),
            open: traded.then_some(l.open),
            high: traded.then_some(l.high),
            low: traded.then_some(l.low),
            prev_close: Some(l.prev_close),
            depth,
            state: Some(state),
            ..Tick::default()
        };
        print
    }

    fn reprice(&mut self) {
        for c in 0..self.chains.len() {
            let chain = &self.chains[c];
            if self.listed[chain.underlying].halted_until.is_some() || self.phase != State::Open {
                // Frozen with its underlying, or waiting for the open.
                continue;
            }
            let market = market(&self.listed, chain, &self.options, &self.clock, self.depth);
            for &k in &chain.members {
                if let Some(t) = self.opts[k].reprice(&market, &mut self.rng) {
                    let print = self.opts[k].take_print();
                    self.pending.push_back((self.listed.len() + k, t, print));
                }
            }
        }
    }

    /// Lists the expiries due as of the clock's date that are not listed yet; delists
    /// the expired ones. Returns the symbols delisted.
    fn list_expiries(&mut self) -> Vec<String> {
        let today = self.clock.date();
        let wanted = options::expiries(
            today,
            self.options.weeklies,
            self.options.monthlies,
            self.clock.holidays(),
        );
        let mut removed = Vec::new();
        for c in 0..self.chains.len() {
            let chain = &self.chains[c];
            let market = market(&self.listed, chain, &self.options, &self.clock, self.depth);
            let (underlying, root) = (chain.underlying, chain.root.clone());
            let kind = self.listed[underlying].spec.kind;
            let name = self.listed[underlying].spec.symbol.clone();
            let mut added = Vec::new();
            for &expiry in wanted
                .iter()
                .filter(|e| !chain.expiries.iter().any(|x| x.0 == **e))
            {
                let strikes = options::strikes(
                    market.spot,
                    options::strike_step(market.spot, kind),
                    self.options.strikes,
                );
                let opts: Vec<OptionState> = options::contracts(&root, expiry, &strikes)
                    .into_iter()
                    .map(|id| OptionState::new(id, &name, underlying, &market))
                    .collect();
                added.push((expiry, strikes, opts));
            }
            let mut members = Vec::new();
            for &k in &self.chains[c].members {
                let o = &mut self.opts[k];
                if o.id.expiry < today {
                    o.expired = true;
                    removed.push(o.symbol.clone());
                } else {
                    members.push(k);
                }
            }
            let chain = &mut self.chains[c];
            chain.expiries.retain(|(e, _)| *e >= today);
            for (expiry, strikes, opts) in added {
                chain.expiries.push((expiry, strikes));
                for o in opts {
                    members.push(self.opts.len());
                    self.opts.push(o);
                }
            }
            chain.expiries.sort_by_key(|e| e.0);
            chain.members = members;
        }
        removed
    }

    fn roll_day(&mut self) {
        self.day_rolled = true;
        for l in &mut self.listed {
            l.prev_close = l.last;
            l.halted_until = None;
            overnight(l, &mut self.rng);
        }
        self.halted.clear();
        for o in &mut self.opts {
            o.roll_day();
        }
        let removed = self.list_expiries();
        let mut update = self.reference();
        update.removed = removed;
        self.ref_update = Some(update);
        self.reprice_at = self.reprice_at.min(self.at);
    }

    /// The whole current reference data.
    pub fn reference(&self) -> RefUpdate {
        let listed = self.listed.iter().map(|l| Instrument {
            symbol: l.spec.symbol.clone(),
            kind: l.spec.kind,
            tick_size: Some(l.spec.tick_size),
            decimals: Some(l.spec.decimals),
            lot: (l.spec.kind != Kind::Index).then_some(l.spec.lot),
            multiplier: None,
            underlying: None,
            expiry: None,
            strike: None,
            right: None,
            feed: None,
        });
        let live = self.opts.iter().filter(|o| !o.expired);
        let instruments = listed.chain(live.map(OptionState::instrument)).collect();
        let chains = self
            .chains
            .iter()
            .map(|c| Chain {
                underlying: self.listed[c.underlying].spec.symbol.clone(),
                root: c.root.clone(),
                expiries: c
                    .expiries
                    .iter()
                    .map(|(expiry, strikes)| ChainExpiry {
                        expiry: *expiry,
                        strikes: strikes.clone(),
                    })
                    .collect(),
            })
            .collect();
        RefUpdate {
            instruments,
            chains,
            removed: Vec::new(),
        }
    }
}

/// The model inputs of a chain now.
fn market<'a>(
    listed: &[Listed],
    chain: &ChainState,
    options: &'a OptionsConfig,
    clock: &'a SessionClock,
    depth: usize,
) -> Market<'a> {
    Market {
        spot: listed[chain.underlying].mid,
        smile: Smile {
            atm: chain.atm_vol,
            skew: options.skew,
            smile: options.smile,
        },
        config: options,
        clock,
        depth,
    }
}

/// The night before a session: the mid gaps from the previous close; nothing has traded.
fn overnight(l: &mut Listed, rng: &mut SmallRng) {
    let gap = rng.random_range(-1.0..1.0) * l.spec.volatility * 0.3;
    let tick = l.spec.tick_size;
    l.mid = (l.prev_close * (1.0 + gap)).max(2.0 * tick);
    (l.open, l.high, l.low, l.last) = (l.prev_close, l.prev_close, l.prev_close, l.prev_close);
    (l.volume, l.last_size) = (0, 0);
}

/// The open: an opening print at the mid.
fn opening_print(l: &mut Listed, rng: &mut SmallRng) {
    let tick = l.spec.tick_size;
    let open = round_to((l.mid / tick).round() * tick, l.spec.decimals);
    (l.open, l.high, l.low, l.last) = (open, open, open, open);
    if l.spec.kind == Kind::Index {
        (l.volume, l.last_size) = (0, 0);
    } else {
        l.last_size = l.spec.lot * rng.random_range(10..=200);
        l.volume = l.last_size;
    }
}

#[cfg(test)]
mod tests;
