//! Accounts for tests: a writer that appends events as an account's single writer does
//! (the next seq, the stream's acknowledgement, then the snapshot in `acct_snap`), and
//! tokens that name accounts.

use std::collections::HashMap;

use anyhow::Context;

use async_nats::jetstream::{self, kv};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tickmesh_core::account::{
    self, AccountState, Balance, Data, Event, Fill, Order, OrderStatus, OrderType, Position, Side,
    Snapshot,
};
use tickmesh_oms::writer::StreamConfig;

/// An HS256 token of `sub` for every symbol, naming `acct`, valid for ten minutes.
pub fn token(secret: &str, sub: &str, acct: &[&str]) -> String {
    let now = tickmesh_edge::auth::now_s();
    let claims = json!({"sub": sub, "iat": now - 1, "exp": now + 600, "ent": ["*"], "acct": acct, "tier": "pro"});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token encodes")
}

/// Appends accounts' events as their single writer does (the next seq, the stream's
/// acknowledgement, then the snapshot as of that event), but many at a time: without the
/// order system's expected-last-sequence check, which needs each acknowledgement before
/// the next append. Tests that check that path use `tickmesh_oms::writer`.
pub struct Writer {
    pub js: jetstream::Context,
    snapshots: kv::Store,
    pub states: HashMap<String, Snapshot>,
}

impl Writer {
    /// Creates the stream `acct` and the bucket `acct_snap` on the server at `url`.
    pub async fn create(url: &str) -> anyhow::Result<Writer> {
        Writer::on(jetstream::new(async_nats::connect(url).await?)).await
    }

    /// Opens (or creates) the stream `acct` and the bucket `acct_snap` through `js` (e.g.
    /// an operator's connection to the hub) as the order system does, with its defaults.
    pub async fn on(js: jetstream::Context) -> anyhow::Result<Writer> {
        let oms = tickmesh_oms::writer::Writer::open(js.clone(), &StreamConfig::default())
            .await
            .context("opening the account stream")?;
        let snapshots = oms.jetstream().get_key_value(account::SNAPSHOTS).await?;
        Ok(Writer {
            js,
            snapshots,
            states: HashMap::new(),
        })
    }

    /// Appends the `n`-th kind of event of `account`: an order, a fill, a position or a
    /// balance, in turn.
    pub async fn append(&mut self, account: &str) -> anyhow::Result<Event> {
        let mut one = self.append_many(account, 1).await?;
        one.pop().context("no event appended")
    }

    /// Appends `n` events of `account` without waiting for each acknowledgement in turn.
    pub async fn append_many(&mut self, account: &str, n: usize) -> anyhow::Result<Vec<Event>> {
        let snap = self
            .states
            .entry(account.to_string())
            .or_insert_with(|| Snapshot {
                state: AccountState::new(account),
                stream_seq: 0,
            });
        let mut events = Vec::with_capacity(n);
        let mut acks = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = snap.state.seq + 1;
            let event = Event {
                account: account.into(),
                seq,
                ts: tickmesh_core::tick::now_us(),
                data: sample(seq),
            };
            let wire = account::encode_wire(&event);
            acks.push(self.js.publish(event.subject(), wire.into()).await?);
            snap.state.apply(&event)?;
            events.push(event);
            // The context bounds the acknowledgements in flight.
            if acks.len() == 500 {
                for ack in acks.drain(..) {
                    snap.stream_seq = ack.await?.sequence;
                }
            }
        }
        for ack in acks {
            snap.stream_seq = ack.await?.sequence;
        }
        let bytes = serde_json::to_vec(&*snap)?;
        self.snapshots.put(account, bytes.into()).await?;
        Ok(events)
    }
}

/// An event of each kind in turn, its numbers drawn from `seq`.
pub fn sample(seq: u64) -> Data {
    let symbol = ["AAPL", "MSFT", "SPY"][seq as usize % 3].to_string();
    match seq % 4 {
        // Five order ids in turn: a handful of open orders at any time.
        0 => Data::Order(Order {
            order_id: format!("O{}", seq / 4 % 5),
            symbol,
            side: Side::Buy,
            order_type: OrderType::Limit,
            qty: 100,
            limit_price: Some(100.0 + seq as f64),
            status: OrderStatus::New,
            filled_qty: 0,
            avg_price: None,
            reason: None,
        }),
        1 => Data::Fill(Fill {
            fill_id: format!("F{seq}"),
            order_id: format!("O{}", seq - 1),
            symbol,
            side: Side::Buy,
            qty: 10,
            price: 100.0 + seq as f64,
            trade_id: Some(seq),
        }),
        2 => Data::Position(Position {
            symbol,
            qty: seq as i64,
            avg_price: 100.0,
            realized_pnl: 0.0,
            mark_price: None,
            unrealized_pnl: None,
        }),
        _ => Data::Balance(Balance {
            currency: "USD".into(),
            cash: 1_000_000.0 - seq as f64,
            realized_pnl: 0.0,
        }),
    }
}
