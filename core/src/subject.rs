//! Tick subjects: `md.<shard>.<symbol>`, with `shard = fnv1a_32(symbol) % shards`.
//!
//! FNV-1a (32-bit): start from 2166136261; for each byte, xor it in, then multiply by
//! 16777619 modulo 2^32. Any language can compute it; the vectors below pin it down.

use crate::symbol::Symbol;

/// Default number of shards, a deployment-wide setting.
pub const DEFAULT_SHARDS: u32 = 64;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a over `bytes`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of `symbol` among `shards` (which must be at least 1).
pub fn shard(symbol: &str, shards: u32) -> u32 {
    fnv1a_32(symbol.as_bytes()) % shards.max(1)
}

/// `md.<shard>.<symbol>`.
pub fn tick_subject(symbol: &Symbol, shards: u32) -> String {
    format!("md.{}.{}", shard(symbol.as_str(), shards), symbol)
}

/// The stream of delayed samples: at most one tick per symbol per step, kept for the
/// longest delay served plus a margin; edges read it at now − delay.
pub const DELAYED_STREAM: &str = "md_delayed";

/// The stream of delayed trades and bars: every message of the trades and bars streams
/// (sourced from them, subjects as they are), kept for the longest delay served plus a
/// margin; edges read each followed subject of it at now − delay.
pub const DELAYED_TAPE_STREAM: &str = "md_delayed_tape";

/// `mdd.<shard>.<symbol>`: a symbol's delayed samples, in [`DELAYED_STREAM`].
pub fn delayed_subject(symbol: &str, shards: u32) -> String {
    format!("mdd.{}.{}", shard(symbol, shards), symbol)
}

/// The symbol named by a tick subject, if `subject` is one.
pub fn symbol_of_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("md.")?;
    let (_, symbol) = rest.split_once('.')?;
    Some(symbol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn subject_vectors() {
        // Fixed vectors for other implementations (shards = 64).
        let cases = [
            ("AAPL", fnv1a_32(b"AAPL")),
            ("MSFT", fnv1a_32(b"MSFT")),
            ("SPY", fnv1a_32(b"SPY")),
        ];
        for (s, h) in cases {
            assert_eq!(shard(s, 64), h % 64);
        }
        assert_eq!(fnv1a_32(b"AAPL"), 0x58cd_330b);
        assert_eq!(fnv1a_32(b"MSFT"), 0xc9ad_9a73);
        assert_eq!(fnv1a_32(b"SPY"), 0x581b_ddfd);
        assert_eq!(
            tick_subject(&Symbol::parse("AAPL").unwrap(), 64),
            "md.11.AAPL"
        );
        assert_eq!(
            tick_subject(&Symbol::parse("MSFT").unwrap(), 64),
            "md.51.MSFT"
        );
        assert_eq!(
            tick_subject(&Symbol::parse("SPY").unwrap(), 64),
            "md.61.SPY"
        );
        assert_eq!(
            tick_subject(&Symbol::parse("AAPL").unwrap(), 1),
            "md.0.AAPL"
        );
    }

    #[test]
    fn symbol_round_trips_through_subject() {
        let s = Symbol::parse("BRK-B").unwrap();
        assert_eq!(symbol_of_subject(&tick_subject(&s, 64)), Some("BRK-B"));
        assert_eq!(symbol_of_subject("ctl.revoke"), None);
    }
}
