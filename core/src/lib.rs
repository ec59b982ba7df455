//! TickMesh's shared, I/O-free vocabulary. Every other crate speaks through it.
//!
//! - [`symbol`]: the one place symbols are validated (feed input and client requests).
//! - [`subject`]: `md.<shard>.<symbol>` and the FNV-1a shard function.
//! - [`tick`]: the tick model and its modes (`ltp`, `quote`, `full`).
//! - [`bar`]: OHLCV bars on `bar.<tf>.<shard>.<symbol>` and in `bars` messages.
//! - [`trade`]: prints (time and sales) on `tr.<shard>.<symbol>` and in `trades` messages.
//! - [`codec`]: ticks as MessagePack on NATS, and the per-mode client encodings
//!   that the edge builds once per tick and shares between sessions.
//! - [`protocol`]: client protocol v1 messages, in JSON and MessagePack.
//! - [`nesting`]: the nesting bound of every decoder of untrusted bytes.
//! - [`date`]: calendar dates (`YYYY-MM-DD`) for option expiries.
//! - [`occ`]: OCC option symbols ⇄ (root, expiry, right, strike).
//! - [`refdata`]: the schema of the reference-data bucket `md_ref` (instruments, chains).
//! - [`usage`]: usage records (who saw which feed, real time or delayed) and the monthly report.
//! - [`revocation`]: the schema of the revocation bucket `ctl_revoked` (keys, values).
//! - `dev_pki` (feature `dev-pki`): a CA and a server certificate for the demo and tests.
//!
//! Data flow: ingest builds a [`tick::Tick`], [`codec::encode_wire`] puts it on
//! [`subject::tick_subject`]; the edge runs [`codec::decode_wire`] once and encodes it
//! once per (format, mode) with [`codec::encode_client`].

pub mod account;
pub mod alive;
pub mod bar;
pub mod codec;
pub mod date;
#[cfg(feature = "dev-pki")]
pub mod dev_pki;
pub mod nesting;
pub mod occ;
pub mod protocol;
pub mod refdata;
pub mod revocation;
pub mod subject;
pub mod symbol;
pub mod tick;
pub mod trade;
pub mod usage;

pub use protocol::Format;
pub use symbol::{Symbol, SymbolError};
pub use tick::{Kind, Mode, Tick};
