//! permessage-deflate (RFC 7692) with no compression state per connection.
//!
//! tungstenite 0.29 has no extension support (it fails any frame with RSV1 set), so the
//! extension's three parts sit around it:
//! - [`negotiate`]: the upgrade's `Sec-WebSocket-Extensions` offer. Accepted only with
//!   [`RESPONSE`]: `server_no_context_takeover` and `client_no_context_takeover`, so that
//!   every message is compressed, and inflated, alone.
//! - [`Compressing`]: the session's WebSocket transport with its data messages compressed
//!   ([`message`]): once for every session sending the same bytes (a small per-thread
//!   cache of recent messages, by identity and by content), written through tungstenite as
//!   a raw frame with RSV1 set.
//! - [`stream::Inflating`]: the socket as tungstenite reads it, with each inbound
//!   compressed message inflated (to at most the session's message limit) into a plain
//!   frame before tungstenite sees it.
//!
//! The compressor and the decompressor belong to the thread (tokio's workers), reset for
//! each message: an idle connection holds neither.

pub mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tickmesh_core::Format;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::session::Transport;
use crate::session::transport::Gone;

/// The extension parameters the edge answers an accepted offer with.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Messages shorter than this go out uncompressed (RSV1 clear, which RFC 7692 §6 allows
/// per message): below it deflate's block overhead eats most of the saving, and `hb` and
/// short replies are not worth a cache lookup.
pub const MIN_COMPRESSED: usize = 64;

/// zlib level 6 (the default): small JSON and MessagePack frames compress about as well
/// as at 9 and each distinct frame is compressed once, not once per session.
const LEVEL: u32 = 6;

/// What a sync flush ends with; RFC 7692 §7.2.1 drops it from the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Recent compressed messages kept per thread, at most: entries, and bytes (originals
/// and compressed). Past either the cache starts over. Sessions on the same flush clock
/// send the same frames within moments of each other, so a short memory is enough.
const RECENT_ENTRIES: usize = 2048;
const RECENT_BYTES: usize = 2 << 20;

/// Whether any offer in the `Sec-WebSocket-Extensions` header values is one the edge
/// accepts; if so, the upgrade answers with [`RESPONSE`].
///
/// An offer is declined (and the next one tried) when it has a parameter RFC 7692 does not
/// define, a parameter twice, a value out of range, or `server_max_window_bits` below 15:
/// the shared compressed frames are made with the full 32 KiB window. Any
/// `client_max_window_bits` is fine: inflating with the full window reads every smaller one.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(acceptable)
}

fn acceptable(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (param, None),
        };
        let (i, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, value.and_then(window_bits) == Some(15)),
            "client_max_window_bits" => (3, value.is_none_or(|v| window_bits(v).is_some())),
            _ => return false,
        };
        if !ok || seen[i] {
            return false;
        }
        seen[i] = true;
    }
    true
}

/// A quoted-string value without its quotes (RFC 7692 §7.1: either form is allowed).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// A window-bits value: 8..=15, digits only, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A session's WebSocket on which permessage-deflate was negotiated: its data messages go
/// out compressed ([`message`]); control frames, reads and closes are the WebSocket's own.
pub struct Compressing<S>(pub WebSocketStream<S>);

impl<S> Transport for Compressing<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn write_all(&mut self, msgs: Vec<Message>) -> Result<(), Gone> {
        self.0
            .write_all(msgs.into_iter().map(compressed).collect())
            .await
    }

    async fn read(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        self.0.read().await
    }

    async fn answer_close(&mut self) {
        self.0.answer_close().await;
    }

    async fn close_with(
        &mut self,
        code: u16,
        reason: &'static str,
        last: Vec<Message>,
        wait: Duration,
    ) {
        let last = last.into_iter().map(compressed).collect();
        self.0.close_with(code, reason, last, wait).await;
    }

    fn answers_pings(&self) -> bool {
        self.0.answers_pings()
    }
}

/// `msg` as it goes out with permessage-deflate: a data message compressed (see
/// [`message`]), anything else as it is.
fn compressed(msg: Message) -> Message {
    match msg {
        Message::Text(text) => message(Format::Json, text.into()),
        Message::Binary(bytes) => message(Format::MsgPack, bytes),
        other => other,
    }
}

thread_local! {
    static DEFLATER: RefCell<Compress> =
        RefCell::new(Compress::new(Compression::new(LEVEL), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// The frame of a message of `format` holding `bytes`, compressed (RSV1) unless it is
/// shorter than [`MIN_COMPRESSED`].
pub fn message(format: Format, bytes: Bytes) -> Message {
    if bytes.len() < MIN_COMPRESSED {
        return plain(format, bytes);
    }
    let header = FrameHeader {
        rsv1: true,
        opcode: opcode(format),
        ..FrameHeader::default()
    };
    Message::Frame(Frame::from_payload(header, shared(&bytes)))
}

fn plain(format: Format, bytes: Bytes) -> Message {
    Message::Frame(Frame::message(bytes, opcode(format), true))
}

fn opcode(format: Format) -> OpCode {
    match format {
        Format::Json => OpCode::Data(Data::Text),
        Format::MsgPack => OpCode::Data(Data::Binary),
    }
}

/// `bytes` compressed: from this thread's recent messages when one was the same bytes.
fn shared(bytes: &Bytes) -> Bytes {
    RECENT.with_borrow_mut(|recent| {
        if let Some(z) = recent.get(bytes) {
            return z;
        }
        let z = Bytes::from(compress(bytes));
        recent.put(bytes, z.clone());
        z
    })
}

/// Recent messages and their compressed payloads. The originals are held, so an address
/// in `by_address` cannot be freed and reused for other bytes while its entry lives.
#[derive(Default)]
struct Recent {
    by_address: HashMap<(usize, usize), Bytes>,
    by_content: HashMap<u64, (Bytes, Bytes)>,
    held: usize,
}

impl Recent {
    fn get(&mut self, bytes: &Bytes) -> Option<Bytes> {
        if let Some(z) = self.by_address.get(&address(bytes)) {
            return Some(z.clone());
        }
        let (original, z) = self.by_content.get(&content(bytes))?;
        (original == bytes).then(|| z.clone())
    }

    fn put(&mut self, bytes: &Bytes, z: Bytes) {
        let cost = bytes.len() + z.len();
        if self.by_content.len() >= RECENT_ENTRIES || self.held + cost > RECENT_BYTES {
            self.by_address.clear();
            self.by_content.clear();
            self.held = 0;
        }
        self.held += cost;
        self.by_address.insert(address(bytes), z.clone());
        if let Some((old, _)) = self.by_content.insert(content(bytes), (bytes.clone(), z)) {
            // A hash collision: the older entry's address must go with its original.
            self.by_address.remove(&address(&old));
        }
    }
}

fn address(bytes: &Bytes) -> (usize, usize) {
    (bytes.as_ptr() as usize, bytes.len())
}

fn content(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `data` as one raw-deflate message without context: a sync flush, its empty-block tail
/// dropped (RFC 7692 §7.2.1).
pub fn compress(data: &[u8]) -> Vec<u8> {
    DEFLATER.with_borrow_mut(|c| {
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut taken = 0;
        loop {
            let before = c.total_in();
            c.compress_vec(&data[taken..], &mut out, FlushCompress::Sync)
                .expect("deflating bytes in memory cannot fail");
            taken += usize::try_from(c.total_in() - before).expect("taken from a slice");
            if taken == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

/// Why an inbound compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// Inflated (or compressed) past the message limit: closed with 1009.
    #[error("compressed message inflates past the message limit")]
    TooLarge,
    /// Not a deflate stream: closed with 1002.
    #[error("compressed message is not valid deflate data")]
    Corrupt,
}

/// One compressed message (its payload as sent, without the tail) inflated, to at most
/// `limit` bytes: a message that would inflate past it is refused having cost at most
/// `limit + 1` bytes of output.
pub fn inflate(mut compressed: Vec<u8>, limit: usize) -> Result<Vec<u8>, InflateError> {
    compressed.extend_from_slice(&TAIL);
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        let first = compressed.len().saturating_mul(4).max(64).min(limit + 1);
        let mut out = Vec::with_capacity(first);
        let mut taken = 0;
        loop {
            if out.len() == out.capacity() {
                let room = (out.capacity()).min(limit + 1 - out.len()).max(1);
                out.reserve_exact(room);
            }
            let (was_in, was_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&compressed[taken..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            taken += usize::try_from(d.total_in() - was_in).expect("taken from a slice");
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            let moved = d.total_in() != was_in || d.total_out() != was_out;
            if status == Status::StreamEnd
                || (taken == compressed.len() && out.len() < out.capacity())
            {
                return Ok(out);
            }
            if !moved && out.len() < out.capacity() {
                // Input left that yields nothing: a truncated or broken stream.
                return Err(InflateError::Corrupt);
            }
        }
    })
}

#[cfg(test)]
mod tests;
