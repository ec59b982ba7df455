//! End to end: sessions learn when the edge has lost NATS. After `nats.stale_after_ms`
//! each subscribed symbol gets `status` with `stale: true`, and `stale: false` when the
//! link is back; after `nats.move_clients_after_ms` the client is sent `reconnect` and
//! closed with 4001, so that it moves to a healthy edge.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::proxy::Proxy;
use tickmesh_tests::*;

const SYMBOLS: [&str; 2] = ["AAPL", "MSFT"];

/// The next `status` of `count` symbols: symbol → (stale, reason).
async fn statuses(
    c: &mut Client,
    within: Duration,
    count: usize,
) -> BTreeMap<String, (bool, String)> {
    let deadline = Instant::now() + within;
    let mut got = BTreeMap::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let v: Value = c
            .next_of("status", left)
            .await
            .unwrap_or_else(|e| panic!("status so far {got:?}: {e}"));
        got.insert(
            v["symbol"].as_str().unwrap().to_string(),
            (
                v["stale"].as_bool().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            ),
        );
    }
    got
}

/// A client subscribed to `symbols` at every tick, past its first ticks.
async fn streaming(addr: SocketAddr, symbols: &[&str]) -> Client {
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op": "subscribe", "id": 1, "symbols": symbols, "interval_ms": 0}))
        .await
        .unwrap();
    c.next_of("subscribed", Duration::from_secs(5))
        .await
        .unwrap();
    // A live tick of every symbol: the edge carries each symbol's stream (a hole in a
    // stream the edge never had is told as a `snapshot` gap, not a `reconnect` one).
    let mut waiting: std::collections::HashSet<&str> = symbols.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = c.next_of("ticks", left).await.unwrap();
        for t in v["ticks"].as_array().unwrap() {
            waiting.remove(t["symbol"].as_str().unwrap());
        }
    }
    c
}

/// A nats-server with ingest publishing, and the config of an edge that reaches it through
/// a link the test can cut (stale after 500 ms without it).
async fn behind_a_link() -> (
    NatsServer,
    Service,
    Proxy,
    tickmesh_edge::config::EdgeConfig,
) {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 400));
    let link = Proxy::start(vec![SocketAddr::from(([127, 0, 0, 1], nats.port))])
        .await
        .unwrap();
    let mut config = edge_config(&format!("nats://{}", link.addr()));
    config.nats.stale_after_ms = 500;
    (nats, ingest, link, config)
}

fn all(stale: bool, reason: &str) -> BTreeMap<String, (bool, String)> {
    SYMBOLS
        .iter()
        .map(|s| (s.to_string(), (stale, reason.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_told_their_data_is_stale_fresh_again_and_then_to_move() {
    let (_nats, ingest, link, mut config) = behind_a_link().await;
    config.nats.move_clients_after_ms = 6000;
    let window = config.shutdown.reconnect_window_ms;
    let (edge, addr) = start_edge(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = streaming(addr, &SYMBOLS).await;

    // The link drops and stays down past stale_after_ms, then comes back.
    link.black_hole();
    link.reset();
    let cut = Instant::now();
    assert_eq!(
        statuses(&mut c, Duration::from_secs(5), 2).await,
        all(true, "upstream lost")
    );
    assert!(
        cut.elapsed() >= Duration::from_millis(400),
        "stale too soon"
    );
    // A symbol subscribed while the link is down is stale from the start.
    c.send(json!({"op": "subscribe", "id": 2, "symbols": ["TSLA"], "interval_ms": 0}))
        .await
        .unwrap();
    let v = c.next_of("status", Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (&v["symbol"], &v["stale"]),
        (&json!("TSLA"), &json!(true)),
        "{v}"
    );
    link.pass();
    let mut back = all(false, "upstream back");
    back.insert("TSLA".into(), (false, "upstream back".into()));
    let msgs = c.collect(Duration::from_secs(3)).await.unwrap();
    let of = |kind: &'static str| {
        msgs.iter()
            .map(|(_, v)| v)
            .filter(move |v| v["type"] == kind)
    };
    let told: BTreeMap<String, (bool, String)> = of("status")
        .map(|v| {
            let what = (
                v["stale"].as_bool().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            );
            (v["symbol"].as_str().unwrap().to_string(), what)
        })
        .collect();
    assert_eq!(told, back);
    assert!(of("ticks").next().is_some(), "no tick once fresh again");
    // Ticks published while the link was down never reached the edge: each symbol's next
    // update comes after a gap that says so. (A symbol whose first update after its KV
    // snapshot comes only now is also told of the seqs between that snapshot and the
    // stream the edge joined.)
    let gaps: Vec<(&str, &str)> = of("gap")
        .map(|v| (v["symbol"].as_str().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    for symbol in SYMBOLS {
        assert!(gaps.contains(&(symbol, "reconnect")), "{gaps:?}");
    }
    assert!(
        gaps.iter()
            .all(|(_, why)| ["reconnect", "snapshot"].contains(why)),
        "{gaps:?}"
    );

    // Down past move_clients_after_ms: stale, then told to move, then closed with 4001.
    link.black_hole();
    link.reset();
    let mut lost = all(true, "upstream lost");
    lost.insert("TSLA".into(), (true, "upstream lost".into()));
    assert_eq!(statuses(&mut c, Duration::from_secs(5), 3).await, lost);
    let moved = c
        .next_of("reconnect", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(moved["reason"], "upstream lost", "{moved}");
    assert!(
        moved["after_ms"].as_u64().unwrap() < window.max(1),
        "{moved}"
    );
    let code = c
        .closed_within(Duration::from_secs(5), |_| {})
        .await
        .unwrap();
    assert_eq!(code, Some(4001));

    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// Delayed symbols are told too: without NATS the edge cannot read their samples, so it
/// cannot vouch for them either; and fresh again when the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_symbols_are_told_stale_when_the_edge_loses_nats() {
    let (_nats, ingest, link, mut config) = behind_a_link().await;
    config.nats.move_clients_after_ms = 60_000;
    // Anonymous sessions see AAPL in real time and every other symbol 1 s late.
    config.auth.anonymous_ent = vec!["AAPL".into()];
    config.auth.anonymous_dly = vec!["*".into()];
    config.delayed.delay_ms = 1000;
    config.delayed.poll_ms = 100;
    let (edge, addr) = start_edge(config).await.unwrap();
    // Samples older than the delay exist only after it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op": "subscribe", "id": 1, "symbols": SYMBOLS, "interval_ms": 0}))
        .await
        .unwrap();
    let subscribed = c
        .next_of("subscribed", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(subscribed["delayed"], json!(["MSFT"]), "{subscribed}");
    let snapshot = c.next_of("snapshot", Duration::from_secs(5)).await.unwrap();
    let snapshot2 = c.next_of("snapshot", Duration::from_secs(5)).await.unwrap();
    assert!(
        [&snapshot, &snapshot2]
            .iter()
            .any(|s| s["symbol"] == "MSFT" && s["delayed_ms"] == 1000),
        "{snapshot} {snapshot2}"
    );

    link.black_hole();
    link.reset();
    assert_eq!(
        statuses(&mut c, Duration::from_secs(5), 2).await,
        all(true, "upstream lost"),
        "the delayed MSFT as well as the real-time AAPL"
    );
    link.pass();
    assert_eq!(
        statuses(&mut c, Duration::from_secs(5), 2).await,
        all(false, "upstream back")
    );

    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// A symbol's NATS subscription that ends under the edge (here: unsubscribed by its pump,
/// as a server or client closing it would) is taken again: the client's ticks resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_whose_subscription_ends_does_not_freeze() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 400));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = streaming(addr, &["AAPL"]).await;

    tickmesh_edge::fault::end_pump_of("AAPL");
    // What was already on its way when the subscription ended.
    let before = c.collect(Duration::from_millis(500)).await.unwrap();
    let last_before = tick_events(&before).iter().map(|e| e.2).max();
    let after = c.collect(Duration::from_secs(4)).await.unwrap();
    let seqs: Vec<u64> = tick_events(&after)
        .into_iter()
        .filter(|e| e.1 == "AAPL" && !e.3)
        .map(|e| e.2)
        .collect();
    assert!(
        seqs.len() >= 5,
        "AAPL froze: {} live ticks in 4 s after its subscription ended",
        seqs.len()
    );
    if let Some(last) = last_before {
        assert!(seqs[0] > last, "seq {} after {last}", seqs[0]);
    }

    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// The ingest that owns the symbols stops (its NATS link to the edge is fine): within
/// `stale_after_ms` and a check, each subscribed symbol is `stale` ("feed quiet"); a new
/// ingest takes the feed over, announces itself, and they are fresh again ("feed back")
/// as its ticks flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbols_go_stale_when_their_ingest_goes_quiet_and_fresh_when_another_takes_over() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 400));
    let mut config = edge_config(&nats.url());
    config.nats.stale_after_ms = 1000;
    let (edge, addr) = start_edge(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = streaming(addr, &SYMBOLS).await;
    // Fresh while the ingest announces itself, though nothing is told.
    let quiet = c.collect(Duration::from_millis(1500)).await.unwrap();
    assert!(
        quiet.iter().all(|(_, v)| v["type"] != "status"),
        "a status while the feed is alive"
    );

    ingest.stop().await.unwrap();
    let stopped = Instant::now();
    assert_eq!(
        statuses(&mut c, Duration::from_secs(5), 2).await,
        all(true, "feed quiet")
    );
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2000),
        "stale after {took:?}"
    );

    let successor = start_ingest(ingest_config(&nats.url(), 400));
    assert_eq!(
        statuses(&mut c, Duration::from_secs(10), 2).await,
        all(false, "feed back")
    );
    c.next_of("ticks", Duration::from_secs(5))
        .await
        .expect("no tick from the successor");
    successor.stop().await.unwrap();
    edge.stop().await.unwrap();
}
