//! Client requests of a session: subscribe, unsubscribe, list, ping, chains and auth.
//!
//! A request's reply and work are bounded by what it is worth: at most
//! `limits.request_entries_factor` times the session's `max_symbols` entries (`symbols`
//! plus `chains`) are read and at most that many symbols considered, each distinct chain
//! is expanded once, refusals go out through [`Refusals`], and a request costs its
//! sender's rate by its entries ([`cost`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tickmesh_core::Symbol;
use tickmesh_core::protocol::{
    self, ClientMsg, ErrorCode, Request, ServerMsg, StreamKind, Subscribe, SubscriptionInfo, close,
};
use tokio_tungstenite::tungstenite::Message;

use super::tapes::HeldTapes;
use super::{End, Session};
use crate::auth::{AuthError, Coverage};
use crate::checks::{self, Checked, Refusals, cap_entries, count_error, parse_symbols};
use crate::fanout::Subscribed;
use tickmesh_core::bar::Timeframe;

/// `bad_request` for a `bars` request without `tf`.
fn no_timeframe(id: Option<i64>) -> ServerMsg {
    count_error(ErrorCode::BadRequest, 1);
    ServerMsg::error(
        id,
        ErrorCode::BadRequest,
        "stream \"bars\" needs `tf`: 1s, 1m, 5m, 1h or 1d",
    )
}

/// Longest interval a subscription may ask for, ms.
const MAX_INTERVAL_MS: u32 = 60_000;

/// What an account subscribe costs of its sender's message rate: a snapshot read and a
/// consumer made on the hub, far more work than a message.
pub(super) const ACCOUNT_SUBSCRIBE_COST: u32 = 10;

/// What a request costs of its sender's message rate: one message per
/// `entries_per_message` entries of a subscribe or unsubscribe (rounded up),
/// [`ACCOUNT_SUBSCRIBE_COST`] for an account subscribe, one for anything else.
pub(super) fn cost(request: &Request, entries_per_message: usize) -> u32 {
    if let Request::Subscribe(s) = request
        && s.account.is_some()
    {
        return ACCOUNT_SUBSCRIBE_COST;
    }
    let entries = match request {
        Request::Subscribe(s) => s.symbols.len() + s.chains.len(),
        Request::Unsubscribe(u) => u.symbols.len() + u.chains.len(),
        _ => 1,
    };
    u32::try_from(entries.div_ceil(entries_per_message.max(1)).max(1)).unwrap_or(u32::MAX)
}

/// Why the edge as a whole would not start carrying a symbol.
enum EdgeFull {
    Carried(usize),
    Rate(u64),
}

impl<T> Session<T>
where
    T: super::Transport,
{
    /// Handles one request; returns the replies still to send.
    pub(super) async fn on_request(
        &mut self,
        ClientMsg { id, request }: ClientMsg,
    ) -> Result<Vec<ServerMsg>, End> {
        Ok(match request {
            Request::Subscribe(sub) if sub.account.is_some() => {
                return Ok(self.subscribe_account(id, &sub));
            }
            Request::Unsubscribe(unsub) if unsub.account.is_some() => {
                let account = unsub.account.unwrap_or_default();
                self.accounts.unsubscribe(&account);
                vec![ServerMsg::AccountUnsubscribed { id, account }]
            }
            Request::Subscribe(sub) => {
                return match sub.stream {
                    StreamKind::Ticks => self.subscribe(id, sub).await,
                    StreamKind::Trades => Ok(self.subscribe_tapes(id, sub, None)),
                    StreamKind::Bars => match sub.tf {
                        Some(tf) => Ok(self.subscribe_tapes(id, sub, Some(tf))),
                        None => Ok(vec![no_timeframe(id)]),
                    },
                };
            }
            Request::Unsubscribe(unsub) => {
                if unsub.stream == StreamKind::Bars && unsub.tf.is_none() {
                    return Ok(vec![no_timeframe(id)]);
                }
                let max = self.read_cap();
                let mut refusals =
                    Refusals::new(id, self.edge.config.limits.max_errors_per_request);
                let (symbols, chains) =
                    cap_entries(&unsub.symbols, &unsub.chains, max, &mut refusals);
                let mut symbols = parse_symbols(symbols, &mut refusals);
                let chains = self.expand_chains(chains, &mut symbols, max, &mut refusals);
                let removed: Vec<Symbol> = match (unsub.stream, unsub.tf) {
                    (StreamKind::Ticks, _) => {
                        let removed = self.unsubscribe_ticks(&symbols);
                        for s in &removed {
                            self.requested.remove(s);
                            self.admission.release(s);
                        }
                        removed
                    }
                    (StreamKind::Bars, Some(tf)) => {
                        symbols.retain(|s| self.tapes.unsubscribe_bars(s, tf));
                        symbols
                    }
                    _ => {
                        symbols.retain(|s| self.tapes.unsubscribe(s.as_str()));
                        symbols
                    }
                };
                let mut replies = refusals.finish();
                replies.push(ServerMsg::Unsubscribed {
                    id,
                    symbols: removed.iter().map(|s| s.to_string()).collect(),
                    chains,
                    stream: unsub.stream,
                    tf: unsub.tf.filter(|_| unsub.stream == StreamKind::Bars),
                });
                replies
            }
            Request::Ping => vec![ServerMsg::Pong { id }],
            Request::List => {
                let subscriptions =
                    self.tick_subscriptions()
                        .into_iter()
                        .map(|(symbol, sub, _)| SubscriptionInfo {
                            symbol: symbol.to_string(),
                            mode: sub.mode,
                            interval_ms: sub.interval_ms,
                            stream: StreamKind::Ticks,
                            tf: None,
                        });
                let mut tapes = self.tapes.symbols();
                tapes.sort();
                let tapes = tapes.into_iter().map(|symbol| SubscriptionInfo {
                    symbol: symbol.to_string(),
                    mode: Default::default(),
                    interval_ms: 0,
                    stream: StreamKind::Trades,
                    tf: None,
                });
                let mut bars = self.tapes.bars();
                bars.sort();
                let bars = bars.into_iter().map(|(symbol, tf, ms)| SubscriptionInfo {
                    symbol: symbol.to_string(),
                    mode: Default::default(),
                    interval_ms: ms,
                    stream: StreamKind::Bars,
                    tf: Some(tf),
                });
                let subscriptions = subscriptions.chain(tapes).chain(bars).collect();
                let accounts = self.accounts.names();
                vec![ServerMsg::Subscriptions {
                    id,
                    subscriptions,
                    accounts,
                }]
            }
            Request::Chains { underlying } => {
                let edge = &self.edge;
                let delay = self.chains_delay(&underlying);
                let limits = &edge.config.limits;
                vec![checks::chains(
                    &edge.refdata,
                    limits,
                    (id, delay),
                    underlying,
                )]
            }
            Request::Auth { token } => return self.auth(id, &token).await,
        })
    }

    /// The most entries of a request read, and symbols considered.
    /// `subscribe` with `account`: entitled by the token's `acct` claim alone; answered
    /// with `subscribed`, then the follower sends the snapshot (or the replay from
    /// `from_seq`) and every later event.
    fn subscribe_account(&mut self, id: Option<i64>, sub: &Subscribe) -> Vec<ServerMsg> {
        let account = sub.account.as_deref().unwrap_or_default();
        let refuse = |code: ErrorCode, message: String| {
            count_error(code, 1);
            vec![ServerMsg::account_error(
                id,
                code,
                message,
                &account.chars().take(40).collect::<String>(),
            )]
        };
        if let Err(e) = tickmesh_core::account::validate(account) {
            return refuse(ErrorCode::BadRequest, e.to_string());
        }
        if sub.from_seq == Some(0) {
            return refuse(ErrorCode::BadRequest, "from_seq starts at 1".into());
        }
        if !self.grant.allows_account(account) {
            return refuse(
                ErrorCode::NotEntitled,
                format!("the token does not name account {account} in `acct`"),
            );
        }
        let max = self.edge.config.session.max_accounts;
        if !self.accounts.holds(account) && self.accounts.len() >= max {
            return refuse(
                ErrorCode::TooManySymbols,
                format!("a session may hold at most {max} accounts"),
            );
        }
        if let Err(retry_ms) = self.accounts.admit(Instant::now()) {
            let per_min = self.edge.config.session.account_subscribes_per_min;
            let mut refused = refuse(
                ErrorCode::RateLimited,
                format!(
                    "over {per_min} account subscribes a minute: retry after retry_ms (account {account} stays as it was)"
                ),
            );
            if let Some(ServerMsg::Error { retry_ms: r, .. }) = refused.first_mut() {
                *r = Some(retry_ms);
            }
            return refused;
        }
        self.accounts.subscribe(account, sub.from_seq);
        vec![ServerMsg::AccountSubscribed {
            id,
            account: account.to_string(),
            from_seq: sub.from_seq,
        }]
    }

    /// How old the chains of `underlying` this session is told are: the delay when its
    /// token covers the underlying only by `dly`.
    fn chains_delay(&self, underlying: &str) -> Option<std::time::Duration> {
        let edge = &self.edge;
        let delayed = self.grant.coverage(underlying, &edge.refdata) == Coverage::Delayed;
        delayed.then(|| std::time::Duration::from_millis(edge.config.delayed.delay_ms))
    }

    fn read_cap(&self) -> usize {
        checks::read_cap(&self.grant, &self.edge.config.limits)
    }

    fn not_loaded(&self, id: Option<i64>) -> ServerMsg {
        checks::not_loaded(id, &self.edge.config.limits)
    }

    fn expand_chains(
        &self,
        chains: &[String],
        symbols: &mut Vec<Symbol>,
        max: usize,
        refusals: &mut Refusals,
    ) -> Vec<String> {
        let (refdata, limits) = (&self.edge.refdata, &self.edge.config.limits);
        checks::expand_chains(refdata, limits, chains, symbols, max, refusals)
    }

    /// Sends the replies (errors, `subscribed`) and then the snapshots itself, so that
    /// the snapshots follow `subscribed`; returns nothing more to send.
    async fn subscribe(&mut self, id: Option<i64>, req: Subscribe) -> Result<Vec<ServerMsg>, End> {
        let started = Instant::now();
        let edge = self.edge.clone();
        if !edge.refdata.is_loaded() {
            // Nothing can be checked yet, so nothing is carried on a client's word.
            return Ok(vec![self.not_loaded(id)]);
        }
        let limits = &edge.config.limits;
        let requested = req
            .interval_ms
            .unwrap_or(protocol::DEFAULT_INTERVAL_MS)
            .min(MAX_INTERVAL_MS);
        let interval_ms = requested.max(self.grant.min_interval_ms);
        let max = self.grant.max_symbols as usize;
        let cap = self.read_cap();
        let mut refusals = Refusals::new(id, limits.max_errors_per_request);
        let (symbols, chains) = cap_entries(&req.symbols, &req.chains, cap, &mut refusals);
        let mut candidates = parse_symbols(symbols, &mut refusals);
        let chains = self.expand_chains(chains, &mut candidates, cap, &mut refusals);

        let runtime = &edge.runtime;
        // Tapes and ticks share the session's `max_symbols`.
        let mut room = max.saturating_sub(self.tick_subscription_count() + self.tapes.len());
        // Each symbol in real time (`ent`) or delayed (`dly` only), held in that core.
        let coverage: Vec<Coverage> = candidates
            .iter()
            .map(|s| self.grant.coverage(s.as_str(), &edge.refdata))
            .collect();
        let held_live = runtime.holds(self.id, &candidates);
        let held_delayed = match &self.delayed {
            Some(place) => edge.delayed.holds(place.member.id(), &candidates),
            None => vec![false; candidates.len()],
        };
        let mut wanted = Vec::with_capacity(candidates.len());
        let mut wanted_delayed = Vec::new();
        for (i, symbol) in candidates.into_iter().enumerate() {
            let delayed = coverage[i] == Coverage::Delayed;
            let held = if delayed {
                held_delayed[i]
            } else {
                held_live[i]
            };
            let covered = coverage[i] != Coverage::None;
            let into = if delayed {
                &mut wanted_delayed
            } else {
                &mut wanted
            };
            match self.first_checks(&symbol, covered, held, room, &mut refusals) {
                Checked::Refused => continue,
                Checked::Held => {
                    into.push((i, symbol));
                    continue;
                }
                Checked::New => {}
            }
            if let Err(e) = self.admission.hold(&symbol, limits) {
                refusals.symbol(ErrorCode::TooManySymbols, symbol.as_str(), || e.to_string());
            } else {
                room -= 1;
                into.push((i, symbol));
            }
        }
        let (mut at, mut wanted): (Vec<usize>, Vec<Symbol>) = wanted.into_iter().unzip();
        let (at_delayed, wanted_delayed): (Vec<usize>, Vec<Symbol>) =
            wanted_delayed.into_iter().unzip();
        // Whether the edge may carry one more symbol: decided by the runtime, so that the
        // bounds hold however many sessions subscribe at once.
        let admit = |_: &Symbol, carried: usize| {
            if carried >= limits.max_carried_symbols {
                return Err(EdgeFull::Carried(limits.max_carried_symbols));
            }
            let mut rate = edge.new_interest.lock().unwrap_or_else(|e| e.into_inner());
            if rate.take(Instant::now()) {
                Ok(())
            } else {
                Err(EdgeFull::Rate(rate.wait_ms(1).max(1)))
            }
        };
        let how = (req.mode, interval_ms);
        let mut is_delayed = vec![false; wanted.len()];
        let mut results =
            runtime.subscribe_admitted(&self.member, &wanted, how, Instant::now(), admit);
        if !wanted_delayed.is_empty() {
            let member = self.delayed_member();
            let delayed = &edge.delayed;
            results.extend(delayed.subscribe_admitted(
                &member,
                &wanted_delayed,
                how,
                Instant::now(),
                admit,
            ));
            is_delayed.resize(wanted.len() + wanted_delayed.len(), true);
            wanted.extend(wanted_delayed);
            at.extend(at_delayed);
        }
        // Back in the order the client named them.
        let mut in_order: Vec<(usize, Symbol, Result<Subscribed, EdgeFull>, bool)> = at
            .into_iter()
            .zip(wanted)
            .zip(results)
            .zip(is_delayed)
            .map(|(((at, s), r), d)| (at, s, r, d))
            .collect();
        in_order.sort_by_key(|(at, ..)| *at);
        let mut accepted = Vec::with_capacity(in_order.len());
        let mut outcomes = Vec::with_capacity(in_order.len());
        let mut delayed = Vec::new();
        for (_, symbol, result, is_delayed) in in_order {
            match result {
                Ok(outcome) => {
                    if is_delayed {
                        delayed.push(symbol.to_string());
                    }
                    accepted.push(symbol);
                    outcomes.push((outcome, is_delayed));
                }
                Err(full) => {
                    self.admission.release(&symbol);
                    let (retry_ms, message) = match full {
                        EdgeFull::Carried(n) => (
                            limits.retry_after_ms,
                            format!("this edge carries its most symbols ({n}): retry after retry_ms, or use another edge"),
                        ),
                        EdgeFull::Rate(ms) => (
                            ms,
                            "this edge takes on new symbols at a bounded rate: retry after retry_ms".into(),
                        ),
                    };
                    refusals.symbol_retry(
                        ErrorCode::Unavailable,
                        symbol.as_str(),
                        retry_ms,
                        &message,
                    );
                }
            }
        }
        for s in &accepted {
            self.requested.insert(s.clone(), requested);
        }
        let mut replies = refusals.finish();
        replies.push(ServerMsg::Subscribed {
            id,
            symbols: accepted.iter().map(|s| s.to_string()).collect(),
            chains,
            interval_ms,
            mode: req.mode,
            stream: StreamKind::Ticks,
            tf: None,
            delayed,
        });
        let replies: Vec<Message> = replies.iter().map(|m| self.message(m)).collect();
        self.send(replies).await?;
        // One snapshot per symbol: the edge's own latest value, sent now. A symbol the
        // edge has no value of yet is awaited in the core, with one KV read per symbol
        // (`fetch`), however many sessions subscribe meanwhile; the snapshot then comes
        // out of the session's next flush: the KV value, or the first live tick if that
        // is sooner.
        let mut local = 0u64;
        let mut awaited = false;
        let mut ticks = Vec::with_capacity(accepted.len());
        for (symbol, (outcome, delayed)) in accepted.iter().zip(&outcomes) {
            if !outcome.new_subscription {
                // Held already: mode and interval changed in place, no second snapshot.
                continue;
            }
            if outcome.latest.is_some() {
                local += 1;
                match &outcome.snapshot {
                    Some(tick) => ticks.push(tick.clone()),
                    // Nothing newer than what the session had: the next tick is awaited.
                    None => {
                        self.awaiting_since = Some(started);
                        awaited = true;
                    }
                }
            } else {
                self.awaiting_since = Some(started);
                awaited = true;
                // A delayed symbol's first value is its first sample due, never the
                // KV's latest one.
                if outcome.fetch && !delayed {
                    let runtime = Arc::downgrade(runtime);
                    edge.snapshots
                        .fetch_for(symbol.clone(), move |symbol, candidate| {
                            runtime
                                .upgrade()
                                .map_or(0, |r| r.offer_snapshot(symbol, candidate))
                        });
                }
            }
        }
        metrics::counter!("tickmesh_edge_snapshot_reads_total", "source" => "local")
            .increment(local);
        let snapshots: Vec<Message> = ticks
            .iter()
            .map(|tick| self.frame(tick.snapshot(self.format, req.mode).clone()))
            .collect();
        self.send(snapshots).await?;
        if !awaited {
            // Otherwise recorded when the awaited snapshots go out.
            metrics::histogram!("tickmesh_edge_snapshot_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        Ok(Vec::new())
    }

    /// The first checks of a symbol to subscribe ([`checks::first_checks`]), with `room`
    /// left under the session's `max_symbols`.
    fn first_checks(
        &self,
        symbol: &Symbol,
        covered: bool,
        held: bool,
        room: usize,
        refusals: &mut Refusals,
    ) -> Checked {
        let (grant, refdata) = (&self.grant, &self.edge.refdata);
        let holder = "a session may hold";
        let at = (covered, held, room);
        checks::first_checks_covered(grant, refdata, symbol, at, holder, refusals)
    }

    /// `subscribe` with `stream: "trades"` (`tf` none): each symbol's tape, its last
    /// `history` prints first; or `stream: "bars"` of timeframe `tf`: each symbol's closed
    /// bars and bar in progress first, then updates at most every `interval_ms` (raised
    /// to the tier's minimum) and each bar once more when it closes. Checked as a tick
    /// subscription is (entitlement, `max_symbols` shared with ticks, known instrument),
    /// and the edge-wide bounds on symbols carried and on the rate of new interest apply
    /// to what it follows. A tape is never conflated: `mode` and `interval_ms` are not
    /// used for it.
    fn subscribe_tapes(
        &mut self,
        id: Option<i64>,
        req: Subscribe,
        tf: Option<Timeframe>,
    ) -> Vec<ServerMsg> {
        let edge = self.edge.clone();
        if !edge.refdata.is_loaded() {
            return vec![self.not_loaded(id)];
        }
        let limits = &edge.config.limits;
        let (default_history, max_history) = match tf {
            None => (
                protocol::DEFAULT_TRADES_HISTORY,
                protocol::MAX_TRADES_HISTORY,
            ),
            Some(_) => (
                tickmesh_core::bar::DEFAULT_HISTORY,
                tickmesh_core::bar::MAX_HISTORY,
            ),
        };
        let history = req.history.unwrap_or(default_history).min(max_history) as usize;
        let requested = req
            .interval_ms
            .unwrap_or(protocol::DEFAULT_INTERVAL_MS)
            .min(MAX_INTERVAL_MS);
        let interval_ms = match tf {
            None => 0,
            Some(_) => requested.max(self.grant.min_interval_ms),
        };
        let held = |tapes: &HeldTapes, s: &Symbol| match tf {
            None => tapes.holds(s.as_str()),
            Some(tf) => tapes.holds_bars(s, tf),
        };
        let max = self.grant.max_symbols as usize;
        let cap = self.read_cap();
        let mut refusals = Refusals::new(id, limits.max_errors_per_request);
        let (symbols, chains) = cap_entries(&req.symbols, &req.chains, cap, &mut refusals);
        let mut candidates = parse_symbols(symbols, &mut refusals);
        let chains = self.expand_chains(chains, &mut candidates, cap, &mut refusals);
        let mut room = max.saturating_sub(self.tick_subscription_count() + self.tapes.len());
        let mut accepted = Vec::with_capacity(candidates.len());
        let mut delayed_symbols = Vec::new();
        for symbol in candidates {
            let is_held = held(&self.tapes, &symbol);
            // Real time where `ent` covers the symbol, delayed where only `dly` does.
            let coverage = self.grant.coverage(symbol.as_str(), &edge.refdata);
            let covered = coverage != Coverage::None;
            let delayed = coverage == Coverage::Delayed;
            match self.first_checks(&symbol, covered, is_held, room, &mut refusals) {
                Checked::Refused => continue,
                Checked::Held => {
                    if let Some(tf) = tf {
                        // A change of interval, in place.
                        let how = (interval_ms, delayed);
                        self.tapes.subscribe_bars(&symbol, tf, history, how);
                    }
                    if delayed {
                        delayed_symbols.push(symbol.to_string());
                    }
                    accepted.push(symbol);
                    continue;
                }
                Checked::New => {}
            }
            if let Err((retry_ms, why)) = self.admit_tape(&symbol, tf, delayed) {
                refusals.symbol_retry(ErrorCode::Unavailable, symbol.as_str(), retry_ms, &why);
                continue;
            }
            room -= 1;
            match tf {
                None => {
                    self.tapes.subscribe(&symbol, history, delayed);
                }
                Some(tf) => {
                    let how = (interval_ms, delayed);
                    self.tapes.subscribe_bars(&symbol, tf, history, how);
                }
            }
            if delayed {
                delayed_symbols.push(symbol.to_string());
            }
            accepted.push(symbol);
        }
        let mut replies = refusals.finish();
        replies.push(ServerMsg::Subscribed {
            id,
            symbols: accepted.iter().map(|s| s.to_string()).collect(),
            chains,
            interval_ms,
            mode: req.mode,
            stream: req.stream,
            tf,
            delayed: delayed_symbols,
        });
        replies
    }

    /// In-band token refresh: new claims replace the old ones without a reconnect. The new
    /// token can narrow what the session holds but never widen the limits around it: it
    /// must be for the same user (an anonymous session may become a user, within that
    /// user's `max_sessions_per_user`), and what it no longer covers is dropped.
    async fn auth(&mut self, id: Option<i64>, token: &str) -> Result<Vec<ServerMsg>, End> {
        let grant = match self.edge.verifier.verify(token) {
            Ok(g) if self.grant.sub.is_none() || g.sub == self.grant.sub => g,
            Ok(_) => {
                let msg = "the token is for another user";
                return Err(self.refuse_auth(id, ErrorCode::Unauthorized, msg).await);
            }
            Err(e) => {
                metrics::counter!("tickmesh_edge_auth_failures_total", "reason" => e.label())
                    .increment(1);
                let code = match e {
                    AuthError::Expired => ErrorCode::TokenExpired,
                    _ => ErrorCode::Unauthorized,
                };
                return Err(self.refuse_auth(id, code, &e.to_string()).await);
            }
        };
        // First, so that a refusal changes nothing: the session stays open as it was (the
        // token is good; the user has too many sessions, as at an upgrade's 429).
        let limits = &self.edge.config.limits;
        if let Err(refusal) = self.admission.set_user(grant.sub.as_deref(), limits) {
            metrics::counter!("tickmesh_edge_admission_refusals_total", "reason" => "user")
                .increment(1);
            count_error(ErrorCode::Unauthorized, 1);
            return Ok(vec![ServerMsg::error(
                id,
                ErrorCode::Unauthorized,
                refusal.to_string(),
            )]);
        }
        let mut replies = Vec::new();
        // Drop what the new token no longer covers: symbols outside its entitlements, then
        // (in symbol order) those past its `max_symbols`. One `error` per symbol dropped, so
        // at most as many as the session held.
        let mut subs = self.tick_subscriptions();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        // Each kept (in the core the new token says: real-time or delayed) or lost.
        let (mut kept, lost): (Vec<_>, Vec<_>) = subs
            .into_iter()
            .map(|(s, sub, was_delayed)| {
                let coverage = grant.coverage(s.as_str(), &self.edge.refdata);
                (s, sub, was_delayed, coverage)
            })
            .partition(|(_, _, _, coverage)| *coverage != Coverage::None);
        let excess = kept.split_off(kept.len().min(grant.max_symbols as usize));
        for (s, ..) in &lost {
            count_error(ErrorCode::NotEntitled, 1);
            replies.push(ServerMsg::symbol_error(
                id,
                ErrorCode::NotEntitled,
                s.as_str(),
                "no longer entitled: unsubscribed",
            ));
        }
        for (s, ..) in &excess {
            count_error(ErrorCode::TooManySymbols, 1);
            replies.push(ServerMsg::symbol_error(
                id,
                ErrorCode::TooManySymbols,
                s.as_str(),
                format!(
                    "the new token allows at most {} symbols: unsubscribed",
                    grant.max_symbols
                ),
            ));
        }
        let dropped: Vec<Symbol> = lost.into_iter().chain(excess).map(|(s, ..)| s).collect();
        for s in &dropped {
            self.requested.remove(s);
            self.admission.release(s);
        }
        self.unsubscribe_ticks(&dropped);
        // Tapes: those outside the new entitlements go, then those past `max_symbols`
        // (ticks count first).
        let mut tapes: Vec<(Symbol, Option<Timeframe>)> = self
            .tapes
            .symbols()
            .into_iter()
            .map(|s| (s, None))
            .chain(
                self.tapes
                    .bars()
                    .into_iter()
                    .map(|(s, tf, _)| (s, Some(tf))),
            )
            .collect();
        tapes.sort();
        let mut room = (grant.max_symbols as usize).saturating_sub(kept.len());
        let bar_intervals: HashMap<(Symbol, Timeframe), u32> = self
            .tapes
            .bars()
            .into_iter()
            .map(|(s, tf, ms)| ((s, tf), ms))
            .collect();
        for (symbol, tf) in tapes {
            let what = if tf.is_some() { "bars" } else { "trades" };
            let coverage = grant.coverage(symbol.as_str(), &self.edge.refdata);
            let (code, message) = if coverage == Coverage::None {
                (
                    ErrorCode::NotEntitled,
                    format!("no longer entitled: {what} unsubscribed"),
                )
            } else if room == 0 {
                (
                    ErrorCode::TooManySymbols,
                    format!(
                        "the new token allows at most {} symbols: {what} unsubscribed",
                        grant.max_symbols
                    ),
                )
            } else {
                // Moved between real time and delayed: in place, told by a `subscribed`
                // of it, then its history from the side it is now on; held to the edge's
                // bounds on what it follows as a subscribe is (else dropped, to retry).
                let delayed = coverage == Coverage::Delayed;
                if self.tapes.is_delayed(&symbol, tf) != Some(!delayed) {
                    room -= 1;
                    continue;
                }
                match self.admit_tape(&symbol, tf, delayed) {
                    Ok(()) => {
                        room -= 1;
                        replies.push(self.move_tape(id, &symbol, tf, &bar_intervals, delayed));
                        continue;
                    }
                    Err((retry_ms, why)) => {
                        count_error(ErrorCode::Unavailable, 1);
                        let why = format!("{what} unsubscribed, not moved: {why}");
                        let code = ErrorCode::Unavailable;
                        replies.push(checks::symbol_retry(
                            id,
                            code,
                            symbol.as_str(),
                            retry_ms,
                            &why,
                        ));
                        match tf {
                            None => self.tapes.unsubscribe(symbol.as_str()),
                            Some(tf) => self.tapes.unsubscribe_bars(&symbol, tf),
                        };
                        continue;
                    }
                }
            };
            count_error(code, 1);
            replies.push(ServerMsg::symbol_error(id, code, symbol.as_str(), message));
            match tf {
                None => self.tapes.unsubscribe(symbol.as_str()),
                Some(tf) => self.tapes.unsubscribe_bars(&symbol, tf),
            };
        }
        // Intervals follow the new tier, tighter or looser; a symbol the new token moves
        // between real time and delayed moves core in place: the client is told by a
        // `subscribed` of it (with `delayed` when now delayed) and gets the snapshot of
        // the core it is now in, and nothing of the other again.
        let mut moved_snapshots = Vec::new();
        for (symbol, sub, was_delayed, coverage) in &kept {
            let requested = self
                .requested
                .get(symbol)
                .copied()
                .unwrap_or(sub.interval_ms);
            let wanted = requested.max(grant.min_interval_ms);
            let delayed = *coverage == Coverage::Delayed;
            if delayed == *was_delayed {
                if wanted != sub.interval_ms {
                    let member = match delayed {
                        true => self.delayed_member(),
                        false => self.member.clone(),
                    };
                    let one = std::slice::from_ref(symbol);
                    let how = (sub.mode, wanted);
                    match delayed {
                        true => self
                            .edge
                            .delayed
                            .subscribe(&member, one, how, Instant::now()),
                        false => self
                            .edge
                            .runtime
                            .subscribe(&member, one, how, Instant::now()),
                    };
                }
                continue;
            }
            if let Some(snapshot) = self.move_core(symbol, (sub.mode, wanted), delayed) {
                moved_snapshots.push((snapshot, sub.mode));
            }
            replies.push(ServerMsg::Subscribed {
                id,
                symbols: vec![symbol.to_string()],
                chains: Vec::new(),
                interval_ms: wanted,
                mode: sub.mode,
                stream: StreamKind::Ticks,
                tf: None,
                delayed: match delayed {
                    true => vec![symbol.to_string()],
                    false => Vec::new(),
                },
            });
        }
        // Accounts the new token does not name go.
        for account in self.accounts.names() {
            if !grant.allows_account(&account) {
                count_error(ErrorCode::NotEntitled, 1);
                self.accounts.unsubscribe(&account);
                replies.push(ServerMsg::account_error(
                    id,
                    ErrorCode::NotEntitled,
                    "no longer entitled: account unsubscribed",
                    &account,
                ));
            }
        }
        self.bucket.set_rate(grant.max_msgs_per_s);
        let exp = grant.exp.unwrap_or_default();
        if (&grant.sub, &grant.org, grant.usage)
            != (&self.grant.sub, &self.grant.org, self.grant.usage)
        {
            // Another user (or account of record, or use) from here on, counted as such.
            self.usage = self.edge.usage.session(&grant);
        }
        self.grant = grant;
        replies.push(ServerMsg::Authed { id, exp });
        if moved_snapshots.is_empty() {
            return Ok(replies);
        }
        // The snapshots of moved symbols follow their `subscribed`.
        let mut out: Vec<Message> = replies.iter().map(|m| self.message(m)).collect();
        for (tick, mode) in &moved_snapshots {
            out.push(self.frame(tick.snapshot(self.format, *mode).clone()));
        }
        self.send(out).await?;
        Ok(Vec::new())
    }

    /// Whether the edge may follow `symbol`'s tape (`tf` none) or `tf` bars, real-time or
    /// `delayed`, for this session: at once if it follows them already, else within
    /// `limits.max_carried_symbols` and the rate of new interest
    /// (`limits.max_new_symbols_per_s`, a token taken). Else when to retry and why.
    fn admit_tape(
        &self,
        symbol: &Symbol,
        tf: Option<Timeframe>,
        delayed: bool,
    ) -> Result<(), (u64, String)> {
        let edge = &self.edge;
        let limits = &edge.config.limits;
        let (count, followed) = match (tf, delayed) {
            (None, false) => (
                edge.tapes.followed(),
                edge.tapes.is_followed(symbol.as_str()),
            ),
            (None, true) => {
                let tapes = &edge.delayed_tapes;
                (tapes.followed(), tapes.is_followed(symbol.as_str()))
            }
            (Some(tf), false) => {
                let feeds = &edge.bar_feeds;
                (feeds.followed(), feeds.is_followed(symbol, tf))
            }
            (Some(tf), true) => {
                let feeds = &edge.delayed_bar_feeds;
                (feeds.followed(), feeds.is_followed(symbol, tf))
            }
        };
        if followed {
            return Ok(());
        }
        if count >= limits.max_carried_symbols {
            let why = format!(
                "this edge follows its most tapes ({}): retry after retry_ms, or use another edge",
                limits.max_carried_symbols
            );
            return Err((limits.retry_after_ms, why));
        }
        let mut rate = edge.new_interest.lock().unwrap_or_else(|e| e.into_inner());
        if !rate.take(Instant::now()) {
            let why = "this edge takes on new symbols at a bounded rate: retry after retry_ms";
            return Err((rate.wait_ms(1).max(1), why.into()));
        }
        Ok(())
    }

    /// Moves the session's tape of `symbol` (`tf` none) or its `tf` bars to the delayed
    /// side (`delayed`) or to real time, with a history of the default length from there;
    /// the `subscribed` that tells the client.
    fn move_tape(
        &mut self,
        id: Option<i64>,
        symbol: &Symbol,
        tf: Option<Timeframe>,
        bar_intervals: &HashMap<(Symbol, Timeframe), u32>,
        delayed: bool,
    ) -> ServerMsg {
        let (stream, interval_ms) = match tf {
            None => {
                let history = protocol::DEFAULT_TRADES_HISTORY as usize;
                self.tapes.subscribe(symbol, history, delayed);
                (StreamKind::Trades, 0)
            }
            Some(tf) => {
                let held = bar_intervals.get(&(symbol.clone(), tf)).copied();
                let ms = held.unwrap_or(protocol::DEFAULT_INTERVAL_MS);
                let history = tickmesh_core::bar::DEFAULT_HISTORY as usize;
                self.tapes
                    .subscribe_bars(symbol, tf, history, (ms, delayed));
                (StreamKind::Bars, ms)
            }
        };
        ServerMsg::Subscribed {
            id,
            symbols: vec![symbol.to_string()],
            chains: Vec::new(),
            interval_ms,
            mode: Default::default(),
            stream,
            tf,
            delayed: match delayed {
                true => vec![symbol.to_string()],
                false => Vec::new(),
            },
        }
    }

    /// Moves the session's subscription to `symbol` into the delayed core (`delayed`) or
    /// out of it into the real-time one, as `how`; returns the snapshot to send now, if
    /// the new core has one (else it comes out of a later flush: the KV value or the
    /// first tick for real time, the first sample due for delayed).
    fn move_core(
        &mut self,
        symbol: &Symbol,
        how: (tickmesh_core::Mode, u32),
        delayed: bool,
    ) -> Option<Arc<crate::fanout::SharedTick>> {
        let one = std::slice::from_ref(symbol);
        let edge = self.edge.clone();
        let outcome = if delayed {
            edge.runtime.unsubscribe(self.id, one);
            let member = self.delayed_member();
            edge.delayed.subscribe(&member, one, how, Instant::now())
        } else {
            if let Some(place) = &self.delayed {
                edge.delayed.unsubscribe(place.member.id(), one);
            }
            edge.runtime
                .subscribe(&self.member, one, how, Instant::now())
        };
        let outcome = outcome.into_iter().next()?;
        if outcome.latest.is_none() {
            self.awaiting_since = Some(std::time::Instant::now());
            if outcome.fetch && !delayed {
                let runtime = Arc::downgrade(&edge.runtime);
                edge.snapshots
                    .fetch_for(symbol.clone(), move |symbol, candidate| {
                        runtime
                            .upgrade()
                            .map_or(0, |r| r.offer_snapshot(symbol, candidate))
                    });
            }
        }
        outcome.snapshot
    }

    /// Answers a refused `auth` and ends the session with 4401.
    async fn refuse_auth(&mut self, id: Option<i64>, code: ErrorCode, message: &str) -> End {
        let msg = self.message(&ServerMsg::error(id, code, message));
        // Best effort: the close follows either way.
        let _ = self.send(vec![msg]).await;
        End::Close(close::UNAUTHORIZED, "unauthorized")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::protocol::Unsubscribe;

    fn subscribe(symbols: usize, chains: usize) -> Request {
        Request::Subscribe(Subscribe {
            symbols: vec!["AAPL".into(); symbols],
            chains: vec!["AAPL:2030-01-18".into(); chains],
            mode: Default::default(),
            interval_ms: None,
            stream: StreamKind::Ticks,
            history: None,
            tf: None,
            account: None,
            from_seq: None,
        })
    }

    #[test]
    fn a_subscribe_or_unsubscribe_costs_one_message_per_entries_per_message() {
        for (entries, want) in [(0, 1), (1, 1), (100, 1), (101, 2), (200, 2), (350, 4)] {
            assert_eq!(cost(&subscribe(entries, 0), 100), want, "{entries} symbols");
        }
        // Symbols and chains count together.
        assert_eq!(cost(&subscribe(60, 41), 100), 2);
        assert_eq!(cost(&subscribe(0, 250), 100), 3);
        let unsubscribe = Request::Unsubscribe(Unsubscribe {
            symbols: vec!["AAPL".into(); 150],
            chains: vec!["AAPL:2030-01-18".into(); 51],
            stream: StreamKind::Ticks,
            tf: None,
            account: None,
        });
        assert_eq!(cost(&unsubscribe, 100), 3);
        assert_eq!(cost(&subscribe(7, 0), 1), 7);
        // An account subscribe: a snapshot read and a consumer on the hub.
        let Request::Subscribe(mut account) = subscribe(0, 0) else {
            unreachable!()
        };
        account.account = Some("DEMO1".into());
        assert_eq!(
            cost(&Request::Subscribe(account), 100),
            ACCOUNT_SUBSCRIBE_COST
        );
        // Anything else costs one message, whatever it holds.
        assert_eq!(cost(&Request::Ping, 100), 1);
        let chains = Request::Chains {
            underlying: "A".repeat(1000),
        };
        assert_eq!(cost(&chains, 1), 1);
        // So large a request costs more than any tier's burst, never wraps around.
        assert_eq!(cost(&subscribe(1_000_000, 0), 1), 1_000_000);
    }
}
