//! Reference data: the schema of the KV bucket `md_ref`, written by ingest and read by
//! edges to validate symbols and expand chain subscriptions.
//!
//! Keys (values are JSON objects, so `nats kv get md_ref chain.AAPL` is readable):
//!
//! | key | value |
//! |---|---|
//! | `instr.<SYMBOL>` | [`Instrument`]: kind, price grid, lot; for options underlying, expiry, strike, right |
//! | `chain.<UNDERLYING>` | [`Chain`]: the OCC root and `expiries: [{expiry, strikes}]`, expiries and strikes ascending |
//!
//! An option of a chain is `OptionSymbol { root, expiry, right, strike }` for every
//! listed expiry and strike and both rights; [`Chain::symbols`] spells them out. A key
//! disappears (KV delete) when the instrument expires. Unknown fields are ignored on
//! read, so the schema can grow.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::occ::OptionSymbol;
use crate::symbol::{Symbol, SymbolError};
use crate::tick::{Kind, Right};

/// The bucket's default name.
pub const BUCKET: &str = "md_ref";
/// Key prefix of instruments.
pub const INSTRUMENT_PREFIX: &str = "instr.";
/// Key prefix of chains.
pub const CHAIN_PREFIX: &str = "chain.";
/// The key ingest writes once the reference data it started with is all in the bucket
/// (after the first write that left nothing pending): a reader that has not seen it may
/// hold a part only, and must not yet refuse a symbol as unknown. Its value is JSON
/// `{"ts": µs}`.
pub const COMPLETE_KEY: &str = "meta.complete";

/// `instr.<SYMBOL>`.
pub fn instrument_key(symbol: &str) -> String {
    format!("{INSTRUMENT_PREFIX}{symbol}")
}

/// `chain.<UNDERLYING>`.
pub fn chain_key(underlying: &str) -> String {
    format!("{CHAIN_PREFIX}{underlying}")
}

/// What a `md_ref` key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKey<'a> {
    Instrument(&'a str),
    Chain(&'a str),
}

/// Classifies a key; `None` for keys this version does not know.
pub fn parse_key(key: &str) -> Option<RefKey<'_>> {
    if let Some(s) = key.strip_prefix(INSTRUMENT_PREFIX) {
        return Some(RefKey::Instrument(s));
    }
    key.strip_prefix(CHAIN_PREFIX).map(RefKey::Chain)
}

/// A decoded `md_ref` value.
#[derive(Debug, Clone, PartialEq)]
pub enum RefValue {
    Instrument(Instrument),
    Chain(Chain),
}

/// Decodes the value stored under `key` (untrusted bytes: whatever the bucket holds).
/// `Ok(None)` for keys this version does not know.
pub fn decode_value(
    key: &str,
    value: &[u8],
) -> Result<Option<RefValue>, crate::nesting::NestingError> {
    Ok(match parse_key(key) {
        Some(RefKey::Instrument(_)) => {
            Some(RefValue::Instrument(crate::nesting::from_json(value)?))
        }
        Some(RefKey::Chain(_)) => Some(RefValue::Chain(crate::nesting::from_json(value)?)),
        None => None,
    })
}

/// One instrument. Price-grid fields are absent when the writer does not know them (an
/// instrument first seen in a replayed file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: String,
    pub kind: Kind,
    /// Minimum price increment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_size: Option<f64>,
    /// Decimals that prices carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    /// Round lot (shares) or 1 (contracts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<u64>,
    /// Shares per contract (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlying: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<Right>,
    /// The exchange or feed the data comes from (ingest's `refdata.feed`), as usage
    /// reports name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
}

/// The listed strikes of one expiry. Serialized as the `chains` reply entry of the client
/// protocol: `{"expiry": "YYYY-MM-DD", "strikes": [number]}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainExpiry {
    /// `YYYY-MM-DD`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub expiry: Date,
    /// Ascending.
    pub strikes: Vec<f64>,
}

/// The option chain of one underlying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub underlying: String,
    /// OCC root of the chain's options (the underlying without characters OCC roots
    /// cannot carry, e.g. `BRK-B` → `BRKB`).
    pub root: String,
    /// Ascending by expiry.
    pub expiries: Vec<ChainExpiry>,
}

impl Chain {
    pub fn expiry(&self, expiry: Date) -> Option<&ChainExpiry> {
        self.expiries.iter().find(|e| e.expiry == expiry)
    }

    /// Every option of `expiry`: by ascending strike, the call then the put. `None` if
    /// the expiry is not listed. Strikes that cannot form an OCC symbol are skipped.
    pub fn symbols(&self, expiry: Date) -> Option<Vec<Symbol>> {
        let e = self.expiry(expiry)?;
        let mut out = Vec::with_capacity(e.strikes.len() * 2);
        for &strike in &e.strikes {
            for right in [Right::Call, Right::Put] {
                if let Ok(o) = OptionSymbol::new(&self.root, expiry, right, strike) {
                    out.push(o.to_symbol());
                }
            }
        }
        Some(out)
    }
}

/// The OCC root for an underlying: its letters and digits, at most six.
pub fn occ_root(underlying: &str) -> String {
    underlying
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(crate::occ::MAX_ROOT)
        .collect()
}

/// A chain subscription, `UNDERLYING:YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainRef {
    pub underlying: Symbol,
    pub expiry: Date,
}

/// Why a string is not a chain reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainRefError {
    #[error("a chain is UNDERLYING:YYYY-MM-DD, got {0:?}")]
    Format(String),
    #[error("chain underlying: {0}")]
    Underlying(#[from] SymbolError),
    #[error("chain expiry: {0}")]
    Expiry(#[from] crate::date::DateError),
}

impl ChainRef {
    pub fn parse(s: &str) -> Result<Self, ChainRefError> {
        let (underlying, expiry) = s
            .split_once(':')
            .ok_or_else(|| ChainRefError::Format(s.chars().take(80).collect()))?;
        Ok(ChainRef {
            underlying: Symbol::parse(underlying)?,
            expiry: Date::parse(expiry)?,
        })
    }
}

impl std::fmt::Display for ChainRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.underlying, self.expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value nested past the bound is refused (the watch logs and drops it), without
    /// reaching serde's recursion.
    #[test]
    fn a_value_nested_past_the_bound_is_refused() {
        let deep = format!(
            r#"{{"symbol":"AAPL","kind":"equity","x":{}1{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        for key in ["instr.AAPL", "chain.AAPL"] {
            let e = decode_value(key, deep.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("nested"), "{key}: {e}");
        }
        let flat = r#"{"symbol":"AAPL","kind":"equity"}"#;
        assert!(matches!(
            decode_value("instr.AAPL", flat.as_bytes()),
            Ok(Some(RefValue::Instrument(_)))
        ));
    }

    fn chain() -> Chain {
        Chain {
            underlying: "AAPL".into(),
            root: "AAPL".into(),
            expiries: vec![ChainExpiry {
                expiry: Date::parse("2026-12-18").unwrap(),
                strikes: vec![145.0, 150.0, 152.5],
            }],
        }
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(instrument_key("AAPL"), "instr.AAPL");
        assert_eq!(chain_key("SPY"), "chain.SPY");
        assert_eq!(parse_key("instr.BRK-B"), Some(RefKey::Instrument("BRK-B")));
        assert_eq!(parse_key("chain.SPY"), Some(RefKey::Chain("SPY")));
        assert_eq!(parse_key("other.X"), None);
    }

    #[test]
    fn chain_expands_to_calls_and_puts_by_strike() {
        let c = chain();
        let syms: Vec<String> = c
            .symbols(Date::parse("2026-12-18").unwrap())
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            syms,
            [
                "AAPL261218C00145000",
                "AAPL261218P00145000",
                "AAPL261218C00150000",
                "AAPL261218P00150000",
                "AAPL261218C00152500",
                "AAPL261218P00152500",
            ]
        );
        assert!(c.symbols(Date::parse("2026-12-11").unwrap()).is_none());
    }

    #[test]
    fn chain_json_matches_the_protocol_shape() {
        let v = serde_json::to_value(chain()).unwrap();
        assert_eq!(v["expiries"][0]["expiry"], "2026-12-18");
        assert_eq!(v["expiries"][0]["strikes"][2], 152.5);
        let back: Chain = serde_json::from_value(v).unwrap();
        assert_eq!(back, chain());
    }

    #[test]
    fn chain_refs_parse_strictly() {
        let r = ChainRef::parse("AAPL:2026-12-18").unwrap();
        assert_eq!(r.underlying.as_str(), "AAPL");
        assert_eq!(r.to_string(), "AAPL:2026-12-18");
        for bad in [
            "AAPL",
            "AAPL:",
            "aapl:2026-12-18",
            "AAPL:2026-13-18",
            "A.B:2026-12-18",
            ":2026-12-18",
        ] {
            assert!(ChainRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(occ_root("BRK-B"), "BRKB");
        assert_eq!(occ_root("GOOGLEX1"), "GOOGLE");
    }

    #[test]
    fn values_decode_by_their_key() {
        let chain_json = serde_json::to_vec(&chain()).unwrap();
        assert_eq!(
            decode_value("chain.AAPL", &chain_json).unwrap(),
            Some(RefValue::Chain(chain()))
        );
        let v = decode_value("instr.AAPL", br#"{"symbol":"AAPL","kind":"etf"}"#).unwrap();
        assert!(matches!(v, Some(RefValue::Instrument(i)) if i.kind == Kind::Etf));
        assert_eq!(decode_value("other.AAPL", b"not json").unwrap(), None);
        assert!(decode_value("instr.AAPL", &chain_json).is_err());
        assert!(decode_value("chain.AAPL", b"{").is_err());
    }

    #[test]
    fn instruments_omit_unknown_fields_and_tolerate_new_ones() {
        let i = Instrument {
            symbol: "AAPL".into(),
            kind: Kind::Equity,
            tick_size: Some(0.01),
            decimals: Some(2),
            lot: Some(100),
            multiplier: None,
            underlying: None,
            expiry: None,
            strike: None,
            right: None,
            feed: None,
        };
        let json = serde_json::to_string(&i).unwrap();
        assert!(!json.contains("null") && !json.contains("strike"), "{json}");
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["new_field"] = 1.into();
        assert_eq!(serde_json::from_value::<Instrument>(v).unwrap(), i);
    }
}
