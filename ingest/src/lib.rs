//! TickMesh ingest: reads a feed, sequences it (one writer per symbol) and publishes.
//!
//! - [`config`]: figment config, validated before anything connects.
//! - [`sources::sim`]: the market simulator (a random walk over a configurable universe).
//! - [`sequencer`]: stamps `epoch`, `seq` and `ts`; drops stale input.
//! - [`snapshot`]: the KV writer that keeps `md_last` at most every `kv.interval_ms` per symbol.
//! - [`publisher`]: the only module that talks to NATS.
//!
//! Flow: source → sequencer → encode once → publish `md.<shard>.<symbol>` → latest bytes
//! handed to the snapshot writer (never awaited on the tick path).

pub mod config;
pub mod publisher;
pub mod sequencer;
pub mod snapshot;
pub mod sources;

pub use config::IngestConfig;
pub use publisher::run;
