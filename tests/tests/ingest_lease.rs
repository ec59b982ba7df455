//! The feed lease against a real nats-server: one holder at a time, a standby takes over
//! only after the holder is gone, and seq keeps increasing across the fail-over.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tickmesh_core::codec::decode_wire;
use tickmesh_ingest::lease::{Lease, LeaseConfig, LeaseValue};
use tickmesh_tests::*;
use tokio_util::sync::CancellationToken;

const TTL_MS: u64 = 600;

fn lease_config(node: &str) -> LeaseConfig {
    LeaseConfig {
        name: "feed-a".into(),
        ttl_ms: TTL_MS,
        node: Some(node.into()),
        ..LeaseConfig::default()
    }
}

async fn open(url: &str, node: &str) -> Lease {
    let client = async_nats::connect(url).await.unwrap();
    Lease::open(&async_nats::jetstream::new(client), &lease_config(node), 1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waits_while_the_holder_renews_and_takes_over_after_it_dies() {
    let nats = NatsServer::start().unwrap();
    let (a, b) = (open(&nats.url(), "a").await, open(&nats.url(), "b").await);
    let never = CancellationToken::new();
    let held_a = a.acquire(&never).await.unwrap();
    held_a.start_term(1_000_000).await.unwrap();
    assert!(held_a.is_valid());

    let standby = tokio::spawn(async move {
        let never = CancellationToken::new();
        let held = b.acquire(&never).await.unwrap();
        (Instant::now(), held)
    });
    // Several ttls pass: a keeps renewing, b keeps waiting.
    tokio::time::sleep(Duration::from_millis(4 * TTL_MS)).await;
    assert!(
        !standby.is_finished(),
        "the standby took a lease that was being renewed"
    );
    assert!(held_a.is_valid());

    // a dies without releasing (its renewals stop).
    let died = Instant::now();
    drop(held_a);
    let (took, held_b) = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("the standby takes over")
        .unwrap();
    let waited = took - died;
    assert!(
        waited >= Duration::from_millis(TTL_MS * 2 / 3),
        "took over after {waited:?}: before the old holder had fenced itself"
    );
    assert!(held_b.is_valid());
    // The new holder learns how far the old one could have stamped.
    assert!(held_b.prior_bound().await > 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_was_taken_stops_and_release_hands_over_at_once() {
    let nats = NatsServer::start().unwrap();
    let a = open(&nats.url(), "a").await;
    let never = CancellationToken::new();
    let held = a.acquire(&never).await.unwrap();

    // Another node overwrites the entry (as after a partition): a must notice and stop.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("md_lease")
        .await
        .unwrap();
    let other = LeaseValue {
        holder: "intruder".into(),
        ..LeaseValue::default()
    };
    kv.put("feed-a", serde_json::to_vec(&other).unwrap().into())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_millis(3 * TTL_MS), held.lost())
        .await
        .expect("the holder notices it lost the lease");
    assert!(!held.is_valid());
    drop(held);

    // A released lease is taken without waiting for the ttl.
    let (x, y) = (open(&nats.url(), "x").await, open(&nats.url(), "y").await);
    kv.delete("feed-a").await.unwrap();
    let held_x = x.acquire(&never).await.unwrap();
    let waiting = tokio::spawn(async move {
        let never = CancellationToken::new();
        y.acquire(&never).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    held_x.release().await;
    let held_y = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        released.elapsed() < Duration::from_millis(TTL_MS),
        "hand-over took {:?}",
        released.elapsed()
    );
    assert!(held_y.is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_never_publish_together_and_seq_keeps_increasing_across_fail_over() {
    let nats = NatsServer::start().unwrap();
    let mut sub = subscribe_all(&nats.url()).await;
    let node = |name: &str| {
        let mut c = ingest_config(&nats.url(), 2000);
        c.lease = lease_config(name);
        c
    };
    let a = tokio::spawn(tickmesh_ingest::run(node("node-a"), std::future::pending()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop_b = CancellationToken::new();
    let token = stop_b.clone();
    let b = tokio::spawn(tickmesh_ingest::run(node("node-b"), async move {
        token.cancelled().await
    }));

    let mut ticks = Vec::new();
    let mut killed = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if killed.is_none() && Instant::now() + Duration::from_secs(6) > deadline {
            // Node a crashes: no release, its renewals stop with it.
            a.abort();
            killed = Some(Instant::now());
        }
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            ticks.push((Instant::now(), decode_wire(&msg.payload).unwrap()));
        }
    }
    stop_b.cancel();
    b.await.unwrap().unwrap();
    let killed = killed.unwrap();

    let mut epochs: Vec<u64> = ticks.iter().map(|(_, t)| t.epoch).collect();
    epochs.dedup();
    assert_eq!(
        epochs.len(),
        2,
        "one epoch per node, never interleaved: {epochs:?}"
    );
    let (first_b, _) = ticks.iter().find(|(_, t)| t.epoch == epochs[1]).unwrap();
    assert!(
        *first_b >= killed + Duration::from_millis(TTL_MS * 2 / 3),
        "node b published {:?} after node a died",
        *first_b - killed
    );
    let max_a = ticks
        .iter()
        .filter(|(_, t)| t.epoch == epochs[0])
        .map(|(_, t)| t.seq)
        .max()
        .unwrap();
    assert!(
        epochs[1] > max_a,
        "node b's epoch is above every seq of node a"
    );
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (_, t) in &ticks {
        if let Some(prev) = last.insert(&t.symbol, t.seq) {
            assert!(t.seq > prev, "{}: {} after {prev}", t.symbol, t.seq);
        }
    }
    assert!(ticks.iter().filter(|(_, t)| t.epoch == epochs[1]).count() > 1000);
}
