//! End-to-end: permessage-deflate. A client that offers it gets compressed frames with the
//! same data as a client that does not; a client that does not offer it (or offers what
//! the edge cannot honour) gets plain frames; a compressed bomb closes only its sender,
//! with 1009.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_edge::deflate::{compress, inflate};
use tickmesh_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECOND: Duration = Duration::from_secs(1);
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"];

/// A WebSocket client written out by hand, so that it can offer permessage-deflate and see
/// each frame's RSV1 bit and size on the wire.
struct RawClient {
    s: TcpStream,
    /// The `Sec-WebSocket-Extensions` of the upgrade response, if any.
    extensions: Option<String>,
    buf: Vec<u8>,
    /// Frames and bytes (headers included) received, and how many frames had RSV1.
    frames: u64,
    compressed: u64,
    wire_bytes: u64,
    inflated_bytes: u64,
}

enum Frame {
    Msg(Value),
    Close(u16),
}

impl RawClient {
    async fn connect(addr: SocketAddr, offer: Option<&str>) -> anyhow::Result<Self> {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(offer) = offer {
            req.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tokio::time::timeout(5 * SECOND, s.read_u8())
                .await
                .context("no upgrade response within 5 s")??;
            head.push(b);
        }
        let head = String::from_utf8(head)?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_string())
        });
        Ok(RawClient {
            s,
            extensions,
            buf: Vec::new(),
            frames: 0,
            compressed: 0,
            wire_bytes: 0,
            inflated_bytes: 0,
        })
    }

    /// Sends a text message, compressed (RSV1) when `deflate`.
    async fn send(&mut self, v: &Value, deflate: bool) -> anyhow::Result<()> {
        let text = v.to_string().into_bytes();
        let (first, payload) = if deflate {
            (0x80 | 0x40 | 1, compress(&text))
        } else {
            (0x80 | 1, text)
        };
        self.send_frame(first, &payload).await
    }

    async fn send_frame(&mut self, first: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        let mut f = vec![first];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.s.write_all(&f).await?;
        Ok(())
    }

    /// The next data message or close, within `within`.
    async fn next(&mut self, within: Duration) -> anyhow::Result<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .context("nothing within the deadline")??;
            if n == 0 {
                bail!("the edge closed the connection without a close frame");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse(&mut self) -> anyhow::Result<Option<Frame>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        anyhow::ensure!(b[0] & 0x80 != 0, "the edge fragmented a message");
        anyhow::ensure!(b[1] & 0x80 == 0, "a masked server frame");
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into()?) as usize, 10),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return Ok(None);
        }
        let rsv1 = b[0] & 0x40 != 0;
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        self.frames += 1;
        self.wire_bytes += (at + len) as u64;
        match opcode {
            1 => {
                let text = if rsv1 {
                    anyhow::ensure!(self.extensions.is_some(), "RSV1 without permessage-deflate");
                    self.compressed += 1;
                    inflate(payload, 1 << 20)?
                } else {
                    payload
                };
                self.inflated_bytes += text.len() as u64;
                Ok(Some(Frame::Msg(serde_json::from_slice(&text)?)))
            }
            8 => {
                anyhow::ensure!(!rsv1, "a compressed close frame");
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                Ok(Some(Frame::Close(code)))
            }
            9 | 10 => {
                anyhow::ensure!(!rsv1, "a compressed control frame");
                Ok(None)
            }
            other => bail!("opcode {other}"),
        }
    }

    /// Every message for `dur`, as `Client::collect` gives them.
    async fn collect(&mut self, dur: Duration) -> anyhow::Result<Vec<(Instant, Value)>> {
        let end = Instant::now() + dur;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Ok(Frame::Msg(v)) => out.push((Instant::now(), v)),
                Ok(Frame::Close(code)) => bail!("closed with {code}"),
                Err(_) if Instant::now() >= end => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// nats-server, ingest at 2,000 ticks/s and an edge, with a snapshot of every symbol.
struct Mesh {
    _nats: NatsServer,
    services: [Service; 2],
    addr: SocketAddr,
}

async fn mesh() -> Mesh {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 2000));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    // The KV writer runs every 250 ms: two rounds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let services = [ingest, edge];
    Mesh {
        _nats: nats,
        services,
        addr,
    }
}

impl Mesh {
    async fn stop(self) {
        for s in self.services {
            s.stop().await.unwrap();
        }
    }
}

const CHROME_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Every conflated live value per (symbol, seq), without `from_seq` (which tells what the
/// session's own previous update was).
fn live_by_seq(msgs: &[(Instant, Value)]) -> HashMap<(String, u64), Value> {
    tick_events(msgs)
        .into_iter()
        .filter(|(_, _, _, snapshot, _)| !snapshot)
        .map(|(_, symbol, seq, _, mut tick)| {
            tick.as_object_mut().unwrap().remove("from_seq");
            ((symbol, seq), tick)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_deflate_gets_compressed_frames_with_the_same_data() {
    let m = mesh().await;
    let subscribe = json!({"op":"subscribe","id":1,"symbols":SYMBOLS,"interval_ms":250});
    let mut plain = Client::connect(m.addr, Format::Json).await.unwrap();
    let mut z = RawClient::connect(m.addr, Some(CHROME_OFFER))
        .await
        .unwrap();
    assert_eq!(
        z.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let Frame::Msg(welcome) = z.next(5 * SECOND).await.unwrap() else {
        panic!("closed")
    };
    assert_eq!(welcome["type"], "welcome");
    plain.send(subscribe.clone()).await.unwrap();
    // The request goes compressed, as a browser sends it.
    z.send(&subscribe, true).await.unwrap();
    let (plain_msgs, z_msgs) = tokio::join!(plain.collect(3 * SECOND), z.collect(3 * SECOND));
    let (plain_msgs, z_msgs) = (plain_msgs.unwrap(), z_msgs.unwrap());

    let subscribed = z_msgs.iter().find(|(_, v)| v["type"] == "subscribed");
    assert_eq!(subscribed.unwrap().1["symbols"], json!(SYMBOLS));
    let snapshots: Vec<String> = tick_events(&z_msgs)
        .into_iter()
        .filter(|e| e.3)
        .map(|e| e.1)
        .collect();
    assert_eq!(
        snapshots.len(),
        SYMBOLS.len(),
        "one snapshot each: {snapshots:?}"
    );

    // Both sessions flush on the shared 250 ms clock: they send the same values.
    let a = live_by_seq(&plain_msgs);
    let b = live_by_seq(&z_msgs);
    let common: Vec<_> = a.keys().filter(|k| b.contains_key(*k)).collect();
    assert!(
        common.len() >= SYMBOLS.len() * 4,
        "{} values in common of {} and {}",
        common.len(),
        a.len(),
        b.len()
    );
    for k in common {
        assert_eq!(a[k], b[k], "{k:?}");
    }
    assert!(
        z.compressed >= 4,
        "{} of {} frames compressed",
        z.compressed,
        z.frames
    );
    assert!(
        z.wire_bytes * 10 < z.inflated_bytes * 7,
        "{} bytes on the wire for {} of messages",
        z.wire_bytes,
        z.inflated_bytes
    );
    assert!(metric(m.addr, "tickmesh_edge_deflate_sessions_total").await >= 1.0);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_offering_deflate_or_offering_what_cannot_be_honoured_gets_plain_frames() {
    let m = mesh().await;
    for offer in [
        None,
        Some("permessage-deflate; server_max_window_bits=10"),
        Some("x-webkit-deflate-frame"),
    ] {
        let mut c = RawClient::connect(m.addr, offer).await.unwrap();
        assert_eq!(c.extensions, None, "{offer:?}");
        c.send(
            &json!({"op":"subscribe","id":1,"symbols":SYMBOLS,"interval_ms":0}),
            false,
        )
        .await
        .unwrap();
        let msgs = c.collect(SECOND).await.unwrap();
        assert!(
            tick_events(&msgs).len() > SYMBOLS.len(),
            "{offer:?}: {msgs:?}"
        );
        assert_eq!(c.compressed, 0, "{offer:?}");
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_bomb_closes_its_sender_with_1009_and_no_one_else() {
    let m = mesh().await;
    let mut bystander = RawClient::connect(m.addr, Some(CHROME_OFFER))
        .await
        .unwrap();
    bystander
        .send(
            &json!({"op":"subscribe","id":1,"symbols":["AAPL"],"interval_ms":0}),
            true,
        )
        .await
        .unwrap();
    let mut bomber = RawClient::connect(m.addr, Some(CHROME_OFFER))
        .await
        .unwrap();
    // 32 MiB of spaces: about 32 KiB compressed, 500 times the 64 KiB message limit.
    let bomb = compress(&vec![b' '; 32 << 20]);
    assert!(bomb.len() < 64 * 1024);
    bomber.send_frame(0x80 | 0x40 | 1, &bomb).await.unwrap();
    let code = loop {
        match bomber.next(5 * SECOND).await.unwrap() {
            Frame::Close(code) => break code,
            Frame::Msg(_) => continue,
        }
    };
    assert_eq!(code, 1009);
    let msgs = bystander.collect(SECOND).await.unwrap();
    assert!(
        !tick_events(&msgs).is_empty(),
        "the other client still gets ticks"
    );
    m.stop().await;
}
