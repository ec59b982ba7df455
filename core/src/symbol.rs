//! Symbol validation: `^[A-Z0-9][A-Z0-9_-]{0,63}$`.
//!
//! The charset can never contain a NATS wildcard (`*`, `>`), a `.` or white space, so a
//! validated symbol can be put into a subject without widening anyone's interest.

use std::fmt;
use std::sync::Arc;

/// Longest accepted symbol, in bytes.
pub const MAX_LEN: usize = 64;

/// Why a string is not a symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol is {0} bytes long; the limit is {MAX_LEN}")]
    TooLong(usize),
    #[error("symbol must start with A-Z or 0-9")]
    BadStart,
    #[error("symbol may contain only A-Z, 0-9, '_' and '-' (found {0:?})")]
    BadChar(char),
}

/// A validated symbol. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// Validates `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, SymbolError> {
        validate(s)?;
        Ok(Symbol(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `s` against the symbol grammar without allocating.
pub fn validate(s: &str) -> Result<(), SymbolError> {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(SymbolError::Empty);
    };
    if bytes.len() > MAX_LEN {
        return Err(SymbolError::TooLong(bytes.len()));
    }
    if !(first.is_ascii_uppercase() || first.is_ascii_digit()) {
        return Err(SymbolError::BadStart);
    }
    for c in s.chars() {
        if !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(SymbolError::BadChar(c));
        }
    }
    Ok(())
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_tickers_and_occ_options() {
        for s in [
            "AAPL",
            "BRK-B",
            "SPY",
            "A",
            "9",
            "AAPL261218C00150000",
            "X_Y",
        ] {
            assert!(Symbol::parse(s).is_ok(), "{s}");
        }
        assert!(Symbol::parse(&"A".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_wildcards_dots_space_case_and_length() {
        assert_eq!(validate(""), Err(SymbolError::Empty));
        assert_eq!(validate("*"), Err(SymbolError::BadStart));
        assert_eq!(validate(">"), Err(SymbolError::BadStart));
        assert_eq!(validate("A.B"), Err(SymbolError::BadChar('.')));
        assert_eq!(validate("A*"), Err(SymbolError::BadChar('*')));
        assert_eq!(validate("A>"), Err(SymbolError::BadChar('>')));
        assert_eq!(validate("A B"), Err(SymbolError::BadChar(' ')));
        assert_eq!(validate("aapl"), Err(SymbolError::BadStart));
        assert_eq!(validate("Aapl"), Err(SymbolError::BadChar('a')));
        assert_eq!(validate("-A"), Err(SymbolError::BadStart));
        assert_eq!(validate(&"A".repeat(65)), Err(SymbolError::TooLong(65)));
        assert_eq!(validate(&"A".repeat(1024)), Err(SymbolError::TooLong(1024)));
        assert_eq!(validate("AÄ"), Err(SymbolError::BadChar('Ä')));
    }

    proptest! {
        #[test]
        fn valid_symbols_never_contain_subject_metacharacters(s in "\\PC{0,80}") {
            if validate(&s).is_ok() {
                prop_assert!(!s.contains(['.', '*', '>', ' ', '\t', '\n']));
                prop_assert!(!s.is_empty() && s.len() <= MAX_LEN);
            }
        }

        #[test]
        fn grammar_strings_are_accepted(s in "[A-Z0-9][A-Z0-9_-]{0,63}") {
            prop_assert!(validate(&s).is_ok());
        }
    }
}
