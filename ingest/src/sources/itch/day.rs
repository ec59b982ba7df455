//! One day of a feed: frames in, books and counters out. Pure and synchronous, so the
//! reader thread, the tests and the bench drive the same code.

use super::book::{Books, Refused};
use super::frames::{Frame, FrameError};

/// What a day has read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Well-formed messages, by type byte.
    pub by_type: [u64; 128],
    /// Frames refused by the framing, by reason.
    pub truncated: u64,
    pub overrun: u64,
    pub unknown_type: u64,
    pub bad_length: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            by_type: [0; 128],
            truncated: 0,
            overrun: 0,
            unknown_type: 0,
            bad_length: 0,
        }
    }
}

impl Counts {
    /// Well-formed messages.
    pub fn messages(&self) -> u64 {
        self.by_type.iter().sum()
    }

    /// Frames refused by the framing.
    pub fn bad_frames(&self) -> u64 {
        self.truncated + self.overrun + self.unknown_type + self.bad_length
    }

    /// Well-formed messages of type `kind`.
    pub fn of(&self, kind: u8) -> u64 {
        self.by_type.get(usize::from(kind)).copied().unwrap_or(0)
    }
}

/// What went wrong with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Issue {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The books of one day and what was read.
#[derive(Debug, Default)]
pub struct Day {
    pub books: Books,
    pub counts: Counts,
}

impl Day {
    pub fn new() -> Self {
        Day {
            books: Books::new(),
            counts: Counts::default(),
        }
    }

    /// Takes one frame; returns the message's timestamp (ns since midnight).
    #[inline]
    pub fn on_frame(&mut self, frame: Frame<'_>) -> Result<u64, Issue> {
        let m = match frame {
            Ok(m) => m,
            Err(e) => {
                let c = &mut self.counts;
                *match e {
                    FrameError::Truncated => &mut c.truncated,
                    FrameError::Overrun { .. } => &mut c.overrun,
                    FrameError::UnknownType(_) => &mut c.unknown_type,
                    FrameError::BadLength { .. } => &mut c.bad_length,
                } += 1;
                return Err(e.into());
            }
        };
        if let Some(n) = self
            .counts
            .by_type
            .get_mut(usize::from(m.body.kind() & 0x7f))
        {
            *n += 1;
        }
        self.books.apply(&m)?;
        Ok(m.header.ts_ns)
    }

    /// Frames and messages that could not be used.
    pub fn malformed(&self) -> u64 {
        self.counts.bad_frames() + self.books.malformed.total()
    }
}
