//! Fault injection on the whole mesh: a 3-node hub, two regions of two leaf nodes each
//! (their WAN links through the kit's proxy), ingest on the hub, one edge per region.
//! Each test asserts what a user sees: seq never goes backwards, values are fresh after
//! recovery, and sessions in the unaffected region are not disturbed.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tickmesh_core::subject::tick_subject;
use tickmesh_core::{Format, Symbol};
use tickmesh_tests::mesh::{BUCKET, EdgeProcess, HUB_DOMAIN, Mesh, Roamer};
use tickmesh_tests::*;
use tokio::task::JoinHandle;

const A: &str = "region-a";
const B: &str = "region-b";
/// Ticks per second over the 5-symbol test universe (about 200 per symbol).
const RATE: u32 = 1000;
const SECOND: Duration = Duration::from_secs(1);

/// The mesh with ingest publishing and both regions' mirrors holding values.
struct World {
    mesh: Mesh,
    ingest: Option<Service>,
}

async fn world() -> World {
    let mesh = Mesh::start(&[A, B], 2).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(RATE));
    let w = World {
        mesh,
        ingest: Some(ingest),
    };
    // Creating the 3-replica buckets waits for the hub's JetStream, which on a machine
    // busy with the rest of the test run can take a while after the mesh is healthy.
    let deadline = Instant::now() + 40 * SECOND;
    while w.hub_kv("AAPL").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "ingest wrote no md_last/AAPL in 40 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.mesh.create_mirror(A, "AAPL").await.unwrap();
    w.mesh.create_mirror(B, "AAPL").await.unwrap();
    w
}

impl World {
    async fn edge(&self, region: &str) -> (Service, SocketAddr) {
        start_edge(self.mesh.edge_config(region)).await.unwrap()
    }

    /// Every service ran with its least-privilege NATS user and never hit a wall.
    fn assert_no_permission_violations(&self) {
        let found = self.mesh.permission_violations();
        assert!(
            found.is_empty(),
            "permission violations:\n{}",
            found.join("\n")
        );
    }

    async fn stop_ingest(&mut self) {
        if let Some(i) = self.ingest.take() {
            i.stop().await.unwrap();
        }
    }

    /// The hub's `md_last` value of `symbol` (read through the hub's domain).
    async fn hub_kv(&self, symbol: &str) -> Option<Value> {
        let client = self.mesh.hub_client().await.ok()?;
        let js = async_nats::jetstream::with_domain(client, HUB_DOMAIN);
        let kv = js.get_key_value("md_last").await.ok()?;
        let bytes = kv.get(symbol).await.ok()??;
        rmp_serde::from_slice(&bytes).ok()
    }
}

/// A client subscribed to `symbols` (reply received).
async fn subscribed(addr: SocketAddr, symbols: &[&str], interval_ms: u32) -> Client {
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op": "subscribe", "id": 1, "symbols": symbols, "interval_ms": interval_ms}))
        .await
        .unwrap();
    let v = c.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(v["symbols"], json!(symbols), "{v}");
    c
}

type Msgs = Vec<(Instant, Value)>;

/// Collects a client's messages for `dur` in the background; a close fails the test.
fn watch(mut c: Client, dur: Duration) -> JoinHandle<(Client, Msgs)> {
    tokio::spawn(async move {
        let msgs = c.collect(dur).await.unwrap();
        (c, msgs)
    })
}

/// For each symbol, seq strictly increases over snapshots and live ticks.
fn assert_in_order(who: &str, msgs: &Msgs) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for (_, symbol, seq, snapshot, _) in tick_events(msgs) {
        if let Some(prev) = last.get(&symbol) {
            assert!(
                seq > *prev,
                "{who}: {symbol} seq {seq} (snapshot: {snapshot}) after {prev}"
            );
        }
        last.insert(symbol, seq);
    }
}

/// Arrival times of live ticks (any symbol).
fn live_times(msgs: &Msgs) -> Vec<Instant> {
    tick_events(msgs)
        .into_iter()
        .filter(|e| !e.3)
        .map(|e| e.0)
        .collect()
}

/// The longest stretch of [from, to] without a live tick.
fn longest_silence(msgs: &Msgs, from: Instant, to: Instant) -> Duration {
    let mut prev = from;
    let mut longest = Duration::ZERO;
    for t in live_times(msgs)
        .into_iter()
        .filter(|t| *t >= from && *t <= to)
    {
        longest = longest.max(t - prev);
        prev = t;
    }
    longest.max(to.saturating_duration_since(prev))
}

fn live_between(msgs: &Msgs, from: Instant, to: Instant) -> usize {
    live_times(msgs)
        .into_iter()
        .filter(|t| *t >= from && *t < to)
        .count()
}

/// (arrival, lag_ms) of every heartbeat that carries a lag.
fn hb_lags(msgs: &Msgs) -> Vec<(Instant, u64)> {
    msgs.iter()
        .filter(|(_, v)| v["type"] == "hb")
        .filter_map(|(t, v)| v["lag_ms"].as_u64().map(|l| (*t, l)))
        .collect()
}

fn last_seq(msgs: &Msgs, symbol: &str) -> Option<u64> {
    tick_events(msgs)
        .into_iter()
        .filter(|e| e.1 == symbol)
        .map(|e| e.2)
        .next_back()
}

/// A fresh session on `addr` subscribing `symbol` gets a snapshot stamped within `max_age`.
async fn assert_fresh_snapshot(who: &str, addr: SocketAddr, symbol: &str, max_age: Duration) {
    let mut c = subscribed(addr, &[symbol], 0).await;
    let v = c.next_of("snapshot", 5 * SECOND).await.unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let age_us = now_us.saturating_sub(v["ts"].as_u64().unwrap());
    assert!(
        Duration::from_micros(age_us) <= max_age,
        "{who}: snapshot of {symbol} is {age_us} µs old: {v}"
    );
}

fn subject(symbol: &str) -> String {
    tick_subject(&Symbol::parse(symbol).unwrap(), 64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_node_killed_while_ingest_publishes() {
    let mut w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let a = watch(subscribed(addr_a, &["AAPL", "MSFT"], 0).await, 14 * SECOND);
    let b = watch(subscribed(addr_b, &["AAPL", "MSFT"], 0).await, 14 * SECOND);
    let start = Instant::now();
    tokio::time::sleep(2 * SECOND).await;

    // The worst node to lose for the ticks: the leader of ingest's lease. Until JetStream
    // elects a new one, ingest cannot renew, and it stops publishing rather than risk two
    // writers (its fence).
    let lease = format!("KV_{}", w.mesh.ingest_config(RATE).lease.bucket);
    let victim = w.mesh.stream_leader(&lease).await.unwrap();
    let ingest_on = w.mesh.hub_node_of("tickmesh-ingest").await.unwrap();
    eprintln!(
        "killing {} (leads {lease}); ingest is on {}",
        w.mesh.hub[victim].name, w.mesh.hub[ingest_on].name
    );
    let killed = Instant::now();
    w.mesh.hub[victim].kill();

    let (_, ma) = a.await.unwrap();
    let (_, mb) = b.await.unwrap();
    let end = Instant::now();
    for (who, m) in [("region A", &ma), ("region B", &mb)] {
        assert_in_order(who, m);
        let gap = longest_silence(m, start, end);
        eprintln!("{who}: longest gap without a tick {gap:?}");
        assert!(gap < 8 * SECOND, "{who}: no tick for {gap:?}");
        let late = live_between(m, killed + 8 * SECOND, end);
        assert!(late > 100, "{who}: {late} ticks in the last seconds");
    }

    // KV stays readable and keeps being written (a new leader for the R3 stream).
    let first = w
        .hub_kv("AAPL")
        .await
        .expect("md_last readable after the kill");
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = w
            .hub_kv("AAPL")
            .await
            .expect("md_last readable after the kill");
        if now["seq"].as_u64() > first["seq"].as_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "md_last/AAPL not written since {first}"
        );
    }
    assert_fresh_snapshot("region A", addr_a, "NVDA", 3 * SECOND).await;
    assert_fresh_snapshot("region B", addr_b, "NVDA", 3 * SECOND).await;
    w.assert_no_permission_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_node_killed_edge_fails_over_to_the_other_leaf() {
    let mut w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let edge_name = w.mesh.edge_config(A).nats.name;
    let on = |v: &Value| {
        v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == edge_name.as_str())
    };
    let a1 = w.mesh.region(A).leaves[0].monitor("/connz").await.unwrap();
    assert!(on(&a1), "the edge is not on its same-AZ leaf first");

    let mut probe = subscribed(addr_a, &["SPY"], 0).await;
    probe.collect(Duration::from_millis(300)).await.unwrap();
    let a = watch(subscribed(addr_a, &["AAPL", "MSFT"], 0).await, 10 * SECOND);
    let b = watch(subscribed(addr_b, &["AAPL", "MSFT"], 0).await, 10 * SECOND);
    let start = Instant::now();
    tokio::time::sleep(2 * SECOND).await;
    let killed = Instant::now();
    w.mesh.region_mut(A).leaves[0].kill();

    let (mut ca, ma) = a.await.unwrap();
    let (_, mb) = b.await.unwrap();
    let end = Instant::now();
    assert_in_order("region A", &ma);
    assert_in_order("region B", &mb);
    let gap = longest_silence(&ma, start, end);
    eprintln!("region A: longest gap without a tick {gap:?}");
    assert!(gap < 5 * SECOND, "region A: no tick for {gap:?}");
    let late = live_between(&ma, killed + 5 * SECOND, end);
    assert!(late > 100, "region A: {late} ticks after the fail-over");
    let gap_b = longest_silence(&mb, start, end);
    assert!(
        gap_b < SECOND,
        "region B was disturbed: no tick for {gap_b:?}"
    );
    // The session itself never noticed beyond the gap.
    ca.ping(7).await.unwrap();

    let a2 = w.mesh.region(A).leaves[1].monitor("/connz").await.unwrap();
    assert!(on(&a2), "the edge did not move to the other leaf");
    let (status, _) = http_get(addr_a, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    // The probe session, subscribed before the kill, still gets SPY (resubscribed).
    let after = tick_events(&probe.collect(SECOND).await.unwrap());
    assert!(
        after.iter().filter(|e| e.1 == "SPY" && !e.3).count() > 20,
        "SPY stopped after the fail-over"
    );
    let (_, metrics) = http_get(addr_a, "/metrics").await.unwrap();
    for line in [
        "tickmesh_edge_nats_reconnects_total",
        "tickmesh_edge_resyncs_total{cause=\"reconnect\"}",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    assert_fresh_snapshot("region A", addr_a, "NVDA", 3 * SECOND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_region_shows_lag_then_catches_up() {
    let mut w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let symbols = ["AAPL", "MSFT"];
    let mut ca = subscribed(addr_a, &symbols, 250).await;
    let cb = subscribed(addr_b, &symbols, 250).await;
    let before = ca.collect(2 * SECOND).await.unwrap();

    let cut = Instant::now();
    w.mesh.region(A).link.black_hole();
    let b = watch(cb, 14 * SECOND);
    let during = ca.collect(14 * SECOND).await.unwrap();
    let (mut cb, mut during_b) = b.await.unwrap();
    // The feed stops while region A is still cut off, so what region A must show after
    // the cut is exactly the hub's last value, which no live tick will bring.
    w.stop_ingest().await;
    during_b.extend(cb.collect(Duration::from_millis(300)).await.unwrap());
    let mut last: HashMap<&str, u64> = HashMap::new();
    for s in symbols {
        let v = w.hub_kv(s).await.expect("md_last readable on the hub");
        last.insert(s, v["seq"].as_u64().unwrap());
    }
    tokio::time::sleep((cut + 15 * SECOND).saturating_duration_since(Instant::now())).await;
    w.mesh.region(A).link.pass();
    let restored = Instant::now();

    // During the cut: region A hears nothing and its heartbeats say how stale it is;
    // region B does not notice.
    let crossed: Vec<_> = tick_events(&during)
        .into_iter()
        .filter(|e| !e.3 && e.0 >= cut + SECOND)
        .map(|e| (e.0 - cut, e.4))
        .collect();
    assert!(
        crossed.is_empty(),
        "ticks crossed a black-holed link: {crossed:?}"
    );
    let lag = hb_lags(&during).into_iter().map(|(_, l)| l).max().unwrap();
    assert!(lag >= 10_000, "region A's hb lag_ms peaked at {lag}");
    let lag_b = hb_lags(&during_b)
        .into_iter()
        .map(|(_, l)| l)
        .max()
        .unwrap();
    assert!(lag_b < 1500, "region B's hb lag_ms reached {lag_b}");
    let gap_b = longest_silence(&during_b, cut, cut + 13 * SECOND);
    assert!(gap_b < SECOND, "region B went {gap_b:?} without a tick");
    for s in symbols {
        assert_eq!(last_seq(&during_b, s), Some(last[s]), "region B missed {s}");
    }

    // After: region A catches up to the hub's last values without a new tick.
    let mut after = Vec::new();
    let deadline = restored + 20 * SECOND;
    while symbols.iter().any(|s| last_seq(&after, s) != Some(last[s])) {
        assert!(
            Instant::now() < deadline,
            "region A did not catch up within 20 s of the restore: has {:?}, hub has {last:?}",
            symbols.map(|s| last_seq(&after, s))
        );
        after.extend(ca.collect(Duration::from_millis(500)).await.unwrap());
    }
    let caught_up = Instant::now() - restored;

    // And live ticks flow again once the feed is back.
    w.ingest = Some(start_ingest(w.mesh.ingest_config(RATE)));
    let b = watch(cb, 3 * SECOND);
    after.extend(ca.collect(3 * SECOND).await.unwrap());
    let (_, after_b) = b.await.unwrap();
    let all_a: Msgs = before.into_iter().chain(during).chain(after).collect();
    assert_in_order("region A", &all_a);
    assert_in_order(
        "region B",
        &during_b.into_iter().chain(after_b.clone()).collect(),
    );
    for (who, m) in [("region A", &all_a), ("region B", &after_b)] {
        for s in symbols {
            assert!(last_seq(m, s).unwrap() > last[s], "{who}: no new {s} tick");
        }
    }
    let lag_after = hb_lags(&all_a).last().unwrap().1;
    assert!(
        lag_after < 1500,
        "region A's lag_ms is {lag_after} after recovery"
    );
    eprintln!("region A caught up {caught_up:?} after the link came back");
    // It was the edge's resync (the mirror turning fresh again) that brought them.
    let (_, metrics) = http_get(addr_a, "/metrics").await.unwrap();
    for line in [
        "tickmesh_edge_resyncs_total{cause=\"mirror\"}",
        "tickmesh_edge_resync_reads_total{result=\"newer\"}",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    w.assert_no_permission_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_edge_clients_move_to_the_other_edge() {
    let w = world().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tickmesh-test-edge"));
    let mut edge_a = EdgeProcess::start(bin, &w.mesh.edge_config(A))
        .await
        .unwrap();
    let (_eb, addr_b) = w.edge(B).await;
    let symbols = ["AAPL", "MSFT", "SPY"];
    let request = json!({"op": "subscribe", "id": 1, "symbols": symbols, "interval_ms": 100});
    let mut roamers = Vec::new();
    for _ in 0..4 {
        let r = Roamer::connect(vec![edge_a.addr, addr_b], request.clone())
            .await
            .unwrap();
        roamers.push(r);
    }
    let steady = watch(subscribed(addr_b, &["AAPL"], 100).await, 11 * SECOND);
    let start = Instant::now();
    let run = |mut r: Roamer, dur| {
        tokio::spawn(async move {
            r.run_for(dur).await.unwrap();
            r
        })
    };
    let tasks: Vec<_> = roamers.into_iter().map(|r| run(r, 2 * SECOND)).collect();
    let mut roamers = Vec::new();
    for t in tasks {
        roamers.push(t.await.unwrap());
    }
    let before: Vec<HashMap<String, u64>> = roamers.iter().map(|r| r.last_seq.clone()).collect();
    for (i, b) in before.iter().enumerate() {
        assert_eq!(b.len(), 3, "roamer {i} got {b:?} before the kill");
    }

    let killed = Instant::now();
    edge_a.kill();
    let tasks: Vec<_> = roamers.into_iter().map(|r| run(r, 8 * SECOND)).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert!(r.is_connected(), "roamer {i} is not connected");
        assert_eq!(
            r.edges_seen,
            ["edge-region-a", "edge-region-b"],
            "roamer {i} went through {:?}",
            r.edges_seen
        );
        assert_eq!(r.subscribed.len(), 2, "roamer {i} did not resubscribe");
        assert_eq!(r.subscribed[1]["symbols"], json!(symbols));
        for s in symbols {
            let first_new = r
                .accepted
                .iter()
                .find(|(t, sym, seq, _, _)| *t > killed && sym == s && *seq > before[i][s])
                .unwrap_or_else(|| {
                    panic!("roamer {i}: no {s} above {} after the kill", before[i][s])
                });
            eprintln!(
                "roamer {i}: {s} resumed {:?} after the kill",
                first_new.0 - killed
            );
            assert!(
                first_new.0 - killed < 5 * SECOND,
                "roamer {i}: {s} resumed {:?} after the kill",
                first_new.0 - killed
            );
        }
    }
    let (mut c, m) = steady.await.unwrap();
    assert_in_order("region B", &m);
    let gap = longest_silence(&m, start, Instant::now());
    assert!(
        gap < SECOND,
        "region B's own session went {gap:?} without a tick"
    );
    c.ping(3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_subscribed_subjects_cross_a_regions_leaf_link() {
    let mut w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let _b1 = subscribed(addr_b, &["AAPL", "SPY"], 0).await;
    let _b2 = subscribed(addr_b, &["SPY"], 250).await;
    let _a1 = subscribed(addr_a, &["MSFT", "NVDA", "TSLA"], 0).await;
    let want_b: BTreeSet<String> = ["AAPL", "SPY"].map(subject).into();
    let want_a: BTreeSet<String> = ["MSFT", "NVDA", "TSLA"].map(subject).into();
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let (got_b, got_a) = (
            w.mesh.leaf_tick_subjects(B).await.unwrap(),
            w.mesh.leaf_tick_subjects(A).await.unwrap(),
        );
        if got_b == want_b && got_a == want_a {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaf interest: region B {got_b:?} (want {want_b:?}), region A {got_a:?} (want {want_a:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Count what the hub publishes and what it sends region B over the same window.
    let hub = w.mesh.hub_client().await.unwrap();
    let mut all = hub.subscribe("md.>").await.unwrap();
    hub.flush().await.unwrap();
    let out_before = w.mesh.leaf_out_msgs(B).await.unwrap();
    let mut per_subject: HashMap<String, u64> = HashMap::new();
    let window = tokio::time::sleep(3 * SECOND);
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            m = all.next() => {
                *per_subject.entry(m.unwrap().subject.to_string()).or_default() += 1;
            }
        }
    }
    let out = w.mesh.leaf_out_msgs(B).await.unwrap() - out_before;
    eprintln!("per subject {per_subject:?}; region B's link carried {out}");
    let total: u64 = per_subject.values().sum();
    let wanted: u64 = want_b
        .iter()
        .map(|s| per_subject.get(s).copied().unwrap_or(0))
        .sum();
    assert!(total > 2000, "only {total} ticks published in 3 s");
    // Region B's link carries its two symbols, plus the mirror's few KV updates and
    // JetStream flow control: far from the whole feed.
    assert!(
        out <= wanted + wanted / 5 + 300,
        "region B's link carried {out} messages; its symbols had {wanted} of {total}"
    );
    assert!(
        out >= wanted * 9 / 10,
        "region B's link carried {out} messages, fewer than its symbols' {wanted}"
    );

    // That a region cannot send ticks the other way: tests/tests/nats_security.rs.
    w.assert_no_permission_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_ingest_continues_above_the_last_seq() {
    let mut w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let symbols = ["AAPL", "MSFT"];
    let a = watch(subscribed(addr_a, &symbols, 0).await, 7 * SECOND);
    let b = watch(subscribed(addr_b, &symbols, 0).await, 7 * SECOND);
    tokio::time::sleep(2 * SECOND).await;
    w.stop_ingest().await;
    let old = w.hub_kv("AAPL").await.unwrap();
    let restarted = Instant::now();
    w.ingest = Some(start_ingest(w.mesh.ingest_config(RATE)));

    for (who, task) in [("region A", a), ("region B", b)] {
        let (_, m) = task.await.unwrap();
        assert_in_order(who, &m);
        for s in symbols {
            let events = tick_events(&m);
            let before = events
                .iter()
                .filter(|e| e.1 == s && e.0 < restarted)
                .map(|e| (e.2, e.4["epoch"].as_u64().unwrap()))
                .next_back()
                .unwrap();
            let after = events
                .iter()
                .find(|e| e.1 == s && e.0 > restarted && !e.3)
                .unwrap_or_else(|| panic!("{who}: no {s} tick after the restart"));
            assert!(
                after.2 > before.0,
                "{who}: {s} seq {} after {}",
                after.2,
                before.0
            );
            assert!(
                after.4["epoch"].as_u64().unwrap() > before.1,
                "{who}: {s} epoch did not move forward"
            );
            assert!(
                after.0 - restarted < 5 * SECOND,
                "{who}: {s} took {:?}",
                after.0 - restarted
            );
        }
    }
    let new = w.hub_kv("AAPL").await.unwrap();
    assert!(
        new["seq"].as_u64() > old["seq"].as_u64(),
        "md_last kept {old}"
    );
    assert!(new["epoch"].as_u64() > old["epoch"].as_u64());
    w.assert_no_permission_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_then_reset_region_link_keeps_order() {
    let w = world().await;
    let (_ea, addr_a) = w.edge(A).await;
    let (_eb, addr_b) = w.edge(B).await;
    let mut a = subscribed(addr_a, &["AAPL", "MSFT"], 0).await;
    let b = watch(subscribed(addr_b, &["AAPL", "MSFT"], 0).await, 9 * SECOND);
    let start = Instant::now();

    // A WAN with 150 ms one way: region A's sessions see it in hb.lag_ms, nothing else.
    w.mesh.region(A).link.delay(Duration::from_millis(150));
    a.collect(SECOND).await.unwrap();
    let slow = a.collect(3 * SECOND).await.unwrap();
    let lags: Vec<u64> = hb_lags(&slow).into_iter().map(|(_, l)| l).collect();
    assert!(lags.len() >= 2, "heartbeats: {lags:?}");
    assert!(
        lags.iter().all(|l| *l >= 150),
        "hb lag_ms under a 150 ms link: {lags:?}"
    );
    assert!(live_between(&slow, start, Instant::now()) > 500);

    // Then every connection on the link is reset: the leaf nodes redial and ticks resume.
    w.mesh.region(A).link.pass();
    let reset = Instant::now();
    w.mesh.region(A).link.reset();
    let after = a.collect(5 * SECOND).await.unwrap();
    let (_, mb) = b.await.unwrap();
    let all: Msgs = slow.into_iter().chain(after.clone()).collect();
    assert_in_order("region A", &all);
    let resumed = live_times(&after)
        .into_iter()
        .find(|t| *t > reset + Duration::from_millis(100))
        .expect("no tick after the reset");
    eprintln!(
        "region A: ticks resumed {:?} after the reset",
        resumed - reset
    );
    assert!(
        resumed - reset < 4 * SECOND,
        "ticks resumed {:?} after the reset",
        resumed - reset
    );
    assert!(live_between(&after, reset + 3 * SECOND, Instant::now()) > 200);
    assert_in_order("region B", &mb);
    let gap_b = longest_silence(&mb, start, Instant::now());
    assert!(gap_b < SECOND, "region B went {gap_b:?} without a tick");
}

/// The value of an unlabelled gauge in an edge's `/metrics`.
async fn gauge(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A series of `tickmesh_edge_kv_reads_total` in an edge's `/metrics` (0 when absent).
async fn kv_reads(addr: SocketAddr, source: &str, result: &str) -> f64 {
    let (source, result) = (
        format!("source=\"{source}\""),
        format!("result=\"{result}\""),
    );
    let (_, text) = http_get(addr, "/metrics").await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("tickmesh_edge_kv_reads_total{"))
        .filter(|l| l.contains(&source) && l.contains(&result))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With the region's mirror fresh, a snapshot of a listed symbol that has no value is read
/// from the mirror only: its miss is the answer, and no read crosses to the hub (else any
/// client could send reads across the WAN by asking for valueless symbols).
async fn a_fresh_mirrors_miss_is_final(mesh: &Mesh, addr: SocketAddr) {
    // As ingest, the one writer of md_ref.
    let ingest = mesh.pki.connect("ingest", &mesh.hub_urls()).await.unwrap();
    let refdata = async_nats::jetstream::new(ingest)
        .get_key_value("md_ref")
        .await
        .unwrap();
    let valueless = ["ZZQA", "ZZQB", "ZZQC"];
    for s in valueless {
        let instrument = json!({"symbol": s, "kind": "equity"}).to_string();
        refdata
            .put(format!("instr.{s}"), instrument.into())
            .await
            .unwrap();
    }
    let hub_before = kv_reads(addr, "hub", "hit").await + kv_reads(addr, "hub", "miss").await;
    let misses_before = kv_reads(addr, "mirror", "miss").await;
    // Listed once the edge's md_ref watch has the entries: a subscribe then succeeds.
    let deadline = Instant::now() + 20 * SECOND;
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    for id in 1.. {
        c.send(json!({"op": "subscribe", "id": id, "symbols": valueless}))
            .await
            .unwrap();
        let v = c.next_non_hb(5 * SECOND).await.unwrap();
        if v["type"] == "subscribed" && v["symbols"] == json!(valueless) {
            break;
        }
        assert!(Instant::now() < deadline, "never listed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + 10 * SECOND;
    while kv_reads(addr, "mirror", "miss").await < misses_before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "the mirror was not asked for the valueless symbols"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A read of the hub after a miss would follow within milliseconds.
    tokio::time::sleep(SECOND).await;
    let hub_after = kv_reads(addr, "hub", "hit").await + kv_reads(addr, "hub", "miss").await;
    assert_eq!(
        hub_after, hub_before,
        "reads crossed to the hub after a fresh mirror's miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_region_keeps_its_mirror_through_a_leaf_loss() {
    let mut mesh = Mesh::start(&[A], 3).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(RATE));
    // The operator creates the mirror with three replicas (an edge may not create a
    // stream); the edge reads it.
    let operator = mesh.region_client(A).await.unwrap();
    let deadline = Instant::now() + 20 * SECOND;
    while let Err(e) =
        tickmesh_edge::nats::ensure_mirror(&operator, A, BUCKET, Some(HUB_DOMAIN), 3).await
    {
        assert!(Instant::now() < deadline, "no mirror: {e:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (edge, addr) = start_edge(mesh.edge_config(A)).await.unwrap();
    let deadline = Instant::now() + 30 * SECOND;
    while gauge(addr, "tickmesh_edge_kv_mirror_fresh").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the edge's mirror never turned fresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader, replicas) = mesh
        .region_stream_leader(A, "KV_md_last")
        .await
        .expect("no node of the region leads the mirror");
    assert_eq!(replicas, 3, "the mirror has {replicas} replicas");
    a_fresh_mirrors_miss_is_final(&mesh, addr).await;

    let region = mesh.region_client(A).await.unwrap();
    let js = async_nats::jetstream::ContextBuilder::new()
        .domain(A)
        .timeout(SECOND)
        .build(region);
    let seq_of = |bytes: &[u8]| rmp_serde::from_slice::<Value>(bytes).unwrap()["seq"].as_u64();
    let kv = js.get_key_value(BUCKET).await.unwrap();
    let before = seq_of(&kv.get("AAPL").await.unwrap().unwrap());
    eprintln!(
        "killing {} (leads the mirror)",
        mesh.region(A).leaves[leader].name
    );
    let killed = Instant::now();
    mesh.region_mut(A).leaves[leader].kill();

    // The region's mirror answers again, with values newer than before the kill.
    let recovered = loop {
        if let Ok(kv) = js.get_key_value(BUCKET).await
            && let Ok(Some(v)) = kv.get("AAPL").await
            && seq_of(&v) > before
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < 20 * SECOND,
            "the mirror is not readable 20 s after its leader died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("mirror readable and current {recovered:?} after the kill");
    let deadline = Instant::now() + 20 * SECOND;
    while gauge(addr, "tickmesh_edge_kv_mirror_fresh").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the edge never found its mirror fresh again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "the edge reads its mirror again {:?} after the kill",
        killed.elapsed()
    );
    assert_fresh_snapshot("region A", addr, "NVDA", 3 * SECOND).await;
    edge.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
