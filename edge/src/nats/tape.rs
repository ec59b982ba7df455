//! A followed subject's NATS side (a tape's `tr.<shard>.<symbol>`, or bars'
//! `bar.<tf>.<shard>.<symbol>`): the live subscription, and the history read from its
//! stream (`md_trades` or `md_bars`, an ordered consumer filtered to the subject) after
//! the subscription is in place, again after every reconnect of the connection.

use std::sync::Weak;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::Symbol;
use tickmesh_core::bar::{Timeframe, bar_subject};
use tickmesh_core::trade::trade_subject;

use super::{NatsLink, PUMP_RESTART_DELAY, Pump};
use crate::tape::{FeedKey, FollowSink, TapeSource};

/// The longest a history read may take before the tape goes on without it.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(5);

impl TapeSource for NatsLink {
    type Follower = Pump;

    fn follow(&self, sink: Weak<dyn FollowSink>, key: FeedKey) -> Pump {
        let link = self.clone();
        let (subject, stream) = match key.tf {
            None => (
                trade_subject(&key.symbol, self.shards),
                self.trades_stream.clone(),
            ),
            Some(tf) => (
                bar_subject(tf, &key.symbol, self.shards),
                self.bars_stream.clone(),
            ),
        };
        self.spawn(async move {
            // A subscription that fails or ends is made again (a message may be missed in
            // between: the history read that follows fills it in), while anyone holds it.
            while sink.strong_count() > 0 {
                if let Err(e) = link.follow_subject(&sink, &key, &subject, &stream).await {
                    tracing::warn!(%subject, error = %e, "subscription failed");
                }
                tokio::time::sleep(PUMP_RESTART_DELAY).await;
                if let Some(sink) = sink.upgrade() {
                    sink.reload(&key);
                }
            }
        })
        .abort_handle()
        .into()
    }
}

impl NatsLink {
    async fn follow_subject(
        &self,
        sink: &Weak<dyn FollowSink>,
        key: &FeedKey,
        subject: &str,
        stream: &str,
    ) -> anyhow::Result<()> {
        let mut sub = self.client.subscribe(subject.to_string()).await?;
        // The server has the subscription: every message from here on comes live.
        self.client.flush().await?;
        let mut reconnects = self.reconnects.subscribe();
        reconnects.borrow_and_update();
        self.read_history(sink, key, subject, stream).await;
        loop {
            let msg = tokio::select! {
                msg = sub.next() => msg,
                changed = reconnects.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    // What was published while the connection was down is in the stream.
                    if let Some(sink) = sink.upgrade() {
                        sink.reload(key);
                    }
                    self.read_history(sink, key, subject, stream).await;
                    continue;
                }
            };
            let Some(msg) = msg else {
                anyhow::bail!("the subscription ended");
            };
            let Some(sink) = sink.upgrade() else {
                return Ok(());
            };
            sink.publish(key, &msg.payload);
        }
    }

    /// Hands the sink what the stream kept; on failure, nothing (logged and counted):
    /// live messages flow either way.
    async fn read_history(
        &self,
        sink: &Weak<dyn FollowSink>,
        key: &FeedKey,
        subject: &str,
        stream: &str,
    ) {
        #[cfg(feature = "fault-injection")]
        tokio::time::sleep(crate::fault::history_delay()).await;
        let read = tokio::time::timeout(HISTORY_TIMEOUT, self.history(subject, stream)).await;
        let kept = match read {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => {
                metrics::counter!("tickmesh_edge_history_errors_total").increment(1);
                tracing::warn!(%subject, error = %e, "reading the history failed");
                Vec::new()
            }
            Err(_) => {
                metrics::counter!("tickmesh_edge_history_errors_total").increment(1);
                tracing::warn!(%subject, "reading the history timed out");
                Vec::new()
            }
        };
        if let Some(sink) = sink.upgrade() {
            sink.history(key, kept);
        }
    }

    /// Every message the bars stream keeps of `symbol`'s `tf` bars (closed ones, and the
    /// bar in progress while it lives), within the time a history read may take.
    pub async fn read_bars(&self, symbol: &Symbol, tf: Timeframe) -> anyhow::Result<Vec<Bytes>> {
        let subject = bar_subject(tf, symbol, self.shards);
        tokio::time::timeout(HISTORY_TIMEOUT, self.history(&subject, &self.bars_stream))
            .await
            .map_err(|_| anyhow::anyhow!("reading {subject} timed out"))?
    }

    /// Every message `stream` keeps of `subject`, oldest first.
    async fn history(&self, subject: &str, stream: &str) -> anyhow::Result<Vec<Bytes>> {
        let kept = self.history_stamped(subject, stream).await?;
        Ok(kept.into_iter().map(|(payload, _)| payload).collect())
    }

    /// What the trades (`tf` none) or bars stream keeps of `key`'s subject and had stored
    /// by `by_us` (µs since the Unix epoch), oldest first, within the time a history read
    /// may take: a delayed tape's or bars' history.
    pub async fn kept_by(&self, key: &FeedKey, by_us: u64) -> anyhow::Result<Vec<Bytes>> {
        let (subject, stream) = match key.tf {
            None => (trade_subject(&key.symbol, self.shards), &self.trades_stream),
            Some(tf) => (bar_subject(tf, &key.symbol, self.shards), &self.bars_stream),
        };
        let read = self.history_stamped(&subject, stream);
        let kept = tokio::time::timeout(HISTORY_TIMEOUT, read)
            .await
            .map_err(|_| anyhow::anyhow!("reading {subject} timed out"))??;
        let by = kept.into_iter().filter(|(_, stored)| *stored <= by_us);
        Ok(by.map(|(payload, _)| payload).collect())
    }

    /// Every message `stream` keeps of `subject`, oldest first, with when it was stored
    /// (µs since the Unix epoch).
    async fn history_stamped(
        &self,
        subject: &str,
        stream: &str,
    ) -> anyhow::Result<Vec<(Bytes, u64)>> {
        let stream = self
            .hub_js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream}"))?;
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
        let mut out = Vec::with_capacity(pending.min(4096) as usize);
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await?;
        while let Some(msg) = messages.next().await {
            let msg = msg?;
            let info = msg.info();
            let left = info.as_ref().map_or(0, |i| i.pending);
            let stored = info.map_or(u64::MAX, |i| {
                u64::try_from(i.published.unix_timestamp_nanos() / 1000).unwrap_or(0)
            });
            out.push((msg.payload.clone(), stored));
            if left == 0 {
                break;
            }
        }
        Ok(out)
    }
}
