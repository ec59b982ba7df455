//! OCC option symbols, without the padding spaces.
//!
//! `<root><YYMMDD><C|P><strike × 1000, 8 digits>`, e.g. `AAPL261218C00150000` is the AAPL
//! call expiring 2026-12-18 with strike 150. The root is 1 to 6 characters of `A-Z0-9`;
//! the last 15 characters are always the date, the right and the strike, so the root is
//! whatever precedes them. The OCC standard pads the root to six characters with spaces;
//! TickMesh drops the padding, so every option symbol is made of `A-Z0-9` only: a valid
//! [`crate::symbol`] that is safe in a NATS subject (no `.`, `*`, `>` or white space).
//!
//! Expiries are years 2000 to 2099 (`YY`); strikes are 0.001 to 99999.999 in steps of 0.001.

use std::fmt;

use crate::date::Date;
use crate::symbol::Symbol;
use crate::tick::Right;

/// Longest OCC root.
pub const MAX_ROOT: usize = 6;

/// One option contract, identified the OCC way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptionSymbol {
    pub root: String,
    pub expiry: Date,
    pub right: Right,
    /// Strike in thousandths (150.0 → 150000).
    pub strike_milli: u64,
}

/// Why a string or a set of terms is not an OCC option symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OccError {
    #[error("option root must be 1 to {MAX_ROOT} characters of A-Z0-9, got {0:?}")]
    Root(String),
    #[error("option expiry {0} is outside 2000-01-01..=2099-12-31")]
    Expiry(Date),
    #[error("option strike {0} is not a positive multiple of 0.001 below 100000")]
    Strike(String),
    #[error("{0:?} is not an OCC option symbol (ROOT YYMMDD C|P 8-digit strike)")]
    Format(String),
}

/// `C` or `P`.
pub fn right_char(right: Right) -> char {
    match right {
        Right::Call => 'C',
        Right::Put => 'P',
    }
}

fn valid_root(root: &str) -> bool {
    (1..=MAX_ROOT).contains(&root.len())
        && root
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A strike in thousandths, if `strike` is on the 0.001 grid and in range.
pub fn strike_milli(strike: f64) -> Result<u64, OccError> {
    let scaled = strike * 1000.0;
    let rounded = scaled.round();
    if !(strike.is_finite() && (1.0..=99_999_999.0).contains(&rounded))
        || (scaled - rounded).abs() > 1e-4
    {
        return Err(OccError::Strike(strike.to_string()));
    }
    Ok(rounded as u64)
}

impl OptionSymbol {
    pub fn new(root: &str, expiry: Date, right: Right, strike: f64) -> Result<Self, OccError> {
        if !valid_root(root) {
            return Err(OccError::Root(root.chars().take(20).collect()));
        }
        if !(2000..=2099).contains(&expiry.year()) {
            return Err(OccError::Expiry(expiry));
        }
        Ok(OptionSymbol {
            root: root.to_string(),
            expiry,
            right,
            strike_milli: strike_milli(strike)?,
        })
    }

    /// The strike as a number (150000 → 150.0), printed short (150, 152.5).
    pub fn strike(&self) -> f64 {
        self.strike_milli as f64 / 1000.0
    }

    /// Parses `AAPL261218C00150000`.
    pub fn parse(s: &str) -> Result<Self, OccError> {
        let bad = || OccError::Format(s.chars().take(40).collect());
        let b = s.as_bytes();
        if !s.is_ascii() || b.len() < 16 || b.len() > 15 + MAX_ROOT {
            return Err(bad());
        }
        let (root, rest) = s.split_at(b.len() - 15);
        if !valid_root(root) {
            return Err(bad());
        }
        let (date, rest) = rest.split_at(6);
        let (right, strike) = rest.split_at(1);
        if !(date.bytes().all(|c| c.is_ascii_digit()) && strike.bytes().all(|c| c.is_ascii_digit()))
        {
            return Err(bad());
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
        let expiry = Date::new(
            2000 + num(&date[0..2])? as i32,
            num(&date[2..4])?,
            num(&date[4..6])?,
        )
        .map_err(|_| bad())?;
        let right = match right {
            "C" => Right::Call,
            "P" => Right::Put,
            _ => return Err(bad()),
        };
        let strike_milli = u64::from(num(strike)?);
        if strike_milli == 0 {
            return Err(bad());
        }
        Ok(OptionSymbol {
            root: root.to_string(),
            expiry,
            right,
            strike_milli,
        })
    }

    /// The symbol, which always passes [`crate::symbol::validate`].
    pub fn to_symbol(&self) -> Symbol {
        Symbol::parse(&self.to_string()).expect("an OCC symbol is made of A-Z0-9 only")
    }
}

impl fmt::Display for OptionSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{:02}{:02}{:02}{}{:08}",
            self.root,
            self.expiry.year() % 100,
            self.expiry.month(),
            self.expiry.day(),
            right_char(self.right),
            self.strike_milli
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbol::validate;
    use proptest::prelude::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn formats_the_documented_examples() {
        let o = OptionSymbol::new("AAPL", d("2026-12-18"), Right::Call, 150.0).unwrap();
        assert_eq!(o.to_string(), "AAPL261218C00150000");
        let o = OptionSymbol::new("SPY", d("2025-01-17"), Right::Put, 592.5).unwrap();
        assert_eq!(o.to_string(), "SPY250117P00592500");
        let o = OptionSymbol::new("F", d("2030-06-21"), Right::Call, 12.125).unwrap();
        assert_eq!(o.to_string(), "F300621C00012125");
        assert_eq!(o.strike(), 12.125);
    }

    #[test]
    fn parses_back() {
        let o = OptionSymbol::parse("AAPL261218C00150000").unwrap();
        assert_eq!(o.root, "AAPL");
        assert_eq!(o.expiry, d("2026-12-18"));
        assert_eq!(o.right, Right::Call);
        assert_eq!(o.strike(), 150.0);
        let o = OptionSymbol::parse("BRKB250620P00470000").unwrap();
        assert_eq!(
            (o.root.as_str(), o.right, o.strike()),
            ("BRKB", Right::Put, 470.0)
        );
    }

    #[test]
    fn refuses_what_is_not_an_option() {
        for bad in [
            "AAPL",
            "AAPL261218X00150000",
            "AAPL261318C00150000",
            "AAPL261218C0015000",
            "AAPL261218C00000000",
            "TOOLONGR261218C00150000",
            "261218C00150000",
            "aapl261218C00150000",
            "AAPL 261218C00150000",
            "AAPL2612l8C00150000",
        ] {
            assert!(OptionSymbol::parse(bad).is_err(), "{bad}");
        }
        let day = d("2026-12-18");
        assert!(OptionSymbol::new("AAPL", day, Right::Call, 0.0).is_err());
        assert!(OptionSymbol::new("AAPL", day, Right::Call, 150.0001).is_err());
        assert!(OptionSymbol::new("AAPL", day, Right::Call, 100_000.0).is_err());
        assert!(OptionSymbol::new("AAPL", day, Right::Call, f64::NAN).is_err());
        assert!(OptionSymbol::new("BRK-B", day, Right::Call, 1.0).is_err());
        assert!(OptionSymbol::new("", day, Right::Call, 1.0).is_err());
        assert!(OptionSymbol::new("A", d("2100-01-01"), Right::Call, 1.0).is_err());
    }

    proptest! {
        #[test]
        fn every_option_symbol_is_a_subject_safe_symbol_and_round_trips(
            root in "[A-Z0-9]{1,6}",
            days in 10_957i64..47_482,
            call in any::<bool>(),
            milli in 1u64..=99_999_999,
        ) {
            let right = if call { Right::Call } else { Right::Put };
            let o = OptionSymbol::new(&root, Date::from_days(days), right, milli as f64 / 1000.0).unwrap();
            prop_assert_eq!(o.strike_milli, milli);
            let s = o.to_string();
            prop_assert!(validate(&s).is_ok());
            prop_assert!(!s.contains(['.', '*', '>', ' ']));
            prop_assert_eq!(OptionSymbol::parse(&s).unwrap(), o);
        }
    }
}
