//! Revocations: the schema of the KV bucket `ctl_revoked`, written by an operator (`cargo
//! xtask revoke`, or `nats kv put`) on the hub, mirrored into every region, and replayed by
//! every edge.
//!
//! | key | value | refuses |
//! |---|---|---|
//! | `sub.<base64url(sub)>` | `{"at": <seconds>}` | every token of that user whose own `iat` is at or before `at` (and tokens without `iat`) |
//! | `jti.<base64url(jti)>` | `{"at": <seconds>}` | the token with that `jti` |
//!
//! A `sub` or `jti` may hold any character, a KV key only `[-/_=.a-zA-Z0-9]`: hence the
//! unpadded base64url (RFC 4648 §5) of its UTF-8 bytes. The bucket's TTL (`max_age`) drops
//! an entry once no token it could refuse is still valid, which holds when the TTL is at
//! least the edges' `auth.max_token_lifetime_s`. Deleting a key lifts the revocation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The bucket's name.
pub const BUCKET: &str = "ctl_revoked";
/// Key prefix of revocations by user.
pub const SUB_PREFIX: &str = "sub.";
/// Key prefix of revocations by token id.
pub const JTI_PREFIX: &str = "jti.";
/// The bucket's TTL when the edges set no `auth.max_token_lifetime_s`, seconds: a day,
/// longer than any token an identity provider should issue for a market-data session.
pub const DEFAULT_TTL_S: u64 = 24 * 3600;
/// Longest `sub` or `jti` accepted, bytes (a key stays well under NATS's subject limits).
pub const MAX_ID_BYTES: usize = 256;

/// What one entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// Every token of this user issued at or before the entry's `at`.
    Sub(String),
    /// The token with this id.
    Jti(String),
}

/// The value of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// When the revocation was made, seconds since the Unix epoch (the writer's clock).
    pub at: u64,
}

/// Why an id cannot be revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("an empty id cannot be revoked")]
    Empty,
    #[error("an id of more than {MAX_ID_BYTES} bytes cannot be revoked")]
    TooLong,
}

impl Revoked {
    /// The entry's key: `sub.<base64url>` or `jti.<base64url>`.
    pub fn key(&self) -> Result<String, KeyError> {
        let (prefix, id) = match self {
            Revoked::Sub(s) => (SUB_PREFIX, s),
            Revoked::Jti(j) => (JTI_PREFIX, j),
        };
        if id.is_empty() {
            return Err(KeyError::Empty);
        }
        if id.len() > MAX_ID_BYTES {
            return Err(KeyError::TooLong);
        }
        Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(id)))
    }

    /// What `key` revokes; `None` for a key outside the scheme.
    pub fn parse_key(key: &str) -> Option<Revoked> {
        let decode = |b64: &str| {
            let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
            String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
        };
        if let Some(b64) = key.strip_prefix(SUB_PREFIX) {
            decode(b64).map(Revoked::Sub)
        } else if let Some(b64) = key.strip_prefix(JTI_PREFIX) {
            decode(b64).map(Revoked::Jti)
        } else {
            None
        }
    }
}

impl Value {
    /// The JSON stored in the bucket.
    pub fn to_json(self) -> Vec<u8> {
        serde_json::to_vec(&self).expect("a struct of one integer always serializes")
    }

    /// Reads a stored value; `None` when it is not `{"at": <seconds>}`, or nests deeper
    /// than [`crate::nesting::MAX_DEPTH`] (untrusted bytes: see [`crate::nesting`]).
    pub fn parse(bytes: &[u8]) -> Option<Value> {
        crate::nesting::from_json(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_round_trip_any_id_within_the_kv_charset() {
        for id in ["alice", "a b/c.d*>", "ünï€ode", "auth0|5f7c8ec7", "x"] {
            for r in [Revoked::Sub(id.into()), Revoked::Jti(id.into())] {
                let key = r.key().unwrap();
                assert!(
                    key.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                    "{key}"
                );
                assert_eq!(Revoked::parse_key(&key), Some(r));
            }
        }
        assert_eq!(Revoked::Sub("alice".into()).key().unwrap(), "sub.YWxpY2U");
    }

    #[test]
    fn bad_ids_and_foreign_keys_are_refused() {
        assert_eq!(Revoked::Sub(String::new()).key(), Err(KeyError::Empty));
        assert_eq!(
            Revoked::Jti("j".repeat(MAX_ID_BYTES + 1)).key(),
            Err(KeyError::TooLong)
        );
        for key in ["alice", "sub.", "sub.***", "jti.//8", "other.YWxpY2U"] {
            assert_eq!(Revoked::parse_key(key), None, "{key}");
        }
    }

    #[test]
    fn values_are_json_with_at() {
        let v = Value { at: 1_765_000_000 };
        assert_eq!(v.to_json(), br#"{"at":1765000000}"#);
        assert_eq!(
            Value::parse(br#"{"at": 5, "by": "ops"}"#),
            Some(Value { at: 5 })
        );
        assert_eq!(Value::parse(b"yes"), None);
    }

    #[test]
    fn a_value_nested_past_the_bound_is_not_read() {
        let nested = |depth: usize| {
            // `depth` levels in all, the value's own object included.
            let inner = depth - 1;
            format!(
                r#"{{"at": 5, "x": {}{}}}"#,
                "[".repeat(inner),
                "]".repeat(inner)
            )
        };
        let at_bound = nested(crate::nesting::MAX_DEPTH);
        assert_eq!(Value::parse(at_bound.as_bytes()), Some(Value { at: 5 }));
        let past = nested(crate::nesting::MAX_DEPTH + 1);
        assert_eq!(Value::parse(past.as_bytes()), None);
        assert_eq!(Value::parse(nested(3_000).as_bytes()), None);
    }
}
