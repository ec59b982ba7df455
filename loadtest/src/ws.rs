//! A minimal WebSocket client (RFC 6455), just what the load generator needs: the
//! upgrade, unmasked server frames read in place from one growable buffer, masked client
//! frames, pings answered, close codes reported. No per-message allocation on the read
//! path, so that thousands of connections cost little CPU and memory on the box they
//! measure. With `Dial::deflate` it offers permessage-deflate (RFC 7692) as a browser
//! does and inflates compressed messages (each alone: the server never takes its context
//! over), with one decompressor per thread; it counts the bytes it reads off the socket.

use std::cell::RefCell;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest message accepted from a server; larger is a protocol error.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Initial read buffer: enough for an upgrade response and a few frames, small enough for
/// tens of thousands of idle connections.
const INITIAL_BUFFER: usize = 4 * 1024;

/// How to open one connection.
#[derive(Debug, Clone)]
pub struct Dial {
    pub server: SocketAddr,
    /// Local address to bind before connecting (spreads source ports over addresses).
    pub source: Option<std::net::IpAddr>,
    /// `Host` and path of the upgrade request.
    pub path: String,
    /// `Sec-WebSocket-Protocol` to offer, if any.
    pub subprotocol: Option<&'static str>,
    /// SO_RCVBUF, for clients that are meant to fall behind.
    pub rcvbuf: Option<u32>,
    /// A token for `Authorization: Bearer`, if any.
    pub token: Option<String>,
    /// Offer permessage-deflate (`client_max_window_bits`, as Chrome does).
    pub deflate: bool,
}

/// What a read produced.
#[derive(Debug)]
pub enum Event<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// The server closed; its code, if it sent one.
    Closed(Option<u16>),
}

#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Reassembly of a fragmented message (rare: neither server fragments).
    frag: Vec<u8>,
    frag_binary: bool,
    /// Bytes of the message handed out by the last `next`, to skip on the next call.
    consumed: usize,
    mask_state: u32,
    /// permessage-deflate was negotiated.
    deflate: bool,
    frag_compressed: bool,
    /// The last compressed message, inflated.
    inflated: Vec<u8>,
    /// Bytes read off the socket since the last `take_wire_bytes`.
    wire_bytes: u64,
}

/// What a sync flush ends with, which RFC 7692 drops from the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    static INFLATER: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(false));
}

/// One compressed message, inflated into `out` (at most `MAX_MESSAGE` bytes).
fn inflate(compressed: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    use flate2::{FlushDecompress, Status};
    out.clear();
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        for input in [compressed, &TAIL[..]] {
            let mut taken = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > MAX_MESSAGE {
                        bail!("inflated message over {MAX_MESSAGE} bytes");
                    }
                    out.reserve(out.capacity().max(256));
                }
                let (was_in, was_out) = (d.total_in(), d.total_out());
                let status = d.decompress_vec(&input[taken..], out, FlushDecompress::Sync)?;
                taken += (d.total_in() - was_in) as usize;
                if status == Status::StreamEnd {
                    return Ok(());
                }
                if taken == input.len() && out.len() < out.capacity() {
                    break;
                }
                if d.total_in() == was_in && d.total_out() == was_out && out.len() < out.capacity()
                {
                    bail!("broken deflate stream");
                }
            }
        }
        Ok(())
    })
}

impl WsClient {
    /// Connects and completes the upgrade.
    pub async fn connect(dial: &Dial, seed: u32) -> anyhow::Result<Self> {
        let socket = match dial.server {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = dial.source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding source address {ip}"))?;
        }
        if let Some(size) = dial.rcvbuf {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket
            .connect(dial.server)
            .await
            .with_context(|| format!("connecting to {}", dial.server))?;
        stream.set_nodelay(true)?;
        let mut ws = WsClient {
            stream,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            frag: Vec::new(),
            frag_binary: false,
            consumed: 0,
            mask_state: seed | 1,
            deflate: false,
            frag_compressed: false,
            inflated: Vec::new(),
            wire_bytes: 0,
        };
        ws.handshake(dial).await?;
        Ok(ws)
    }

    async fn handshake(&mut self, dial: &Dial) -> anyhow::Result<()> {
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            dial.path, dial.server
        );
        if let Some(p) = dial.subprotocol {
            req.push_str("Sec-WebSocket-Protocol: ");
            req.push_str(p);
            req.push_str("\r\n");
        }
        if let Some(t) = &dial.token {
            req.push_str("Authorization: Bearer ");
            req.push_str(t);
            req.push_str("\r\n");
        }
        if dial.deflate {
            req.push_str(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            );
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        loop {
            if let Some(pos) = find(&self.buf[..self.end], b"\r\n\r\n") {
                let head = &self.buf[..pos];
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                    bail!("upgrade refused: {}", String::from_utf8_lossy(line));
                }
                self.deflate = dial.deflate
                    && String::from_utf8_lossy(head).lines().any(|l| {
                        let l = l.to_ascii_lowercase();
                        l.starts_with("sec-websocket-extensions:")
                            && l.contains("permessage-deflate")
                    });
                self.wire_bytes += (self.end - pos - 4) as u64;
                self.start = pos + 4;
                return Ok(());
            }
            if self.end == self.buf.len() {
                bail!("upgrade response too large");
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            self.end += n;
        }
    }

    /// Sends one masked frame (opcode 1 = text, 2 = binary, 9/10 = ping/pong, 8 = close).
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let n = payload.len();
        if n < 126 {
            frame.push(0x80 | n as u8);
        } else if n <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
        // xorshift: masks need not be secret here, only present.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        let mask = x.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// Bytes read off the socket (after the upgrade response) since the last call.
    pub fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_bytes)
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(1, text.as_bytes()).await
    }

    /// The next data message or close. Pings are answered on the way.
    pub async fn next(&mut self) -> anyhow::Result<Event<'_>> {
        self.start += std::mem::take(&mut self.consumed);
        loop {
            match self.parse_frame()? {
                Some(Frame::Data {
                    fin,
                    binary,
                    continuation,
                    compressed,
                    range,
                }) => {
                    if compressed && (!self.deflate || continuation) {
                        bail!("RSV1 set on a frame without a compressed message");
                    }
                    if fin && !continuation && self.frag.is_empty() && compressed {
                        self.consumed = range.end - self.start;
                        inflate(&self.buf[range], &mut self.inflated)?;
                        return Ok(if binary {
                            Event::Binary(&self.inflated)
                        } else {
                            Event::Text(&self.inflated)
                        });
                    }
                    if fin && !continuation && self.frag.is_empty() {
                        self.consumed = range.end - self.start;
                        let payload = &self.buf[range];
                        return Ok(if binary {
                            Event::Binary(payload)
                        } else {
                            Event::Text(payload)
                        });
                    }
                    if !continuation {
                        self.frag_binary = binary;
                        self.frag_compressed = compressed;
                    }
                    self.frag.extend_from_slice(&self.buf[range.clone()]);
                    self.start = range.end;
                    if self.frag.len() > MAX_MESSAGE {
                        bail!("message over {MAX_MESSAGE} bytes");
                    }
                    if fin && self.frag_compressed {
                        let msg = std::mem::take(&mut self.frag);
                        inflate(&msg, &mut self.inflated)?;
                        return Ok(if self.frag_binary {
                            Event::Binary(&self.inflated)
                        } else {
                            Event::Text(&self.inflated)
                        });
                    }
                    if fin {
                        // Hand out the reassembled message from the front of the buffer.
                        let msg = std::mem::take(&mut self.frag);
                        self.compact();
                        let tail = self.end - self.start;
                        let need = msg.len() + tail;
                        if self.buf.len() < need {
                            self.buf.resize(need, 0);
                        }
                        self.buf.copy_within(self.start..self.end, msg.len());
                        self.buf[..msg.len()].copy_from_slice(&msg);
                        self.start = 0;
                        self.end = need;
                        self.consumed = msg.len();
                        let payload = &self.buf[..msg.len()];
                        return Ok(if self.frag_binary {
                            Event::Binary(payload)
                        } else {
                            Event::Text(payload)
                        });
                    }
                }
                Some(Frame::Ping(range)) => {
                    let payload = self.buf[range.clone()].to_vec();
                    self.start = range.end;
                    self.send(10, &payload).await?;
                }
                Some(Frame::Pong(range)) => self.start = range.end,
                Some(Frame::Close(range)) => {
                    let p = &self.buf[range];
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    let echo = code.map(u16::to_be_bytes).unwrap_or_default();
                    let _ = self
                        .send(8, &echo[..if code.is_some() { 2 } else { 0 }])
                        .await;
                    return Ok(Event::Closed(code));
                }
                None => {
                    if !self.fill().await? {
                        return Ok(Event::Closed(None));
                    }
                }
            }
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.compact();
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_MESSAGE + 16);
            if grown == self.buf.len() {
                bail!("frame over {MAX_MESSAGE} bytes");
            }
            self.buf.resize(grown, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.wire_bytes += n as u64;
        Ok(n > 0)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Parses one complete frame at `start`, if the buffer holds one.
    fn parse_frame(&self) -> anyhow::Result<Option<Frame>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let compressed = b[0] & 0x40 != 0;
        let opcode = b[0] & 0x0f;
        if b[1] & 0x80 != 0 {
            bail!("server frame is masked");
        }
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (usize::try_from(u64::from_be_bytes(n))?, 10)
            }
            126 | 127 => return Ok(None),
            n => (usize::from(n), 2),
        };
        if len > MAX_MESSAGE {
            bail!("frame of {len} bytes");
        }
        if b.len() < header + len {
            return Ok(None);
        }
        let range = self.start + header..self.start + header + len;
        Ok(Some(match opcode {
            0..=2 => Frame::Data {
                fin,
                binary: opcode == 2,
                continuation: opcode == 0,
                compressed,
                range,
            },
            8 => Frame::Close(range),
            9 => Frame::Ping(range),
            10 => Frame::Pong(range),
            other => bail!("unknown opcode {other}"),
        }))
    }
}

enum Frame {
    Data {
        fin: bool,
        binary: bool,
        continuation: bool,
        /// RSV1: the first frame of a compressed message.
        compressed: bool,
        range: std::ops::Range<usize>,
    },
    Ping(std::ops::Range<usize>),
    Pong(std::ops::Range<usize>),
    Close(std::ops::Range<usize>),
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_messages_as_rfc_7692_writes_them() {
        let mut out = Vec::new();
        // "Hello", compressed, its tail dropped (RFC 7692 §7.2.3.1), twice: the
        // decompressor starts afresh for each message.
        for _ in 0..2 {
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out).unwrap();
            assert_eq!(out, b"Hello");
        }
        assert!(inflate(&[0xff; 8], &mut out).is_err());
    }
}
