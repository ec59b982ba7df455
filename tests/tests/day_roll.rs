//! The trading-day roll on an accelerated clock, end to end: the simulator trades a Friday
//! that is an option expiry, ten times faster than real time, from a minute before the
//! close. At the close the day rolls to Monday: the Friday options leave `md_ref` and
//! `md_last`, the chains list only live expiries, and a client holding an expired option
//! is told `status` closed (`delisted`), then `unsubscribed` (one holding it delayed,
//! `delay_ms` later, as of when it went); the options still live, and
//! the underlying, carry on into the new day, whose `prev_close` is the last close and
//! whose volume starts again, as do its bars: the day's bar closes at the roll and the
//! next session's begins then.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_core::date::Date;
use tickmesh_tests::*;

const SECOND: Duration = Duration::from_secs(1);
const EXPIRING: &str = "2026-12-11";
const LIVE: &str = "2026-12-18";
const DELAY_MS: u64 = 3000;

fn expiries(chains: &Value) -> Vec<String> {
    chains["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["expiry"].as_str().unwrap().to_string())
        .collect()
}

fn of_expiry(symbols: &Value, yymmdd: &str) -> Vec<String> {
    symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .filter(|s| s.len() > 10 && s[4..10] == *yymmdd)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_roll_expired_options_leave_and_their_holders_are_told_closed_then_unsubscribed() {
    let nats = NatsServer::start().unwrap();
    let mut ingest = ingest_config(&nats.url(), 200);
    // Friday 2026-12-11, a weekly expiry; the monthly is the 18th. A minute before the
    // close at ten times real time: the close comes about 6 s after the start.
    ingest.sim.session.date = Some(Date::new(2026, 12, 11).unwrap());
    ingest.sim.session.start = Some("15:59:00".into());
    ingest.sim.session.speed = 10.0;
    ingest.kv.interval_ms = 50;
    let _ingest = start_ingest(ingest);
    let (_edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    // A second edge serves AAPL's family delayed only, 3 s late.
    let mut config = edge_config(&nats.url());
    config.auth.anonymous_ent = Vec::new();
    config.auth.anonymous_dly = vec!["AAPL*".into()];
    config.delayed.delay_ms = DELAY_MS;
    let (_delayed_edge, delayed_addr) = start_edge(config).await.unwrap();
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op": "chains", "id": 1, "underlying": "AAPL"}))
        .await
        .unwrap();
    let before = c.next_of("chains", 5 * SECOND).await.unwrap();
    assert_eq!(expiries(&before), [EXPIRING, LIVE], "{before}");
    c.send(json!({"op": "subscribe", "id": 2, "symbols": ["AAPL"],
        "chains": [format!("AAPL:{EXPIRING}"), format!("AAPL:{LIVE}")], "interval_ms": 0}))
        .await
        .unwrap();
    let subscribed = c.next_of("subscribed", 5 * SECOND).await.unwrap();
    // Another client follows AAPL's daily bars through the roll.
    let mut daily = Client::connect(addr, Format::Json).await.unwrap();
    daily
        .send(
            json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"], "stream": "bars",
            "tf": "1d", "history": 1, "interval_ms": 250}),
        )
        .await
        .unwrap();
    let daily = tokio::spawn(async move { day_bars_through_the_roll(&mut daily).await });
    let mut late = Client::connect(delayed_addr, Format::Json).await.unwrap();
    late.send(json!({"op": "subscribe", "id": 1, "chains": [format!("AAPL:{EXPIRING}")]}))
        .await
        .unwrap();
    let held = late.next_of("subscribed", 5 * SECOND).await.unwrap();
    assert_eq!(held["delayed"].as_array().map(Vec::len), Some(10), "{held}");
    let late = tokio::spawn(async move { delisted_late(&mut late).await });
    let expiring = of_expiry(&subscribed["symbols"], "261211");
    let live = of_expiry(&subscribed["symbols"], "261218");
    assert_eq!((expiring.len(), live.len()), (10, 10), "{subscribed}");

    // Until the roll: AAPL's last price (nothing trades after the close: it is the close),
    // then what the edge says of the expired options.
    let deadline = Instant::now() + 30 * SECOND;
    let mut last_close = None;
    let mut day_volume = None;
    let mut delisted = Vec::new();
    let unsubscribed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c.next_non_hb(left).await.unwrap_or_else(|e| {
            panic!(
                "no unsubscribed by the roll ({} delisted so far): {e}",
                delisted.len()
            )
        });
        match m["type"].as_str() {
            Some("ticks") => {
                for t in m["ticks"].as_array().unwrap() {
                    if t["symbol"] == "AAPL" {
                        last_close = t["last"].as_f64();
                        // Cumulative over the day: its largest is the day's volume.
                        day_volume = day_volume.max(t["volume"].as_u64());
                    }
                }
            }
            Some("status") if m["reason"] == "delisted" => {
                assert_eq!(m["state"], "closed", "{m}");
                assert!(
                    expiring.contains(&m["symbol"].as_str().unwrap().to_string()),
                    "only expired options are delisted: {m}"
                );
                delisted.push(m["symbol"].as_str().unwrap().to_string());
            }
            Some("unsubscribed") => break m,
            _ => {}
        }
    };
    let told_at = now_us();
    // Chains too: a delayed-only user is told them as they were delay_ms ago.
    let mut asker = Client::connect(delayed_addr, Format::Json).await.unwrap();
    let mut delayed_chains = async |id: i64| {
        asker
            .send(json!({"op": "chains", "id": id, "underlying": "AAPL"}))
            .await
            .unwrap();
        expiries(&asker.next_of("chains", 5 * SECOND).await.unwrap())
    };
    assert_eq!(
        delayed_chains(1).await,
        [EXPIRING, LIVE],
        "the chains of delay_ms ago, right after the roll"
    );
    delisted.sort();
    let mut want = expiring.clone();
    want.sort();
    assert_eq!(
        delisted, want,
        "each expired option told closed before the unsubscribed"
    );
    assert!(unsubscribed.get("id").is_none(), "{unsubscribed}");
    let mut gone: Vec<String> = unsubscribed["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    gone.sort();
    assert_eq!(gone, want, "{unsubscribed}");
    let last_close = last_close.expect("AAPL ticked before the close");

    // The new day: live options and the underlying carry on; prev_close is the last close.
    let mut next_day = None;
    let mut live_ticked = false;
    let deadline = Instant::now() + 10 * SECOND;
    while next_day.is_none() || !live_ticked {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c.next_of("ticks", left).await.unwrap();
        for t in m["ticks"].as_array().unwrap() {
            let symbol = t["symbol"].as_str().unwrap().to_string();
            assert!(!expiring.contains(&symbol), "an expired option ticked: {t}");
            live_ticked |= live.contains(&symbol);
            if symbol == "AAPL" && t["state"] != "closed" {
                next_day = Some(t.clone());
            }
        }
    }
    let next_day = next_day.unwrap();
    // Volume restarts with the day.
    let day_volume = day_volume.expect("AAPL carried its volume");
    let volume = next_day["volume"].as_u64().unwrap_or(0);
    assert!(
        volume < day_volume,
        "{volume} after a day of {day_volume}: {next_day}"
    );
    assert_eq!(
        next_day["prev_close"].as_f64(),
        Some(last_close),
        "{next_day}"
    );

    c.send(json!({"op": "chains", "id": 3, "underlying": "AAPL"}))
        .await
        .unwrap();
    let after = c.next_of("chains", 5 * SECOND).await.unwrap();
    let listed = expiries(&after);
    assert!(!listed.contains(&EXPIRING.to_string()), "{after}");
    assert_eq!(listed.first().map(String::as_str), Some(LIVE), "{after}");
    c.send(json!({"op": "subscribe", "id": 4, "symbols": [expiring[0]]}))
        .await
        .unwrap();
    let refused = c.next_of("error", 5 * SECOND).await.unwrap();
    assert_eq!(refused["code"], "unknown_symbol", "{refused}");

    // md_last no longer holds an expired option's value.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let md_last = js.get_key_value("md_last").await.unwrap();
    let deadline = Instant::now() + 5 * SECOND;
    while md_last.get(&expiring[0]).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "{} still in md_last",
            expiring[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(md_last.get(&live[0]).await.unwrap().is_some());

    // A delayed holder is told delay_ms later, as of when the options went.
    let (statuses, unsubscribed, late_at) = late.await.unwrap();
    let mut gone: Vec<&str> = unsubscribed["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    gone.sort();
    assert_eq!(gone, want, "{unsubscribed}");
    assert_eq!(statuses.len(), 10, "{statuses:?}");
    let lateness_ms = late_at.saturating_sub(told_at) / 1000;
    assert!(
        (DELAY_MS - 500..DELAY_MS + 2000).contains(&lateness_ms),
        "the delayed holder was told {lateness_ms} ms after real time, not delay_ms"
    );
    for status in &statuses {
        let ts = status["ts"].as_u64().unwrap();
        assert!(ts + DELAY_MS * 1000 <= late_at, "{status}");
        assert!(ts + DELAY_MS * 1000 >= told_at - 1_000_000, "{status}");
    }
    let listed = delayed_chains(2).await;
    assert_eq!(
        listed.first().map(String::as_str),
        Some(LIVE),
        "once delay_ms passed"
    );

    // Bars restart with the session: the day's bar closed at the roll, and the new
    // session's began then, not at the next UTC midnight.
    let (closed, new) = daily.await.unwrap();
    let t = |b: &Value| b["t"].as_u64().unwrap();
    assert!(t(&new) > t(&closed), "{new} after {closed}");
    assert_eq!(
        t(&new) % 1_000_000,
        0,
        "a session starts on a whole second: {new}"
    );
    assert!(
        new["volume"].as_u64() < closed["volume"].as_u64(),
        "the new session's volume starts again: {new} after {closed}"
    );
}

/// Reads `c` until the edge unsubscribes the options it holds delayed: the `status`es
/// before, the `unsubscribed`, and when it came (µs).
async fn delisted_late(c: &mut Client) -> (Vec<Value>, Value, u64) {
    let deadline = Instant::now() + 40 * SECOND;
    let mut statuses = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c
            .next_non_hb(left)
            .await
            .unwrap_or_else(|e| panic!("the delayed holder was not unsubscribed: {e}"));
        match m["type"].as_str() {
            Some("status") if m["reason"] == "delisted" => statuses.push(m),
            Some("unsubscribed") => return (statuses, m, now_us()),
            _ => {}
        }
    }
}

fn now_us() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_micros() as u64
}

/// Reads `c`'s daily bars of AAPL until the day's bar closes and the next session's bar
/// begins: (the last final, the first bar after it).
async fn day_bars_through_the_roll(c: &mut Client) -> (Value, Value) {
    let deadline = Instant::now() + 40 * SECOND;
    let mut closed: Option<Value> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c
            .next_of("bars", left)
            .await
            .unwrap_or_else(|e| panic!("no new day's bar after {closed:?}: {e}"));
        for b in m["bars"].as_array().unwrap() {
            match (&closed, b["final"] == true) {
                (_, true) => closed = Some(b.clone()),
                (Some(c), false) if b["t"].as_u64() > c["t"].as_u64() => {
                    return (c.clone(), b.clone());
                }
                _ => {}
            }
        }
    }
}
