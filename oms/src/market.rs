//! The market as the order system sees it: the prints ingest publishes on
//! `tr.<shard>.<symbol>` for the symbols the accounts trade, and nothing else. Every fill
//! is at one of these prints, so at a price the market traded.

use std::pin::Pin;

use futures_util::stream::{SelectAll, Stream, StreamExt};
use tickmesh_core::Symbol;
use tickmesh_core::trade::{self, Trade, trade_subject};

/// The prints of the followed symbols, in the order they arrive (per symbol, the order
/// ingest published them). Prints NATS drops because this reader fell behind (the
/// connection's `subscription_capacity`) are gone: they simply fill nothing.
pub struct Prints {
    subs: SelectAll<Pin<Box<dyn Stream<Item = async_nats::Message> + Send>>>,
}

impl std::fmt::Debug for Prints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prints")
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

impl Prints {
    /// Subscribes to the prints of `symbols` among `shards` shards (ingest's count).
    pub async fn follow(
        client: &async_nats::Client,
        symbols: &[String],
        shards: u32,
    ) -> anyhow::Result<Self> {
        let mut subs = SelectAll::new();
        for symbol in symbols {
            let symbol = Symbol::parse(symbol)?;
            let sub = client.subscribe(trade_subject(&symbol, shards)).await?;
            subs.push(Box::pin(sub) as Pin<Box<dyn Stream<Item = _> + Send>>);
        }
        client.flush().await?;
        Ok(Prints { subs })
    }

    /// The next valid print; a message that is not one is counted and skipped. None when
    /// every subscription has ended (the connection is closed).
    pub async fn next(&mut self) -> Option<Trade> {
        loop {
            let msg = self.subs.next().await?;
            match trade::decode_wire(&msg.payload) {
                Ok(print) => {
                    metrics::counter!("tickmesh_oms_prints_total").increment(1);
                    return Some(print);
                }
                Err(e) => {
                    metrics::counter!("tickmesh_oms_bad_prints_total").increment(1);
                    tracing::debug!(subject = %msg.subject, error = %e, "not a print");
                }
            }
        }
    }
}
