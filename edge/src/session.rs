//! One WebSocket session: the only module that touches a client socket.
//!
//! A session is one task. It reads client requests, and when the fan-out core wakes it
//! (or its next flush is due) it drains its frames and writes them: every ready frame is
//! fed, then the socket is flushed once. A write that does not finish within
//! `session.write_timeout_ms` closes the session with 4008, so a client that stops
//! reading holds at most its socket buffers and its conflation state.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tickmesh_core::codec::ticks_frame;
use tickmesh_core::protocol::{
    self, ClientMsg, ErrorCode, Limits, Request, ServerMsg, Subscribe, SubscriptionInfo, close,
};
use tickmesh_core::{Format, Symbol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::fanout::{Drained, SessionId};
use crate::server::Edge;

/// Why a session ends.
enum End {
    /// The client closed or the connection broke.
    Gone,
    /// We close with this code and reason.
    Close(u16, &'static str),
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Session<S> {
    id: SessionId,
    format: Format,
    edge: Arc<Edge>,
    ws: WebSocketStream<S>,
    /// `ts` of the freshest tick sent, for `hb.lag_ms`.
    freshest_ts: Option<u64>,
    last_heard: Instant,
}

/// Runs a session until the client leaves, it is closed, or the edge drains.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    edge: Arc<Edge>,
    format: Format,
    peer: Option<SocketAddr>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let notify = Arc::new(Notify::new());
    let id = edge.hub.join(notify.clone());
    let encoding = match format {
        Format::Json => "json",
        Format::MsgPack => "msgpack",
    };
    metrics::gauge!("tickmesh_edge_sessions", "encoding" => encoding).increment(1.0);
    metrics::counter!("tickmesh_edge_sessions_total", "encoding" => encoding).increment(1);
    tracing::debug!(session = id, ?peer, encoding, "session opened");
    let mut session = Session {
        id,
        format,
        edge: edge.clone(),
        ws,
        freshest_ts: None,
        last_heard: Instant::now(),
    };
    let end = session.serve(&notify).await;
    edge.hub.leave(id);
    metrics::gauge!("tickmesh_edge_sessions", "encoding" => encoding).decrement(1.0);
    if let End::Close(code, reason) = end {
        if code == close::SLOW_CONSUMER {
            metrics::counter!("tickmesh_edge_slow_consumer_total", "action" => "closed")
                .increment(1);
        }
        session.close(code, reason).await;
    }
    tracing::debug!(session = id, "session closed");
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn serve(&mut self, notify: &Notify) -> End {
        let edge = self.edge.clone();
        let cfg = &edge.config.session;
        let welcome = ServerMsg::Welcome {
            protocol: protocol::VERSION,
            session: format!("{}-{}", self.edge.config.name, self.id),
            edge: self.edge.config.name.clone(),
            heartbeat_ms: cfg.heartbeat_ms,
            limits: Limits {
                max_symbols: self.edge.config.limits.max_symbols,
                max_msgs_per_s: self.edge.config.limits.max_msgs_per_s,
                min_interval_ms: self.edge.config.limits.min_interval_ms,
            },
        };
        if let Err(end) = self.send(vec![self.message(&welcome)]).await {
            return end;
        }
        let mut heartbeat =
            tokio::time::interval(Duration::from_millis(u64::from(cfg.heartbeat_ms)));
        heartbeat.tick().await;
        let mut ping = tokio::time::interval(Duration::from_millis(cfg.ping_interval_ms));
        ping.tick().await;
        let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms);
        let mut due: Option<tokio::time::Instant> = None;
        let shutdown = self.edge.shutdown.clone();
        loop {
            let flush_at = due;
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.drain_and_leave().await,
                msg = self.ws.next() => self.on_message(msg).await,
                _ = notify.notified() => self.flush().await.map(|next| due = next),
                _ = sleep_until(flush_at) => self.flush().await.map(|next| due = next),
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > idle_timeout {
                        return End::Close(close::NORMAL, "idle timeout");
                    }
                    self.send(vec![Message::Ping(Default::default())]).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn message(&self, msg: &ServerMsg) -> Message {
        self.frame(msg.encode(self.format))
    }

    fn frame(&self, bytes: impl Into<bytes::Bytes>) -> Message {
        match self.format {
            Format::Json => Message::Text(
                Utf8Bytes::try_from(bytes.into()).expect("JSON encoders only write UTF-8"),
            ),
            Format::MsgPack => Message::Binary(bytes.into()),
        }
    }

    /// Feeds every message, then flushes once, within the write timeout.
    async fn send(&mut self, msgs: Vec<Message>) -> Result<(), End> {
        if msgs.is_empty() {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.edge.config.session.write_timeout_ms);
        let ws = &mut self.ws;
        let write = async move {
            for m in msgs {
                ws.feed(m).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close::SLOW_CONSUMER, "slow consumer")),
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // A client that stopped reading may never take the close frame: bound the wait.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.ws.close(Some(frame))).await;
    }

    async fn drain_and_leave(&mut self) -> End {
        let window = self.edge.config.shutdown.reconnect_window_ms;
        let after_ms = if window == 0 {
            0
        } else {
            rand::rng().random_range(0..window)
        };
        let msg = ServerMsg::Reconnect {
            after_ms,
            reason: "draining".into(),
        };
        let _ = self.send(vec![self.message(&msg)]).await;
        End::Close(close::DRAINING, "draining")
    }

    async fn flush(&mut self) -> Result<Option<tokio::time::Instant>, End> {
        let Drained {
            frames,
            slow_consumer,
            next_due,
        } = self.edge.hub.drain(self.id, Instant::now());
        let mut out = Vec::with_capacity(frames.len() + 1);
        if let Some(interval_ms) = slow_consumer {
            metrics::counter!("tickmesh_edge_slow_consumer_total", "action" => "conflated")
                .increment(1);
            out.push(self.message(&ServerMsg::Error {
                id: None,
                code: ErrorCode::SlowConsumer,
                message: format!(
                    "falling behind; every-tick subscriptions now update every {interval_ms} ms"
                ),
                symbol: None,
                interval_ms: Some(interval_ms),
            }));
        }
        let mut updates = 0u64;
        for frame in frames {
            updates += frame.len() as u64;
            if let Some(ts) = frame.iter().map(|(t, _)| t.tick.ts).max() {
                self.freshest_ts = Some(self.freshest_ts.map_or(ts, |f| f.max(ts)));
            }
            let bytes = ticks_frame(
                self.format,
                frame.iter().map(|(t, m)| &t.encoded(self.format, *m)[..]),
            );
            metrics::counter!("tickmesh_edge_bytes_out_total").increment(bytes.len() as u64);
            out.push(self.frame(bytes));
        }
        metrics::counter!("tickmesh_edge_updates_out_total").increment(updates);
        self.send(out).await?;
        Ok(next_due.map(tokio::time::Instant::from_std))
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        let ts = now_us();
        let lag_ms = self.freshest_ts.map(|f| ts.saturating_sub(f) / 1000);
        let hb = self.message(&ServerMsg::Hb { ts, lag_ms });
        self.send(vec![hb]).await
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        self.last_heard = Instant::now();
        let msg = match msg {
            None => return Err(End::Gone),
            Some(Ok(msg)) => msg,
            Some(Err(tungstenite::Error::Capacity(_))) => {
                return Err(End::Close(close::TOO_LARGE, "message too large"));
            }
            Some(Err(_)) => return Err(End::Gone),
        };
        let (format, bytes) = match &msg {
            Message::Text(t) => (Format::Json, t.as_bytes()),
            Message::Binary(b) => (Format::MsgPack, &b[..]),
            Message::Close(_) => {
                // Answer the close so that the client sees a clean 1000, not 1006.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.flush()).await;
                return Err(End::Gone);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        if bytes.len() > self.edge.config.session.max_message_bytes {
            return Err(End::Close(close::TOO_LARGE, "message too large"));
        }
        let replies = match protocol::decode_client(format, bytes) {
            Ok(req) => self.on_request(req).await?,
            Err(e) => {
                metrics::counter!("tickmesh_edge_errors_total", "code" => "bad_request")
                    .increment(1);
                vec![ServerMsg::error(e.id, ErrorCode::BadRequest, e.message)]
            }
        };
        let replies = replies.iter().map(|m| self.message(m)).collect();
        self.send(replies).await
    }

    async fn on_request(
        &mut self,
        ClientMsg { id, request }: ClientMsg,
    ) -> Result<Vec<ServerMsg>, End> {
        Ok(match request {
            Request::Subscribe(sub) => return self.subscribe(id, sub).await,
            Request::Unsubscribe(unsub) => {
                let mut replies = Vec::new();
                let symbols = self.parse_symbols(id, &unsub.symbols, &mut replies);
                let removed = self.edge.hub.unsubscribe(self.id, &symbols);
                replies.extend(unsub.chains.iter().map(|c| no_chains(id, c)));
                replies.push(ServerMsg::Unsubscribed {
                    id,
                    symbols: removed.iter().map(|s| s.to_string()).collect(),
                    chains: Vec::new(),
                });
                replies
            }
            Request::Ping => vec![ServerMsg::Pong { id }],
            Request::List => {
                let subscriptions = self
                    .edge
                    .hub
                    .subscriptions(self.id)
                    .into_iter()
                    .map(|(symbol, sub)| SubscriptionInfo {
                        symbol: symbol.to_string(),
                        mode: sub.mode,
                        interval_ms: sub.interval_ms,
                    })
                    .collect();
                vec![ServerMsg::Subscriptions { id, subscriptions }]
            }
            Request::Chains { underlying } => vec![no_chains(id, &underlying)],
            Request::Auth { .. } => vec![ServerMsg::error(
                id,
                ErrorCode::Unauthorized,
                "this edge does not take tokens: sessions are anonymous",
            )],
        })
    }

    fn parse_symbols(
        &self,
        id: Option<i64>,
        raw: &[String],
        errors: &mut Vec<ServerMsg>,
    ) -> Vec<Symbol> {
        let mut seen = HashSet::new();
        let mut symbols = Vec::new();
        for s in raw {
            match Symbol::parse(s) {
                Ok(symbol) => {
                    if seen.insert(symbol.clone()) {
                        symbols.push(symbol);
                    }
                }
                Err(e) => {
                    metrics::counter!("tickmesh_edge_errors_total", "code" => "invalid_symbol")
                        .increment(1);
                    errors.push(ServerMsg::symbol_error(
                        id,
                        ErrorCode::InvalidSymbol,
                        s,
                        e.to_string(),
                    ));
                }
            }
        }
        symbols
    }

    /// Replies (errors, `subscribed`), then the snapshots; returns nothing more to send.
    async fn subscribe(&mut self, id: Option<i64>, req: Subscribe) -> Result<Vec<ServerMsg>, End> {
        let edge = self.edge.clone();
        let limits = &edge.config.limits;
        let interval_ms = req
            .interval_ms
            .unwrap_or(protocol::DEFAULT_INTERVAL_MS)
            .clamp(limits.min_interval_ms, 60_000);
        let mut replies = Vec::new();
        let candidates = self.parse_symbols(id, &req.symbols, &mut replies);
        replies.extend(req.chains.iter().map(|c| no_chains(id, c)));

        let hub = &edge.hub;
        let mut room =
            (limits.max_symbols as usize).saturating_sub(hub.subscription_count(self.id));
        let mut accepted = Vec::with_capacity(candidates.len());
        for symbol in candidates {
            if hub.is_subscribed(self.id, symbol.as_str()) {
                accepted.push(symbol);
            } else if room > 0 {
                room -= 1;
                accepted.push(symbol);
            } else {
                metrics::counter!("tickmesh_edge_errors_total", "code" => "too_many_symbols")
                    .increment(1);
                replies.push(ServerMsg::symbol_error(
                    id,
                    ErrorCode::TooManySymbols,
                    symbol.as_str(),
                    format!("a session may hold at most {} symbols", limits.max_symbols),
                ));
            }
        }
        let outcomes = hub.subscribe(self.id, &accepted, req.mode, interval_ms);
        replies.push(ServerMsg::Subscribed {
            id,
            symbols: accepted.iter().map(|s| s.to_string()).collect(),
            chains: Vec::new(),
            interval_ms,
            mode: req.mode,
        });
        // Replies first, then one snapshot per symbol that has a last value.
        let replies_msgs: Vec<Message> = replies.iter().map(|m| self.message(m)).collect();
        self.send(replies_msgs).await?;
        let kv_reads = accepted.iter().zip(&outcomes).map(|(symbol, outcome)| {
            let snapshots = &edge.snapshots;
            let local = outcome.latest.is_some();
            async move {
                if local {
                    metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => "local")
                        .increment(1);
                    None
                } else {
                    snapshots.kv(symbol).await
                }
            }
        });
        let from_kv = futures_util::future::join_all(kv_reads).await;
        let mut snapshots = Vec::new();
        for (symbol, candidate) in accepted.iter().zip(from_kv) {
            if let Some(tick) = hub.take_snapshot(self.id, symbol.as_str(), candidate) {
                snapshots.push(self.frame(tick.snapshot(self.format, req.mode).clone()));
            }
        }
        self.send(snapshots).await?;
        Ok(Vec::new())
    }
}

fn no_chains(id: Option<i64>, chain: &str) -> ServerMsg {
    ServerMsg::symbol_error(
        id,
        ErrorCode::UnknownSymbol,
        chain,
        "no option chain reference data on this edge",
    )
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
