//! A session's timing over an in-memory socket (`tokio::io::duplex`), with no NATS server:
//! the edge's NATS connection keeps retrying in the background while the session greets,
//! beats, drains, expires and cuts a client that stops reading.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;
use crate::config::EdgeConfig;

const SECOND: Duration = Duration::from_secs(1);

/// An edge with anonymous access to every symbol, whose NATS server never answers.
async fn edge(tweak: impl FnOnce(&mut EdgeConfig)) -> Arc<Edge> {
    let mut config = EdgeConfig::default();
    config.nats.urls = vec!["nats://127.0.0.1:1".into()];
    config.auth.anonymous = true;
    config.auth.allow_open_anonymous = true;
    config.auth.anonymous_ent = vec!["*".into()];
    tweak(&mut config);
    let verifier = crate::auth::Verifier::new(&config.auth).unwrap();
    Edge::new(config, verifier).await.unwrap()
}

/// A session of `edge` for `grant` (anonymous if none) over a socket of `buffer` bytes:
/// the client's end.
async fn open(
    edge: &Arc<Edge>,
    grant: Option<Grant>,
    buffer: usize,
) -> WebSocketStream<DuplexStream> {
    let (client, server) = tokio::io::duplex(buffer);
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let grant = grant.unwrap_or_else(|| edge.verifier.anonymous().unwrap());
    let admission = edge
        .registry
        .admit(
            [127, 0, 0, 1].into(),
            grant.sub.as_deref(),
            &edge.config.limits,
        )
        .unwrap();
    let who = Identity {
        grant,
        admission,
        peer: None,
    };
    tokio::spawn(run(server, edge.clone(), Format::Json, who));
    client
}

/// The next message: a JSON object, or `{"close": code}`; None when nothing came within
/// `within` or the socket ended without a close frame.
async fn next(ws: &mut WebSocketStream<DuplexStream>, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(frame)) => {
                return Some(json!({"close": frame.map_or(1005, |f| u16::from(f.code))}));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_first_then_a_heartbeat_each_heartbeat_ms() {
    let edge = edge(|c| c.session.heartbeat_ms = 200).await;
    let mut ws = open(&edge, None, 64 * 1024).await;
    let welcome = next(&mut ws, SECOND).await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["heartbeat_ms"], 200, "{welcome}");
    let started = std::time::Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_millis(1100) {
        match next(&mut ws, SECOND).await {
            Some(v) if v["type"] == "hb" => beats += 1,
            Some(v) => panic!("an idle session sent {v}"),
            None => panic!("no heartbeat within 1 s"),
        }
    }
    // Five are due in 1.1 s; a busy machine may delay one or two, never skip many.
    assert!((3..=6).contains(&beats), "{beats} heartbeats in 1.1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_edge_tells_the_client_to_reconnect_then_closes_4001() {
    let edge = edge(|c| c.shutdown.reconnect_window_ms = 300).await;
    let mut ws = open(&edge, None, 64 * 1024).await;
    assert_eq!(next(&mut ws, SECOND).await.unwrap()["type"], "welcome");
    edge.shutdown.cancel();
    let mut reconnect = None;
    let close = loop {
        let v = next(&mut ws, 2 * SECOND)
            .await
            .expect("the session ended without a close");
        match v["type"].as_str() {
            Some("reconnect") => reconnect = Some(v),
            Some("hb") => {}
            None => break v["close"].as_u64(),
            _ => panic!("a draining session sent {v}"),
        }
    };
    let reconnect = reconnect.expect("no reconnect before the close");
    assert!(reconnect["after_ms"].as_u64().unwrap() < 300, "{reconnect}");
    assert_eq!(close, Some(4001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closes_4401_when_its_token_expires() {
    let edge = edge(|_| {}).await;
    let mut grant = edge.verifier.anonymous().unwrap();
    grant.sub = Some("erin".into());
    grant.exp = Some(crate::auth::now_s() + 1);
    let mut ws = open(&edge, Some(grant), 64 * 1024).await;
    assert_eq!(next(&mut ws, SECOND).await.unwrap()["type"], "welcome");
    let mut told = None;
    let close = loop {
        let v = next(&mut ws, 3 * SECOND)
            .await
            .expect("the session outlived its token");
        match v["type"].as_str() {
            Some("error") => told = v["code"].as_str().map(str::to_string),
            Some("hb") => {}
            None => break v["close"].as_u64(),
            _ => panic!("sent {v}"),
        }
    };
    assert_eq!(told.as_deref(), Some("token_expired"));
    assert_eq!(close, Some(4401));
}

/// A client that sends requests but reads none of the replies: once a write has stalled
/// for `session.write_timeout_ms` the session is cut, and when the client reads again it
/// finds the `slow_consumer` notice and then the 4008 close at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_finds_slow_consumer_and_4008_last() {
    let edge = edge(|c| {
        c.session.write_timeout_ms = 300;
        c.session.close_linger_ms = 5000;
        c.auth.anonymous_tier = "realtime".into();
    })
    .await;
    let mut ws = open(&edge, None, 2048).await;
    for id in 0..150 {
        let ping = json!({"op": "ping", "id": id}).to_string();
        let send = ws.send(Message::Text(ping.into()));
        if tokio::time::timeout(SECOND, send).await.is_err() {
            break; // the session stopped reading too
        }
    }
    tokio::time::sleep(SECOND).await;
    let (mut last, mut close) = (None, None);
    while let Some(v) = next(&mut ws, 2 * SECOND).await {
        match v.get("close") {
            Some(code) => close = code.as_u64(),
            None => last = Some(v),
        }
    }
    let last = last.expect("nothing came");
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("slow_consumer")),
        "{last}"
    );
    assert_eq!(close, Some(4008));
}

/// A session cut as a slow consumer keeps its socket and its place in the connection
/// counts while its notice waits for room (`session.close_linger_ms`); then it lets both
/// go: the count drops, and the client finds the end of the stream after what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_session_keeps_its_place_while_it_lingers_then_lets_go() {
    let edge = edge(|c| {
        c.session.write_timeout_ms = 200;
        c.session.close_linger_ms = 2000;
        c.auth.anonymous_tier = "realtime".into();
    })
    .await;
    let mut ws = open(&edge, None, 2048).await;
    assert_eq!(edge.registry.total(), 1);
    for id in 0..150 {
        let ping = json!({"op": "ping", "id": id}).to_string();
        let send = ws.send(Message::Text(ping.into()));
        if tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err()
        {
            break;
        }
    }
    // Cut about 200 ms after its write stalled, lingering 2 s from then.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        edge.registry.total(),
        1,
        "gave its place up while lingering"
    );
    let deadline = std::time::Instant::now() + 5 * SECOND;
    while edge.registry.total() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still counted 5 s after the cut"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = tokio::time::timeout(2 * SECOND, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end after the linger");
}

/// Feeds `edge` the history of `symbol`'s tape as NATS would: prints 1 to `n`.
fn load_tape(edge: &Edge, symbol: &Symbol, n: u64) {
    use crate::tape::{FeedKey, FollowSink};
    let print = |seq| tickmesh_core::trade::Trade {
        symbol: symbol.to_string(),
        seq,
        trade_id: seq,
        price: 100.0,
        size: 100,
        ts: seq,
        src_ts: None,
        conditions: Vec::new(),
    };
    let kept = (1..=n).map(|s| tickmesh_core::trade::encode_wire(&print(s)).into());
    let key = FeedKey {
        symbol: symbol.clone(),
        tf: None,
    };
    edge.tapes.history(&key, kept.collect());
}

/// A session's tape queue is bounded by what its subscriptions may bring: one that
/// subscribes and unsubscribes a tape with a full history, reading nothing, is cut at
/// the second round, not after `tape_queue` rounds of 500 prints each; one that holds
/// several tapes gets each full history without being cut.
#[tokio::test]
async fn a_tape_queue_is_bounded_by_prints_not_by_messages() {
    let edge = edge(|c| c.session.tape_queue = 16).await;
    let symbols: Vec<Symbol> = ["AAPL", "MSFT", "SPY"]
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    // Another session keeps the tapes followed; each has 500 prints kept.
    let mut keeper = HeldTapes::new(edge.clone(), 1);
    for symbol in &symbols {
        keeper.subscribe(symbol, 0, false);
        load_tape(&edge, symbol, 500);
    }

    let mut holder = HeldTapes::new(edge.clone(), 2);
    for symbol in &symbols {
        holder.subscribe(symbol, 500, false);
    }
    assert!(!holder.overflowed(), "three full histories fit");

    let mut looper = HeldTapes::new(edge.clone(), 3);
    let aapl = &symbols[0];
    let mut rounds = 0;
    while !looper.overflowed() && rounds < 100 {
        looper.subscribe(aapl, 500, false);
        looper.unsubscribe(aapl.as_str());
        rounds += 1;
    }
    assert_eq!(rounds, 2, "rounds of 500 unread prints before the cut");
}
