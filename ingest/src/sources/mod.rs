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
/// `volume`; the publisher also sends it on the trades stream, with the tick's seq as its
/// seq and its `trade_id`. One print per tick at most, so that the id is unique.
#[derive(Debug, Clone, PartialEq)]
pub struct Print {
    pub price: f64,
    pub size: u64,
    /// Sale conditions (protocol.md, Time and sales): [`OPENING`] for the opening print,
    /// ITCH's crosses and non-displayed trades (docs/itch.md), a replayed print's as
    /// recorded; empty for a regular trade.
    pub conditions: Vec<String>,
}

/// The condition of the opening print, whatever the source.
pub const OPENING: &str = "opening";

impl Print {
    /// A regular trade: no conditions.
    pub fn regular(price: f64, size: u64) -> Print {
        Print {
            price,
            size,
            conditions: Vec::new(),
        }
    }

    /// A trade with `conditions`.
    pub fn with(price: f64, size: u64, conditions: &[&str]) -> Print {
        Print {
            price,
            size,
            conditions: conditions.iter().map(|c| (*c).to_owned()).collect(),
        }
    }
}
