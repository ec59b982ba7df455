//! A session's account subscriptions: a follower per account held, and the one queue
//! they hand the session their snapshots, events and errors through (made with the
//! first). Dropping it stops every follower.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::account::{AccountItem, AccountOut};
use crate::limits::TokenBucket;
use crate::nats::Pump;
use crate::state::Edge;

/// Most account items written in one go.
const MAX_ITEMS_PER_WRITE: usize = 256;

pub(super) struct HeldAccounts {
    edge: Arc<Edge>,
    held: HashMap<String, Pump>,
    out: Option<(AccountOut, mpsc::Receiver<AccountItem>)>,
    /// The session's account subscribes, `session.account_subscribes_per_min`; made with
    /// the first (boxed: most sessions hold no account).
    rate: Option<Box<TokenBucket>>,
}

impl HeldAccounts {
    pub(super) fn new(edge: Arc<Edge>) -> Self {
        HeldAccounts {
            edge,
            held: HashMap::new(),
            out: None,
            rate: None,
        }
    }

    /// Takes one account subscribe of the session's rate: bursts of twice
    /// `max_accounts`, then `account_subscribes_per_min`. Over it, how long until the
    /// next is allowed, ms.
    pub(super) fn admit(&mut self, now: std::time::Instant) -> Result<(), u64> {
        let config = &self.edge.config.session;
        let rate = self.rate.get_or_insert_with(|| {
            let burst = u32::try_from(config.max_accounts.saturating_mul(2)).unwrap_or(u32::MAX);
            Box::new(TokenBucket::per_minute(
                config.account_subscribes_per_min,
                burst,
                now,
            ))
        });
        match rate.take(now) {
            true => Ok(()),
            false => Err(rate.wait_ms(1).max(1)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn holds(&self, account: &str) -> bool {
        self.held.contains_key(account)
    }

    /// The accounts held, by name.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.held.keys().cloned().collect();
        names.sort();
        names
    }

    /// Follows `account` from its snapshot, or from `from_seq`; an account held already
    /// starts over from there.
    pub(super) fn subscribe(&mut self, account: &str, from_seq: Option<u64>) {
        let capacity = self.edge.config.session.account_queue;
        let (out, _) = self.out.get_or_insert_with(|| AccountOut::new(capacity));
        let pump = self
            .edge
            .nats
            .follow_account(account.to_string(), from_seq, out.clone());
        // A subscribe to an account already held replaces its follower (dropping the old
        // one stops it): still one subscription.
        if self.held.insert(account.to_string(), pump).is_none() {
            metrics::gauge!("tickmesh_edge_account_subscriptions").increment(1.0);
        }
    }

    /// Stops following `account`; whether it was held.
    pub(super) fn unsubscribe(&mut self, account: &str) -> bool {
        let held = self.held.remove(account).is_some();
        if held {
            metrics::gauge!("tickmesh_edge_account_subscriptions").decrement(1.0);
        }
        held
    }

    /// The session fell a whole queue behind an account's live events.
    pub(super) fn overflowed(&self) -> bool {
        self.out.as_ref().is_some_and(|(out, _)| out.overflowed())
    }

    /// The next items to write, at most [`MAX_ITEMS_PER_WRITE`], waiting for the first;
    /// pending for ever while the session holds no account.
    pub(super) async fn next(&mut self, items: &mut Vec<AccountItem>) {
        let Some((_, rx)) = &mut self.out else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Some(first) => items.push(first),
            // Never: the queue holds a sender.
            None => return std::future::pending().await,
        }
        while items.len() < MAX_ITEMS_PER_WRITE {
            match rx.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
    }
}

impl Drop for HeldAccounts {
    fn drop(&mut self) {
        let n = self.held.len();
        if n > 0 {
            metrics::gauge!("tickmesh_edge_account_subscriptions").decrement(n as f64);
        }
    }
}
