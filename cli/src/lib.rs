//! `tickmesh`, the command-line client of TickMesh edge gateways (client protocol v1).
//!
//! - [`args`]: the command line, symbol checks and the stream URL.
//! - [`conn`]: one WebSocket connection: connect, send requests, decode server messages.
//! - [`board`]: per-symbol state: the seq gate (nothing that is not newer gets through)
//!   and the latest quote of each watched symbol.
//! - [`backoff`]: exponential backoff with full jitter between reconnects.
//! - [`render`]: the live table as lines of text with ANSI colours; pure, so it is tested
//!   without a terminal.
//! - [`view`]: where events go: the table redrawn in place, or one JSON line per tick.
//! - [`watch`]: the `watch` command: connect, subscribe, read, reconnect, until Ctrl-C.
//! - [`usage`]: the `usage` command: a month of usage records read from NATS, merged
//!   into the report.
//! - [`account`]: an account followed with `--account`: resumed with `from_seq` after
//!   every reconnect, each event shown once.
//!
//! Data flow: [`conn`] decodes a frame → [`watch`] answers the protocol and passes each
//! tick through the [`board::SeqGate`] → [`view`] prints it (JSON) or marks the table
//! dirty, redrawn at most ten times a second.

pub mod account;
pub mod args;
pub mod backoff;
pub mod board;
pub mod conn;
pub mod render;
pub mod usage;
pub mod view;
pub mod watch;
