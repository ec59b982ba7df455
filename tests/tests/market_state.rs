//! End-to-end market state: the simulator halts single names, and every client hears of
//! each change as a `status` right before the first update in the new state, whether it
//! takes every tick or a conflated stream.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"];

async fn subscribed(addr: std::net::SocketAddr, interval_ms: u32) -> Client {
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":SYMBOLS,"interval_ms":interval_ms}))
        .await
        .unwrap();
    let first = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(first["type"], "subscribed", "{first}");
    c
}

/// Per symbol, the states the client was told by `status`, in order, after checking that
/// every snapshot and update shows the state it was last told (a change is never
/// skipped, and never told after the update that made it).
fn told_states(msgs: &[(std::time::Instant, Value)]) -> HashMap<String, Vec<(String, String)>> {
    let mut state: HashMap<String, String> = HashMap::new();
    let mut told: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (_, v) in msgs {
        let symbol = |t: &Value| t["symbol"].as_str().unwrap().to_string();
        let shows = |t: &Value| t["state"].as_str().unwrap().to_string();
        match v["type"].as_str() {
            Some("snapshot") => {
                state.insert(symbol(v), shows(v));
            }
            Some("status") if v.get("state").is_some() => {
                let (s, now) = (symbol(v), shows(v));
                assert_ne!(state.get(&s), Some(&now), "told again: {v}");
                assert!(!v["stale"].as_bool().unwrap(), "{v}");
                assert!(v["ts"].as_u64().unwrap() > 0, "{v}");
                state.insert(s.clone(), now.clone());
                told.entry(s)
                    .or_default()
                    .push((now, v["reason"].as_str().unwrap().to_string()));
            }
            Some("ticks") => {
                for t in v["ticks"].as_array().unwrap() {
                    assert_eq!(state.get(&symbol(t)), Some(&shows(t)), "untold: {t}");
                }
            }
            _ => {}
        }
    }
    told
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halts_reach_every_client_as_status_before_the_ticks_in_the_new_state() {
    let nats = NatsServer::start().unwrap();
    let mut config = ingest_config(&nats.url(), 1000);
    // Ten simulated seconds per second; a halt every 5 simulated seconds on average,
    // each 10 simulated seconds long (one wall second).
    config.sim.session.speed = 10.0;
    config.sim.session.halts_per_hour = 720.0;
    config.sim.session.halt_s = 10.0;
    let ingest = start_ingest(config);
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut every = subscribed(addr, 0).await;
    let mut conflated = subscribed(addr, 250).await;
    let (a, b) = tokio::join!(every.collect(6 * SECOND), conflated.collect(6 * SECOND));
    let (every, conflated) = (told_states(&a.unwrap()), told_states(&b.unwrap()));
    let halts: Vec<_> = every
        .iter()
        .flat_map(|(s, told)| told.iter().map(move |t| (s, t)))
        .filter(|(_, (state, _))| state == "halted")
        .collect();
    assert!(halts.len() >= 3, "{every:?}");
    assert!(
        every
            .values()
            .flatten()
            .any(|(state, reason)| state == "open" && reason == "trading resumed"),
        "{every:?}"
    );
    // The conflated client was told of the same changes, in the same order (the last one
    // may be still on its way to it).
    for (symbol, told) in &every {
        let other = conflated.get(symbol).cloned().unwrap_or_default();
        assert!(
            told.starts_with(&other) && told.len() - other.len() <= 1,
            "{symbol}: every tick {told:?}, conflated {other:?}"
        );
    }
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}
