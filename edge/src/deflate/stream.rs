//! [`Inflating`]: a client socket as tungstenite reads it, with compressed messages
//! (RSV1 on their first frame) inflated into one plain frame each.
//!
//! Frames are parsed as they arrive. Plain frames (control frames, uncompressed messages)
//! pass through as they came, so tungstenite still judges them; a compressed message's
//! frames are collected (at most the message limit), unmasked and inflated alone (the
//! client was told `client_no_context_takeover`), then handed on as one final frame of
//! the same opcode. Between messages the adapter holds no buffer: an idle connection costs
//! only this struct. Writes pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{InflateError, inflate};

/// Bytes read from the socket at a time while collecting or skipping a payload.
const CHUNK: usize = 1024;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header (`have` bytes of it so far).
    Header,
    /// Handing on the header of a plain frame, then its payload.
    SendHeader { payload: u64 },
    /// Handing on this many payload bytes of a plain frame.
    Payload(u64),
    /// Collecting a compressed message's frame payload.
    Take {
        len: u64,
        left: u64,
        mask: [u8; 4],
        fin: bool,
    },
    /// Handing on an inflated message (`out`).
    Emit,
    /// Dropping the rest of a refused message's frame.
    Skip(u64),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Inflating<S> {
    inner: S,
    /// Largest message, compressed or inflated.
    limit: usize,
    state: State,
    header: [u8; 14],
    have: usize,
    sent: usize,
    /// A compressed message is being collected (its first frame has come, not its last).
    in_message: bool,
    /// Its opcode and payload so far, unmasked.
    opcode: u8,
    message: Vec<u8>,
    /// A plain fragmented message is being passed through.
    passing_fragments: bool,
    /// An inflated message as a frame, and how much of it was handed on.
    out: Vec<u8>,
    out_pos: usize,
    /// A message was refused: the session is closing, and compressed messages are dropped.
    failed: bool,
}

impl<S> Inflating<S> {
    pub fn new(inner: S, limit: usize) -> Self {
        Inflating {
            inner,
            limit,
            state: State::Header,
            header: [0; 14],
            have: 0,
            sent: 0,
            in_message: false,
            opcode: 0,
            message: Vec::new(),
            passing_fragments: false,
            out: Vec::new(),
            out_pos: 0,
            failed: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How long the header being read is, as far as its first bytes tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let b1 = self.header[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    /// Decides what the frame whose header was read becomes.
    fn on_header(&mut self) -> Result<(), InflateError> {
        let h = &self.header[..self.have];
        let (b0, b1) = (h[0], h[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let other_rsv = b0 & 0x30 != 0;
        let opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        let (len, at) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        let mut mask = [0u8; 4];
        if masked {
            mask.copy_from_slice(&h[at..at + 4]);
        }
        let data = opcode == 1 || opcode == 2;
        let starts = rsv1 && !other_rsv && data && masked && !self.passing_fragments;
        let continues = !rsv1 && !other_rsv && opcode == 0 && masked && self.in_message;
        if self.in_message && data {
            // A new message before the compressed one's last frame.
            self.state = State::Skip(len);
            return Err(InflateError::Corrupt);
        }
        if starts && !self.in_message || continues {
            if starts {
                self.in_message = true;
                self.opcode = opcode;
            }
            if self.failed {
                self.in_message = !fin;
                self.state = State::Skip(len);
                return Ok(());
            }
            let total = (self.message.len() as u64).saturating_add(len);
            if total > self.limit as u64 {
                self.message = Vec::new();
                self.in_message = !fin;
                self.state = State::Skip(len);
                return Err(InflateError::TooLarge);
            }
            self.state = State::Take {
                len,
                left: len,
                mask,
                fin,
            };
            return Ok(());
        }
        if data {
            self.passing_fragments = !fin;
        } else if opcode == 0 && fin {
            self.passing_fragments = false;
        }
        self.sent = 0;
        self.state = State::SendHeader { payload: len };
        Ok(())
    }

    /// The collected message, inflated and framed as a client would have sent it plain
    /// (masked, with a zero key).
    fn finish_message(&mut self) -> Result<(), InflateError> {
        self.in_message = false;
        let inflated = inflate(std::mem::take(&mut self.message), self.limit)?;
        metrics::counter!("tickmesh_edge_deflate_inflated_total").increment(1);
        let n = inflated.len();
        let mut out = Vec::with_capacity(n + 14);
        out.push(0x80 | self.opcode);
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            out.push(0x80 | 126);
            out.extend_from_slice(&n.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&inflated);
        self.out = out;
        self.out_pos = 0;
        self.state = State::Emit;
        Ok(())
    }

    fn fail(&mut self, e: InflateError) -> io::Error {
        self.failed = true;
        self.message = Vec::new();
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The refusal an I/O error from [`Inflating`] carries, if it is one.
pub fn refusal(e: &io::Error) -> Option<InflateError> {
    e.get_ref()?.downcast_ref::<InflateError>().copied()
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.state {
                State::Header => {
                    let need = this.header_len();
                    if this.have < need {
                        let mut rb = ReadBuf::new(&mut this.header[this.have..need]);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                        let n = rb.filled().len();
                        if n == 0 {
                            // The end of the stream: tungstenite tells a reset from a close.
                            return Poll::Ready(Ok(()));
                        }
                        this.have += n;
                        continue;
                    }
                    if let Err(e) = this.on_header() {
                        this.have = 0;
                        return Poll::Ready(Err(this.fail(e)));
                    }
                    if !matches!(this.state, State::SendHeader { .. }) {
                        this.have = 0;
                    }
                }
                State::SendHeader { payload } => {
                    let n = buf.remaining().min(this.have - this.sent);
                    buf.put_slice(&this.header[this.sent..this.sent + n]);
                    this.sent += n;
                    if this.sent == this.have {
                        this.have = 0;
                        this.state = if payload > 0 {
                            State::Payload(payload)
                        } else {
                            State::Header
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Payload(left) => {
                    let max = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    let dst = buf.initialize_unfilled_to(max);
                    let mut rb = ReadBuf::new(dst);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    buf.advance(n);
                    if n > 0 {
                        let left = left - n as u64;
                        this.state = if left == 0 {
                            State::Header
                        } else {
                            State::Payload(left)
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Take {
                    len,
                    left,
                    mask,
                    fin,
                } => {
                    if left == 0 {
                        if !fin {
                            this.state = State::Header;
                            continue;
                        }
                        if let Err(e) = this.finish_message() {
                            this.state = State::Header;
                            return Poll::Ready(Err(this.fail(e)));
                        }
                        continue;
                    }
                    let mut chunk = [0u8; CHUNK];
                    let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                    let mut rb = ReadBuf::new(&mut chunk[..want]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let got = rb.filled();
                    if got.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    let offset = (len - left) as usize;
                    this.message.extend(
                        got.iter()
                            .enumerate()
                            .map(|(i, b)| b ^ mask[(offset + i) & 3]),
                    );
                    this.state = State::Take {
                        len,
                        left: left - got.len() as u64,
                        mask,
                        fin,
                    };
                }
                State::Emit => {
                    let n = buf.remaining().min(this.out.len() - this.out_pos);
                    buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                    this.out_pos += n;
                    if this.out_pos == this.out.len() {
                        this.out = Vec::new();
                        this.state = State::Header;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Skip(left) => {
                    if left == 0 {
                        this.state = State::Header;
                        continue;
                    }
                    let mut chunk = [0u8; CHUNK];
                    let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                    let mut rb = ReadBuf::new(&mut chunk[..want]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    this.state = State::Skip(left - n as u64);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
