//! Client requests of a session: subscribe, unsubscribe, list, ping, chains and auth.

use std::collections::HashSet;

use tickmesh_core::Symbol;
use tickmesh_core::protocol::{
    self, ClientMsg, ErrorCode, Request, ServerMsg, Subscribe, SubscriptionInfo, close,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

use super::{End, Session};
use crate::auth::AuthError;

/// Longest interval a subscription may ask for, ms.
const MAX_INTERVAL_MS: u32 = 60_000;

fn count_error(code: &'static str) {
    metrics::counter!("tickmesh_edge_errors_total", "code" => code).increment(1);
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Handles one request; returns the replies still to send.
    pub(super) async fn on_request(
        &mut self,
        ClientMsg { id, request }: ClientMsg,
    ) -> Result<Vec<ServerMsg>, End> {
        Ok(match request {
            Request::Subscribe(sub) => return self.subscribe(id, sub).await,
            Request::Unsubscribe(unsub) => {
                let mut replies = Vec::new();
                let mut symbols = self.parse_symbols(id, &unsub.symbols, &mut replies);
                let chains = self.expand_chains(id, &unsub.chains, &mut symbols, &mut replies);
                let removed = self.edge.hub.unsubscribe(self.id, &symbols);
                for s in &removed {
                    self.requested.remove(s);
                }
                replies.push(ServerMsg::Unsubscribed {
                    id,
                    symbols: removed.iter().map(|s| s.to_string()).collect(),
                    chains,
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
            Request::Chains { underlying } => match self.edge.refdata.chains(&underlying) {
                Some(expiries) => vec![ServerMsg::Chains {
                    id,
                    underlying,
                    expiries,
                }],
                None => {
                    count_error("unknown_symbol");
                    vec![ServerMsg::symbol_error(
                        id,
                        ErrorCode::UnknownSymbol,
                        &underlying,
                        "no option chain for this underlying",
                    )]
                }
            },
            Request::Auth { token } => return self.auth(id, &token).await,
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
                    count_error("invalid_symbol");
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

    /// Expands `chains` (`UNDERLYING:YYYY-MM-DD`) into `symbols` (skipping duplicates);
    /// refused chains get an error. Returns the chains that expanded.
    fn expand_chains(
        &self,
        id: Option<i64>,
        chains: &[String],
        symbols: &mut Vec<Symbol>,
        errors: &mut Vec<ServerMsg>,
    ) -> Vec<String> {
        let mut seen: HashSet<Symbol> = symbols.iter().cloned().collect();
        let mut expanded = Vec::new();
        for chain in chains {
            match self.edge.refdata.expand_chain(chain) {
                Ok(options) => {
                    symbols.extend(options.into_iter().filter(|o| seen.insert(o.clone())));
                    expanded.push(chain.clone());
                }
                Err(e) => {
                    // The metric's label is the code the client gets.
                    count_error(match e.code() {
                        ErrorCode::InvalidSymbol => "invalid_symbol",
                        _ => "unknown_symbol",
                    });
                    errors.push(ServerMsg::symbol_error(id, e.code(), chain, e.to_string()));
                }
            }
        }
        expanded
    }

    /// Sends the replies (errors, `subscribed`) and then the snapshots itself, so that
    /// the snapshots follow `subscribed`; returns nothing more to send.
    async fn subscribe(&mut self, id: Option<i64>, req: Subscribe) -> Result<Vec<ServerMsg>, End> {
        let started = std::time::Instant::now();
        let requested = req
            .interval_ms
            .unwrap_or(protocol::DEFAULT_INTERVAL_MS)
            .min(MAX_INTERVAL_MS);
        let interval_ms = requested.max(self.grant.min_interval_ms);
        let mut replies = Vec::new();
        let mut candidates = self.parse_symbols(id, &req.symbols, &mut replies);
        let chains = self.expand_chains(id, &req.chains, &mut candidates, &mut replies);

        let edge = self.edge.clone();
        let hub = &edge.hub;
        let max = self.grant.max_symbols as usize;
        let mut room = max.saturating_sub(hub.subscription_count(self.id));
        let mut accepted = Vec::with_capacity(candidates.len());
        for symbol in candidates {
            if !self.grant.allows(symbol.as_str(), &edge.refdata) {
                count_error("not_entitled");
                replies.push(ServerMsg::symbol_error(
                    id,
                    ErrorCode::NotEntitled,
                    symbol.as_str(),
                    "your entitlements do not cover this symbol",
                ));
            } else if hub.is_subscribed(self.id, symbol.as_str()) {
                accepted.push(symbol);
            } else if room > 0 && !edge.refdata.is_known_or_unloaded(symbol.as_str()) {
                count_error("unknown_symbol");
                replies.push(ServerMsg::symbol_error(
                    id,
                    ErrorCode::UnknownSymbol,
                    symbol.as_str(),
                    "no such instrument",
                ));
            } else if room > 0 {
                room -= 1;
                accepted.push(symbol);
            } else {
                count_error("too_many_symbols");
                replies.push(ServerMsg::symbol_error(
                    id,
                    ErrorCode::TooManySymbols,
                    symbol.as_str(),
                    format!("a session may hold at most {max} symbols"),
                ));
            }
        }
        let outcomes = hub.subscribe(self.id, &accepted, req.mode, interval_ms);
        for s in &accepted {
            self.requested.insert(s.clone(), requested);
        }
        replies.push(ServerMsg::Subscribed {
            id,
            symbols: accepted.iter().map(|s| s.to_string()).collect(),
            chains,
            interval_ms,
            mode: req.mode,
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
        for (symbol, outcome) in accepted.iter().zip(&outcomes) {
            if !outcome.new_subscription {
                // Held already: mode and interval changed in place, no second snapshot.
                continue;
            }
            if outcome.latest.is_some() {
                local += 1;
                match hub.take_snapshot(self.id, symbol.as_str(), None) {
                    Some(tick) => ticks.push(tick),
                    // Nothing newer than what the session had: the next tick is awaited.
                    None => {
                        self.awaiting_since = Some(started);
                        awaited = true;
                    }
                }
            } else {
                self.awaiting_since = Some(started);
                awaited = true;
                if outcome.fetch {
                    edge.snapshots.fetch_for(hub.clone(), symbol.clone());
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
            count_error("unauthorized");
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
        let (mut kept, lost): (Vec<_>, Vec<_>) = self
            .edge
            .hub
            .subscriptions(self.id)
            .into_iter()
            .partition(|(s, _)| grant.allows(s.as_str(), &self.edge.refdata));
        let excess = kept.split_off(kept.len().min(grant.max_symbols as usize));
        for (s, _) in &lost {
            count_error("not_entitled");
            replies.push(ServerMsg::symbol_error(
                id,
                ErrorCode::NotEntitled,
                s.as_str(),
                "no longer entitled: unsubscribed",
            ));
        }
        for (s, _) in &excess {
            count_error("too_many_symbols");
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
        let dropped: Vec<Symbol> = lost.into_iter().chain(excess).map(|(s, _)| s).collect();
        for s in &dropped {
            self.requested.remove(s);
        }
        self.edge.hub.unsubscribe(self.id, &dropped);
        // Intervals follow the new tier, tighter or looser.
        for (symbol, sub) in &kept {
            let requested = self
                .requested
                .get(symbol)
                .copied()
                .unwrap_or(sub.interval_ms);
            let wanted = requested.max(grant.min_interval_ms);
            if wanted != sub.interval_ms {
                self.edge
                    .hub
                    .subscribe(self.id, std::slice::from_ref(symbol), sub.mode, wanted);
            }
        }
        self.bucket.set_rate(grant.max_msgs_per_s);
        let exp = grant.exp.unwrap_or_default();
        self.grant = grant;
        replies.push(ServerMsg::Authed { id, exp });
        Ok(replies)
    }

    /// Answers a refused `auth` and ends the session with 4401.
    async fn refuse_auth(&mut self, id: Option<i64>, code: ErrorCode, message: &str) -> End {
        let msg = self.message(&ServerMsg::error(id, code, message));
        // Best effort: the close follows either way.
        let _ = self.send(vec![msg]).await;
        End::Close(close::UNAUTHORIZED, "unauthorized")
    }
}
