use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::stream::{Inflating, refusal};
use super::*;

/// RFC 7692 §7.2.3.1: "Hello" compressed, tail removed.
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn accepts_what_browsers_and_libraries_offer() {
    for offer in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=15",
        "permessage-deflate; server_max_window_bits=\"15\"; client_no_context_takeover",
        "x-webkit-deflate-frame, permessage-deflate",
        "Permessage-Deflate; Client_Max_Window_Bits=15",
    ] {
        assert!(negotiate([offer]), "{offer}");
    }
}

#[test]
fn declines_what_it_cannot_honour_or_does_not_know() {
    for offer in [
        "",
        "x-webkit-deflate-frame",
        // The shared frames are made with the full window.
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=1x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; mystery",
    ] {
        assert!(!negotiate([offer]), "{offer}");
    }
    // The next offer of the list is taken when the first is declined.
    assert!(negotiate([
        "permessage-deflate; server_max_window_bits=10, permessage-deflate"
    ]));
    assert!(negotiate(["foo", "permessage-deflate"]));
    assert!(!negotiate([]));
}

#[test]
fn inflates_the_rfc_examples() {
    assert_eq!(inflate(HELLO.to_vec(), 100).unwrap(), b"Hello");
    // One final block (BFINAL = 1).
    let last = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate(last, 100).unwrap(), b"Hello");
    // A stored (uncompressed) block.
    let stored = vec![
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflate(stored, 100).unwrap(), b"Hello");
    assert_eq!(compress(b"Hello"), HELLO);
}

#[test]
fn a_deflate_bomb_stops_at_the_limit() {
    let bomb = compress(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 32 * 1024, "{}", bomb.len());
    assert_eq!(inflate(bomb, 64 * 1024), Err(InflateError::TooLarge));
    let exact = compress(&[7u8; 1000]);
    assert_eq!(inflate(exact.clone(), 1000).unwrap().len(), 1000);
    assert_eq!(inflate(exact, 999), Err(InflateError::TooLarge));
}

#[test]
fn garbage_is_corrupt() {
    assert_eq!(inflate(vec![0xff; 16], 1000), Err(InflateError::Corrupt));
}

#[test]
fn inflates_a_message_of_several_blocks() {
    // Blocks made alone and joined at their sync-flush boundaries: back-references stay
    // within 256 bytes, as from a client told a small `client_max_window_bits`.
    let text: Vec<u8> = (0..20_000u32)
        .map(|i| b"abcdefghij"[(i % 7) as usize])
        .collect();
    let mut z = Vec::new();
    for chunk in text.chunks(256) {
        z.extend(compress(chunk));
        z.extend_from_slice(&TAIL);
    }
    z.truncate(z.len() - TAIL.len());
    assert_eq!(inflate(z, 1 << 20).unwrap(), text);
}

proptest! {
    #[test]
    fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let z = compress(&data);
        prop_assert!(!z.ends_with(&TAIL) || data.is_empty());
        prop_assert_eq!(inflate(z, data.len()).unwrap(), data);
    }

    #[test]
    fn round_trips_text(words in proptest::collection::vec("[a-z\"{}:,0-9.]{1,12}", 0..2000)) {
        let data = words.concat().into_bytes();
        prop_assert_eq!(inflate(compress(&data), data.len()).unwrap(), data);
    }
}

/// The payload a compressed message carries.
fn payload(msg: &Message) -> (bool, Bytes) {
    match msg {
        Message::Frame(f) => (f.header().rsv1, Bytes::copy_from_slice(f.payload())),
        other => panic!("not a frame: {other:?}"),
    }
}

#[test]
fn the_same_bytes_are_compressed_once() {
    let frame = Bytes::from(r#"{"type":"ticks","ticks":[{"s":"AAPL","bid":189.5,"ask":189.52}]}"#);
    let a = crate::deflate::message(Format::Json, frame.clone());
    let b = crate::deflate::message(Format::Json, frame.clone());
    // Equal bytes in another allocation, as two sessions building the same frame make.
    let c = crate::deflate::message(Format::Json, Bytes::from(frame.to_vec()));
    let ptr = |m: &Message| match m {
        Message::Frame(f) => f.payload().as_ptr(),
        _ => panic!(),
    };
    assert_eq!(ptr(&a), ptr(&b));
    assert_eq!(ptr(&a), ptr(&c));
    let (rsv1, z) = payload(&a);
    assert!(rsv1);
    assert_eq!(inflate(z.to_vec(), 1000).unwrap(), frame);
    // Other bytes, other payload.
    let d = crate::deflate::message(Format::Json, Bytes::from(frame.to_vec().repeat(2)));
    assert_ne!(ptr(&a), ptr(&d));
}

#[test]
fn short_messages_go_plain() {
    let msg = crate::deflate::message(Format::MsgPack, Bytes::from_static(b"\x81\xa1t\xa2hb"));
    let Message::Frame(f) = msg else { panic!() };
    assert!(!f.header().rsv1);
    assert_eq!(f.header().opcode, OpCode::Data(Data::Binary));
    assert_eq!(f.payload(), b"\x81\xa1t\xa2hb");
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![first];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// A server WebSocket reading through [`Inflating`] from what `bytes` writes.
async fn server_reading(
    bytes: Vec<u8>,
    limit: usize,
) -> WebSocketStream<Inflating<tokio::io::DuplexStream>> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    client.write_all(&bytes).await.unwrap();
    // Kept open: the server reads what was written, then waits.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(client);
    });
    WebSocketStream::from_raw_socket(Inflating::new(server, limit), Role::Server, None).await
}

async fn read(
    ws: &mut WebSocketStream<Inflating<tokio::io::DuplexStream>>,
) -> Result<Message, tokio_tungstenite::tungstenite::Error> {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("the stream is open")
}

#[tokio::test]
async fn inbound_compressed_messages_reach_tungstenite_plain() {
    let request = br#"{"op":"subscribe","id":1,"symbols":["AAPL","MSFT","SPY"],"interval_ms":250}"#;
    let z = compress(request);
    let (head, tail) = z.split_at(z.len() / 2);
    let mut wire = Vec::new();
    // Compressed, in one frame.
    wire.extend(client_frame(FIN | RSV1 | 1, &z));
    // Plain.
    wire.extend(client_frame(FIN | 1, b"plain"));
    // Compressed, in two frames with a ping between them.
    wire.extend(client_frame(RSV1 | 1, head));
    wire.extend(client_frame(FIN | 9, b"p"));
    wire.extend(client_frame(FIN, tail));
    // Binary, compressed.
    wire.extend(client_frame(FIN | RSV1 | 2, &compress(&[1, 2, 3])));
    let mut ws = server_reading(wire, 1000).await;
    assert_eq!(
        read(&mut ws).await.unwrap(),
        Message::text(std::str::from_utf8(request).unwrap())
    );
    assert_eq!(read(&mut ws).await.unwrap(), Message::text("plain"));
    assert_eq!(
        read(&mut ws).await.unwrap(),
        Message::Ping(Bytes::from_static(b"p"))
    );
    assert_eq!(
        read(&mut ws).await.unwrap(),
        Message::text(std::str::from_utf8(request).unwrap())
    );
    assert_eq!(read(&mut ws).await.unwrap(), Message::binary(vec![1, 2, 3]));
}

#[tokio::test]
async fn an_inbound_bomb_is_refused_as_an_io_error_tungstenite_hands_on() {
    let wire = client_frame(FIN | RSV1 | 1, &compress(&vec![b'a'; 1 << 20]));
    let mut ws = server_reading(wire, 64 * 1024).await;
    let Err(tokio_tungstenite::tungstenite::Error::Io(e)) = read(&mut ws).await else {
        panic!("expected the refusal");
    };
    assert_eq!(refusal(&e), Some(InflateError::TooLarge));
}

#[tokio::test]
async fn after_a_refusal_plain_frames_still_come_through_and_compressed_ones_are_dropped() {
    let close = client_frame(FIN | 8, &1000u16.to_be_bytes());
    let mut wire = client_frame(FIN | RSV1 | 1, &compress(&vec![b'a'; 1 << 20]));
    wire.extend(client_frame(FIN | RSV1 | 1, &compress(b"dropped")));
    wire.extend(&close);
    let mut a = Inflating::new(&wire[..], 64 * 1024);
    let (mut out, mut refusals, mut buf) = (Vec::new(), Vec::new(), [0u8; 256]);
    loop {
        match a.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => refusals.push(refusal(&e)),
        }
    }
    assert_eq!(refusals, [Some(InflateError::TooLarge)]);
    assert_eq!(out, close);
}

#[tokio::test]
async fn a_compressed_message_over_the_limit_is_refused_before_it_is_read() {
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let wire = client_frame(FIN | RSV1 | 2, &compress(&noise));
    let mut ws = server_reading(wire, 1000).await;
    let Err(tokio_tungstenite::tungstenite::Error::Io(e)) = read(&mut ws).await else {
        panic!("expected the refusal");
    };
    assert_eq!(refusal(&e), Some(InflateError::TooLarge));
}

#[tokio::test]
async fn rsv1_on_a_control_frame_is_still_a_protocol_error() {
    let wire = client_frame(FIN | RSV1 | 9, b"x");
    let mut ws = server_reading(wire, 1000).await;
    assert!(matches!(
        read(&mut ws).await,
        Err(tokio_tungstenite::tungstenite::Error::Protocol(_))
    ));
}
