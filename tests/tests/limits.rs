//! End to end: what one client can make the edge do is bounded. Reference data decides
//! what the edge carries; a request's reply is bounded by its worth and costs no one else;
//! a flood of connections or of bad tokens from one address keeps no one else out.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECOND: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP connection to `addr` from the loopback address `src`.
async fn tcp_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(addr).await
}

/// An upgrade from `src`: the WebSocket, or the HTTP status of the refusal.
async fn upgrade_from(
    src: IpAddr,
    addr: SocketAddr,
    format: Format,
    token: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, u16> {
    let stream = tcp_from(src, addr).await.map_err(|_| 0u16)?;
    let req = stream_request(&format!("ws://{addr}/v1/stream"), format, token).unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// The next message other than `hb` and its size on the wire, within `within`; None when
/// nothing came.
async fn next_sized(
    ws: &mut WebSocketStream<TcpStream>,
    within: Duration,
) -> Option<(usize, Value)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        let (n, v): (usize, Value) = match msg {
            Message::Text(t) => (t.len(), serde_json::from_str(t.as_str()).unwrap()),
            Message::Binary(b) => (b.len(), rmp_serde::from_slice(&b).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        };
        if v["type"] != "hb" {
            return Some((n, v));
        }
    }
}

/// Every message until none comes for `quiet`, or `cap` bytes, or 10 s: (bytes, messages).
async fn replies(
    ws: &mut WebSocketStream<TcpStream>,
    quiet: Duration,
    cap: usize,
) -> (usize, Vec<Value>) {
    let deadline = Instant::now() + 10 * SECOND;
    let (mut bytes, mut msgs) = (0, Vec::new());
    while bytes < cap && Instant::now() < deadline {
        match next_sized(ws, quiet).await {
            Some((n, v)) => {
                bytes += n;
                msgs.push(v);
            }
            None => break,
        }
    }
    (bytes, msgs)
}

async fn send_msgpack(ws: &mut WebSocketStream<TcpStream>, v: &Value) -> usize {
    let bytes = rmp_serde::to_vec_named(v).unwrap();
    let n = bytes.len();
    ws.send(Message::Binary(bytes.into())).await.unwrap();
    n
}

/// An `md_ref` that its writer has not marked complete (an edge starting while ingest is
/// still writing it) holds a part of the instruments only: the edge is not ready and
/// answers `unavailable`, never `unknown_symbol` for an instrument not written yet; once
/// the writer marks it complete, the edge is ready and knows every instrument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_data_bucket_still_being_written_is_not_taken_for_all_of_it() {
    use tickmesh_core::refdata::{BUCKET, COMPLETE_KEY, instrument_key};
    let nats = NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let refs = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: BUCKET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let equity = |s: &str| json!({"symbol": s, "kind": "equity"}).to_string();
    refs.put(instrument_key("AAPL"), equity("AAPL").into())
        .await
        .unwrap();
    let (edge, addr) = spawn_edge(edge_config(&nats.url())).unwrap();
    tokio::time::sleep(2 * SECOND).await;
    let (status, body) = http_get(addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "ready with a part of md_ref: {body}");
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["MSFT"]}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");

    refs.put(instrument_key("MSFT"), equity("MSFT").into())
        .await
        .unwrap();
    refs.put(COMPLETE_KEY, "{}".into()).await.unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    while http_get(addr, "/readyz").await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "not ready once marked complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.send(json!({"op":"subscribe","id":2,"symbols":["MSFT"]}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (v["type"].as_str(), &v["symbols"]),
        (Some("subscribed"), &json!(["MSFT"])),
        "{v}"
    );
    edge.stop().await.unwrap();
}

/// `/readyz` stays 503 until `md_ref` is read; meanwhile requests get `unavailable` with
/// `retry_ms` (no symbol is carried on a client's word); the moment `/readyz` turns 200,
/// `chains` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_carried_before_reference_data_and_chains_work_once_ready() {
    let nats = NatsServer::start().unwrap();
    let mut config = edge_config(&nats.url());
    config.limits.retry_after_ms = 1234;
    let (edge, addr) = spawn_edge(config).unwrap();
    // Connected to NATS (and subscribed to revocations) but without md_ref: not ready.
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let (status, body) = http_get(addr, "/readyz")
            .await
            .unwrap_or((0, String::new()));
        assert_ne!(status, 200, "ready without reference data");
        if body.contains("reference data") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz said {status} {body:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","NOSUCH1"]}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (&v["type"], &v["code"], &v["id"]),
        (&json!("error"), &json!("unavailable"), &json!(1)),
        "{v}"
    );
    assert_eq!(v["retry_ms"], json!(1234), "limits.retry_after_ms: {v}");
    c.send(json!({"op":"chains","id":2,"underlying":"AAPL"}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (&v["code"], &v["id"]),
        (&json!("unavailable"), &json!(2)),
        "{v}"
    );
    c.send(json!({"op":"list","id":3})).await.unwrap();
    let v = c.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(v["subscriptions"], json!([]), "{v}");

    let ingest = start_ingest(ingest_config(&nats.url(), 200));
    let deadline = Instant::now() + 40 * SECOND;
    while http_get(addr, "/readyz").await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready 40 s after ingest started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.send(json!({"op":"chains","id":4,"underlying":"AAPL"}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        v["type"], "chains",
        "chains right after /readyz turned 200: {v}"
    );
    assert!(!v["expiries"].as_array().unwrap().is_empty(), "{v}");
    c.send(json!({"op":"subscribe","id":5,"symbols":["AAPL","NOSUCH1"]}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (&v["code"], &v["symbol"]),
        (&json!("unknown_symbol"), &json!("NOSUCH1")),
        "{v}"
    );
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(v["symbols"], json!(["AAPL"]), "{v}");
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// Every live update of `symbol` a session receives during `dur`, with arrival times.
async fn watch(mut c: Client, symbol: &str, dur: Duration) -> Vec<(Instant, u64)> {
    let msgs = c.collect(dur).await.unwrap();
    tick_events(&msgs)
        .into_iter()
        .filter(|e| e.1 == symbol && !e.3)
        .map(|e| (e.0, e.2))
        .collect()
}

/// A 64 KiB message of 65,000 empty strings, 4,000 copies of one chain, and 500 bad
/// symbols each get a reply of a few KiB, while a bystander on the same edge keeps getting
/// every-tick updates in order and on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_bounded_by_the_request_and_cost_no_one_else() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    let mut bystander = Client::connect(addr, Format::Json).await.unwrap();
    bystander
        .send(json!({"op":"subscribe","id":1,"symbols":["SPY"],"interval_ms":0}))
        .await
        .unwrap();
    bystander.next_of("subscribed", 5 * SECOND).await.unwrap();
    let watching = tokio::spawn(watch(bystander, "SPY", 6 * SECOND));

    let local = ip("127.0.0.1");
    let mut c = upgrade_from(local, addr, Format::MsgPack, None)
        .await
        .unwrap();
    next_sized(&mut c, 5 * SECOND).await.unwrap(); // welcome
    const SMALL: usize = 8 * 1024;

    // 65,000 empty strings: 64 KiB in, never megabytes out.
    let empties = json!({"op":"subscribe","id":1,"symbols":vec![""; 65_000]});
    let sent = send_msgpack(&mut c, &empties).await;
    assert!(sent <= 65_536, "{sent} bytes");
    let (bytes, msgs) = replies(&mut c, SECOND, 1 << 20).await;
    eprintln!(
        "65,000 empty strings ({sent} bytes): {bytes} bytes in {} replies",
        msgs.len()
    );
    assert!(bytes < SMALL, "{bytes} bytes in {} replies", msgs.len());
    assert!(msgs.iter().all(|m| m["type"] == "error"), "{msgs:?}");

    // 500 bad symbols: the first few one by one, the rest summed up with a count.
    let bad = json!({"op":"subscribe","id":2,"symbols":vec!["a.b"; 500]});
    send_msgpack(&mut c, &bad).await;
    let (bytes, msgs) = replies(&mut c, SECOND, 1 << 20).await;
    assert!(bytes < SMALL, "{bytes} bytes in {} replies", msgs.len());
    let counted: u64 = msgs.iter().filter_map(|m| m["count"].as_u64()).sum();
    let single = msgs.iter().filter(|m| m["symbol"].is_string()).count() as u64;
    assert_eq!(counted + single, 500, "{msgs:?}");

    // 4,000 copies of one chain: expanded and listed once.
    c.send(Message::Binary(
        rmp_serde::to_vec_named(&json!({"op":"chains","id":3,"underlying":"AAPL"}))
            .unwrap()
            .into(),
    ))
    .await
    .unwrap();
    let (_, msgs) = replies(&mut c, SECOND, 1 << 20).await;
    let chains = msgs.iter().find(|m| m["type"] == "chains").unwrap();
    let chain = format!("AAPL:{}", chains["expiries"][0]["expiry"].as_str().unwrap());
    // `ltp` once a minute: what follows is the reply and one snapshot per option.
    let copies = json!({"op":"subscribe","id":4,"chains":vec![chain.as_str(); 4000],
        "mode":"ltp","interval_ms":60_000});
    let sent = send_msgpack(&mut c, &copies).await;
    let (bytes, msgs) = replies(&mut c, SECOND, 1 << 20).await;
    eprintln!(
        "4,000 copies of {chain} ({sent} bytes): {bytes} bytes in {} replies",
        msgs.len()
    );
    let subscribed = msgs.iter().find(|m| m["type"] == "subscribed").unwrap();
    assert_eq!(subscribed["chains"], json!([chain]), "{subscribed}");
    assert!(bytes < SMALL, "{bytes} bytes in {} replies", msgs.len());

    // The bystander saw every SPY update in order, none late.
    let seen = watching.await.unwrap();
    assert!(seen.len() > 20, "the bystander got {} updates", seen.len());
    for w in seen.windows(2) {
        assert!(w[1].1 > w[0].1, "seq {} after {}", w[1].1, w[0].1);
        let gap = w[1].0 - w[0].0;
        assert!(gap < SECOND, "the bystander waited {gap:?} for an update");
    }
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// 3,000 idle TCP connections from 127.0.0.2 hold no handshake slot that others need: a
/// client from 127.0.0.3 is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_keep_no_one_else_out() {
    let nats = NatsServer::start().unwrap();
    create_empty_refdata(&nats.url()).await.unwrap();
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    let flood = ip("127.0.0.2");
    let mut idle = Vec::new();
    let started = Instant::now();
    for _ in 0..3000 {
        if started.elapsed() > 20 * SECOND {
            break;
        }
        if let Ok(Ok(s)) = tokio::time::timeout(SECOND, tcp_from(flood, addr)).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 2500, "only {} flood connections", idle.len());
    // Give the edge time to seat (or close) every one of them.
    tokio::time::sleep(SECOND).await;

    let t0 = Instant::now();
    let ws = tokio::time::timeout(
        5 * SECOND,
        upgrade_from(ip("127.0.0.3"), addr, Format::Json, None),
    )
    .await
    .expect("no upgrade within 5 s during the flood")
    .expect("upgrade refused during the flood");
    let mut ws = ws;
    let (_, welcome) = next_sized(&mut ws, 5 * SECOND).await.unwrap();
    let took = t0.elapsed();
    eprintln!("served in {took:?} beside {} idle connections", idle.len());
    assert_eq!(welcome["type"], "welcome");
    assert!(took < 2 * SECOND, "served after {took:?}");
    drop(idle);
    edge.stop().await.unwrap();
}

/// After `max_auth_failures_per_ip` refused tokens, that address gets 429 even without a
/// token; another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_throttle_their_address_only() {
    let nats = NatsServer::start().unwrap();
    create_empty_refdata(&nats.url()).await.unwrap();
    let mut config = edge_config(&nats.url());
    config.auth.hs256_secret = Some("a-test-secret-of-at-least-32-bytes!!".into());
    config.limits.max_auth_failures_per_ip = 3;
    config.limits.auth_failure_window_ms = 30_000;
    let (edge, addr) = start_edge(config).await.unwrap();
    let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
    for _ in 0..3 {
        let status = upgrade_from(a, addr, Format::Json, Some("not.a.token"))
            .await
            .err();
        assert_eq!(status, Some(401));
    }
    let status = upgrade_from(a, addr, Format::Json, None).await.err();
    assert_eq!(status, Some(429), "anonymous upgrade after 3 failures");
    // The refusal says when to come back: by the end of the 30 s window.
    let stream = tcp_from(a, addr).await.unwrap();
    let req = stream_request(&format!("ws://{addr}/v1/stream"), Format::Json, None).unwrap();
    let refused = tokio::time::timeout(5 * SECOND, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("no answer within 5 s");
    let Err(tokio_tungstenite::tungstenite::Error::Http(res)) = refused else {
        panic!("the upgrade was not refused with an HTTP answer");
    };
    assert_eq!(res.status().as_u16(), 429);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("a 429 without Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert!(
        upgrade_from(b, addr, Format::Json, None).await.is_ok(),
        "another address was refused"
    );
    edge.stop().await.unwrap();
}

/// Subscribes and returns the errors (code, symbol) and the accepted symbols.
async fn subscribe(
    c: &mut Client,
    id: i64,
    symbols: &[&str],
) -> (Vec<(String, String, Value)>, Value) {
    c.send(json!({"op":"subscribe","id":id,"symbols":symbols}))
        .await
        .unwrap();
    let mut errors = Vec::new();
    loop {
        let v = c.next_non_hb(5 * SECOND).await.unwrap();
        match v["type"].as_str() {
            Some("error") => errors.push((
                v["code"].as_str().unwrap().to_string(),
                v["symbol"].as_str().unwrap_or_default().to_string(),
                v["retry_ms"].clone(),
            )),
            Some("subscribed") => return (errors, v["symbols"].clone()),
            _ => panic!("unexpected {v}"),
        }
    }
}

/// A protocol client whose connection comes from the loopback address `src`.
async fn client_from(src: &str, addr: SocketAddr) -> Client {
    let stream = tcp_from(ip(src), addr).await.unwrap();
    let req = stream_request(&format!("ws://{addr}/v1/stream"), Format::Json, None).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    Client::start(ws, Format::Json).await.unwrap()
}

/// The distinct symbols of one address, the symbols of the whole edge, and KV reads of
/// symbols without a value are bounded; a refused symbol is never carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_and_edge_bounds_and_negative_caching() {
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["S1", "S2", "S3", "S4", "S5"])
        .await
        .unwrap();
    let mut config = edge_config(&nats.url());
    config.limits.max_symbols_per_ip = 3;
    config.limits.max_carried_symbols = 4;
    config.limits.retry_after_ms = 1234;
    // Longer than the positive cache's second (the default is that second), so that a
    // resubscription past it shows the negative entry at work.
    config.snapshot.negative_ttl_ms = 30_000;
    let (edge, addr) = start_edge(config).await.unwrap();

    let mut a = client_from("127.0.0.2", addr).await;
    let mut b = client_from("127.0.0.2", addr).await;
    let mut c = client_from("127.0.0.3", addr).await;
    let (errors, ok) = subscribe(&mut a, 1, &["S1", "S2"]).await;
    assert_eq!((errors.len(), ok), (0, json!(["S1", "S2"])));
    // S2 is held by the address already; S3 is its third; S4 would be a fourth.
    let (errors, ok) = subscribe(&mut b, 2, &["S2", "S3", "S4"]).await;
    assert_eq!(ok, json!(["S2", "S3"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].0.as_str(), errors[0].1.as_str()),
        ("too_many_symbols", "S4")
    );
    // The edge carries S1..S3; S4 is its fourth and last.
    let (errors, ok) = subscribe(&mut c, 3, &["S4", "S5"]).await;
    assert_eq!(ok, json!(["S4"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].0.as_str(), errors[0].1.as_str()),
        ("unavailable", "S5")
    );
    assert_eq!(
        errors[0].2,
        json!(1234),
        "limits.retry_after_ms: {errors:?}"
    );
    assert_eq!(metric(addr, "tickmesh_edge_symbols").await, 4.0);

    // A symbol the address gives back makes room for another.
    b.send(json!({"op":"unsubscribe","id":4,"symbols":["S3"]}))
        .await
        .unwrap();
    b.next_of("unsubscribed", 5 * SECOND).await.unwrap();
    let (errors, ok) = subscribe(&mut a, 5, &["S3"]).await;
    assert_eq!((errors.len(), ok), (0, json!(["S3"])));

    // None of S1..S4 has a value: each was read once (the reads answer after the
    // `subscribed`; on a busy machine they may still be on their way). Past the positive
    // cache's second, a resubscription reads nothing more.
    let deadline = std::time::Instant::now() + 5 * SECOND;
    let mut reads = metric(addr, "tickmesh_edge_kv_reads_total").await;
    while reads < 4.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reads = metric(addr, "tickmesh_edge_kv_reads_total").await;
    }
    assert_eq!(reads, 4.0, "KV reads of S1..S4");
    c.send(json!({"op":"unsubscribe","id":6,"symbols":["S4"]}))
        .await
        .unwrap();
    c.next_of("unsubscribed", 5 * SECOND).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (errors, ok) = subscribe(&mut c, 7, &["S4"]).await;
    assert_eq!((errors.len(), ok), (0, json!(["S4"])));
    // Time for a read to be made and counted, were one made.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(addr, "tickmesh_edge_kv_reads_total").await,
        reads,
        "a symbol without a value was read again"
    );
    edge.stop().await.unwrap();
}

/// New symbols come onto the edge at a bounded rate, all sessions together: past it a
/// symbol gets `unavailable` with `retry_ms`, and is not carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_symbols_come_onto_the_edge_at_a_bounded_rate() {
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["S1", "S2", "S3"])
        .await
        .unwrap();
    let mut config = edge_config(&nats.url());
    config.limits.max_new_symbols_per_s = 1; // bursts of 2
    let (edge, addr) = start_edge(config).await.unwrap();
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    let (errors, ok) = subscribe(&mut c, 1, &["S1", "S2", "S3"]).await;
    assert_eq!(ok, json!(["S1", "S2"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].0.as_str(), errors[0].1.as_str()),
        ("unavailable", "S3")
    );
    let retry_ms = errors[0].2.as_u64().unwrap();
    assert!((1..=1000).contains(&retry_ms), "retry_ms {retry_ms}");
    assert_eq!(metric(addr, "tickmesh_edge_symbols").await, 2.0);
    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    let (errors, ok) = subscribe(&mut c, 2, &["S3"]).await;
    assert_eq!((errors.len(), ok), (0, json!(["S3"])));
    edge.stop().await.unwrap();
}

/// `nats.subscription_capacity` bounds what waits between the NATS connection and a
/// symbol's pump: a burst past it costs that symbol its newest ticks (a NATS slow consumer,
/// counted), never unbounded memory; the next tick carries the whole state to clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_subscription_capacity_is_dropped_and_the_next_tick_heals_it() {
    use tickmesh_core::codec::encode_wire;
    use tickmesh_core::subject::tick_subject;
    use tickmesh_core::{Symbol, Tick};
    let nats = NatsServer::start().unwrap();
    // Ingest lists the universe in md_ref, then stops: from here on the test alone
    // publishes AAPL.
    let ingest = start_ingest(ingest_config(&nats.url(), 200));
    let mut config = edge_config(&nats.url());
    config.nats.subscription_capacity = tickmesh_edge::config::MIN_SUBSCRIPTION_CAPACITY;
    let shards = config.shards;
    let (edge, addr) = start_edge(config).await.unwrap();
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    let snapshot = c.next_of("snapshot", 10 * SECOND).await.unwrap();
    ingest.stop().await.unwrap();
    let (epoch, seq0) = (
        snapshot["epoch"].as_u64().unwrap(),
        snapshot["seq"].as_u64().unwrap() + 1_000_000,
    );
    let tick = |n: u64| Tick {
        symbol: "AAPL".into(),
        epoch,
        seq: seq0 + n,
        ts: 1,
        last: Some(n as f64),
        bid: Some(99.0),
        ask: Some(101.0),
        volume: Some(n),
        ..Tick::default()
    };
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let subject = tick_subject(&Symbol::parse("AAPL").unwrap(), shards);
    const BURST: u64 = 5000;
    for n in 1..=BURST {
        nc.publish(subject.clone(), encode_wire(&tick(n)).into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nc.publish(subject.clone(), encode_wire(&tick(BURST + 1)).into())
        .await
        .unwrap();
    nc.flush().await.unwrap();

    // Every tick the client gets is in order, and the last one is the whole latest state.
    let (mut got, mut last) = (0u64, None);
    let deadline = Instant::now() + 10 * SECOND;
    while last
        .as_ref()
        .is_none_or(|t: &Value| t["seq"] != json!(seq0 + BURST + 1))
    {
        assert!(
            Instant::now() < deadline,
            "the tick after the burst never came"
        );
        let v = c.next_of("ticks", 10 * SECOND).await.unwrap();
        for t in v["ticks"].as_array().unwrap() {
            if let Some(prev) = &last {
                assert!(t["seq"].as_u64() > prev["seq"].as_u64(), "{t} after {prev}");
            }
            got += 1;
            last = Some(t.clone());
        }
    }
    let last = last.unwrap();
    let field = |k: &str| last[k].as_f64();
    assert_eq!(
        (field("last"), field("bid"), field("ask"), field("volume")),
        (
            Some((BURST + 1) as f64),
            Some(99.0),
            Some(101.0),
            Some((BURST + 1) as f64)
        ),
        "{last}"
    );
    let dropped = metric(
        addr,
        r#"tickmesh_edge_nats_events_total{event="slow_consumer"}"#,
    )
    .await;
    assert!(dropped >= 1.0, "no NATS slow consumer was counted");
    assert!(
        got <= BURST,
        "the client got all {got} ticks: nothing was dropped"
    );
    eprintln!("the client got {got} of {} ticks", BURST + 1);
    edge.stop().await.unwrap();
}

/// Sets the anonymous tier's `max_symbols` and `max_msgs_per_s`.
fn anonymous_tier(config: &mut tickmesh_edge::EdgeConfig, max_symbols: u32, max_msgs_per_s: u32) {
    let tier = config.auth.tiers.get_mut("anonymous").unwrap();
    tier.max_symbols = max_symbols;
    tier.max_msgs_per_s = max_msgs_per_s;
}

/// Reads server frames until a close frame, within `within`: its code and reason, or
/// `None` when the connection ends without one.
async fn read_close(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let read = async {
        loop {
            let mut hdr = [0u8; 2];
            s.read_exact(&mut hdr).await.ok()?;
            let len = match hdr[1] & 0x7f {
                126 => u64::from(s.read_u16().await.ok()?),
                127 => s.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            s.read_exact(&mut payload).await.ok()?;
            if hdr[0] & 0x0f == 0x8 {
                let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .expect("no close frame in time")
}

/// A client that sends nothing, not even a pong, is closed with 1000 `idle timeout` once
/// `session.idle_timeout_ms` has passed; one that only reads (its WebSocket answers the
/// edge's pings) and one that only sends requests are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_idle_timeout_and_a_live_one_is_kept() {
    let nats = NatsServer::start().unwrap();
    create_empty_refdata(&nats.url()).await.unwrap();
    let mut config = edge_config(&nats.url());
    config.session.ping_interval_ms = 200;
    config.session.idle_timeout_ms = 1000;
    let (edge, addr) = start_edge(config).await.unwrap();
    let closed_normal = r#"tickmesh_edge_closes_total{code="1000"}"#;

    let mut silent = raw_upgrade(addr).await.unwrap();
    let started = Instant::now();
    let mut reader = Client::connect(addr, Format::Json).await.unwrap();
    let mut sender = Client::connect(addr, Format::Json).await.unwrap();
    let reading = tokio::spawn(async move {
        let msgs = reader.collect(3 * SECOND).await;
        (reader, msgs)
    });
    let sending = tokio::spawn(async move {
        for id in 0..10 {
            sender.send(json!({"op":"ping","id":id})).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sender
    });

    let mut closed_after = None;
    while started.elapsed() < 3 * SECOND {
        if closed_after.is_none() && metric(addr, closed_normal).await >= 1.0 {
            closed_after = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = closed_after.expect("the silent session was not closed");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&closed_after),
        "closed {closed_after:?} after it connected"
    );
    assert_eq!(
        read_close(&mut silent, 5 * SECOND).await,
        Some((1000, "idle timeout".to_string()))
    );

    // The other two were kept, and only the silent one was closed.
    let (mut reader, msgs) = reading.await.unwrap();
    let msgs = msgs.expect("the reading client was closed");
    assert!(!msgs.is_empty());
    reader.ping(100).await.unwrap();
    // The sender read nothing: its pongs are waiting, each of them, then one more.
    let mut sender = sending.await.unwrap();
    sender.send(json!({"op":"ping","id":100})).await.unwrap();
    for id in (0..10).chain([100]) {
        let pong = sender.next_of("pong", 5 * SECOND).await.unwrap();
        assert_eq!(pong["id"], json!(id), "{pong}");
    }
    assert_eq!(metric(addr, closed_normal).await, 1.0);
    edge.stop().await.unwrap();
}

/// Creates `chain.<underlying>` in `md_ref` with `strikes` for each of `expiries`, and
/// its options as instruments; returns each expiry's options.
async fn create_chain(
    nats_url: &str,
    underlying: &str,
    expiries: &[&str],
    strikes: &[f64],
) -> Vec<Vec<String>> {
    use tickmesh_core::date::Date;
    use tickmesh_core::refdata::{Chain, ChainExpiry, chain_key, instrument_key};
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let refs = js
        .get_key_value(tickmesh_core::refdata::BUCKET)
        .await
        .unwrap();
    let chain = Chain {
        underlying: underlying.into(),
        root: underlying.into(),
        expiries: expiries
            .iter()
            .map(|e| ChainExpiry {
                expiry: Date::parse(e).unwrap(),
                strikes: strikes.to_vec(),
            })
            .collect(),
    };
    refs.put(
        chain_key(underlying),
        serde_json::to_vec(&chain).unwrap().into(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    for e in expiries {
        let options: Vec<String> = chain
            .symbols(Date::parse(e).unwrap())
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        for o in &options {
            let value = json!({"symbol": o, "kind": "option", "underlying": underlying});
            refs.put(instrument_key(o), value.to_string().into())
                .await
                .unwrap();
        }
        out.push(options);
    }
    out
}

/// Every reply to request `id` up to its `subscribed`: (errors, subscribed).
async fn replies_to(c: &mut Client, id: i64) -> (Vec<Value>, Value) {
    let mut errors = Vec::new();
    loop {
        let v = c.next_non_hb(5 * SECOND).await.unwrap();
        match v["type"].as_str() {
            Some("error") => {
                assert_eq!(v["id"], json!(id), "{v}");
                errors.push(v);
            }
            Some("subscribed") => return (errors, v),
            Some("snapshot") => {}
            _ => panic!("unexpected {v}"),
        }
    }
}

/// `limits.request_entries_factor` × the tier's `max_symbols` (2 × 10 here): a subscribe
/// is read up to 20 entries (`symbols`, then `chains`), the rest get one
/// `too_many_symbols` with `count`; chains expand up to 20 symbols in all, and the options
/// and chains past that get `too_many_symbols`. The rate (one message per 100 entries)
/// lets both requests through, so the cap is what answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_read_up_to_its_entries_cap_and_chains_expand_up_to_it() {
    let nats = NatsServer::start().unwrap();
    let names: Vec<String> = (1..=25).map(|i| format!("S{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    create_refdata(&nats.url(), &names).await.unwrap();
    let strikes: Vec<f64> = (1..=8).map(|k| f64::from(k) * 10.0).collect();
    let options = create_chain(&nats.url(), "ZZZ", &["2030-01-18", "2030-02-15"], &strikes).await;
    assert_eq!(options[0].len(), 16);
    let mut config = edge_config(&nats.url());
    anonymous_tier(&mut config, 10, 50);
    let (edge, addr) = start_edge(config).await.unwrap();
    let mut c = Client::connect(addr, Format::Json).await.unwrap();

    // 26 entries: S1..S20 are read, S21..S25 and the chain are not.
    c.send(json!({"op":"subscribe","id":1,"symbols":names,"chains":["ZZZ:2030-01-18"]}))
        .await
        .unwrap();
    let (errors, subscribed) = replies_to(&mut c, 1).await;
    assert_eq!(subscribed["symbols"], json!(names[..10]), "{subscribed}");
    assert!(
        subscribed["chains"].as_array().is_none_or(Vec::is_empty),
        "{subscribed}"
    );
    let counted: Vec<&Value> = errors.iter().filter(|e| e["count"].is_u64()).collect();
    assert_eq!(counted.len(), 1, "{errors:?}");
    assert_eq!(
        (
            &counted[0]["code"],
            &counted[0]["count"],
            &counted[0]["symbol"]
        ),
        (&json!("too_many_symbols"), &json!(6), &Value::Null),
        "{errors:?}"
    );
    // S11..S20 were read and refused one by one (the session holds 10); S21.. were not.
    let refused: Vec<&str> = errors.iter().filter_map(|e| e["symbol"].as_str()).collect();
    assert_eq!(refused, names[10..20], "{errors:?}");
    assert!(
        errors.iter().all(|e| e["code"] == "too_many_symbols"),
        "{errors:?}"
    );
    c.send(json!({"op":"unsubscribe","id":2,"symbols":names[..10]}))
        .await
        .unwrap();
    c.next_of("unsubscribed", 5 * SECOND).await.unwrap();

    // 5 symbols and 3 distinct chains: 5 + 16 options reach 21, so the first chain's last
    // option is refused, and the chains after it are not expanded at all.
    let chains = [
        "ZZZ:2030-01-18",
        "ZZZ:2030-02-15",
        "ZZZ:2030-01-18",
        "ZZZ:2030-03-20",
    ];
    c.send(json!({"op":"subscribe","id":3,"symbols":names[..5],"chains":chains}))
        .await
        .unwrap();
    let (errors, subscribed) = replies_to(&mut c, 3).await;
    assert_eq!(
        subscribed["chains"],
        json!(["ZZZ:2030-01-18"]),
        "{subscribed}"
    );
    let mut held: Vec<String> = names[..5].iter().map(|s| s.to_string()).collect();
    held.extend(options[0][..5].iter().cloned());
    assert_eq!(subscribed["symbols"], json!(held), "{subscribed}");
    assert!(errors.iter().all(|e| e["count"].is_null()), "{errors:?}");
    assert!(
        errors.iter().all(|e| e["code"] == "too_many_symbols"),
        "{errors:?}"
    );
    let past_cap: Vec<&str> = errors
        .iter()
        .filter(|e| e["message"].as_str().unwrap().contains("read up to 20"))
        .filter_map(|e| e["symbol"].as_str())
        .collect();
    assert_eq!(
        past_cap,
        [options[0][15].as_str(), "ZZZ:2030-02-15", "ZZZ:2030-03-20"],
        "{errors:?}"
    );
    // Read, but past the 10 a session may hold.
    let past_room: Vec<&str> = errors
        .iter()
        .filter(|e| e["message"].as_str().unwrap().contains("at most 10"))
        .filter_map(|e| e["symbol"].as_str())
        .collect();
    assert_eq!(past_room, options[0][5..15], "{errors:?}");
    assert_eq!(errors.len(), 13, "{errors:?}");
    edge.stop().await.unwrap();
}

/// `limits.entries_per_message`: a subscribe of 350 entries costs 4 messages of the rate.
/// With 2 messages a second (bursts of 4), one sent after a ping finds 3 tokens: it is
/// refused whole with `rate_limited` and `retry_ms`, nothing is subscribed, and it is a
/// strike (the second in a row closes with 4029). A fresh session takes it, and its
/// next message finds no token left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_costs_its_entries_and_is_refused_whole_without_the_tokens() {
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["S1", "S2", "S3", "S4", "S5"])
        .await
        .unwrap();
    let mut config = edge_config(&nats.url());
    // Read up to 400 entries: the rate, not the entries cap, answers.
    anonymous_tier(&mut config, 200, 2);
    config.limits.rate_limit_strikes = 2;
    let (edge, addr) = start_edge(config).await.unwrap();
    let symbols: Vec<&str> = ["S1", "S2", "S3", "S4", "S5"].repeat(70);
    assert_eq!(symbols.len(), 350);

    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.ping(1).await.unwrap();
    c.send(json!({"op":"subscribe","id":2,"symbols":symbols}))
        .await
        .unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (&v["type"], &v["code"], &v["id"]),
        (&json!("error"), &json!("rate_limited"), &json!(2)),
        "{v}"
    );
    let retry_ms = v["retry_ms"].as_u64().unwrap();
    assert!((1..=500).contains(&retry_ms), "{v}");
    c.send(json!({"op":"subscribe","id":3,"symbols":symbols}))
        .await
        .unwrap();
    let mut before_close = Vec::new();
    let code = c
        .closed_within(5 * SECOND, |v| before_close.push(v.clone()))
        .await
        .unwrap();
    assert_eq!(code, Some(4029), "{before_close:?}");
    assert!(
        before_close.iter().all(|v| v["type"] == "hb"),
        "{before_close:?}"
    );
    assert_eq!(metric(addr, "tickmesh_edge_symbols").await, 0.0);

    let mut fresh = Client::connect(addr, Format::Json).await.unwrap();
    fresh
        .send(json!({"op":"subscribe","id":1,"symbols":symbols}))
        .await
        .unwrap();
    let (errors, subscribed) = replies_to(&mut fresh, 1).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(subscribed["symbols"], json!(["S1", "S2", "S3", "S4", "S5"]));
    fresh.send(json!({"op":"ping","id":2})).await.unwrap();
    let v = fresh.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(
        (&v["code"], &v["id"]),
        (&json!("rate_limited"), &json!(2)),
        "{v}"
    );
    edge.stop().await.unwrap();
}

/// `snapshot.negative_ttl_ms`: a symbol found without a value is not read from KV again
/// while its negative entry lives, and is read again once it has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_without_a_value_is_read_again_once_its_negative_entry_expires() {
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["S1"]).await.unwrap();
    let mut config = edge_config(&nats.url());
    config.snapshot.negative_ttl_ms = 1000;
    let (edge, addr) = start_edge(config).await.unwrap();
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    let kv_reads = "tickmesh_edge_kv_reads_total";
    let until = |name: &'static str, want: f64| async move {
        let deadline = Instant::now() + 3 * SECOND;
        loop {
            let got = metric(addr, name).await;
            if got >= want || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (errors, ok) = subscribe(&mut c, 1, &["S1"]).await;
    assert_eq!((errors.len(), ok), (0, json!(["S1"])));
    assert_eq!(until(kv_reads, 1.0).await, 1.0);
    let read_at = Instant::now();

    // Within the negative entry's life: served from the cache, no KV read.
    c.send(json!({"op":"unsubscribe","id":2,"symbols":["S1"]}))
        .await
        .unwrap();
    c.next_of("unsubscribed", 5 * SECOND).await.unwrap();
    subscribe(&mut c, 3, &["S1"]).await;
    // Time for a read to be made and counted, were one made.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(addr, kv_reads).await,
        1.0,
        "read again within the TTL"
    );
    assert!(
        read_at.elapsed() < Duration::from_millis(800),
        "the machine is too slow for this test's timing"
    );

    // Past it: read again.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(read_at.elapsed())).await;
    c.send(json!({"op":"unsubscribe","id":4,"symbols":["S1"]}))
        .await
        .unwrap();
    c.next_of("unsubscribed", 5 * SECOND).await.unwrap();
    subscribe(&mut c, 5, &["S1"]).await;
    assert_eq!(
        until(kv_reads, 2.0).await,
        2.0,
        "not read again after its negative entry expired"
    );
    edge.stop().await.unwrap();
}
