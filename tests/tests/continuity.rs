//! End-to-end continuity: a conflated update says which ticks it folds (`from_seq`), and
//! ticks that never reached the edge are told as a `gap` before the symbol's next update.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);

/// A client subscribed to AAPL at `interval_ms`, past its `subscribed` reply.
async fn subscribed(addr: std::net::SocketAddr, interval_ms: u32) -> Client {
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":interval_ms}))
        .await
        .unwrap();
    let first = c.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(first["type"], "subscribed", "{first}");
    c
}

/// What a client saw of AAPL, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Snapshot(u64),
    /// An update: its `from_seq` (its seq when absent) and seq.
    Update(u64, u64),
    Gap(u64, u64, String),
}

fn seen(msgs: &[(std::time::Instant, Value)]) -> Vec<Seen> {
    let mut out = Vec::new();
    for (_, v) in msgs {
        match v["type"].as_str() {
            Some("snapshot") => out.push(Seen::Snapshot(v["seq"].as_u64().unwrap())),
            Some("ticks") => {
                for t in v["ticks"].as_array().unwrap() {
                    let seq = t["seq"].as_u64().unwrap();
                    let from = t.get("from_seq").map_or(seq, |f| f.as_u64().unwrap());
                    assert!(from < seq || t.get("from_seq").is_none(), "{t}");
                    out.push(Seen::Update(from, seq));
                }
            }
            Some("gap") => {
                assert_eq!(v["symbol"], "AAPL", "{v}");
                out.push(Seen::Gap(
                    v["from_seq"].as_u64().unwrap(),
                    v["to_seq"].as_u64().unwrap(),
                    v["reason"].as_str().unwrap().to_string(),
                ));
            }
            _ => {}
        }
    }
    out
}

/// The seqs a client's updates stand for after its snapshot, checking that each update
/// starts right after the previous one or after the gap told before it. Returns the
/// covered seqs and the gaps other than a `snapshot` gap (the ticks between a snapshot
/// read from KV, which lags the stream, and the first tick the edge received once it
/// subscribed to the symbol).
fn covered(seen: &[Seen]) -> (Vec<u64>, Vec<(u64, u64, String)>) {
    let mut last = None;
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    let mut next_from = None;
    for s in seen {
        match s {
            Seen::Snapshot(seq) => {
                assert!(last.is_none(), "a second snapshot: {seen:?}");
                last = Some(*seq);
                next_from = Some(seq + 1);
            }
            Seen::Gap(from, to, reason) => {
                let expected = next_from.expect("a gap before the snapshot");
                assert!(
                    *from >= expected && to >= from,
                    "{s:?} after {last:?}: {seen:?}"
                );
                if reason == "snapshot" {
                    assert!(seqs.is_empty(), "a snapshot gap after updates: {seen:?}");
                } else {
                    gaps.push((*from, *to, reason.clone()));
                }
                next_from = Some(to + 1);
            }
            Seen::Update(from, seq) => {
                assert_eq!(Some(*from), next_from, "{s:?} after {last:?}");
                seqs.extend(*from..=*seq);
                last = Some(*seq);
                next_from = Some(seq + 1);
            }
        }
    }
    (seqs, gaps)
}

/// nats-server, ingest at 2,000 ticks/s, an edge, and two clients of AAPL: one at every
/// tick, one at 250 ms.
struct Mesh {
    _nats: NatsServer,
    ingest: Service,
    edge: Service,
    every: Client,
    conflated: Client,
}

impl Mesh {
    async fn start() -> Mesh {
        let nats = NatsServer::start().unwrap();
        let ingest = start_ingest(ingest_config(&nats.url(), 2000));
        let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let every = subscribed(addr, 0).await;
        let conflated = subscribed(addr, 250).await;
        Mesh {
            _nats: nats,
            ingest,
            edge,
            every,
            conflated,
        }
    }

    async fn stop(self) {
        self.ingest.stop().await.unwrap();
        self.edge.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflated_session_s_updates_stand_for_exactly_the_ticks_an_every_tick_session_gets() {
    let mut m = Mesh::start().await;
    let (a, b) = tokio::join!(m.every.collect(3 * SECOND), m.conflated.collect(3 * SECOND));
    let (a, b) = (seen(&a.unwrap()), seen(&b.unwrap()));
    let (every_seqs, every_gaps) = covered(&a);
    let (conflated_seqs, conflated_gaps) = covered(&b);
    assert!(
        every_gaps.is_empty() && conflated_gaps.is_empty(),
        "{a:?} {b:?}"
    );
    // The every-tick session got each tick; the conflated one a few updates, which stand
    // for every tick between them, the same ticks.
    let updates = b.iter().filter(|s| matches!(s, Seen::Update(..))).count();
    assert!((8..=14).contains(&updates), "{updates} updates: {b:?}");
    assert!(
        b.iter()
            .any(|s| matches!(s, Seen::Update(from, seq) if from < seq)),
        "no update folded ticks: {b:?}"
    );
    let (lo, hi) = (conflated_seqs[0], *conflated_seqs.last().unwrap());
    let every_in_range: Vec<u64> = every_seqs
        .iter()
        .copied()
        .filter(|s| (lo..=hi).contains(s))
        .collect();
    assert_eq!(conflated_seqs, every_in_range);
    assert!(every_seqs.len() > 1000, "{} ticks", every_seqs.len());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_dropped_on_the_way_to_the_edge_are_told_as_a_gap_before_the_next_update() {
    let mut m = Mesh::start().await;
    let arm = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        tickmesh_edge::fault::drop_ticks_of("AAPL", 5);
    };
    let (a, b, ()) = tokio::join!(
        m.every.collect(2 * SECOND),
        m.conflated.collect(2 * SECOND),
        arm
    );
    let (a, b) = (seen(&a.unwrap()), seen(&b.unwrap()));
    let (every_seqs, every_gaps) = covered(&a);
    let (_, conflated_gaps) = covered(&b);
    // Five ticks in a row never reached the edge: both sessions are told which, before
    // their next update, and nothing else is missing.
    assert_eq!(every_gaps.len(), 1, "{a:?}");
    let (from, to, reason) = every_gaps[0].clone();
    assert_eq!((to - from + 1, reason.as_str()), (5, "upstream"));
    assert!(every_seqs.contains(&(from - 1)) && every_seqs.contains(&(to + 1)));
    let contiguous = every_seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(contiguous, 1, "one hole, the gap: {a:?}");
    assert_eq!(conflated_gaps, every_gaps, "{b:?}");
    m.stop().await;
}
