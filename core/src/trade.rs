//! Trades (time and sales): every print of a symbol, as ingest publishes it on
//! `tr.<shard>.<symbol>` (MessagePack, field names) and as a client receives it in a
//! `trades` message. A print is never conflated: each one is its own object.

use serde::{Deserialize, Serialize};

use crate::protocol::Format;
use crate::subject::shard;
use crate::symbol::{self, Symbol};
use crate::tick::MAX_SAFE_INTEGER;

/// The stream that keeps each symbol's recent prints (subjects `tr.>`).
pub const STREAM: &str = "md_trades";

/// Largest trade accepted from the wire, in bytes: a print is a handful of numbers and a
/// few short condition codes.
pub const MAX_WIRE_TRADE: usize = 1024;
/// Most condition codes on one print.
pub const MAX_CONDITIONS: usize = 8;

/// Why bytes from the wire are not a print.
#[derive(Debug, thiserror::Error)]
pub enum TradeError {
    #[error("trade is {0} bytes; the limit is {MAX_WIRE_TRADE}")]
    TooLarge(usize),
    #[error("malformed trade: {0}")]
    Malformed(#[from] crate::nesting::NestingError),
    #[error("invalid trade: {0}")]
    Invalid(String),
}

/// One print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    pub symbol: String,
    /// The seq of the tick at which the print happened (seqs rise across epochs).
    pub seq: u64,
    /// The print's identity: unique per symbol, the same for a print read from history
    /// and live.
    pub trade_id: u64,
    pub price: f64,
    pub size: u64,
    /// When ingest stamped it, µs since the Unix epoch.
    pub ts: u64,
    /// When the source stamped it, µs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ts: Option<u64>,
    /// Sale conditions (`"opening"` for the opening print); empty for a regular trade.
    #[serde(default)]
    pub conditions: Vec<String>,
}

/// `tr.<shard>.<symbol>`.
pub fn trade_subject(symbol: &Symbol, shards: u32) -> String {
    format!("tr.{}.{}", shard(symbol.as_str(), shards), symbol)
}

/// Why a print is refused (at ingest, before it is published; at the edge, on receipt).
pub fn check(t: &Trade) -> Result<(), String> {
    symbol::validate(&t.symbol).map_err(|e| format!("symbol: {e}"))?;
    if !(t.price.is_finite() && t.price > 0.0) {
        return Err(format!("price must be positive, got {}", t.price));
    }
    if t.size == 0 {
        return Err("size must be positive, got 0".into());
    }
    for (name, v) in [("seq", t.seq), ("trade_id", t.trade_id), ("ts", t.ts)] {
        if v > MAX_SAFE_INTEGER {
            return Err(format!("{name} is not below 2^53"));
        }
    }
    if t.src_ts.is_some_and(|v| v > MAX_SAFE_INTEGER) {
        return Err("src_ts is not below 2^53".into());
    }
    if t.conditions.len() > MAX_CONDITIONS || t.conditions.iter().any(|c| c.len() > 16) {
        return Err("too many or too long conditions".into());
    }
    Ok(())
}

/// The wire bytes of a print (MessagePack with field names).
pub fn encode_wire(t: &Trade) -> Vec<u8> {
    rmp_serde::to_vec_named(t).expect("a trade always serializes")
}

/// A print from the wire, checked.
pub fn decode_wire(bytes: &[u8]) -> Result<Trade, TradeError> {
    if bytes.len() > MAX_WIRE_TRADE {
        return Err(TradeError::TooLarge(bytes.len()));
    }
    let t: Trade = crate::nesting::from_msgpack(bytes)?;
    check(&t).map_err(TradeError::Invalid)?;
    Ok(t)
}

/// The client encoding of one print object.
pub fn encode_client(t: &Trade, format: Format) -> Vec<u8> {
    encode_client_delayed(t, format, None)
}

/// The client encoding of one print object, with `delayed_ms` (the delay applied) when
/// it is served delayed.
pub fn encode_client_delayed(t: &Trade, format: Format, delayed_ms: Option<u64>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Delayed<'a> {
        #[serde(flatten)]
        trade: &'a Trade,
        delayed_ms: u64,
    }
    let Some(delayed_ms) = delayed_ms else {
        return match format {
            Format::Json => serde_json::to_vec(t).expect("a trade always serializes to JSON"),
            Format::MsgPack => rmp_serde::to_vec_named(t).expect("a trade always serializes"),
        };
    };
    let view = Delayed {
        trade: t,
        delayed_ms,
    };
    match format {
        Format::Json => serde_json::to_vec(&view).expect("a trade always serializes to JSON"),
        Format::MsgPack => rmp_serde::to_vec_named(&view).expect("a trade always serializes"),
    }
}

/// A `trades` message, `{"type":"trades"[,"snapshot":true],"trades":[...]}`, from print
/// objects already encoded by [`encode_client`] in `format`. Only copies bytes.
pub fn trades_frame<'a, I>(format: Format, snapshot: bool, trades: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    let n = trades.len();
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(48 + n * 120);
            out.extend_from_slice(br#"{"type":"trades","#);
            if snapshot {
                out.extend_from_slice(br#""snapshot":true,"#);
            }
            out.extend_from_slice(br#""trades":"#);
            crate::codec::json_array(&mut out, trades);
            out.push(b'}');
            out
        }
        Format::MsgPack => {
            let mut out = Vec::with_capacity(48 + n * 100);
            out.push(if snapshot { 0x83 } else { 0x82 });
            out.extend_from_slice(b"\xa4type\xa6trades");
            if snapshot {
                out.extend_from_slice(b"\xa8snapshot\xc3");
            }
            out.extend_from_slice(b"\xa6trades");
            crate::codec::array_header(&mut out, n);
            for t in trades {
                out.extend_from_slice(t);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print() -> Trade {
        Trade {
            symbol: "AAPL".into(),
            seq: 42,
            trade_id: 42,
            price: 189.12,
            size: 300,
            ts: 1_700_000_000_000_000,
            src_ts: None,
            conditions: vec!["opening".into()],
        }
    }

    #[test]
    fn a_print_round_trips_the_wire_and_bad_ones_are_refused() {
        let t = print();
        assert_eq!(decode_wire(&encode_wire(&t)).unwrap(), t);
        for bad in [
            Trade {
                price: 0.0,
                ..print()
            },
            Trade {
                price: f64::NAN,
                ..print()
            },
            Trade { size: 0, ..print() },
            Trade {
                symbol: "md.>".into(),
                ..print()
            },
        ] {
            assert!(decode_wire(&encode_wire(&bad)).is_err(), "{bad:?}");
        }
        assert!(decode_wire(&vec![0x90; MAX_WIRE_TRADE + 1]).is_err());
    }

    #[test]
    fn frames_are_valid_json_and_msgpack() {
        let t = print();
        for snapshot in [false, true] {
            let objects = [
                encode_client(&t, Format::Json),
                encode_client(&t, Format::Json),
            ];
            let json = trades_frame(Format::Json, snapshot, objects.iter().map(|o| &o[..]));
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["type"], "trades");
            assert_eq!(v["snapshot"].as_bool().unwrap_or(false), snapshot);
            assert_eq!(v["trades"][1]["price"], 189.12);
            assert_eq!(v["trades"][0]["conditions"][0], "opening");
            let objects: Vec<Vec<u8>> = (0..20)
                .map(|_| encode_client(&t, Format::MsgPack))
                .collect();
            let mp = trades_frame(Format::MsgPack, snapshot, objects.iter().map(|o| &o[..]));
            let v: serde_json::Value = rmp_serde::from_slice(&mp).unwrap();
            assert_eq!(v["trades"].as_array().unwrap().len(), 20);
            assert_eq!(v["snapshot"].as_bool().unwrap_or(false), snapshot);
            assert_eq!(v["trades"][19]["size"], 300);
        }
    }

    #[test]
    fn a_delayed_print_carries_the_delay_in_both_formats() {
        let t = print();
        for format in [Format::Json, Format::MsgPack] {
            let read = |bytes: Vec<u8>| -> serde_json::Value {
                match format {
                    Format::Json => serde_json::from_slice(&bytes).unwrap(),
                    Format::MsgPack => rmp_serde::from_slice(&bytes).unwrap(),
                }
            };
            let delayed = read(encode_client_delayed(&t, format, Some(60_000)));
            assert_eq!(delayed["delayed_ms"], 60_000, "{format:?}");
            assert_eq!(delayed["trade_id"], 42);
            assert_eq!(delayed["conditions"][0], "opening");
            let live = read(encode_client(&t, format));
            assert!(live.get("delayed_ms").is_none(), "{format:?}");
        }
    }
}
