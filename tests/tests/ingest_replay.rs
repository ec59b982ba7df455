//! Ingest replay and record against a real nats-server: recorded files go back into the
//! mesh, corrupt and stale records are skipped and counted, and `record` captures what
//! replay reads.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::decode_wire;
use tickmesh_ingest::IngestConfig;
use tickmesh_ingest::config::SourceKind;
use tickmesh_ingest::record::{self, RecordOptions};
use tickmesh_ingest::tickfile::{self, FileFormat};
use tickmesh_tests::*;

fn sample_file() -> PathBuf {
    root().join("ingest/samples/ticks.ndjson")
}

fn replay_config(url: &str, files: Vec<PathBuf>, speed: f64) -> IngestConfig {
    let mut c = IngestConfig::default();
    c.nats.urls = vec![url.to_string()];
    c.source = SourceKind::Replay;
    c.replay.files = files;
    c.replay.speed = speed;
    c
}

/// Ticks received until the subscription stays quiet for `quiet`.
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Tick> {
    let mut out = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(decode_wire(&msg.payload).unwrap());
    }
    out
}

/// Replays `file` as fast as possible, to its end.
async fn replay_whole(url: &str, file: &Path) -> tickmesh_ingest::feed::Summary {
    let config = replay_config(url, vec![file.to_path_buf()], 0.0);
    tokio::time::timeout(
        Duration::from_secs(20),
        tickmesh_ingest::run_with_summary(config, std::future::pending()),
    )
    .await
    .expect("a replay without loop ends by itself")
    .unwrap()
}

fn lines_of(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_stale_records_are_skipped_and_counted_and_the_rest_replays_in_order() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.ndjson");
    let lines = [
        r#"{"symbol":"AAPL","src_ts":1000000,"last":1.0}"#,
        r#"{"symbol":"MSFT","src_ts":1000100,"last":9.5}"#,
        r#"{"symbol":"AAPL","last":"#,
        r#"{"symbol":"AAPL","src_ts":1000200,"last":2.0}"#,
        r#"{"symbol":"AAPL","src_ts":1000150,"last":1.5}"#,
        r#"{"symbol":"bad symbol","src_ts":1000250,"last":1.0}"#,
        r#"{"symbol":"AAPL","src_ts":1000300,"last":3.0}"#,
        r#"{"symbol":"AAPL261218C00150000","kind":"option","underlying":"AAPL","expiry":"2026-12-18","strike":150,"right":"C","src_ts":1000400,"bid":80.1,"ask":80.6,"delta":0.97}"#,
        // 1.5 s later, so that /metrics can be read while the replay waits for it.
        r#"{"symbol":"MSFT","src_ts":2500000,"last":9.75}"#,
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = replay_config(&nats.url(), vec![file.clone()], 1.0);
    config.metrics_listen = Some(metrics);
    let mut sub = subscribe_all(&nats.url()).await;

    let run = tokio::spawn(tickmesh_ingest::run_with_summary(
        config,
        std::future::pending(),
    ));
    let first = drain(&mut sub, Duration::from_millis(700)).await;
    let (status, body) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"tickmesh_ingest_corrupt_records_total{source="replay"} 2"#),
        "{body}"
    );
    assert!(
        body.contains(r#"tickmesh_ingest_stale_ticks_total{source="replay"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"tickmesh_ingest_ticks_out_total{source="replay"} 5"#),
        "{body}"
    );
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("a replay without loop ends by itself")
        .unwrap()
        .unwrap();
    let rest = drain(&mut sub, Duration::from_millis(500)).await;
    let got: Vec<Tick> = first.into_iter().chain(rest).collect();

    assert_eq!(summary.replay_corrupt, 2);
    assert_eq!(summary.counts.stale, 1);
    assert_eq!(summary.counts.ticks_out, 6);
    let seen: Vec<(&str, Option<f64>)> = got.iter().map(|t| (t.symbol.as_str(), t.last)).collect();
    assert_eq!(
        seen,
        [
            ("AAPL", Some(1.0)),
            ("MSFT", Some(9.5)),
            ("AAPL", Some(2.0)),
            ("AAPL", Some(3.0)),
            ("AAPL261218C00150000", None),
            ("MSFT", Some(9.75)),
        ]
    );
    let epoch = got[0].epoch;
    let aapl: Vec<u64> = got
        .iter()
        .filter(|t| t.symbol == "AAPL")
        .map(|t| t.seq)
        .collect();
    assert_eq!(
        aapl,
        [epoch + 1, epoch + 2, epoch + 3],
        "the stale line used no seq"
    );
    assert_eq!(got[0].src_ts, Some(1_000_000), "the source time is kept");
    assert_eq!(got[4].delta, Some(0.97));
    // The original pace: the last line came about 1.5 s after the others.
    assert!(summary.publish_secs > 1.3, "{}", summary.publish_secs);

    // Symbols first seen in the file are registered in md_ref, options in their chain.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let refs = async_nats::jetstream::new(client)
        .get_key_value("md_ref")
        .await
        .unwrap();
    let chain: serde_json::Value =
        serde_json::from_slice(&refs.get("chain.AAPL").await.unwrap().unwrap()).unwrap();
    assert_eq!(chain["expiries"][0]["expiry"], "2026-12-18");
    assert_eq!(chain["expiries"][0]["strikes"][0], 150.0);
    assert!(refs.get("instr.MSFT").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_file_replays_whole_and_loops_without_stale_drops() {
    let nats = NatsServer::start().unwrap();
    let sample = sample_file();
    let n = lines_of(&sample) as u64;
    assert!(n >= 200, "the sample has {n} lines");
    let mut sub = subscribe_all(&nats.url()).await;
    let summary = replay_whole(&nats.url(), &sample).await;
    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(summary.replay_records, n);
    assert_eq!(summary.replay_corrupt, 0);
    assert_eq!(summary.counts.ticks_out, n);
    assert_eq!(got.len() as u64, n);
    assert!(
        got.iter()
            .any(|t| t.kind == tickmesh_core::Kind::Option && t.delta.is_some())
    );

    // Looping: every pass is published (source times shifted forward, nothing stale).
    let mut config = replay_config(&nats.url(), vec![sample], 0.0);
    config.replay.repeat = true;
    let summary =
        tickmesh_ingest::run_with_summary(config, tokio::time::sleep(Duration::from_millis(1500)))
            .await
            .unwrap();
    assert!(
        summary.counts.ticks_out > 3 * n,
        "{} ticks in 1.5 s of looping",
        summary.counts.ticks_out
    );
    assert_eq!(summary.counts.stale, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_captures_the_live_stream_in_a_file_replay_reads() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 2000));
    let dir = tempfile::tempdir().unwrap();
    for name in ["live.ndjson.gz", "live.csv"] {
        let out = dir.path().join(name);
        let opts = RecordOptions {
            out: out.clone(),
            duration: Some(Duration::from_millis(800)),
            max_ticks: None,
            subject: "md.>".into(),
            format: FileFormat::Auto,
        };
        let nats_config = tickmesh_ingest::config::NatsConfig {
            urls: vec![nats.url()],
            ..Default::default()
        };
        let summary = record::record(&nats_config, &opts, std::future::pending())
            .await
            .unwrap();
        assert!(summary.ticks > 500, "{name}: recorded {}", summary.ticks);
        let mut ticks = Vec::new();
        let mut corrupt = Vec::new();
        let read = tickfile::read_file(
            &out,
            FileFormat::Auto,
            tickfile::DEFAULT_MAX_RECORD,
            |t| {
                ticks.push(t);
                ControlFlow::Continue(())
            },
            |c| corrupt.push(c),
        )
        .unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(read.ticks, summary.ticks, "{name}");
        let mut last: HashMap<String, u64> = HashMap::new();
        for t in &ticks {
            if let Some(prev) = last.insert(t.symbol.clone(), t.seq) {
                assert_eq!(t.seq, prev + 1, "{name}: {} stepped from {prev}", t.symbol);
            }
        }
        assert!(ticks.iter().any(|t| t.kind == tickmesh_core::Kind::Option));
    }
    ingest.stop().await.unwrap();

    // The gzipped capture replays into the mesh, every tick of it.
    let gz = dir.path().join("live.ndjson.gz");
    let max = tickfile::DEFAULT_MAX_RECORD;
    let recorded = tickfile::read_file(
        &gz,
        FileFormat::Auto,
        max,
        |_| ControlFlow::Continue(()),
        |_| {},
    )
    .unwrap()
    .ticks;
    let mut sub = subscribe_all(&nats.url()).await;
    let summary = replay_whole(&nats.url(), &gz).await;
    assert_eq!(summary.counts.ticks_out, recorded);
    assert_eq!(
        drain(&mut sub, Duration::from_millis(500)).await.len() as u64,
        recorded
    );
}
