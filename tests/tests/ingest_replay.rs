//! Ingest replay and record against a real nats-server: recorded files go back into the
//! mesh with their prints (on `tr.*`, each after its tick, only when the tick goes out)
//! and their trading states, corrupt and stale records are skipped and counted, and
//! `record` captures, prints with their ticks, what replay reads.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::tick::State;
use tickmesh_core::trade::Trade;
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
    drain_as(sub, quiet, |b| decode_wire(b).unwrap()).await
}

/// Prints received until the subscription stays quiet for `quiet`.
async fn drain_prints(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Trade> {
    drain_as(sub, quiet, |b| {
        tickmesh_core::trade::decode_wire(b).unwrap()
    })
    .await
}

async fn drain_as<T>(
    sub: &mut async_nats::Subscriber,
    quiet: Duration,
    decode: impl Fn(&[u8]) -> T,
) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(decode(&msg.payload));
    }
    out
}

/// (price, size, conditions) of each print, per symbol, in order.
type Tape = HashMap<String, Vec<(f64, u64, Vec<String>)>>;

fn tape<'a>(prints: impl IntoIterator<Item = (&'a str, f64, u64, &'a [String])>) -> Tape {
    let mut out = Tape::new();
    for (symbol, price, size, conditions) in prints {
        out.entry(symbol.to_string())
            .or_default()
            .push((price, size, conditions.to_vec()));
    }
    out
}

fn tape_of(trades: &[Trade]) -> Tape {
    tape(
        trades
            .iter()
            .map(|p| (p.symbol.as_str(), p.price, p.size, &p.conditions[..])),
    )
}

/// Each print was published with the tick it printed at: same symbol and seq, `trade_id`
/// the tick's (new) seq, the tick's times, and the tick shows it as its last.
fn check_each_print_has_its_tick(ticks: &[Tick], trades: &[Trade]) {
    let by_key: HashMap<(&str, u64), &Tick> = ticks
        .iter()
        .map(|t| ((t.symbol.as_str(), t.seq), t))
        .collect();
    for p in trades {
        let t = by_key
            .get(&(p.symbol.as_str(), p.seq))
            .unwrap_or_else(|| panic!("no tick of {} at seq {}", p.symbol, p.seq));
        assert_eq!(p.trade_id, p.seq, "{p:?}");
        assert_eq!((p.ts, p.src_ts), (t.ts, t.src_ts), "{p:?}");
        assert_eq!(
            (t.last, t.last_size),
            (Some(p.price), Some(p.size)),
            "{p:?}"
        );
    }
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
async fn a_replayed_file_publishes_its_prints_with_their_ticks_and_its_halts() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.ndjson");
    let lines = [
        r#"{"symbol":"AAPL","src_ts":1000000,"state":"pre_open","bid":189.0,"ask":189.2}"#,
        r#"{"symbol":"AAPL","src_ts":1000100,"state":"open","last":189.12,"last_size":300,"volume":300,"trade":{"price":189.12,"size":300,"trade_id":77,"conditions":["opening"]}}"#,
        r#"{"symbol":"MSFT","src_ts":1000150,"state":"open","last":410.5,"last_size":100,"trade":{"price":410.5,"size":100}}"#,
        r#"{"symbol":"AAPL","src_ts":1000200,"state":"halted","last":189.12,"last_size":300}"#,
        // Stale (older than the halt): neither the tick nor its print goes out.
        r#"{"symbol":"AAPL","src_ts":1000150,"state":"open","last":188.0,"last_size":5,"trade":{"price":188.0,"size":5}}"#,
        // A print that is not positive: the record is corrupt, skipped whole.
        r#"{"symbol":"AAPL","src_ts":1000250,"state":"open","last":189.3,"last_size":100,"trade":{"price":0,"size":100}}"#,
        r#"{"symbol":"AAPL","src_ts":1000300,"state":"open","last":189.5,"last_size":200,"trade":{"price":189.5,"size":200}}"#,
        r#"{"symbol":"AAPL","src_ts":1000400,"state":"open","last":189.25,"last_size":100,"trade":{"price":189.25,"size":100,"conditions":["cross","closing"]}}"#,
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut tick_sub = subscribe_all(&nats.url()).await;
    let mut trade_sub = subscribe_to(&nats.url(), "tr.>").await;
    let summary = replay_whole(&nats.url(), &file).await;
    let quiet = Duration::from_millis(500);
    let ticks = drain(&mut tick_sub, quiet).await;
    let trades = drain_prints(&mut trade_sub, quiet).await;

    assert_eq!(summary.replay_corrupt, 1);
    assert_eq!(summary.counts.stale, 1);
    assert_eq!(summary.counts.ticks_out, 6);
    assert_eq!(summary.counts.trades_out, 4);
    // The halt and the resume replay as recorded.
    let states: Vec<Option<State>> = ticks
        .iter()
        .filter(|t| t.symbol == "AAPL")
        .map(|t| t.state)
        .collect();
    use State::{Halted, Open, PreOpen};
    assert_eq!(states, [PreOpen, Open, Halted, Open, Open].map(Some));
    // The tape, in order, with the recorded prices, sizes and conditions.
    let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let want = HashMap::from([
        (
            "AAPL".to_string(),
            vec![
                (189.12, 300, s(&["opening"])),
                (189.5, 200, vec![]),
                (189.25, 100, s(&["cross", "closing"])),
            ],
        ),
        ("MSFT".to_string(), vec![(410.5, 100, vec![])]),
    ]);
    assert_eq!(tape_of(&trades), want);
    check_each_print_has_its_tick(&ticks, &trades);
    assert_ne!(
        trades[0].trade_id, 77,
        "the recorded trade_id is not reused"
    );

    // md_trades keeps the replayed tape.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(tickmesh_core::trade::STREAM)
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 4);
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
async fn record_captures_the_live_stream_and_its_prints_in_a_file_replay_reads() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 2000));
    let dir = tempfile::tempdir().unwrap();
    let mut files = HashMap::new();
    for name in ["live.ndjson.gz", "live.csv"] {
        let out = dir.path().join(name);
        let opts = RecordOptions {
            out: out.clone(),
            duration: Some(Duration::from_millis(800)),
            max_ticks: None,
            subject: "md.>".into(),
            trades: true,
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
        assert!(summary.trades > 100, "{name}: {summary:?}");
        // Only a print whose tick was not read before the end goes without it.
        assert!(summary.unpaired <= 20, "{name}: {summary:?}");
        let mut records = Vec::new();
        let mut corrupt = Vec::new();
        let read = tickfile::read_file(
            &out,
            FileFormat::Auto,
            tickfile::DEFAULT_MAX_RECORD,
            |r| {
                records.push(r);
                ControlFlow::Continue(())
            },
            |c| corrupt.push(c),
        )
        .unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(
            (read.ticks, read.trades),
            (summary.ticks, summary.trades),
            "{name}"
        );
        let mut last: HashMap<String, u64> = HashMap::new();
        for r in &records {
            let t = &r.tick;
            if let Some(prev) = last.insert(t.symbol.clone(), t.seq) {
                assert_eq!(t.seq, prev + 1, "{name}: {} stepped from {prev}", t.symbol);
            }
            // Each print is on the record of the tick it printed at, which shows it.
            if let Some(p) = &r.trade {
                assert_eq!(p.trade_id, Some(t.seq), "{name}: {r:?}");
                assert_eq!(
                    (t.last, t.last_size),
                    (Some(p.price), Some(p.size)),
                    "{r:?}"
                );
            }
        }
        assert!(
            records
                .iter()
                .any(|r| r.tick.kind == tickmesh_core::Kind::Option)
        );
        files.insert(name, records);
    }
    ingest.stop().await.unwrap();

    // The gzipped capture replays into the mesh, every tick of it, with the same tape:
    // the same prints of each symbol, in order.
    let records = &files["live.ndjson.gz"];
    let want = tape(records.iter().filter_map(|r| {
        let p = r.trade.as_ref()?;
        Some((r.tick.symbol.as_str(), p.price, p.size, &p.conditions[..]))
    }));
    let mut sub = subscribe_all(&nats.url()).await;
    let mut trade_sub = subscribe_to(&nats.url(), "tr.>").await;
    let gz = dir.path().join("live.ndjson.gz");
    let summary = replay_whole(&nats.url(), &gz).await;
    let quiet = Duration::from_millis(500);
    let ticks = drain(&mut sub, quiet).await;
    let trades = drain_prints(&mut trade_sub, quiet).await;
    assert_eq!(summary.counts.ticks_out, records.len() as u64);
    assert_eq!(ticks.len(), records.len());
    assert_eq!(summary.counts.trades_out, trades.len() as u64);
    assert_eq!(tape_of(&trades), want);
    check_each_print_has_its_tick(&ticks, &trades);
}
