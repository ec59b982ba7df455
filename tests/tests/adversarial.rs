//! The black-box adversarial suite: a real client, knowing only the protocol, against the
//! demo mesh (a TLS hub and a region of leaf nodes from `nats/`, ingest, and an edge
//! process started from the demo's own `config/edge.toml`). Each case plays an attacker
//! or a careless client; throughout, a bystander session watches SPY and AAPL every tick
//! and must receive every tick, in order, with no stall: whatever the others do costs only
//! themselves.
//!
//! The cases run one after another on one mesh (a mesh takes seconds to start on two
//! cores); a failure names its case.

#![allow(clippy::unwrap_used)] // a failed setup is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_edge::auth::now_s as now;
use tickmesh_tests::mesh::{EdgeProcess, Mesh};
use tickmesh_tests::*;
use tokio::sync::watch;

const A: &str = "region-a";
const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "an-adversarial-suite-hs256-secret-of-32-bytes";
/// Ticks per second the demo's ingest publishes here.
const RATE: u32 = 400;

fn mint(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, ent: &[&str], tier: &str) -> Value {
    json!({"sub": sub, "iat": now() - 1, "exp": now() + 600, "ent": ent, "tier": tier})
}

fn token(sub: &str, ent: &[&str], tier: &str) -> String {
    mint(&claims(sub, ent, tier))
}

struct Demo {
    _mesh: Mesh,
    _ingest: Service,
    edge: EdgeProcess,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// The mesh, then the edge, then ingest: the edge's first seconds, before any reference
    /// data exists, are the first case ([`nothing_is_carried_on_a_clients_word`]).
    async fn start() -> Demo {
        let mesh = Mesh::start(&[A], 2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hs256.secret");
        std::fs::write(&secret, SECRET).unwrap();
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_tickmesh-test-edge"));
        let file = root().join("config/edge.toml");
        let env = [(
            "TICKMESH_EDGE_AUTH__HS256_SECRET_FILE",
            secret.display().to_string(),
        )];
        let mut edge = EdgeProcess::launch(&bin, Some(&file), &mesh.edge_config(A), &env)
            .await
            .unwrap();
        nothing_is_carried_on_a_clients_word(edge.addr).await;
        // The demo's ingest (its universe, options and session), on the test mesh.
        let mut ic =
            tickmesh_ingest::IngestConfig::load(Some(&root().join("config/ingest.toml"))).unwrap();
        let kit = mesh.ingest_config(RATE);
        ic.nats = kit.nats;
        ic.kv.replicas = kit.kv.replicas;
        ic.metrics_listen = None;
        ic.sim.ticks_per_sec = RATE;
        // Open at once, and no halts: the tests here want prices that move.
        ic.sim.session.start = None;
        ic.sim.session.halts_per_hour = 0.0;
        let ingest = start_ingest(ic);
        edge.ready_within(60 * SECOND).await.unwrap();
        Demo {
            _mesh: mesh,
            _ingest: ingest,
            edge,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/stream", self.edge.addr)
    }

    async fn client(&self, token: Option<&str>) -> Client {
        Client::connect_with(self.edge.addr, Format::Json, token)
            .await
            .unwrap()
    }
}

/// What the bystander saw: per symbol, the count of ticks; and every fault.
#[derive(Debug, Default)]
struct Watch {
    ticks: HashMap<String, u64>,
    faults: Vec<String>,
}

/// The bystander: every tick of SPY and AAPL, checked as it comes: each `seq` exactly one
/// above the last within an epoch, never a stall of more than `STALL`.
async fn bystander(addr: SocketAddr, mut stop: watch::Receiver<bool>) -> Watch {
    const STALL: Duration = Duration::from_secs(3);
    let t = token("bystander", &["*"], "realtime");
    let mut client = Client::connect_with(addr, Format::Json, Some(&t))
        .await
        .unwrap();
    client
        .send(json!({"op":"subscribe","id":1,"symbols":["SPY","AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    let mut w = Watch::default();
    let mut last: HashMap<String, (u64, u64, bool)> = HashMap::new();
    let mut heard = Instant::now();
    let began = Instant::now();
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return w,
            m = client.next_event(STALL) => m,
        };
        let v = match msg {
            Ok(Event::Msg(v)) => v,
            Ok(Event::Closed(code)) => {
                w.faults.push(format!("bystander closed with {code:?}"));
                return w;
            }
            Err(e) => {
                w.faults.push(format!("bystander: {e}"));
                return w;
            }
        };
        // A snapshot is the latest value the edge had; the live ticks that follow it need
        // only be newer. From the first live tick on, every tick must come.
        let (ticks, live): (Vec<&Value>, bool) = match v["type"].as_str() {
            Some("snapshot") => (vec![&v], false),
            Some("ticks") => (v["ticks"].as_array().unwrap().iter().collect(), true),
            Some("error") => {
                w.faults.push(format!("bystander got {v}"));
                continue;
            }
            _ => continue,
        };
        for t in ticks {
            let symbol = t["symbol"].as_str().unwrap().to_string();
            let (seq, epoch) = (t["seq"].as_u64().unwrap(), t["epoch"].as_u64().unwrap());
            if let Some(&(prev, prev_epoch, prev_live)) = last.get(&symbol) {
                let in_order = if epoch == prev_epoch && prev_live {
                    seq == prev + 1
                } else {
                    seq > prev
                };
                if !in_order && w.faults.len() < 20 {
                    w.faults.push(format!(
                        "{symbol}: seq {seq} (epoch {epoch}) after {prev}, {:?} in",
                        began.elapsed()
                    ));
                }
            }
            last.insert(symbol.clone(), (seq, epoch, live));
            *w.ticks.entry(symbol).or_default() += 1;
        }
        if heard.elapsed() > STALL && w.faults.len() < 20 {
            w.faults
                .push(format!("bystander stalled for {:?}", heard.elapsed()));
        }
        heard = Instant::now();
    }
}

/// The reply to `request` with its `id`: every message until one of type `until`.
async fn exchange(client: &mut Client, request: Value, until: &str) -> Vec<Value> {
    client.send(request).await.unwrap();
    let mut out = Vec::new();
    loop {
        let v = client.next_non_hb(5 * SECOND).await.unwrap();
        let done = v["type"] == until;
        if v["type"] != "ticks" && v["type"] != "snapshot" {
            out.push(v);
        }
        if done {
            return out;
        }
    }
}

/// The first call of `underlying`'s nearest expiry, from a `chains` answer (asked again
/// while the edge is still reading its reference data).
async fn first_call(client: &mut Client, underlying: &str) -> String {
    for id in 0..40 {
        let replies = exchange(
            client,
            json!({"op":"chains","id":id,"underlying":underlying}),
            "chains",
        );
        let Ok(replies) = tokio::time::timeout(SECOND, replies).await else {
            continue;
        };
        let e = &replies.last().unwrap()["expiries"][0];
        let expiry = e["expiry"].as_str().unwrap().replace('-', "");
        let strike = (e["strikes"][0].as_f64().unwrap() * 1000.0).round() as u64;
        return format!("{underlying}{}C{strike:08}", &expiry[2..]);
    }
    panic!("no chain of {underlying} within 40 s");
}

fn refused(replies: &[Value]) -> Vec<(String, String)> {
    replies
        .iter()
        .filter(|v| v["type"] == "error")
        .map(|v| {
            (
                v["code"].as_str().unwrap_or_default().to_string(),
                v["symbol"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Before the edge has its reference data (no ingest has written `md_ref` yet), it is not
/// ready, and it carries nothing on a client's word: a well-formed name, listed or not,
/// and a chain get `unavailable` with `retry_ms`, and the session holds no subscription.
async fn nothing_is_carried_on_a_clients_word(addr: SocketAddr) {
    let deadline = Instant::now() + 20 * SECOND;
    loop {
        let (status, body) = http_get(addr, "/readyz")
            .await
            .unwrap_or((0, String::new()));
        assert_ne!(status, 200, "ready before any reference data exists");
        if body.contains("reference data") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz said {status} {body:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = token("early", &["*"], "realtime");
    let mut c = Client::connect_with(addr, Format::Json, Some(&t))
        .await
        .unwrap();
    let unavailable = |v: &Value, id: u64| {
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str(), v["id"].as_u64()),
            (Some("error"), Some("unavailable"), Some(id)),
            "{v}"
        );
        assert!(v["retry_ms"].as_u64().is_some_and(|ms| ms > 0), "{v}");
    };
    let names: Vec<String> = (0..50).map(|i| format!("ZZ{i}")).collect();
    c.send(json!({"op":"subscribe","id":1,"symbols":["SPY","AAPL"],"chains":["AAPL"]}))
        .await
        .unwrap();
    unavailable(&c.next_non_hb(5 * SECOND).await.unwrap(), 1);
    c.send(json!({"op":"subscribe","id":2,"symbols":names}))
        .await
        .unwrap();
    unavailable(&c.next_non_hb(5 * SECOND).await.unwrap(), 2);
    c.send(json!({"op":"chains","id":3,"underlying":"SPY"}))
        .await
        .unwrap();
    unavailable(&c.next_non_hb(5 * SECOND).await.unwrap(), 3);
    c.send(json!({"op":"list","id":4})).await.unwrap();
    let v = c.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(v["subscriptions"], json!([]), "{v}");
}

/// Tokens that must not open a session, each refused before the upgrade with its reason.
async fn bad_tokens_are_refused_at_the_upgrade(demo: &Demo) {
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = claims("mallory", &["*"], "realtime");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"not-the-edge-secret-but-32-bytes-long"),
    )
    .unwrap();
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 60);
    let without = |claim: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(claim);
        mint(&c)
    };
    let mut future = good.clone();
    future["iat"] = json!(now() + 3600);
    let cases = [
        (without("sub"), "missing claim sub"),
        (without("exp"), "missing claim exp"),
        (mint(&future), "token issued in the future"),
        (forged, "bad signature"),
        (
            format!("{}.{}.", b64(json!({"alg":"none"})), b64(good.clone())),
            "algorithm none is not accepted",
        ),
        (mint(&expired), "token expired"),
        ("garbage".to_string(), "malformed token"),
    ];
    for (token, reason) in cases {
        let (status, body) = upgrade_status(&demo.url(), Some(&token)).await;
        assert_eq!((status, body.as_str()), (401, reason), "token {token:.40}");
    }
}

/// Without a token the demo gives its limited tier, never `*` at every tick.
async fn anonymous_sessions_get_the_demo_tier(demo: &Demo) {
    let mut anon = demo.client(None).await;
    let limits = &anon.welcome["limits"];
    assert!(
        limits["min_interval_ms"].as_u64().unwrap() >= 100,
        "anonymous limits {limits}"
    );
    let replies = exchange(
        &mut anon,
        json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}),
        "subscribed",
    )
    .await;
    let sub = replies.last().unwrap();
    assert!(sub["interval_ms"].as_u64().unwrap() >= 100, "{sub}");
}

/// `X*` grants X and its options, never another ticker with the same first letters.
async fn family_patterns_grant_exactly_their_family(demo: &Demo) {
    let mut c = demo
        .client(Some(&token(
            "eve",
            &["T*", "V*", "BA*", "GOOG*", "NVDA*"],
            "realtime",
        )))
        .await;
    let option = first_call(&mut c, "NVDA").await;
    let replies = exchange(
        &mut c,
        json!({"op":"subscribe","id":3,"symbols":[
            "T","TSLA","TXN","TLT","V","VZ","VTI","VIX","BA","BAC","GOOGL",option
        ],"interval_ms":1000}),
        "subscribed",
    )
    .await;
    let sub = replies.last().unwrap();
    assert_eq!(
        sub["symbols"],
        json!(["T", "V", "BA", option]),
        "{replies:?}"
    );
    let not_entitled: Vec<String> = refused(&replies)
        .into_iter()
        .filter(|(code, _)| code == "not_entitled")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        not_entitled,
        ["TSLA", "TXN", "TLT", "VZ", "VTI", "VIX", "BAC", "GOOGL"]
    );
}

/// An in-band `auth` can narrow a session, never switch it to another user.
async fn refresh_narrows_and_cannot_switch_users(demo: &Demo) {
    let mut c = demo.client(Some(&token("frank", &["*"], "pro"))).await;
    exchange(
        &mut c,
        json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT"]}),
        "subscribed",
    )
    .await;
    let replies = exchange(
        &mut c,
        json!({"op":"auth","id":2,"token":token("frank", &["AAPL"], "pro")}),
        "authed",
    )
    .await;
    assert_eq!(
        refused(&replies),
        [("not_entitled".to_string(), "MSFT".to_string())]
    );
    let list = exchange(&mut c, json!({"op":"list","id":3}), "subscriptions").await;
    let held: Vec<&str> = list.last().unwrap()["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["AAPL"]);
    c.send(json!({"op":"auth","id":4,"token":token("grace", &["*"], "realtime")}))
        .await
        .unwrap();
    let code = c.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!(code, Some(4401), "a refresh to another user");
}

/// The replies to `request` (a raw JSON text): every message before the `pong` of a
/// `ping` sent right behind it, and their size in bytes (live ticks left out).
async fn replies_to(client: &mut Client, request: String) -> (usize, Vec<Value>) {
    use tokio_tungstenite::tungstenite::Message;
    client
        .send_raw(Message::Text(request.into()))
        .await
        .unwrap();
    client.send(json!({"op":"ping","id":99})).await.unwrap();
    let (mut bytes, mut out) = (0, Vec::new());
    loop {
        let v = client.next_non_hb(10 * SECOND).await.unwrap();
        if v["type"] == "pong" && v["id"] == 99 {
            return (bytes, out);
        }
        if v["type"] == "ticks" || v["type"] == "snapshot" {
            continue;
        }
        bytes += v.to_string().len();
        out.push(v);
    }
}

/// A request's reply is bounded by what the request is worth: 20,000 empty strings, or
/// 3,000 copies of one chain, in one message of over 50 KB, get a few KB back, and the
/// chain is expanded once; a symbol no feed lists is refused and never carried.
async fn replies_are_bounded_by_the_request(demo: &Demo) {
    let mut c = demo.client(None).await;
    let empties = vec![""; 20_000];
    let request = json!({"op":"subscribe","id":1,"symbols":empties}).to_string();
    assert!(request.len() > 50_000);
    let (bytes, replies) = replies_to(&mut c, request).await;
    assert!(
        bytes < 16 * 1024,
        "{bytes} bytes of replies to 20,000 empty strings"
    );
    assert!(!replies.is_empty() && replies.iter().all(|v| v["type"] == "error"));

    let call = first_call(&mut c, "NVDA").await;
    let expiry = format!("20{}-{}-{}", &call[4..6], &call[6..8], &call[8..10]);
    let chains = vec![format!("NVDA:{expiry}"); 3000];
    let request = json!({"op":"subscribe","id":2,"chains":chains}).to_string();
    assert!(request.len() > 50_000);
    let (bytes, replies) = replies_to(&mut c, request).await;
    assert!(
        bytes < 16 * 1024,
        "{bytes} bytes of replies to 3,000 copies of one chain"
    );
    let sub = replies.iter().find(|v| v["type"] == "subscribed").unwrap();
    assert_eq!(sub["chains"].as_array().map(Vec::len), Some(1), "{sub}");

    let replies = exchange(
        &mut c,
        json!({"op":"subscribe","id":3,"symbols":["NOSUCHTICKER"]}),
        "subscribed",
    )
    .await;
    assert_eq!(
        refused(&replies),
        [("unknown_symbol".to_string(), "NOSUCHTICKER".to_string())]
    );
}

/// 3,000 idle TCP connections from one address (127.0.0.2) keep nobody else out: a
/// client from another address is served within 2 s.
async fn a_connection_flood_costs_only_its_address(demo: &Demo) {
    let flood: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut idle = Vec::new();
    let started = Instant::now();
    while idle.len() < 3000 && started.elapsed() < 20 * SECOND {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(flood, 0)).unwrap();
        if let Ok(Ok(s)) = tokio::time::timeout(SECOND, socket.connect(demo.edge.addr)).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 2500, "only {} flood connections", idle.len());
    tokio::time::sleep(SECOND).await;
    let t0 = Instant::now();
    let mut c = tokio::time::timeout(5 * SECOND, demo.client(None))
        .await
        .expect("no session within 5 s during the flood");
    let took = t0.elapsed();
    assert!(took < 2 * SECOND, "served after {took:?} beside the flood");
    c.ping(1).await.unwrap();
    drop(idle);
}

/// A token whose `exp` lies beyond any clock (10^19 s) once panicked its session: now it
/// is served like any other, and the session answers.
async fn an_exp_beyond_any_clock_is_harmless(demo: &Demo) {
    let mut c = claims("henry", &["AAPL"], "pro");
    c["exp"] = json!(10_000_000_000_000_000_000u64);
    let mut henry = demo.client(Some(&mint(&c))).await;
    exchange(
        &mut henry,
        json!({"op":"subscribe","id":1,"symbols":["AAPL"]}),
        "subscribed",
    )
    .await;
    henry.ping(2).await.unwrap();
}

/// Re-sending `subscribe` every 100 ms (as is, with a stepped interval, or after an
/// unsubscribe) never gets a 1000 ms tier more than one update a second.
async fn resubscribing_never_beats_the_tier(demo: &Demo) {
    let mut c = demo.client(Some(&token("ivan", &["*"], "delayed"))).await;
    let started = Instant::now();
    let mut updates = Vec::new();
    for i in 0..30u32 {
        let request = match i % 3 {
            0 => json!({"op":"subscribe","symbols":["AAPL"],"interval_ms":0}),
            1 => json!({"op":"subscribe","symbols":["AAPL"],"interval_ms":1000 + i}),
            _ => json!({"op":"unsubscribe","symbols":["AAPL"]}),
        };
        c.send(request).await.unwrap();
        if i % 3 == 2 {
            c.send(json!({"op":"subscribe","symbols":["AAPL"]}))
                .await
                .unwrap();
        }
        let until = Instant::now() + Duration::from_millis(100);
        let msgs = c
            .collect(until.saturating_duration_since(Instant::now()))
            .await;
        for e in tick_events(&msgs.unwrap()) {
            if e.1 == "AAPL" {
                updates.push(e.0);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(
        (updates.len() as f64) <= secs + 1.0,
        "{} AAPL updates in {secs:.1} s at a 1000 ms tier",
        updates.len()
    );
}

/// One anonymous 3 KB MessagePack message of 3,000 nested arrays once aborted a
/// debug-built edge with a stack overflow: now it is a `bad_request`, and the session goes
/// on. Then a text frame that is not UTF-8 closes that connection with 1007.
async fn deep_nesting_and_bad_frames_cost_only_their_sender(demo: &Demo) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let mut c = demo.client(None).await;
    // {"op": "ping", "id": 1, "x": [[[...nil...]]]}
    let mut bytes = vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    bytes.extend([0xa2, b'i', b'd', 0x01, 0xa1, b'x']);
    bytes.extend(std::iter::repeat_n(0x91, 3000));
    bytes.push(0xc0);
    c.send_raw(Message::Binary(bytes.into())).await.unwrap();
    let v = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{v}"
    );
    c.ping(2).await.unwrap();
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    c.send_raw(Message::Frame(frame)).await.unwrap();
    let code = c.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!(code, Some(1007), "a text frame that is not UTF-8");
}

/// A client that subscribes to every option of the demo's chains, every tick, over a
/// socket with a 4 KiB receive buffer, and then reads nothing while it asks for the list
/// of its subscriptions (about 40 KB each time) at its rate limit. The edge cuts it; when
/// it reads again, it finds why at the end of what was sent: the `slow_consumer` notice,
/// then the 4008 close.
async fn a_client_that_stops_reading_finds_why_at_the_end(demo: &Demo) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let addr = demo.edge.addr;
    let closed = r#"tickmesh_edge_slow_consumer_total{action="closed"}"#;
    let closed_before = metric(addr, closed).await;
    let t = token("sloth", &["*"], "realtime");
    let mut ws = small_buffer_client(addr, Format::Json, Some(&t))
        .await
        .unwrap();
    let underlyings = ["AAPL", "SPY", "NVDA", "TSLA"];
    // Every listed expiry of each, as chain references (UNDERLYING:YYYY-MM-DD).
    let mut chains = Vec::new();
    let mut asker = demo.client(Some(&t)).await;
    for (id, u) in underlyings.iter().enumerate() {
        let replies = exchange(
            &mut asker,
            json!({"op":"chains","id":id,"underlying":u}),
            "chains",
        )
        .await;
        for e in replies.last().unwrap()["expiries"].as_array().unwrap() {
            chains.push(format!("{u}:{}", e["expiry"].as_str().unwrap()));
        }
    }
    drop(asker);
    let subscribe = json!({"op":"subscribe","id":0,"symbols":underlyings,"chains":chains,"mode":"full","interval_ms":0});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    // 100 requests a second (the tier's rate) for at most 30 s, until the edge has cut
    // the session.
    let started = Instant::now();
    let mut id = 1;
    while metric(addr, closed).await <= closed_before {
        assert!(
            started.elapsed() < 30 * SECOND,
            "a client that read nothing for 30 s was not cut"
        );
        for _ in 0..10 {
            // A send that cannot finish means the edge stopped reading this client too.
            let list = json!({"op":"list","id":id}).to_string();
            let send = ws.send(Message::Text(list.into()));
            let _ = tokio::time::timeout(Duration::from_millis(100), send).await;
            id += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reads again (well within the edge's close_linger_ms, 5 s in the demo), to the end.
    tokio::time::sleep(SECOND).await;
    let (last, close_code) = last_words(&mut ws, 15 * SECOND)
        .await
        .expect("the connection did not end after the edge cut it");
    let last = last.expect("no text at all");
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("slow_consumer")),
        "the last message before the close: {last}"
    );
    assert_eq!(close_code, Some(4008), "the close, after {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_cost_only_themselves() {
    let demo = Demo::start().await;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(bystander(demo.edge.addr, stopped));
    let demo = &demo;
    // Let the bystander settle on its snapshots.
    tokio::time::sleep(SECOND).await;
    let started = Instant::now();
    bad_tokens_are_refused_at_the_upgrade(demo).await;
    anonymous_sessions_get_the_demo_tier(demo).await;
    family_patterns_grant_exactly_their_family(demo).await;
    refresh_narrows_and_cannot_switch_users(demo).await;
    an_exp_beyond_any_clock_is_harmless(demo).await;
    resubscribing_never_beats_the_tier(demo).await;
    deep_nesting_and_bad_frames_cost_only_their_sender(demo).await;
    replies_are_bounded_by_the_request(demo).await;
    a_connection_flood_costs_only_its_address(demo).await;
    a_client_that_stops_reading_finds_why_at_the_end(demo).await;
    let elapsed = started.elapsed();
    stop.send(true).unwrap();
    let w = task.await.unwrap();
    assert!(w.faults.is_empty(), "the bystander saw {:?}", w.faults);
    for symbol in ["SPY", "AAPL"] {
        let n = w.ticks.get(symbol).copied().unwrap_or(0);
        assert!(
            n >= 5,
            "the bystander got {n} {symbol} ticks in {elapsed:?}"
        );
    }
}
