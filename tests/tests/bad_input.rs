//! Hostile input at the edge: deeply nested client messages against a debug build (whose
//! stack frames are the largest), and WebSocket protocol errors read back by a client that
//! speaks the protocol by hand. Each costs only its sender.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tickmesh_core::Format;
use tickmesh_core::subject::{DEFAULT_SHARDS, tick_subject};
use tickmesh_tests::mesh::EdgeProcess;
use tickmesh_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECOND: Duration = Duration::from_secs(1);

/// `{"op":"ping","id":1,"x":` and 3,000 nested one-element arrays: about 3 KB.
fn nested_ping(format: Format) -> Message {
    const DEPTH: usize = 3000;
    match format {
        Format::Json => {
            let arrays = "[".repeat(DEPTH) + &"]".repeat(DEPTH);
            Message::Text(format!(r#"{{"op":"ping","id":1,"x":{arrays}}}"#).into())
        }
        Format::MsgPack => {
            let mut v = b"\x83\xa2op\xa4ping\xa2id\x01\xa1x".to_vec();
            v.extend(std::iter::repeat_n(0x91, DEPTH));
            v.push(0xc0);
            Message::Binary(v.into())
        }
    }
}

/// A bystander's ticks of AAPL keep coming, in order, and it still answers a ping.
async fn bystander_is_served(c: &mut Client, last_seq: &mut u64) {
    let msgs = c.collect(SECOND).await.unwrap();
    let events = tick_events(&msgs);
    assert!(!events.is_empty(), "the bystander got no tick in 1 s");
    for (_, symbol, seq, _, _) in events {
        assert_eq!(symbol, "AAPL");
        assert!(seq > *last_seq, "seq {seq} after {last_seq}");
        *last_seq = seq;
    }
    c.ping(99).await.unwrap();
}

/// The anonymous 3 KB message that aborted a debug-built edge with a stack overflow, in
/// both encodings: answered with `bad_request`, while a bystander session keeps its ticks;
/// and the same nesting in a tick from NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_messages_are_bad_requests_and_the_edge_serves_on() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 200));
    // The test edge binary is built with the tests: a debug build, as the demo runs.
    let edge = EdgeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_tickmesh-test-edge")),
        &edge_config(&nats.url()),
    )
    .await
    .unwrap();
    let mut bystander = Client::connect(edge.addr, Format::Json).await.unwrap();
    bystander
        .send(json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}))
        .await
        .unwrap();
    let mut last_seq = 0;
    bystander_is_served(&mut bystander, &mut last_seq).await;

    for format in Format::ALL {
        let mut attacker = Client::connect(edge.addr, format).await.unwrap();
        attacker.send_raw(nested_ping(format)).await.unwrap();
        let reply = attacker.next_non_hb(5 * SECOND).await.unwrap();
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "bad_request", "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains("nested deeper than"), "{message}");
        // It costs only its sender's message: the session goes on.
        attacker.ping(2).await.unwrap();
        bystander_is_served(&mut bystander, &mut last_seq).await;
    }
    // The same nesting in a tick on NATS, on the subject the bystander's symbol uses:
    // dropped by the edge's NATS thread, which keeps carrying the real ticks.
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let aapl = tickmesh_core::Symbol::parse("AAPL").unwrap();
    let subject = tick_subject(&aapl, DEFAULT_SHARDS);
    let mut deep_tick = b"\x81\xa1z".to_vec();
    deep_tick.extend(std::iter::repeat_n(0x91, 3000));
    deep_tick.push(0xc0);
    nats_client
        .publish(subject, deep_tick.into())
        .await
        .unwrap();
    nats_client.flush().await.unwrap();
    bystander_is_served(&mut bystander, &mut last_seq).await;
    drop(edge);
    ingest.stop().await.unwrap();
}

/// Reads server frames (unmasked) until a close frame, within `within`: its status code,
/// or `None` when the connection ends without one.
async fn read_close_code(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut hdr = [0u8; 2];
        let read = tokio::time::timeout_at(deadline, s.read_exact(&mut hdr))
            .await
            .expect("no close frame in time");
        read.ok()?;
        let opcode = hdr[0] & 0x0f;
        let len = match hdr[1] & 0x7f {
            126 => u64::from(s.read_u16().await.ok()?),
            127 => s.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        tokio::time::timeout_at(deadline, s.read_exact(&mut payload))
            .await
            .expect("no close frame in time")
            .ok()?;
        if opcode == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

/// A client frame: `first` is FIN, RSV and opcode; masked unless `mask` is `None`.
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() <= usize::from(u16::MAX));
    let mut f = vec![first];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(masked | payload.len() as u8);
    } else {
        f.push(masked | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    match mask {
        Some(key) => {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Each WebSocket protocol error closes its connection with RFC 6455's code (read back
/// from the close frame), never a bare reset, and is counted in
/// `tickmesh_edge_closes_total{code}`; the edge serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_close_with_their_code() {
    let nats = NatsServer::start().unwrap();
    // No feed: an empty md_ref lets the edge turn ready.
    create_empty_refdata(&nats.url()).await.unwrap();
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    let key = Some([0x12, 0x34, 0x56, 0x78]);
    let cases: [(&str, Vec<u8>, u16); 10] = [
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, b"\xff\xfe{}", key),
            1007,
        ),
        (
            "invalid UTF-8 across a fragmented text message",
            [
                frame(0x01, b"{\"a\":\"\xe2", key),
                frame(0x80, b"\x28\"}", key),
            ]
            .concat(),
            1007,
        ),
        (
            "an unmasked client frame",
            frame(0x81, br#"{"op":"ping"}"#, None),
            1002,
        ),
        (
            "RSV1 without a negotiated extension",
            frame(0xc1, br#"{"op":"ping"}"#, key),
            1002,
        ),
        ("a reserved data opcode", frame(0x83, b"", key), 1002),
        ("a reserved control opcode", frame(0x8b, b"", key), 1002),
        ("a fragmented ping", frame(0x09, b"ping", key), 1002),
        (
            "a ping of 126 bytes (control frames are at most 125)",
            frame(0x89, &[b'p'; 126], key),
            1002,
        ),
        (
            "a continuation frame with no message started",
            frame(0x80, br#"{"op":"ping"}"#, key),
            1002,
        ),
        (
            "a new text frame while a fragmented message is open",
            [
                frame(0x01, br#"{"op":"#, key),
                frame(0x81, br#"{"op":"ping"}"#, key),
            ]
            .concat(),
            1002,
        ),
    ];
    let mut want_closes = std::collections::BTreeMap::<u16, f64>::new();
    for (what, bytes, want) in cases {
        let mut s = raw_upgrade(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let started = Instant::now();
        let code = read_close_code(&mut s, 5 * SECOND).await;
        assert_eq!(code, Some(want), "{what}");
        assert!(
            started.elapsed() < 3 * SECOND,
            "{what}: close took too long"
        );
        *want_closes.entry(want).or_default() += 1.0;
    }
    for (code, want) in want_closes {
        let name = format!("tickmesh_edge_closes_total{{code=\"{code}\"}}");
        assert_eq!(metric(addr, &name).await, want, "{name}");
    }
    let mut c = Client::connect(addr, Format::Json).await.unwrap();
    c.ping(1).await.unwrap();
    edge.stop().await.unwrap();
}
