//! What a fill does to an account: pure functions from the account's state as it is right
//! before each event to that event. A fill is appended as four events, in this order:
//! the `fill`, then the `order` it changed, the `position` and the `balance`. Each of the
//! last three reads only the part of the state that it replaces (and the balance, the
//! positions just written), so a writer that stopped partway through finishes the fill
//! from the state it rebuilds, with the same results.

use tickmesh_core::account::{
    AccountState, Balance, Data, Fill, Order, OrderStatus, Position, Side,
};

/// The account's one currency.
pub const CURRENCY: &str = "USD";

/// The events a fill entails after itself, in the order they are appended.
pub const AFTER_FILL: [Step; 3] = [Step::Order, Step::Position, Step::Balance];

/// One of the events a fill entails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Order,
    Position,
    Balance,
}

/// `step`'s event for `fill`, from `state` as it is right before that event. None for the
/// order when it is no longer open (its own event was appended already).
pub fn after_fill(state: &AccountState, fill: &Fill, step: Step) -> Option<Data> {
    match step {
        Step::Order => {
            let order = state.open_orders.get(&fill.order_id)?;
            Some(Data::Order(filled(order, fill.qty, fill.price)))
        }
        Step::Position => {
            let before = state.positions.get(&fill.symbol);
            Some(Data::Position(position_after(
                &fill.symbol,
                before,
                signed(fill.side, fill.qty),
                fill.price,
            )))
        }
        Step::Balance => {
            let before = state.balances.get(CURRENCY);
            let cash = before.map_or(0.0, |b| b.cash);
            Some(Data::Balance(Balance {
                currency: CURRENCY.into(),
                cash: money(cash - signed(fill.side, fill.qty) as f64 * fill.price),
                realized_pnl: money(state.positions.values().map(|p| p.realized_pnl).sum()),
            }))
        }
    }
}

/// An amount rounded to a millionth (prices and quantities make amounts with a tail of
/// float noise, `-6.0000000000030695`), and never `-0`.
pub fn money(v: f64) -> f64 {
    (v * 1e6).round() / 1e6 + 0.0
}

/// `qty` with the sign of the side: bought is positive.
pub fn signed(side: Side, qty: u64) -> i64 {
    let qty = i64::try_from(qty).expect("quantities are far below 2^63");
    match side {
        Side::Buy => qty,
        Side::Sell => -qty,
    }
}

/// The order after `qty` more of it filled at `price`.
pub fn filled(order: &Order, qty: u64, price: f64) -> Order {
    let done = order.filled_qty + qty;
    let paid = order.avg_price.unwrap_or(0.0) * order.filled_qty as f64 + price * qty as f64;
    Order {
        filled_qty: done,
        avg_price: Some(paid / done as f64),
        status: match done >= order.qty {
            true => OrderStatus::Filled,
            false => OrderStatus::PartiallyFilled,
        },
        ..order.clone()
    }
}

/// The position after a fill of `delta` (signed) at `price`, marked at `price`: adding to
/// it moves the average price; reducing it realises P&L against the average; going
/// through zero opens the rest at `price`.
pub fn position_after(symbol: &str, before: Option<&Position>, delta: i64, price: f64) -> Position {
    let (qty, avg, mut realized) =
        before.map_or((0, 0.0, 0.0), |p| (p.qty, p.avg_price, p.realized_pnl));
    let new_qty = qty + delta;
    let avg_price = if qty == 0 || qty.signum() == delta.signum() {
        (qty.abs() as f64 * avg + delta.abs() as f64 * price) / new_qty.abs() as f64
    } else {
        let closed = delta.abs().min(qty.abs());
        realized += closed as f64 * (price - avg) * qty.signum() as f64;
        match new_qty {
            0 => 0.0,
            q if q.signum() == qty.signum() => avg,
            _ => price,
        }
    };
    let avg_price = money(avg_price);
    Position {
        symbol: symbol.to_string(),
        qty: new_qty,
        avg_price,
        realized_pnl: money(realized),
        mark_price: Some(price),
        unrealized_pnl: Some(money(new_qty as f64 * (price - avg_price))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::account::OrderType;

    fn pos(p: &Position) -> (i64, f64, f64, Option<f64>) {
        (p.qty, p.avg_price, p.realized_pnl, p.unrealized_pnl)
    }

    #[test]
    fn a_position_averages_up_realises_on_the_way_down_and_flips_at_the_fill_price() {
        let p = position_after("AAPL", None, 100, 10.0);
        assert_eq!(pos(&p), (100, 10.0, 0.0, Some(0.0)));
        let p = position_after("AAPL", Some(&p), 100, 12.0);
        assert_eq!(pos(&p), (200, 11.0, 0.0, Some(200.0)));
        let p = position_after("AAPL", Some(&p), -50, 13.0);
        assert_eq!(pos(&p), (150, 11.0, 100.0, Some(300.0)));
        // Sell 250: close 150 at +1 each, open 100 short at 12.
        let p = position_after("AAPL", Some(&p), -250, 12.0);
        assert_eq!(pos(&p), (-100, 12.0, 250.0, Some(0.0)));
        // A short gains when the price falls.
        let p = position_after("AAPL", Some(&p), 100, 10.0);
        assert_eq!(pos(&p), (0, 0.0, 450.0, Some(0.0)));
        assert_eq!(p.mark_price, Some(10.0));
        // Float noise is rounded away, and a flat position's P&L is never -0.
        let short = position_after("AAPL", None, -100, 104.32);
        assert!(
            short.unrealized_pnl.unwrap().is_sign_positive(),
            "{short:?}"
        );
        let p = position_after("AAPL", Some(&short), 100, 104.38);
        assert_eq!((p.realized_pnl, p.unrealized_pnl), (-6.0, Some(0.0)));
    }

    #[test]
    fn a_fill_finishes_the_same_whichever_of_its_events_were_appended() {
        let order = Order {
            order_id: "DEMO1-O1".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            qty: 300,
            limit_price: Some(10.5),
            status: OrderStatus::New,
            filled_qty: 0,
            avg_price: None,
            reason: None,
        };
        let mut state = AccountState::new("DEMO1");
        state.open_orders.insert(order.order_id.clone(), order);
        state.balances.insert(
            CURRENCY.into(),
            Balance {
                currency: CURRENCY.into(),
                cash: 10_000.0,
                realized_pnl: 0.0,
            },
        );
        let fill = Fill {
            fill_id: "DEMO1-F2".into(),
            order_id: "DEMO1-O1".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            qty: 100,
            price: 10.0,
            trade_id: Some(9),
        };
        let Some(Data::Order(o)) = after_fill(&state, &fill, Step::Order) else {
            panic!("an open order is updated")
        };
        assert_eq!(
            (o.status, o.filled_qty, o.avg_price),
            (OrderStatus::PartiallyFilled, 100, Some(10.0))
        );
        state.open_orders.insert(o.order_id.clone(), o);
        let Some(Data::Position(p)) = after_fill(&state, &fill, Step::Position) else {
            panic!("a position")
        };
        state.positions.insert(p.symbol.clone(), p);
        let Some(Data::Balance(b)) = after_fill(&state, &fill, Step::Balance) else {
            panic!("a balance")
        };
        assert_eq!((b.cash, b.realized_pnl), (9_000.0, 0.0));
        state.open_orders.clear();
        assert_eq!(after_fill(&state, &fill, Step::Order), None);
    }

    #[test]
    fn an_order_averages_its_fills_and_is_filled_when_all_of_it_is() {
        let o = Order {
            order_id: "X".into(),
            symbol: "AAPL".into(),
            side: Side::Sell,
            order_type: OrderType::Market,
            qty: 300,
            limit_price: None,
            status: OrderStatus::New,
            filled_qty: 0,
            avg_price: None,
            reason: None,
        };
        let o = filled(&o, 100, 10.0);
        let o = filled(&o, 200, 11.0);
        assert_eq!(o.status, OrderStatus::Filled);
        assert!((o.avg_price.unwrap() - 32.0 / 3.0).abs() < 1e-9);
    }
}
