//! Account channels: a trader's orders, fills, positions and balances, as the account's
//! single writer (an order management system) appends them to the stream `acct` on
//! `acct.<account>.<kind>` (JSON), and as a client receives them (`account` and
//! `account_snapshot` messages).
//!
//! Each account's events carry a `seq` of their own: +1 per event, stamped by the writer,
//! never skipped or doubled. Order, position and balance events carry the whole new state
//! of their order, position or balance, so an [`AccountState`] folds from any snapshot
//! and the events after it. The writer keeps the state as of its last event in the KV
//! bucket [`SNAPSHOTS`] ([`Snapshot`]), which is where a subscription without `from_seq`
//! starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::Format;
use crate::tick::MAX_SAFE_INTEGER;

/// The stream of every account's events (subjects `acct.>`).
pub const STREAM: &str = "acct";
/// The KV bucket of each account's state as of its writer's last event (key: account).
pub const SNAPSHOTS: &str = "acct_snap";
/// Largest event accepted from the wire, in bytes.
pub const MAX_WIRE_EVENT: usize = 4096;
/// Largest snapshot accepted from the KV bucket, in bytes.
pub const MAX_WIRE_SNAPSHOT: usize = 1 << 20;
/// Longest account name.
pub const MAX_ACCOUNT_LEN: usize = 32;

/// Why a name is not an account's, or bytes are not an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("account name must be 1 to {MAX_ACCOUNT_LEN} of A-Z a-z 0-9 _ -, got {0:?}")]
    BadName(String),
    #[error("event is {0} bytes; the limit is {MAX_WIRE_EVENT}")]
    TooLarge(usize),
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("event seq {got} of {account} where {want} was due")]
    OutOfOrder {
        account: String,
        got: u64,
        want: u64,
    },
}

/// Checks an account name: it is a subject token, so no dots, wildcards or spaces.
pub fn validate(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(AccountError::BadName(name.chars().take(40).collect())),
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Order,
    Fill,
    Position,
    Balance,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Order, Kind::Fill, Kind::Position, Kind::Balance];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Fill => "fill",
            Kind::Position => "position",
            Kind::Balance => "balance",
        }
    }
}

/// `acct.<account>.<kind>`.
pub fn subject(account: &str, kind: Kind) -> String {
    format!("acct.{account}.{}", kind.as_str())
}

/// `acct.<account>.>`: every event of one account.
pub fn filter(account: &str) -> String {
    format!("acct.{account}.>")
}

/// Where the stream republishes each event once it is stored (`acct.<account>.<kind>`
/// becomes `acctlive.<account>.<kind>`): a reader follows an account live with a plain
/// subscription, which sees only stored events (an append the stream refuses is never
/// republished), and reads the stream only to catch up.
pub const LIVE_SOURCE: &str = "acct.>";
/// See [`LIVE_SOURCE`].
pub const LIVE_DESTINATION: &str = "acctlive.>";

/// `acctlive.<account>.>`: every event of one account, live, as the stream republishes it.
pub fn live_filter(account: &str) -> String {
    format!("acctlive.{account}.>")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Market,
    Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted and working, nothing filled yet.
    New,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    /// Still working: on the book of open orders.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

/// An order's whole state after a change (placed, amended, filled in part or whole,
/// cancelled, rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub qty: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<f64>,
    pub status: OrderStatus,
    pub filled_qty: u64,
    /// Average price of what filled, when anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_price: Option<f64>,
    /// Why it was rejected or cancelled, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One execution of an order, at the price of a print of the market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    pub fill_id: String,
    pub order_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: u64,
    pub price: f64,
    /// The market print it filled against, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<u64>,
}

/// A position's whole state after a change: signed quantity (short below zero), average
/// price of the open quantity, the P&L realised by closing, and the unrealised P&L at the
/// writer's mark price when it wrote it (a client marks it to the prices it streams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub qty: i64,
    pub avg_price: f64,
    pub realized_pnl: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrealized_pnl: Option<f64>,
}

/// A cash balance's whole state after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub currency: String,
    pub cash: f64,
    pub realized_pnl: f64,
}

/// What an event says, by kind: on the wire as `"kind"` and `"data"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Data {
    Order(Order),
    Fill(Fill),
    Position(Position),
    Balance(Balance),
}

impl Data {
    pub fn kind(&self) -> Kind {
        match self {
            Data::Order(_) => Kind::Order,
            Data::Fill(_) => Kind::Fill,
            Data::Position(_) => Kind::Position,
            Data::Balance(_) => Kind::Balance,
        }
    }
}

/// One event of an account: as stored in the stream, and (with `"type": "account"`) as a
/// client receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub account: String,
    /// +1 per event of the account, from 1.
    pub seq: u64,
    /// When the writer stamped it, µs since the Unix epoch.
    pub ts: u64,
    #[serde(flatten)]
    pub data: Data,
}

impl Event {
    /// The subject the event is appended on.
    pub fn subject(&self) -> String {
        subject(&self.account, self.data.kind())
    }
}

/// The bytes of an event in the stream.
pub fn encode_wire(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("an event serializes")
}

/// An event from the stream, checked: a bounded size, a valid account, a seq and numbers
/// a client can hold.
pub fn decode_wire(bytes: &[u8]) -> Result<Event, AccountError> {
    if bytes.len() > MAX_WIRE_EVENT {
        return Err(AccountError::TooLarge(bytes.len()));
    }
    let event: Event =
        serde_json::from_slice(bytes).map_err(|e| AccountError::Malformed(e.to_string()))?;
    check(&event)?;
    Ok(event)
}

/// Why an event is refused.
pub fn check(e: &Event) -> Result<(), AccountError> {
    validate(&e.account)?;
    let invalid = |s: &str| Err(AccountError::Invalid(s.to_string()));
    if e.seq == 0 || e.seq > MAX_SAFE_INTEGER || e.ts > MAX_SAFE_INTEGER {
        return invalid("seq must be 1 to 2^53 and ts below 2^53");
    }
    let finite = |v: f64| v.is_finite();
    let ok = match &e.data {
        Data::Order(o) => {
            crate::symbol::validate(&o.symbol).is_ok()
                && o.qty > 0
                && o.filled_qty <= o.qty
                && o.limit_price.is_none_or(|p| finite(p) && p > 0.0)
                && o.avg_price.is_none_or(finite)
                && (o.order_type == OrderType::Market || o.limit_price.is_some())
        }
        Data::Fill(f) => {
            crate::symbol::validate(&f.symbol).is_ok()
                && f.qty > 0
                && finite(f.price)
                && f.price > 0.0
        }
        Data::Position(p) => {
            crate::symbol::validate(&p.symbol).is_ok()
                && finite(p.avg_price)
                && finite(p.realized_pnl)
                && p.mark_price.is_none_or(finite)
                && p.unrealized_pnl.is_none_or(finite)
        }
        Data::Balance(b) => {
            !b.currency.is_empty()
                && b.currency.len() <= 8
                && finite(b.cash)
                && finite(b.realized_pnl)
        }
    };
    match ok {
        true => Ok(()),
        false => invalid(&format!("bad {} data", e.data.kind().as_str())),
    }
}

/// An account's positions, balances and open orders as of `seq` (0: before any event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    pub account: String,
    pub seq: u64,
    /// By symbol.
    pub positions: BTreeMap<String, Position>,
    /// By currency.
    pub balances: BTreeMap<String, Balance>,
    /// Working orders, by order id.
    pub open_orders: BTreeMap<String, Order>,
}

impl AccountState {
    pub fn new(account: &str) -> Self {
        AccountState {
            account: account.to_string(),
            ..Default::default()
        }
    }

    /// Folds the next event in; an event out of order (not `seq + 1`) or of another
    /// account changes nothing and is an error.
    pub fn apply(&mut self, e: &Event) -> Result<(), AccountError> {
        if e.account != self.account || e.seq != self.seq + 1 {
            return Err(AccountError::OutOfOrder {
                account: e.account.clone(),
                got: e.seq,
                want: self.seq + 1,
            });
        }
        match &e.data {
            Data::Order(o) if o.status.is_open() => {
                self.open_orders.insert(o.order_id.clone(), o.clone());
            }
            Data::Order(o) => {
                self.open_orders.remove(&o.order_id);
            }
            Data::Fill(_) => {}
            Data::Position(p) => {
                self.positions.insert(p.symbol.clone(), p.clone());
            }
            Data::Balance(b) => {
                self.balances.insert(b.currency.clone(), b.clone());
            }
        }
        self.seq = e.seq;
        Ok(())
    }
}

/// What the writer keeps in [`SNAPSHOTS`] after each event: the account's state and the
/// stream sequence of the event it is as of (0 when none), from which the events after
/// it are read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub state: AccountState,
    pub stream_seq: u64,
}

/// A snapshot from the KV bucket, checked.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, AccountError> {
    if bytes.len() > MAX_WIRE_SNAPSHOT {
        return Err(AccountError::Malformed(format!(
            "snapshot is {} bytes; the limit is {MAX_WIRE_SNAPSHOT}",
            bytes.len()
        )));
    }
    let snap: Snapshot =
        serde_json::from_slice(bytes).map_err(|e| AccountError::Malformed(e.to_string()))?;
    validate(&snap.state.account)?;
    Ok(snap)
}

/// An `account` message for a client.
pub fn event_frame(event: &Event, format: Format) -> Vec<u8> {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        event: &'a Event,
    }
    let msg = Msg {
        kind: "account",
        event,
    };
    encode(&msg, format)
}

/// An `account_snapshot` message for a client: the state's lists, in order of their keys.
pub fn snapshot_frame(state: &AccountState, format: Format) -> Vec<u8> {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        account: &'a str,
        seq: u64,
        positions: Vec<&'a Position>,
        balances: Vec<&'a Balance>,
        open_orders: Vec<&'a Order>,
    }
    let msg = Msg {
        kind: "account_snapshot",
        account: &state.account,
        seq: state.seq,
        positions: state.positions.values().collect(),
        balances: state.balances.values().collect(),
        open_orders: state.open_orders.values().collect(),
    };
    encode(&msg, format)
}

fn encode<T: Serialize>(msg: &T, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(msg).expect("a message serializes"),
        Format::MsgPack => rmp_serde::to_vec_named(msg).expect("a message serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(seq: u64) -> Event {
        Event {
            account: "DEMO1".into(),
            seq,
            ts: 1,
            data: Data::Fill(Fill {
                fill_id: format!("F{seq}"),
                order_id: "O1".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                qty: 10,
                price: 190.5,
                trade_id: Some(7),
            }),
        }
    }

    #[test]
    fn an_event_is_json_with_kind_and_data_and_a_client_frame_adds_its_type() {
        let e = fill(3);
        let wire = encode_wire(&e);
        let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(v["kind"], "fill");
        assert_eq!(v["data"]["price"], 190.5);
        assert_eq!(decode_wire(&wire).unwrap(), e);
        assert_eq!(e.subject(), "acct.DEMO1.fill");
        let frame: serde_json::Value =
            serde_json::from_slice(&event_frame(&e, Format::Json)).unwrap();
        assert_eq!(
            (
                frame["type"].as_str(),
                frame["seq"].as_u64(),
                frame["kind"].as_str()
            ),
            (Some("account"), Some(3), Some("fill"))
        );
        let packed: serde_json::Value =
            rmp_serde::from_slice(&event_frame(&e, Format::MsgPack)).unwrap();
        assert_eq!(packed, frame);
    }

    #[test]
    fn bad_events_and_names_are_refused() {
        for name in ["", "A.B", "A*", "A B", &"X".repeat(33)] {
            assert!(validate(name).is_err(), "{name:?}");
        }
        let mut e = fill(1);
        e.seq = 0;
        assert!(check(&e).is_err());
        let mut e = fill(1);
        if let Data::Fill(f) = &mut e.data {
            f.price = f64::NAN;
        }
        assert!(check(&e).is_err());
        assert!(matches!(
            decode_wire(&vec![b' '; MAX_WIRE_EVENT + 1]),
            Err(AccountError::TooLarge(_))
        ));
        assert!(matches!(
            decode_wire(b"{\"kind\":\"fill\"}"),
            Err(AccountError::Malformed(_))
        ));
    }

    #[test]
    fn the_state_folds_events_in_order_and_refuses_a_skipped_or_doubled_one() {
        let mut state = AccountState::new("DEMO1");
        let order = |seq, status| Event {
            account: "DEMO1".into(),
            seq,
            ts: 1,
            data: Data::Order(Order {
                order_id: "O1".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                order_type: OrderType::Limit,
                qty: 10,
                limit_price: Some(190.0),
                status,
                filled_qty: 0,
                avg_price: None,
                reason: None,
            }),
        };
        state.apply(&order(1, OrderStatus::New)).unwrap();
        assert_eq!(state.open_orders.len(), 1);
        assert!(state.apply(&fill(3)).is_err(), "seq 2 skipped");
        state.apply(&fill(2)).unwrap();
        assert!(state.apply(&fill(2)).is_err(), "seq 2 again");
        state.apply(&order(3, OrderStatus::Filled)).unwrap();
        assert!(state.open_orders.is_empty());
        assert_eq!(state.seq, 3);
    }
}
