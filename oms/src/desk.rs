//! The simulated traders and their broker: plain synchronous code with the time and the
//! random source passed in, so that a unit test drives it without NATS.
//!
//! - [`Desk::decide`]: at a random pace around `sim.order_interval_ms`, an account places
//!   an order (market or limit, buy or sell, refused when it would overdraw the cash or
//!   pass the position limit), replaces the limit price of one of its working orders, or
//!   cancels one.
//! - [`match_print`]: a print of the market fills the working orders it reaches, oldest
//!   first, up to the print's size: a market order at any print, a limit buy at a print
//!   at or below its limit, a limit sell at or above. The fill is at the print's price
//!   and names its `trade_id`.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tickmesh_core::account::{AccountState, Data, Fill, Order, OrderStatus, OrderType, Side};
use tickmesh_core::trade::Trade;

use crate::ledger::{self, CURRENCY};

/// `[sim]`: what the demo accounts trade, how often and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Random seed of the traders' decisions.
    pub seed: u64,
    /// The symbols the accounts trade; their prints are followed on `tr.<shard>.<symbol>`.
    /// Default AAPL, MSFT, NVDA, SPY, TSLA.
    pub symbols: Vec<String>,
    /// Mean time between two decisions of one account (place, amend or cancel), ms; each
    /// wait is drawn from half to one and a half times it. Default 3000.
    pub order_interval_ms: u64,
    /// Share of new orders that are market orders, 0..=1. Default 0.3.
    pub market_ratio: f64,
    /// Share of decisions that replace the limit price of a working limit order, 0..=1.
    /// Default 0.15.
    pub amend_ratio: f64,
    /// Share of decisions that cancel a working order, 0..=1. Default 0.1.
    pub cancel_ratio: f64,
    /// Round lot: order sizes are multiples of it. Default 100.
    pub lot: u64,
    /// Largest order, shares (a multiple of `lot`). Default 500.
    pub max_qty: u64,
    /// Largest position of one symbol, long or short, counting the working orders on its
    /// side; an order that would pass it is rejected. Default 2000.
    pub max_position: u64,
    /// Cash each account starts with, USD. Default 1000000.
    pub initial_cash: f64,
    /// How far a new limit price may sit from the last print, basis points: buys below,
    /// sells above, and one in five on the other side (marketable). Default 40.
    pub limit_offset_bps: f64,
    /// Prints buffered between the NATS connection and the traders, messages (the bound
    /// of the connection's every subscription, one per followed symbol). When full, NATS
    /// drops the newest prints of that symbol, which then fill nothing, and reports a
    /// slow consumer. Default 4096.
    pub prints_buffer: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            symbols: ["AAPL", "MSFT", "NVDA", "SPY", "TSLA"]
                .map(String::from)
                .into(),
            order_interval_ms: 3000,
            market_ratio: 0.3,
            amend_ratio: 0.15,
            cancel_ratio: 0.1,
            lot: 100,
            max_qty: 500,
            max_position: 2000,
            initial_cash: 1_000_000.0,
            limit_offset_bps: 40.0,
            prints_buffer: 4096,
        }
    }
}

impl SimConfig {
    /// The first setting that is out of range: (key under `[sim]`, why).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, why: String| Err((key.to_string(), why));
        if self.symbols.is_empty() || self.symbols.len() > 1000 {
            return err("symbols", "list 1 to 1000 symbols".into());
        }
        for (i, s) in self.symbols.iter().enumerate() {
            if let Err(e) = tickmesh_core::symbol::validate(s) {
                return err(&format!("symbols[{i}]"), e.to_string());
            }
            if self.symbols[..i].contains(s) {
                return err(&format!("symbols[{i}]"), format!("{s} is listed twice"));
            }
        }
        if !(10..=3_600_000).contains(&self.order_interval_ms) {
            return err(
                "order_interval_ms",
                format!("must be 10..=3600000, got {}", self.order_interval_ms),
            );
        }
        for (key, v) in [
            ("market_ratio", self.market_ratio),
            ("amend_ratio", self.amend_ratio),
            ("cancel_ratio", self.cancel_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return err(key, format!("must be 0 to 1, got {v}"));
            }
        }
        if self.amend_ratio + self.cancel_ratio > 1.0 {
            return err(
                "cancel_ratio",
                "amend_ratio + cancel_ratio must be at most 1".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.lot) {
            return err("lot", format!("must be 1..=1000000, got {}", self.lot));
        }
        if self.max_qty < self.lot
            || !self.max_qty.is_multiple_of(self.lot)
            || self.max_qty > 10_000_000
        {
            return err(
                "max_qty",
                format!(
                    "must be a multiple of lot ({}) up to 10000000, got {}",
                    self.lot, self.max_qty
                ),
            );
        }
        if self.max_position < self.max_qty || self.max_position > 1_000_000_000 {
            return err(
                "max_position",
                format!(
                    "must be max_qty ({}) to 1000000000, got {}",
                    self.max_qty, self.max_position
                ),
            );
        }
        if !(self.initial_cash.is_finite() && self.initial_cash > 0.0 && self.initial_cash < 1e15) {
            return err(
                "initial_cash",
                format!("must be positive and below 1e15, got {}", self.initial_cash),
            );
        }
        if !(16..=1 << 20).contains(&self.prints_buffer) {
            return err(
                "prints_buffer",
                format!("must be 16..=1048576, got {}", self.prints_buffer),
            );
        }
        if !(0.0..=1000.0).contains(&self.limit_offset_bps) {
            return err(
                "limit_offset_bps",
                format!("must be 0 to 1000, got {}", self.limit_offset_bps),
            );
        }
        Ok(())
    }
}

/// The traders of every account: when each decides next, the last price of each symbol,
/// and the random source.
#[derive(Debug)]
pub struct Desk {
    config: SimConfig,
    rng: SmallRng,
    last: HashMap<String, f64>,
    /// When each account (by index) decides next, ms on the caller's clock.
    due: Vec<u64>,
}

impl Desk {
    /// A desk for `accounts` accounts, each first deciding within one interval of `now_ms`.
    pub fn new(config: &SimConfig, accounts: usize, now_ms: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let due = (0..accounts)
            .map(|_| now_ms + rng.random_range(0..=config.order_interval_ms))
            .collect();
        Desk {
            config: config.clone(),
            rng,
            last: HashMap::new(),
            due,
        }
    }

    /// Notes the last price of a print's symbol: new orders are priced from it.
    pub fn on_print(&mut self, print: &Trade) {
        self.last.insert(print.symbol.clone(), print.price);
    }

    /// The accounts' decision at `now_ms`: `None` when account `i` is not due, or has
    /// nothing to decide (no price known yet); else one `order` event (placed, rejected,
    /// amended or cancelled).
    pub fn decide(&mut self, i: usize, state: &AccountState, now_ms: u64) -> Option<Data> {
        if now_ms < self.due[i] {
            return None;
        }
        let interval = self.config.order_interval_ms;
        self.due[i] = now_ms
            + self
                .rng
                .random_range(interval / 2..=interval + interval / 2);
        let roll: f64 = self.rng.random();
        let order = if roll < self.config.cancel_ratio {
            self.cancel(state).or_else(|| self.place(state))
        } else if roll < self.config.cancel_ratio + self.config.amend_ratio {
            self.amend(state).or_else(|| self.place(state))
        } else {
            self.place(state)
        };
        order.map(Data::Order)
    }

    fn cancel(&mut self, state: &AccountState) -> Option<Order> {
        let open: Vec<&Order> = state.open_orders.values().collect();
        let order = *open.get(self.rng.random_range(0..open.len().max(1)))?;
        Some(Order {
            status: OrderStatus::Cancelled,
            reason: Some("cancelled by the trader".into()),
            ..order.clone()
        })
    }

    fn amend(&mut self, state: &AccountState) -> Option<Order> {
        let limits: Vec<&Order> = state
            .open_orders
            .values()
            .filter(|o| o.order_type == OrderType::Limit && self.last.contains_key(&o.symbol))
            .collect();
        let order = *limits.get(self.rng.random_range(0..limits.len().max(1)))?;
        let last = self.last[&order.symbol];
        Some(Order {
            limit_price: Some(self.limit_price(order.side, last)),
            ..order.clone()
        })
    }

    fn place(&mut self, state: &AccountState) -> Option<Order> {
        let priced: Vec<&String> = self
            .config
            .symbols
            .iter()
            .filter(|s| self.last.contains_key(*s))
            .collect();
        let symbol = (*priced.get(self.rng.random_range(0..priced.len().max(1)))?).clone();
        let last = self.last[&symbol];
        let side = match self.rng.random_bool(0.5) {
            true => Side::Buy,
            false => Side::Sell,
        };
        let lots = self.config.max_qty / self.config.lot;
        let qty = self.config.lot * self.rng.random_range(1..=lots);
        let market = self.rng.random_bool(self.config.market_ratio);
        let limit_price = (!market).then(|| self.limit_price(side, last));
        let mut order = Order {
            order_id: format!("{}-O{}", state.account, state.seq + 1),
            symbol,
            side,
            order_type: match market {
                true => OrderType::Market,
                false => OrderType::Limit,
            },
            qty,
            limit_price,
            status: OrderStatus::New,
            filled_qty: 0,
            avg_price: None,
            reason: None,
        };
        if let Some(why) = self.refusal(state, &order, last) {
            order.status = OrderStatus::Rejected;
            order.reason = Some(why.into());
        }
        Some(order)
    }

    /// Why the broker refuses `order`, if it does: a buy the cash left after the working
    /// buys cannot pay, or a position past the limit once every working order on its side
    /// fills.
    fn refusal(&self, state: &AccountState, order: &Order, last: f64) -> Option<&'static str> {
        let working = state
            .open_orders
            .values()
            .filter(|o| o.symbol == order.symbol && o.side == order.side);
        let pending: u64 = working.map(|o| o.qty - o.filled_qty).sum();
        let held = state.positions.get(&order.symbol).map_or(0, |p| p.qty);
        let reach = held + ledger::signed(order.side, pending + order.qty);
        if reach.unsigned_abs() > self.config.max_position {
            return Some("position limit");
        }
        if order.side == Side::Buy {
            let cash = state.balances.get(CURRENCY).map_or(0.0, |b| b.cash);
            let committed: f64 = state
                .open_orders
                .values()
                .filter(|o| o.side == Side::Buy)
                .map(|o| (o.qty - o.filled_qty) as f64 * o.limit_price.unwrap_or(last))
                .sum();
            let cost = order.qty as f64 * order.limit_price.unwrap_or(last);
            if cost > cash - committed {
                return Some("insufficient cash");
            }
        }
        None
    }

    /// A limit price near `last`, in cents: most often passive (a buy below, a sell
    /// above), one in five marketable.
    fn limit_price(&mut self, side: Side, last: f64) -> f64 {
        let away = self.rng.random_range(0.0..=self.config.limit_offset_bps) / 10_000.0;
        let away = match self.rng.random_bool(0.2) {
            true => -away / 4.0,
            false => away,
        };
        let price = match side {
            Side::Buy => last * (1.0 - away),
            Side::Sell => last * (1.0 + away),
        };
        ((price * 100.0).round() / 100.0).max(0.01)
    }
}

/// The first working order of `state` that `print` fills, oldest first, and the fill:
/// for at most `left` shares (what the print has not yet filled). The fill's id is the
/// account's next `seq`, the one the fill will carry.
pub fn match_print(state: &AccountState, print: &Trade, left: u64) -> Option<Fill> {
    if left == 0 {
        return None;
    }
    let order = state
        .open_orders
        .values()
        .filter(|o| o.symbol == print.symbol && reaches(o, print.price))
        .min_by_key(|o| placed_at(&o.order_id))?;
    Some(Fill {
        fill_id: format!("{}-F{}", state.account, state.seq + 1),
        order_id: order.order_id.clone(),
        symbol: order.symbol.clone(),
        side: order.side,
        qty: (order.qty - order.filled_qty).min(left),
        price: print.price,
        trade_id: Some(print.trade_id),
    })
}

/// Whether an order executes at a print of `price`.
fn reaches(order: &Order, price: f64) -> bool {
    match (order.order_type, order.side, order.limit_price) {
        (OrderType::Market, _, _) => true,
        (OrderType::Limit, Side::Buy, Some(limit)) => price <= limit,
        (OrderType::Limit, Side::Sell, Some(limit)) => price >= limit,
        (OrderType::Limit, _, None) => false,
    }
}

/// The seq at which an order of this desk was placed (its id is `<account>-O<seq>`), so
/// that older orders fill first; an id of another form sorts last.
fn placed_at(order_id: &str) -> u64 {
    order_id
        .rsplit_once("-O")
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::account::{Balance, Event};

    fn print(symbol: &str, price: f64, size: u64, trade_id: u64) -> Trade {
        Trade {
            symbol: symbol.into(),
            seq: trade_id,
            trade_id,
            price,
            size,
            ts: 1,
            src_ts: None,
            conditions: Vec::new(),
        }
    }

    fn funded() -> AccountState {
        let mut state = AccountState::new("DEMO1");
        let deposit = Event {
            account: "DEMO1".into(),
            seq: 1,
            ts: 1,
            data: Data::Balance(Balance {
                currency: CURRENCY.into(),
                cash: 1_000_000.0,
                realized_pnl: 0.0,
            }),
        };
        state.apply(&deposit).unwrap();
        state
    }

    fn order(state: &mut AccountState, side: Side, limit: Option<f64>, qty: u64) -> String {
        let id = format!("DEMO1-O{}", state.seq + 1);
        let event = Event {
            account: "DEMO1".into(),
            seq: state.seq + 1,
            ts: 1,
            data: Data::Order(Order {
                order_id: id.clone(),
                symbol: "AAPL".into(),
                side,
                order_type: match limit {
                    Some(_) => OrderType::Limit,
                    None => OrderType::Market,
                },
                qty,
                limit_price: limit,
                status: OrderStatus::New,
                filled_qty: 0,
                avg_price: None,
                reason: None,
            }),
        };
        state.apply(&event).unwrap();
        id
    }

    #[test]
    fn prints_fill_market_orders_and_limits_they_reach_oldest_first_up_to_their_size() {
        let mut state = funded();
        let buy = order(&mut state, Side::Buy, Some(100.0), 300);
        let market = order(&mut state, Side::Sell, None, 200);
        let sell = order(&mut state, Side::Sell, Some(101.0), 100);
        // Above the buy's limit, below the sell's: only the market order.
        let f = match_print(&state, &print("AAPL", 100.5, 500, 7), 500).unwrap();
        assert_eq!(
            (f.order_id.as_str(), f.qty, f.price, f.trade_id),
            (market.as_str(), 200, 100.5, Some(7))
        );
        assert_eq!(f.fill_id, "DEMO1-F5");
        // At the buy's limit: the buy, for what the print has left.
        let f = match_print(&state, &print("AAPL", 100.0, 100, 8), 100).unwrap();
        assert_eq!((f.order_id.as_str(), f.qty), (buy.as_str(), 100));
        let f = match_print(&state, &print("AAPL", 101.0, 100, 9), 100).unwrap();
        assert_eq!(f.order_id, market, "the older order first");
        assert!(match_print(&state, &print("AAPL", 101.0, 100, 9), 0).is_none());
        assert!(match_print(&state, &print("MSFT", 1.0, 100, 9), 100).is_none());
        state.open_orders.remove(&market);
        let f = match_print(&state, &print("AAPL", 101.0, 100, 9), 100).unwrap();
        assert_eq!(f.order_id, sell);
    }

    #[test]
    fn decisions_come_at_the_configured_pace_once_a_price_is_known() {
        let config = SimConfig {
            order_interval_ms: 1000,
            ..SimConfig::default()
        };
        let mut desk = Desk::new(&config, 1, 0);
        let mut state = funded();
        assert_eq!(desk.decide(0, &state, 10_000), None, "no price yet");
        desk.on_print(&print("AAPL", 100.0, 100, 1));
        let mut decided = 0;
        for now in (10_001..70_000).step_by(10) {
            if let Some(data) = desk.decide(0, &state, now) {
                decided += 1;
                let Data::Order(o) = &data else {
                    panic!("{data:?}")
                };
                assert_eq!(o.symbol, "AAPL");
                if let Some(p) = o.limit_price {
                    assert!((p - 100.0).abs() <= 0.41, "{p}");
                }
                let event = Event {
                    account: "DEMO1".into(),
                    seq: state.seq + 1,
                    ts: now,
                    data,
                };
                state.apply(&event).unwrap();
            }
        }
        assert!((40..=80).contains(&decided), "{decided} decisions in 60 s");
    }

    #[test]
    fn orders_that_would_overdraw_or_pass_the_position_limit_are_rejected() {
        let config = SimConfig {
            initial_cash: 1.0,
            ..SimConfig::default()
        };
        let mut desk = Desk::new(&config, 1, 0);
        desk.on_print(&print("AAPL", 100.0, 100, 1));
        let mut state = funded();
        state.balances.get_mut(CURRENCY).unwrap().cash = 1.0;
        let mut reasons = std::collections::BTreeSet::new();
        for now in 0..2000 {
            if let Some(Data::Order(o)) = desk.decide(0, &state, now * 5000)
                && o.status == OrderStatus::Rejected
            {
                reasons.insert(o.reason.clone().unwrap());
            }
        }
        assert!(reasons.contains("insufficient cash"), "{reasons:?}");
        let mut state = funded();
        order(&mut state, Side::Sell, Some(100.0), 2000);
        let sell = Order {
            order_id: "x".into(),
            symbol: "AAPL".into(),
            side: Side::Sell,
            order_type: OrderType::Market,
            qty: 100,
            limit_price: None,
            status: OrderStatus::New,
            filled_qty: 0,
            avg_price: None,
            reason: None,
        };
        assert_eq!(desk.refusal(&state, &sell, 100.0), Some("position limit"));
    }
}
