//! End to end: a session task that panics leaks nothing. Its fan-out state, the NATS
//! interest of the symbols only it held, its gauges and its place in the connection counts
//! are given back, and its address can open as many sessions as before.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const PANIC_PING_ID: i64 = 4242;

/// How many NATS subscriptions the edge's connection (named `name`) holds, from the
/// server's monitoring endpoint.
async fn edge_nats_subs(nats: &NatsServer, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", nats.http_port))
        .await
        .unwrap();
    s.write_all(b"GET /connz HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .filter_map(|c| c["subscriptions"].as_u64())
        .sum()
}

/// What a session holds in the edge, as the edge and NATS tell it.
#[derive(Debug, PartialEq)]
struct Held {
    sessions: f64,
    subscriptions: f64,
    symbols: f64,
    nats_subs: u64,
}

async fn held(addr: SocketAddr, nats: &NatsServer, name: &str) -> Held {
    Held {
        sessions: metric(addr, "tickmesh_edge_sessions").await,
        subscriptions: metric(addr, "tickmesh_edge_subscriptions").await,
        symbols: metric(addr, "tickmesh_edge_symbols").await,
        nats_subs: edge_nats_subs(nats, name).await,
    }
}

/// Polls until what the edge holds is `want`, for up to `within`; returns the last seen.
async fn settle(
    addr: SocketAddr,
    nats: &NatsServer,
    name: &str,
    want: &Held,
    within: Duration,
) -> Held {
    let deadline = Instant::now() + within;
    loop {
        let now = held(addr, nats, name).await;
        if &now == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn subscribed(addr: SocketAddr, symbol: &str) -> Client {
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op": "subscribe", "id": 1, "symbols": [symbol], "interval_ms": 0}))
        .await
        .unwrap();
    let reply = c
        .next_of("subscribed", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply["symbols"], json!([symbol]), "{reply}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_panics_gives_back_what_it_held() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 400));
    let mut config = edge_config(&nats.url());
    config.limits.max_connections_per_ip = 2;
    let name = config.nats.name.clone();
    let (edge, addr) = start_edge(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let idle = held(addr, &nats, &name).await;
    assert_eq!((idle.sessions, idle.symbols), (0.0, 0.0), "{idle:?}");

    let mut doomed = subscribed(addr, "TSLA").await;
    let holding = Held {
        sessions: 1.0,
        subscriptions: 1.0,
        symbols: 1.0,
        nats_subs: idle.nats_subs + 1,
    };
    let seen = settle(addr, &nats, &name, &holding, Duration::from_secs(5)).await;
    assert_eq!(seen, holding, "while subscribed");

    tickmesh_edge::fault::panic_on_ping(PANIC_PING_ID);
    doomed
        .send(json!({"op": "ping", "id": PANIC_PING_ID}))
        .await
        .unwrap();
    // Its connection ends (no close frame: the task that owned the socket is gone).
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Event::Msg(_)) = doomed.next_event(Duration::from_secs(1)).await {
        assert!(
            Instant::now() < deadline,
            "the panicking session still streams"
        );
    }
    let seen = settle(addr, &nats, &name, &idle, Duration::from_secs(5)).await;
    assert_eq!(seen, idle, "after the session panicked");

    // The address opens as many sessions as before, each served; one more is refused.
    let mut a = subscribed(addr, "TSLA").await;
    let mut b = subscribed(addr, "AAPL").await;
    let (status, body) = upgrade_status(&format!("ws://{addr}/v1/stream"), None).await;
    assert_eq!(status, 429, "{body}");
    for c in [&mut a, &mut b] {
        c.ping(7).await.unwrap();
        c.next_of("ticks", Duration::from_secs(5))
            .await
            .expect("no tick after the panic");
    }

    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}
