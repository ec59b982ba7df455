//! Bars (OHLCV): built once, by the ingest that owns the symbol, from its prints, and
//! published on `bar.<tf>.<shard>.<symbol>` (MessagePack, field names): the bar in
//! progress as it changes, and each bar once more with `final: true` when it closes. The
//! stream `md_bars` keeps the closed bars (1000 per subject); bars in progress are kept
//! there only for a while (a per-message TTL), so that a new owner can go on with one.

use serde::{Deserialize, Serialize};

use crate::protocol::Format;
use crate::subject::shard;
use crate::symbol::{self, Symbol};
use crate::tick::MAX_SAFE_INTEGER;

/// The stream that keeps the bars (subjects `bar.>`).
pub const STREAM: &str = "md_bars";
/// Largest bar accepted from the wire, in bytes.
pub const MAX_WIRE_BAR: usize = 512;
/// Closed bars a `bars` subscription gets first, unless it asks: `history`.
pub const DEFAULT_HISTORY: u32 = 100;
/// The most closed bars a `bars` subscription may ask for.
pub const MAX_HISTORY: u32 = 1000;

/// A bar's length.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timeframe {
    #[serde(rename = "1s")]
    S1,
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "1d")]
    D1,
}

impl Timeframe {
    pub const ALL: [Timeframe; 5] = [
        Timeframe::S1,
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::H1,
        Timeframe::D1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::S1 => "1s",
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::H1 => "1h",
            Timeframe::D1 => "1d",
        }
    }

    pub fn parse(s: &str) -> Option<Timeframe> {
        Timeframe::ALL.into_iter().find(|tf| tf.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Length in µs.
    pub fn micros(self) -> u64 {
        const S: u64 = 1_000_000;
        match self {
            Timeframe::S1 => S,
            Timeframe::M1 => 60 * S,
            Timeframe::M5 => 300 * S,
            Timeframe::H1 => 3_600 * S,
            Timeframe::D1 => 86_400 * S,
        }
    }

    /// The start of the bar holding instant `ts` (µs since the Unix epoch; days are UTC).
    pub fn start_of(self, ts: u64) -> u64 {
        ts - ts % self.micros()
    }
}

/// One bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub symbol: String,
    pub tf: Timeframe,
    /// Bar start, µs since the Unix epoch: the start of its period (days are UTC), or
    /// the start of the trading session when that began within the period.
    pub t: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: u64,
    /// Prints in the bar.
    pub trades: u64,
    /// The bar closed: this is its last word.
    #[serde(rename = "final")]
    pub closed: bool,
}

impl Bar {
    /// A bar opened by one print.
    pub fn open_with(symbol: &str, tf: Timeframe, ts: u64, price: f64, size: u64) -> Bar {
        Bar {
            symbol: symbol.to_string(),
            tf,
            t: tf.start_of(ts),
            open: price,
            high: price,
            low: price,
            close: price,
            volume: size,
            trades: 1,
            closed: false,
        }
    }

    /// When the bar's period ends, µs: its start is the period's, or (the first bar of a
    /// trading session that began within the period) the session's start.
    pub fn end(&self) -> u64 {
        self.tf.start_of(self.t) + self.tf.micros()
    }

    /// Folds one more print of the bar in.
    pub fn add(&mut self, price: f64, size: u64) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume += size;
        self.trades += 1;
    }
}

/// `bar.<tf>.<shard>.<symbol>`.
pub fn bar_subject(tf: Timeframe, symbol: &Symbol, shards: u32) -> String {
    format!(
        "bar.{}.{}.{}",
        tf.as_str(),
        shard(symbol.as_str(), shards),
        symbol
    )
}

/// Why a bar is refused.
pub fn check(b: &Bar) -> Result<(), String> {
    symbol::validate(&b.symbol).map_err(|e| format!("symbol: {e}"))?;
    let prices = [b.open, b.high, b.low, b.close];
    if prices.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
        return Err("prices must be positive".into());
    }
    if !(b.low <= b.open.min(b.close) && b.high >= b.open.max(b.close)) {
        return Err("low and high do not bound open and close".into());
    }
    if b.trades == 0 || b.t > MAX_SAFE_INTEGER || b.volume > MAX_SAFE_INTEGER {
        return Err("no prints, or a number not below 2^53".into());
    }
    // A bar starts at its period's start, or later in the period where a trading session
    // started (see [`Bar::end`]): always on a whole second.
    if !b.t.is_multiple_of(Timeframe::S1.micros()) {
        return Err(format!("t {} is not a whole second", b.t));
    }
    Ok(())
}

/// Why bytes from the wire are not a bar.
#[derive(Debug, thiserror::Error)]
pub enum BarError {
    #[error("bar is {0} bytes; the limit is {MAX_WIRE_BAR}")]
    TooLarge(usize),
    #[error("malformed bar: {0}")]
    Malformed(#[from] crate::nesting::NestingError),
    #[error("invalid bar: {0}")]
    Invalid(String),
}

pub fn encode_wire(b: &Bar) -> Vec<u8> {
    rmp_serde::to_vec_named(b).expect("a bar always serializes")
}

pub fn decode_wire(bytes: &[u8]) -> Result<Bar, BarError> {
    if bytes.len() > MAX_WIRE_BAR {
        return Err(BarError::TooLarge(bytes.len()));
    }
    let b: Bar = crate::nesting::from_msgpack(bytes)?;
    check(&b).map_err(BarError::Invalid)?;
    Ok(b)
}

/// A bar as a client sees it (its timeframe is the message's).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = BarObject))]
#[derive(Serialize)]
pub struct ClientBar<'a> {
    pub symbol: &'a str,
    /// Bar start, µs since the Unix epoch.
    pub t: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: u64,
    /// Prints in the bar.
    pub trades: u64,
    /// The bar closed: this is its last word.
    #[serde(rename = "final")]
    pub closed: bool,
    /// The delay applied, ms: present when the bar is served delayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delayed_ms: Option<u64>,
}

/// The client encoding of one bar object.
pub fn encode_client(b: &Bar, format: Format) -> Vec<u8> {
    encode_client_delayed(b, format, None)
}

/// The client encoding of one bar object, with `delayed_ms` when it is served delayed.
pub fn encode_client_delayed(b: &Bar, format: Format, delayed_ms: Option<u64>) -> Vec<u8> {
    let view = ClientBar {
        symbol: &b.symbol,
        t: b.t,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
        trades: b.trades,
        closed: b.closed,
        delayed_ms,
    };
    match format {
        Format::Json => serde_json::to_vec(&view).expect("a bar always serializes to JSON"),
        Format::MsgPack => rmp_serde::to_vec_named(&view).expect("a bar always serializes"),
    }
}

/// A `bars` message, `{"type":"bars","tf":..[,"snapshot":true],"bars":[...]}`, from bar
/// objects already encoded by [`encode_client`] in `format`.
pub fn bars_frame<'a, I>(format: Format, tf: Timeframe, snapshot: bool, bars: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    let n = bars.len();
    let tf = tf.as_str();
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(64 + n * 140);
            out.extend_from_slice(br#"{"type":"bars","tf":""#);
            out.extend_from_slice(tf.as_bytes());
            out.extend_from_slice(br#"","#);
            if snapshot {
                out.extend_from_slice(br#""snapshot":true,"#);
            }
            out.extend_from_slice(br#""bars":"#);
            crate::codec::json_array(&mut out, bars);
            out.push(b'}');
            out
        }
        Format::MsgPack => {
            let mut out = Vec::with_capacity(64 + n * 120);
            out.push(if snapshot { 0x84 } else { 0x83 });
            out.extend_from_slice(b"\xa4type\xa4bars\xa2tf");
            out.push(0xa0 | tf.len() as u8);
            out.extend_from_slice(tf.as_bytes());
            if snapshot {
                out.extend_from_slice(b"\xa8snapshot\xc3");
            }
            out.extend_from_slice(b"\xa4bars");
            crate::codec::array_header(&mut out, n);
            for b in bars {
                out.extend_from_slice(b);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_start_on_their_timeframe_and_fold_prints() {
        let ts = 1_700_000_123_456_789;
        assert_eq!(Timeframe::S1.start_of(ts), 1_700_000_123_000_000);
        assert_eq!(Timeframe::M1.start_of(ts), 1_700_000_100_000_000);
        assert_eq!(Timeframe::D1.start_of(ts) % 86_400_000_000, 0);
        let mut b = Bar::open_with("AAPL", Timeframe::M1, ts, 10.0, 100);
        b.add(12.0, 50);
        b.add(9.5, 10);
        assert_eq!((b.open, b.high, b.low, b.close), (10.0, 12.0, 9.5, 9.5));
        assert_eq!((b.volume, b.trades), (160, 3));
        assert_eq!(decode_wire(&encode_wire(&b)).unwrap(), b);
        for tf in Timeframe::ALL {
            assert_eq!(Timeframe::parse(tf.as_str()), Some(tf));
        }
        let bad = Bar {
            low: 11.0,
            ..b.clone()
        };
        assert!(decode_wire(&encode_wire(&bad)).is_err());
        let bad = Bar { t: b.t + 1, ..b };
        assert!(decode_wire(&encode_wire(&bad)).is_err());
    }

    #[test]
    fn frames_are_valid_json_and_msgpack() {
        let b = Bar::open_with("AAPL", Timeframe::M5, 1_700_000_000_000_000, 10.0, 100);
        for snapshot in [false, true] {
            let o = encode_client(&b, Format::Json);
            let json = bars_frame(Format::Json, Timeframe::M5, snapshot, [&o[..]].into_iter());
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["tf"].as_str()),
                (Some("bars"), Some("5m"))
            );
            assert_eq!(v["snapshot"].as_bool().unwrap_or(false), snapshot);
            assert_eq!(v["bars"][0]["final"], false);
            assert!(v["bars"][0].get("tf").is_none());
            let o = encode_client(&b, Format::MsgPack);
            let mp = bars_frame(
                Format::MsgPack,
                Timeframe::M5,
                snapshot,
                [&o[..]].into_iter(),
            );
            let v: serde_json::Value = rmp_serde::from_slice(&mp).unwrap();
            assert_eq!(v["tf"], "5m");
            assert_eq!(v["bars"][0]["open"], 10.0);
            assert_eq!(v["snapshot"].as_bool().unwrap_or(false), snapshot);
        }
    }
}
