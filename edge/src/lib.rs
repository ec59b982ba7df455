//! TickMesh edge gateway.
//!
//! - [`config`]: figment config, validated before anything is bound.
//! - [`fanout`]: the I/O-free core: latest values, conflation per session, encode once.
//! - [`runtime`]: the core split into shards, each behind its own lock, with one pump
//!   per carried symbol.
//! - [`nats`]: the only NATS code: the connection, the pumps and KV reads.
//! - [`snapshot`]: snapshots on subscribe through a moka cache over KV.
//! - [`refdata`]: instruments and option chains from KV `md_ref`, cached and watched.
//! - [`revocations`]: revoked users and tokens from KV `ctl_revoked`, replayed and watched
//!   ([`control`] also takes them from NATS `ctl.revoke`, and reloads key files).
//! - [`upstream`]: whether sessions' data is fresh, stale, or lost (move elsewhere).
//! - [`liveness`]: which shards' owner (the ingest holding the feed) went quiet.
//! - [`tape`]: time and sales: the prints of followed symbols, never conflated.
//! - [`bars`]: live bars of followed (symbol, timeframe) pairs.
//! - [`clock`]: one timer for the whole edge that wakes sessions whose flush is due.
//! - [`checks`]: the checks of a request's symbols, shared by sessions and REST.
//! - [`gate`]: the token of an HTTP request (an upgrade, a REST request), verified.
//! - [`session`]: one session, the only code that touches a client connection, through
//!   a transport: a WebSocket, or Server-Sent Events ([`sse`], `GET /v1/sse`).
//! - [`rest`]: `GET /v1/snapshot`, `/v1/chains/{underlying}`, `/v1/bars/{symbol}` and
//!   their OpenAPI description, answered with the session's objects and checks.
//! - [`usage`]: usage records (who saw which feed, real time or delayed), written to a
//!   JetStream stream for the monthly report.
//! - [`state`]: what every session shares (built by the server, read by sessions).
//! - [`server`]: the listener, the hand-built upgrade, and the warp routes.
//! - [`deflate`]: permessage-deflate: the offer, outbound messages compressed once for
//!   every session sending them, inbound ones inflated before tungstenite reads them.
//! - `fault` (feature `fault-injection`, for the end-to-end tests): faults a test can arm.
//!
//! Flow: NATS `md.<shard>.<symbol>` → pump decodes once → [`fanout::TickSink`] (the
//! runtime, which picks the symbol's shard) → [`fanout::Fanout::publish`]
//! marks sessions dirty and wakes them → each session drains its frames, built from tick
//! bytes encoded once per (format, mode), and writes them.

pub mod account;
pub mod assets;
pub mod auth;
pub mod bars;
pub mod checks;
pub mod clock;
pub mod config;
pub mod control;
pub mod deflate;
pub mod fanout;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gate;
mod keys;
pub mod limits;
pub mod liveness;
pub mod nats;
pub mod refdata;
pub mod rest;
pub mod revocations;
pub mod runtime;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod sse;
pub mod state;
pub mod tape;
pub mod telemetry;
#[cfg(test)]
mod testlog;
pub mod tls;
pub mod upstream;
pub mod usage;

pub use config::EdgeConfig;
pub use server::{bind, run};
