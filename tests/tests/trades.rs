//! End-to-end time and sales: ingest publishes every print on `tr.<shard>.<symbol>` and
//! the stream `md_trades` keeps the recent ones; a `trades` subscription gets the last
//! prints first, then every live print, with no gap or duplicate between them; a client
//! that cannot keep up with a tape is cut with 4008.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::time::Duration;

use async_nats::jetstream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::mesh::Mesh;
use tickmesh_tests::*;
use tokio_tungstenite::tungstenite::Message;

const SECOND: Duration = Duration::from_secs(1);

/// The seqs of the prints in `msgs`: (history, live), checking each print's fields.
fn prints(msgs: &[(std::time::Instant, Value)]) -> (Vec<u64>, Vec<u64>) {
    let (mut history, mut live) = (Vec::new(), Vec::new());
    for (_, v) in msgs {
        if v["type"] != "trades" {
            continue;
        }
        let snapshot = v["snapshot"].as_bool().unwrap_or(false);
        for t in v["trades"].as_array().unwrap() {
            assert_eq!(t["symbol"], "AAPL", "{t}");
            assert!(t["price"].as_f64().unwrap() > 0.0, "{t}");
            assert!(t["size"].as_u64().unwrap() > 0, "{t}");
            assert_eq!(t["trade_id"], t["seq"], "{t}");
            assert!(t["conditions"].is_array(), "{t}");
            let seq = t["seq"].as_u64().unwrap();
            match snapshot {
                true => history.push(seq),
                false => live.push(seq),
            }
        }
    }
    (history, live)
}

/// Every seq `md_trades` keeps of AAPL's subject, oldest first.
async fn kept(nats_url: &str) -> Vec<u64> {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("md_trades").await.unwrap();
    let subject = tickmesh_core::trade::trade_subject(
        &tickmesh_core::Symbol::parse("AAPL").unwrap(),
        tickmesh_core::subject::DEFAULT_SHARDS,
    );
    let consumer = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while pending > 0 {
        let msg = tokio::time::timeout(5 * SECOND, messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        pending = msg.info().unwrap().pending;
        out.push(tickmesh_core::trade::decode_wire(&msg.payload).unwrap().seq);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tape_starts_with_its_history_and_goes_on_live_without_a_gap_or_a_duplicate() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 1000));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    // The prints of the half second between the live subscription and the read of the
    // history reach the edge both ways: the join must take each once.
    tickmesh_edge::fault::delay_history(500);
    // Prints pile up in the stream before anyone asks.
    tokio::time::sleep(2 * SECOND).await;
    let mut first = Client::connect(addr, Format::Json).await.unwrap();
    first
        .send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades","history":40}))
        .await
        .unwrap();
    let reply = first.next_non_hb(5 * SECOND).await.unwrap();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(
        (reply["stream"].as_str(), reply["symbols"][0].as_str()),
        (Some("trades"), Some("AAPL"))
    );
    // A second client joins a tape the edge already follows: history from memory.
    let second = async {
        tokio::time::sleep(SECOND).await;
        let mut c = Client::connect(addr, Format::Json).await.unwrap();
        c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades"}))
            .await
            .unwrap();
        c.collect(2 * SECOND).await.unwrap()
    };
    let (a, b) = tokio::join!(first.collect(3 * SECOND), second);
    first.send(json!({"op":"list","id":2})).await.unwrap();
    let list = first.next_of("subscriptions", 5 * SECOND).await.unwrap();
    assert_eq!(
        list["subscriptions"],
        json!([{"symbol":"AAPL","mode":"quote","interval_ms":0,"stream":"trades"}])
    );
    ingest.stop().await.unwrap();
    let stream = kept(&nats.url()).await;
    for (name, msgs, want_history) in [("first", a.unwrap(), 40), ("second", b, 50)] {
        let (history, live) = prints(&msgs);
        assert_eq!(history.len(), want_history, "{name}: history {history:?}");
        assert!(live.len() > 50, "{name}: {} live prints", live.len());
        let all: Vec<u64> = history.iter().chain(&live).copied().collect();
        // Exactly the prints the stream kept between the first and the last the client
        // got: none missing, none twice, in order.
        let (lo, hi) = (all[0], *all.last().unwrap());
        let want: Vec<u64> = stream
            .iter()
            .copied()
            .filter(|s| (lo..=hi).contains(s))
            .collect();
        assert_eq!(all, want, "{name}");
    }
    edge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_with_a_tape_is_cut_and_a_reader_goes_on() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 4000));
    let mut config = edge_config(&nats.url());
    // Over half a second of prints: room enough for a reader on a busy machine.
    config.session.tape_queue = 1024;
    // Only the tape may cut it: a stalled write alone would take 30 s.
    config.session.write_timeout_ms = 30_000;
    let (edge, addr) = start_edge(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let symbols = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"];
    let tape = json!({"op":"subscribe","id":1,"symbols":symbols,"stream":"trades","history":0});
    // Every tick in full too: its socket fills within a second or two once it stops
    // reading, and then its tapes' prints pile up behind it.
    let ticks = json!({"op":"subscribe","id":2,"symbols":symbols,"mode":"full","interval_ms":0});
    let mut stalled = small_buffer_client(addr, Format::Json, None).await.unwrap();
    for req in [&tape, &ticks] {
        stalled
            .send(Message::Text(req.to_string().into()))
            .await
            .unwrap();
    }
    let mut reader = Client::connect(addr, Format::Json).await.unwrap();
    reader.send(tape.clone()).await.unwrap();
    let cut = async {
        for _ in 0..150 {
            if metric(
                addr,
                "tickmesh_edge_slow_consumer_total{action=\"cut_tape\"}",
            )
            .await
                >= 1.0
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let (got, cut) = tokio::join!(reader.collect(4 * SECOND), cut);
    assert!(cut, "the stalled client was never cut off its tapes");
    let (last, code) = last_words(&mut stalled, 10 * SECOND).await.unwrap();
    assert_eq!(code, Some(4008), "last: {last:?}");
    let last = last.unwrap();
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("slow_consumer")),
        "{last}"
    );
    let live: usize = got
        .unwrap()
        .iter()
        .filter(|(_, v)| v["type"] == "trades")
        .map(|(_, v)| v["trades"].as_array().unwrap().len())
        .sum();
    assert!(live > 1000, "the reader got {live} prints");
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// The same through the deployment's topology and least-privilege NATS users: ingest on
/// the hub cluster (streams with 3 replicas), an edge in a region behind its leaf nodes
/// reading the history through the hub's JetStream domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tapes_and_bars_reach_a_region_through_its_leaf_nodes() {
    let mesh = Mesh::start(&["a"], 2).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(1000));
    let (edge, addr) = start_edge(mesh.edge_config("a")).await.unwrap();
    // Ready once the reference data is read; the streams fill meanwhile.
    let deadline = std::time::Instant::now() + 40 * SECOND;
    while http_get(addr, "/readyz").await.map(|(s, _)| s).unwrap_or(0) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(2 * SECOND).await;
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"stream":"trades","history":20}))
        .await
        .unwrap();
    c.send(json!({"op":"subscribe","id":2,"symbols":["AAPL"],"stream":"bars","tf":"1s","history":5,"interval_ms":250}))
        .await
        .unwrap();
    let msgs = c.collect(3 * SECOND).await.unwrap();
    let (history, live) = prints(&msgs);
    assert!(
        !history.is_empty() && live.len() > 50,
        "history {history:?}, {} live",
        live.len()
    );
    let bars: Vec<&Value> = msgs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "bars")
        .collect();
    assert!(
        bars.first()
            .is_some_and(|b| b["snapshot"] == true && !b["bars"].as_array().unwrap().is_empty()),
        "{bars:?}"
    );
    assert!(
        bars.iter().skip(1).any(|b| b["bars"][0]["final"] == true),
        "no bar closed"
    );
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
    let found = mesh.permission_violations();
    assert!(
        found.is_empty(),
        "permission violations:\n{}",
        found.join("\n")
    );
}
