//! An ITCH 5.0 day through ingest into a real nats-server: every stock's last published
//! tick shows the book that an independent read of the whole file ends with, and its
//! prints on `tr.*` add up to the book's volume.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tickmesh_core::Tick;
use tickmesh_core::codec::decode_wire;
use tickmesh_ingest::IngestConfig;
use tickmesh_ingest::config::SourceKind;
use tickmesh_ingest::sources::itch::{self, generate};
use tickmesh_ingest::sources::universe::default_universe;
use tickmesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_day_publishes_the_books_it_builds() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.itch.gz");
    let universe = default_universe();
    let params = generate::GenParams {
        seed: 4,
        universe: &universe,
        events: 4_000,
    };
    let messages = generate::write_file(&file, &params).unwrap();

    let mut sub = subscribe_all(&nats.url()).await;
    let mut prints = subscribe_to(&nats.url(), "tr.>").await;

    let mut config = IngestConfig::default();
    config.nats.urls = vec![nats.url()];
    config.source = SourceKind::Itch;
    config.itch.files = vec![file.clone()];
    config.itch.speed = 0.0;
    config.itch.date = Some("2026-03-02".into());
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        tickmesh_ingest::run_with_summary(config, std::future::pending()),
    )
    .await
    .expect("an ITCH replay without loop ends by itself")
    .unwrap();
    assert_eq!(summary.replay_records, messages);
    assert_eq!(summary.replay_corrupt, 0);

    let mut last: HashMap<String, Tick> = HashMap::new();
    let mut n = 0u64;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        let t: Tick = decode_wire(&msg.payload).unwrap();
        if let Some(prev) = last.get(&t.symbol) {
            assert_eq!(t.seq, prev.seq + 1, "{}", t.symbol);
            assert!(t.src_ts >= prev.src_ts);
        }
        last.insert(t.symbol.clone(), t);
        n += 1;
    }
    assert_eq!(n, summary.counts.ticks_out);
    // Per stock: the shares printed and the last print.
    let mut tape: HashMap<String, (u64, f64)> = HashMap::new();
    let mut trades = 0u64;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), prints.next()).await
    {
        let p = tickmesh_core::trade::decode_wire(&msg.payload).unwrap();
        let (shares, last) = tape.entry(p.symbol).or_default();
        (*shares, *last) = (*shares + p.size, p.price);
        trades += 1;
    }
    assert_eq!(trades, summary.counts.trades_out);

    let day = itch::read_day(std::fs::File::open(&file).unwrap()).unwrap();
    assert_eq!(last.len(), day.books.iter().count());
    // 2026-03-02 is a Monday in EST (UTC-5): the day's ticks are stamped on it.
    let midnight_us = 1_772_427_600_000_000u64;
    for (_, book) in day.books.iter() {
        let t = &last[&book.symbol];
        let want = itch::tick_of(book, 0);
        assert_eq!(t.depth, want.depth, "{}", book.symbol);
        assert_eq!(
            (t.bid, t.ask, t.last, t.volume),
            (want.bid, want.ask, want.last, want.volume)
        );
        assert_eq!(t.kind, want.kind);
        assert_eq!(
            tape.get(&book.symbol).copied(),
            Some((book.volume, want.last.unwrap())),
            "{}: the prints on tr.* add up to the volume and end at the last",
            book.symbol
        );
        let src = t.src_ts.unwrap();
        assert!(
            (midnight_us..midnight_us + 86_400_000_000).contains(&src),
            "{src}"
        );
    }
}
