//! What each route answers, with the checks a WebSocket request of the same thing goes
//! through ([`crate::checks`]) and the bytes it would carry: a snapshot's tick objects are
//! the shared encodings of the WebSocket's `snapshot` messages without `type`, a chain
//! the `chains` reply, bars a `bars` message of the bar objects the WebSocket sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tickmesh_core::bar::{self, Timeframe};
use tickmesh_core::codec::json_array;
use tickmesh_core::protocol::{ErrorCode, ServerMsg};
use tickmesh_core::{Format, Mode, Symbol};

use super::query::{BarsPath, BarsQuery, SnapshotQuery};
use super::{Reply, Rest};
use crate::auth::{Coverage, Grant};
use crate::checks::{self, Checked, Refusals};
use crate::fanout::SharedTick;
use crate::nats::delayed::{SUBJECTS_PER_READ, samples_due};
use crate::nats::delayed_tape::now_us;
use crate::tape::{FeedKey, Shared, SharedBar};

/// What a snapshot request read of one symbol.
enum Value {
    Found(Arc<SharedTick>),
    /// KV has none: the symbol is in neither list, as a WebSocket `subscribe` sends no
    /// `snapshot` for it.
    Nothing,
    /// It could not be read in time.
    Failed,
}

impl Rest {
    /// `GET /v1/snapshot`: each symbol checked as a `subscribe` of a new session would
    /// check it (at most `max_symbols` accepted), then its value: the edge's own when it
    /// carries the symbol, else KV's through the snapshot cache; for a symbol the token
    /// covers only by `dly`, the value of `delayed.delay_ms` ago, with `delayed_ms`.
    pub(super) async fn snapshot(&self, grant: &Grant, q: SnapshotQuery) -> Reply {
        let edge = &self.edge;
        let limits = &edge.config.limits;
        if !edge.refdata.is_loaded() {
            return Reply::error(&checks::not_loaded(None, limits));
        }
        let entries = q.entries();
        let mut refusals = Refusals::new(None, limits.max_errors_per_request);
        let cap = checks::read_cap(grant, limits);
        let (symbols, _) = checks::cap_entries(&entries, &[], cap, &mut refusals);
        let mut room = grant.max_symbols as usize;
        // In the order asked: each symbol, and whether only `dly` covers it (its value is
        // then the one of `delayed.delay_ms` ago).
        let mut asked: Vec<(Symbol, bool)> = Vec::new();
        for symbol in checks::parse_symbols(symbols, &mut refusals) {
            let holder = "a snapshot may ask for";
            let coverage = grant.coverage(symbol.as_str(), &edge.refdata);
            let checked = checks::first_checks_covered(
                grant,
                &edge.refdata,
                &symbol,
                (coverage != Coverage::None, false, room),
                holder,
                &mut refusals,
            );
            if checked == Checked::New {
                room -= 1;
                asked.push((symbol, coverage == Coverage::Delayed));
            }
        }
        let mode = q.mode.unwrap_or_default();
        let of = |delayed: bool| -> Vec<Symbol> {
            let side = asked.iter().filter(|(_, d)| *d == delayed);
            side.map(|(s, _)| s.clone()).collect()
        };
        let mut live = self.values(&of(false)).await.into_iter();
        let mut late = self.delayed_values(&of(true)).await.into_iter();
        let mut ticks = Vec::with_capacity(asked.len());
        for (symbol, delayed) in &asked {
            let value = match delayed {
                true => late.next(),
                false => live.next(),
            };
            let value = value.unwrap_or(Value::Failed);
            match value {
                Value::Found(tick) => ticks.push(tick),
                Value::Nothing => {}
                Value::Failed => refusals.symbol_retry(
                    ErrorCode::Unavailable,
                    symbol.as_str(),
                    limits.retry_after_ms,
                    "its value could not be read in time: retry after retry_ms",
                ),
            }
        }
        Reply::ok(snapshot_body(&ticks, mode, &refusals.finish()))
    }

    /// The delayed values of `symbols`, in order: the edge's delayed core's when it
    /// carries the symbol, else the sample due now from the stream of delayed samples
    /// (never anything fresher, and never `md_last`).
    async fn delayed_values(&self, symbols: &[Symbol]) -> Vec<Value> {
        let edge = &self.edge;
        let local: Vec<Option<Arc<SharedTick>>> = symbols
            .iter()
            .map(|s| edge.delayed.latest(s.as_str()))
            .collect();
        let missing: Vec<&str> = symbols
            .iter()
            .zip(&local)
            .filter(|(_, l)| l.is_none())
            .map(|(s, _)| s.as_str())
            .collect();
        // Each batched read takes one of the `limits.rest_max_reads` places every REST read
        // shares, and all of them end by `snapshot.kv_timeout_ms`, as KV reads do.
        let cfg = &edge.config.delayed;
        let timeout = Duration::from_millis(edge.config.snapshot.kv_timeout_ms);
        let reads = async {
            let mut found: HashMap<String, Arc<SharedTick>> = HashMap::new();
            for chunk in missing.chunks(SUBJECTS_PER_READ) {
                let _place = self.reads.acquire().await?;
                let shards = edge.config.shards;
                let samples =
                    samples_due(&edge.nats, &cfg.stream, shards, chunk, cfg.delay_ms).await?;
                found.extend(samples.into_iter().map(|t| (t.tick.symbol.to_string(), t)));
            }
            anyhow::Ok(found)
        };
        let read = match tokio::time::timeout(timeout, reads).await {
            Ok(Ok(found)) => Some(found),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "delayed samples not read for REST");
                None
            }
            Err(_) => None,
        };
        local
            .into_iter()
            .zip(symbols)
            .map(|(l, symbol)| match (l, &read) {
                (Some(tick), _) => Value::Found(tick),
                (None, None) => Value::Failed,
                (None, Some(read)) => read
                    .get(symbol.as_str())
                    .map_or(Value::Nothing, |t| Value::Found(t.clone())),
            })
            .collect()
    }

    /// The values of `symbols`, in order: the edge's own, else KV reads (at most
    /// `limits.rest_max_reads` of all REST requests at once), all within
    /// `snapshot.kv_timeout_ms`.
    async fn values(&self, symbols: &[Symbol]) -> Vec<Value> {
        let runtime = &self.edge.runtime;
        let local: Vec<Option<Arc<SharedTick>>> =
            symbols.iter().map(|s| runtime.latest(s.as_str())).collect();
        let missing: Vec<Symbol> = symbols
            .iter()
            .zip(&local)
            .filter(|(_, l)| l.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        let found = local.iter().filter(|l| l.is_some()).count();
        metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => "local")
            .increment(found as u64);
        let mut read = if missing.is_empty() {
            Vec::new()
        } else {
            self.read_kv(missing).await
        }
        .into_iter();
        local
            .into_iter()
            .map(|l| match l {
                Some(tick) => Value::Found(tick),
                None => read.next().unwrap_or(Value::Failed),
            })
            .collect()
    }

    /// KV reads of `symbols` on the NATS thread, in order.
    async fn read_kv(&self, symbols: Vec<Symbol>) -> Vec<Value> {
        let snapshots = self.edge.snapshots.clone();
        let reads = self.reads.clone();
        let timeout = Duration::from_millis(self.edge.config.snapshot.kv_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let width = self.edge.config.limits.rest_max_reads;
        let n = symbols.len();
        let task = self.edge.nats.spawn(async move {
            let reads = futures_util::stream::iter(symbols).map(|symbol| {
                let (snapshots, reads) = (&snapshots, &reads);
                async move {
                    let read = snapshots.kv_within(&symbol, reads);
                    match tokio::time::timeout_at(deadline, read).await {
                        Ok((Some(tick), source)) => (Value::Found(tick), source),
                        Ok((None, "error")) | Err(_) => (Value::Failed, "error"),
                        Ok((None, source)) => (Value::Nothing, source),
                    }
                }
            });
            let read: Vec<(Value, &'static str)> = reads.buffered(width).collect().await;
            read.into_iter()
                .map(|(value, source)| {
                    metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => source)
                        .increment(1);
                    value
                })
                .collect::<Vec<_>>()
        });
        task.await
            .unwrap_or_else(|_| (0..n).map(|_| Value::Failed).collect())
    }

    /// `GET /v1/chains/{underlying}`: the WebSocket's `chains` answer.
    pub(super) fn chains(&self, grant: &Grant, underlying: String) -> Reply {
        let edge = &self.edge;
        let delayed = grant.coverage(&underlying, &edge.refdata) == Coverage::Delayed;
        let delay = delayed.then(|| Duration::from_millis(edge.config.delayed.delay_ms));
        match checks::chains(
            &edge.refdata,
            &edge.config.limits,
            (None, delay),
            underlying,
        ) {
            reply @ ServerMsg::Chains { .. } => Reply::ok(reply.encode(Format::Json)),
            error => Reply::error(&error),
        }
    }

    /// `GET /v1/bars/{symbol}`: the symbol checked as a `bars` subscription checks it, then
    /// its last `n` completed bars: those the edge holds when it follows the symbol's
    /// bars, else those the bars stream keeps.
    pub(super) async fn bars(&self, grant: &Grant, path: BarsPath, q: BarsQuery) -> Reply {
        let edge = &self.edge;
        let limits = &edge.config.limits;
        if !edge.refdata.is_loaded() {
            return Reply::error(&checks::not_loaded(None, limits));
        }
        let mut refusals = Refusals::new(None, 1);
        let [symbol] = &checks::parse_symbols(&[path.symbol], &mut refusals)[..] else {
            return Reply::refused(refusals);
        };
        let coverage = grant.coverage(symbol.as_str(), &edge.refdata);
        let covered = coverage != Coverage::None;
        let at = (covered, false, 1);
        let checked =
            checks::first_checks_covered(grant, &edge.refdata, symbol, at, "", &mut refusals);
        if checked != Checked::New {
            return Reply::refused(refusals);
        }
        let n = q.n.unwrap_or(bar::DEFAULT_HISTORY) as usize;
        let delayed = coverage == Coverage::Delayed;
        let held = match delayed {
            false => edge.bar_feeds.closed(symbol, q.tf, n),
            true => edge.delayed_bar_feeds.closed(symbol, q.tf, n),
        };
        let closed = match held {
            Some(closed) => closed,
            None => match self.read_bars(symbol, q.tf, n, delayed).await {
                Ok(closed) => closed,
                Err(why) => {
                    refusals.symbol_retry(
                        ErrorCode::Unavailable,
                        symbol.as_str(),
                        limits.retry_after_ms,
                        &format!("{why}: retry after retry_ms"),
                    );
                    return Reply::refused(refusals);
                }
            },
        };
        Reply::ok(bars_body(q.tf, &closed))
    }

    /// The last `n` closed bars the bars stream keeps, read on the NATS thread as one of
    /// `limits.rest_max_reads`; `delayed`: those it had stored `delayed.delay_ms` ago,
    /// told as delayed.
    async fn read_bars(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        n: usize,
        delayed: bool,
    ) -> Result<Vec<Arc<SharedBar>>, &'static str> {
        let delay_ms = delayed.then_some(self.edge.config.delayed.delay_ms);
        let timeout = Duration::from_millis(self.edge.config.snapshot.kv_timeout_ms);
        let (nats, reads, symbol) = (self.edge.nats.clone(), self.reads.clone(), symbol.clone());
        let started = Instant::now();
        let task = self.edge.nats.spawn(async move {
            let Ok(Ok(_permit)) = tokio::time::timeout(timeout, reads.acquire()).await else {
                return Err("too many reads in flight");
            };
            let read = match delay_ms {
                None => nats.read_bars(&symbol, tf).await,
                Some(ms) => {
                    let key = FeedKey {
                        symbol: symbol.clone(),
                        tf: Some(tf),
                    };
                    let by = now_us().saturating_sub(ms.saturating_mul(1000));
                    nats.kept_by(&key, by).await
                }
            };
            match read {
                Ok(payloads) => {
                    let closed = crate::bars::closed_in(&symbol, tf, &payloads, n);
                    Ok(match delay_ms {
                        None => closed,
                        Some(ms) => closed
                            .into_iter()
                            .map(|b| Arc::new(Shared::delayed(b.item.clone(), Some(ms))))
                            .collect(),
                    })
                }
                Err(e) => {
                    metrics::counter!("tickmesh_edge_history_errors_total").increment(1);
                    tracing::warn!(%symbol, error = %e, "reading bars for REST failed");
                    Err("the bars could not be read")
                }
            }
        });
        let read = task.await.unwrap_or(Err("the bars could not be read"));
        tracing::trace!(elapsed = ?started.elapsed(), "bars read for REST");
        read
    }
}

/// `{"snapshots":[tick objects],"errors":[error messages]}`.
pub(super) fn snapshot_body(
    ticks: &[Arc<SharedTick>],
    mode: Mode,
    errors: &[ServerMsg],
) -> Vec<u8> {
    let encoded_errors: Vec<Vec<u8>> = errors.iter().map(|e| e.encode(Format::Json)).collect();
    let size = ticks.len() * 256 + encoded_errors.iter().map(Vec::len).sum::<usize>() + 32;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(br#"{"snapshots":"#);
    json_array(
        &mut out,
        ticks.iter().map(|t| &t.encoded(Format::Json, mode)[..]),
    );
    out.extend_from_slice(br#","errors":"#);
    json_array(&mut out, encoded_errors.iter().map(Vec::as_slice));
    out.push(b'}');
    out
}

/// A `bars` message of `bars` (no `snapshot` flag).
pub(super) fn bars_body(tf: Timeframe, bars: &[Arc<SharedBar>]) -> Vec<u8> {
    let objects = bars.iter().map(|b| &b.encoded(Format::Json)[..]);
    bar::bars_frame(Format::Json, tf, false, objects)
}
