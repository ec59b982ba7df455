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
    tokio::time::sleep(2 * SECOND).await;
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades","history":0}))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":2,"symbols":["AAPL"],"stream":"bars","tf":"1s","history":10,"interval_ms":250}))
        .await
        .unwrap();
    let msgs = c.collect(5 * SECOND).await.unwrap();
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
