//! End to end: `GET /v1/sse` serves what `/v1/stream` serves, with the same guarantees:
//! the same objects (one event each, named by its `type`), a snapshot before live ticks,
//! seqs in order without loss, the conflation interval, heartbeats, tokens, entitlements,
//! tiers, revocation, connection limits and the slow-consumer cut.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_edge::EdgeConfig;
use tickmesh_edge::auth::now_s as now;
use tickmesh_tests::sse::SseClient;
use tickmesh_tests::*;

const SECRET: &str = "a-test-only-hs256-secret-32-bytes-long!";
const SECOND: Duration = Duration::from_secs(1);

struct Setup {
    _nats: NatsServer,
    nats_url: String,
    ingest: Service,
    edge: Service,
    addr: SocketAddr,
}

impl Setup {
    async fn start(ticks_per_sec: u32, f: impl FnOnce(&mut EdgeConfig)) -> Setup {
        let nats = NatsServer::start().unwrap();
        let ingest = start_ingest(ingest_config(&nats.url(), ticks_per_sec));
        let mut cfg = edge_config(&nats.url());
        f(&mut cfg);
        let (edge, addr) = start_edge(cfg).await.unwrap();
        // Let the feed run a little, so that every symbol has a value in KV.
        tokio::time::sleep(Duration::from_millis(600)).await;
        Setup {
            nats_url: nats.url(),
            _nats: nats,
            ingest,
            edge,
            addr,
        }
    }

    async fn sse(&self, path: &str) -> SseClient {
        SseClient::open(self.addr, path, None)
            .await
            .unwrap()
            .unwrap()
    }

    async fn stop(self) {
        self.ingest.stop().await.unwrap();
        self.edge.stop().await.unwrap();
    }
}

fn secured(cfg: &mut EdgeConfig) {
    cfg.auth.hs256_secret = Some(SECRET.into());
    cfg.auth.anonymous = false;
    cfg.auth.leeway_s = 0;
}

fn mint(sub: &str, ent: &[&str], tier: &str) -> String {
    hs256_token(
        SECRET,
        &json!({"sub": sub, "iat": now() - 1, "exp": now() + 600, "ent": ent, "tier": tier}),
    )
}

/// The live ticks of `msgs` by symbol, in arrival order: (seq, from_seq, tick).
fn live_by_symbol(msgs: &[(Instant, Value)]) -> BTreeMap<String, Vec<(u64, u64, Value)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64, Value)>> = BTreeMap::new();
    for (_, symbol, seq, snapshot, tick) in tick_events(msgs) {
        if !snapshot {
            let from = tick["from_seq"].as_u64().unwrap_or(seq);
            out.entry(symbol).or_default().push((seq, from, tick));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_serves_the_websockets_messages_snapshot_first_then_every_tick_in_order() {
    let s = Setup::start(1000, |_| {}).await;
    let mut ws = Client::connect(s.addr, Format::Json).await.unwrap();
    ws.send(json!({"op": "subscribe", "id": 1, "symbols": ["AAPL", "MSFT"], "interval_ms": 0}))
        .await
        .unwrap();
    let mut sse = s.sse("/v1/sse?symbols=AAPL,MSFT&interval_ms=0").await;
    assert_eq!(
        sse.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(sse.header("cache-control"), Some("no-store"));

    // The session opens as the WebSocket's does: welcome, subscribed, snapshots.
    let welcome = sse.next_msg(5 * SECOND).await.unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["limits"], ws.welcome["limits"]);
    let subscribed = sse.next_msg(5 * SECOND).await.unwrap();
    assert_eq!(
        (
            &subscribed["type"],
            &subscribed["symbols"],
            &subscribed["interval_ms"]
        ),
        (&json!("subscribed"), &json!(["AAPL", "MSFT"]), &json!(0))
    );
    let (sse_msgs, ws_msgs) = tokio::join!(sse.collect(3 * SECOND), ws.collect(3 * SECOND));
    let (sse_msgs, ws_msgs) = (sse_msgs.unwrap(), ws_msgs.unwrap());

    // A snapshot of each symbol before any live tick of it, none after.
    let events = tick_events(&sse_msgs);
    for symbol in ["AAPL", "MSFT"] {
        let of: Vec<_> = events.iter().filter(|e| e.1 == symbol).collect();
        assert!(of.len() > 100, "{symbol}: {} ticks in 3 s", of.len());
        assert!(of[0].3, "{symbol}: the first was not a snapshot");
        assert!(of[1..].iter().all(|e| !e.3), "{symbol}: a second snapshot");
        assert!(
            of[1].2 > of[0].2,
            "{symbol}: live seq not above the snapshot's"
        );
    }
    // Every tick, in order: each live update follows the last (or folds what lay between).
    let sse_live = live_by_symbol(&sse_msgs);
    for (symbol, ticks) in &sse_live {
        for pair in ticks.windows(2) {
            let ((prev, _, _), (seq, from, _)) = (&pair[0], &pair[1]);
            assert_eq!(
                *from,
                prev + 1,
                "{symbol}: seq {seq} (from {from}) after {prev}"
            );
        }
    }
    // The same data: a tick both clients received is the same object.
    let ws_live = live_by_symbol(&ws_msgs);
    let mut common = 0;
    for (symbol, ticks) in &sse_live {
        let by_seq: HashMap<u64, &Value> =
            ws_live[symbol].iter().map(|(s, _, t)| (*s, t)).collect();
        for (seq, _, tick) in ticks {
            if let Some(other) = by_seq.get(seq) {
                assert_eq!(*other, tick, "{symbol} {seq} differs");
                common += 1;
            }
        }
    }
    assert!(common > 200, "only {common} ticks in common");
    // Heartbeats come as `hb` events while data flows.
    assert!(sse_msgs.iter().filter(|(_, v)| v["type"] == "hb").count() >= 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_conflates_at_the_interval_it_asked_for() {
    let s = Setup::start(3000, |_| {}).await;
    let mut sse = s
        .sse("/v1/sse?symbols=AAPL&symbols=MSFT,SPY&interval_ms=500&mode=ltp")
        .await;
    let subscribed = sse.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(subscribed["interval_ms"], 500);
    assert_eq!(subscribed["mode"], "ltp");
    let msgs = sse.collect(Duration::from_millis(3200)).await.unwrap();
    let mut arrivals: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for (at, symbol, _, snapshot, tick) in tick_events(&msgs) {
        assert!(tick.get("bid").is_none(), "ltp mode sent a bid: {tick}");
        if !snapshot {
            arrivals.entry(symbol).or_default().push(at);
        }
    }
    // 600 ticks/s per symbol for 3.2 s, one update per 500 ms at most: 6 or 7. Arrival
    // times carry the delivery's jitter (the events pass from the session to the
    // response's task, then the socket, on a loaded machine): a gap may look up to a fifth
    // shorter than the edge's flushes were, never the half that a second flush would be.
    for symbol in ["AAPL", "MSFT", "SPY"] {
        let times = &arrivals[symbol];
        assert!(
            (5..=8).contains(&times.len()),
            "{symbol}: {} updates",
            times.len()
        );
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(400),
                "{symbol}: two updates {gap:?} apart"
            );
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_takes_the_same_tokens_entitlements_and_tiers() {
    let s = Setup::start(1000, secured).await;
    let path = "/v1/sse?symbols=AAPL,MSFT&interval_ms=0";

    // No token, a bad one: 401 with the reason, before any event.
    let refused = SseClient::open(s.addr, path, None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, "a token is required")
    );
    let refused = SseClient::open(s.addr, path, Some("not.a.token"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status, 401);

    // A token for AAPL only, of the `pro` tier (250 ms at least), in the header.
    let token = mint("ann", &["AAPL"], "pro");
    let mut sse = SseClient::open(s.addr, path, Some(&token))
        .await
        .unwrap()
        .unwrap();
    let welcome = sse.next_msg(5 * SECOND).await.unwrap();
    assert_eq!(welcome["limits"]["min_interval_ms"], 250);
    let mut refusals = Vec::new();
    let subscribed = loop {
        let v = sse.next_msg(5 * SECOND).await.unwrap();
        match v["type"].as_str() {
            Some("error") => refusals.push((v["code"].clone(), v["symbol"].clone())),
            Some("subscribed") => break v,
            _ => {}
        }
    };
    assert_eq!(subscribed["symbols"], json!(["AAPL"]));
    assert_eq!(subscribed["interval_ms"], 250);
    while let Ok(v) = sse.next_msg(Duration::from_millis(200)).await {
        if v["type"] == "error" {
            refusals.push((v["code"].clone(), v["symbol"].clone()));
        }
    }
    assert_eq!(refusals, vec![(json!("not_entitled"), json!("MSFT"))]);
    let msgs = sse.collect(2 * SECOND).await.unwrap();
    let events = tick_events(&msgs);
    assert!(
        events.iter().all(|e| e.1 == "AAPL"),
        "a tick of another symbol"
    );
    // 200 ticks/s of AAPL for 2 s at the tier's 250 ms: at most 9 updates, none a
    // second flush within an interval (arrival jitter aside, as above).
    let live: Vec<_> = events.iter().filter(|e| !e.3).map(|e| e.0).collect();
    assert!(
        (4..=9).contains(&live.len()),
        "{} updates of AAPL in 2 s",
        live.len()
    );
    for pair in live.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "the tier's interval was not kept: {:?}",
            pair[1] - pair[0]
        );
    }

    // The token in the query (an EventSource sets no header) works too; a revocation of
    // its user closes the stream with 4403 in a last `close` event.
    let token = mint("frank", &["*"], "realtime");
    let mut frank = s
        .sse(&format!("/v1/sse?symbols=SPY&interval_ms=0&token={token}"))
        .await;
    frank.next_of("subscribed", 5 * SECOND).await.unwrap();
    let nats = async_nats::connect(s.nats_url.as_str()).await.unwrap();
    nats.publish("ctl.revoke", r#"{"sub":"frank"}"#.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let (code, ended) = frank.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!((code, ended), (4403, true));
    let refused = SseClient::open(s.addr, "/v1/sse?symbols=SPY", Some(&token))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, "token revoked")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_requests_with_a_bad_field_are_refused_whole_and_one_without_symbols_holds_none() {
    // A WebSocket that said nothing for 600 ms would be closed as idle; a stream's client
    // never speaks, and is not.
    let s = Setup::start(200, |c| {
        c.session.ping_interval_ms = 200;
        c.session.idle_timeout_ms = 600;
    })
    .await;
    let refused = SseClient::open(s.addr, "/v1/sse?symbols=AAPL&interval_ms=soon", None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (400, "interval_ms must be a whole number")
    );
    let refused = SseClient::open(s.addr, "/v1/sse?symbols=AAPL&mode=loud", None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status, 400, "{}", refused.body);
    // A symbol refused by the checks is refused as in a subscribe, in the stream.
    let mut sse = s.sse("/v1/sse?symbols=aapl,SPY").await;
    let error = sse.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(
        (&error["code"], &error["symbol"]),
        (&json!("invalid_symbol"), &json!("aapl"))
    );
    // Without symbols: the welcome, then heartbeats only, past the idle timeout.
    let mut bare = s.sse("/v1/sse").await;
    assert_eq!(bare.next_msg(5 * SECOND).await.unwrap()["type"], "welcome");
    let msgs = bare.collect(Duration::from_millis(2500)).await.unwrap();
    let kinds: Vec<_> = msgs
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "hb"),
        "{kinds:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_count_against_the_connection_limits() {
    let s = Setup::start(200, |c| c.limits.max_connections_per_ip = 2).await;
    let mut a = s.sse("/v1/sse?symbols=AAPL").await;
    a.next_of("subscribed", 5 * SECOND).await.unwrap();
    let _b = Client::connect(s.addr, Format::Json).await.unwrap();
    let refused = SseClient::open(s.addr, "/v1/sse?symbols=AAPL", None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status, 429);
    let (status, _) = upgrade_status(&format!("ws://{}/v1/stream", s.addr), None).await;
    assert_eq!(status, 429);
    // A stream that ends gives its place back.
    drop(a);
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        // The edge finds the stream gone at its next write (a heartbeat at the latest).
        match SseClient::open(s.addr, "/v1/sse?symbols=AAPL", None)
            .await
            .unwrap()
        {
            Ok(_) => break,
            Err(r) => assert!(
                r.status == 429 && Instant::now() < deadline,
                "the place of a closed stream was not given back: {}",
                r.status
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_that_stops_reading_is_cut_with_4008_and_a_reader_carries_on() {
    let s = Setup::start(4000, |c| {
        c.session.write_timeout_ms = 500;
        c.session.close_linger_ms = 10_000;
    })
    .await;
    // The reader takes an update of each symbol every 100 ms: it keeps up whatever the
    // machine's load.
    let mut reader = s
        .sse("/v1/sse?symbols=AAPL,MSFT,SPY,NVDA,TSLA&interval_ms=100")
        .await;
    let mut stalled = SseClient::open_small_buffer(
        s.addr,
        "/v1/sse?symbols=AAPL,MSFT,SPY,NVDA,TSLA&interval_ms=0&mode=full",
    )
    .await
    .unwrap()
    .unwrap();
    stalled.next_of("subscribed", 5 * SECOND).await.unwrap();
    reader.next_of("subscribed", 5 * SECOND).await.unwrap();

    // The stalled client reads nothing until the edge has cut it.
    let closed = r#"tickmesh_edge_slow_consumer_total{action="closed"}"#;
    let started = Instant::now();
    let mut read = Vec::new();
    while metric(s.addr, closed).await < 1.0 {
        assert!(
            started.elapsed() < 15 * SECOND,
            "the stalled stream was never cut"
        );
        read.extend(reader.collect(Duration::from_millis(100)).await.unwrap());
    }
    read.extend(reader.collect(SECOND).await.unwrap());
    assert!(tick_events(&read).len() > 40, "the reader stalled too");
    assert_eq!(metric(s.addr, "tickmesh_edge_sessions").await, 1.0);
    for (symbol, ticks) in live_by_symbol(&read) {
        for pair in ticks.windows(2) {
            assert!(pair[1].0 > pair[0].0, "{symbol}: out of order");
        }
    }

    // Reading again, it finds the notice, then the 4008 close, then the end.
    let mut notice = None;
    let (code, ended) = stalled
        .closed_within(10 * SECOND, |v| {
            if v["type"] == "error" {
                notice = v["code"].as_str().map(str::to_owned);
            }
        })
        .await
        .unwrap();
    assert_eq!(
        (notice.as_deref(), code, ended),
        (Some("slow_consumer"), 4008, true)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_edge_tells_the_stream_to_reconnect_then_ends_it_with_4001() {
    let s = Setup::start(500, |_| {}).await;
    let mut sse = s.sse("/v1/sse?symbols=AAPL&interval_ms=100").await;
    sse.next_of("subscribed", 5 * SECOND).await.unwrap();
    let Setup {
        _nats,
        ingest,
        edge,
        ..
    } = s;
    let stopping = tokio::spawn(edge.stop());
    // `reconnect` within the window (200 ms), data until then, then the close and the end.
    let reconnect = sse.next_of("reconnect", 5 * SECOND).await.unwrap();
    assert!(reconnect["after_ms"].as_u64().unwrap() < 200, "{reconnect}");
    let (code, ended) = sse.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!((code, ended), (4001, true));
    stopping.await.unwrap().unwrap();
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_carries_a_tape_its_history_first_then_every_print_once() {
    let s = Setup::start(1000, |_| {}).await;
    // Prints pile up in the stream before the stream asks.
    tokio::time::sleep(SECOND).await;
    let mut sse = s.sse("/v1/sse?symbols=AAPL&stream=trades&history=10").await;
    let subscribed = sse.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(subscribed["symbols"], json!(["AAPL"]));
    let history = sse.next_of("trades", 5 * SECOND).await.unwrap();
    assert_eq!(history["snapshot"], true);
    let n = history["trades"].as_array().unwrap().len();
    assert!((1..=10).contains(&n), "{n} prints of history");
    let msgs = sse.collect(2 * SECOND).await.unwrap();
    let mut prints: Vec<(u64, u64)> = Vec::new();
    for v in std::iter::once(&history).chain(msgs.iter().map(|(_, v)| v)) {
        for t in v["trades"].as_array().into_iter().flatten() {
            assert_eq!(t["symbol"], "AAPL");
            prints.push((t["seq"].as_u64().unwrap(), t["trade_id"].as_u64().unwrap()));
        }
    }
    assert!(prints.len() > n + 20, "{} prints in 2 s", prints.len() - n);
    for pair in prints.windows(2) {
        assert!(pair[1] > pair[0], "print {:?} after {:?}", pair[1], pair[0]);
    }
    s.stop().await;
}
