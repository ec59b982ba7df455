//! Usage records end to end, against a real nats-server, the real ingest (which names its
//! feed in `md_ref`) and two edges, one of them a process killed with SIGKILL: a scripted
//! set of sessions gives the expected monthly report from `tickmesh usage` (parsed and run
//! as the CLI runs it), a user served by both edges counted once, and what the killed
//! edge wrote before it died kept.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use tickmesh_cli::args::{Cli, Command};
use tickmesh_core::Format;
use tickmesh_core::usage::Month;
use tickmesh_tests::mesh::EdgeProcess;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "a-usage-suite-hs256-secret-of-32-bytes!!";
const FEED: &str = "XTST";
const FLUSH_MS: u64 = 200;

fn token(claims: Value) -> String {
    let now = tickmesh_edge::auth::now_s();
    let mut c = json!({"iat": now - 1, "exp": now + 600, "tier": "pro"});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    hs256_token(SECRET, &c)
}

/// Subscribes and waits for the answer; `Err` with the error message if refused.
async fn subscribe(c: &mut Client, request: Value) -> Result<Value, Value> {
    c.send(request).await.unwrap();
    loop {
        let m = c.next_non_hb(10 * SECOND).await.unwrap();
        match m["type"].as_str() {
            Some("subscribed") => return Ok(m),
            Some("error") => return Err(m),
            _ => {}
        }
    }
}

async fn connect(addr: std::net::SocketAddr, claims: Value) -> Client {
    Client::connect_with(addr, Format::Json, Some(&token(claims)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_over_two_edges_is_reported_once_per_user_and_survives_an_edge_killed_mid_month() {
    let month = Month::of_unix_us(tickmesh_core::tick::now_us());
    let nats = NatsServer::start().unwrap();
    let mut ingest = ingest_config(&nats.url(), 200);
    ingest.refdata.feed = Some(FEED.into());
    let _ingest = start_ingest(ingest);
    let mut config = edge_config(&nats.url());
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.anonymous = false;
    config.delayed.delay_ms = 1000;
    config.usage.flush_ms = FLUSH_MS;
    config.usage.touch_ms = 1000;
    let mut a = config.clone();
    a.name = "edge-a".into();
    let (edge_a, addr_a) = start_edge(a).await.unwrap();
    let mut b = config;
    b.name = "edge-b".into();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tickmesh-test-edge"));
    let env = [
        ("TICKMESH_EDGE_AUTH__HS256_SECRET", SECRET.to_string()),
        ("TICKMESH_EDGE_DELAYED__DELAY_MS", "1000".to_string()),
        ("TICKMESH_EDGE_USAGE__FLUSH_MS", FLUSH_MS.to_string()),
        ("TICKMESH_EDGE_USAGE__TOUCH_MS", "1000".to_string()),
    ];
    let mut edge_b = EdgeProcess::start_from(bin, None, &b, &env).await.unwrap();

    let alice = json!({"sub": "alice", "org": "ACME", "ent": ["*"]});
    let mut alice_a = connect(addr_a, alice.clone()).await;
    subscribe(
        &mut alice_a,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL", "MSFT"]}),
    )
    .await
    .unwrap();
    let mut alice_b = connect(edge_b.addr, alice.clone()).await;
    subscribe(
        &mut alice_b,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"]}),
    )
    .await
    .unwrap();
    // A program of ACME's: non-display, ticks and trades.
    let mut bob = connect(
        addr_a,
        json!({"sub": "bob", "org": "ACME", "use": "non_display", "ent": ["AAPL"]}),
    )
    .await;
    subscribe(
        &mut bob,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"]}),
    )
    .await
    .unwrap();
    subscribe(
        &mut bob,
        json!({"op": "subscribe", "id": 2, "symbols": ["AAPL"], "stream": "trades"}),
    )
    .await
    .unwrap();
    // Delayed only, on the edge that will be killed.
    let mut carol = connect(edge_b.addr, json!({"sub": "carol", "dly": ["*"]})).await;
    let delayed = subscribe(
        &mut carol,
        json!({"op": "subscribe", "id": 1, "symbols": ["MSFT"]}),
    )
    .await
    .unwrap();
    assert_eq!(delayed["delayed"], json!(["MSFT"]), "{delayed}");
    // Refused: no usage.
    let mut dave = connect(addr_a, json!({"sub": "dave", "ent": ["SPY"]})).await;
    let refused = subscribe(
        &mut dave,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused["code"], "not_entitled", "{refused}");

    // Several flushes, then edge B dies without a word: what it wrote is kept.
    tokio::time::sleep(Duration::from_millis(6 * FLUSH_MS)).await;
    edge_b.kill();
    drop((alice_b, carol));
    // Alice again on edge A, in a second session.
    let mut alice_again = connect(addr_a, alice).await;
    subscribe(
        &mut alice_again,
        json!({"op": "subscribe", "id": 1, "symbols": ["MSFT"]}),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(3 * FLUSH_MS)).await;
    drop((alice_a, alice_again, bob, dave));
    edge_a.stop().await.unwrap();

    let m = month.to_string();
    let cli = Cli::try_parse_from([
        "tickmesh",
        "usage",
        "--nats",
        &nats.url(),
        "--month",
        &m,
        "--format",
        "csv",
    ])
    .unwrap();
    let Command::Usage(args) = cli.command else {
        panic!("not the usage command")
    };
    let summary = tickmesh_cli::usage::report(&args, month).await.unwrap();
    assert_eq!(
        summary,
        format!(
            "month,feed,class,use,users,accounts,sessions\n\
             {m},{FEED},real_time,display,1,1,3\n\
             {m},{FEED},real_time,non_display,1,1,1\n\
             {m},{FEED},delayed,display,1,1,1\n"
        ),
        "alice (ACME) once over two edges with 3 sessions, bob (ACME) non-display, carol \
         delayed from the killed edge, dave nothing"
    );
    let users_args = tickmesh_cli::args::UsageArgs {
        users: true,
        ..args
    };
    let users = tickmesh_cli::usage::report(&users_args, month)
        .await
        .unwrap();
    let lines: Vec<&str> = users.lines().collect();
    assert_eq!(lines.len(), 4, "{users}");
    assert!(
        lines[1].starts_with(&format!("{m},{FEED},real_time,display,alice,ACME,")),
        "{users}"
    );
    assert!(
        lines[3].starts_with(&format!("{m},{FEED},delayed,display,carol,carol,")),
        "no org: the user is the account of record: {users}"
    );
    // A month with nothing recorded is an empty report, not an error.
    let empty = tickmesh_cli::args::UsageArgs {
        users: false,
        ..users_args
    };
    let before = Month {
        year: 2000,
        month: 1,
    };
    assert_eq!(
        tickmesh_cli::usage::report(&empty, before).await.unwrap(),
        "month,feed,class,use,users,accounts,sessions\n"
    );
}
