//! Reference data in KV `md_ref`: what ingest writes at the start and when chains roll,
//! and what an edge reads back through `tickmesh_edge::refdata`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use tickmesh_core::Symbol;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::date::Date;
use tickmesh_core::protocol::ErrorCode;
use tickmesh_core::subject::tick_subject;
use tickmesh_edge::refdata::{RefData, RefError};
use tickmesh_ingest::IngestConfig;
use tickmesh_tests::*;

fn day(s: &str) -> Date {
    Date::parse(s).unwrap()
}

/// The test universe with the default chains (AAPL, SPY, NVDA, TSLA; 2 weeklies, 2
/// monthlies, 21 strikes) on a fixed simulated day.
fn chains_config(url: &str, date: &str) -> IngestConfig {
    let mut c = ingest_config(url, 500);
    c.sim.options = Default::default();
    c.sim.session.date = Some(day(date));
    c
}

/// The bucket, once ingest has created it.
async fn md_ref(url: &str) -> async_nats::jetstream::kv::Store {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match js.get_key_value("md_ref").await {
            Ok(store) => return store,
            Err(e) => assert!(Instant::now() < deadline, "no md_ref bucket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(store: &async_nats::jetstream::kv::Store, key: &str) -> Option<Value> {
    let bytes = store.get(key).await.unwrap()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Waits until `md_ref` holds `key` (the writer runs beside the tick path).
async fn wait_for(store: &async_nats::jetstream::kv::Store, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = get_json(store, key).await {
            return v;
        }
        assert!(Instant::now() < deadline, "{key} never appeared in md_ref");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md_ref_lists_instruments_and_chains_and_the_edge_expands_them() {
    let nats = NatsServer::start().unwrap();
    // Monday 2026-03-02: weeklies 03-06 and 03-13, monthlies 03-20 and 04-17.
    let ingest = start_ingest(chains_config(&nats.url(), "2026-03-02"));
    let store = md_ref(&nats.url()).await;
    let chain = wait_for(&store, "chain.AAPL").await;
    let expiries: Vec<&str> = chain["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["expiry"].as_str().unwrap())
        .collect();
    assert_eq!(
        expiries,
        ["2026-03-06", "2026-03-13", "2026-03-20", "2026-04-17"]
    );
    let strikes = chain["expiries"][2]["strikes"].as_array().unwrap();
    assert_eq!(strikes.len(), 21);
    assert_eq!(chain["root"], "AAPL");

    let aapl = wait_for(&store, "instr.AAPL").await;
    assert_eq!(aapl["kind"], "equity");
    assert_eq!(aapl["tick_size"], 0.01);
    let strike = strikes[10].as_f64().unwrap();
    let occ = tickmesh_core::occ::OptionSymbol::new(
        "AAPL",
        day("2026-03-20"),
        tickmesh_core::tick::Right::Put,
        strike,
    )
    .unwrap()
    .to_string();
    let option = wait_for(&store, &format!("instr.{occ}")).await;
    assert_eq!(option["kind"], "option");
    assert_eq!(option["underlying"], "AAPL");
    assert_eq!(option["expiry"], "2026-03-20");
    assert_eq!(option["right"], "P");
    assert_eq!(option["strike"].as_f64(), Some(strike));

    // Every key: 5 listed instruments, 4 × 4 × 21 × 2 options, 4 chains, and the mark
    // that says they are all in, written after every one of them.
    let marked = wait_for(&store, tickmesh_core::refdata::COMPLETE_KEY).await;
    assert!(marked["ts"].as_u64().is_some(), "{marked}");
    let keys: BTreeSet<String> = store.keys().await.unwrap().try_collect().await.unwrap();
    assert_eq!(keys.len(), 5 + 672 + 4 + 1);
    let mark_at = store
        .entry(tickmesh_core::refdata::COMPLETE_KEY)
        .await
        .unwrap()
        .unwrap()
        .revision;
    for key in keys.iter().filter(|k| !k.starts_with("meta.")) {
        let at = store.entry(key).await.unwrap().unwrap().revision;
        assert!(at < mark_at, "{key} written after the mark");
    }

    // The edge's view.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let refs = RefData::new(async_nats::jetstream::new(client.clone()));
    assert!(refs.wait_loaded(Duration::from_secs(5)).await);
    let symbols = refs.expand_chain("AAPL:2026-03-20").unwrap();
    assert_eq!(symbols.len(), 42);
    assert!(symbols.iter().all(|s| refs.is_known(s.as_str())));
    assert!(symbols.iter().any(|s| s.as_str() == occ));
    let chains = refs.chains("AAPL").unwrap();
    assert_eq!(chains.len(), 4);
    assert_eq!(
        serde_json::to_value(&chains[0]).unwrap()["expiry"],
        "2026-03-06"
    );
    assert!(refs.chains("MSFT").is_none());
    assert!(refs.is_known("SPY") && !refs.is_known("NOPE"));
    let unknown = refs.expand_chain("AAPL:2026-03-27").unwrap_err();
    assert!(matches!(unknown, RefError::UnknownExpiry { .. }));
    assert_eq!(unknown.code(), ErrorCode::UnknownSymbol);
    assert!(matches!(
        refs.expand_chain("ZZZ:2026-03-20"),
        Err(RefError::UnknownUnderlying(_))
    ));
    assert_eq!(
        refs.expand_chain("aapl:2026-03-20").unwrap_err().code(),
        ErrorCode::InvalidSymbol
    );

    // The option itself streams, with greeks.
    let subject = tick_subject(&Symbol::parse(&occ).unwrap(), 64);
    let mut sub = client.subscribe(subject).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the option ticks")
        .unwrap();
    let tick = decode_wire(&msg.payload).unwrap();
    assert_eq!(tick.symbol, occ);
    assert!(tick.iv.is_some() && tick.delta.unwrap() < 0.0 && tick.gamma.is_some());
    assert!(tick.theta.is_some() && tick.vega.is_some());
    assert!(tick.bid.unwrap() < tick.ask.unwrap());
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_roll_at_the_close_and_the_edge_follows() {
    let nats = NatsServer::start().unwrap();
    // Friday 2026-03-06, five simulated seconds before the close: that day's weekly
    // expires, Monday lists 2026-05-15.
    let mut config = chains_config(&nats.url(), "2026-03-06");
    config.sim.session.start = Some("15:59:55".into());
    let ingest = start_ingest(config);
    let store = md_ref(&nats.url()).await;
    wait_for(&store, "chain.SPY").await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let refs = RefData::new(async_nats::jetstream::new(client));
    assert!(refs.wait_loaded(Duration::from_secs(5)).await);
    let expiring = refs.expand_chain("SPY:2026-03-06");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refs.chains("SPY").unwrap()[0].expiry == day("2026-03-06") {
        assert!(Instant::now() < deadline, "the chain never rolled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = expiring.unwrap();
    assert_eq!(
        gone.len(),
        42,
        "the expiring weekly was listed before the close"
    );
    assert!(matches!(
        refs.expand_chain("SPY:2026-03-06"),
        Err(RefError::UnknownExpiry { .. })
    ));
    let listed: Vec<Date> = refs
        .chains("SPY")
        .unwrap()
        .iter()
        .map(|e| e.expiry)
        .collect();
    assert_eq!(
        listed,
        [
            day("2026-03-13"),
            day("2026-03-20"),
            day("2026-04-17"),
            day("2026-05-15")
        ]
    );
    assert_eq!(refs.expand_chain("SPY:2026-05-15").unwrap().len(), 42);
    // The expired options' instruments are deleted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while refs.is_known(gone[0].as_str()) {
        assert!(Instant::now() < deadline, "{} is still listed", gone[0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        get_json(&store, &format!("instr.{}", gone[0]))
            .await
            .is_none()
    );
    ingest.stop().await.unwrap();
}
