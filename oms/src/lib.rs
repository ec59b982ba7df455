//! TickMesh's simulated order system: a handful of demo accounts that trade against the
//! simulated market, and the single writer of their events (orders, fills, positions,
//! balances) to the account stream `acct`, from which the edges serve them.
//!
//! - [`config`]: figment config, validated before anything connects.
//! - [`writer`]: the stream `acct` and the bucket `acct_snap` (created here), each
//!   account's state rebuilt from its snapshot and the events after it, and appends
//!   checked with JetStream's expected-last-subject-sequence. Tests append through it too.
//! - [`market`]: the prints of the traded symbols, on `tr.<shard>.<symbol>`.
//! - [`desk`]: the simulated traders (place, amend, cancel) and the matching of prints
//!   against working orders; synchronous, time and randomness passed in.
//! - [`ledger`]: what a fill does to the order, the position and the cash.
//! - [`node`]: the process: connect, rebuild, trade until shutdown.
//! - [`telemetry`]: Prometheus `/metrics`.
//!
//! Flow: print on `tr.>` → [`desk::match_print`] → `fill` event, then the `order`,
//! `position` and `balance` events it entails ([`ledger::after_fill`]) → each appended
//! by [`writer::AccountLog::append`] (seq + 1, expected-sequence check) → snapshot put to
//! `acct_snap`. The clock → [`desk::Desk::decide`] → an `order` event, appended the same
//! way.

pub mod config;
pub mod desk;
pub mod ledger;
pub mod market;
pub mod node;
pub mod telemetry;
pub mod writer;

pub use config::OmsConfig;
pub use node::run;
