//! Feeds. Each source yields unsequenced ticks (no `seq`, `epoch` or `ts`); the
//! sequencer stamps them.
//!
//! - [`sim`]: the market simulator, built from [`universe`] (equities, ETFs, indices),
//!   [`session`] (the simulated clock), [`options`] (chains) and [`pricing`]
//!   (Black-Scholes and the smile).
//! - [`replay`]: recorded files.
//! - [`itch`]: NASDAQ TotalView-ITCH 5.0 files, booked per stock.

pub mod itch;
pub mod options;
pub mod pricing;
pub mod replay;
pub mod session;
pub mod sim;
pub mod universe;
