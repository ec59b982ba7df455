//! The HTTP side: the listener, the hand-built WebSocket upgrade on `/v1/stream`, and
//! warp for everything else (`/`, `/healthz`, `/readyz`, `/metrics`).
//!
//! The upgrade is done here rather than with warp's `ws()` filter so that the
//! WebSocket's buffers can be sized: warp's filter allocates tungstenite's 128 KiB read
//! buffer per connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tickmesh_core::Format;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;
use warp::reply::{Reply, Response};

use crate::config::EdgeConfig;
use crate::fanout::FanoutConfig;
use crate::hub::Hub;
use crate::nats::NatsLink;
use crate::snapshot::Snapshots;
use crate::{session, telemetry};

/// Listen backlog: a connection storm needs more than tokio's default 128.
pub const LISTEN_BACKLOG: i32 = 4096;

/// State shared by every session of this edge.
#[derive(Debug)]
pub struct Edge {
    pub config: EdgeConfig,
    pub hub: Arc<Hub>,
    pub snapshots: Snapshots,
    /// Cancelled when the edge starts draining.
    pub shutdown: CancellationToken,
}

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
    let kv_timeout = Duration::from_millis(config.snapshot.kv_timeout_ms);
    let nats = NatsLink::connect(&config.nats, config.shards, kv_timeout).await?;
    let hub = Hub::new(
        FanoutConfig {
            live_budget_bytes: config.session.live_budget_bytes,
            slow_interval_ms: config.session.slow_interval_ms,
            max_ticks_per_frame: config.session.max_ticks_per_frame,
        },
        nats.clone(),
    );
    let snapshots = Snapshots::new(
        nats.clone(),
        Duration::from_millis(config.snapshot.cache_ttl_ms),
        config.snapshot.cache_capacity,
    );
    let edge = Arc::new(Edge {
        config,
        hub,
        snapshots,
        shutdown: CancellationToken::new(),
    });
    let routes = routes(edge.clone(), prometheus);
    let tracker = TaskTracker::new();
    tracing::info!(addr = ?listener.local_addr().ok(), edge = %edge.config.name, "edge listening");

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let routes = routes.clone();
        let tracker2 = tracker.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let edge = edge.clone();
                let routes = routes.clone();
                let tracker = tracker2.clone();
                async move {
                    if req.uri().path() == "/v1/stream" {
                        Ok::<_, Infallible>(upgrade(req, edge, peer, &tracker))
                    } else {
                        let mut svc = warp::service(routes);
                        tower_service::Service::call(&mut svc, req).await
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }

    drop(listener);
    let grace = Duration::from_millis(edge.config.shutdown.grace_ms);
    tracing::info!(sessions = tracker.len(), "draining");
    edge.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over; dropping the remaining connections");
    }
    edge.hub.nats().drain().await;
    Ok(())
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
        } else if !ready_edge.hub.nats().is_connected() {
            (StatusCode::SERVICE_UNAVAILABLE, "NATS disconnected")
        } else {
            (StatusCode::OK, "ready")
        };
        warp::reply::with_status(body, status).into_response()
    });
    let metrics = warp::path!("metrics").map(move || {
        warp::reply::with_header(
            prometheus.render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    });
    let assets = crate::assets::routes();
    warp::get()
        .and(
            healthz
                .or(readyz)
                .unify()
                .or(metrics)
                .unify()
                .or(assets)
                .unify(),
        )
        .boxed()
}

fn refuse(status: StatusCode, reason: &'static str) -> Response {
    warp::reply::with_status(reason, status).into_response()
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
    if edge.shutdown.is_cancelled() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another edge",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max = edge.config.session.max_message_bytes;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(max + 1))
        .max_frame_size(Some(max + 1));
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config),
                )
                .await;
                session::run(ws, edge, format, Some(peer)).await;
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
    if subprotocol_offered {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(format.subprotocol()),
        );
    }
    res
}
