//! Framing: the 2-byte big-endian length before each message, over a file (plain or
//! gzip, told apart by the gzip magic bytes) or a slice, with recovery from bad frames.
//!
//! A frame is checked against its type's fixed length before it is decoded. When the two
//! disagree, one of them is wrong: the frame is counted, and reading goes on after the
//! type's length if a well-formed frame starts there, else after the declared length.
//! So a corrupt length byte and a corrupt type byte each cost one message, not the rest
//! of the file. Offsets are byte offsets of the length prefix in the uncompressed stream.

use std::io::Read;
use std::ops::ControlFlow;

use super::msg::{Message, decode, length_of};

/// Bytes read from a file at a time; above the longest frame (2 + 65,535) so that any
/// frame fits in the buffer.
const CHUNK: usize = 1 << 20;

/// What is wrong with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The input ends inside a message whose length agrees with its type (a cut file).
    #[error("input ends inside a message")]
    Truncated,
    /// The declared length runs past the end of the input and disagrees with the type.
    #[error("length {declared} runs past the end of the input")]
    Overrun { declared: usize },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A length that disagrees with the message type (0 included).
    #[error("message type {kind:?} is {expected} bytes long; its length says {declared}")]
    BadLength {
        kind: char,
        expected: usize,
        declared: usize,
    },
}

/// One frame: a decoded message, or what was wrong with it.
pub type Frame<'a> = Result<Message<'a>, FrameError>;

/// Where to go after the frame at the start of `buf`.
enum Step {
    /// Skip this many bytes, after handing over one frame or error.
    Next(usize, Option<FrameError>),
    /// Not enough bytes yet to decide.
    More,
    /// Nothing more can be read from this input.
    Stop(Option<FrameError>),
}

/// Whether a well-formed frame starts at `q`; `None`: not enough bytes to tell.
fn plausible(buf: &[u8], q: usize, eof: bool) -> Option<bool> {
    if q == buf.len() && eof {
        return Some(true);
    }
    let head = buf.get(q..q + 3)?;
    let declared = usize::from(u16::from_be_bytes([head[0], head[1]]));
    Some(length_of(head[2]) == Some(declared))
}

/// Decides the frame at the start of `buf`.
fn step(buf: &[u8], eof: bool) -> Step {
    let Some(&[hi, lo]) = buf.first_chunk::<2>() else {
        return match (buf.is_empty(), eof) {
            (true, true) => Step::Stop(None),
            (false, true) => Step::Stop(Some(FrameError::Truncated)),
            (_, false) => Step::More,
        };
    };
    let declared = usize::from(u16::from_be_bytes([hi, lo]));
    let Some(&kind) = buf.get(2) else {
        return match eof {
            true if declared == 0 => Step::Next(2, Some(bad_length(0, 0))),
            true => Step::Stop(Some(FrameError::Truncated)),
            false => Step::More,
        };
    };
    let expected = length_of(kind);
    if declared == 0 {
        return Step::Next(2, Some(bad_length(kind, 0)));
    }
    let fits = buf.len() >= 2 + declared;
    if !fits && !eof {
        return Step::More;
    }
    let Some(expected) = expected else {
        return match fits {
            true => Step::Next(2 + declared, Some(FrameError::UnknownType(kind))),
            false => Step::Stop(Some(FrameError::Overrun { declared })),
        };
    };
    if declared == expected {
        return match fits {
            true => Step::Next(2 + declared, None),
            false => Step::Stop(Some(FrameError::Truncated)),
        };
    }
    let error = match fits {
        true => bad_length(kind, declared),
        false => FrameError::Overrun { declared },
    };
    match plausible(buf, 2 + expected, eof) {
        None if !eof => Step::More,
        Some(true) => Step::Next(2 + expected, Some(error)),
        _ if fits => Step::Next(2 + declared, Some(error)),
        _ => Step::Stop(Some(error)),
    }
}

fn bad_length(kind: u8, declared: usize) -> FrameError {
    FrameError::BadLength {
        kind: char::from(kind),
        expected: length_of(kind).unwrap_or(0),
        declared,
    }
}

/// Hands each frame of `buf` (and its offset, `base` + its position) to `on`. Returns how
/// many bytes were used: all of them when `eof`, else up to the first incomplete frame.
pub fn scan(
    buf: &[u8],
    base: u64,
    eof: bool,
    on: &mut impl FnMut(u64, Frame<'_>) -> ControlFlow<()>,
) -> ControlFlow<(), usize> {
    let mut pos = 0;
    // Each step moves `pos` forward by at least 2 or ends the loop.
    while pos < buf.len() || eof {
        let rest = buf.get(pos..).unwrap_or_default();
        let offset = base + pos as u64;
        match step(rest, eof) {
            Step::Next(n, None) => {
                let m = decode(rest.get(2..n).unwrap_or_default()).map_err(|_| bad_length(0, n));
                on(offset, m)?;
                pos += n;
            }
            Step::Next(n, Some(e)) => {
                on(offset, Err(e))?;
                pos += n;
            }
            Step::More => break,
            Step::Stop(e) => {
                if let Some(e) = e {
                    on(offset, Err(e))?;
                }
                return ControlFlow::Continue(buf.len());
            }
        }
    }
    ControlFlow::Continue(pos)
}

/// Reads all frames of `input` (gzip or plain) and hands each to `on`, until the end of
/// the input or `on` breaks. Returns the bytes read (uncompressed).
pub fn read(
    input: impl Read,
    on: &mut impl FnMut(u64, Frame<'_>) -> ControlFlow<()>,
) -> std::io::Result<u64> {
    let mut input = std::io::BufReader::new(input);
    let head = std::io::BufRead::fill_buf(&mut input)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        read_plain(flate2::bufread::MultiGzDecoder::new(input), on)
    } else {
        read_plain(input, on)
    }
}

fn read_plain(
    mut input: impl Read,
    on: &mut impl FnMut(u64, Frame<'_>) -> ControlFlow<()>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let (mut filled, mut base) = (0usize, 0u64);
    loop {
        // Fill the buffer, or reach the end of the input.
        let mut eof = false;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let used = match scan(&buf[..filled], base, eof, on) {
            ControlFlow::Continue(used) => used,
            ControlFlow::Break(()) => return Ok(base + filled as u64),
        };
        if eof {
            return Ok(base + filled as u64);
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        base += used as u64;
    }
}
