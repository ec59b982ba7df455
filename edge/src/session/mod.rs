//! One session: the only module that touches a client connection, through its
//! [`Transport`] (a WebSocket, or Server-Sent Events).
//!
//! A session is one task. It reads client requests ([`requests`]), and when the fan-out
//! core wakes it (or its next flush is due) it drains its frames and writes them: every
//! ready frame is fed, then the transport is flushed once. A write that does not finish
//! within `session.write_timeout_ms` closes the session with 4008, so a client that stops
//! reading holds at most its socket buffers and its conflation state.

mod accounts;
use crate::checks::refusals;
mod requests;
mod tapes;
#[cfg(test)]
mod tests;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tickmesh_core::codec::{ticks_frame, with_from_seq};
use tickmesh_core::protocol::{self, ErrorCode, Limits, ServerMsg, StreamKind, close};
use tickmesh_core::subject::shard;
use tickmesh_core::tick::{State, now_us};
use tickmesh_core::{Format, Symbol};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::account::AccountItem;
use crate::auth::Grant;
use crate::fanout::{Drained, SessionId, Update};
use crate::limits::{Admission, TokenBucket};
use crate::liveness::Quiet;
use crate::state::{Edge, EdgeMember};
use crate::tape::{SharedBar, SharedTrade, TapeItem};
use crate::upstream::Upstream;
use crate::usage::SessionUsage;
use accounts::HeldAccounts;
use tapes::HeldTapes;
use tickmesh_core::account;
use tickmesh_core::bar::Timeframe;
use tickmesh_core::trade::trades_frame;
use tickmesh_core::usage::Class;
pub use transport::Transport;

/// Why a session ends.
enum End {
    /// The client closed or the connection broke.
    Gone,
    /// We close with this code and reason.
    Close(u16, &'static str),
}

/// What a session was told is stale.
#[derive(Debug)]
struct Stale {
    /// The state of the edge's NATS connection, as last seen.
    upstream: Upstream,
    /// Subscribed symbols told `stale: true` and not since `stale: false`.
    told: HashSet<Symbol>,
}

impl Default for Stale {
    fn default() -> Self {
        Stale {
            upstream: Upstream::Fresh,
            told: HashSet::new(),
        }
    }
}

impl Stale {
    /// Whether a change of subscriptions may change what is stale.
    fn watching(&self, quiet: &Quiet) -> bool {
        self.upstream != Upstream::Fresh || !self.told.is_empty() || !quiet.is_empty()
    }
}

/// Who the session is, decided at the upgrade.
#[derive(Debug)]
pub struct Identity {
    pub grant: Grant,
    /// Held for the session's life: its place in the connection counts.
    pub admission: Admission,
    pub peer: Option<SocketAddr>,
}

struct Session<T> {
    id: SessionId,
    /// Its place in the runtime, for drains.
    member: EdgeMember,
    format: Format,
    edge: Arc<Edge>,
    /// Its connection: a WebSocket, or an SSE response ([`crate::sse`]).
    ws: T,
    grant: Grant,
    admission: Admission,
    /// The interval each subscription asked for, before the tier's minimum.
    requested: HashMap<Symbol, u32>,
    bucket: TokenBucket,
    /// Client messages refused by the rate limit in a row.
    strikes: u32,
    /// `ts` of the freshest tick sent, for `hb.lag_ms`.
    freshest_ts: Option<u64>,
    /// When the last `hb` went out.
    last_hb: Instant,
    /// When the session last subscribed to a symbol whose snapshot it awaits; recorded
    /// (and cleared) by the first flush that sends awaited snapshots.
    awaiting_since: Option<Instant>,
    last_heard: Instant,
    /// What every flush counts, looked up once: a lookup by name costs a lock and a hash
    /// in the recorder on every flush of every session.
    counted: Counted,
    /// Its `trades` subscriptions and their inbox.
    tapes: HeldTapes,
    /// Its account subscriptions and their queue.
    accounts: HeldAccounts,
    /// Its place in the delayed core, made with its first delayed subscription (boxed:
    /// most sessions hold none).
    delayed: Option<Box<DelayedPlace>>,
    /// Its part of the usage records.
    usage: SessionUsage,
    /// Symbols it holds delayed that left the reference data, and when it saw them go:
    /// a delayed holder is told `delayed.delay_ms` later (see `drop_delisted`).
    delisted: HashMap<Symbol, tokio::time::Instant>,
}

/// A session's place in the delayed core ([`Edge::delayed`]), left on drop.
struct DelayedPlace {
    edge: Arc<Edge>,
    member: EdgeMember,
}

impl Drop for DelayedPlace {
    fn drop(&mut self) {
        self.edge.delayed.leave(&self.member);
    }
}

struct Counted {
    bytes_out: metrics::Counter,
    updates_out: metrics::Counter,
    queue_bytes: metrics::Histogram,
    dwell: metrics::Histogram,
}

impl Counted {
    fn new() -> Self {
        Counted {
            bytes_out: metrics::counter!("tickmesh_edge_bytes_out_total"),
            updates_out: metrics::counter!("tickmesh_edge_updates_out_total"),
            queue_bytes: metrics::histogram!("tickmesh_edge_session_queue_bytes"),
            dwell: metrics::histogram!("tickmesh_edge_tick_dwell_seconds"),
        }
    }
}

/// A session that runs until the client leaves, it is closed, or the edge drains. Its
/// state is made here, outside the future, so that the future holds it once (an async
/// fn would keep its arguments' room beside the session for the session's whole life:
/// about 1 KiB of every idle connection).
pub fn run<T>(ws: T, edge: Arc<Edge>, format: Format, who: Identity) -> impl Future<Output = ()>
where
    T: Transport,
{
    let notify = Arc::new(Notify::new());
    let encoding = match format {
        Format::Json => "json",
        Format::MsgPack => "msgpack",
    };
    let joined = Joined::new(&edge, notify.clone(), who.grant.max_symbols, encoding);
    let id = joined.member.id();
    metrics::counter!("tickmesh_edge_sessions_total", "encoding" => encoding).increment(1);
    let user = who.grant.sub.clone().unwrap_or_else(|| "-".into());
    tracing::debug!(session = id, peer = ?who.peer, %user, encoding, "session opened");
    let usage = edge.usage.session(&who.grant);
    let mut session = Session {
        id,
        usage,
        delisted: HashMap::new(),
        member: joined.member.clone(),
        format,
        edge: edge.clone(),
        ws,
        bucket: TokenBucket::new(who.grant.max_msgs_per_s, Instant::now()),
        grant: who.grant,
        admission: who.admission,
        requested: HashMap::new(),
        strikes: 0,
        freshest_ts: None,
        last_hb: Instant::now(),
        awaiting_since: None,
        last_heard: Instant::now(),
        counted: Counted::new(),
        tapes: HeldTapes::new(edge.clone(), id),
        accounts: HeldAccounts::new(edge.clone()),
        delayed: None,
    };
    async move {
        let end = session.serve(&notify).await;
        // Its last sight of what it held, before letting go of it.
        session.report_usage(true);
        drop(joined);
        session.delayed = None;
        if let End::Close(code, reason) = end {
            if code == close::SLOW_CONSUMER {
                metrics::counter!("tickmesh_edge_slow_consumer_total", "action" => "closed")
                    .increment(1);
            }
            metrics::counter!("tickmesh_edge_closes_total", "code" => code.to_string())
                .increment(1);
            if code == close::SLOW_CONSUMER {
                session.cut_slow_consumer().await;
            } else {
                session
                    .close(code, reason, Vec::new(), Duration::from_secs(1))
                    .await;
            }
        }
        tracing::debug!(session = id, %user, "session closed");
    }
}

/// A session's place in the edge: its fan-out state (and through it the NATS interest of
/// the symbols only it held) and its count in `tickmesh_edge_sessions`. Given back on
/// drop, so that a session task that panics leaks none of it; its place in the
/// connection counts is its [`Admission`], given back the same way.
struct Joined {
    edge: Arc<Edge>,
    member: EdgeMember,
    encoding: &'static str,
}

impl Joined {
    fn new(
        edge: &Arc<Edge>,
        notify: Arc<Notify>,
        max_symbols: u32,
        encoding: &'static str,
    ) -> Self {
        let member = edge.runtime.join(notify, max_symbols);
        metrics::gauge!("tickmesh_edge_sessions", "encoding" => encoding).increment(1.0);
        Joined {
            edge: edge.clone(),
            member,
            encoding,
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.edge.runtime.leave(&self.member);
        metrics::gauge!("tickmesh_edge_sessions", "encoding" => self.encoding).decrement(1.0);
    }
}

impl<T> Session<T>
where
    T: Transport,
{
    fn welcome(&self) -> ServerMsg {
        ServerMsg::Welcome {
            protocol: protocol::VERSION,
            session: format!("{}-{}", self.edge.config.name, self.id),
            edge: self.edge.config.name.clone(),
            heartbeat_ms: self.edge.config.session.heartbeat_ms,
            limits: Limits {
                max_symbols: self.grant.max_symbols,
                max_msgs_per_s: self.grant.max_msgs_per_s,
                min_interval_ms: self.grant.min_interval_ms,
                delay_ms: self.edge.config.delayed.delay_ms,
            },
        }
    }

    /// The session's place in the delayed core, joined on first use.
    fn delayed_member(&mut self) -> EdgeMember {
        let edge = &self.edge;
        let member = &self.member;
        let max_symbols = self.grant.max_symbols;
        let place = self.delayed.get_or_insert_with(|| {
            Box::new(DelayedPlace {
                edge: edge.clone(),
                member: edge.delayed.join(member.waker().clone(), max_symbols),
            })
        });
        place.member.clone()
    }

    /// The session's tick subscriptions, real-time and delayed, each with whether it is
    /// delayed.
    fn tick_subscriptions(&self) -> Vec<(Symbol, crate::fanout::Sub, bool)> {
        let live = self.edge.runtime.subscriptions(self.id);
        let delayed = match &self.delayed {
            Some(place) => self.edge.delayed.subscriptions(place.member.id()),
            None => Vec::new(),
        };
        let live = live.into_iter().map(|(s, sub)| (s, sub, false));
        live.chain(delayed.into_iter().map(|(s, sub)| (s, sub, true)))
            .collect()
    }

    /// How many tick subscriptions the session holds, real-time and delayed.
    fn tick_subscription_count(&self) -> usize {
        self.edge.runtime.subscription_count(self.id)
            + self.delayed.as_ref().map_or(0, |place| {
                self.edge.delayed.subscription_count(place.member.id())
            })
    }

    /// Ends the tick subscriptions to `symbols`, real-time or delayed; returns those it
    /// held, in order.
    fn unsubscribe_ticks(&mut self, symbols: &[Symbol]) -> Vec<Symbol> {
        let mut removed = self.edge.runtime.unsubscribe(self.id, symbols);
        if let Some(place) = &self.delayed {
            let delayed = self.edge.delayed.unsubscribe(place.member.id(), symbols);
            removed.extend(delayed);
            removed.sort_by_key(|s| symbols.iter().position(|x| x == s));
        }
        removed
    }

    /// Reports to the usage records the feed and class (real time or delayed) of every
    /// symbol the session holds: when `due` (the session ends, or `usage.touch_ms` passed),
    /// or when what it holds changed.
    fn report_usage(&mut self, due: bool) {
        let edge = self.edge.clone();
        if !edge.usage.enabled() {
            return;
        }
        let delayed = self.delayed.as_ref().map_or(0, |place| {
            edge.delayed.subscription_count(place.member.id())
        });
        let counts = (
            edge.runtime.subscription_count(self.id),
            delayed,
            self.tapes.len(),
        );
        if (!self.usage.held(counts) && !due) || counts == (0, 0, 0) {
            return;
        }
        let ticks = self.tick_subscriptions();
        let ticks = ticks.iter().map(|(s, _, delayed)| (s, *delayed));
        let held: Vec<(&Symbol, bool)> = ticks.chain(self.tapes.all_symbols()).collect();
        let symbols = held.iter().map(|(s, _)| s.as_str());
        let classes = held.iter().map(|(_, delayed)| match delayed {
            true => Class::Delayed,
            false => Class::RealTime,
        });
        let feeds = edge.refdata.feeds_of(symbols);
        let held: std::collections::BTreeSet<(&str, Class)> =
            feeds.iter().map(String::as_str).zip(classes).collect();
        if held.is_empty() {
            return;
        }
        edge.usage.touch(&mut self.usage, held, Instant::now());
    }

    async fn serve(&mut self, notify: &Arc<Notify>) -> End {
        let edge = self.edge.clone();
        let cfg = &edge.config.session;
        // Watched from before the check: a revocation that lands after the token was
        // verified at the upgrade is either seen here or wakes the loop below.
        let mut revocations = edge.revocations.subscribe();
        if let Err(end) = self.check_grant().await {
            return end;
        }
        if let Err(end) = self.send(vec![self.message(&self.welcome())]).await {
            return end;
        }
        let mut heartbeat =
            tokio::time::interval(Duration::from_millis(u64::from(cfg.heartbeat_ms)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        heartbeat.tick().await;
        let mut ping = tokio::time::interval(Duration::from_millis(cfg.ping_interval_ms));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ping.tick().await;
        let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms);
        // Made once: each session's wait sits in the token's shared waiter list, which a
        // wait made anew every time round the loop would lock twice per wake-up.
        let shutdown = edge.shutdown.cancelled();
        tokio::pin!(shutdown);
        let mut due: Option<tokio::time::Instant> = None;
        // The flush and expiry timers are kept across turns and moved only when their
        // deadline does: made anew each turn, each would be put into the runtime's timer
        // wheel and taken out again on every wake-up, for every session.
        let never = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let flush_timer = tokio::time::sleep_until(never);
        tokio::pin!(flush_timer);
        let mut flush_armed: Option<tokio::time::Instant> = None;
        // With the shared clock, the session's flushes are woken by the edge's clock
        // rather than a timer of its own: the instant it asked the clock for.
        let shared_clock = cfg.shared_clock;
        let mut asked: Option<tokio::time::Instant> = None;
        let expiry_timer = tokio::time::sleep_until(never);
        tokio::pin!(expiry_timer);
        // The token expiry the timer was set for (`None`: not set yet).
        let mut expiry_for: Option<Option<u64>> = None;
        // Draining: the session was told to reconnect and is closed at this instant;
        // until then it streams as before.
        let mut leave_at: Option<tokio::time::Instant> = None;
        let mut upstream = edge.upstream.clone();
        let mut upstream_open = true;
        // What the session was told is stale, and why (kept to its subscriptions, so
        // bounded by them).
        let mut stale = Stale::default();
        let mut quiet = edge.owners.subscribe();
        let mut quiet_open = true;
        let mut tape_items = Vec::new();
        let mut account_items = Vec::new();
        let mut delistings = edge.refdata.delistings();
        let mut delistings_open = true;
        loop {
            if shared_clock {
                if let Some(at) = due
                    && asked.is_none_or(|a| at < a || (at > a && a <= tokio::time::Instant::now()))
                {
                    edge.clock.wake_at(at, notify);
                    asked = Some(at);
                }
            } else if due != flush_armed {
                if let Some(at) = due {
                    flush_timer.as_mut().reset(at);
                }
                flush_armed = due;
            }
            if expiry_for != Some(self.grant.exp) {
                if let Some(at) = self.expiry() {
                    expiry_timer.as_mut().reset(at);
                }
                expiry_for = Some(self.grant.exp);
            }
            let expires = self.grant.exp.is_some();
            let step = tokio::select! {
                biased;
                _ = &mut shutdown, if leave_at.is_none() => {
                    self.announce_drain("draining").await.map(|at| leave_at = Some(at))
                }
                changed = upstream.changed(), if upstream_open => {
                    if changed.is_err() {
                        upstream_open = false;
                        Ok(())
                    } else {
                        let state = *upstream.borrow_and_update();
                        let quiet = quiet.borrow().clone();
                        Box::pin(self.on_upstream(state, &quiet, &mut stale, &mut leave_at)).await
                    }
                }
                changed = quiet.changed(), if quiet_open => {
                    if changed.is_err() {
                        quiet_open = false;
                        Ok(())
                    } else {
                        let quiet = quiet.borrow_and_update().clone();
                        self.restale(&quiet, &mut stale, "feed back").await
                    }
                }
                changed = delistings.changed(), if delistings_open => {
                    if changed.is_err() {
                        delistings_open = false;
                        Ok(())
                    } else {
                        delistings.borrow_and_update();
                        self.drop_delisted().await
                    }
                }
                _ = sleep_until(self.delisted_due()) => self.drop_delisted().await,
                _ = sleep_until(leave_at) => return End::Close(close::DRAINING, "draining"),
                _ = revocations.changed() => self.check_grant().await,
                _ = &mut expiry_timer, if expires => {
                    let msg = ServerMsg::error(None, ErrorCode::TokenExpired, "the token expired: send auth with a fresh one, or reconnect");
                    let _ = self.send(vec![self.message(&msg)]).await;
                    return End::Close(close::UNAUTHORIZED, "token expired");
                }
                // Boxed: a client's request is rare next to the session's life, and its
                // future is the largest of the loop's (kept out of every idle session).
                msg = self.ws.read() => match Box::pin(self.on_message(msg)).await.inspect(|()| self.report_usage(false)) {
                    Ok(()) if stale.watching(&quiet.borrow()) => {
                        let quiet = quiet.borrow().clone();
                        self.restale(&quiet, &mut stale, "feed back").await
                    }
                    step => step,
                },
                _ = notify.notified() => self.flush(&mut heartbeat, &stale.told).await.map(|next| due = next),
                () = self.tapes.next(&mut tape_items) => self.write_tapes(&mut tape_items).await,
                () = self.accounts.next(&mut account_items) => self.write_accounts(&mut account_items).await,
                _ = &mut flush_timer, if !shared_clock && flush_armed.is_some() => {
                    // Fired: armed again at the top only if the flush asks to come back.
                    flush_armed = None;
                    self.flush(&mut heartbeat, &stale.told).await.map(|next| due = next)
                }
                _ = heartbeat.tick() => {
                    if self.usage.due(self.edge.usage.touch_every(), Instant::now()) {
                        self.report_usage(true);
                    }
                    self.heartbeat().await
                }
                _ = ping.tick() => {
                    if self.ws.answers_pings() && self.last_heard.elapsed() > idle_timeout {
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

    /// Ends the session if its token was revoked (4403) or the key that verified it was
    /// dropped by a key reload (`unauthorized`, then 4401: a token from a current key works).
    async fn check_grant(&mut self) -> Result<(), End> {
        let verifier = &self.edge.verifier;
        if verifier.is_grant_revoked(&self.grant) {
            return Err(End::Close(close::FORBIDDEN, "token revoked"));
        }
        if !verifier.is_grant_trusted(&self.grant) {
            let msg = "the key that signed the token is no longer trusted: get a fresh token";
            let msg = ServerMsg::error(None, ErrorCode::Unauthorized, msg);
            let _ = self.send(vec![self.message(&msg)]).await;
            return Err(End::Close(close::UNAUTHORIZED, "key no longer trusted"));
        }
        Ok(())
    }

    /// When the session's token expires, if it has one. An `exp` too far ahead for the
    /// clock (10^19 s) sets no timer: the token outlives the process.
    fn expiry(&self) -> Option<tokio::time::Instant> {
        let exp = self.grant.exp?;
        let left = exp.saturating_sub(crate::auth::now_s());
        tokio::time::Instant::now().checked_add(Duration::from_secs(left))
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
        match tokio::time::timeout(timeout, self.ws.write_all(msgs)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close::SLOW_CONSUMER, "slow consumer")),
        }
    }

    /// Closes a session whose write stalled: the `slow_consumer` notice and the 4008 close
    /// go behind whatever the stalled write had left, and wait up to
    /// `session.close_linger_ms` for the client to make room for them. The session has
    /// already left the fan-out, so the wait holds only its socket and its place in the
    /// connection counts.
    async fn cut_slow_consumer(&mut self) {
        let cfg = &self.edge.config.session;
        let linger = Duration::from_millis(cfg.close_linger_ms);
        let notice = ServerMsg::Error {
            id: None,
            code: ErrorCode::SlowConsumer,
            message: format!(
                "not reading: a write stalled for {} ms; closing with 4008",
                cfg.write_timeout_ms
            ),
            symbol: None,
            interval_ms: None,
            retry_ms: None,
            count: None,
            account: None,
        };
        let notice = self.message(&notice);
        self.close(close::SLOW_CONSUMER, "slow consumer", vec![notice], linger)
            .await;
    }

    /// Writes `last` and the close behind what is already queued, and ends the
    /// connection, within `wait`.
    async fn close(&mut self, code: u16, reason: &'static str, last: Vec<Message>, wait: Duration) {
        self.ws.close_with(code, reason, last, wait).await;
    }

    /// Tells the client to reconnect after a delay drawn from the reconnect window (so that
    /// the edge's clients do not all land on the others at once); returns when to close
    /// the session with 4001. Data keeps flowing until then.
    async fn announce_drain(&mut self, reason: &str) -> Result<tokio::time::Instant, End> {
        let window = self.edge.config.shutdown.reconnect_window_ms;
        let after_ms = if window == 0 {
            0
        } else {
            rand::rng().random_range(0..window)
        };
        let msg = ServerMsg::Reconnect {
            after_ms,
            reason: reason.into(),
        };
        self.send(vec![self.message(&msg)]).await?;
        Ok(tokio::time::Instant::now() + Duration::from_millis(after_ms))
    }

    /// Tells the client what the edge's NATS connection means for its data: `status` with
    /// `stale: true` for each subscribed symbol once it has been down for
    /// `nats.stale_after_ms` (and for each symbol subscribed while it stays down),
    /// `stale: false` when it is back (but for symbols whose feed is quiet); and, once it
    /// has been down for `nats.move_clients_after_ms`, `reconnect` (as in a drain) so
    /// that the client moves to a healthy edge.
    async fn on_upstream(
        &mut self,
        state: Upstream,
        quiet: &Quiet,
        stale: &mut Stale,
        leave_at: &mut Option<tokio::time::Instant>,
    ) -> Result<(), End> {
        let was_down = stale.upstream != Upstream::Fresh;
        stale.upstream = state;
        let back = if was_down {
            "upstream back"
        } else {
            "feed back"
        };
        self.restale(quiet, stale, back).await?;
        if state == Upstream::Lost && leave_at.is_none() {
            *leave_at = Some(self.announce_drain("upstream lost").await?);
        }
        Ok(())
    }

    /// Brings what the client was told in line with what is stale now: every subscribed
    /// symbol while the upstream is not fresh, else those of quiet shards (their ingest
    /// stopped announcing itself). `stale: true` for each newly stale symbol, `stale:
    /// false` (with `back` as the reason) for each no longer stale; symbols no longer
    /// subscribed are forgotten.
    async fn restale(&mut self, quiet: &Quiet, stale: &mut Stale, back: &str) -> Result<(), End> {
        let upstream_down = stale.upstream != Upstream::Fresh;
        if !upstream_down && quiet.is_empty() && stale.told.is_empty() {
            return Ok(());
        }
        let shards = self.edge.config.shards;
        // Delayed symbols too: without NATS the edge cannot read their samples either. A
        // quiet feed is news of now, not of `delay_ms` ago: delayed symbols are not told.
        let subs = self.tick_subscriptions();
        let states: HashMap<Symbol, State> = subs
            .iter()
            .filter_map(|(s, sub, _)| Some((s.clone(), sub.state()?)))
            .collect();
        let now_stale: HashSet<Symbol> = subs
            .iter()
            .filter(|(s, _, delayed)| {
                upstream_down || (!delayed && quiet.contains(shard(s.as_str(), shards)))
            })
            .map(|(s, _, _)| s.clone())
            .collect();
        let subscribed: HashSet<Symbol> = subs.into_iter().map(|(s, _, _)| s).collect();
        let newly: Vec<Symbol> = now_stale.difference(&stale.told).cloned().collect();
        let fresh: Vec<Symbol> = stale
            .told
            .iter()
            .filter(|s| subscribed.contains(*s) && !now_stale.contains(*s))
            .cloned()
            .collect();
        stale.told = now_stale;
        let reason = if upstream_down {
            "upstream lost"
        } else {
            "feed quiet"
        };
        self.send_status(newly.into_iter(), &states, true, reason)
            .await?;
        self.send_status(fresh.into_iter(), &states, false, back)
            .await
    }

    /// When the next delisting of a symbol held delayed is due to be told.
    fn delisted_due(&self) -> Option<tokio::time::Instant> {
        let delay = Duration::from_millis(self.edge.config.delayed.delay_ms);
        self.delisted.values().min().map(|at| *at + delay)
    }

    /// Ends every subscription to a symbol that left the reference data (an option that
    /// expired at the day roll, a delisting): for each, a `status` with state `closed`,
    /// then an `unsubscribed` per stream, with no `id` (the edge's doing).
    ///
    /// A symbol held delayed is told `delayed.delay_ms` after the session saw it go, as
    /// it is told of everything else: until then it goes on being served what was
    /// current `delay_ms` ago.
    async fn drop_delisted(&mut self) -> Result<(), End> {
        let edge = self.edge.clone();
        if !edge.refdata.is_loaded() {
            self.delisted.clear();
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let delay = Duration::from_millis(edge.config.delayed.delay_ms);
        let mut seen = std::mem::take(&mut self.delisted);
        // Symbols held delayed whose delisting is due: told as of `delay_ms` ago.
        let mut late: HashSet<Symbol> = HashSet::new();
        let mut gone = |s: &Symbol, delayed: bool| {
            if edge.refdata.is_known(s.as_str()) {
                return false;
            }
            let due = !delayed || *seen.entry(s.clone()).or_insert(now) + delay <= now;
            if due && delayed {
                late.insert(s.clone());
            }
            due
        };
        let ticks: Vec<Symbol> = self
            .tick_subscriptions()
            .into_iter()
            .filter(|(s, _, delayed)| gone(s, *delayed))
            .map(|(s, _, _)| s)
            .collect();
        let tapes: Vec<Symbol> = self
            .tapes
            .symbols()
            .into_iter()
            .filter(|s| gone(s, self.tapes.is_delayed(s, None) == Some(true)))
            .collect();
        let bars: Vec<(Symbol, Timeframe)> = self
            .tapes
            .bars()
            .into_iter()
            .filter(|(s, tf, _)| gone(s, self.tapes.is_delayed(s, Some(*tf)) == Some(true)))
            .map(|(s, tf, _)| (s, tf))
            .collect();
        // What is due now is dropped below; what is not yet due waits its turn.
        seen.retain(|_, at| *at + delay > now);
        self.delisted = seen;
        if ticks.is_empty() && tapes.is_empty() && bars.is_empty() {
            return Ok(());
        }
        let mut closed: Vec<&Symbol> = ticks
            .iter()
            .chain(&tapes)
            .chain(bars.iter().map(|(s, _)| s))
            .collect();
        closed.sort();
        closed.dedup();
        // A delayed holder's status is of `delay_ms` ago, when the symbol went.
        let ts = now_us();
        let delay_us = edge.config.delayed.delay_ms.saturating_mul(1000);
        let mut msgs: Vec<Message> = closed
            .into_iter()
            .map(|symbol| {
                self.message(&ServerMsg::Status {
                    state: Some(State::Closed),
                    symbol: symbol.to_string(),
                    stale: false,
                    reason: "delisted".into(),
                    ts: match late.contains(symbol) {
                        true => ts.saturating_sub(delay_us),
                        false => ts,
                    },
                })
            })
            .collect();
        let unsubscribed = |symbols: &[Symbol], stream, tf| ServerMsg::Unsubscribed {
            id: None,
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            chains: Vec::new(),
            stream,
            tf,
        };
        if !ticks.is_empty() {
            for s in self.unsubscribe_ticks(&ticks) {
                self.requested.remove(&s);
                self.admission.release(&s);
            }
            msgs.push(self.message(&unsubscribed(&ticks, StreamKind::Ticks, None)));
        }
        if !tapes.is_empty() {
            for s in &tapes {
                self.tapes.unsubscribe(s.as_str());
            }
            msgs.push(self.message(&unsubscribed(&tapes, StreamKind::Trades, None)));
        }
        for (s, tf) in bars {
            self.tapes.unsubscribe_bars(&s, tf);
            let one = [s];
            msgs.push(self.message(&unsubscribed(&one, StreamKind::Bars, Some(tf))));
        }
        metrics::counter!("tickmesh_edge_delisted_unsubscribes_total").increment(1);
        self.send(msgs).await
    }

    async fn send_status(
        &mut self,
        symbols: impl Iterator<Item = Symbol>,
        states: &HashMap<Symbol, State>,
        stale: bool,
        reason: &str,
    ) -> Result<(), End> {
        let ts = now_us();
        let statuses = symbols
            .map(|symbol| {
                self.message(&ServerMsg::Status {
                    state: states.get(&symbol).copied(),
                    symbol: symbol.to_string(),
                    stale,
                    reason: reason.into(),
                    ts,
                })
            })
            .collect();
        self.send(statuses).await
    }

    /// Sends what the fan-out core has for the session. When data goes out and the next
    /// `hb` is due within a quarter of `heartbeat_ms`, the `hb` rides on the same write
    /// (and the heartbeat timer starts over), rather than costing a write of its own
    /// moments later: an `hb` comes at least every `heartbeat_ms`, sometimes a little
    /// sooner.
    /// A change of trading state goes out as `status` right before the first update in
    /// the new state (`stale` as the session was last told).
    async fn flush(
        &mut self,
        heartbeat: &mut tokio::time::Interval,
        stale: &HashSet<Symbol>,
    ) -> Result<Option<tokio::time::Instant>, End> {
        let Drained {
            snapshots,
            gaps,
            frames,
            slow_consumer,
            next_due,
            queued_bytes,
        } = self.drain();
        if queued_bytes > 0 {
            self.counted.queue_bytes.record(queued_bytes as f64);
        }
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
                retry_ms: None,
                count: None,
                account: None,
            }));
        }
        if !snapshots.is_empty() {
            for (tick, mode) in &snapshots {
                out.push(self.frame(tick.snapshot(self.format, *mode).clone()));
            }
            if let Some(since) = self.awaiting_since.take() {
                metrics::histogram!("tickmesh_edge_snapshot_seconds")
                    .record(since.elapsed().as_secs_f64());
            }
        }
        if !gaps.is_empty() {
            metrics::counter!("tickmesh_edge_gaps_total").increment(gaps.len() as u64);
        }
        for gap in gaps {
            out.push(self.message(&ServerMsg::Gap {
                symbol: gap.symbol.to_string(),
                epoch: gap.epoch,
                from_seq: gap.from_seq,
                to_seq: gap.to_seq,
                reason: gap.reason.as_str().into(),
            }));
        }
        let mut updates = 0u64;
        let mut newest: Option<Instant> = None;
        for frame in frames {
            if let Some(first) = frame.first() {
                for change in &first.states {
                    let symbol = &first.tick.tick.symbol;
                    out.push(self.message(&ServerMsg::Status {
                        symbol: symbol.clone(),
                        state: Some(change.state),
                        stale: stale.contains(symbol.as_str()),
                        reason: change.state.reason(change.was).into(),
                        ts: change.ts,
                    }));
                }
            }
            updates += frame.len() as u64;
            newest = frame.iter().map(|u| u.tick.arrived).chain(newest).max();
            if let Some(ts) = frame.iter().map(|u| u.tick.tick.ts).max() {
                self.freshest_ts = Some(self.freshest_ts.map_or(ts, |f| f.max(ts)));
            }
            let bytes = self.ticks_frame(&frame);
            self.counted.bytes_out.increment(bytes.len() as u64);
            out.push(self.frame(bytes));
        }
        self.counted.updates_out.increment(updates);
        let period = heartbeat.period();
        if updates > 0 && self.last_hb.elapsed() >= period - period / 4 {
            out.push(self.heartbeat_message());
            heartbeat.reset();
        }
        self.send(out).await?;
        if let Some(arrived) = newest {
            self.counted.dwell.record(arrived.elapsed().as_secs_f64());
        }
        Ok(next_due.map(tokio::time::Instant::from_std))
    }

    /// What the cores have for the session now: the real-time one's, then the delayed
    /// one's.
    fn drain(&self) -> Drained {
        let now = Instant::now();
        let mut drained = self.edge.runtime.drain(&self.member, now);
        if let Some(place) = &self.delayed {
            drained.merge(self.edge.delayed.drain(&place.member, now));
        }
        drained
    }

    /// Writes what the session's account followers handed it, in order: snapshots,
    /// events (of accounts still held) and errors. A session that fell a whole queue
    /// behind live events is cut (4008): account events are never conflated or dropped.
    async fn write_accounts(&mut self, items: &mut Vec<AccountItem>) -> Result<(), End> {
        if self.accounts.overflowed() {
            items.clear();
            return Err(End::Close(close::SLOW_CONSUMER, "fell behind an account"));
        }
        let format = self.format;
        let mut out = Vec::with_capacity(items.len());
        let mut events = 0u64;
        for item in items.drain(..) {
            let bytes = match item {
                AccountItem::Snapshot(state) if self.accounts.holds(&state.account) => {
                    account::snapshot_frame(&state, format)
                }
                AccountItem::Event(event) if self.accounts.holds(&event.account) => {
                    events += 1;
                    account::event_frame(&event, format)
                }
                AccountItem::Error {
                    account,
                    code,
                    message,
                } if self.accounts.holds(&account) => {
                    refusals::count_error(code, 1);
                    let msg = ServerMsg::account_error(None, code, message, &account);
                    out.push(self.message(&msg));
                    continue;
                }
                // Of an account given up since.
                _ => continue,
            };
            self.counted.bytes_out.increment(bytes.len() as u64);
            out.push(self.frame(bytes));
        }
        metrics::counter!("tickmesh_edge_account_events_out_total").increment(events);
        self.send(out).await
    }

    /// Writes what the session's tapes handed it: each history as a `trades` message with
    /// `snapshot: true`, each run of live prints as one `trades` message. A session that
    /// fell a whole queue behind is cut (4008): a tape is never conflated.
    async fn write_tapes(&mut self, items: &mut Vec<TapeItem>) -> Result<(), End> {
        if self.tapes.overflowed() {
            items.clear();
            return Err(End::Close(close::SLOW_CONSUMER, "fell behind a tape"));
        }
        items.retain(|item| self.tapes.wants(item));
        let format = self.format;
        let mut out = Vec::new();
        let mut run: Vec<Arc<SharedTrade>> = Vec::new();
        let mut prints = 0u64;
        let frame = |snapshot: bool, trades: &[Arc<SharedTrade>]| {
            let objects = trades.iter().map(|t| &t.encoded(format)[..]);
            bytes::Bytes::from(trades_frame(format, snapshot, objects))
        };
        let bars_frame = |tf: Timeframe, snapshot: bool, bars: &[Arc<SharedBar>]| {
            let objects = bars.iter().map(|b| &b.encoded(format)[..]);
            bytes::Bytes::from(tickmesh_core::bar::bars_frame(
                format, tf, snapshot, objects,
            ))
        };
        // Runs of live prints, and of live bars of one timeframe, share a message.
        let mut bar_run: Vec<Arc<SharedBar>> = Vec::new();
        for item in items.drain(..) {
            let bar_tf = bar_run.first().map(|b| b.item.tf);
            let continues = match &item {
                TapeItem::Trade(_) => bar_run.is_empty(),
                TapeItem::Bar(b) => run.is_empty() && bar_tf.is_none_or(|tf| tf == b.item.tf),
                _ => false,
            };
            if !continues {
                if !run.is_empty() {
                    out.push(frame(false, &run));
                    prints += run.len() as u64;
                    run.clear();
                }
                if let Some(tf) = bar_tf {
                    out.push(bars_frame(tf, false, &bar_run));
                    bar_run.clear();
                }
            }
            match item {
                TapeItem::Trade(t) => run.push(t),
                TapeItem::Bar(b) => bar_run.push(b),
                TapeItem::History(h) => out.push(frame(true, &h)),
                TapeItem::BarHistory(tf, h) => out.push(bars_frame(tf, true, &h)),
            }
        }
        if !run.is_empty() {
            out.push(frame(false, &run));
            prints += run.len() as u64;
        }
        if let Some(tf) = bar_run.first().map(|b| b.item.tf) {
            out.push(bars_frame(tf, false, &bar_run));
        }
        metrics::counter!("tickmesh_edge_trades_out_total").increment(prints);
        let out: Vec<Message> = out
            .into_iter()
            .map(|bytes| {
                self.counted.bytes_out.increment(bytes.len() as u64);
                self.frame(bytes)
            })
            .collect();
        self.send(out).await
    }

    /// The `ticks` frame of `frame`: from the ticks' shared encodings, with `from_seq`
    /// spliced into those that stand for more than themselves.
    fn ticks_frame(&self, frame: &[Update]) -> bytes::Bytes {
        let format = self.format;
        if let [one] = frame
            && one.from_seq.is_none()
        {
            // Alone in its frame, a tick's frame is shared by every session sending it.
            return one.tick.frame_alone(format, one.mode).clone();
        }
        if frame.iter().all(|u| u.from_seq.is_none()) {
            let objects = frame.iter().map(|u| &u.tick.encoded(format, u.mode)[..]);
            return ticks_frame(format, objects).into();
        }
        let mut spliced: Vec<Vec<u8>> = Vec::new();
        for u in frame {
            if let Some(from) = u.from_seq {
                let mut with = Vec::new();
                let encoded = u.tick.encoded(format, u.mode);
                if !with_from_seq(format, encoded, from, &mut with) {
                    with.extend_from_slice(encoded);
                }
                spliced.push(with);
            }
        }
        let mut spliced = spliced.iter();
        let objects = frame.iter().map(|u| match u.from_seq {
            Some(_) => &spliced.next().expect("one spliced object per from_seq")[..],
            None => &u.tick.encoded(format, u.mode)[..],
        });
        let objects: Vec<&[u8]> = objects.collect();
        ticks_frame(format, objects.into_iter()).into()
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        let hb = self.heartbeat_message();
        self.send(vec![hb]).await
    }

    fn heartbeat_message(&mut self) -> Message {
        self.last_hb = Instant::now();
        let ts = now_us();
        let lag_ms = self.freshest_ts.map(|f| ts.saturating_sub(f) / 1000);
        self.message(&ServerMsg::Hb { ts, lag_ms })
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        self.last_heard = Instant::now();
        let msg = match msg {
            None => return Err(End::Gone),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(read_error_end(&e)),
        };
        let (format, bytes) = match &msg {
            Message::Text(t) => (Format::Json, t.as_bytes()),
            Message::Binary(b) => (Format::MsgPack, &b[..]),
            Message::Close(_) => {
                self.ws.answer_close().await;
                return Err(End::Gone);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        if bytes.len() > self.edge.config.session.max_message_bytes {
            return Err(End::Close(close::TOO_LARGE, "message too large"));
        }
        if !self.bucket.take(Instant::now()) {
            let id = protocol::decode_client(format, bytes)
                .ok()
                .and_then(|m| m.id);
            let message = format!(
                "over {} messages per second: slow down",
                self.grant.max_msgs_per_s
            );
            return self.refuse_rate(id, message, None).await;
        }
        let replies = match protocol::decode_client(format, bytes) {
            Ok(req) => {
                // A request costs by its entries: the first message was taken above.
                let per = self.edge.config.limits.entries_per_message;
                let cost = requests::cost(&req.request, per);
                if cost > 1 && !self.bucket.take_n(cost - 1, Instant::now()) {
                    let burst = self.grant.max_msgs_per_s.saturating_mul(2);
                    let (message, retry_ms) = if cost > burst {
                        let most = (burst as usize).saturating_mul(per);
                        (
                            format!(
                                "a request may hold at most {most} entries (symbols and chains)"
                            ),
                            None,
                        )
                    } else {
                        let wait = self.bucket.wait_ms(cost - 1);
                        (
                            format!(
                                "this request costs {cost} messages of your rate (one per {per} entries): retry after retry_ms"
                            ),
                            Some(wait),
                        )
                    };
                    return self.refuse_rate(req.id, message, retry_ms).await;
                }
                self.strikes = 0;
                #[cfg(feature = "fault-injection")]
                crate::fault::on_request(&req);
                self.on_request(req).await?
            }
            Err(e) => {
                self.strikes = 0;
                metrics::counter!("tickmesh_edge_errors_total", "code" => "bad_request")
                    .increment(1);
                vec![ServerMsg::error(e.id, ErrorCode::BadRequest, e.message)]
            }
        };
        let replies = replies.iter().map(|m| self.message(m)).collect();
        self.send(replies).await
    }
}

/// How a read error ends the session. A client that broke the WebSocket protocol gets
/// RFC 6455's close code and the reason before the socket closes, not a bare reset; one
/// whose connection broke is gone.
fn read_error_end(e: &tungstenite::Error) -> End {
    use crate::deflate::InflateError;
    use tungstenite::error::ProtocolError as P;
    let reason = match e {
        tungstenite::Error::Capacity(_) => {
            return End::Close(close::TOO_LARGE, "message too large");
        }
        // A compressed message refused by permessage-deflate's inflater, or a broken socket.
        tungstenite::Error::Io(io) => {
            return match crate::deflate::stream::refusal(io) {
                Some(InflateError::TooLarge) => End::Close(close::TOO_LARGE, "message too large"),
                Some(InflateError::Corrupt) => {
                    End::Close(close::PROTOCOL_ERROR, "bad compressed message")
                }
                None => End::Gone,
            };
        }
        tungstenite::Error::Utf8(_) => {
            return End::Close(close::INVALID_PAYLOAD, "text frame is not UTF-8");
        }
        tungstenite::Error::Protocol(p) => match p {
            P::ResetWithoutClosingHandshake => return End::Gone,
            P::NonZeroReservedBits => "reserved bits set without an extension",
            P::UnmaskedFrameFromClient => "unmasked client frame",
            P::UnknownDataFrameType(_) | P::UnknownControlFrameType(_) | P::InvalidOpcode(_) => {
                "unknown opcode"
            }
            P::FragmentedControlFrame | P::ControlFrameTooBig => "bad control frame",
            P::UnexpectedContinueFrame | P::ExpectedFragment(_) => "bad fragmentation",
            _ => "protocol error",
        },
        _ => return End::Gone,
    };
    End::Close(close::PROTOCOL_ERROR, reason)
}

impl<T> Session<T>
where
    T: Transport,
{
    /// Refuses a message over the rate with `rate_limited`; after
    /// `limits.rate_limit_strikes` refusals in a row, closes with 4029.
    async fn refuse_rate(
        &mut self,
        id: Option<i64>,
        message: String,
        retry_ms: Option<u64>,
    ) -> Result<(), End> {
        self.strikes += 1;
        metrics::counter!("tickmesh_edge_errors_total", "code" => "rate_limited").increment(1);
        if self.strikes >= self.edge.config.limits.rate_limit_strikes {
            return Err(End::Close(close::RATE_LIMITED, "rate limit exceeded"));
        }
        let mut msg = ServerMsg::error(id, ErrorCode::RateLimited, message);
        if let ServerMsg::Error { retry_ms: r, .. } = &mut msg {
            *r = retry_ms;
        }
        self.send(vec![self.message(&msg)]).await
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
