//! Authentication, entitlements, refresh, revocation, limits and TLS, end to end. Every
//! refusal also checks that another session carries on.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_edge::EdgeConfig;
use tickmesh_edge::auth::now_s as now;
use tickmesh_tests::*;

const SECRET: &str = "a-test-only-hs256-secret-32-bytes-long!";
const SECOND: Duration = Duration::from_secs(1);

fn mint(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, ent: &[&str], tier: &str) -> Value {
    json!({"sub": sub, "iat": now() - 1, "exp": now() + 600, "ent": ent, "tier": tier})
}

/// How `c`'s session ends within 5 s: its close code, and the code of the last `error`
/// before it.
async fn closed_with_error(c: &mut Client) -> (Option<u16>, Option<String>) {
    let mut told = None;
    let code = c
        .closed_within(5 * SECOND, |v| {
            if v["type"] == "error" {
                told = v["code"].as_str().map(str::to_owned);
            }
        })
        .await
        .unwrap();
    (code, told)
}

/// A JSON session of `sub` on `addr` with a token for `ent` and `tier`.
async fn signed_in(addr: SocketAddr, sub: &str, ent: &[&str], tier: &str) -> Client {
    Client::connect_with(addr, Format::Json, Some(&mint(claims(sub, ent, tier))))
        .await
        .unwrap()
}

struct Setup {
    nats: NatsServer,
    ingest: Service,
    edge: Service,
    addr: SocketAddr,
}

async fn setup(f: impl FnOnce(&mut EdgeConfig)) -> Setup {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let mut cfg = edge_config(&nats.url());
    cfg.auth.hs256_secret = Some(SECRET.into());
    cfg.auth.anonymous = false;
    cfg.auth.leeway_s = 0;
    f(&mut cfg);
    let (edge, addr) = start_edge(cfg).await.unwrap();
    Setup {
        nats,
        ingest,
        edge,
        addr,
    }
}

impl Setup {
    fn url(&self) -> String {
        format!("ws://{}/v1/stream", self.addr)
    }

    /// A session that keeps receiving AAPL every tick: the bystander.
    async fn bystander(&self) -> Client {
        let t = mint(claims("bystander", &["*"], "realtime"));
        self.on_aapl(&t, 0).await
    }

    /// A JSON session with `token`, subscribed to AAPL at `interval_ms`.
    async fn on_aapl(&self, token: &str, interval_ms: u32) -> Client {
        let mut c = Client::connect_with(self.addr, Format::Json, Some(token))
            .await
            .unwrap();
        c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":interval_ms}))
            .await
            .unwrap();
        c.next_of("subscribed", 5 * SECOND).await.unwrap();
        c
    }

    async fn stop(self) {
        self.ingest.stop().await.unwrap();
        self.edge.stop().await.unwrap();
    }
}

async fn still_live(c: &mut Client) {
    let ticks = tick_events(&c.collect(Duration::from_millis(600)).await.unwrap());
    assert!(
        ticks.iter().filter(|e| !e.3).count() > 20,
        "the bystander stopped getting ticks"
    );
    c.ping(99).await.unwrap();
}

async fn close_code(c: &mut Client) -> Option<u16> {
    c.closed_within(5 * SECOND, |_| {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade_with_401_and_a_reason() {
    let s = setup(|c| {
        c.auth.audience = Some("tickmesh".into());
        c.auth.issuer = Some("https://auth.test".into());
        c.auth.max_token_lifetime_s = Some(3600);
    })
    .await;
    let with_aud_iss = |mut c: Value| {
        c["aud"] = json!("tickmesh");
        c["iss"] = json!("https://auth.test");
        c
    };
    let bystander = mint(with_aud_iss(claims("bystander", &["*"], "realtime")));
    let mut other = s.on_aapl(&bystander, 0).await;
    let good = || with_aud_iss(claims("alice", &["*"], "pro"));
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let with = |k: &str, v: Value| {
        let mut c = good();
        c[k] = v;
        mint(c)
    };
    let without = |k: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        mint(c)
    };
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        ("missing", None, "a token is required", "missing"),
        (
            "alg none",
            Some(format!("{}.{}.", b64(json!({"alg":"none"})), b64(good()))),
            "algorithm none",
            "algorithm",
        ),
        (
            "HS384",
            Some(
                encode(
                    &Header::new(Algorithm::HS384),
                    &good(),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
            ),
            "algorithm HS384",
            "algorithm",
        ),
        (
            "forged",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &good(),
                    &EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more"),
                )
                .unwrap(),
            ),
            "bad signature",
            "bad_signature",
        ),
        (
            "expired",
            Some(with("exp", json!(now() - 5))),
            "token expired",
            "expired",
        ),
        (
            "not yet valid",
            Some(with("nbf", json!(now() + 600))),
            "not yet valid",
            "not_yet_valid",
        ),
        (
            "audience",
            Some(with("aud", json!("someone-else"))),
            "wrong audience",
            "audience",
        ),
        (
            "issuer",
            Some(with("iss", json!("https://evil.test"))),
            "wrong issuer",
            "issuer",
        ),
        ("garbage", Some("garbage".into()), "malformed", "malformed"),
        (
            "unknown tier",
            Some(with("tier", json!("platinum"))),
            "unknown tier",
            "unknown_tier",
        ),
        (
            "no sub",
            Some(without("sub")),
            "missing claim sub",
            "missing_claim",
        ),
        (
            "no exp",
            Some(without("exp")),
            "missing claim exp",
            "missing_claim",
        ),
        (
            "no audience",
            Some(without("aud")),
            "wrong audience",
            "audience",
        ),
        ("no issuer", Some(without("iss")), "wrong issuer", "issuer"),
        (
            "no iat",
            Some(without("iat")),
            "missing claim iat",
            "missing_claim",
        ),
        (
            "too long",
            Some(with("exp", json!(now() + 7200))),
            "token lifetime over 3600 s",
            "lifetime",
        ),
        (
            "exp 10^19",
            Some(with("exp", json!(10_000_000_000_000_000_000u64))),
            "token lifetime over 3600 s",
            "lifetime",
        ),
        (
            "issued in the future",
            Some(with("iat", json!(now() + 600))),
            "token issued in the future",
            "issued_in_future",
        ),
    ];
    for (name, token, reason, _) in &cases {
        let (status, body) = upgrade_status(&s.url(), token.as_deref()).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert!(
            body.contains(reason),
            "{name}: body {body:?} lacks {reason:?}"
        );
    }
    // The token as a query parameter works like the header.
    let (status, _) = upgrade_status(&format!("{}?token={}", s.url(), mint(good())), None).await;
    assert_eq!(status, 101);
    let (_, metrics) = http_get(s.addr, "/metrics").await.unwrap();
    // Each refusal counted under its reason's label.
    let mut expected = std::collections::BTreeMap::<&str, usize>::new();
    for (_, _, _, label) in &cases {
        *expected.entry(label).or_default() += 1;
    }
    for (label, n) in expected {
        let line = format!("tickmesh_edge_auth_failures_total{{reason=\"{label}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(&mint(good())[..20]),
        "a token reached the metrics"
    );
    still_live(&mut other).await;
    s.stop().await;
}

/// The first call of `underlying`'s nearest expiry, asked with `chains` (retried while
/// the edge is still loading its reference data).
async fn first_option(client: &mut Client, underlying: &str) -> String {
    for attempt in 0..40 {
        client
            .send(json!({"op":"chains","id":900 + attempt,"underlying":underlying}))
            .await
            .unwrap();
        let v = client.next_non_hb(5 * SECOND).await.unwrap();
        if v["type"] == "chains" {
            let e = &v["expiries"][0];
            let expiry = tickmesh_core::date::Date::parse(e["expiry"].as_str().unwrap()).unwrap();
            let strike = e["strikes"][0].as_f64().unwrap();
            let o = tickmesh_core::occ::OptionSymbol::new(
                underlying,
                expiry,
                tickmesh_core::tick::Right::Call,
                strike,
            )
            .unwrap();
            return o.to_symbol().to_string();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no chain for {underlying} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_and_tiers_decide_symbols_and_intervals() {
    let s = setup(|c| c.auth.default_tier = "realtime".into()).await;
    // A token that names no tier gets the default tier's limits.
    let mut untiered = claims("tom", &["*"], "-");
    untiered.as_object_mut().unwrap().remove("tier");
    let tom = Client::connect_with(s.addr, Format::Json, Some(&mint(untiered)))
        .await
        .unwrap();
    assert_eq!(
        tom.welcome["limits"],
        json!({"max_symbols": 2000, "max_msgs_per_s": 100, "min_interval_ms": 0, "delay_ms": 900_000})
    );
    drop(tom);
    let mut c = claims("carol", &["MSFT", "AAPL*"], "delayed");
    c["max_symbols"] = json!(3);
    let mut carol = Client::connect_with(s.addr, Format::Json, Some(&mint(c)))
        .await
        .unwrap();
    assert_eq!(
        carol.welcome["limits"],
        json!({"max_symbols": 3, "max_msgs_per_s": 10, "min_interval_ms": 1000, "delay_ms": 900_000})
    );
    // Two AAPL options: in the AAPL* family, by the reference data.
    let call = first_option(&mut carol, "AAPL").await;
    let put = format!("{}P{}", &call[..call.len() - 9], &call[call.len() - 8..]);
    carol
        .send(json!({"op":"subscribe","id":5,"symbols":["MSFT","SPY","AAPL","AAPLX",call,put],"interval_ms":0}))
        .await
        .unwrap();
    let mut errors = Vec::new();
    let sub = loop {
        let v = carol.next_non_hb(5 * SECOND).await.unwrap();
        if v["type"] == "subscribed" {
            break v;
        }
        errors.push((
            v["code"].as_str().unwrap().to_string(),
            v["symbol"].as_str().unwrap().to_string(),
        ));
    };
    assert_eq!(sub["symbols"], json!(["MSFT", "AAPL", call]));
    assert_eq!(
        sub["interval_ms"], 1000,
        "the tier's minimum interval applies"
    );
    // AAPL* is AAPL and its options, never another ticker that starts with AAPL.
    let refused = |code: &str, symbol: &str| (code.to_string(), symbol.to_string());
    assert_eq!(
        errors,
        [
            refused("not_entitled", "SPY"),
            refused("not_entitled", "AAPLX"),
            refused("too_many_symbols", &put),
        ]
    );
    let ticks = tick_events(&carol.collect(Duration::from_millis(2500)).await.unwrap());
    assert!(
        ticks
            .iter()
            .all(|e| e.1 == "AAPL" || e.1 == "MSFT" || e.1 == call)
    );
    let aapl_live = ticks.iter().filter(|e| e.1 == "AAPL" && !e.3).count();
    assert!(
        (1..=3).contains(&aapl_live),
        "{aapl_live} AAPL updates in 2.5 s at 1000 ms"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refresh_replaces_claims_in_place() {
    let s = setup(|_| {}).await;
    let t1 = mint(claims("dave", &["AAPL", "SPY"], "delayed"));
    let mut dave = Client::connect_with(s.addr, Format::Json, Some(&t1))
        .await
        .unwrap();
    dave.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","SPY"],"interval_ms":0}))
        .await
        .unwrap();
    assert_eq!(
        dave.next_of("subscribed", 5 * SECOND).await.unwrap()["interval_ms"],
        1000
    );
    let t2 = mint(claims("dave", &["AAPL"], "realtime"));
    dave.send(json!({"op":"auth","id":2,"token":t2}))
        .await
        .unwrap();
    let mut lost = Vec::new();
    let deadline = std::time::Instant::now() + 5 * SECOND;
    let authed = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = dave.next_non_hb(left).await.expect("no authed in time");
        match v["type"].as_str() {
            Some("authed") => break v,
            Some("error") => lost.push(v),
            _ => {}
        }
    };
    assert_eq!(authed["id"], 2);
    assert!(authed["exp"].as_u64().unwrap() > now());
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0]["code"].as_str(), lost[0]["symbol"].as_str()),
        (Some("not_entitled"), Some("SPY"))
    );
    dave.send(json!({"op":"list","id":3})).await.unwrap();
    let list = dave.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(
        list["subscriptions"],
        json!([{"symbol":"AAPL","mode":"quote","interval_ms":0}]),
        "interval loosened to what was asked"
    );
    let ticks = tick_events(&dave.collect(SECOND).await.unwrap());
    assert!(
        ticks.iter().filter(|e| e.1 == "AAPL").count() > 20,
        "every tick after the refresh"
    );
    assert!(ticks.iter().all(|e| e.1 != "SPY"));
    // A token for someone else is refused and closes with 4401.
    dave.send(json!({"op":"auth","id":4,"token":mint(claims("mallory", &["*"], "realtime"))}))
        .await
        .unwrap();
    let v = dave.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["code"].as_str()),
        (Some(4), Some("unauthorized"))
    );
    assert_eq!(close_code(&mut dave).await, Some(4401));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_token_expired_and_4401() {
    let s = setup(|_| {}).await;
    let mut other = s.bystander().await;
    let mut c = claims("erin", &["*"], "pro");
    c["exp"] = json!(now() + 2);
    let mut erin = Client::connect_with(s.addr, Format::Json, Some(&mint(c)))
        .await
        .unwrap();
    let v = erin.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(v["code"], "token_expired");
    assert_eq!(close_code(&mut erin).await, Some(4401));
    still_live(&mut other).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_ctl_revoke_closes_the_users_sessions_with_4403() {
    let s = setup(|_| {}).await;
    let mut other = s.bystander().await;
    let frank_token = mint(claims("frank", &["*"], "pro"));
    let mut frank1 = Client::connect_with(s.addr, Format::Json, Some(&frank_token))
        .await
        .unwrap();
    let mut frank2 = Client::connect_with(s.addr, Format::MsgPack, Some(&frank_token))
        .await
        .unwrap();
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    let sent = std::time::Instant::now();
    nats.publish("ctl.revoke", r#"{"sub":"frank"}"#.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    assert_eq!(close_code(&mut frank1).await, Some(4403));
    assert_eq!(close_code(&mut frank2).await, Some(4403));
    assert!(
        sent.elapsed() < SECOND,
        "revocation took {:?}",
        sent.elapsed()
    );
    let (status, body) = upgrade_status(&s.url(), Some(&frank_token)).await;
    assert_eq!((status, body.as_str()), (401, "token revoked"));
    // A malformed revocation is ignored.
    nats.publish("ctl.revoke", "{{nonsense".into())
        .await
        .unwrap();
    still_live(&mut other).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_floods_get_rate_limited_then_4029() {
    let s = setup(|c| {
        c.auth.tiers.get_mut("delayed").unwrap().max_msgs_per_s = 5;
        c.limits.rate_limit_strikes = 10;
    })
    .await;
    let mut other = s.bystander().await;
    let mut g = signed_in(s.addr, "gina", &["*"], "delayed").await;
    for i in 0..60 {
        if g.send(json!({"op":"ping","id":i})).await.is_err() {
            break;
        }
    }
    let mut limited = 0;
    let code = g
        .closed_within(5 * SECOND, |v| {
            limited += usize::from(v["code"] == "rate_limited")
        })
        .await
        .unwrap();
    assert!(limited >= 1, "no rate_limited before the close");
    assert_eq!(code, Some(4029));
    still_live(&mut other).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_per_user_and_per_ip() {
    let s = setup(|c| {
        c.limits.max_sessions_per_user = 2;
        c.limits.max_connections_per_ip = 4;
    })
    .await;
    let t = mint(claims("hank", &["*"], "pro"));
    let _a = Client::connect_with(s.addr, Format::Json, Some(&t))
        .await
        .unwrap();
    let b = Client::connect_with(s.addr, Format::Json, Some(&t))
        .await
        .unwrap();
    let (status, body) = upgrade_status(&s.url(), Some(&t)).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many sessions for this user")
    );
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _b2 = Client::connect_with(s.addr, Format::Json, Some(&t))
        .await
        .unwrap();
    let _c = signed_in(s.addr, "ivy", &["*"], "pro").await;
    let _d = signed_in(s.addr, "jay", &["*"], "pro").await;
    let (status, _) = upgrade_status(&s.url(), Some(&mint(claims("kim", &["*"], "pro")))).await;
    assert_eq!(status, 429, "fifth connection from one address");
    s.stop().await;
}

/// Writes a raw HTTP request; the status of the answer, or None if none came in `within`.
async fn http_status(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    within: Duration,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.ok()?;
    let mut head = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head);
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_in_flight_are_capped_and_huge_request_heads_refused() {
    let s = setup(|c| c.limits.max_handshakes = 2).await;
    let mut bystander = s.bystander().await;
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n";

    // Two connections that never send their request hold both handshake slots.
    let idle_a = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let _idle_b = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Time for the edge to accept both and give them their slots.
    tokio::time::sleep(SECOND).await;
    let mut waiting = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(
        http_status(&mut waiting, healthz, Duration::from_millis(800)).await,
        None,
        "a third handshake was served while two were in flight"
    );
    // The sessions already open are not held up.
    still_live(&mut bystander).await;

    // One slot comes free: the waiting connection gets its turn and its answer.
    drop(idle_a);
    assert_eq!(
        http_status(&mut waiting, b"", Duration::from_secs(5)).await,
        Some(200)
    );
    // Its slot went back with its first request: this keep-alive connection holds none.
    let mut next = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(
        http_status(&mut next, healthz, Duration::from_secs(5)).await,
        Some(200)
    );

    // A request head over 16 KiB gets 431, and the edge carries on.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut huge = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(
        http_status(&mut huge, big.as_bytes(), Duration::from_secs(5)).await,
        Some(431)
    );
    let t = mint(claims("lena", &["*"], "pro"));
    let long_query = format!("{}?token={t}&pad={}", s.url(), "p".repeat(20 * 1024));
    assert_eq!(upgrade_status(&long_query, None).await.0, 431);
    still_live(&mut bystander).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_and_one_waiting_behind_it_are_dropped_at_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let s = setup(|c| {
        c.limits.max_handshakes = 1;
        c.limits.handshake_timeout_ms = 1500;
    })
    .await;
    // The silent connection holds the only slot until its timeout; the one behind it waits,
    // and its 1.5 s run from its own accept, not from when it gets the slot.
    let mut silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let connected = std::time::Instant::now();
    for (name, conn) in [("silent", &mut silent), ("waiting", &mut waiting)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(10 * SECOND, conn.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the {name} connection was not closed: {read:?}"
        );
    }
    let took = connected.elapsed();
    assert!(
        took < Duration::from_millis(2400),
        "the waiting connection was closed {took:?} after it connected; the timeout is 1.5 s"
    );
    // The slot came back: the next request is answered.
    let mut next = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n";
    assert_eq!(http_status(&mut next, healthz, 5 * SECOND).await, Some(200));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tickmesh_core::dev_pki::generate("TickMesh test").unwrap();
    let (cert_file, key_file) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert_file, &pki.cert_pem).unwrap();
    std::fs::write(&key_file, &pki.key_pem).unwrap();
    let s = setup(|c| {
        c.auth.anonymous = true;
        c.tls = Some(tickmesh_edge::config::TlsConfig {
            cert_file,
            key_file,
            reload_ms: 1000,
        });
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let req = stream_request(
        &format!("wss://localhost:{}/v1/stream", s.addr.port()),
        Format::Json,
        None,
    )
    .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    let mut ws = ws;
    use futures_util::{SinkExt, StreamExt};
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("\"welcome\""));
    let subscribe = || {
        tokio_tungstenite::tungstenite::Message::Text(
            r#"{"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}"#.into(),
        )
    };
    ws.send(subscribe()).await.unwrap();
    let mut got_tick = false;
    for _ in 0..50 {
        let m = ws.next().await.unwrap().unwrap();
        let text = m.to_text().unwrap();
        if text.contains("\"ticks\"") {
            got_tick = true;
            break;
        }
        // Not ready is not known over TLS here: until the edge has read the reference
        // data it answers `unavailable`; ask again.
        if text.contains("\"unavailable\"") {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ws.send(subscribe()).await.unwrap();
        }
    }
    assert!(got_tick, "no ticks over wss");
    // Plain ws to the TLS port does not upgrade.
    let (status, _) = upgrade_status(&s.url(), None).await;
    assert_ne!(status, 101);
    s.stop().await;
}

/// A log sink for this test process: JSON lines, as `--log-json` writes them.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_session_and_user_and_never_a_token() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("tickmesh_edge=debug"))
        .with_writer(move || sink.clone())
        .init();
    let s = setup(|_| {}).await;
    let first = mint(claims("alice", &["*"], "realtime"));
    let mut c = s.on_aapl(&first, 250).await;
    let refreshed = mint(claims("alice", &["AAPL"], "realtime"));
    c.send(json!({"op":"auth","id":2,"token":refreshed}))
        .await
        .unwrap();
    c.next_of("authed", 5 * SECOND).await.unwrap();
    let forged = format!("{}x", mint(claims("mallory", &["*"], "realtime")));
    assert!(
        Client::connect_with(s.addr, Format::Json, Some(&forged))
            .await
            .is_err()
    );
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let opened = lines
        .iter()
        .find(|l| l["fields"]["message"] == "session opened")
        .unwrap_or_else(|| panic!("no `session opened` line in:\n{text}"));
    assert_eq!(opened["fields"]["user"], "alice", "{opened}");
    assert!(opened["fields"]["session"].is_u64(), "{opened}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "session closed" && l["fields"]["user"] == "alice"),
        "no `session closed` line for alice in:\n{text}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["reason"].is_string()
            && l["fields"]["message"] == "upgrade refused: bad token"),
        "the refused upgrade is not logged:\n{text}"
    );
    for (what, token) in [
        ("first", &first),
        ("refreshed", &refreshed),
        ("forged", &forged),
    ] {
        // Any part of a token that identifies it: its signature.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "the {what} token's signature is in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_in_10_pow_19_s_is_served_and_leaves_nothing_behind() {
    let s = setup(|_| {}).await;
    let mut other = s.bystander().await;
    for (i, exp) in [10_000_000_000_000_000_000u64, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let mut c = claims("zed", &["*"], "realtime");
        c["exp"] = json!(exp);
        let token = mint(c);
        let mut zed = s.on_aapl(&token, 0).await;
        let ticks = tick_events(&zed.collect(Duration::from_millis(600)).await.unwrap());
        assert!(ticks.len() > 5, "exp {exp}: {} ticks", ticks.len());
        // A refresh to the same far-off token is answered too.
        zed.send(json!({"op":"auth","id":2,"token":token}))
            .await
            .unwrap();
        let authed = zed.next_of("authed", 5 * SECOND).await.unwrap();
        assert_eq!(authed["exp"].as_u64(), Some(exp), "{i}");
        drop(zed);
    }
    // Both sessions are gone from the gauges: only the bystander is left.
    let deadline = std::time::Instant::now() + 5 * SECOND;
    loop {
        let (_, metrics) = http_get(s.addr, "/metrics").await.unwrap();
        let line = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_string()
        };
        let (sessions, subs) = (
            line("tickmesh_edge_sessions{encoding=\"json\"}"),
            line("tickmesh_edge_subscriptions "),
        );
        if sessions.ends_with(" 1") && subs.ends_with(" 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions and subscriptions left behind: {sessions:?} {subs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_live(&mut other).await;
    s.stop().await;
}

/// Sends `auth` with `token`; the replies up to `authed` or the first `error` that is not
/// about a symbol.
async fn refresh(c: &mut Client, id: i64, token: &str) -> (Vec<Value>, Value) {
    c.send(json!({"op":"auth","id":id,"token":token}))
        .await
        .unwrap();
    let mut dropped = Vec::new();
    let deadline = std::time::Instant::now() + 5 * SECOND;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = c
            .next_non_hb(left)
            .await
            .expect("no answer to auth in time");
        match v["type"].as_str() {
            Some("authed") => return (dropped, v),
            Some("error") if v["symbol"].is_string() => dropped.push(v),
            Some("error") => return (dropped, v),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cannot_exceed_the_users_session_cap() {
    let s = setup(|c| {
        c.auth.anonymous = true;
        c.auth.anonymous_ent = vec!["AAPL".into()];
        c.limits.max_sessions_per_user = 2;
    })
    .await;
    let uma = mint(claims("uma", &["*"], "pro"));
    let _u1 = Client::connect_with(s.addr, Format::Json, Some(&uma))
        .await
        .unwrap();
    let u2 = Client::connect_with(s.addr, Format::Json, Some(&uma))
        .await
        .unwrap();
    // An anonymous session cannot become uma's third.
    let mut anon = Client::connect(s.addr, Format::Json).await.unwrap();
    anon.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    anon.next_of("subscribed", 5 * SECOND).await.unwrap();
    let (_, v) = refresh(&mut anon, 2, &uma).await;
    assert_eq!(
        (v["type"].as_str(), v["id"].as_i64(), v["code"].as_str()),
        (Some("error"), Some(2), Some("unauthorized")),
        "{v}"
    );
    assert_eq!(v["message"], "too many sessions for this user");
    // Refused, it keeps what it had: still open, still subscribed, still anonymous.
    anon.ping(5).await.unwrap();
    anon.send(json!({"op":"list","id":6})).await.unwrap();
    let list = anon.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(list["subscriptions"][0]["symbol"], "AAPL", "{list}");
    let (status, _) = upgrade_status(&s.url(), Some(&uma)).await;
    assert_eq!(status, 429, "uma still has two sessions");
    // Once uma has room, the same refresh is accepted, and it counts.
    drop(u2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = refresh(&mut anon, 3, &uma).await;
    assert_eq!(v["type"], "authed", "{v}");
    let (status, body) = upgrade_status(&s.url(), Some(&uma)).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many sessions for this user")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_trims_subscriptions_past_the_new_max_symbols() {
    let s = setup(|_| {}).await;
    let mut vic = signed_in(s.addr, "vic", &["*"], "pro").await;
    vic.send(
        json!({"op":"subscribe","id":1,"symbols":["SPY","AAPL","MSFT","NVDA"],"interval_ms":0}),
    )
    .await
    .unwrap();
    let sub = vic.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(sub["symbols"].as_array().unwrap().len(), 4);
    let mut c = claims("vic", &["*"], "pro");
    c["max_symbols"] = json!(2);
    let (dropped, authed) = refresh(&mut vic, 2, &mint(c)).await;
    assert_eq!(authed["type"], "authed", "{authed}");
    let dropped: Vec<(&str, &str)> = dropped
        .iter()
        .map(|v| (v["code"].as_str().unwrap(), v["symbol"].as_str().unwrap()))
        .collect();
    // Kept in symbol order: AAPL and MSFT.
    assert_eq!(
        dropped,
        [("too_many_symbols", "NVDA"), ("too_many_symbols", "SPY")]
    );
    vic.send(json!({"op":"list","id":3})).await.unwrap();
    let list = vic.next_of("subscriptions", 5 * SECOND).await.unwrap();
    let held: Vec<&str> = list["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["AAPL", "MSFT"]);
    // The limit holds afterwards too.
    vic.send(json!({"op":"subscribe","id":4,"symbols":["SPY"]}))
        .await
        .unwrap();
    let v = vic.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["code"].as_str(), v["symbol"].as_str()),
        (Some(4), Some("too_many_symbols"), Some("SPY"))
    );
    s.stop().await;
}

/// Writes a JWKS file and stamps it `ahead` in the future, so that a rewrite is noticed
/// however coarse the file system's clock.
fn write_jwks(path: &std::path::Path, keys: &[Value], ahead: Duration) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() + ahead)
        .unwrap();
}

/// An Ed25519 key: its JWKS entry under `kid`, and a token of `sub` signed with it.
fn ed_key(kid: &str, sub: &str) -> (Value, String) {
    use base64::Engine;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
    (
        jwk,
        encode(&header, &claims(sub, &["*"], "realtime"), &enc).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_is_dropped_with_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (k1, t1) = ed_key("k1", "wes");
    let (k2, t2) = ed_key("k2", "xia");
    // An entry the edge cannot use (ES256) does not spoil the set.
    let es256 = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    write_jwks(&jwks, &[k1.clone(), k2, es256.clone()], Duration::ZERO);
    let s = setup(|c| {
        c.auth.jwks_file = Some(jwks.clone());
        c.auth.key_reload_ms = 100;
    })
    .await;
    let mut wes = s.on_aapl(&t1, 0).await;
    let mut xia = s.on_aapl(&t2, 0).await;
    let (_, metrics) = http_get(s.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("tickmesh_edge_jwks_keys_skipped 1"),
        "{metrics}"
    );
    // k2 leaves the set: its session is closed, and its token refused from then on.
    write_jwks(&jwks, &[k1, es256], Duration::from_secs(2));
    let (code, told) = closed_with_error(&mut xia).await;
    assert_eq!((code, told.as_deref()), (Some(4401), Some("unauthorized")));
    let (status, body) = upgrade_status(&s.url(), Some(&t2)).await;
    assert_eq!((status, body.as_str()), (401, "unknown key id"));
    // k1 carries on, its session too.
    still_live(&mut wes).await;
    let (status, _) = upgrade_status(&s.url(), Some(&t1)).await;
    assert_eq!(status, 101);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_hs256_secret_file_closes_every_hs256_session_with_4401() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hs256.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let jwks = dir.path().join("jwks.json");
    let (ed, ed_token) = ed_key("ed", "yara");
    write_jwks(&jwks, &[ed], Duration::ZERO);
    let s = setup(|c| {
        c.auth.hs256_secret = None;
        c.auth.hs256_secret_file = Some(secret_file.clone());
        c.auth.jwks_file = Some(jwks.clone());
        c.auth.key_reload_ms = 100;
    })
    .await;
    let old = [
        mint(claims("ann", &["*"], "pro")),
        mint(claims("ben", &["*"], "realtime")),
    ];
    let mut hs256 = Vec::new();
    for t in &old {
        hs256.push(s.on_aapl(t, 0).await);
    }
    // A session verified by another key is not concerned.
    let mut yara = s.on_aapl(&ed_token, 0).await;
    const NEW: &str = "another-hs256-secret-of-32-bytes-or-more";
    std::fs::write(&secret_file, NEW).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&secret_file)
        .unwrap()
        .set_modified(SystemTime::now() + 2 * SECOND)
        .unwrap();
    for c in &mut hs256 {
        let (code, told) = closed_with_error(c).await;
        assert_eq!((code, told.as_deref()), (Some(4401), Some("unauthorized")));
    }
    for t in &old {
        assert_eq!(
            upgrade_status(&s.url(), Some(t)).await,
            (401, "bad signature".into())
        );
    }
    let fresh = encode(
        &Header::new(Algorithm::HS256),
        &claims("ann", &["*"], "pro"),
        &EncodingKey::from_secret(NEW.as_bytes()),
    )
    .unwrap();
    assert_eq!(upgrade_status(&s.url(), Some(&fresh)).await.0, 101);
    still_live(&mut yara).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_a_token_that_fails_verification_closes_4401() {
    let s = setup(|_| {}).await;
    let mut other = s.bystander().await;
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("olga", &["*"], "pro"),
        &EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more"),
    )
    .unwrap();
    let mut expired = claims("olga", &["*"], "pro");
    expired["exp"] = json!(now() - 5);
    let cases = [
        ("forged", forged, "unauthorized"),
        ("garbage", "garbage".to_string(), "unauthorized"),
        ("expired", mint(expired), "token_expired"),
    ];
    for (name, token, code) in cases {
        let mut olga = s.on_aapl(&mint(claims("olga", &["*"], "pro")), 0).await;
        let (_, v) = refresh(&mut olga, 7, &token).await;
        assert_eq!(
            (v["type"].as_str(), v["id"].as_i64(), v["code"].as_str()),
            (Some("error"), Some(7), Some(code)),
            "{name}: {v}"
        );
        assert_eq!(close_code(&mut olga).await, Some(4401), "{name}");
    }
    still_live(&mut other).await;
    s.stop().await;
}

/// Sends `n` pings at once (ids from `first`) and reads their `n` answers: how many were
/// answered with `pong` and how many refused with `rate_limited`.
async fn ping_burst(c: &mut Client, first: i64, n: i64) -> (usize, usize) {
    for id in first..first + n {
        c.send(json!({"op":"ping","id":id})).await.unwrap();
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..n {
        let v = c.next_non_hb(5 * SECOND).await.unwrap();
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("pong"), _) => pongs += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    (pongs, limited)
}

/// Tiers of 1, 2 and 100 messages a second.
fn rate_tiers(c: &mut EdgeConfig) {
    for (name, rate) in [("trickle", 1), ("slow", 2), ("fast", 100)] {
        let tier = tickmesh_edge::config::TierConfig {
            min_interval_ms: 0,
            max_symbols: 10,
            max_msgs_per_s: rate,
        };
        c.auth.tiers.insert(name.into(), tier);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_rate_follows_the_tier_of_a_refresh() {
    let s = setup(|c| {
        rate_tiers(c);
        c.limits.rate_limit_strikes = 1000;
    })
    .await;
    let mut pia = signed_in(s.addr, "pia", &["*"], "fast").await;
    assert_eq!(ping_burst(&mut pia, 0, 20).await, (20, 0));
    // Down to 2 a second (bursts of 4), however long it waits.
    let (_, v) = refresh(&mut pia, 100, &mint(claims("pia", &["*"], "slow"))).await;
    assert_eq!(v["type"], "authed", "{v}");
    tokio::time::sleep(1500 * Duration::from_millis(1)).await;
    let (pongs, limited) = ping_burst(&mut pia, 200, 20).await;
    assert!(
        pongs <= 5 && limited >= 15,
        "{pongs} pongs, {limited} refused"
    );
    // Up again: once the bucket has filled at the new rate, a burst of 20 goes through.
    tokio::time::sleep(SECOND).await;
    let (_, v) = refresh(&mut pia, 300, &mint(claims("pia", &["*"], "fast"))).await;
    assert_eq!(v["type"], "authed", "{v}");
    tokio::time::sleep(SECOND).await;
    assert_eq!(ping_burst(&mut pia, 400, 20).await, (20, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_refusals_in_a_row_close_with_4029() {
    let s = setup(|c| {
        rate_tiers(c);
        c.limits.rate_limit_strikes = 3;
    })
    .await;
    // One message a second, bursts of 2.
    let mut quin = signed_in(s.addr, "quin", &["*"], "trickle").await;
    assert_eq!(ping_burst(&mut quin, 0, 4).await, (2, 2));
    tokio::time::sleep(1200 * Duration::from_millis(1)).await;
    // An accepted message between refusals starts the count again: four refusals, never
    // three in a row, and the session goes on.
    assert_eq!(ping_burst(&mut quin, 10, 1).await, (1, 0));
    assert_eq!(ping_burst(&mut quin, 20, 2).await, (0, 2));
    tokio::time::sleep(1200 * Duration::from_millis(1)).await;
    assert_eq!(ping_burst(&mut quin, 30, 1).await, (1, 0));
    // Three in a row: two refusals, then the close.
    for id in 40..43 {
        quin.send(json!({"op":"ping","id":id})).await.unwrap();
    }
    let mut answers: Vec<String> = Vec::new();
    let code = quin
        .closed_within(5 * SECOND, |v| {
            if v["type"] != "hb" {
                answers.push(v["code"].as_str().unwrap_or("-").to_string());
            }
        })
        .await
        .unwrap();
    assert_eq!(
        (
            answers
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            code
        ),
        (["rate_limited", "rate_limited"].as_slice(), Some(4029))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_id_on_ctl_revoke_closes_the_sessions_holding_that_token_only() {
    let s = setup(|_| {}).await;
    let with_jti = |jti: &str| {
        let mut c = claims("rita", &["*"], "pro");
        c["jti"] = json!(jti);
        mint(c)
    };
    let (t1, t2) = (with_jti("t-1"), with_jti("t-2"));
    let mut holders = [
        Client::connect_with(s.addr, Format::Json, Some(&t1))
            .await
            .unwrap(),
        Client::connect_with(s.addr, Format::MsgPack, Some(&t1))
            .await
            .unwrap(),
    ];
    let mut same_user = Client::connect_with(s.addr, Format::Json, Some(&t2))
        .await
        .unwrap();
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    nats.publish("ctl.revoke", r#"{"jti":"t-1"}"#.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    for c in &mut holders {
        assert_eq!(close_code(c).await, Some(4403));
    }
    assert_eq!(
        upgrade_status(&s.url(), Some(&t1)).await,
        (401, "token revoked".into())
    );
    same_user.ping(1).await.unwrap();
    assert_eq!(upgrade_status(&s.url(), Some(&t2)).await.0, 101);
    s.stop().await;
}
