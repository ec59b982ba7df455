//! A followed tape's NATS side: the live subscription on `tr.<shard>.<symbol>`, and the
//! history read from the `md_trades` stream (an ordered consumer filtered to the subject)
//! after the subscription is in place, again after every reconnect of the connection.

use std::sync::Weak;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt;
use tickmesh_core::Symbol;
use tickmesh_core::trade::{self, Trade, trade_subject};

use super::{NatsLink, PUMP_RESTART_DELAY, Pump};
use crate::tape::{TapeSource, TradeSink};

/// The longest a history read may take before the tape goes on without it.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(5);

impl TapeSource for NatsLink {
    type Follower = Pump;

    fn follow(&self, sink: Weak<dyn TradeSink>, symbol: Symbol) -> Pump {
        let link = self.clone();
        self.spawn(async move {
            // A subscription that fails or ends is made again (a print may be missed in
            // between: the history read that follows fills it in), while anyone holds it.
            while sink.strong_count() > 0 {
                if let Err(e) = link.follow_tape(&sink, &symbol).await {
                    tracing::warn!(%symbol, error = %e, "tape subscription failed");
                }
                tokio::time::sleep(PUMP_RESTART_DELAY).await;
                if let Some(sink) = sink.upgrade() {
                    sink.reload(&symbol);
                }
            }
        })
        .abort_handle()
        .into()
    }
}

impl NatsLink {
    async fn follow_tape(&self, sink: &Weak<dyn TradeSink>, symbol: &Symbol) -> anyhow::Result<()> {
        let subject = trade_subject(symbol, self.shards);
        let mut sub = self.client.subscribe(subject.clone()).await?;
        // The server has the subscription: every print from here on comes live.
        self.client.flush().await?;
        let mut reconnects = self.reconnects.subscribe();
        reconnects.borrow_and_update();
        self.read_history(sink, symbol, &subject).await;
        let prints_in = metrics::counter!("tickmesh_edge_trades_in_total");
        loop {
            let msg = tokio::select! {
                msg = sub.next() => msg,
                changed = reconnects.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    // Prints published while the connection was down are in the stream.
                    if let Some(sink) = sink.upgrade() {
                        sink.reload(symbol);
                    }
                    self.read_history(sink, symbol, &subject).await;
                    continue;
                }
            };
            let Some(msg) = msg else {
                anyhow::bail!("the subscription ended");
            };
            let Some(sink) = sink.upgrade() else {
                return Ok(());
            };
            match trade::decode_wire(&msg.payload) {
                Ok(t) if t.symbol == symbol.as_str() => {
                    prints_in.increment(1);
                    sink.publish(t);
                }
                Ok(_) => {
                    metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "wrong_subject").increment(1);
                }
                Err(e) => {
                    metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "invalid")
                        .increment(1);
                    tracing::warn!(%subject, error = %e, "dropped an invalid print");
                }
            }
        }
    }

    /// Hands the tape the prints the stream kept; on failure, none (logged and counted):
    /// live prints flow either way.
    async fn read_history(&self, sink: &Weak<dyn TradeSink>, symbol: &Symbol, subject: &str) {
        let read = tokio::time::timeout(HISTORY_TIMEOUT, self.history(subject)).await;
        let trades = match read {
            Ok(Ok(trades)) => trades,
            Ok(Err(e)) => {
                metrics::counter!("tickmesh_edge_tape_history_errors_total").increment(1);
                tracing::warn!(%symbol, error = %e, "reading the tape's history failed");
                Vec::new()
            }
            Err(_) => {
                metrics::counter!("tickmesh_edge_tape_history_errors_total").increment(1);
                tracing::warn!(%symbol, "reading the tape's history timed out");
                Vec::new()
            }
        };
        if let Some(sink) = sink.upgrade() {
            sink.history(symbol, trades);
        }
    }

    /// Every print `md_trades` keeps of `subject`, oldest first.
    async fn history(&self, subject: &str) -> anyhow::Result<Vec<Trade>> {
        let stream = self
            .hub_js
            .get_stream(&self.trades_stream)
            .await
            .with_context(|| format!("opening stream {}", self.trades_stream))?;
        let consumer = stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("creating the history consumer")?;
        let pending = consumer.cached_info().num_pending;
        let mut out = Vec::with_capacity(pending.min(crate::tape::KEEP as u64) as usize);
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await?;
        while let Some(msg) = messages.next().await {
            let msg = msg?;
            let left = msg.info().map_or(0, |i| i.pending);
            match trade::decode_wire(&msg.payload) {
                Ok(t) => out.push(t),
                Err(e) => {
                    metrics::counter!("tickmesh_edge_trades_dropped_total", "reason" => "invalid")
                        .increment(1);
                    tracing::warn!(%subject, error = %e, "dropped an invalid print from the history");
                }
            }
            if left == 0 {
                break;
            }
        }
        Ok(out)
    }
}
