//! End-to-end live bars: ingest folds its prints into bars (1s to 1d) and publishes them;
//! a `bars` subscription gets its history and the bar in progress, then updates, and each
//! bar once more with `final: true` when it closes. The final bars equal the bars a
//! client computes from the prints of a tape subscription.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const S: u64 = 1_000_000;

/// (open, high, low, close, volume, trades) of a bar.
type Ohlcv = (f64, f64, f64, f64, u64, u64);

fn ohlcv(b: &Value) -> Ohlcv {
    let f = |k: &str| b[k].as_f64().unwrap();
    let u = |k: &str| b[k].as_u64().unwrap();
    (
        f("open"),
        f("high"),
        f("low"),
        f("close"),
        u("volume"),
        u("trades"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_bars_are_the_bars_of_the_prints_and_each_closes_once() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let mut config = edge_config(&nats.url());
    open_anonymous(&mut config.auth);
    let (edge, addr) = start_edge(config).await.unwrap();
    // The bars of the 1.5 s between the live subscription and the read of the history
    // (a final among them) reach the edge both ways: each must still close once.
    tickmesh_edge::fault::delay_history(1500);
    tokio::time::sleep(2 * SECOND).await;
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades","history":0}))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":2,"symbols":["AAPL"],"stream":"bars","tf":"1s","history":10,"interval_ms":250}))
        .await
        .unwrap();
    // The history comes after the 1.5 s delay: 7 s leaves 5 of finals to compare.
    let msgs = c.collect(7 * SECOND).await.unwrap();
    c.send(json!({"op":"subscribe","id":3,"symbols":["AAPL"],"stream":"bars"}))
        .await
        .unwrap();
    let no_tf = c.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(no_tf["code"], "bad_request", "{no_tf}");
    ingest.stop().await.unwrap();

    let subscribed: Vec<&Value> = msgs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "subscribed" && v["stream"] == "bars")
        .collect();
    assert_eq!(subscribed.len(), 1);
    assert_eq!(
        (
            subscribed[0]["tf"].as_str(),
            subscribed[0]["interval_ms"].as_u64()
        ),
        (Some("1s"), Some(250))
    );
    // The history first: closed bars, oldest first, then the bar in progress.
    let bars: Vec<&Value> = msgs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "bars")
        .collect();
    assert_eq!(bars[0]["snapshot"], true, "{}", bars[0]);
    let history = bars[0]["bars"].as_array().unwrap();
    assert!(history.len() >= 2, "{}", bars[0]);
    let finals_in_history = history.iter().filter(|b| b["final"] == true).count();
    assert!((1..=10).contains(&finals_in_history));
    // Prints by second, as the tape gave them.
    let mut by_second: BTreeMap<u64, Vec<(f64, u64)>> = BTreeMap::new();
    for (_, v) in &msgs {
        if v["type"] != "trades" {
            continue;
        }
        for t in v["trades"].as_array().unwrap() {
            let ts = t["ts"].as_u64().unwrap();
            by_second
                .entry(ts - ts % S)
                .or_default()
                .push((t["price"].as_f64().unwrap(), t["size"].as_u64().unwrap()));
        }
    }
    let first_full = *by_second.keys().next().unwrap() + S;
    let mut finals: BTreeMap<u64, Ohlcv> = BTreeMap::new();
    let mut live_updates = 0;
    for v in &bars[1..] {
        assert_eq!(v["tf"], "1s");
        for b in v["bars"].as_array().unwrap() {
            assert_eq!(b["symbol"], "AAPL");
            let t = b["t"].as_u64().unwrap();
            if b["final"] == true {
                assert!(finals.insert(t, ohlcv(b)).is_none(), "bar {t} closed twice");
            } else {
                live_updates += 1;
                assert!(
                    !finals.contains_key(&t),
                    "an update of bar {t} after it closed"
                );
            }
        }
    }
    assert!(live_updates > 0, "no bar in progress went out");
    let mut compared = 0;
    for (t, bar) in finals.range(first_full..) {
        let Some(prints) = by_second.get(t) else {
            panic!("a final bar of {t} with no print on the tape");
        };
        let (open, close) = (prints[0].0, prints.last().unwrap().0);
        let high = prints.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        let low = prints.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let volume = prints.iter().map(|p| p.1).sum::<u64>();
        assert_eq!(
            *bar,
            (open, high, low, close, volume, prints.len() as u64),
            "bar {t}"
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} bars compared");
    edge.stop().await.unwrap();
}

/// Node a dies mid-bar; node b takes the feed over. The bars in progress go on from what
/// a left in the stream: b's minute bar counts a's prints too (not a new bar from zero),
/// a second bar a never closed is closed by b, and no bar is ever closed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_goes_on_with_the_bars_in_progress_and_never_closes_one_twice() {
    use futures_util::StreamExt;
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("bar.*.*.AAPL").await.unwrap();
    let node = |name: &str| {
        let mut c = ingest_config(&nats.url(), 1000);
        c.lease = tickmesh_ingest::lease::LeaseConfig {
            name: "feed-a".into(),
            ttl_ms: 600,
            node: Some(name.into()),
            ..Default::default()
        };
        c
    };
    let a = tokio::spawn(tickmesh_ingest::run(node("node-a"), std::future::pending()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop_b = tokio_util::sync::CancellationToken::new();
    let token = stop_b.clone();
    let b = tokio::spawn(tickmesh_ingest::run(node("node-b"), async move {
        token.cancelled().await
    }));
    let mut bars = Vec::new();
    let start = std::time::Instant::now();
    let mut killed = None;
    while start.elapsed() < 7 * SECOND {
        if killed.is_none() && start.elapsed() > 3 * SECOND {
            // Node a crashes: no release, no last word.
            a.abort();
            killed = Some(bars.len());
        }
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            bars.push(tickmesh_core::bar::decode_wire(&msg.payload).unwrap());
        }
    }
    stop_b.cancel();
    b.await.unwrap().unwrap();
    let killed = killed.unwrap();
    let (before, after) = bars.split_at(killed);
    // No bar is closed twice.
    let mut finals = std::collections::HashSet::new();
    for bar in bars.iter().filter(|b| b.closed) {
        assert!(
            finals.insert((bar.tf, bar.t)),
            "{:?} {} closed twice",
            bar.tf,
            bar.t
        );
    }
    // The minute bar in progress when a died: b's first update of it counts at least
    // the prints a had sent.
    let m1 = tickmesh_core::bar::Timeframe::M1;
    let a_last = before.iter().rev().find(|b| b.tf == m1).unwrap();
    let b_first = after.iter().find(|b| b.tf == m1 && b.t == a_last.t);
    if let Some(b_first) = b_first {
        // An update counts more prints; a final (the minute turned during the
        // fail-over, and b closed a's bar) may count just a's.
        let goes_on = match b_first.closed {
            true => b_first.trades >= a_last.trades,
            false => b_first.trades > a_last.trades,
        };
        assert!(
            goes_on && b_first.open == a_last.open,
            "b restarted the minute's bar: a had {a_last:?}, b sent {b_first:?}"
        );
    } else {
        // The minute turned during the fail-over: b closed a's bar instead.
        assert!(
            finals.contains(&(m1, a_last.t)),
            "a's minute bar was never closed"
        );
    }
    // The last second a sent an update of was closed (by a, or by b when a died first).
    let s1 = tickmesh_core::bar::Timeframe::S1;
    let a_second = before
        .iter()
        .rev()
        .find(|b| b.tf == s1 && !b.closed)
        .unwrap();
    let closed = bars
        .iter()
        .find(|b| b.tf == s1 && b.t == a_second.t && b.closed);
    assert!(
        closed.is_some(),
        "the second a left open was never closed: {a_second:?}"
    );
}
