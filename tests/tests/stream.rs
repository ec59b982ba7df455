//! End-to-end: simulated feed → real nats-server → edge → WebSocket clients.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);

struct Mesh {
    _nats: NatsServer,
    ingest: Option<Service>,
    edge: Service,
    addr: std::net::SocketAddr,
}

/// nats-server, ingest at `rate` ticks/s over 5 symbols, and an edge; waits until KV
/// holds a value of every symbol.
async fn mesh(rate: u32) -> Mesh {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), rate));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    // The KV writer runs every 250 ms; give it two rounds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    Mesh {
        _nats: nats,
        ingest: Some(ingest),
        edge,
        addr,
    }
}

impl Mesh {
    async fn stop(mut self) {
        if let Some(i) = self.ingest.take() {
            i.stop().await.unwrap();
        }
        self.edge.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_gets_subscribed_then_snapshot_then_growing_seq() {
    let m = mesh(2000).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    assert_eq!(c.welcome["protocol"], 1);
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT","SPY"],"interval_ms":0}))
        .await
        .unwrap();
    let first = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(first["type"], "subscribed", "{first}");
    assert_eq!(first["id"], 1);
    assert_eq!(first["symbols"], json!(["AAPL", "MSFT", "SPY"]));
    assert_eq!(first["interval_ms"], 0);

    let msgs = c.collect(2 * SECOND).await.unwrap();
    let events = tick_events(&msgs);
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut live: HashMap<String, usize> = HashMap::new();
    for (_, symbol, seq, snapshot, tick) in &events {
        match last.get(symbol) {
            None => assert!(*snapshot, "first event of {symbol} was a live tick: {tick}"),
            Some(prev) => {
                assert!(!snapshot, "second snapshot of {symbol}");
                assert!(seq > prev, "{symbol}: seq {seq} after {prev}");
            }
        }
        assert!(
            tick["bid"].as_f64().unwrap() < tick["ask"].as_f64().unwrap(),
            "{tick}"
        );
        last.insert(symbol.clone(), *seq);
        if !snapshot {
            *live.entry(symbol.clone()).or_default() += 1;
        }
    }
    for s in ["AAPL", "MSFT", "SPY"] {
        assert!(
            live.get(s).copied().unwrap_or(0) >= 50,
            "{s}: {:?} live ticks",
            live.get(s)
        );
    }
    assert!(
        !last.contains_key("NVDA"),
        "received a symbol it did not subscribe to"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_bounds_the_update_rate_per_symbol() {
    let m = mesh(3000).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT","SPY"],"interval_ms":500}))
        .await
        .unwrap();
    let msgs = c.collect(Duration::from_millis(3200)).await.unwrap();
    let mut arrivals: BTreeMap<String, Vec<std::time::Instant>> = BTreeMap::new();
    for (at, symbol, _, snapshot, _) in tick_events(&msgs) {
        if !snapshot {
            arrivals.entry(symbol).or_default().push(at);
        }
    }
    for s in ["AAPL", "MSFT", "SPY"] {
        let times = &arrivals[s];
        // 600 ticks/s per symbol for 3.2 s, one update per 500 ms at most: 6 or 7.
        assert!(
            (5..=8).contains(&times.len()),
            "{s}: {} updates",
            times.len()
        );
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(490),
                "{s}: two updates {gap:?} apart"
            );
        }
    }
    // Heartbeats (every 1000 ms) keep coming while data flows; one may ride on a data
    // write up to a quarter early, never sooner.
    let hbs: Vec<_> = msgs
        .iter()
        .filter(|(_, v)| v["type"] == "hb")
        .map(|(at, _)| *at)
        .collect();
    assert!(hbs.len() >= 3, "{} heartbeats in 3.2 s", hbs.len());
    for pair in hbs.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (Duration::from_millis(700)..=Duration::from_millis(1200)).contains(&gap),
            "two heartbeats {gap:?} apart"
        );
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_the_symbol_and_keeps_the_others() {
    let m = mesh(2000).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT"],"interval_ms":0}))
        .await
        .unwrap();
    c.collect(Duration::from_millis(500)).await.unwrap();
    c.send(json!({"op":"unsubscribe","id":2,"symbols":["AAPL"]}))
        .await
        .unwrap();
    let v = c.next_of("unsubscribed", 5 * SECOND).await.unwrap();
    assert_eq!(v["id"], 2);
    assert_eq!(v["symbols"], json!(["AAPL"]));
    let after = tick_events(&c.collect(SECOND).await.unwrap());
    assert!(
        after.iter().all(|e| e.1 != "AAPL"),
        "AAPL after unsubscribe"
    );
    assert!(after.iter().filter(|e| e.1 == "MSFT").count() > 50);
    c.send(json!({"op":"list","id":3})).await.unwrap();
    let list = c.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(
        list["subscriptions"],
        json!([{"symbol":"MSFT","mode":"quote","interval_ms":0}])
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_msgpack_sessions_see_the_same_ticks() {
    let m = mesh(2000).await;
    let mut j = Client::connect(m.addr, Format::Json).await.unwrap();
    let mut p = Client::connect(m.addr, Format::MsgPack).await.unwrap();
    assert_eq!(p.welcome["type"], "welcome");
    for c in [&mut j, &mut p] {
        c.send(json!({"op":"subscribe","id":1,"symbols":["NVDA"],"mode":"full","interval_ms":0}))
            .await
            .unwrap();
    }
    let (mj, mp) = tokio::join!(j.collect(2 * SECOND), p.collect(2 * SECOND));
    let by_seq = |msgs: Vec<_>| -> BTreeMap<u64, Value> {
        tick_events(&msgs)
            .into_iter()
            .filter(|e| !e.3)
            .map(|e| (e.2, e.4))
            .collect()
    };
    let (tj, tp) = (by_seq(mj.unwrap()), by_seq(mp.unwrap()));
    let common: Vec<_> = tj.keys().filter(|k| tp.contains_key(k)).collect();
    assert!(common.len() >= 100, "only {} ticks in common", common.len());
    assert!(common.len() * 10 >= tj.len().min(tp.len()) * 9);
    for seq in common {
        assert_eq!(tj[seq], tp[seq], "tick {seq} differs between encodings");
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_symbols_are_refused_and_the_session_keeps_working() {
    let m = mesh(500).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    let long = "A".repeat(1024);
    let bad = ["*", ">", "A.B", long.as_str(), "", "md.>", "aapl"];
    c.send(json!({"op":"subscribe","id":7,"symbols": bad.iter().chain(["SPY"].iter()).collect::<Vec<_>>()}))
        .await
        .unwrap();
    let mut refused = Vec::new();
    let subscribed = loop {
        let v = c.next_non_hb(5 * SECOND).await.unwrap();
        match v["type"].as_str() {
            Some("error") => {
                assert_eq!(v["code"], "invalid_symbol", "{v}");
                assert_eq!(v["id"], 7);
                refused.push(v["symbol"].as_str().unwrap().to_string());
            }
            Some("subscribed") => break v,
            _ => panic!("unexpected {v}"),
        }
    };
    assert_eq!(refused.len(), bad.len(), "{refused:?}");
    assert!(
        refused.iter().all(|s| s.len() <= 80),
        "echoed an unbounded symbol"
    );
    assert_eq!(subscribed["symbols"], json!(["SPY"]));
    c.ping(8).await.unwrap();
    let ticks = tick_events(&c.collect(SECOND).await.unwrap());
    assert!(ticks.iter().any(|e| e.1 == "SPY"));
    assert!(ticks.iter().all(|e| e.1 == "SPY"));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_bad_request_and_the_session_keeps_working() {
    let m = mesh(500).await;
    let mut j = Client::connect(m.addr, Format::Json).await.unwrap();
    let mut p = Client::connect(m.addr, Format::MsgPack).await.unwrap();
    let cases = [
        "{\"op\":\"subscribe\",",
        "{\"op\":\"teleport\",\"id\":3}",
        "{\"op\":\"subscribe\",\"id\":4,\"symbols\":\"AAPL\"}",
        "[1,2,3]",
        "\"\"",
    ];
    for raw in cases {
        j.send_raw(tokio_tungstenite::tungstenite::Message::Text(raw.into()))
            .await
            .unwrap();
        let v = j.next_non_hb(5 * SECOND).await.unwrap();
        assert_eq!(v["type"], "error", "{raw}: {v}");
        assert_eq!(v["code"], "bad_request", "{raw}: {v}");
    }
    j.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        "{\"op\":\"teleport\",\"id\":3}".into(),
    ))
    .await
    .unwrap();
    assert_eq!(j.next_non_hb(5 * SECOND).await.unwrap()["id"], 3);
    p.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0xc1, 0xff, 0x00].into(),
    ))
    .await
    .unwrap();
    let v = p.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(v["code"], "bad_request");
    j.ping(1).await.unwrap();
    p.ping(2).await.unwrap();
    j.send(json!({"op":"subscribe","id":9,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    assert_eq!(
        j.next_non_hb(5 * SECOND).await.unwrap()["type"],
        "subscribed"
    );
    assert_eq!(
        j.next_of("snapshot", 5 * SECOND).await.unwrap()["symbol"],
        "AAPL"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_only_its_own_session_with_1009() {
    let m = mesh(1000).await;
    let mut big = Client::connect(m.addr, Format::Json).await.unwrap();
    let mut other = Client::connect(m.addr, Format::Json).await.unwrap();
    other
        .send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    let huge = format!("{{\"op\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(200 * 1024));
    let _ = big
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(huge.into()))
        .await;
    let code = big.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!(code, Some(1009));
    let ticks = tick_events(&other.collect(SECOND).await.unwrap());
    assert!(
        ticks.iter().filter(|e| !e.3).count() > 50,
        "the other session stalled"
    );
    other.ping(2).await.unwrap();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_ingest_never_makes_seq_go_backwards() {
    let mut m = mesh(1000).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","TSLA"],"interval_ms":0}))
        .await
        .unwrap();
    let before = tick_events(&c.collect(SECOND).await.unwrap());
    let max_before = before.iter().map(|e| e.2).max().unwrap();
    let epoch_before = before.last().unwrap().4["epoch"].as_u64().unwrap();

    m.ingest.take().unwrap().stop().await.unwrap();
    let url = format!("nats://127.0.0.1:{}", m._nats.port);
    m.ingest = Some(start_ingest(ingest_config(&url, 1000)));
    let after = tick_events(&c.collect(Duration::from_millis(1500)).await.unwrap());
    let live: Vec<_> = after.iter().filter(|e| !e.3).collect();
    assert!(live.len() > 50, "no ticks after the restart");
    let epoch_after = live.last().unwrap().4["epoch"].as_u64().unwrap();
    assert!(epoch_after > epoch_before, "no new epoch");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in &live {
        if e.4["epoch"].as_u64() == Some(epoch_after) {
            assert!(
                e.2 > max_before,
                "seq {} after {max_before} before the restart",
                e.2
            );
        }
        if let Some(prev) = last.insert(&e.1, e.2) {
            assert!(e.2 > prev);
        }
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_dashboard_are_served() {
    let m = mesh(500).await;
    assert_eq!(http_get(m.addr, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(m.addr, "/readyz").await.unwrap().0, 200);
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    c.collect(Duration::from_millis(500)).await.unwrap();
    let (status, metrics) = http_get(m.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "tickmesh_edge_ticks_in_total",
        "tickmesh_edge_updates_out_total",
        "tickmesh_edge_sessions",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // Where a tick's time goes: ingest to the edge, and inside the edge to the socket.
    for name in [
        "tickmesh_edge_tick_transit_seconds",
        "tickmesh_edge_tick_dwell_seconds",
    ] {
        // One scrape: a tick counted between two would make the bucket outrun the count.
        let count = metric_in(&metrics, &format!("{name}_count"));
        let within = metric_in(&metrics, &format!("{name}_bucket{{le=\"1\"}}"));
        assert!(count > 0.0, "{name}: no samples");
        assert_eq!(within, count, "{name}: a tick took more than a second");
    }
    let (status, page) = http_get(m.addr, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    assert_eq!(http_get(m.addr, "/tickmesh.js").await.unwrap().0, 200);
    assert_eq!(http_get(m.addr, "/nope").await.unwrap().0, 404);
    // A plain GET of the stream endpoint is not an upgrade.
    assert_eq!(http_get(m.addr, "/v1/stream").await.unwrap().0, 400);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_tells_clients_to_reconnect_and_closes_with_4001() {
    let m = mesh(500).await;
    let mut c = Client::connect(m.addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"]}))
        .await
        .unwrap();
    c.next_non_hb(5 * SECOND).await.unwrap();
    let Mesh {
        _nats,
        ingest,
        edge,
        ..
    } = m;
    let stopping = tokio::spawn(edge.stop());
    let mut saw_reconnect = false;
    let code = c
        .closed_within(5 * SECOND, |v| {
            if v["type"] == "reconnect" {
                assert!(v["after_ms"].as_u64().unwrap() < 200);
                saw_reconnect = true;
            }
        })
        .await
        .unwrap();
    assert!(saw_reconnect);
    assert_eq!(code, Some(4001));
    stopping.await.unwrap().unwrap();
    ingest.unwrap().stop().await.unwrap();
}

/// A client of a 1000 ms tier that re-sends `subscribe` every 100 ms (as is, stepping
/// `interval_ms`, or after an `unsubscribe`) still gets AAPL at most once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_subscribing_never_beats_the_tiers_interval() {
    let nats = NatsServer::start().unwrap();
    let mut ingest = Some(start_ingest(ingest_config(&nats.url(), 1000)));
    let mut config = edge_config(&nats.url());
    config.auth.anonymous = true;
    config.auth.anonymous_ent = vec!["AAPL".into()];
    config.auth.anonymous_tier = "slow".into();
    config.auth.tiers.insert(
        "slow".into(),
        tickmesh_edge::config::TierConfig {
            min_interval_ms: 1000,
            max_symbols: 10,
            max_msgs_per_s: 50,
        },
    );
    let (edge, addr) = start_edge(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;

    let run = |kind: &'static str| async move {
        let mut c = Client::connect(addr, Format::Json).await.unwrap();
        let mut msgs = Vec::new();
        for i in 0..35u32 {
            let interval_ms = if kind == "stepped" { 1000 + i } else { 0 };
            if kind == "cycled" {
                c.send(json!({"op":"unsubscribe","symbols":["AAPL"]}))
                    .await
                    .unwrap();
            }
            c.send(json!({"op":"subscribe","id":i,"symbols":["AAPL"],"interval_ms":interval_ms}))
                .await
                .unwrap();
            msgs.extend(c.collect(Duration::from_millis(100)).await.unwrap());
        }
        let refused: Vec<_> = msgs.iter().filter(|(_, v)| v["type"] == "error").collect();
        assert!(refused.is_empty(), "{kind}: {refused:?}");
        let times: Vec<_> = tick_events(&msgs)
            .into_iter()
            .filter(|(_, symbol, ..)| symbol == "AAPL")
            .map(|(at, ..)| at)
            .collect();
        (kind, times)
    };
    let results =
        futures_util::future::join_all([run("resend"), run("stepped"), run("cycled")]).await;
    for (kind, times) in results {
        // 200 ticks/s of AAPL for 3.5 s, one update (or snapshot) a second: 3 or 4.
        assert!(
            (2..=5).contains(&times.len()),
            "{kind}: {} updates of AAPL in 3.5 s",
            times.len()
        );
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(900),
                "{kind}: {gap:?} between two"
            );
        }
    }
    if let Some(i) = ingest.take() {
        i.stop().await.unwrap();
    }
    edge.stop().await.unwrap();
}
