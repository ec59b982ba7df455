//! Metrics: one Prometheus recorder per process, served at `GET /metrics` on
//! `metrics_listen` by a minimal HTTP/1.1 responder (`GET /healthz` answers `ok`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tickmesh_ingest_ticks_in_total{source}` | counter | ticks the source produced |
//! | `tickmesh_ingest_ticks_out_total{source}` | counter | ticks published |
//! | `tickmesh_ingest_stale_ticks_total{source}` | counter | ticks dropped: `src_ts` older than one already sequenced |
//! | `tickmesh_ingest_corrupt_records_total{source}` | counter | file records skipped |
//! | `tickmesh_ingest_kv_lag_seconds` | histogram | first unwritten change → `md_last` put acknowledged |
//! | `tickmesh_ingest_kv_writes_total`, `_kv_errors_total` | counter | `md_last` puts |
//! | `tickmesh_ingest_kv_round_seconds` | histogram | one round of the `md_last` writer |
//! | `tickmesh_ingest_kv_pending` | gauge | symbols waiting for a `md_last` write |
//! | `tickmesh_ingest_refdata_writes_total`, `_refdata_errors_total` | counter | `md_ref` writes |
//! | `tickmesh_ingest_lease_held` | gauge | 1 while this node holds the feed's lease |
//! | `tickmesh_ingest_lease_events_total{event}` | counter | `acquired`, `lost`, `released` |
//! | `tickmesh_ingest_epoch` | gauge | the current epoch (µs) |

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        tickmesh_service::metrics::install(&[(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )])
    })
}

/// Binds `addr` and serves `/metrics` until `cancel`. Returns the bound address.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> anyhow::Result<SocketAddr> {
    let handle = prometheus();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics_listen {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => return,
                conn = listener.accept() => conn,
            };
            match conn {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, handle).await {
                            tracing::debug!(error = %e, "metrics request");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(%local, "serving /metrics");
    Ok(local)
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            anyhow::ensure!(buf.len() < 8192, "request head too large");
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), head)
        .await
        .context("request head timed out")??;
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", handle.render()),
        (b"GET", b"/healthz") => ("200 OK", "ok\n".to_string()),
        (b"GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
