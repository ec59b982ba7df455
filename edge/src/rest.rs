//! REST, for clients that cannot hold a WebSocket: `GET /v1/snapshot`,
//! `GET /v1/chains/{underlying}` and `GET /v1/bars/{symbol}`, described at
//! `GET /v1/openapi.json`.
//!
//! A request is read ([`query`]), its token verified as an upgrade's is ([`crate::gate`]),
//! its cost taken from its sender's request rates ([`crate::limits::rates`]), then it is
//! answered ([`answers`]) with the WebSocket's objects, checks and error codes. A request
//! refused whole gets an HTTP error status with one `error` object as its body; a
//! snapshot's refused symbols are listed in its answer, as a `subscribe` lists them.

mod answers;
pub mod openapi;
pub mod query;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use tickmesh_core::Format;
use tickmesh_core::protocol::{ErrorCode, ServerMsg};
use tokio::sync::Semaphore;
use warp::reply::{Reply as _, Response};

use crate::auth::AuthError;
use crate::checks::{Refusals, count_error};
use crate::gate::{self, Denied};
use crate::limits::rates::{Over, RestRates, Whose};
use crate::state::Edge;
use query::{Ask, Route};

/// What REST keeps across requests.
#[derive(Debug)]
pub struct Rest {
    edge: Arc<Edge>,
    rates: RestRates,
    /// `limits.rest_max_reads`.
    reads: Arc<Semaphore>,
    /// `/v1/openapi.json`, made once.
    openapi: Bytes,
}

/// An answer: its status, its JSON body, and when to try again.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

/// The HTTP status of a request refused whole with `code`.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidSymbol | ErrorCode::TooManySymbols => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::NotEntitled => StatusCode::FORBIDDEN,
        ErrorCode::UnknownSymbol => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::SlowConsumer => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Reply {
    fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            retry_after: None,
        }
    }

    /// `error` as the body, with the status of its code (and `Retry-After` from its
    /// `retry_ms`).
    fn error(error: &ServerMsg) -> Reply {
        let (code, retry_ms) = match error {
            ServerMsg::Error { code, retry_ms, .. } => (*code, *retry_ms),
            _ => (ErrorCode::BadRequest, None),
        };
        Reply {
            status: status_of(code),
            body: error.encode(Format::Json),
            retry_after: retry_ms.map(Duration::from_millis),
        }
    }

    /// The first refusal of a request about one thing.
    fn refused(refusals: Refusals) -> Reply {
        match refusals.finish().first() {
            Some(error) => Reply::error(error),
            None => Reply::error(&ServerMsg::error(None, ErrorCode::BadRequest, "refused")),
        }
    }

    /// A new `error` of `code`, counted.
    fn new_error(code: ErrorCode, message: impl Into<String>, retry: Option<Duration>) -> Reply {
        count_error(code, 1);
        let mut error = ServerMsg::error(None, code, message);
        if let (ServerMsg::Error { retry_ms, .. }, Some(after)) = (&mut error, retry) {
            *retry_ms = Some(after.as_millis().try_into().unwrap_or(u64::MAX));
        }
        Reply::error(&error)
    }

    fn into_response(self) -> Response {
        let mut res = warp::reply::with_status(self.body, self.status).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            let secs = after.as_millis().div_ceil(1000).max(1);
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// HTTP 401 for a refused token: `token_expired` or `unauthorized`, the reason as the
/// message (as the upgrade's body says it).
fn unauthorized(e: &AuthError) -> Reply {
    let code = match e {
        AuthError::Expired => ErrorCode::TokenExpired,
        _ => ErrorCode::Unauthorized,
    };
    Reply::new_error(code, e.to_string(), None)
}

/// HTTP 429 for a request over its sender's rate.
fn over_rate(whose: Whose, over: Over, edge: &Edge) -> Reply {
    let limits = &edge.config.limits;
    let (who, rate) = match whose {
        Whose::Address => ("this address", limits.rest_requests_per_s_per_ip),
        Whose::User => ("this user", limits.rest_requests_per_s_per_user),
    };
    match over {
        Over::Wait(after) => Reply::new_error(
            ErrorCode::RateLimited,
            format!(
                "over the REST rate of {who} ({rate} requests/s, bursts of twice that): retry after retry_ms"
            ),
            Some(after),
        ),
        Over::Never { burst } => Reply::new_error(
            ErrorCode::RateLimited,
            format!(
                "this request costs more than the {burst} requests a burst of {who} holds: ask for fewer symbols"
            ),
            None,
        ),
    }
}

impl Rest {
    pub fn new(edge: Arc<Edge>) -> Arc<Rest> {
        let limits = &edge.config.limits;
        Arc::new(Rest {
            rates: RestRates::new(limits),
            reads: Arc::new(Semaphore::new(limits.rest_max_reads)),
            openapi: openapi::document().into(),
            edge,
        })
    }

    /// Whether REST serves `path`.
    pub fn serves(path: &str) -> bool {
        Route::of(path).is_some()
    }

    /// Answers one request of `peer` (the body, if any, is not read), counted by route and
    /// status.
    pub async fn serve<B>(&self, req: Request<B>, peer: SocketAddr) -> Response {
        let started = Instant::now();
        let Some(route) = Route::of(req.uri().path()) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let reply = if req.method() != Method::GET {
            let mut res = Reply::new_error(ErrorCode::BadRequest, "only GET is served", None);
            res.status = StatusCode::METHOD_NOT_ALLOWED;
            res
        } else if route == Route::OpenApi {
            Reply::ok(self.openapi.to_vec())
        } else {
            self.answer(route, &req, peer).await
        };
        let status = reply.status;
        let mut res = reply.into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        metrics::counter!("tickmesh_edge_rest_requests_total", "route" => route.label(), "status" => status.as_str().to_owned())
            .increment(1);
        metrics::histogram!("tickmesh_edge_rest_request_seconds", "route" => route.label())
            .record(started.elapsed().as_secs_f64());
        res
    }

    /// Who asks, what it costs them, then the answer. Every request, a malformed one
    /// too, costs its sender at least one request of its rates.
    async fn answer<B>(&self, route: Route, req: &Request<B>, peer: SocketAddr) -> Reply {
        let edge = &self.edge;
        let token = gate::bearer(req.headers());
        let grant = match gate::admit(edge, peer.ip(), token.as_deref()) {
            Ok(grant) => grant,
            Err(Denied::Throttled(left)) => {
                return Reply::new_error(
                    ErrorCode::RateLimited,
                    "too many failed authentications from this address: retry later",
                    Some(left),
                );
            }
            Err(Denied::Refused(e)) => {
                // The reason and the peer; never the token.
                tracing::debug!(%peer, reason = e.label(), "REST request refused: bad token");
                return unauthorized(&e);
            }
        };
        let asked = query::parse(route, req.uri().path(), req.uri().query());
        let limits = &edge.config.limits;
        let cost = match &asked {
            Ok(Ask::Snapshot(q)) => {
                let read = q
                    .entries()
                    .len()
                    .min(crate::checks::read_cap(&grant, limits));
                read.div_ceil(limits.entries_per_message.max(1)).max(1)
            }
            _ => 1,
        };
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        if let Err((whose, over)) =
            self.rates
                .take(peer.ip(), grant.sub.as_deref(), cost, Instant::now())
        {
            return over_rate(whose, over, edge);
        }
        match asked {
            Err(bad) => Reply::new_error(ErrorCode::BadRequest, bad.0, None),
            Ok(Ask::Snapshot(q)) => self.snapshot(&grant, q).await,
            Ok(Ask::Chains(path)) => self.chains(&grant, path.underlying),
            Ok(Ask::Bars(path, q)) => self.bars(&grant, path, q).await,
            Ok(Ask::OpenApi) => Reply::ok(self.openapi.to_vec()),
        }
    }
}
