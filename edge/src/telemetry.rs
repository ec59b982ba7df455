//! Metrics: one Prometheus recorder per process, rendered at `/metrics`: on the client
//! listener, or on a listener of its own (`metrics_listen`) that serves nothing else.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::reply::{Reply, Response};

/// Connections served at once on `metrics_listen` (a scraper needs one); more are closed
/// as soon as they are accepted.
const MAX_SCRAPE_CONNECTIONS: usize = 16;
/// A request head on `metrics_listen` must arrive within this; otherwise the connection
/// is closed.
const SCRAPE_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

const DWELL_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
    1.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. Several edges
/// in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = tickmesh_service::metrics::install(&[
            (
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ],
            ),
            (
                // Time inside the edge and from ingest to it: tens of microseconds matter.
                Matcher::Full("tickmesh_edge_tick_dwell_seconds".into()),
                DWELL_BUCKETS,
            ),
            (
                Matcher::Full("tickmesh_edge_tick_transit_seconds".into()),
                DWELL_BUCKETS,
            ),
            (
                Matcher::Full("tickmesh_edge_session_queue_bytes".into()),
                &[
                    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                ],
            ),
        ]);
        metrics::gauge!("tickmesh_edge_build_info", "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        zero_series();
        handle
    })
}

/// `GET /metrics`: the process's Prometheus text.
pub fn route(handle: &'static PrometheusHandle) -> warp::filters::BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .map(move || {
            warp::reply::with_header(handle.render(), "content-type", "text/plain; version=0.0.4")
                .into_response()
        })
        .boxed()
}

/// Serves `GET /metrics`, and 404 for anything else, on `listener` until `stop`. Plain
/// HTTP/1.1: the listener belongs on a private network.
pub fn serve(listener: TcpListener, handle: &'static PrometheusHandle, stop: CancellationToken) {
    let routes = warp::get().and(route(handle)).boxed();
    let slots = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("too many metrics connections; closing one");
                continue;
            };
            let routes = routes.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut svc = warp::service(routes.clone());
                    async move {
                        let res: Result<Response, Infallible> =
                            tower_service::Service::call(&mut svc, req).await;
                        res
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(SCRAPE_HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = conn => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "metrics connection ended");
                        }
                    }
                }
            });
        }
    });
}

/// Creates at zero the series that only an event would otherwise create, so that
/// `/metrics` lists every metric from the start (dashboards show 0, not "no data") and
/// Prometheus's `increase()` counts the first event after a restart.
fn zero_series() {
    use metrics::{counter, gauge};
    for encoding in ["json", "msgpack"] {
        gauge!("tickmesh_edge_sessions", "encoding" => encoding).increment(0.0);
        counter!("tickmesh_edge_sessions_total", "encoding" => encoding).increment(0);
    }
    for gauge in [
        "tickmesh_edge_connections",
        "tickmesh_edge_subscriptions",
        "tickmesh_edge_symbols",
        "tickmesh_edge_delayed_symbols",
        "tickmesh_edge_handshakes_in_flight",
        "tickmesh_edge_tapes",
        "tickmesh_edge_bar_feeds",
        "tickmesh_edge_delayed_tapes",
        "tickmesh_edge_delayed_bar_feeds",
        "tickmesh_edge_account_subscriptions",
    ] {
        gauge!(gauge).increment(0.0);
    }
    for total in [
        "tickmesh_edge_ticks_in_total",
        "tickmesh_edge_updates_out_total",
        "tickmesh_edge_bytes_out_total",
        "tickmesh_edge_nats_reconnects_total",
        "tickmesh_edge_trades_in_total",
        "tickmesh_edge_trades_out_total",
        "tickmesh_edge_history_errors_total",
        "tickmesh_edge_account_events_in_total",
        "tickmesh_edge_account_events_out_total",
        "tickmesh_edge_account_events_invalid_total",
        "tickmesh_edge_delayed_read_errors_total",
        "tickmesh_edge_delayed_invalid_total",
        "tickmesh_edge_deflate_sessions_total",
        "tickmesh_edge_deflate_inflated_total",
    ] {
        counter!(total).increment(0);
    }
    let labelled: [(&'static str, &'static str, &[&'static str]); 9] = [
        (
            "tickmesh_edge_slow_consumer_total",
            "action",
            &["conflated", "closed", "cut_tape", "cut_account"],
        ),
        (
            "tickmesh_edge_account_restarts_total",
            "reason",
            &["fresh", "failed"],
        ),
        (
            "tickmesh_edge_account_catch_ups_total",
            "reason",
            &["gap", "reconnect", "quiet"],
        ),
        (
            "tickmesh_edge_trades_dropped_total",
            "reason",
            &["invalid", "wrong_subject", "duplicate"],
        ),
        (
            "tickmesh_edge_bars_dropped_total",
            "reason",
            &["invalid", "wrong_subject"],
        ),
        (
            "tickmesh_edge_snapshot_reads_total",
            "source",
            &["local", "cache", "kv", "error"],
        ),
        (
            "tickmesh_edge_ticks_dropped_total",
            "reason",
            &["stale", "wrong_subject", "invalid"],
        ),
        (
            "tickmesh_edge_nats_events_total",
            "event",
            &[
                "connected",
                "disconnected",
                "slow_consumer",
                "server_error",
                "client_error",
            ],
        ),
        (
            "tickmesh_edge_errors_total",
            "code",
            &[
                "bad_request",
                "invalid_symbol",
                "unknown_symbol",
                "not_entitled",
                "too_many_symbols",
                "rate_limited",
            ],
        ),
    ];
    for (name, label, values) in labelled {
        for &value in values {
            counter!(name, label => value).increment(0);
        }
    }
    counter!("tickmesh_edge_rest_untracked_total").increment(0);
    for route in ["snapshot", "chains", "bars", "openapi"] {
        for status in ["200", "400", "401", "403", "404", "429", "503"] {
            counter!("tickmesh_edge_rest_requests_total", "route" => route, "status" => status)
                .increment(0);
        }
    }
}
