//! Delayed data end to end, against a real nats-server, the real ingest (the simulator,
//! whose sampler fills the stream `md_delayed`) and an edge serving a 3 s delay: a symbol
//! a token covers only by `dly` reaches its client `delay_ms` late, never fresher, on the
//! same connection as real-time symbols; an `auth` that moves a symbol between real time
//! and delayed takes effect in place; its trades and bars are as delayed as its ticks.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "a-delayed-suite-hs256-secret-of-32-bytes";
const DELAY_MS: u64 = 3000;
/// The sampler's step: a sample is at most this much older than the instant it serves.
const STEP_MS: u64 = 1000;

fn token(ent: &[&str], dly: &[&str]) -> String {
    let now = tickmesh_edge::auth::now_s();
    hs256_token(
        SECRET,
        &json!({"sub": "viewer", "iat": now - 1, "exp": now + 600, "ent": ent, "dly": dly, "tier": "pro"}),
    )
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Setup {
    _nats: NatsServer,
    ingest: Service,
    edge: Service,
    addr: SocketAddr,
    url: String,
}

async fn setup() -> Setup {
    let nats = NatsServer::start().unwrap();
    let mut ingest = ingest_config(&nats.url(), 500);
    ingest.delayed.step_ms = STEP_MS;
    let ingest = start_ingest(ingest);
    let mut config = edge_config(&nats.url());
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.anonymous = false;
    config.delayed.delay_ms = DELAY_MS;
    config.delayed.poll_ms = 100;
    let (edge, addr) = start_edge(config).await.unwrap();
    let url = nats.url();
    Setup {
        _nats: nats,
        ingest,
        edge,
        addr,
        url,
    }
}

/// Reads for `dur`; each message with the wall-clock time (µs) it arrived at.
async fn read_for(c: &mut Client, dur: Duration) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let until = Instant::now() + dur;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match c.next_non_hb(left).await {
            Ok(v) => out.push((now_us(), v)),
            Err(_) => break,
        }
    }
    out
}

/// The tick objects of `symbol` in `msgs` (snapshots and live), each with its arrival.
fn ticks_of<'a>(msgs: &'a [(u64, Value)], symbol: &str) -> Vec<(u64, &'a Value)> {
    let mut out = Vec::new();
    for (at, v) in msgs {
        match v["type"].as_str() {
            Some("snapshot") if v["symbol"] == symbol => out.push((*at, v)),
            Some("ticks") => {
                for t in v["ticks"].as_array().unwrap() {
                    if t["symbol"] == symbol {
                        out.push((*at, t));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every tick is `delay_ms` old when it arrives (never fresher; at most a step and a
/// little more older than that) and says so.
fn assert_delayed(ticks: &[(u64, &Value)], what: &str) {
    assert!(!ticks.is_empty(), "{what}: no delayed tick");
    for (at, t) in ticks {
        let ts = t["ts"].as_u64().unwrap();
        let age_ms = at.saturating_sub(ts) / 1000;
        assert_eq!(t["delayed_ms"].as_u64(), Some(DELAY_MS), "{what}: {t}");
        assert!(
            ts + DELAY_MS * 1000 <= *at,
            "{what}: a tick {age_ms} ms old reached a delayed-only client: {t}"
        );
        assert!(
            age_ms <= DELAY_MS + STEP_MS + 1000,
            "{what}: a tick {age_ms} ms old, more than a step behind the delay: {t}"
        );
    }
}

/// Every tick is fresh (real time) and carries no `delayed_ms`.
fn assert_real_time(ticks: &[(u64, &Value)], what: &str) {
    assert!(!ticks.is_empty(), "{what}: no tick");
    for (at, t) in ticks {
        let age_ms = at.saturating_sub(t["ts"].as_u64().unwrap()) / 1000;
        assert!(t.get("delayed_ms").is_none(), "{what}: {t}");
        assert!(
            age_ms < 1000,
            "{what}: a real-time tick {age_ms} ms old: {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dly_symbol_is_exactly_delay_ms_old_beside_real_time_ones_and_auth_moves_it_in_place() {
    let s = setup().await;
    let mut c = Client::connect_with(s.addr, Format::Json, Some(&token(&["MSFT"], &["AAPL"])))
        .await
        .unwrap();
    assert_eq!(
        c.welcome["limits"]["delay_ms"].as_u64(),
        Some(DELAY_MS),
        "{}",
        c.welcome
    );
    // The delayed stream has samples older than the delay only after the delay.
    tokio::time::sleep(Duration::from_millis(DELAY_MS + STEP_MS)).await;
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT","SPY"],"mode":"quote"}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 5 * SECOND).await;
    let refused = msgs
        .iter()
        .find(|(_, v)| v["type"] == "error")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        (refused["code"].as_str(), refused["symbol"].as_str()),
        (Some("not_entitled"), Some("SPY")),
        "{refused}"
    );
    let subscribed = msgs
        .iter()
        .find(|(_, v)| v["type"] == "subscribed")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        subscribed["symbols"],
        json!(["AAPL", "MSFT"]),
        "{subscribed}"
    );
    assert_eq!(subscribed["delayed"], json!(["AAPL"]), "{subscribed}");
    let aapl = ticks_of(&msgs, "AAPL");
    assert_delayed(&aapl, "AAPL, delayed");
    assert!(aapl.len() >= 3, "about a sample a second: {}", aapl.len());
    assert_eq!(
        aapl[0].1["type"], "snapshot",
        "AAPL's delayed snapshot first: {}",
        aapl[0].1
    );
    assert_real_time(&ticks_of(&msgs, "MSFT"), "MSFT, real time");
    // Samples stand for the ticks between them: no gap is told.
    let gaps: Vec<&Value> = msgs
        .iter()
        .filter(|(_, v)| v["type"] == "gap" && v["symbol"] == "AAPL")
        .map(|(_, v)| v)
        .collect();
    assert!(gaps.is_empty(), "gaps told of AAPL: {gaps:?}");

    // Upgraded in place: `subscribed` without `delayed`, then real time.
    c.send(json!({"op":"auth","id":3,"token":token(&["MSFT", "AAPL"], &[])}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 3 * SECOND).await;
    let moved = msgs
        .iter()
        .find(|(_, v)| v["type"] == "subscribed")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        (&moved["symbols"], moved.get("delayed")),
        (&json!(["AAPL"]), None),
        "{moved}"
    );
    assert!(msgs.iter().any(|(_, v)| v["type"] == "authed"));
    let aapl = ticks_of(&msgs, "AAPL");
    // Frames already on their way may still be delayed; from the first fresh one on,
    // all are.
    let fresh = aapl
        .iter()
        .position(|(_, t)| t.get("delayed_ms").is_none())
        .unwrap();
    assert_real_time(&aapl[fresh..], "AAPL, upgraded");

    // And back: from the `subscribed` with `delayed` on, nothing fresher than the delay.
    c.send(json!({"op":"auth","id":4,"token":token(&["MSFT"], &["AAPL"])}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 4 * SECOND).await;
    let at = msgs
        .iter()
        .position(|(_, v)| v["type"] == "subscribed")
        .unwrap();
    assert_eq!(msgs[at].1["delayed"], json!(["AAPL"]), "{}", msgs[at].1);
    assert_delayed(&ticks_of(&msgs[at..], "AAPL"), "AAPL, downgraded");
    assert_real_time(&ticks_of(&msgs, "MSFT"), "MSFT, through both moves");

    // The stream keeps at most a sample per symbol per step.
    let js = async_nats::jetstream::new(async_nats::connect(&s.url).await.unwrap());
    let mut stream = js
        .get_stream(tickmesh_core::subject::DELAYED_STREAM)
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    let running_s = info.state.last_timestamp - info.state.first_timestamp;
    let subject =
        tickmesh_core::subject::delayed_subject("AAPL", tickmesh_core::subject::DEFAULT_SHARDS);
    let per_subject = stream
        .info_with_subjects(subject.clone())
        .await
        .unwrap()
        .try_next()
        .await
        .unwrap()
        .unwrap();
    let allowed = running_s.whole_seconds() as usize + 2;
    assert!(
        per_subject.1 <= allowed,
        "{} samples of AAPL in {running_s}: more than one a step",
        per_subject.1
    );
    drop(c);
    s.edge.stop().await.unwrap();
    s.ingest.stop().await.unwrap();
}

/// `GET /v1/snapshot` answers a delayed-only symbol with its value of `delay_ms` ago, in
/// the order asked, beside real-time ones and a refusal; from the stream of samples when
/// the edge carries no delayed value of it, and never from `md_last`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_snapshot_of_a_dly_symbol_is_its_value_of_delay_ms_ago() {
    let s = setup().await;
    tokio::time::sleep(Duration::from_millis(DELAY_MS + STEP_MS)).await;
    let bearer = format!("Bearer {}", token(&["MSFT"], &["AAPL"]));
    // The answer to `GET path` with the token, and when it came.
    let get = async |path: &str| {
        let headers = [("authorization", bearer.as_str())];
        let answer = http_get_with(s.addr, path, &headers).await.unwrap();
        let at = now_us();
        assert_eq!(answer.status, 200, "{}", answer.body);
        (at, serde_json::from_str::<Value>(&answer.body).unwrap())
    };
    let (at, body) = get("/v1/snapshot?symbols=AAPL,MSFT,SPY").await;
    let snapshots = body["snapshots"].as_array().unwrap();
    let symbols: Vec<&str> = snapshots
        .iter()
        .map(|t| t["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["AAPL", "MSFT"], "{body}");
    assert_delayed(&[(at, &snapshots[0])], "AAPL over REST");
    assert_real_time(&[(at, &snapshots[1])], "MSFT over REST");
    assert_eq!(body["errors"][0]["code"], "not_entitled", "{body}");
    assert_eq!(body["errors"][0]["symbol"], "SPY", "{body}");

    // `GET /v1/bars`: the bars that had closed delay_ms ago, told as delayed.
    tokio::time::sleep(6 * SECOND).await;
    let (at, body) = get("/v1/bars/AAPL?tf=1s&n=3").await;
    let bars = body["bars"].as_array().unwrap();
    assert_eq!(bars.len(), 3, "{body}");
    for b in bars {
        assert_eq!(b["delayed_ms"].as_u64(), Some(DELAY_MS), "{b}");
        let end = b["t"].as_u64().unwrap() + 1_000_000;
        assert!(
            end + DELAY_MS * 1000 <= at,
            "a bar closed sooner than delay_ms: {b}"
        );
    }
    s.edge.stop().await.unwrap();
    s.ingest.stop().await.unwrap();
}

/// A delayed-only session's `hb.lag_ms` (the age of the freshest tick it was sent) says
/// its data is `delay_ms` old: nothing fresher reached it, and the heartbeat does not
/// pretend otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_only_sessions_heartbeat_lag_is_at_least_the_delay() {
    let s = setup().await;
    tokio::time::sleep(Duration::from_millis(DELAY_MS + STEP_MS)).await;
    let mut c = Client::connect_with(s.addr, Format::Json, Some(&token(&[], &["AAPL"])))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"mode":"quote"}))
        .await
        .unwrap();
    let subscribed = c.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(subscribed["delayed"], json!(["AAPL"]), "{subscribed}");
    c.next_of("snapshot", 5 * SECOND).await.unwrap();
    // `lag_ms` comes once a live update went out (a snapshot does not count).
    let mut lags = Vec::new();
    let deadline = Instant::now() + 10 * SECOND;
    while lags.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let hb = c.next_of("hb", left).await.unwrap();
        lags.extend(hb["lag_ms"].as_u64());
    }
    assert!(
        lags.iter().all(|&lag| lag >= DELAY_MS),
        "hb.lag_ms {lags:?} under the delay of {DELAY_MS} ms"
    );
    s.edge.stop().await.unwrap();
    s.ingest.stop().await.unwrap();
}

/// The prints of `symbol` in the `trades` messages of `msgs`: (arrival µs, in a snapshot,
/// print).
fn prints_of<'a>(msgs: &'a [(u64, Value)], symbol: &str) -> Vec<(u64, bool, &'a Value)> {
    let mut out = Vec::new();
    for (at, v) in msgs.iter().filter(|(_, v)| v["type"] == "trades") {
        let snapshot = v["snapshot"] == true;
        for t in v["trades"].as_array().unwrap() {
            if t["symbol"] == symbol {
                out.push((*at, snapshot, t));
            }
        }
    }
    out
}

/// The bars of `msgs`' `bars` messages: (arrival µs, bar).
fn bars_in(msgs: &[(u64, Value)]) -> Vec<(u64, &Value)> {
    let bars = msgs.iter().filter(|(_, v)| v["type"] == "bars");
    bars.flat_map(|(at, v)| v["bars"].as_array().unwrap().iter().map(|b| (*at, b)))
        .collect()
}

/// Trades and bars of a delayed-only symbol come from the stream of delayed prints and
/// bars at now − delay: the same prints a real-time client saw, in order and none
/// missing, each reaching the client `delay_ms` after its `ts` (never sooner, within a
/// second after), with `delayed_ms`; the bars are those the real-time client saw close,
/// told `delay_ms` late. An `auth` moves both in place, told by a `subscribed` each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_and_bars_of_a_dly_symbol_are_exactly_delay_ms_old() {
    let s = setup().await;
    let mut live = Client::connect_with(s.addr, Format::Json, Some(&token(&["AAPL", "MSFT"], &[])))
        .await
        .unwrap();
    live.send(
        json!({"op":"subscribe","id":1,"symbols":["AAPL", "MSFT"],"stream":"trades","history":0}),
    )
    .await
    .unwrap();
    live.send(json!({"op":"subscribe","id":2,"symbols":["AAPL"],"stream":"bars","tf":"1s","history":0,"interval_ms":250}))
        .await
        .unwrap();
    // The delayed client comes once the delayed stream holds prints older than the delay.
    let live_read = tokio::spawn(async move {
        let msgs = read_for(&mut live, Duration::from_millis(DELAY_MS) + 12 * SECOND).await;
        (live, msgs)
    });
    tokio::time::sleep(Duration::from_millis(DELAY_MS) + 2 * SECOND).await;
    let mut c = Client::connect_with(s.addr, Format::Json, Some(&token(&["MSFT"], &["AAPL"])))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades","history":20}))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":2,"symbols":["AAPL"],"stream":"bars","tf":"1s","history":3,"interval_ms":250}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 6 * SECOND).await;
    // The edge counts the tapes it follows in real time (2) and delayed (1) apart.
    let (_, metrics) = http_get(s.addr, "/metrics").await.unwrap();
    for line in ["tickmesh_edge_tapes 2", "tickmesh_edge_delayed_tapes 1"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in {metrics}"
        );
    }
    let (mut live, live_msgs) = live_read.await.unwrap();
    let subscribed: Vec<&Value> = msgs
        .iter()
        .filter(|(_, v)| v["type"] == "subscribed")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(subscribed.len(), 2, "{subscribed:?}");
    for sub in &subscribed {
        assert_eq!(
            (&sub["symbols"], &sub["delayed"]),
            (&json!(["AAPL"]), &json!(["AAPL"])),
            "{sub}"
        );
    }

    // Prints: exactly delay_ms old, the history as much as the live ones.
    let prints = prints_of(&msgs, "AAPL");
    let history = prints.iter().filter(|(_, snap, _)| *snap).count();
    assert_eq!(history, 20, "a history of 20 prints of delay_ms ago");
    assert!(
        prints.len() > history + 5,
        "live delayed prints: {}",
        prints.len() - history
    );
    for (at, snapshot, t) in &prints {
        let ts = t["ts"].as_u64().unwrap();
        assert_eq!(t["delayed_ms"].as_u64(), Some(DELAY_MS), "{t}");
        assert!(
            ts + DELAY_MS * 1000 <= *at,
            "a print {} ms old reached a delayed-only client: {t}",
            (at - ts) / 1000
        );
        if !snapshot {
            assert!(
                *at <= ts + DELAY_MS * 1000 + 1_000_000,
                "a live print {} ms old: more than a second past the delay: {t}",
                (at - ts) / 1000
            );
        }
    }
    // The same prints as in real time, in order, none missing.
    let ids: Vec<u64> = prints
        .iter()
        .map(|(_, _, t)| t["trade_id"].as_u64().unwrap())
        .collect();
    let live_ids: Vec<u64> = prints_of(&live_msgs, "AAPL")
        .iter()
        .map(|(_, _, t)| t["trade_id"].as_u64().unwrap())
        .collect();
    let from = live_ids
        .iter()
        .position(|id| *id == ids[0])
        .expect("the delayed history's first print was seen live");
    assert_eq!(
        ids,
        live_ids[from..from + ids.len()],
        "the delayed tape is the real-time tape, delay_ms later"
    );

    // Bars: the history, then updates and finals, each as of delay_ms ago.
    let bars = bars_in(&msgs);
    let first = msgs.iter().find(|(_, v)| v["type"] == "bars").unwrap();
    assert_eq!(first.1["snapshot"], true, "{}", first.1);
    let finals: std::collections::HashMap<u64, &Value> = bars_in(&live_msgs)
        .into_iter()
        .filter(|(_, b)| b["final"] == true)
        .map(|(_, b)| (b["t"].as_u64().unwrap(), b))
        .collect();
    let mut compared = 0;
    for (at, b) in &bars {
        let t = b["t"].as_u64().unwrap();
        assert_eq!(b["delayed_ms"].as_u64(), Some(DELAY_MS), "{b}");
        let due = at - DELAY_MS * 1000;
        assert!(t <= due, "a bar that started after now - delay: {b}");
        if b["final"] == true {
            assert!(
                t + 1_000_000 <= due,
                "a bar closed sooner than delay_ms: {b}"
            );
            if let Some(live) = finals.get(&t) {
                let fields = ["open", "high", "low", "close", "volume", "trades"];
                for k in fields {
                    assert_eq!(b[k], live[k], "{k} of the bar at {t}: {b} vs {live}");
                }
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 3,
        "delayed finals compared with real time: {compared}"
    );

    // Moved to real time in place: a `subscribed` without `delayed` per stream, then
    // fresh prints and bars.
    c.send(json!({"op":"auth","id":3,"token":token(&["MSFT", "AAPL"], &[])}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 3 * SECOND).await;
    let moved: Vec<&Value> = msgs
        .iter()
        .filter(|(_, v)| v["type"] == "subscribed")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    for m in &moved {
        assert_eq!(
            (&m["symbols"], m.get("delayed")),
            (&json!(["AAPL"]), None),
            "{m}"
        );
    }
    let after = msgs
        .iter()
        .position(|(_, v)| v["type"] == "subscribed")
        .unwrap();
    let prints = prints_of(&msgs[after..], "AAPL");
    assert!(!prints.is_empty(), "no print after the move to real time");
    for (at, snapshot, t) in &prints {
        assert!(t.get("delayed_ms").is_none(), "{t}");
        if !snapshot {
            let age_ms = (at - t["ts"].as_u64().unwrap()) / 1000;
            assert!(age_ms < 1000, "a real-time print {age_ms} ms old: {t}");
        }
    }

    // And back: from its `subscribed` on, nothing fresher than the delay.
    c.send(json!({"op":"auth","id":4,"token":token(&["MSFT"], &["AAPL"])}))
        .await
        .unwrap();
    let msgs = read_for(&mut c, 3 * SECOND).await;
    let after = msgs
        .iter()
        .position(|(_, v)| v["type"] == "subscribed")
        .unwrap();
    assert_eq!(
        msgs[after].1["delayed"],
        json!(["AAPL"]),
        "{}",
        msgs[after].1
    );
    let prints = prints_of(&msgs[after..], "AAPL");
    assert!(!prints.is_empty(), "no print after the move back");
    for (at, _, t) in &prints {
        assert_eq!(t["delayed_ms"].as_u64(), Some(DELAY_MS), "{t}");
        assert!(t["ts"].as_u64().unwrap() + DELAY_MS * 1000 <= *at, "{t}");
    }
    for (at, b) in bars_in(&msgs[after..]) {
        assert_eq!(b["delayed_ms"].as_u64(), Some(DELAY_MS), "{b}");
        assert!(b["t"].as_u64().unwrap() + DELAY_MS * 1000 <= at, "{b}");
    }
    drop((c, live.send(json!({"op":"ping"})).await));
    s.edge.stop().await.unwrap();
    s.ingest.stop().await.unwrap();
}

/// An `auth` that moves a tape to the other side is held to the edge's bound on the tapes
/// it follows, as a subscribe is: past it, the tape is dropped with `unavailable` (and
/// `retry_ms`), not moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_move_of_a_tape_is_held_to_the_edges_bounds() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 500));
    let mut config = edge_config(&nats.url());
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.anonymous = false;
    config.delayed.delay_ms = DELAY_MS;
    config.limits.max_carried_symbols = 1;
    let (edge, addr) = start_edge(config).await.unwrap();
    // One client holds MSFT's tape delayed: the edge follows its most delayed tapes.
    let mut other = Client::connect_with(addr, Format::Json, Some(&token(&[], &["MSFT"])))
        .await
        .unwrap();
    other
        .send(json!({"op":"subscribe","id":1,"symbols":["MSFT"],"stream":"trades"}))
        .await
        .unwrap();
    let held = other.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(held["delayed"], json!(["MSFT"]), "{held}");
    let mut c = Client::connect_with(addr, Format::Json, Some(&token(&["AAPL"], &[])))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades"}))
        .await
        .unwrap();
    let held = c.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(held["symbols"], json!(["AAPL"]), "{held}");
    c.send(json!({"op":"auth","id":2,"token":token(&[], &["AAPL"])}))
        .await
        .unwrap();
    let refused = c.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(
        (refused["code"].as_str(), refused["symbol"].as_str()),
        (Some("unavailable"), Some("AAPL")),
        "{refused}"
    );
    assert!(refused["retry_ms"].as_u64().is_some(), "{refused}");
    c.send(json!({"op":"list","id":3})).await.unwrap();
    let list = c.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(list["subscriptions"], json!([]), "{list}");
    drop((c, other));
    edge.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
