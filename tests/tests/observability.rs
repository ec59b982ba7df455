//! Every metric the Grafana dashboard (docs/grafana/tickmesh.json) and the alert rules
//! (docs/alerts/tickmesh.rules.yml) use is served at `/metrics`. Counters and gauges are
//! there as soon as the edge and ingest start, before any client connects or anything goes
//! wrong: a panel or an alert on a series that nothing serves stays empty, and
//! `increase()` misses the first event after a restart. Histograms appear with their first
//! observation, so they are checked once a client has subscribed.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickmesh_tests::mesh::EdgeProcess;
use tickmesh_tests::*;

/// A series an expression selects: a metric name and the labels it must carry exactly
/// (`label="value"`; regular-expression matchers are not checked).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        for (k, v) in &self.labels {
            write!(f, " {k}=\"{v}\"")?;
        }
        Ok(())
    }
}

/// The `tickmesh_*` selectors in a PromQL expression.
fn selectors(expr: &str, out: &mut BTreeSet<Selector>) {
    let mut rest = expr;
    while let Some(at) = rest.find("tickmesh_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut labels = Vec::new();
        let after = &tail[end..];
        if let Some(inner) = after.strip_prefix('{') {
            let close = inner.find('}').expect("a selector's braces close");
            for matcher in inner[..close].split(',') {
                let matcher = matcher.trim();
                if matcher.contains("=~") || matcher.contains("!=") {
                    continue;
                }
                if let Some((k, v)) = matcher.split_once('=') {
                    labels.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
                }
            }
        }
        out.insert(Selector { name, labels });
        rest = &tail[end..];
    }
}

/// Every string in a JSON document (the dashboard's `expr` fields among them).
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn used_by_dashboards_and_alerts() -> BTreeSet<Selector> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana/tickmesh.json")).unwrap(),
    )
    .unwrap();
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    texts.push(std::fs::read_to_string(root.join("docs/alerts/tickmesh.rules.yml")).unwrap());
    let mut out = BTreeSet::new();
    for t in &texts {
        selectors(t, &mut out);
    }
    out
}

/// Whether the Prometheus text holds a series the selector matches.
fn served(metrics: &str, s: &Selector) -> bool {
    metrics.lines().any(|line| {
        let Some(rest) = line.strip_prefix(s.name.as_str()) else {
            return false;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return false;
        }
        s.labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
    })
}

fn missing<'a>(metrics: &str, wanted: impl Iterator<Item = &'a Selector>) -> Vec<String> {
    wanted
        .filter(|s| !served(metrics, s))
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn selectors_are_read_with_their_exact_labels() {
    let mut out = BTreeSet::new();
    selectors(
        r#"sum by (instance) (rate(tickmesh_edge_x_total{instance=~"$i", source="error"}[5m])) / tickmesh_edge_y"#,
        &mut out,
    );
    let got: Vec<String> = out.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got,
        [r#"tickmesh_edge_x_total source="error""#, "tickmesh_edge_y"]
    );
    let text = "tickmesh_edge_x_total{source=\"kv\"} 0\ntickmesh_edge_y 1\n";
    assert_eq!(
        missing(text, out.iter()),
        [r#"tickmesh_edge_x_total source="error""#]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_served_from_the_start() {
    let wanted = used_by_dashboards_and_alerts();
    assert!(
        wanted.len() > 20,
        "read only {} selectors from the dashboard and the rules",
        wanted.len()
    );
    let histogram = |s: &&Selector| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| s.name.ends_with(suffix))
    };
    let (edge_histograms, edge_wanted): (Vec<_>, Vec<_>) = wanted
        .iter()
        .filter(|s| s.name.starts_with("tickmesh_edge_"))
        .partition(histogram);
    let ingest_wanted: Vec<_> = wanted
        .iter()
        .filter(|s| !s.name.starts_with("tickmesh_edge_"))
        .collect();
    assert!(
        ingest_wanted
            .iter()
            .all(|s| s.name.starts_with("tickmesh_ingest_")),
        "{ingest_wanted:?}"
    );

    let nats = NatsServer::start().unwrap();
    // Ingest in this process (so this process's recorder is ingest's), the edge in its
    // own, both untouched by any client.
    let mut config = ingest_config(&nats.url(), 200);
    let ingest_metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    config.metrics_listen = Some(ingest_metrics);
    let ingest = start_ingest(config);
    let edge = EdgeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_tickmesh-test-edge")),
        &edge_config(&nats.url()),
    )
    .await
    .unwrap();

    // Ingest's counters appear with its first batch and its first KV round.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (edge_missing, ingest_missing) = loop {
        let (_, edge_text) = http_get(edge.addr, "/metrics").await.unwrap();
        let ingest_text = http_get(ingest_metrics, "/metrics")
            .await
            .map(|(_, t)| t)
            .unwrap_or_default();
        let found = (
            missing(&edge_text, edge_wanted.iter().copied()),
            missing(&ingest_text, ingest_wanted.iter().copied()),
        );
        if (found.0.is_empty() && found.1.is_empty()) || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        edge_missing.is_empty(),
        "a fresh edge's /metrics lacks {edge_missing:?}"
    );
    assert!(
        ingest_missing.is_empty(),
        "ingest's /metrics lacks {ingest_missing:?}"
    );

    // One client, every tick: an upgrade, a snapshot, a queue to drain.
    let mut c = Client::connect(edge.addr, tickmesh_core::Format::Json)
        .await
        .unwrap();
    c.send(serde_json::json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT"],"interval_ms":0}))
        .await
        .unwrap();
    c.collect(Duration::from_secs(1)).await.unwrap();
    let (_, edge_text) = http_get(edge.addr, "/metrics").await.unwrap();
    let histograms_missing = missing(&edge_text, edge_histograms.iter().copied());
    assert!(
        histograms_missing.is_empty(),
        "after a session, the edge's /metrics lacks {histograms_missing:?}"
    );
    assert!(
        edge_histograms.len() >= 3,
        "only {} histogram series read",
        edge_histograms.len()
    );
    drop(edge);
    ingest.stop().await.unwrap();
}

/// The status and the headers (names lower-cased) of `GET path` sent with `Host: host`.
async fn head_of(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
) -> (u16, Vec<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// With `metrics_listen`, Prometheus scrapes `/metrics` there and nowhere else: the client
/// port answers 404 for it and serves everything else as before, and the metrics port
/// serves nothing but `/metrics`. It closes with the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener_are_not_served_to_clients() {
    let nats = NatsServer::start().unwrap();
    let mut config = edge_config(&nats.url());
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    config.metrics_listen = Some(metrics);
    create_empty_refdata(&nats.url()).await.unwrap();
    let (edge, addr) = start_edge(config).await.unwrap();

    let (status, text) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("tickmesh_edge_build_info"), "{text}");
    assert_eq!(http_get(metrics, "/").await.unwrap().0, 404);
    assert_eq!(http_get(metrics, "/readyz").await.unwrap().0, 404);

    let (status, text) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 404, "the client port served /metrics: {text}");
    assert_eq!(http_get(addr, "/readyz").await.unwrap().0, 200);
    assert_eq!(http_get(addr, "/").await.unwrap().0, 200);
    let mut c = Client::connect(addr, tickmesh_core::Format::Json)
        .await
        .unwrap();
    c.ping(1).await.unwrap();
    drop(c);

    edge.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(metrics).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the metrics port outlived the edge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dashboard and its files refuse to be framed and to be sniffed, send no Referer (the page's URL may
/// hold a token), and may load only the edge's own files and open a WebSocket only to the
/// host that served them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_carry_a_content_security_policy() {
    let nats = NatsServer::start().unwrap();
    create_empty_refdata(&nats.url()).await.unwrap();
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    for path in [
        "/",
        "/app.js",
        "/tickmesh.js",
        "/msgpack.js",
        "/style.css",
        "/worker.js",
    ] {
        let (status, headers) = head_of(addr, path, "edge.test:8443").await;
        assert_eq!(status, 200, "{path}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{path}: no {name} in {headers:?}"))
        };
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self' ws://edge.test:8443 wss://edge.test:8443",
            "frame-ancestors 'none'",
        ] {
            assert!(
                csp.split(';').any(|d| d.trim() == directive),
                "{path}: {directive:?} missing from {csp:?}"
            );
        }
    }
    // A Host header cannot write the policy.
    let (_, headers) = head_of(addr, "/", "x;script-src *").await;
    let csp = &headers
        .iter()
        .find(|(k, _)| k == "content-security-policy")
        .unwrap()
        .1;
    assert!(!csp.contains("script-src *"), "{csp}");
    edge.stop().await.unwrap();
}
