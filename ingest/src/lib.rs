//! TickMesh ingest: reads a feed, sequences it (one writer per symbol) and publishes.
//!
//! - [`config`]: figment config, validated before anything connects.
//! - [`sources`]: the market simulator (equities, ETFs, indices, option chains with
//!   greeks), the replay of recorded files, and NASDAQ TotalView-ITCH 5.0 files booked
//!   per stock.
//! - [`tickfile`]: the NDJSON and CSV tick files that `record` writes and replay reads.
//! - [`lease`]: the feed's lease in KV `md_lease`: only its holder publishes.
//! - [`sequencer`]: stamps `epoch`, `seq` and `ts`; chooses epochs; drops stale input.
//! - [`publisher`]: the tick path, and each print on `tr.<shard>.<symbol>`; [`wire`]
//!   the tick encoder.
//! - [`bars`]: bars (1s to 1d) folded from the prints, published on
//!   `bar.<tf>.<shard>.<symbol>`.
//! - [`nats`]: the one module that speaks to NATS: the connection, publishing,
//!   subscribing, and the KV buckets, which the writers use through [`kv`].
//! - [`snapshot`]: the KV writer that keeps `md_last` at most every `kv.interval_ms` per symbol.
//! - [`refdata`]: instruments and chains in KV `md_ref`.
//! - [`feed`]: one ingest node: lease → epoch → source loop, until shutdown.
//! - [`record`]: captures the live stream into a tick file.
//! - [`bench`]: the throughput benchmark.
//! - [`telemetry`]: Prometheus `/metrics`.
//!
//! Flow: source → sequencer → encode once → publish `md.<shard>.<symbol>` → latest bytes
//! handed to the snapshot writer (never awaited on the tick path); reference data goes to
//! `md_ref` through its own writer.

pub mod bars;
pub mod bench;
pub mod config;
pub mod delayed;
pub mod feed;
pub mod kv;
pub mod lease;
pub mod liveness;
pub mod nats;
pub mod publisher;
pub mod record;
pub mod refdata;
pub mod sequencer;
pub mod snapshot;
pub mod sources;
pub mod telemetry;
pub mod tickfile;
pub mod wire;

pub use config::IngestConfig;
pub use feed::{run, run_with_summary};
