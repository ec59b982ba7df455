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

/// A trade that a tick printed: the tick carries it as its `last`, `last_size` and
/// `volume`; the publisher also sends it on the trades stream, with the tick's seq.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Print {
    pub price: f64,
    pub size: u64,
    /// The opening print (condition `opening`).
    pub opening: bool,
}
