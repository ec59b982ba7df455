//! The simulated order system and the account stream `acct`, against real nats-server:
//! demo accounts trading at the market's prints write gap-free events that fold to their
//! snapshot; a restart (orderly or a crash) continues each account's seq; JetStream
//! refuses a stale append and a retried one is not doubled; and the loss of the hub node
//! that leads the stream pauses the appends without losing or doubling any.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures_util::StreamExt;
use tickmesh_core::account::{Balance, Data, Event, Kind, Order, OrderStatus, OrderType, Side};
use tickmesh_core::trade;
use tickmesh_oms::writer::{self, StreamConfig, Writer, WriterError};
use tickmesh_tests::mesh::Mesh;
use tickmesh_tests::oms::{events_so_far, fold, oms_config, snapshot, start_oms, stored_events};
use tickmesh_tests::*;
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);

/// Waits until `ready` says so, asking every 250 ms for at most `within`; fails with what
/// it last said.
async fn wait_for<F, Fut>(within: Duration, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let said = ready().await;
        match said {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline || why.starts_with("an append failed") => {
                panic!("{what} within {within:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// How many events of `kind` the stream holds of each of `accounts`.
async fn counts(js: &jetstream::Context, accounts: &[&str], kind: Kind) -> Vec<usize> {
    let mut out = Vec::new();
    for account in accounts {
        let events = events_so_far(js, account).await.unwrap_or_default();
        out.push(
            events
                .iter()
                .filter(|s| s.event.data.kind() == kind)
                .count(),
        );
    }
    out
}

/// Every print in `tape` so far (until it is quiet for half a second: the prints the
/// order system got may still be on their way to this connection): (symbol, trade_id) →
/// price.
async fn prints(tape: &mut async_nats::Subscriber) -> HashMap<(String, u64), f64> {
    let mut out = HashMap::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), tape.next()).await {
        let print = trade::decode_wire(&msg.payload).unwrap();
        out.insert((print.symbol, print.trade_id), print.price);
    }
    out
}

/// Checks every fill of `events`: at the price of the print it names, and followed by the
/// order, position and balance events it entails. Returns how many fills there were.
fn check_fills(
    account: &str,
    events: &[tickmesh_tests::oms::Stored],
    prints: Option<&HashMap<(String, u64), f64>>,
) -> usize {
    let mut fills = 0;
    for (i, s) in events.iter().enumerate() {
        let Data::Fill(f) = &s.event.data else {
            continue;
        };
        fills += 1;
        if let Some(prints) = prints {
            let key = (f.symbol.clone(), f.trade_id.unwrap());
            assert_eq!(
                prints.get(&key),
                Some(&f.price),
                "{account} seq {}: fill at {} against print {key:?}, which the market did not trade at that price",
                s.event.seq,
                f.price
            );
        }
        let next: Vec<&Data> = events[i + 1..]
            .iter()
            .take(3)
            .map(|s| &s.event.data)
            .collect();
        match next.as_slice() {
            [Data::Order(o), Data::Position(p), Data::Balance(_)] => {
                assert_eq!(o.order_id, f.order_id, "{account} seq {}", s.event.seq);
                assert!(o.filled_qty >= f.qty);
                assert_eq!(
                    (p.symbol.as_str(), p.mark_price),
                    (f.symbol.as_str(), Some(f.price))
                );
            }
            other => panic!(
                "{account} seq {}: fill followed by {other:?}, not its order, position and balance",
                s.event.seq
            ),
        }
    }
    fills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_accounts_write_gap_free_events_that_fold_to_their_snapshot_and_fill_only_at_prints() {
    const ACCOUNTS: [&str; 3] = ["DEMO1", "DEMO2", "DEMO3"];
    let nats = NatsServer::start().unwrap();
    // Every print the market makes, from before the order system starts.
    let mut tape = subscribe_to(&nats.url(), "tr.>").await;
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let oms = start_oms(oms_config(&nats.url(), &ACCOUNTS));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    wait_for(
        60 * SECOND,
        "five fills in every account, a cancel and an amendment",
        || async {
            let fills = counts(&js, &ACCOUNTS, Kind::Fill).await;
            let orders = order_changes(&js, &ACCOUNTS).await;
            match fills.iter().all(|&n| n >= 5) && orders.cancelled > 0 && orders.amended > 0 {
                true => Ok(()),
                false => Err(format!("fills {fills:?}, {orders:?}")),
            }
        },
    )
    .await;
    assert!(!oms.has_ended(), "the order system stopped on its own");
    oms.stop().await.unwrap();
    ingest.stop().await.unwrap();
    let prints = prints(&mut tape).await;

    for account in ACCOUNTS {
        let events = stored_events(&js, account).await.unwrap();
        let state = fold(account, &events).unwrap();
        let snap = snapshot(&js, account).await.unwrap();
        assert_eq!(
            snap.state, state,
            "{account}: the snapshot is not the fold of its events"
        );
        assert_eq!(snap.stream_seq, events.last().unwrap().stream_seq);
        assert!(check_fills(account, &events, Some(&prints)) >= 5);
        let Some(Data::Balance(first)) = events.first().map(|s| &s.event.data) else {
            panic!("{account} does not start with its deposit")
        };
        assert_eq!(first.cash, 1_000_000.0);
    }
    let orders = order_changes(&js, &ACCOUNTS).await;
    assert!(orders.placed > 0 && orders.filled > 0, "{orders:?}");
}

/// What the accounts' order events say, counted.
#[derive(Debug, Default)]
struct OrderChanges {
    placed: usize,
    filled: usize,
    cancelled: usize,
    /// A working order whose limit price changed.
    amended: usize,
}

async fn order_changes(js: &jetstream::Context, accounts: &[&str]) -> OrderChanges {
    let mut out = OrderChanges::default();
    for account in accounts {
        let mut limits: HashMap<String, Option<f64>> = HashMap::new();
        for s in events_so_far(js, account).await.unwrap_or_default() {
            let Data::Order(o) = &s.event.data else {
                continue;
            };
            let before = limits.insert(o.order_id.clone(), o.limit_price);
            match o.status {
                OrderStatus::New if before.is_none() => out.placed += 1,
                OrderStatus::Filled => out.filled += 1,
                OrderStatus::Cancelled => out.cancelled += 1,
                _ => {}
            }
            if o.status.is_open() && before.is_some_and(|p| p != o.limit_price) {
                out.amended += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_order_system_continues_each_accounts_seq() {
    const ACCOUNTS: [&str; 2] = ["DEMO1", "DEMO2"];
    let nats = NatsServer::start().unwrap();
    let mut tape = subscribe_to(&nats.url(), "tr.>").await;
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let mut config = oms_config(&nats.url(), &ACCOUNTS);
    config.sim.order_interval_ms = 50;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let total = |js: jetstream::Context| async move {
        let mut n = 0;
        for account in ACCOUNTS {
            n += events_so_far(&js, account).await.unwrap_or_default().len();
        }
        n
    };
    // Stopped in order, killed mid-work (perhaps between a fill and its order, position
    // and balance), and stopped again after a fill left half-written on purpose: each
    // run continues where the stream says the last one ended.
    for round in 0..4 {
        let before = total(js.clone()).await;
        let oms = start_oms(config.clone());
        wait_for(
            30 * SECOND,
            &format!("round {round}: 30 more events"),
            || {
                let js = js.clone();
                async move {
                    let n = total(js).await;
                    match n >= before + 30 {
                        true => Ok(()),
                        false => Err(format!("{n} events, {before} before the restart")),
                    }
                }
            },
        )
        .await;
        assert!(
            !oms.has_ended(),
            "round {round}: the order system stopped on its own"
        );
        match round {
            1 => oms.kill().await,
            _ => oms.stop().await.unwrap(),
        }
        if round == 2 {
            half_written_fill(&js, "DEMO1", &mut tape).await;
        }
    }
    ingest.stop().await.unwrap();
    for account in ACCOUNTS {
        let events = stored_events(&js, account).await.unwrap();
        let state = fold(account, &events).unwrap();
        assert_eq!(snapshot(&js, account).await.unwrap().state, state);
        check_fills(account, &events, None);
    }
}

/// Appends, as the order system would have before a crash, a fill of a new order of
/// `account` at a real print, without the order, position and balance events it entails:
/// the next run must finish it.
async fn half_written_fill(
    js: &jetstream::Context,
    account: &str,
    tape: &mut async_nats::Subscriber,
) {
    let writer = Writer::open(js.clone(), &StreamConfig::default())
        .await
        .unwrap();
    let mut log = writer.account(account).await.unwrap();
    let print = loop {
        let msg = tokio::time::timeout(5 * SECOND, tape.next())
            .await
            .unwrap()
            .unwrap();
        let print = trade::decode_wire(&msg.payload).unwrap();
        if print.symbol == "AAPL" {
            break print;
        }
    };
    let (symbol, trade_id, price) = (print.symbol, print.trade_id, print.price);
    let order_id = format!("{account}-O{}", log.state().seq + 1);
    log.append(market_buy(&order_id, &symbol, 100))
        .await
        .unwrap();
    let fill = log
        .append(Data::Fill(tickmesh_core::account::Fill {
            fill_id: format!("{account}-F{}", log.state().seq + 1),
            order_id,
            symbol,
            side: Side::Buy,
            qty: 100,
            price,
            trade_id: Some(trade_id),
        }))
        .await
        .unwrap();
    assert_eq!(
        log.unfinished_fill(3).map(|(e, done)| (e.seq, done)),
        Some((fill.seq, 0))
    );
}

/// A market buy order, just placed.
fn market_buy(order_id: &str, symbol: &str, qty: u64) -> Data {
    Data::Order(Order {
        order_id: order_id.into(),
        symbol: symbol.into(),
        side: Side::Buy,
        order_type: OrderType::Market,
        qty,
        limit_price: None,
        status: OrderStatus::New,
        filled_qty: 0,
        avg_price: None,
        reason: None,
    })
}

fn deposit(cash: f64) -> Data {
    Data::Balance(Balance {
        currency: "USD".into(),
        cash,
        realized_pnl: 0.0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_append_is_refused_and_a_retried_one_is_not_doubled() {
    let nats = NatsServer::start().unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let writer = Writer::open(js.clone(), &StreamConfig::default())
        .await
        .unwrap();
    let mut log = writer.account("T1").await.unwrap();
    log.append(deposit(1.0)).await.unwrap();
    let first = log.stream_seq();
    log.append(deposit(2.0)).await.unwrap();
    let second = log.stream_seq();
    // A writer with an older view of the account than the stream's.
    let mut behind = writer.account("T1").await.unwrap();
    assert_eq!(behind.state().seq, 2);

    let event = |seq, data| Event {
        account: "T1".into(),
        seq,
        ts: tickmesh_core::tick::now_us(),
        data,
    };
    let third = event(3, deposit(3.0));
    // Expecting seq 1's position when seq 2 is the last: refused.
    let stale = writer::publish(&js, &third, first).await.unwrap_err();
    assert_eq!(stale.kind(), PublishErrorKind::WrongLastSequence, "{stale}");
    // The check spans every kind of the account: an order expecting no earlier event
    // of the account (there is none on acct.T1.order) is refused too.
    let order = event(3, market_buy("T1-O3", "AAPL", 1));
    let stale = writer::publish(&js, &order, 0).await.unwrap_err();
    assert_eq!(stale.kind(), PublishErrorKind::WrongLastSequence, "{stale}");

    // Stored, but as if its acknowledgement were lost: the log does not know.
    let stored = writer::publish(&js, &third, second).await.unwrap();
    // The same append again (same headers, same Msg-Id): not a second copy.
    match writer::publish(&js, &third, second).await {
        Err(e) => assert_eq!(e.kind(), PublishErrorKind::WrongLastSequence, "{e}"),
        Ok(ack) => assert!(ack.duplicate && ack.sequence == stored.sequence, "{ack:?}"),
    }
    // The log's retry of seq 3 finds it stored and goes on from it.
    let adopted = log.append(deposit(3.0)).await.unwrap();
    assert_eq!((adopted.seq, adopted.ts), (3, third.ts));
    assert_eq!(log.stream_seq(), stored.sequence);
    assert_eq!(log.append(deposit(4.0)).await.unwrap().seq, 4);

    // The writer that was behind stamps seq 3 anew: refused, and told another writer is
    // at work, rather than doubling or skipping a seq.
    let conflict = behind.append(deposit(9.0)).await.unwrap_err();
    assert!(
        matches!(conflict, WriterError::Conflict { seq: 4, .. }),
        "{conflict}"
    );

    let events = stored_events(&js, "T1").await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|s| s.event.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let state = fold("T1", &events).unwrap();
    assert_eq!(snapshot(&js, "T1").await.unwrap().state, state);
    let rebuilt = writer.account("T1").await.unwrap();
    assert_eq!(
        (rebuilt.state(), rebuilt.stream_seq()),
        (&state, events[3].stream_seq)
    );
}

/// The hub node that leads `acct`, as the stream's leader itself says (the monitoring
/// pages of its followers may lag behind an election).
async fn acct_leader(mesh: &Mesh, js: &jetstream::Context) -> usize {
    let deadline = Instant::now() + 30 * SECOND;
    loop {
        let info = async {
            let mut stream = js.get_stream(tickmesh_core::account::STREAM).await.ok()?;
            let info = stream.info().await.ok()?;
            info.cluster.as_ref()?.leader.clone()
        };
        if let Some(leader) = info.await {
            return mesh.hub.iter().position(|n| n.name == leader).unwrap();
        }
        assert!(Instant::now() < deadline, "acct has no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What an appender saw acknowledged: (seq, data, when).
type Acked = Arc<Mutex<Vec<(u64, Data, Instant)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_hub_node_that_leads_acct_pauses_appends_and_loses_or_doubles_none() {
    const ACCOUNTS: [&str; 2] = ["R1", "R2"];
    const REGION: &str = "region-a";
    const SECRET: &str = "an-order-system-suite-hs256-secret-of-32-bytes";
    let mut mesh = Mesh::start(&[REGION], 2).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(50));
    let client = mesh.pki.connect("oms", &mesh.hub_urls()).await.unwrap();
    let js = jetstream::new(client);
    let config = StreamConfig {
        replicas: 3,
        ..StreamConfig::default()
    };
    let writer = Writer::open(js.clone(), &config).await.unwrap();
    // A trader of R1 on a region's edge, reading from seq 1 throughout.
    let mut edge_config = mesh.edge_config(REGION);
    edge_config.auth.hs256_secret = Some(SECRET.into());
    let (edge, addr) = start_edge(edge_config).await.unwrap();
    let token = tickmesh_tests::accounts::token(SECRET, "trader", &["R1"]);
    let mut trader = Client::connect_with(addr, tickmesh_core::Format::Json, Some(&token))
        .await
        .unwrap();
    trader
        .send(serde_json::json!({"op":"subscribe","id":1,"account":"R1","from_seq":1}))
        .await
        .unwrap();
    let shown: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let reading = {
        let shown = shown.clone();
        tokio::spawn(async move {
            // Bounded: a few minutes at most, or until the socket ends.
            let deadline = Instant::now() + 180 * SECOND;
            while Instant::now() < deadline {
                match trader.next_event(deadline - Instant::now()).await {
                    Ok(tickmesh_tests::Event::Msg(v)) if v["type"] == "account" => {
                        shown.lock().unwrap().push(v)
                    }
                    Ok(tickmesh_tests::Event::Msg(v)) if v["type"] == "error" => {
                        panic!("the trader was told {v}")
                    }
                    Ok(tickmesh_tests::Event::Msg(_)) => {}
                    Ok(tickmesh_tests::Event::Closed(code)) => panic!("closed: {code:?}"),
                    Err(_) => return,
                }
            }
        })
    };
    // One appender per account, each appending as soon as its last append is acknowledged.
    let stop = CancellationToken::new();
    let mut appenders = Vec::new();
    let mut acked: Vec<Acked> = Vec::new();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    for account in ACCOUNTS {
        let mut log = writer.account(account).await.unwrap();
        let seen: Acked = Arc::default();
        acked.push(seen.clone());
        let (stop, failed) = (stop.clone(), failed.clone());
        appenders.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let data = deposit(log.state().seq as f64);
                match log.append(data).await {
                    Ok(e) => seen.lock().unwrap().push((e.seq, e.data, Instant::now())),
                    Err(e) => {
                        failed.lock().unwrap().push(e.to_string());
                        return Err(e);
                    }
                }
            }
            Ok::<_, WriterError>(log)
        }));
    }
    let acked_since = |at: Instant| -> Result<(), String> {
        let failed = failed.lock().unwrap();
        if !failed.is_empty() {
            return Err(format!("an append failed: {failed:?}"));
        }
        let n: Vec<usize> = acked
            .iter()
            .map(|a| a.lock().unwrap().iter().filter(|(_, _, t)| *t > at).count())
            .collect();
        match n.iter().all(|&n| n >= 50) {
            true => Ok(()),
            false => Err(format!("appends per account: {n:?}")),
        }
    };
    let started = Instant::now();
    wait_for(30 * SECOND, "50 appends per account", || async {
        acked_since(started)
    })
    .await;

    let leader = acct_leader(&mesh, &js).await;
    let killed = Instant::now();
    mesh.hub[leader].kill();
    wait_for(
        60 * SECOND,
        "50 appends per account after the leader's loss",
        || async { acked_since(killed) },
    )
    .await;
    stop.cancel();
    for appender in appenders {
        appender.await.unwrap().unwrap();
    }
    assert_ne!(acct_leader(&mesh, &js).await, leader);

    for (account, seen) in ACCOUNTS.iter().zip(&acked) {
        let seen = seen.lock().unwrap().clone();
        let pause = seen
            .windows(2)
            .map(|w| w[1].2.duration_since(w[0].2))
            .max()
            .unwrap();
        eprintln!(
            "{account}: {} appends, the longest pause {pause:?}",
            seen.len()
        );
        assert!(
            pause > Duration::from_millis(500),
            "{account}: appends never paused"
        );
        // What the surviving nodes hold: every acknowledged event, once, in order.
        let events = stored_events(&js, account).await.unwrap();
        let state = fold(account, &events).unwrap();
        let held: Vec<(u64, &Data)> = events
            .iter()
            .map(|s| (s.event.seq, &s.event.data))
            .collect();
        let want: Vec<(u64, &Data)> = seen.iter().map(|(seq, data, _)| (*seq, data)).collect();
        if let Some(i) = (0..held.len().max(want.len())).find(|&i| held.get(i) != want.get(i)) {
            panic!(
                "{account}: the stream holds {} events, {} were acknowledged; from #{i} it holds {:?}, the acknowledgements say {:?}",
                held.len(),
                want.len(),
                &held[i.min(held.len())..(i + 3).min(held.len())],
                &want[i.min(want.len())..(i + 3).min(want.len())],
            );
        }
        let rebuilt = writer.account(account).await.unwrap();
        assert_eq!(rebuilt.state(), &state);
    }

    // The trader saw every acknowledged event of R1 once, in order, with its data.
    let acked_r1: Vec<(u64, Data)> = acked[0]
        .lock()
        .unwrap()
        .iter()
        .map(|(seq, data, _)| (*seq, data.clone()))
        .collect();
    let last = acked_r1.last().unwrap().0;
    // Its edge's consumer lived on the lost leader: made anew, it goes on within seconds.
    wait_for(15 * SECOND, "the trader's last event", || async {
        let seen = shown.lock().unwrap().last().and_then(|v| v["seq"].as_u64());
        match seen {
            Some(s) if s >= last => Ok(()),
            s => Err(format!("at {s:?} of {last}")),
        }
    })
    .await;
    reading.abort();
    let seen: Vec<(u64, Data)> = shown
        .lock()
        .unwrap()
        .iter()
        .map(|v| {
            let event: Event = serde_json::from_value(v.clone()).unwrap();
            (event.seq, event.data)
        })
        .collect();
    if let Some(i) = (0..seen.len().max(acked_r1.len())).find(|&i| seen.get(i) != acked_r1.get(i)) {
        panic!(
            "the trader saw {} events, {} were acknowledged; from #{i} it saw {:?}, the acknowledgements say {:?}",
            seen.len(),
            acked_r1.len(),
            seen.get(i).map(|e| e.0),
            acked_r1.get(i).map(|e| e.0),
        );
    }
    edge.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
