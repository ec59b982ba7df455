//! `tickmesh watch`: connect, subscribe, show, and come back after every drop, until
//! Ctrl-C.
//!
//! Reconnects wait with exponential backoff and full jitter, except after a `reconnect`
//! notice (the edge is draining: its `after_ms` is the wait). Close codes 4400-4499 and
//! upgrade refusals that a retry cannot fix (400, 401, 403, 404) end the command. The
//! seq gate and the refused symbols outlive connections: a symbol is never shown going
//! back in time, and a refused one is not asked for again.

use std::io;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tickmesh_core::{Format, Mode};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::account::{AccountFeed, Admit, describe};
use crate::backoff::{self, Backoff};
use crate::board::{Continuity, SeqGate};
use crate::conn::{self, Conn, Incoming};
use crate::render::{Level, Status};
use crate::view::{FRAME, View};

/// Longest wait for the upgrade, and then for `welcome`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat periods without any message before the connection is presumed dead (a
/// half-open TCP connection can stay silent for minutes).
pub const IDLE_HEARTBEATS: u32 = 3;

/// Error codes that end a symbol's subscription.
const REFUSALS: [&str; 4] = [
    "invalid_symbol",
    "unknown_symbol",
    "not_entitled",
    "too_many_symbols",
];

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The URL dialled (and shown).
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Valid, upper-case, without repeats.
    pub symbols: Vec<String>,
    pub mode: Mode,
    pub interval_ms: u32,
    pub format: Format,
    pub json: bool,
    /// An account to follow too.
    pub account: Option<String>,
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    Shutdown,
    /// The edge closed, or the connection was lost (`code` 1006) or never opened.
    Dropped {
        code: u16,
        reason: String,
        /// From a `reconnect` notice.
        drain_after: Option<Duration>,
    },
    AllRefused,
}

struct Watch {
    opts: Options,
    view: View,
    gate: SeqGate,
    continuity: Continuity,
    /// Symbols still asked for (refused ones leave for good).
    active: Vec<String>,
    next_id: i64,
    welcomed_before: bool,
    backoff: Backoff,
    /// The account followed, until refused.
    account: Option<AccountFeed>,
    /// When to ask again for what a whole `subscribe` was refused with `unavailable` (an
    /// edge still reading its reference data): after its `retry_ms`.
    retry_at: Option<Instant>,
}

/// Runs until `shutdown` (Ctrl-C), a terminal close, or stdout going away.
pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let status = Status {
        url: opts.url.clone(),
        state: "connecting".into(),
        encoding: match opts.format {
            Format::Json => "json".into(),
            Format::MsgPack => "msgpack".into(),
        },
        mode: opts.mode.as_str().into(),
        interval_ms: opts.interval_ms,
        ..Default::default()
    };
    let account = opts.account.as_deref().map(AccountFeed::new);
    let mut w = Watch {
        view: View::new(opts.json, &opts.symbols, status),
        active: opts.symbols.clone(),
        opts,
        gate: SeqGate::default(),
        continuity: Continuity::default(),
        next_id: 1,
        welcomed_before: false,
        backoff: Backoff::new(backoff::BASE, backoff::MAX),
        account,
        retry_at: None,
    };
    let result = w.run(&shutdown).await;
    w.view.finish().ok();
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

impl Watch {
    async fn run(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        loop {
            self.view.set_state("connecting", "");
            self.view.frame(Instant::now())?;
            let dialled = tokio::select! {
                r = conn::connect(&self.opts.url, self.opts.token.as_deref(), self.opts.format, CONNECT_TIMEOUT) => r,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let end = match dialled {
                Ok(conn) => self.session(conn, shutdown).await?,
                Err(e) if e.is_fatal() => anyhow::bail!("{}: {e}", self.opts.url),
                Err(e) => End::Dropped {
                    code: 1006,
                    reason: e.to_string(),
                    drain_after: None,
                },
            };
            let (code, reason, drain_after) = match end {
                End::Shutdown => return Ok(()),
                End::AllRefused => anyhow::bail!("the edge refused every symbol"),
                End::Dropped {
                    code,
                    reason,
                    drain_after,
                } => (code, reason, drain_after),
            };
            if (4400..=4499).contains(&code) {
                self.view.set_state("closed", format!("{code}"));
                anyhow::bail!("the edge closed the session for good ({code} {reason})");
            }
            let r: f64 = rand::random();
            let delay = match (drain_after, code) {
                (Some(after), _) => {
                    self.backoff.reset();
                    after
                }
                (None, 4029) => self.backoff.slow_delay(r),
                (None, _) => self.backoff.next_delay(r),
            };
            // A drain was announced with its delay already.
            if drain_after.is_none() {
                let why = if reason.is_empty() {
                    format!("closed ({code})")
                } else {
                    format!("closed ({code} {reason})")
                };
                self.view.note(
                    Level::Warn,
                    format!("{why}; reconnecting in {} ms", delay.as_millis()),
                );
            }
            if !self.wait(delay, shutdown).await? {
                return Ok(());
            }
        }
    }

    /// Waits `delay` with the table alive; false on shutdown.
    async fn wait(&mut self, delay: Duration, shutdown: &CancellationToken) -> io::Result<bool> {
        let until = Instant::now() + delay;
        let mut frames = tokio::time::interval(FRAME);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            self.view
                .set_state("reconnecting", format!("in {:.1} s", left.as_secs_f64()));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(left) => return Ok(true),
                _ = frames.tick() => self.view.frame(Instant::now())?,
            }
        }
    }

    async fn session(
        &mut self,
        mut conn: Conn,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<End> {
        let mut sub_id = None;
        let mut drain_after = None;
        let mut idle = CONNECT_TIMEOUT;
        let mut last_rx = Instant::now();
        let mut frames = tokio::time::interval(FRAME);
        frames.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let quiet_until = tokio::time::Instant::from_std(last_rx + idle);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    conn.close().await;
                    return Ok(End::Shutdown);
                }
                _ = frames.tick() => self.view.frame(Instant::now())?,
                _ = sleep_until(self.retry_at) => {
                    self.retry_at = None;
                    if let Err(e) = self.subscribe(&mut conn, &mut sub_id).await {
                        return Ok(End::Dropped { code: 1006, reason: e.to_string(), drain_after });
                    }
                }
                _ = tokio::time::sleep_until(quiet_until) => {
                    return Ok(End::Dropped {
                        code: 1006,
                        reason: format!("nothing received for {} ms", idle.as_millis()),
                        drain_after,
                    });
                }
                incoming = conn.recv() => {
                    last_rx = Instant::now();
                    let msg = match incoming {
                        Incoming::Closed { code, reason } => {
                            return Ok(End::Dropped { code, reason, drain_after });
                        }
                        Incoming::Undecodable(e) => {
                            self.view.note(Level::Warn, format!("undecodable frame: {e}"));
                            continue;
                        }
                        Incoming::Msg(v) => v,
                    };
                    let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
                    match kind {
                        "ticks" => self.ticks(&msg)?,
                        "gap" => self.gap(&msg),
                        "status" => self.status(&msg),
                        "snapshot" => self.snapshot(msg)?,
                        "hb" => self.view.status.lag_ms = msg.get("lag_ms").and_then(Value::as_u64),
                        "welcome" => {
                            idle = self.welcome(&msg);
                            self.retry_at = None;
                            if let Err(e) = self.subscribe(&mut conn, &mut sub_id).await {
                                return Ok(End::Dropped { code: 1006, reason: e.to_string(), drain_after });
                            }
                        }
                        "account" => self.account_event(&msg)?,
                        "account_snapshot" => self.account_snapshot(&msg)?,
                        "subscribed" => self.subscribed(&msg),
                        "error" if self.error(&msg, sub_id) => {
                            conn.close().await;
                            return Ok(End::AllRefused);
                        }
                        "reconnect" => {
                            let after = Duration::from_millis(msg.get("after_ms").and_then(Value::as_u64).unwrap_or(0));
                            drain_after = Some(after);
                            self.view.set_state("draining", format!("moving in {} ms", after.as_millis()));
                            self.view.note(Level::Warn, format!("the edge is draining; reconnecting in {} ms", after.as_millis()));
                        }
                        _ => {}
                    }
                    self.view.flush()?;
                }
            }
        }
    }

    /// Asks for the symbols still watched and the account (from its next seq).
    async fn subscribe(&mut self, conn: &mut Conn, sub_id: &mut Option<i64>) -> anyhow::Result<()> {
        let mut requests = Vec::new();
        if !self.active.is_empty() {
            let id = self.next_id;
            self.next_id += 1;
            *sub_id = Some(id);
            requests.push(json!({
                "op": "subscribe",
                "id": id,
                "symbols": self.active,
                "mode": self.opts.mode.as_str(),
                "interval_ms": self.opts.interval_ms,
            }));
        }
        if let Some(feed) = &self.account {
            requests.push(feed.request(self.next_id));
            self.next_id += 1;
        }
        for req in requests {
            conn.send(&req).await?;
        }
        Ok(())
    }

    /// Returns how long the connection may stay silent.
    fn welcome(&mut self, msg: &Value) -> Duration {
        self.backoff.reset();
        if self.welcomed_before {
            self.view.status.reconnects += 1;
        }
        self.welcomed_before = true;
        let edge = msg.get("edge").and_then(Value::as_str).unwrap_or("?");
        let session = msg.get("session").and_then(Value::as_str).unwrap_or("?");
        self.view.status.edge = Some(edge.to_string());
        self.view.set_state("open", "");
        self.view.note(
            Level::Info,
            format!("connected to {edge} (session {session})"),
        );
        if let Some(p) = msg
            .get("protocol")
            .and_then(Value::as_u64)
            .filter(|&p| p != 1)
        {
            self.view.note(
                Level::Warn,
                format!("the edge speaks protocol {p}; this client speaks 1"),
            );
        }
        match msg.get("heartbeat_ms").and_then(Value::as_u64) {
            Some(hb) if hb > 0 => Duration::from_millis(hb) * IDLE_HEARTBEATS,
            // No heartbeats promised: only the edge's pings keep the line busy.
            _ => Duration::from_secs(120),
        }
    }

    fn subscribed(&mut self, msg: &Value) {
        let effective = msg.get("interval_ms").and_then(Value::as_u64);
        if let Some(ms) = effective.and_then(|ms| u32::try_from(ms).ok()) {
            if ms != self.opts.interval_ms {
                self.view.note(
                    Level::Warn,
                    format!(
                        "the edge set interval_ms to {ms} (asked {})",
                        self.opts.interval_ms
                    ),
                );
            }
            self.view.status.interval_ms = ms;
        }
    }

    /// An account event: shown once, in order; a skipped seq is said.
    fn account_event(&mut self, msg: &Value) -> io::Result<()> {
        let Some(feed) = &mut self.account else {
            return Ok(());
        };
        let Some(seq) = msg.get("seq").and_then(Value::as_u64) else {
            return Ok(());
        };
        match feed.admit(seq) {
            Admit::Seen => return Ok(()),
            Admit::After { missing_from } => {
                let name = feed.name.clone();
                self.view.note(
                    Level::Warn,
                    format!("{name}: events {missing_from} to {} never came", seq - 1),
                );
            }
            Admit::Next => {}
        }
        let name = self
            .account
            .as_ref()
            .map(|f| f.name.clone())
            .unwrap_or_default();
        self.view.account(msg, format!("{name} {}", describe(msg)))
    }

    /// The account's state as of a seq: what follows is after it.
    fn account_snapshot(&mut self, msg: &Value) -> io::Result<()> {
        let Some(feed) = &mut self.account else {
            return Ok(());
        };
        let seq = msg.get("seq").and_then(Value::as_u64).unwrap_or_default();
        feed.snapshot(seq);
        let count = |k: &str| msg.get(k).and_then(Value::as_array).map_or(0, Vec::len);
        let text = format!(
            "{} as of #{seq}: {} positions, {} open orders, {} balances",
            feed.name,
            count("positions"),
            count("open_orders"),
            count("balances")
        );
        self.view.account(msg, text)
    }

    /// Shows a server error; true when nothing is left to watch.
    fn error(&mut self, msg: &Value, sub_id: Option<i64>) -> bool {
        let field = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or_default();
        if let Some(account) = msg.get("account").and_then(Value::as_str) {
            let (code, message) = (field("code"), field("message"));
            self.view
                .note(Level::Error, format!("{code} {account}: {message}"));
            // A refused account is not asked for again; `unavailable` brings a snapshot.
            if ["not_entitled", "bad_request", "too_many_symbols"].contains(&code) {
                self.account = None;
                return self.active.is_empty();
            }
            return false;
        }
        let (code, message, symbol) = (field("code"), field("message"), field("symbol"));
        let id = msg.get("id").and_then(Value::as_i64);
        let text = if symbol.is_empty() {
            format!("{code}: {message}")
        } else {
            format!("{code} {symbol}: {message}")
        };
        if code == "slow_consumer" {
            if let Some(ms) = msg.get("interval_ms").and_then(Value::as_u64) {
                self.view.status.interval_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            }
            self.view.note(Level::Warn, text);
            return false;
        }
        let about_subscription = id.is_none() || id == sub_id;
        if code == "unavailable" && symbol.is_empty() && id.is_some() && id == sub_id {
            // Refused whole: asked again after `retry_ms` (and a little more, at random).
            let retry = msg.get("retry_ms").and_then(Value::as_u64).unwrap_or(1000);
            let jitter = (retry as f64 * rand::random::<f64>() / 4.0) as u64;
            self.retry_at = Some(Instant::now() + Duration::from_millis(retry + jitter));
            self.view
                .note(Level::Warn, format!("{text}; asking again in {retry} ms"));
            return false;
        }
        self.view.note(Level::Error, text);
        if !symbol.is_empty() && REFUSALS.contains(&code) && about_subscription {
            self.view.refuse(symbol, code);
            self.active.retain(|s| s != symbol);
            return self.active.is_empty() && self.account.is_none();
        }
        false
    }

    fn ticks(&mut self, msg: &Value) -> io::Result<()> {
        let Some(ticks) = msg.get("ticks").and_then(Value::as_array) else {
            return Ok(());
        };
        for t in ticks {
            if let Some(fields) = t.as_object() {
                self.pass(fields, false)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, msg: Value) -> io::Result<()> {
        let Value::Object(mut fields) = msg else {
            return Ok(());
        };
        fields.remove("type");
        self.pass(&fields, true)
    }

    /// Ticks of a symbol that never reached the edge: noted, and counted as lost.
    fn gap(&mut self, msg: &Value) {
        let symbol = msg
            .get("symbol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let from = msg
            .get("from_seq")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        let to = msg.get("to_seq").and_then(Value::as_u64).unwrap_or(from);
        let reason = msg
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.continuity.gap(symbol, from, to);
        self.view.note(
            Level::Warn,
            format!(
                "{symbol}: {} ticks ({from}..={to}) never reached the edge ({reason})",
                to.saturating_sub(from) + 1
            ),
        );
    }

    /// A symbol's trading state changed, or it turned stale or fresh: noted (the row shows
    /// the state from the ticks).
    fn status(&mut self, msg: &Value) {
        let text = |key: &str| msg.get(key).and_then(Value::as_str).unwrap_or_default();
        let stale = msg.get("stale").and_then(Value::as_bool).unwrap_or(false);
        let level = match stale || text("state") == "halted" {
            true => Level::Warn,
            false => Level::Info,
        };
        let what = match (stale, text("state")) {
            (true, _) => "stale",
            (false, "") => "fresh",
            (false, state) => state,
        };
        let (symbol, reason) = (text("symbol"), text("reason"));
        self.view
            .note(level, format!("{symbol}: {what} ({reason})"));
    }

    /// The seq gate, the continuity check, then the view.
    fn pass(&mut self, fields: &Map<String, Value>, snapshot: bool) -> io::Result<()> {
        let symbol = fields.get("symbol").and_then(Value::as_str);
        let seq = fields.get("seq").and_then(Value::as_u64);
        let (Some(symbol), Some(seq)) = (symbol, seq) else {
            return Ok(());
        };
        let delayed = fields.contains_key("delayed_ms");
        if !self.gate.admit(symbol, seq, delayed) {
            self.view.status.stale = self.gate.stale();
            return Ok(());
        }
        let from_seq = fields.get("from_seq").and_then(Value::as_u64);
        let epoch = fields
            .get("epoch")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        if !self
            .continuity
            .tick(symbol, (epoch, seq), from_seq, snapshot)
        {
            self.view.note(
                Level::Warn,
                format!("{symbol}: seq {seq} does not follow from what came before (from_seq {from_seq:?})"),
            );
        }
        self.view.tick(fields, snapshot)
    }
}

/// Sleeps until `at`; for ever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
