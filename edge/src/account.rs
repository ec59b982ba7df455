//! Account channels at the edge: what a session's account subscription hands it, and the
//! rule for a slow reader.
//!
//! Each account a session holds has its own follower (see `nats::account`): it reads the
//! account's snapshot (or finds where `from_seq` starts in the stream), the events the
//! stream holds after it, and then every live event as the stream republishes it,
//! checking that each seq is the last one + 1 (and reading the stream when one is not). The session writes what it is handed, in order. Account events
//! are never conflated or dropped: while a follower replays what the stream kept it
//! waits for the session; once it has caught up, an event that finds the session's queue
//! full ([`crate::config::SessionConfig::account_queue`]) cuts the session (4008), and
//! the client resumes with `from_seq`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tickmesh_core::account::{AccountState, Event};
use tickmesh_core::protocol::ErrorCode;
use tokio::sync::mpsc;

/// What an account follower hands its session, in the order it must go out.
#[derive(Debug)]
pub enum AccountItem {
    /// The state the subscription starts from (`account_snapshot`).
    Snapshot(AccountState),
    /// The next event.
    Event(Event),
    /// Something the client must be told (`error`), e.g. a `from_seq` older than what
    /// the stream keeps; a fresh snapshot follows.
    Error {
        account: String,
        code: ErrorCode,
        message: String,
    },
}

/// A follower's way to its session: a bounded queue, and the flag that says the session
/// fell a whole queue behind live events.
#[derive(Debug, Clone)]
pub struct AccountOut {
    tx: mpsc::Sender<AccountItem>,
    overflowed: Arc<AtomicBool>,
}

impl AccountOut {
    /// A queue of `capacity` items and its receiving end.
    pub fn new(capacity: usize) -> (AccountOut, mpsc::Receiver<AccountItem>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let out = AccountOut {
            tx,
            overflowed: Arc::new(AtomicBool::new(false)),
        };
        (out, rx)
    }

    /// Hands `item` over, waiting for room (a replay, a snapshot, an error); false when
    /// the session is gone.
    pub async fn replay(&self, item: AccountItem) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Hands a live event over; false when the session is gone or its queue is full, in
    /// which case it is marked to be cut.
    pub fn live(&self, item: AccountItem) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::AcqRel) {
                    metrics::counter!("tickmesh_edge_slow_consumer_total", "action" => "cut_account")
                        .increment(1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The session fell a whole queue behind live events: it is to be cut (4008).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// The session is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
