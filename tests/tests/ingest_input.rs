//! Bad input at ingest, against a real nats-server: ticks an edge would refuse (NaN,
//! infinite, too large) never leave ingest, a far-future `src_ts` cannot stall a replay,
//! and a stale writer cannot move `md_last` backwards.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::{decode_wire, encode_wire};
use tickmesh_core::tick::Depth;
use tickmesh_ingest::config::{NatsConfig, SourceKind};
use tickmesh_ingest::publisher::{self, Publisher};
use tickmesh_ingest::snapshot::{self, Slots, Written, write_checked};
use tickmesh_tests::*;
use tokio_util::sync::CancellationToken;

async fn subscribe_all(url: &str) -> async_nats::Subscriber {
    let client = async_nats::connect(url).await.unwrap();
    let sub = client.subscribe("md.>").await.unwrap();
    client.flush().await.unwrap();
    sub
}

/// Payloads received until the subscription stays quiet for `quiet`, after the first
/// (waited for up to 5 s: on a loaded machine the first may take longer than `quiet`).
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut wait = quiet.max(Duration::from_secs(5));
    while let Ok(Some(msg)) = tokio::time::timeout(wait, sub.next()).await {
        out.push(msg.payload);
        wait = quiet;
    }
    out
}

/// Whatever the source, a tick with a NaN or infinite price (depth included), a `src_ts`
/// not below 2^53 or one larger than an edge accepts is refused before it takes a seq:
/// counted under its reason in `tickmesh_ingest_invalid_ticks_total`, never published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_infinite_and_oversized_ticks_are_refused_at_ingest() {
    let metrics = tickmesh_ingest::telemetry::prometheus();
    let nats = NatsServer::start().unwrap();
    let mut sub = subscribe_all(&nats.url()).await;
    let config = NatsConfig {
        urls: vec![nats.url()],
        ..NatsConfig::default()
    };
    let client = publisher::connect(&config).await.unwrap();
    let mut p = Publisher::new(client.clone(), 16, "test", Arc::new(Slots::new()));
    let epoch = 1_700_000_000_000_000;
    p.start_epoch(epoch);
    let (i, _) = p.index_of("AAPL").unwrap();
    let good = Tick {
        symbol: "AAPL".into(),
        last: Some(1.5),
        bid: Some(1.4),
        ..Tick::default()
    };
    let depth = |bids| Depth { bids, asks: vec![] };
    let bad = [
        Tick {
            bid: Some(f64::NAN),
            ..good.clone()
        },
        Tick {
            last: Some(f64::INFINITY),
            ..good.clone()
        },
        Tick {
            depth: Some(depth(vec![(f64::NEG_INFINITY, 1)])),
            ..good.clone()
        },
        Tick {
            src_ts: Some(1 << 53),
            ..good.clone()
        },
        // About 22 KB on the wire.
        Tick {
            depth: Some(depth(vec![(1.0, 1); 2000])),
            ..good.clone()
        },
    ];
    for mut t in bad {
        assert!(!p.emit(i, &mut t, 1).await.unwrap(), "{t:?}");
    }
    let mut t = good.clone();
    assert!(p.emit(i, &mut t, 1).await.unwrap());
    p.end_batch();
    client.flush().await.unwrap();
    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1, "only the good tick is published");
    let tick = decode_wire(&got[0]).unwrap();
    assert_eq!(
        (tick.seq, tick.last),
        (epoch + 1, Some(1.5)),
        "no seq taken"
    );
    assert_eq!(p.counts().invalid, 5);
    let text = metrics.render();
    let refused = |reason: &str| -> f64 {
        let label = format!(r#"reason="{reason}""#);
        text.lines()
            .filter(|l| l.starts_with("tickmesh_ingest_invalid_ticks_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        [
            refused("not_finite"),
            refused("src_ts"),
            refused("too_large")
        ],
        [3.0, 1.0, 1.0],
        "{text}"
    );
}

/// A replay paces by source time, but one record years ahead (within
/// `max_src_jump_ms`, which would skip it) costs at most `max_wait_ms`: the replay
/// reaches its end, every tick published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_src_ts_does_not_stall_a_replay() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.ndjson");
    let t0 = 1_700_000_000_000_000u64;
    let years = 5 * 365 * 86_400 * 1_000_000u64;
    let lines = [
        format!(r#"{{"symbol":"AAPL","src_ts":{t0},"last":1.0}}"#),
        format!(r#"{{"symbol":"MSFT","src_ts":{},"last":9.5}}"#, t0 + 1000),
        format!(r#"{{"symbol":"AAPL","src_ts":{},"last":2.0}}"#, t0 + years),
        format!(r#"{{"symbol":"MSFT","src_ts":{},"last":9.6}}"#, t0 + 2000),
        format!(r#"{{"symbol":"SPY","src_ts":{},"last":500.0}}"#, t0 + 3000),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut config = tickmesh_ingest::IngestConfig::default();
    config.nats.urls = vec![nats.url()];
    config.source = SourceKind::Replay;
    config.replay.files = vec![file];
    config.replay.speed = 1.0;
    config.replay.max_wait_ms = 300;
    config.replay.max_src_jump_ms = 10 * 365 * 86_400_000;
    let started = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(20),
        tickmesh_ingest::run_with_summary(config, std::future::pending()),
    )
    .await
    .expect("the replay reached its end")
    .unwrap();
    assert_eq!(summary.counts.ticks_out, 5);
    assert!(started.elapsed() < Duration::from_secs(15));
}

fn encoded(epoch: u64, n: u64) -> Bytes {
    encode_wire(&Tick {
        symbol: "AAPL".into(),
        epoch,
        seq: epoch + n,
        ts: 1,
        last: Some(n as f64),
        ..Tick::default()
    })
    .into()
}

async fn stored(kv: &jetstream::kv::Store) -> (u64, u64) {
    let t = decode_wire(&kv.get("AAPL").await.unwrap().unwrap()).unwrap();
    (t.epoch, t.seq)
}

/// After a fail-over the former lease holder may still be flushing its KV writes: it
/// cannot overwrite the newer value that the new holder wrote, whether it writes from a
/// revision it knows or through the writer task; the new holder goes on writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_cannot_overwrite_a_newer_md_last() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let kv = publisher::latest_bucket(&js, "md_last", 1).await.unwrap();
    let (old, new) = (1_000_000, 2_000_000);

    let Written::Stored(old_rev) = write_checked(&kv, "AAPL", encoded(old, 5), 0)
        .await
        .unwrap()
    else {
        panic!("the first write stores")
    };
    // The new holder knows no revision yet: it reads the older value and replaces it.
    let Written::Stored(new_rev) = write_checked(&kv, "AAPL", encoded(new, 1), 0)
        .await
        .unwrap()
    else {
        panic!("a newer value replaces an older one")
    };
    assert_eq!(stored(&kv).await, (new, new + 1));
    // The former holder, from the revision it last wrote.
    let late = write_checked(&kv, "AAPL", encoded(old, 6), old_rev).await;
    assert_eq!(late.unwrap(), Written::Superseded(new_rev));
    assert_eq!(stored(&kv).await, (new, new + 1));

    // The same through the former holder's writer task, which knows no revision.
    let slots = Arc::new(Slots::new());
    slots.add_key("AAPL");
    slots.offer(0, encoded(old, 7));
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(snapshot::run_writer(
        kv.clone(),
        slots.clone(),
        Duration::from_millis(50),
        4,
        cancel.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = slots.stats();
    while stats.superseded.load(Ordering::Relaxed) + stats.writes.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the writer wrote nothing in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    writer.await.unwrap();
    assert_eq!(stats.superseded.load(Ordering::Relaxed), 1);
    assert_eq!(stats.writes.load(Ordering::Relaxed), 0);
    assert_eq!(stored(&kv).await, (new, new + 1));

    // The new holder goes on from its revision.
    let next = write_checked(&kv, "AAPL", encoded(new, 2), new_rev).await;
    assert!(matches!(next.unwrap(), Written::Stored(_)));
    assert_eq!(stored(&kv).await, (new, new + 2));
}
