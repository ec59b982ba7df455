//! End-to-end account channels against a real nats-server: the events an account's writer
//! appends to the stream `acct` (and its snapshots in `acct_snap`) reach a subscriber as
//! `account_snapshot` then every event, or as a replay from `from_seq` that goes on live,
//! each seq once and in order; a token reads only the accounts it names; a `from_seq` the
//! stream no longer holds gets `unavailable` and a fresh snapshot; a client that cannot
//! keep up is cut with 4008.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_core::account;
use tickmesh_tests::accounts::{self, Writer};
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "an-accounts-suite-hs256-secret-of-32-bytes";

fn token(sub: &str, acct: &[&str]) -> String {
    accounts::token(SECRET, sub, acct)
}

struct Setup {
    nats: NatsServer,
    edge: Service,
    addr: SocketAddr,
    writer: Writer,
}

async fn setup(f: impl FnOnce(&mut tickmesh_edge::config::EdgeConfig)) -> Setup {
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["AAPL"]).await.unwrap();
    let writer = Writer::create(&nats.url()).await.unwrap();
    let mut config = edge_config(&nats.url());
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.anonymous = false;
    f(&mut config);
    let (edge, addr) = start_edge(config).await.unwrap();
    Setup {
        nats,
        edge,
        addr,
        writer,
    }
}

async fn signed_in(addr: SocketAddr, acct: &[&str]) -> Client {
    Client::connect_with(addr, Format::Json, Some(&token("trader", acct)))
        .await
        .unwrap()
}

/// The seqs of `account` events in `msgs`, in order, after checking each one's account.
fn seqs(msgs: &[(std::time::Instant, Value)], account: &str) -> Vec<u64> {
    msgs.iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "account")
        .map(|v| {
            assert_eq!(v["account"], account, "{v}");
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

/// Checks that `got` is exactly the seqs of `want`, each once, in order; says where not.
fn assert_seqs(got: &[u64], want: std::ops::RangeInclusive<u64>) {
    let want: Vec<u64> = want.collect();
    if got != want {
        let at = got.iter().zip(&want).position(|(g, w)| g != w);
        panic!(
            "got {} seqs ({:?}..{:?}), want {} ({:?}..{:?}); first difference at {at:?}",
            got.len(),
            got.first(),
            got.last(),
            want.len(),
            want.first(),
            want.last()
        );
    }
}

/// Reads until `account`'s event `seq` came (or 10 s passed): everything read.
async fn until_seq(c: &mut Client, seq: u64) -> Vec<(std::time::Instant, Value)> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + 20 * SECOND;
    while std::time::Instant::now() < deadline {
        let Ok(v) = c.next_non_hb(deadline - std::time::Instant::now()).await else {
            break;
        };
        let done = v["type"] == "account" && v["seq"].as_u64() == Some(seq);
        out.push((std::time::Instant::now(), v));
        if done {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_then_every_event_and_a_replay_from_seq_goes_on_live_each_seq_once() {
    let mut s = setup(|_| {}).await;
    for _ in 0..50 {
        s.writer.append("DEMO1").await.unwrap();
    }
    for _ in 0..30 {
        s.writer.append("DEMO2").await.unwrap();
    }

    let mut live = signed_in(s.addr, &["DEMO1"]).await;
    live.send(json!({"op":"subscribe","id":1,"account":"DEMO1"}))
        .await
        .unwrap();
    let reply = live.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (
            reply["type"].as_str(),
            reply["account"].as_str(),
            reply["id"].as_i64()
        ),
        (Some("subscribed"), Some("DEMO1"), Some(1)),
        "{reply}"
    );
    let snap = live.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(snap["type"], "account_snapshot", "{snap}");
    assert_eq!(snap["seq"], 50);
    let expected = s.writer.states["DEMO1"].state.clone();
    assert_eq!(
        snap["positions"].as_array().unwrap().len(),
        expected.positions.len()
    );
    assert_eq!(
        snap["open_orders"].as_array().unwrap().len(),
        expected.open_orders.len()
    );
    assert_eq!(snap["balances"][0]["cash"], 1_000_000.0 - 47.0);

    // A second client replays from seq 10 while the writer goes on.
    let mut replay = signed_in(s.addr, &["DEMO1", "DEMO2"]).await;
    replay
        .send(json!({"op":"subscribe","id":2,"account":"DEMO1","from_seq":10}))
        .await
        .unwrap();
    for _ in 0..20 {
        s.writer.append("DEMO1").await.unwrap();
        s.writer.append("DEMO2").await.unwrap();
    }
    let got = until_seq(&mut live, 70).await;
    assert_seqs(&seqs(&got, "DEMO1"), 51..=70);
    let got = until_seq(&mut replay, 70).await;
    assert!(
        !got.iter().any(|(_, v)| v["type"] == "account_snapshot"),
        "a replay sends no snapshot"
    );
    assert_seqs(&seqs(&got, "DEMO1"), 10..=70);
    // The events are the writer's, whole.
    let last = got.last().unwrap().1.clone();
    assert_eq!(last["kind"], "position", "{last}");
    assert_eq!(last["data"]["qty"], 70, "{last}");

    // A token that does not name the account gets nothing of it.
    live.send(json!({"op":"subscribe","id":3,"account":"DEMO2"}))
        .await
        .unwrap();
    let refused = live.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (refused["code"].as_str(), refused["account"].as_str()),
        (Some("not_entitled"), Some("DEMO2")),
        "{refused}"
    );
    s.writer.append("DEMO2").await.unwrap();
    s.writer.append("DEMO1").await.unwrap();
    let got = until_seq(&mut live, 71).await;
    assert_eq!(seqs(&got, "DEMO1"), vec![71], "only DEMO1's events");

    // Unsubscribed: no more events.
    live.send(json!({"op":"unsubscribe","id":4,"account":"DEMO1"}))
        .await
        .unwrap();
    let bye = live.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (bye["type"].as_str(), bye["account"].as_str()),
        (Some("unsubscribed"), Some("DEMO1"))
    );
    s.writer.append("DEMO1").await.unwrap();
    let after = live.collect(SECOND).await.unwrap();
    assert!(seqs(&after, "DEMO1").is_empty(), "{after:?}");

    // From just past the last event: nothing to replay, then live.
    let mut resumed = signed_in(s.addr, &["DEMO1"]).await;
    resumed
        .send(json!({"op":"subscribe","id":5,"account":"DEMO1","from_seq":73}))
        .await
        .unwrap();
    assert_eq!(
        resumed.next_non_hb(5 * SECOND).await.unwrap()["type"],
        "subscribed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.writer.append("DEMO1").await.unwrap();
    let got = until_seq(&mut resumed, 73).await;
    assert_eq!(seqs(&got, "DEMO1"), vec![73]);
    s.edge.stop().await.unwrap();
    drop(s.nats);
}

/// Past a thousand accounts followed at once (nats-server's default bound on a stream's
/// consumers, when the stream names none), every follower still gets its events: 1,008
/// accounts, 8 on each of 126 sessions, each account's first event reaches its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_thousand_accounts_followed_at_once_all_get_their_events() {
    const SESSIONS: usize = 126;
    const EACH: usize = 8;
    let mut s = setup(|_| {}).await;
    let name = |i: usize, j: usize| format!("K{}", i * EACH + j);
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        let names: Vec<String> = (0..EACH).map(|j| name(i, j)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let token = accounts::token(SECRET, &format!("trader{i}"), &refs);
        let mut c = Client::connect_with(s.addr, Format::Json, Some(&token))
            .await
            .unwrap();
        for (j, account) in names.iter().enumerate() {
            c.send(json!({"op":"subscribe","id":j,"account":account}))
                .await
                .unwrap();
        }
        clients.push(c);
    }
    // Every session has its 8 snapshots: each follower is reading its account.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut snapshots = 0;
        let deadline = std::time::Instant::now() + 60 * SECOND;
        while snapshots < EACH {
            let v = c
                .next_non_hb(deadline - std::time::Instant::now())
                .await
                .unwrap_or_else(|e| panic!("session {i}: {snapshots} snapshots: {e}"));
            assert_ne!(v["type"], "error", "session {i}: {v}");
            snapshots += usize::from(v["type"] == "account_snapshot");
        }
    }
    // Give the last consumers a moment to exist, then one event of each account.
    tokio::time::sleep(2 * SECOND).await;
    for i in 0..SESSIONS {
        for j in 0..EACH {
            s.writer.append(&name(i, j)).await.unwrap();
        }
    }
    let mut silent = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + 20 * SECOND;
        while got.len() < EACH && std::time::Instant::now() < deadline {
            let Ok(v) = c.next_non_hb(deadline - std::time::Instant::now()).await else {
                break;
            };
            if v["type"] == "account" {
                got.insert(v["account"].as_str().unwrap().to_string());
            }
        }
        silent.extend((0..EACH).map(|j| name(i, j)).filter(|a| !got.contains(a)));
    }
    assert!(
        silent.is_empty(),
        "{} of {} accounts never got their event: {:?}",
        silent.len(),
        SESSIONS * EACH,
        &silent[..silent.len().min(10)]
    );
    s.edge.stop().await.unwrap();
    drop(s.nats);
}

/// A subscribe to an account the session already holds replaces its follower: the
/// edge's count of account subscriptions (what an operator's dashboard shows) stays one,
/// and is back at zero after the unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_twice_to_an_account_counts_one_subscription() {
    let mut s = setup(|_| {}).await;
    s.writer.append_many("DEMO1", 3).await.unwrap();
    let mut c = signed_in(s.addr, &["DEMO1"]).await;
    for id in 1..=3 {
        c.send(json!({"op":"subscribe","id":id,"account":"DEMO1","from_seq":1}))
            .await
            .unwrap();
        let got = until_seq(&mut c, 3).await;
        assert_eq!(seqs(&got, "DEMO1"), vec![1, 2, 3], "subscribe {id}");
    }
    let held = metric(s.addr, "tickmesh_edge_account_subscriptions").await;
    c.send(json!({"op":"unsubscribe","id":4,"account":"DEMO1"}))
        .await
        .unwrap();
    let bye = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(bye["type"], "unsubscribed", "{bye}");
    let after = metric(s.addr, "tickmesh_edge_account_subscriptions").await;
    assert_eq!((held, after), (1.0, 0.0), "account subscriptions counted");
    s.edge.stop().await.unwrap();
    drop(s.nats);
}

/// Each account subscribe reads the stream on the hub (a replay from an old `from_seq`
/// reads all of it): a client re-subscribing at its message rate is held to the
/// session's account-subscribe rate, told `rate_limited` with `retry_ms`, and served
/// again once that has passed; the account it holds keeps streaming meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_resubscribes_past_the_sessions_rate_are_refused_with_retry_ms() {
    let mut s = setup(|c| {
        c.session.max_accounts = 2;
        c.session.account_subscribes_per_min = 60;
    })
    .await;
    s.writer.append_many("DEMO1", 5).await.unwrap();
    let mut c = signed_in(s.addr, &["DEMO1"]).await;
    // A burst of twice max_accounts, then one a second.
    for id in 1..=4 {
        c.send(json!({"op":"subscribe","id":id,"account":"DEMO1","from_seq":1}))
            .await
            .unwrap();
        let got = until_seq(&mut c, 5).await;
        assert_eq!(seqs(&got, "DEMO1"), vec![1, 2, 3, 4, 5], "subscribe {id}");
    }
    c.send(json!({"op":"subscribe","id":5,"account":"DEMO1","from_seq":1}))
        .await
        .unwrap();
    let refused = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["id"].as_i64(),
            refused["code"].as_str(),
            refused["account"].as_str()
        ),
        (Some("error"), Some(5), Some("rate_limited"), Some("DEMO1")),
        "{refused}"
    );
    let retry_ms = refused["retry_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&retry_ms), "{refused}");
    // The account held goes on live.
    s.writer.append("DEMO1").await.unwrap();
    let got = until_seq(&mut c, 6).await;
    assert_eq!(
        seqs(&got, "DEMO1"),
        vec![6],
        "the live event after the refusal"
    );
    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    c.send(json!({"op":"subscribe","id":6,"account":"DEMO1","from_seq":1}))
        .await
        .unwrap();
    let got = until_seq(&mut c, 6).await;
    assert_eq!(
        got.first().map(|(_, v)| v["type"].clone()),
        Some(json!("subscribed"))
    );
    assert_seqs(&seqs(&got, "DEMO1"), 1..=6);
    s.edge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_seq_the_stream_no_longer_keeps_gets_unavailable_and_a_fresh_snapshot() {
    let mut s = setup(|_| {}).await;
    for _ in 0..20 {
        s.writer.append("DEMO1").await.unwrap();
    }
    // The oldest ten leave the stream (as they would by age).
    let stream = s.writer.js.get_stream(account::STREAM).await.unwrap();
    stream
        .purge()
        .filter("acct.DEMO1.>")
        .sequence(11)
        .await
        .unwrap();
    let mut c = signed_in(s.addr, &["DEMO1"]).await;
    for (from, id) in [(3, 1), (500, 2)] {
        c.send(json!({"op":"subscribe","id":id,"account":"DEMO1","from_seq":from}))
            .await
            .unwrap();
        assert_eq!(
            c.next_non_hb(5 * SECOND).await.unwrap()["type"],
            "subscribed"
        );
        let told = c.next_non_hb(5 * SECOND).await.unwrap();
        assert_eq!(
            (
                told["type"].as_str(),
                told["code"].as_str(),
                told["account"].as_str()
            ),
            (Some("error"), Some("unavailable"), Some("DEMO1")),
            "{told}"
        );
        let snap = c.next_non_hb(5 * SECOND).await.unwrap();
        assert_eq!(
            (snap["type"].as_str(), snap["seq"].as_u64()),
            (Some("account_snapshot"), Some(20)),
            "{snap}"
        );
    }
    // And from the oldest kept, a replay.
    c.send(json!({"op":"subscribe","id":3,"account":"DEMO1","from_seq":11}))
        .await
        .unwrap();
    let got = until_seq(&mut c, 20).await;
    assert_seqs(&seqs(&got, "DEMO1"), 11..=20);
    s.edge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_with_an_account_is_cut_with_4008() {
    let mut s = setup(|c| {
        c.session.account_queue = 256;
        // Only the account may cut it: a stalled write alone would take 30 s.
        c.session.write_timeout_ms = 30_000;
    })
    .await;
    s.writer.append("DEMO1").await.unwrap();
    let token = token("trader", &["DEMO1"]);
    let mut stalled = small_buffer_client(s.addr, Format::Json, Some(&token))
        .await
        .unwrap();
    use futures_util::SinkExt;
    let req = json!({"op":"subscribe","id":1,"account":"DEMO1"}).to_string();
    stalled
        .send(tokio_tungstenite::tungstenite::Message::Text(req.into()))
        .await
        .unwrap();
    let mut reader = signed_in(s.addr, &["DEMO1"]).await;
    reader
        .send(json!({"op":"subscribe","id":1,"account":"DEMO1"}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Far more than the socket buffers hold, at about 10,000 a second: a reader keeps up.
    let reading = tokio::spawn(async move {
        let got = until_seq(&mut reader, 40_001).await;
        (reader, got)
    });
    for _ in 0..400 {
        s.writer.append_many("DEMO1", 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_reader, got) = reading.await.unwrap();
    assert_seqs(&seqs(&got, "DEMO1"), 2..=40_001);
    let (last, code) = last_words(&mut stalled, 10 * SECOND).await.unwrap();
    assert_eq!(code, Some(4008), "last message {last:?}");
    let cuts = metric(
        s.addr,
        "tickmesh_edge_slow_consumer_total{action=\"cut_account\"}",
    )
    .await;
    assert_eq!(cuts, 1.0);
    s.edge.stop().await.unwrap();
}

/// A revocation of the user closes an account session with 4403 within a second, and
/// nothing of the account comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_is_closed_with_4403_within_a_second() {
    let mut s = setup(|_| {}).await;
    s.writer.append("DEMO1").await.unwrap();
    let mut c = signed_in(s.addr, &["DEMO1"]).await;
    c.send(json!({"op":"subscribe","id":1,"account":"DEMO1"}))
        .await
        .unwrap();
    let snap = c.next_of("account_snapshot", 5 * SECOND).await.unwrap();
    assert_eq!(snap["seq"], 1);
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    nats.publish("ctl.revoke", r#"{"sub":"trader"}"#.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let revoked_at = std::time::Instant::now();
    s.writer.append("DEMO1").await.unwrap();
    let mut after = Vec::new();
    let code = c
        .closed_within(5 * SECOND, |v| after.push(v.clone()))
        .await
        .unwrap();
    assert_eq!(code, Some(4403));
    assert!(
        revoked_at.elapsed() < SECOND,
        "closed {:?} after the revocation",
        revoked_at.elapsed()
    );
    assert!(
        !after.iter().any(|v| v["type"] == "account"),
        "an event after the revocation: {after:?}"
    );
    s.edge.stop().await.unwrap();
}

/// When live events do not arrive (here the stream no longer republishes them; in a mesh,
/// a link that lost them), a subscriber still gets every event, in order, a few seconds
/// late: each quiet-time read of the stream that finds events is followed by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_events_the_stream_reads_keep_a_subscriber_going() {
    let mut s = setup(|_| {}).await;
    s.writer.append("DEMO1").await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(s.nats.url()).await.unwrap());
    let mut stream = js.get_stream(account::STREAM).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    assert!(
        config.republish.is_some(),
        "the writer's stream republishes"
    );
    config.republish = None;
    js.update_stream(config).await.unwrap();

    let mut c = signed_in(s.addr, &["DEMO1"]).await;
    c.send(json!({"op":"subscribe","id":1,"account":"DEMO1"}))
        .await
        .unwrap();
    let snap = c.next_of("account_snapshot", 5 * SECOND).await.unwrap();
    assert_eq!(snap["seq"], 1, "{snap}");
    // One event in each of three quiet spells (a quiet-time read comes 3 s after the
    // last event or read).
    for _ in 0..3 {
        tokio::time::sleep(SECOND / 2).await;
        s.writer.append("DEMO1").await.unwrap();
        tokio::time::sleep(3 * SECOND).await;
    }
    let got = until_seq(&mut c, 4).await;
    assert_seqs(&seqs(&got, "DEMO1"), 2..=4);
    s.edge.stop().await.unwrap();
}
