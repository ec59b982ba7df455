//! The services' Prometheus recorder: one per process, installed as the `metrics` crate's
//! global recorder. Each service names its own histogram buckets and keeps the handle it
//! renders `/metrics` with; [`serve`] is the minimal HTTP/1.1 responder that ingest and the
//! order system serve it with (`GET /metrics`, and `GET /healthz` answering `ok`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Installs a Prometheus recorder as the process's recorder and returns its handle. The
/// histograms whose names `buckets` matches get those bucket bounds. If a recorder is
/// installed already (several services in one test process), that one stays, and this
/// handle renders only what is recorded through this one.
///
/// # Panics
/// If a bucket list is empty: the lists are the services' constants.
pub fn install(buckets: &[(Matcher, &[f64])]) -> PrometheusHandle {
    let recorder = buckets
        .iter()
        .fold(PrometheusBuilder::new(), |builder, (matcher, bounds)| {
            builder
                .set_buckets_for_metric(matcher.clone(), bounds)
                .expect("bucket list is not empty")
        })
        .build_recorder();
    let handle = recorder.handle();
    if ::metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics shows only this one's");
    }
    handle
}

/// Binds `addr` and serves `handle` at `/metrics` until `cancel`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    handle: &'static PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
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

/// One request: a head of at most 8 KiB within 5 s, then the answer and the close.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_get_the_buckets_their_names_match() {
        let handle = install(&[
            (Matcher::Suffix("_seconds".into()), &[0.5, 1.0]),
            (Matcher::Full("queue_bytes".into()), &[100.0]),
        ]);
        ::metrics::histogram!("wait_seconds").record(0.7);
        ::metrics::histogram!("queue_bytes").record(7.0);
        let text = handle.render();
        for line in [
            r#"wait_seconds_bucket{le="0.5"} 0"#,
            r#"wait_seconds_bucket{le="1"} 1"#,
            r#"queue_bytes_bucket{le="100"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }
}
