//! REST end to end, against a real nats-server, ingest and edge: each route answers with
//! the objects a WebSocket session gets for the same question (byte for byte where the
//! WebSocket has the same object), the same refusals and codes, the same token checks,
//! and a request rate per user and per address.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_edge::EdgeConfig;
use tickmesh_edge::auth::now_s as now;
use tickmesh_tests::*;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-only-hs256-secret-32-bytes-long!";
const SECOND: Duration = Duration::from_secs(1);
/// No test here takes longer, on a busy machine.
const DEADLINE: Duration = Duration::from_secs(90);

fn token(sub: &str, ent: &[&str]) -> String {
    let claims =
        json!({"sub": sub, "iat": now() - 1, "exp": now() + 600, "ent": ent, "tier": "pro"});
    hs256_token(SECRET, &claims)
}

/// An edge that needs a token (HS256 with [`SECRET`]), with `f`'s changes.
fn signed(f: impl FnOnce(&mut EdgeConfig)) -> impl FnOnce(&mut EdgeConfig) {
    |c: &mut EdgeConfig| {
        c.auth.hs256_secret = Some(SECRET.into());
        c.auth.anonymous = false;
        c.auth.leeway_s = 0;
        f(c);
    }
}

/// A nats-server, ingest simulating at `ticks_per_s`, and a ready edge (anonymous unless
/// `f` says otherwise).
struct Setup {
    nats: NatsServer,
    ingest: Option<Service>,
    edge: Service,
    addr: SocketAddr,
}

impl Setup {
    async fn start(ticks_per_s: u32, f: impl FnOnce(&mut EdgeConfig)) -> Setup {
        let nats = NatsServer::start().unwrap();
        let ingest = start_ingest(ingest_config(&nats.url(), ticks_per_s));
        let mut config = edge_config(&nats.url());
        f(&mut config);
        let (edge, addr) = start_edge(config).await.unwrap();
        Setup {
            nats,
            ingest: Some(ingest),
            edge,
            addr,
        }
    }

    /// Stops ingest: no value changes and no bar closes from then on.
    async fn freeze(&mut self) {
        if let Some(ingest) = self.ingest.take() {
            ingest.stop().await.unwrap();
        }
    }

    async fn stop(mut self) {
        self.freeze().await;
        self.edge.stop().await.unwrap();
    }
}

/// Runs a test's body within [`DEADLINE`].
async fn within_deadline(body: impl Future<Output = ()>) {
    tokio::time::timeout(DEADLINE, body)
        .await
        .expect("test deadline");
}

/// `GET path` with `token` in `Authorization: Bearer`.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpAnswer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    http_get_with(addr, path, &headers).await.unwrap()
}

/// A JSON WebSocket session opened by hand, whose text frames are read as sent.
struct RawSession {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawSession {
    async fn open(addr: SocketAddr, token: Option<&str>) -> RawSession {
        let req = stream_request(&format!("ws://{addr}/v1/stream"), Format::Json, token).unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        RawSession { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Text frames, as sent, until `done` says enough (within 10 s).
    async fn read_until(&mut self, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + 10 * SECOND;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no end in time; got {out:?}"))
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                let t = t.as_str().to_owned();
                let stop = done(&t);
                out.push(t);
                if stop {
                    return out;
                }
            }
        }
    }

    /// The `snapshot` messages of a subscribe of `symbols` in `mode`, as sent, by symbol.
    async fn snapshots(&mut self, symbols: &[&str], mode: &str) -> BTreeMap<String, String> {
        self.send(json!({"op": "subscribe", "id": 1, "symbols": symbols, "mode": mode}))
            .await;
        let mut got = BTreeMap::new();
        self.read_until(|t| {
            let v: Value = serde_json::from_str(t).unwrap();
            if v["type"] == "snapshot" {
                got.insert(v["symbol"].as_str().unwrap().to_owned(), t.to_owned());
            }
            got.len() == symbols.len()
        })
        .await;
        got
    }

    /// The replies to request `v` (with `"id": 1`) up to its reply of `kind`, as JSON.
    async fn ask(&mut self, v: Value, kind: &str) -> Vec<Value> {
        self.send(v).await;
        self.read_until(|t| {
            let v: Value = serde_json::from_str(t).unwrap();
            v["type"] == kind && v["id"] == 1
        })
        .await
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap())
        .filter(|v| v["id"] == 1)
        .collect()
    }
}

/// The OCC symbol of the first call of AAPL's first expiry.
async fn first_call(addr: SocketAddr) -> String {
    let chain = get(addr, "/v1/chains/AAPL", None).await.json().unwrap();
    let first = &chain["expiries"][0];
    let date = first["expiry"].as_str().unwrap().replace('-', "");
    let strike = first["strikes"][0].as_f64().unwrap();
    format!("AAPL{}C{:08}", &date[2..], (strike * 1000.0).round() as u64)
}

/// `v` without its `id`.
fn without_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("id");
    v
}

/// A snapshot's tick objects are the WebSocket's `snapshot` messages without `type`, byte
/// for byte, in the order asked: read from KV for symbols the edge does not carry, and
/// from the edge's own latest value for those it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_objects_are_the_websocket_snapshots_byte_for_byte() {
    within_deadline(async {
        let mut setup = Setup::start(1000, |_| {}).await;
        let addr = setup.addr;
        tokio::time::sleep(SECOND).await;
        // Values stand still from here on.
        setup.freeze().await;
        tokio::time::sleep(SECOND / 2).await;
        let option = first_call(addr).await;
        let symbols = ["SPY", "AAPL", "NVDA", option.as_str()];
        for mode in ["full", "ltp"] {
            let path = format!("/v1/snapshot?symbols={}&mode={mode}", symbols.join(","));
            // Not carried: from KV.
            let cold = get(addr, &path, None).await;
            assert_eq!(cold.status, 200, "{}", cold.body);
            assert_eq!(cold.header("content-type"), Some("application/json"));
            let mut session = RawSession::open(addr, None).await;
            let sent = session.snapshots(&symbols, mode).await;
            // Carried now (the session holds them): the edge's own value.
            let warm = get(addr, &path, None).await;
            let objects: Vec<String> = symbols
                .iter()
                .filter_map(|s| sent.get(*s))
                .map(|t| t.replacen(r#"{"type":"snapshot","#, "{", 1))
                .collect();
            assert!(objects.len() >= 3, "too few symbols had a value: {sent:?}");
            let want = format!(r#"{{"snapshots":[{}],"errors":[]}}"#, objects.join(","));
            assert_eq!(cold.body, want, "{mode}, read from KV");
            assert_eq!(warm.body, want, "{mode}, the edge's own value");
        }
        setup.stop().await;
    })
    .await;
}

/// Symbols a snapshot does not answer are in `errors`, each as the `error` a WebSocket
/// `subscribe` of the same symbols with the same token gets: `invalid_symbol`,
/// `not_entitled` (by the token's `ent`), `unknown_symbol` (by the reference data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_symbols_are_listed_as_a_subscribe_refuses_them() {
    within_deadline(async {
        let setup = Setup::start(1000, signed(|_| {})).await;
        let addr = setup.addr;
        tokio::time::sleep(SECOND).await;
        let alice = token("alice", &["AAPL*", "SPY", "ZZZZ"]);
        let asked = ["AAPL", "MSFT", "ZZZZ", "aapl", "SPY", "AAPL", "A.B"];
        let answer = get(
            addr,
            &format!("/v1/snapshot?symbols={}", asked.join(",")),
            Some(&alice),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json().unwrap();
        let answered: Vec<&str> = body["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["symbol"].as_str().unwrap())
            .collect();
        assert_eq!(answered, ["AAPL", "SPY"], "in the order asked, each once");
        let mut session = RawSession::open(addr, Some(&alice)).await;
        let replies = session
            .ask(
                json!({"op": "subscribe", "id": 1, "symbols": asked}),
                "subscribed",
            )
            .await;
        let ws_errors: Vec<Value> = replies
            .into_iter()
            .filter(|v| v["type"] == "error")
            .map(without_id)
            .collect();
        let codes: Vec<(&str, &str)> = ws_errors
            .iter()
            .map(|e| (e["code"].as_str().unwrap(), e["symbol"].as_str().unwrap()))
            .collect();
        assert_eq!(
            codes,
            [
                ("invalid_symbol", "aapl"),
                ("invalid_symbol", "A.B"),
                ("not_entitled", "MSFT"),
                ("unknown_symbol", "ZZZZ"),
            ]
        );
        assert_eq!(body["errors"], Value::Array(ws_errors));
        setup.stop().await;
    })
    .await;
}

/// Before the edge has read `md_ref`, every route answers 503 `unavailable` with
/// `retry_ms` (and `Retry-After`), as a `subscribe` or `chains` gets `unavailable`; once it
/// has, the same requests are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_reference_data_every_route_is_unavailable_with_retry_ms() {
    within_deadline(async {
        let nats = NatsServer::start().unwrap();
        let (edge, addr) = spawn_edge(edge_config(&nats.url())).unwrap();
        let started = Instant::now();
        while http_get(addr, "/healthz").await.map(|(s, _)| s).ok() != Some(200) {
            assert!(started.elapsed() < 10 * SECOND, "the edge never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let paths = [
            "/v1/snapshot?symbols=AAPL",
            "/v1/chains/AAPL",
            "/v1/bars/AAPL?tf=1m",
        ];
        for path in paths {
            let answer = get(addr, path, None).await;
            assert_eq!(answer.status, 503, "{path}: {}", answer.body);
            assert_eq!(answer.header("retry-after"), Some("2"), "{path}");
            let body = answer.json().unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["code"], "unavailable", "{path}");
            assert_eq!(body["retry_ms"], 2000, "{path}");
        }
        let mut c = Client::connect(addr, Format::Json).await.unwrap();
        c.send(json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"]}))
            .await
            .unwrap();
        let ws = without_id(c.next_of("error", 5 * SECOND).await.unwrap());
        let rest = get(addr, paths[0], None).await.json().unwrap();
        assert_eq!(rest, ws, "the WebSocket's refusal");
        // Reference data listing AAPL, and no value of it anywhere.
        create_refdata(&nats.url(), &["AAPL"]).await.unwrap();
        let started = Instant::now();
        let answer = loop {
            let answer = get(addr, paths[0], None).await;
            if answer.status != 503 || started.elapsed() > 10 * SECOND {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.json().unwrap(),
            json!({"snapshots": [], "errors": []})
        );
        edge.stop().await.unwrap();
    })
    .await;
}

/// `GET /v1/chains/{underlying}` is the WebSocket's `chains` reply, byte for byte but for
/// `id`; an underlying without options is the same `unknown_symbol` with HTTP 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_the_websocket_chains_reply() {
    within_deadline(async {
        let setup = Setup::start(100, |_| {}).await;
        let addr = setup.addr;
        let mut session = RawSession::open(addr, None).await;
        session
            .send(json!({"op": "chains", "id": 1, "underlying": "AAPL"}))
            .await;
        let reply = session
            .read_until(|t| t.contains(r#""type":"chains""#))
            .await;
        let ws = reply.last().unwrap().replacen(r#","id":1"#, "", 1);
        let answer = get(addr, "/v1/chains/AAPL", None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, ws);
        let expiries = answer.json().unwrap()["expiries"].as_array().unwrap().len();
        assert_eq!(expiries, 2, "{}", answer.body);

        let refused = session
            .ask(
                json!({"op": "chains", "id": 1, "underlying": "MSFT"}),
                "error",
            )
            .await;
        let answer = get(addr, "/v1/chains/MSFT", None).await;
        assert_eq!(answer.status, 404, "{}", answer.body);
        assert_eq!(answer.json().unwrap(), without_id(refused[0].clone()));
        setup.stop().await;
    })
    .await;
}

/// `GET /v1/bars/{symbol}` gives the completed bars a `bars` subscription's history
/// gives (its bar in progress left out): read from the bars stream while the edge does
/// not follow the symbol's bars, and from its own feed once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_are_the_completed_bars_of_a_bars_subscription_history() {
    within_deadline(async {
        let mut setup = Setup::start(1000, |_| {}).await;
        let addr = setup.addr;
        tokio::time::sleep(4 * SECOND).await;
        // No bar closes from here on.
        setup.freeze().await;
        tokio::time::sleep(SECOND / 2).await;
        let cold = get(addr, "/v1/bars/AAPL?tf=1s&n=3", None).await;
        assert_eq!(cold.status, 200, "{}", cold.body);
        let mut session = RawSession::open(addr, None).await;
        let history = session
            .read_until_history(json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"],
                "stream": "bars", "tf": "1s", "history": 3}))
            .await;
        let warm = get(addr, "/v1/bars/AAPL?tf=1s&n=3", None).await;
        let completed: Vec<Value> = history["bars"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["final"] == true)
            .cloned()
            .collect();
        assert_eq!(completed.len(), 3, "{history}");
        let want = json!({"type": "bars", "tf": "1s", "bars": completed});
        assert_eq!(cold.json().unwrap(), want, "read from the stream");
        assert_eq!(warm.json().unwrap(), want, "from the edge's feed");
        // Bad input gets 400 with the reason; an unlisted symbol 404.
        for (path, status, code) in [
            ("/v1/bars/AAPL", 400, "bad_request"),
            ("/v1/bars/AAPL?tf=1w", 400, "bad_request"),
            ("/v1/bars/AAPL?tf=1s&n=1001", 400, "bad_request"),
            ("/v1/bars/aapl?tf=1s", 400, "invalid_symbol"),
            ("/v1/bars/ZZZZ?tf=1s", 404, "unknown_symbol"),
        ] {
            let answer = get(addr, path, None).await;
            assert_eq!(answer.status, status, "{path}: {}", answer.body);
            assert_eq!(answer.json().unwrap()["code"], code, "{path}");
        }
        setup.stop().await;
    })
    .await;
}

impl RawSession {
    /// Subscribes with `v` and returns its `bars` history message.
    async fn read_until_history(&mut self, v: Value) -> Value {
        self.send(v).await;
        let got = self
            .read_until(|t| t.contains(r#""type":"bars""#) && t.contains(r#""snapshot":true"#))
            .await;
        serde_json::from_str(got.last().unwrap()).unwrap()
    }
}

/// With anonymous access off, a request without a token gets 401 with the reason as an
/// `error`, as the upgrade does; so do a badly signed, an expired and a revoked token;
/// `not_entitled` is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_as_at_the_upgrade() {
    within_deadline(async {
        let setup = Setup::start(100, signed(|_| {})).await;
        let addr = setup.addr;
        let path = "/v1/bars/AAPL?tf=1m";
        let refused = |answer: HttpAnswer, code: &str, message: &str| {
            assert_eq!(answer.status, 401, "{message}: {}", answer.body);
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
            let body = answer.json().unwrap();
            assert_eq!(
                (
                    body["type"].as_str(),
                    body["code"].as_str(),
                    body["message"].as_str()
                ),
                (Some("error"), Some(code), Some(message))
            );
        };
        let url = format!("ws://{addr}/v1/stream");
        assert_eq!(upgrade_status(&url, None).await.0, 401);
        let forged = hs256_token(
            "another-secret-of-at-least-32-bytes!!",
            &json!({"sub": "alice", "exp": now() + 600, "ent": ["*"]}),
        );
        let expired = hs256_token(
            SECRET,
            &json!({"sub": "alice", "iat": now() - 20, "exp": now() - 10, "ent": ["*"]}),
        );
        for (token, code, message) in [
            (None, "unauthorized", "a token is required"),
            (Some(forged), "unauthorized", "bad signature"),
            (Some(expired), "token_expired", "token expired"),
        ] {
            refused(get(addr, path, token.as_deref()).await, code, message);
        }
        let in_url = get(
            addr,
            &format!("{path}&token={}", token("alice", &["*"])),
            None,
        )
        .await;
        assert_eq!(
            in_url.status, 401,
            "a token in the URL is not read: {}",
            in_url.body
        );

        let mallory = token("mallory", &["*"]);
        assert_eq!(get(addr, path, Some(&mallory)).await.status, 200);
        let narrow = token("alice", &["SPY"]);
        let answer = get(addr, path, Some(&narrow)).await;
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert_eq!(answer.json().unwrap()["code"], "not_entitled");
        // A revocation of the user refuses its token from then on.
        let client = async_nats::connect(setup.nats.url()).await.unwrap();
        client
            .publish("ctl.revoke", json!({"sub": "mallory"}).to_string().into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let started = Instant::now();
        let answer = loop {
            let answer = get(addr, path, Some(&mallory)).await;
            if answer.status != 200 || started.elapsed() > 5 * SECOND {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        refused(answer, "unauthorized", "token revoked");
        assert_eq!(upgrade_status(&url, Some(&mallory)).await.0, 401);
        setup.stop().await;
    })
    .await;
}

/// Past a user's rate the user gets 429 with `Retry-After` while another user of the same
/// address goes on; past the address's rate, everyone there does; a second later they are
/// served again. The refusals are counted by route and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_rate_a_sender_gets_429_with_retry_after() {
    within_deadline(async {
        let rates = |c: &mut EdgeConfig| {
            c.limits.rest_requests_per_s_per_user = 2;
            c.limits.rest_requests_per_s_per_ip = 5;
        };
        let setup = Setup::start(100, signed(rates)).await;
        let addr = setup.addr;
        let (alice, bob, carol) = (
            token("alice", &["*"]),
            token("bob", &["*"]),
            token("carol", &["*"]),
        );
        let path = "/v1/snapshot?symbols=AAPL";
        let status = |t: &str| {
            let t = t.to_owned();
            async move { get(addr, path, Some(&t)).await }
        };
        // Bursts of twice the rate: alice's first four pass, the fifth does not.
        for _ in 0..4 {
            assert_eq!(status(&alice).await.status, 200);
        }
        let over = status(&alice).await;
        assert_eq!(over.status, 429, "{}", over.body);
        let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        let body = over.json().unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert!(
            body["message"].as_str().unwrap().contains("this user"),
            "{body}"
        );
        assert!(body["retry_ms"].as_u64().unwrap() > 0);
        // Bob, at the same address, is not held back by alice's rate...
        for _ in 0..4 {
            assert_eq!(status(&bob).await.status, 200);
        }
        // ... but the address's burst of ten is spent now (alice's refused request took
        // its address's token too): carol gets one, then 429 for this address.
        assert_eq!(status(&carol).await.status, 200);
        let over = status(&carol).await;
        assert_eq!(over.status, 429, "{}", over.body);
        let message = over.json().unwrap()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("this address"), "{message}");
        tokio::time::sleep(SECOND + SECOND / 10).await;
        assert_eq!(status(&carol).await.status, 200, "served again");
        let counted = metric(
            addr,
            r#"tickmesh_edge_rest_requests_total{route="snapshot",status="429"}"#,
        )
        .await;
        assert_eq!(counted, 2.0);
        setup.stop().await;
    })
    .await;
}

/// A symbol that had no value when a snapshot first asked for it gets one: the next
/// snapshot a second or so later has it. "No value" is cached no longer than a value is
/// (`snapshot.negative_ttl_ms` = `snapshot.cache_ttl_ms`, 1 s); it was 30 s, which left
/// a poller without the symbol's first value for half a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbols_first_value_is_in_a_snapshot_within_seconds_of_a_no_value_answer() {
    use tickmesh_core::Tick;
    use tickmesh_core::codec::encode_wire;
    within_deadline(async {
        let nats = NatsServer::start().unwrap();
        create_refdata(&nats.url(), &["S1"]).await.unwrap();
        let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
        let path = "/v1/snapshot?symbols=S1";
        let before = get(addr, path, None).await;
        assert_eq!(before.status, 200, "{}", before.body);
        assert_eq!(before.body, r#"{"snapshots":[],"errors":[]}"#);

        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let last = js.get_key_value("md_last").await.unwrap();
        let tick = Tick {
            symbol: "S1".into(),
            epoch: 1,
            seq: 1,
            ts: 1,
            last: Some(10.0),
            ..Tick::default()
        };
        last.put("S1", encode_wire(&tick).into()).await.unwrap();
        let put_at = Instant::now();
        loop {
            let now = get(addr, path, None).await;
            if now.status == 200 && now.body.contains(r#""symbol":"S1""#) {
                break;
            }
            assert!(
                put_at.elapsed() < 5 * SECOND,
                "no value 5 s after the first was written: {} {}",
                now.status,
                now.body
            );
            tokio::time::sleep(SECOND / 4).await;
        }
        edge.stop().await.unwrap();
    })
    .await;
}
