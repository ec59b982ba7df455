//! The checks a request's symbols go through, the same whichever way the request came (a
//! WebSocket `subscribe`, `unsubscribe` or `chains`, or a REST request): how many entries
//! are read, symbol validation, chain expansion, entitlement, the reference data, and the
//! `error` each refusal gets. [`refusals`] bounds how many of those a reply holds.

pub mod refusals;

use std::collections::HashSet;
use std::time::Duration;

use tickmesh_core::Symbol;
use tickmesh_core::protocol::{ErrorCode, ServerMsg};

use crate::auth::Grant;
use crate::config::LimitsConfig;
use crate::refdata::RefData;
pub use refusals::{Refusals, count_error, symbol_retry};

/// The most entries of a request read, and symbols considered: `request_entries_factor`
/// times the grant's `max_symbols`.
pub fn read_cap(grant: &Grant, limits: &LimitsConfig) -> usize {
    (grant.max_symbols as usize).saturating_mul(limits.request_entries_factor)
}

/// `unavailable`: reference data is not loaded yet.
pub fn not_loaded(id: Option<i64>, limits: &LimitsConfig) -> ServerMsg {
    count_error(ErrorCode::Unavailable, 1);
    ServerMsg::unavailable(
        id,
        limits.retry_after_ms,
        "reference data is not loaded yet: retry after retry_ms",
    )
}

/// The entries of a request that are read: `symbols` first, then `chains`, `max` in all;
/// the rest are refused in one summary.
pub fn cap_entries<'a>(
    symbols: &'a [String],
    chains: &'a [String],
    max: usize,
    refusals: &mut Refusals,
) -> (&'a [String], &'a [String]) {
    let s = symbols.len().min(max);
    let c = chains.len().min(max - s);
    let over = symbols.len() + chains.len() - s - c;
    if over > 0 {
        refusals.unread(
            ErrorCode::TooManySymbols,
            over,
            format!(
                "a request is read up to {max} entries (symbols and chains); {over} more were not"
            ),
        );
    }
    (&symbols[..s], &chains[..c])
}

/// The valid symbols of `raw`, in order, each once; the others are refused with
/// `invalid_symbol`.
pub fn parse_symbols(raw: &[String], refusals: &mut Refusals) -> Vec<Symbol> {
    let mut seen = HashSet::new();
    let mut symbols = Vec::new();
    for s in raw {
        match Symbol::parse(s) {
            Ok(symbol) => {
                if seen.insert(symbol.clone()) {
                    symbols.push(symbol);
                }
            }
            Err(e) => refusals.symbol(ErrorCode::InvalidSymbol, s, || e.to_string()),
        }
    }
    symbols
}

/// Expands each distinct chain of `chains` (`UNDERLYING:YYYY-MM-DD`) into `symbols`
/// (skipping duplicates), up to `max` symbols in all: the options past it, and the
/// chains left when it is reached, are refused with `too_many_symbols`. Returns the
/// chains that expanded.
pub fn expand_chains(
    refdata: &RefData,
    limits: &LimitsConfig,
    chains: &[String],
    symbols: &mut Vec<Symbol>,
    max: usize,
    refusals: &mut Refusals,
) -> Vec<String> {
    let mut seen: HashSet<Symbol> = symbols.iter().cloned().collect();
    let mut distinct = HashSet::new();
    let mut expanded = Vec::new();
    for chain in chains {
        if !distinct.insert(chain.as_str()) {
            continue;
        }
        if symbols.len() >= max {
            refusals.symbol(ErrorCode::TooManySymbols, chain, || {
                format!("a request is read up to {max} symbols")
            });
            continue;
        }
        match refdata.expand_chain(chain) {
            Ok(options) => {
                symbols.extend(options.into_iter().filter(|o| seen.insert(o.clone())));
                if symbols.len() > max {
                    for o in symbols.drain(max..) {
                        refusals.symbol(ErrorCode::TooManySymbols, o.as_str(), || {
                            format!("a request is read up to {max} symbols")
                        });
                    }
                }
                expanded.push(chain.clone());
            }
            Err(e) if e.code() == ErrorCode::Unavailable => refusals.symbol_retry(
                ErrorCode::Unavailable,
                chain,
                limits.retry_after_ms,
                &e.to_string(),
            ),
            Err(e) => refusals.symbol(e.code(), chain, || e.to_string()),
        }
    }
    expanded
}

/// What [`first_checks`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Refused,
    /// Held already by the asker: it passes without taking room.
    Held,
    New,
}

/// The first checks of a symbol asked for, in order: entitlement; a symbol `held`
/// already passes; then room (`room` places left under `grant.max_symbols`) and a listed
/// instrument. Refusals go into `refusals`; `holder` begins the message of
/// `too_many_symbols` (`"a session may hold"`).
pub fn first_checks(
    grant: &Grant,
    refdata: &RefData,
    symbol: &Symbol,
    (held, room): (bool, usize),
    holder: &str,
    refusals: &mut Refusals,
) -> Checked {
    let covered = grant.allows(symbol.as_str(), refdata);
    first_checks_covered(
        grant,
        refdata,
        symbol,
        (covered, held, room),
        holder,
        refusals,
    )
}

/// [`first_checks`] of a symbol whose entitlement the caller decided (`covered`: in
/// real time or delayed).
pub fn first_checks_covered(
    grant: &Grant,
    refdata: &RefData,
    symbol: &Symbol,
    (covered, held, room): (bool, bool, usize),
    holder: &str,
    refusals: &mut Refusals,
) -> Checked {
    let max = grant.max_symbols;
    if !covered {
        refusals.symbol(ErrorCode::NotEntitled, symbol.as_str(), || {
            "your entitlements do not cover this symbol".into()
        });
    } else if held {
        return Checked::Held;
    } else if room == 0 {
        refusals.symbol(ErrorCode::TooManySymbols, symbol.as_str(), || {
            format!("{holder} at most {max} symbols")
        });
    } else if !refdata.is_known(symbol.as_str()) {
        refusals.symbol(ErrorCode::UnknownSymbol, symbol.as_str(), || {
            "no such instrument".into()
        });
    } else {
        return Checked::New;
    }
    Checked::Refused
}

/// The answer to `chains` for `underlying` (looked up as sent): the `chains` reply, or
/// `error` `unknown_symbol`, or `unavailable` before the reference data is read; with a
/// `delay`, the chain as it was that long ago (for a user who sees it delayed only).
pub fn chains(
    refdata: &RefData,
    limits: &LimitsConfig,
    (id, delay): (Option<i64>, Option<Duration>),
    underlying: String,
) -> ServerMsg {
    let expiries = match delay {
        Some(ago) => refdata.chains_as_of(&underlying, ago),
        None => refdata.chains(&underlying),
    };
    match expiries {
        Some(expiries) => ServerMsg::Chains {
            id,
            underlying,
            expiries,
        },
        None if !refdata.is_loaded() => not_loaded(id, limits),
        None => {
            count_error(ErrorCode::UnknownSymbol, 1);
            ServerMsg::symbol_error(
                id,
                ErrorCode::UnknownSymbol,
                &underlying,
                "no option chain for this underlying",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::grant;

    fn codes(refusals: Refusals) -> Vec<(ErrorCode, Option<String>)> {
        refusals
            .finish()
            .into_iter()
            .map(|m| match m {
                ServerMsg::Error { code, symbol, .. } => (code, symbol),
                other => panic!("not an error: {other:?}"),
            })
            .collect()
    }

    /// Entitlement comes first, then room, then the reference data; a held symbol
    /// passes without room.
    #[test]
    fn the_first_checks_run_in_the_protocol_order() {
        let listed = |s: &str| {
            serde_json::from_value(serde_json::json!({"symbol": s, "kind": "equity"})).unwrap()
        };
        let refdata = RefData::fixed(vec![listed("AAPL"), listed("MSFT")], Vec::new());
        let g = grant(&["AAPL", "MSFT", "ZZZ"], 1);
        let sym = |s: &str| Symbol::parse(s).unwrap();
        let mut r = Refusals::new(None, 20);
        let check = |s: &str, held, room, r: &mut Refusals| {
            first_checks(&g, &refdata, &sym(s), (held, room), "a session may hold", r)
        };
        assert_eq!(check("AAPL", false, 1, &mut r), Checked::New);
        assert_eq!(check("AAPL", true, 0, &mut r), Checked::Held);
        assert_eq!(check("TSLA", true, 1, &mut r), Checked::Refused);
        assert_eq!(check("MSFT", false, 0, &mut r), Checked::Refused);
        assert_eq!(check("ZZZ", false, 1, &mut r), Checked::Refused);
        assert_eq!(
            codes(r),
            [
                (ErrorCode::NotEntitled, Some("TSLA".into())),
                (ErrorCode::TooManySymbols, Some("MSFT".into())),
                (ErrorCode::UnknownSymbol, Some("ZZZ".into())),
            ]
        );
    }

    #[test]
    fn entries_past_the_cap_are_not_read_and_bad_symbols_are_refused_once_each() {
        let mut r = Refusals::new(None, 20);
        let raw: Vec<String> = ["AAPL", "aapl", "AAPL", "", "MSFT", "SPY"]
            .map(String::from)
            .to_vec();
        let (symbols, chains) = cap_entries(&raw, &[], 5, &mut r);
        assert!(chains.is_empty());
        let parsed = parse_symbols(symbols, &mut r);
        assert_eq!(
            parsed,
            [
                Symbol::parse("AAPL").unwrap(),
                Symbol::parse("MSFT").unwrap()
            ]
        );
        let out = codes(r);
        assert_eq!(
            out,
            [
                (ErrorCode::InvalidSymbol, Some("aapl".into())),
                (ErrorCode::InvalidSymbol, Some(String::new())),
                (ErrorCode::TooManySymbols, None),
            ]
        );
    }
}
