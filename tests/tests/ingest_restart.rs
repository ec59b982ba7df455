//! Restarting ingest keeps every symbol's seq increasing, even when the wall clock is
//! behind what an earlier run stamped.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::{decode_wire, encode_wire};
use tickmesh_ingest::lease::LeaseValue;
use tickmesh_tests::*;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Every tick on `md.>` for `dur`.
async fn capture(sub: &mut async_nats::Subscriber, dur: Duration) -> Vec<Tick> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + dur;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push(decode_wire(&msg.payload).unwrap());
    }
    out
}

async fn subscribe_all(url: &str) -> async_nats::Subscriber {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .connect(url)
        .await
        .unwrap();
    let sub = client.subscribe("md.>").await.unwrap();
    client.flush().await.unwrap();
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_symbol_keeps_increasing_across_restarts() {
    let nats = NatsServer::start().unwrap();
    let mut sub = subscribe_all(&nats.url()).await;
    let mut ticks = Vec::new();
    for _ in 0..3 {
        let ingest = start_ingest(ingest_config(&nats.url(), 2000));
        ticks.extend(capture(&mut sub, Duration::from_millis(900)).await);
        ingest.stop().await.unwrap();
    }
    ticks.extend(capture(&mut sub, Duration::from_millis(300)).await);

    let mut epochs: Vec<u64> = ticks.iter().map(|t| t.epoch).collect();
    epochs.dedup();
    assert_eq!(epochs.len(), 3, "one epoch per run, in order: {epochs:?}");
    let mut last: HashMap<String, u64> = HashMap::new();
    for t in &ticks {
        if let Some(prev) = last.insert(t.symbol.clone(), t.seq) {
            assert!(t.seq > prev, "{} went from {prev} to {}", t.symbol, t.seq);
        }
    }
    for pair in epochs.windows(2) {
        let before = ticks
            .iter()
            .filter(|t| t.epoch == pair[0])
            .map(|t| t.seq)
            .max();
        assert!(
            pair[1] > before.unwrap(),
            "a new epoch starts above every seq before it"
        );
    }
    // Options and underlyings alike (5 listed + 20 options in the test universe).
    assert!(last.len() >= 20, "{} symbols", last.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_what_was_stamped_cannot_reorder() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // An earlier run, on a clock an hour ahead, left AAPL at this seq in md_last.
    let ahead = now_us() + 3_600_000_000;
    let last = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "md_last".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let old = Tick {
        symbol: "AAPL".into(),
        seq: ahead,
        epoch: ahead - 10,
        ts: ahead,
        last: Some(1.0),
        ..Tick::default()
    };
    last.put("AAPL", encode_wire(&old).into()).await.unwrap();

    let mut sub = subscribe_all(&nats.url()).await;
    let ingest = start_ingest(ingest_config(&nats.url(), 2000));
    let ticks = capture(&mut sub, Duration::from_millis(800)).await;
    ingest.stop().await.unwrap();
    // What the first run published while it was stopping.
    capture(&mut sub, Duration::from_millis(300)).await;
    let aapl = ticks.iter().find(|t| t.symbol == "AAPL").unwrap();
    assert!(
        aapl.seq > ahead,
        "AAPL restarted at {} below {ahead}",
        aapl.seq
    );
    assert!(
        ticks.iter().all(|t| t.epoch > ahead),
        "one epoch for the feed"
    );

    // A previous lease holder recorded a bound two hours ahead: the next epoch is above it.
    let bound = now_us() + 7_200_000_000;
    let lease = js.get_key_value("md_lease").await.unwrap();
    let value = LeaseValue {
        holder: "old-node".into(),
        epoch: ahead,
        seq_bound: bound,
        released: true,
        renewed_us: now_us(),
    };
    lease
        .put("main", serde_json::to_vec(&value).unwrap().into())
        .await
        .unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 2000));
    let ticks = capture(&mut sub, Duration::from_millis(800)).await;
    ingest.stop().await.unwrap();
    assert!(!ticks.is_empty());
    assert!(
        ticks.iter().all(|t| t.epoch > bound),
        "epoch below the lease's bound"
    );
}
