//! The HTTP side: the listener, the hand-built WebSocket upgrade on `/v1/stream`, REST
//! ([`crate::rest`]) on its `/v1/` routes, and warp for everything else (`/`, `/healthz`,
//! `/readyz`, and `/metrics` unless it has a listener of its own).
//!
//! The upgrade is done here rather than with warp's `ws()` filter so that the
//! WebSocket's buffers can be sized: warp's filter allocates tungstenite's 128 KiB read
//! buffer per connection. It also negotiates permessage-deflate ([`crate::deflate`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tickmesh_core::Format;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;
use warp::reply::{Reply, Response};

use crate::auth::{AuthError, Verifier};
use crate::config::EdgeConfig;
use crate::gate::{self, Denied};
use crate::limits::Refusal;
use crate::limits::peers::{Pending, PendingHandshakes};
use crate::rest::Rest;
use crate::session::Identity;
use crate::state::Edge;
use crate::tls::ReloadingCert;
use crate::{control, deflate, revocations, session, sse, telemetry, tls};

/// Listen backlog: a connection storm needs more than tokio's default 128.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds `addr` with a large backlog, `SO_REUSEADDR` and `SO_REUSEPORT` (several edge
/// processes may share a port).
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Runs the edge on `listener` until `shutdown` completes, then drains: readiness turns
/// 503, every session is told to reconnect and closed with 4001, and the function returns
/// within `shutdown.grace_ms`.
pub async fn run(
    config: EdgeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let prometheus = telemetry::prometheus();
    let verifier = Verifier::new(&config.auth)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics_listen {addr}"))?,
        ),
        None => None,
    };
    let edge = Edge::new(config, verifier).await?;
    let nats = edge.nats.clone();
    control::spawn(edge.clone(), nats.client().clone()).await?;
    // Stopped when `run` returns, whatever the way.
    let metrics_stop = CancellationToken::new();
    let _metrics_stop = metrics_stop.clone().drop_guard();
    if let Some(listener) = metrics_listener {
        telemetry::serve(listener, prometheus, metrics_stop);
    }
    revocations::spawn(edge.clone());
    let usage_stop = CancellationToken::new();
    let usage_task = edge.usage.spawn(nats.client().clone(), usage_stop.clone());
    let routes = routes(edge.clone(), prometheus);
    let rest = Rest::new(edge.clone());
    let tracker = TaskTracker::new();
    tracing::info!(addr = ?listener.local_addr().ok(), edge = %edge.config.name, "edge listening");

    let handshake_timeout = Duration::from_millis(edge.config.limits.handshake_timeout_ms);
    let tls = match &edge.config.tls {
        Some(cfg) => {
            let cert = ReloadingCert::new(cfg)?;
            spawn_cert_reloader(
                cert.clone(),
                Duration::from_millis(cfg.reload_ms),
                edge.shutdown.clone(),
            );
            Some((tls::acceptor(cert.clone())?, cert))
        }
        None => None,
    };
    // Sessions are tracked (the exit waits for them); plain HTTP connections are not, so
    // that a keep-alive connection (a health check, a scraper) cannot hold the exit.
    let conns = Connections {
        edge: edge.clone(),
        routes,
        rest,
        tls,
        handshake_timeout,
        sessions: tracker.clone(),
        handshakes: Handshakes::new(edge.config.limits.max_handshakes),
        pending: PendingHandshakes::new(edge.config.limits.max_handshakes_per_ip),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => {
                if let Some((stream, peer)) = accepted {
                    tokio::spawn(conns.serve(stream, peer));
                }
            }
        }
    }

    // Draining: sessions are told to reconnect and closed with 4001. The listener stays
    // open until the process exits, so that `/readyz` answers 503 rather than a refused
    // connection, and an upgrade gets 503 `draining`.
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(edge.config.shutdown.grace_ms);
    tracing::info!(sessions = tracker.len(), "draining");
    edge.shutdown.cancel();
    tracker.close();
    let drained = tracker.wait();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            _ = &mut drained => break,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("grace period over; dropping the remaining connections");
                break;
            }
            accepted = accept(&listener) => {
                if let Some((stream, peer)) = accepted {
                    tokio::spawn(conns.serve(stream, peer));
                }
            }
        }
    }
    drop(listener);
    // The usage the sessions reported as they closed, written before NATS goes.
    usage_stop.cancel();
    if let Some(task) = usage_task {
        let _ = task.await;
        let js = async_nats::jetstream::new(nats.client().clone());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, edge.usage.flush(&js))
            .await
            .is_err()
        {
            tracing::warn!("usage records not written before the grace period ended");
        }
    }
    // Bounded by what is left of the grace period (at most 2 s): a NATS server that went
    // away must not hold the exit past `shutdown.grace_ms`.
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(Duration::from_secs(2));
    if tokio::time::timeout(left, edge.nats.drain()).await.is_err() {
        tracing::warn!(?left, "NATS drain did not finish in time");
    }
    Ok(())
}

/// The cap on connections in their handshake: from the start of TLS (in clear, of
/// reading) to their first HTTP request.
#[derive(Clone)]
struct Handshakes(Arc<Semaphore>);

impl Handshakes {
    fn new(max: usize) -> Self {
        Handshakes(Arc::new(Semaphore::new(max)))
    }

    /// Waits for a free handshake slot (in FIFO order); `pending` (the connection's place
    /// in its address's count) is given back with the slot.
    async fn slot(&self, pending: Pending) -> Handshake {
        let permit = self
            .0
            .clone()
            .acquire_owned()
            .await
            .expect("the handshake semaphore is never closed");
        metrics::gauge!("tickmesh_edge_handshakes_in_flight").increment(1.0);
        Handshake(Arc::new(Mutex::new(Some(Slot {
            _permit: permit,
            _pending: pending,
        }))))
    }
}

/// A taken slot; the permit goes back to the semaphore when it is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _pending: Pending,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("tickmesh_edge_handshakes_in_flight").decrement(1.0);
    }
}

/// A connection's handshake slot, given back when its first request arrives, or when the
/// connection ends before that (TLS failed, the request never came).
#[derive(Clone)]
struct Handshake(Arc<Mutex<Option<Slot>>>);

impl Handshake {
    fn done(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The next connection, or None after a failed accept (out of file descriptors and the
/// like), once a short back-off has passed instead of spinning.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(pair) => Some(pair),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The most bytes of a request line and headers: larger heads get HTTP 431.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// HTTP/1.1 for one connection whose first request head must be read by `deadline`.
fn http1(deadline: tokio::time::Instant) -> hyper::server::conn::http1::Builder {
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
        // A request head (a token in the query included) over this gets 431.
        .max_buf_size(MAX_REQUEST_HEAD)
        .clone()
}

/// What serving one HTTP connection needs.
struct Connections {
    edge: Arc<Edge>,
    routes: warp::filters::BoxedFilter<(Response,)>,
    rest: Arc<Rest>,
    tls: Option<(tokio_rustls::TlsAcceptor, Arc<ReloadingCert>)>,
    handshake_timeout: Duration,
    /// Where WebSocket sessions run.
    sessions: TaskTracker,
    handshakes: Handshakes,
    /// Connections of each address not past their first request
    /// (`limits.max_handshakes_per_ip`).
    pending: Arc<PendingHandshakes>,
}

impl Connections {
    /// Serves one connection: TLS if configured, HTTP/1.1, the upgrade on `/v1/stream`.
    /// Connections are always accepted at once, so that a burst of them (a market open, a
    /// reconnect storm) never overflows the listen backlog, where dropped SYNs would cost
    /// clients a second or more; each then waits for one of `limits.max_handshakes` slots
    /// before its TLS handshake and request are read, within `handshake_timeout_ms` from
    /// the accept. An address past `limits.max_handshakes_per_ip` such connections has
    /// the new one closed at once: idle connections from one address cannot take the
    /// slots that everyone else waits for.
    fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let _ = stream.set_nodelay(true);
        let edge = self.edge.clone();
        let routes = self.routes.clone();
        let rest = self.rest.clone();
        let tls = self.tls.clone();
        let handshake_timeout = self.handshake_timeout;
        let sessions = self.sessions.clone();
        let handshakes = self.handshakes.clone();
        let pending = self.pending.enter(peer.ip());
        async move {
            let Some(pending) = pending else {
                metrics::counter!("tickmesh_edge_admission_refusals_total", "reason" => "handshakes_per_ip")
                    .increment(1);
                tracing::debug!(%peer, "too many pending connections from this address; closed");
                return;
            };
            // The wait for a slot, TLS and the first request's head share one deadline.
            let deadline = tokio::time::Instant::now() + handshake_timeout;
            let Ok(handshake) = tokio::time::timeout_at(deadline, handshakes.slot(pending)).await
            else {
                tracing::debug!(%peer, "no handshake slot within the handshake timeout");
                return;
            };
            let first_request = handshake.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                first_request.done();
                let edge = edge.clone();
                let routes = routes.clone();
                let rest = rest.clone();
                let sessions = sessions.clone();
                async move {
                    if req.uri().path() == "/v1/stream" {
                        Ok::<_, Infallible>(upgrade(req, edge, peer, &sessions))
                    } else if req.uri().path() == "/v1/sse" {
                        Ok(sse::serve(req, edge, peer, &sessions))
                    } else if Rest::serves(req.uri().path()) {
                        Ok(rest.serve(req, peer).await)
                    } else {
                        let mut svc = warp::service(routes);
                        tower_service::Service::call(&mut svc, req).await
                    }
                }
            });
            let result = match tls {
                None => {
                    http1(deadline)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
                Some((acceptor, _)) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                    else {
                        metrics::counter!("tickmesh_edge_tls_failures_total").increment(1);
                        return;
                    };
                    http1(deadline)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
    }
}

fn routes(
    edge: Arc<Edge>,
    prometheus: &'static metrics_exporter_prometheus::PrometheusHandle,
) -> warp::filters::BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz").map(|| "ok".into_response());
    let ready_edge = edge.clone();
    let readyz = warp::path!("readyz").map(move || {
        let (status, body) = if ready_edge.shutdown.is_cancelled() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        } else if !ready_edge.nats.is_connected() {
            (StatusCode::SERVICE_UNAVAILABLE, "NATS disconnected")
        } else if !ready_edge.control_subscribed.load(Ordering::Acquire) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "revocations not subscribed yet",
            )
        } else if !revocations::is_replayed(&ready_edge) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "revocations not replayed yet",
            )
        } else if !ready_edge.refdata.is_loaded() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "reference data not loaded yet",
            )
        } else {
            (StatusCode::OK, "ready")
        };
        warp::reply::with_status(body, status).into_response()
    });
    let mut probes = healthz.or(readyz).unify().boxed();
    // With a listener of its own, /metrics is not served to clients (404).
    if edge.config.metrics_listen.is_none() {
        probes = probes.or(telemetry::route(prometheus)).unify().boxed();
    }
    let assets = crate::assets::routes();
    warp::get().and(probes.or(assets).unify()).boxed()
}

fn spawn_cert_reloader(cert: Arc<ReloadingCert>, period: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = timer.tick() => {}
            }
            match cert.reload_if_changed() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the old certificate")
                }
            }
        }
    });
}

fn refuse(status: StatusCode, reason: &'static str) -> Response {
    warp::reply::with_status(reason, status).into_response()
}

/// HTTP 401 with the reason in the body.
fn refuse_auth(e: AuthError) -> Response {
    let mut res = warp::reply::with_status(e.to_string(), StatusCode::UNAUTHORIZED).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// Completes a WebSocket upgrade by hand and starts the session.
fn upgrade(
    mut req: Request<Incoming>,
    edge: Arc<Edge>,
    peer: SocketAddr,
    tracker: &TaskTracker,
) -> Response {
    let headers = req.headers();
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != hyper::Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let subprotocol_offered = offered.is_some();
    let Some(format) = Format::negotiate(offered) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Protocol: offer tickmesh.v1.json or tickmesh.v1.msgpack",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let deflate = deflate::negotiate(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let who = match admit_session(&req, &edge, peer) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max = edge.config.session.max_message_bytes;
    // Frames fed between two flushes go out in one write (a session feeds every ready
    // frame, then flushes once); the buffer grows only as far as a session fills it, so an
    // idle session holds none. The 1 KiB read buffer keeps idle sessions small; larger
    // client messages take more reads.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(max + 1))
        .max_frame_size(Some(max + 1));
    let requested_at = std::time::Instant::now();
    let sessions = tracker.clone();
    // The upgrade and the session are two tasks: the session's is spawned once the
    // upgrade is done, so that what only the upgrade needed (the request's identity, the
    // upgrade's own future) is freed rather than held for the session's whole life.
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                metrics::histogram!("tickmesh_edge_handshake_seconds")
                    .record(requested_at.elapsed().as_secs_f64());
                let io = TokioIo::new(upgraded);
                if deflate {
                    let io = deflate::stream::Inflating::new(io, max);
                    let ws =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                    sessions.spawn(session::run(deflate::Compressing(ws), edge, format, who));
                } else {
                    let ws =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                    sessions.spawn(session::run(ws, edge, format, who));
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if deflate {
        metrics::counter!("tickmesh_edge_deflate_sessions_total").increment(1);
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(deflate::RESPONSE),
        );
    }
    if subprotocol_offered {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(format.subprotocol()),
        );
    }
    res
}

/// Who a new session (a WebSocket upgrade, an SSE request) is, or the HTTP answer that
/// refuses it: a draining edge (503), a refused token (401, or 429 after too many from
/// the address), a connection limit (503 for the process, 429 for the address or user).
/// The token comes from `Authorization: Bearer`, else the `token` query parameter
/// (browsers can set no header on a WebSocket or an `EventSource`).
pub(crate) fn admit_session(
    req: &Request<Incoming>,
    edge: &Edge,
    peer: SocketAddr,
) -> Result<Identity, Box<Response>> {
    if edge.shutdown.is_cancelled() {
        return Err(Box::new(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another edge",
        )));
    }
    let token = gate::bearer(req.headers()).or_else(|| gate::query_token(req.uri()));
    let grant = match gate::admit(edge, peer.ip(), token.as_deref()) {
        Ok(grant) => grant,
        Err(Denied::Throttled(left)) => {
            let mut res = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address: retry later",
            );
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(left.as_secs().max(1)),
            );
            return Err(Box::new(res));
        }
        Err(Denied::Refused(e)) => {
            // The reason and the peer; never the token.
            tracing::debug!(%peer, reason = e.label(), "upgrade refused: bad token");
            return Err(Box::new(refuse_auth(e)));
        }
    };
    let limits = &edge.config.limits;
    let admission = match edge.registry.admit(peer.ip(), grant.sub.as_deref(), limits) {
        Ok(a) => a,
        Err(refusal) => {
            let (status, label) = match refusal {
                Refusal::Process => (StatusCode::SERVICE_UNAVAILABLE, "process"),
                Refusal::Ip => (StatusCode::TOO_MANY_REQUESTS, "ip"),
                Refusal::User => (StatusCode::TOO_MANY_REQUESTS, "user"),
            };
            metrics::counter!("tickmesh_edge_admission_refusals_total", "reason" => label)
                .increment(1);
            return Err(Box::new(
                warp::reply::with_status(refusal.to_string(), status).into_response(),
            ));
        }
    };
    Ok(Identity {
        grant,
        admission,
        peer: Some(peer),
    })
}
