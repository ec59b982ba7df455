//! The tick: the whole current state of one instrument's fields, never a delta, so a
//! lost or conflated tick only makes a reader momentarily stale, never wrong.

use serde::{Deserialize, Serialize};

/// JavaScript reads integers exactly only below 2^53; `seq`, `epoch` and `ts` stay below it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Wall clock in µs since the Unix epoch, the unit of a tick's `ts` and `src_ts` (0 if the
/// clock is before the epoch).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Instrument kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Equity,
    Etf,
    Index,
    Option,
}

/// Option right.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Right {
    #[serde(rename = "C")]
    Call,
    #[serde(rename = "P")]
    Put,
}

/// Which fields a subscription receives. Ordered: each mode is a superset of the one before.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// symbol, seq, epoch, ts, last.
    Ltp,
    /// All level-1 fields, and the option fields for options.
    #[default]
    Quote,
    /// Quote plus top-of-book depth.
    Full,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Ltp, Mode::Quote, Mode::Full];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ltp => "ltp",
            Mode::Quote => "quote",
            Mode::Full => "full",
        }
    }
}

/// An instrument's trading state (tick field `state`, `status.state`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Before the open: quotes may move, nothing trades.
    PreOpen,
    Open,
    /// Trading stopped in this instrument alone (a volatility halt, news pending).
    Halted,
    /// After the close.
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::PreOpen => "pre_open",
            State::Open => "open",
            State::Halted => "halted",
            State::Closed => "closed",
        }
    }

    /// Why an instrument is in this state now, having been in `was` (the `reason` of a
    /// `status` message).
    pub fn reason(self, was: Option<State>) -> &'static str {
        match (was, self) {
            (Some(State::Halted), State::Open) => "trading resumed",
            (_, State::Open) => "market open",
            (_, State::Halted) => "trading halted",
            (_, State::PreOpen) => "pre-open",
            (_, State::Closed) => "market closed",
        }
    }
}

/// Book depth, best first: `[[price, size], ...]`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Depth {
    pub bids: Vec<(f64, u64)>,
    pub asks: Vec<(f64, u64)>,
}

/// One tick: the whole current state of one instrument's fields. Absent fields are `None`
/// and are omitted on the wire, never `null`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tick {
    pub symbol: String,
    /// Per-symbol sequence number: +1 per published tick within an `epoch`.
    pub seq: u64,
    /// The ingest epoch that stamped the tick; a new one starts a new stream of seqs.
    pub epoch: u64,
    /// When ingest stamped the tick, µs since the Unix epoch.
    pub ts: u64,
    /// When the source stamped it, µs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ts: Option<u64>,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_close: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<Depth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlying: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<Right>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vega: Option<f64>,
    /// The instrument's trading state, where the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
}

/// Rounds `x` to `decimals` places so that it prints as the short decimal (189.12, never
/// 189.12000000001): an integer divided by a power of ten is the nearest double to the
/// decimal, and shortest round-trip formatting then prints exactly that decimal.
pub fn round_to(x: f64, decimals: u32) -> f64 {
    let p = 10f64.powi(decimals as i32);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_prices_print_short() {
        assert_eq!(round_to(189.120_000_000_01, 2).to_string(), "189.12");
        assert_eq!(round_to(0.1 + 0.2, 2).to_string(), "0.3");
        assert_eq!(round_to(4_321.987_6, 2).to_string(), "4321.99");
    }

    #[test]
    fn modes_are_ordered_supersets() {
        assert!(Mode::Ltp < Mode::Quote && Mode::Quote < Mode::Full);
        assert_eq!(Mode::default(), Mode::Quote);
    }
}
