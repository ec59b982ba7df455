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

/// A state told: (state, reason, when the client had it).
type Told = (String, String, std::time::Instant);

/// Per symbol, the states the client was told by `status`, in order, after checking that
/// every snapshot and update shows the state it was last told (a change is never
/// skipped, and never told after the update that made it).
fn told_states(msgs: &[(std::time::Instant, Value)]) -> HashMap<String, Vec<Told>> {
    let mut state: HashMap<String, String> = HashMap::new();
    let mut told: HashMap<String, Vec<Told>> = HashMap::new();
    for (at, v) in msgs {
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
                told.entry(s).or_default().push((
                    now,
                    v["reason"].as_str().unwrap().to_string(),
                    *at,
                ));
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
    // each 3 simulated seconds long (0.3 wall seconds): most halts start and end between
    // two updates of a 1 s client, which must be told of them all the same.
    config.sim.session.speed = 10.0;
    config.sim.session.halts_per_hour = 720.0;
    config.sim.session.halt_s = 3.0;
    let ingest = start_ingest(config);
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut every = subscribed(addr, 0).await;
    let mut conflated = subscribed(addr, 250).await;
    let mut slow = subscribed(addr, 1000).await;
    let (a, b, c) = tokio::join!(
        every.collect(6 * SECOND),
        conflated.collect(6 * SECOND),
        slow.collect(6 * SECOND)
    );
    let end = std::time::Instant::now();
    let every = told_states(&a.unwrap());
    let (conflated, slow) = (told_states(&b.unwrap()), told_states(&c.unwrap()));
    let halts: Vec<_> = every
        .iter()
        .flat_map(|(s, told)| told.iter().map(move |t| (s, t)))
        .filter(|(_, (state, _, _))| state == "halted")
        .collect();
    assert!(halts.len() >= 3, "{every:?}");
    assert!(
        every
            .values()
            .flatten()
            .any(|(state, reason, _)| state == "open" && reason == "trading resumed"),
        "{every:?}"
    );
    // The conflated clients were told of the same changes, in the same order: all but
    // those of their last interval, which may be still on their way to them.
    let states = |told: &[Told]| -> Vec<(String, String)> {
        told.iter()
            .map(|(s, r, _)| (s.clone(), r.clone()))
            .collect()
    };
    for (symbol, told) in &every {
        for (name, client, interval) in [("250 ms", &conflated, 250), ("1 s", &slow, 1000)] {
            let other = states(client.get(symbol).map_or(&[], Vec::as_slice));
            let cutoff = end - Duration::from_millis(interval + 500);
            let settled = told.iter().take_while(|t| t.2 < cutoff).count();
            let told = states(told);
            assert!(
                told.starts_with(&other) && other.len() >= settled,
                "{symbol}: every tick {told:?}, {name} {other:?} ({settled} settled)"
            );
        }
    }
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// A client that sees the symbols delayed only is told each halt and resume `delay_ms`
/// after a real-time client is, as of its tick's `ts`: never sooner, and within a sampling
/// step and a second after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_only_client_is_told_halts_delay_ms_late() {
    const DELAY_MS: u64 = 3000;
    let nats = NatsServer::start().unwrap();
    let mut config = ingest_config(&nats.url(), 1000);
    // Halts of 30 simulated seconds (3 wall seconds): longer than a sampling step.
    config.sim.session.speed = 10.0;
    config.sim.session.halts_per_hour = 720.0;
    config.sim.session.halt_s = 30.0;
    let ingest = start_ingest(config);
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    let mut delayed_config = edge_config(&nats.url());
    delayed_config.auth.anonymous_ent = Vec::new();
    delayed_config.auth.anonymous_dly = vec!["*".into()];
    delayed_config.delayed.delay_ms = DELAY_MS;
    delayed_config.delayed.poll_ms = 100;
    let (delayed_edge, delayed_addr) = start_edge(delayed_config).await.unwrap();
    let mut live = subscribed(addr, 0).await;
    let mut late = subscribed(delayed_addr, 0).await;
    let (a, b) = tokio::join!(live.collect(12 * SECOND), late.collect(12 * SECOND));
    let wall_us = |at: std::time::Instant| {
        let ago = std::time::Instant::now().duration_since(at);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        (now.unwrap() - ago).as_micros() as u64
    };
    let halted = |msgs: &[(std::time::Instant, Value)]| -> Vec<(String, u64, u64)> {
        msgs.iter()
            .filter(|(_, v)| v["type"] == "status" && v["state"] == "halted")
            .map(|(at, v)| {
                let symbol = v["symbol"].as_str().unwrap().to_string();
                (symbol, v["ts"].as_u64().unwrap(), wall_us(*at))
            })
            .collect()
    };
    let (live, late) = (halted(&a.unwrap()), halted(&b.unwrap()));
    assert!(
        !late.is_empty(),
        "no halt told to the delayed client: live {live:?}"
    );
    let mut matched = 0;
    for (symbol, ts, at) in &late {
        assert!(
            ts + DELAY_MS * 1000 <= *at,
            "a halt of {symbol} told {} ms after it, sooner than delay_ms",
            (at - ts) / 1000
        );
        // The same halt, told in real time: delay_ms (and at most a step and a second) later.
        if let Some((_, _, live_at)) = live
            .iter()
            .find(|(s, t, _)| s == symbol && t.abs_diff(*ts) < 1_000_000)
        {
            let later_ms = (at - live_at) / 1000;
            assert!(
                (DELAY_MS - 1000..=DELAY_MS + 2000).contains(&later_ms),
                "the halt of {symbol} reached the delayed client {later_ms} ms after the live one"
            );
            matched += 1;
        }
    }
    assert!(
        matched >= 1,
        "no delayed halt matched a live one: {late:?} vs {live:?}"
    );
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
    delayed_edge.stop().await.unwrap();
}
