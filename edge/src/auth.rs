//! Authentication and entitlements: JWT verification at the upgrade (and for in-band
//! `auth`), the tier table, revocations, and the [`Grant`] a session works under.
//!
//! Accepted: HS256 with a shared secret, RS256 and EdDSA with public keys from PEM files or
//! a JWKS file. `none` and any other algorithm are refused. A token's `kid` picks the JWKS
//! key; a JWKS entry the edge cannot use is skipped (logged, and counted in the gauge
//! `tickmesh_edge_jwks_keys_skipped`). Key files are re-read when they change, and a key
//! gone from them is no longer trusted, by new tokens or by the sessions it verified. A
//! token is never logged: errors carry reasons, not tokens.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation, decode, errors::ErrorKind};
use serde::Deserialize;
use tickmesh_core::nesting;
use tickmesh_core::revocation::Revoked;

use crate::config::{AuthConfig, TierConfig};
use crate::keys::{self, Key, Keys};

/// What a session may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The user, `None` for anonymous sessions.
    pub sub: Option<String>,
    pub jti: Option<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: Option<u64>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// The fingerprint of the key that verified the token, `None` for anonymous sessions:
    /// when a reload drops that key, the session is no longer trusted.
    pub key: Option<u64>,
    pub tier: String,
    /// Entitlement patterns (see [`Pattern`]).
    pub ent: Vec<String>,
    /// Patterns of symbols the user may see delayed only (claim `dly`, the grammar of
    /// `ent`): a symbol `ent` does not cover but `dly` does is served `delayed.delay_ms`
    /// late.
    pub dly: Vec<String>,
    /// The accounts whose events the user may read, by exact name (claim `acct`).
    pub acct: Vec<String>,
    /// The account of record that usage is reported under (claim `org`); the user when
    /// absent.
    pub org: Option<String>,
    /// What the data is for (claim `use`): `display` (default) or `non_display`.
    pub usage: tickmesh_core::usage::Use,
    pub min_interval_ms: u32,
    pub max_symbols: u32,
    pub max_msgs_per_s: u32,
}

/// Where an instrument belongs: the reference data that says which underlying an option
/// is written on. The edge's [`crate::refdata::RefData`] answers from `md_ref`.
pub trait Families {
    /// The underlying of `symbol` when it is a derivative listed in the reference data;
    /// `None` for an underlying itself or an instrument the reference data does not know.
    fn underlying(&self, symbol: &str) -> Option<String>;
}

/// One entitlement pattern of a token's `ent` claim, as the protocol defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// `*`: every symbol.
    All,
    /// `AAPL`: that symbol only.
    Exact(&'a str),
    /// `AAPL*`: AAPL and every instrument whose underlying is AAPL, by the reference
    /// data (its options, whatever their OCC root: `BRK-B*` grants the `BRKB...`
    /// options). Never another ticker that merely starts with the same letters.
    Family(&'a str),
    /// Anything else (`A*B`, `**`, lower case, a `.`): grants nothing.
    Invalid,
}

impl<'a> Pattern<'a> {
    pub fn parse(p: &'a str) -> Self {
        if p == "*" {
            return Pattern::All;
        }
        let (name, family) = match p.strip_suffix('*') {
            Some(name) => (name, true),
            None => (p, false),
        };
        if tickmesh_core::symbol::validate(name).is_err() {
            return Pattern::Invalid;
        }
        if family {
            Pattern::Family(name)
        } else {
            Pattern::Exact(name)
        }
    }

    /// Whether the pattern covers `symbol`, whose underlying (if a derivative) is
    /// `underlying`.
    fn covers(self, symbol: &str, underlying: Option<&str>) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(name) => name == symbol,
            Pattern::Family(name) => name == symbol || underlying == Some(name),
            Pattern::Invalid => false,
        }
    }
}

impl Grant {
    /// Whether the token names `account` in its `acct` claim (exact names only: a
    /// pattern there grants nothing).
    pub fn allows_account(&self, account: &str) -> bool {
        self.acct.iter().any(|a| a == account)
    }

    /// Whether the grant covers `symbol`. The reference data is asked for the symbol's
    /// underlying only when a family pattern needs it; a symbol it does not know is in
    /// no family but its own.
    pub fn allows(&self, symbol: &str, families: &impl Families) -> bool {
        covered(&self.ent, symbol, families)
    }

    /// How the grant covers `symbol`: in real time (`ent`), delayed only (`dly` and not
    /// `ent`), or not at all.
    pub fn coverage(&self, symbol: &str, families: &impl Families) -> Coverage {
        if covered(&self.ent, symbol, families) {
            Coverage::RealTime
        } else if covered(&self.dly, symbol, families) {
            Coverage::Delayed
        } else {
            Coverage::None
        }
    }
}

/// How a grant covers a symbol ([`Grant::coverage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    RealTime,
    Delayed,
    None,
}

/// Whether one of `patterns` covers `symbol`. The reference data is asked for the
/// symbol's underlying only when a family pattern needs it; a symbol it does not know is
/// in no family but its own.
fn covered(patterns: &[String], symbol: &str, families: &impl Families) -> bool {
    let mut underlying: Option<Option<String>> = None;
    patterns.iter().any(|p| match Pattern::parse(p) {
        Pattern::Family(name) if name != symbol => {
            let u = underlying.get_or_insert_with(|| families.underlying(symbol));
            Pattern::Family(name).covers(symbol, u.as_deref())
        }
        pattern => pattern.covers(symbol, None),
    })
}

/// Why a token was refused. `Display` is the reason sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// `iat` later than now (beyond the leeway): the lifetime check and revocations by user
    /// both count from `iat`, so a token may not claim to be issued in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` over `auth.max_token_lifetime_s`.
    #[error("token lifetime over {0} s")]
    Lifetime(u64),
    /// The token's `kid` names no configured key of its algorithm.
    #[error("unknown key id")]
    UnknownKey,
    #[error("unknown tier {0:?}")]
    UnknownTier(String),
    #[error("token revoked")]
    Revoked,
}

impl AuthError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm(_) => "algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Audience => "audience",
            AuthError::Issuer => "issuer",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::Lifetime(_) => "lifetime",
            AuthError::UnknownKey => "unknown_key",
            AuthError::UnknownTier(_) => "unknown_tier",
            AuthError::Revoked => "revoked",
        }
    }
}

/// `sub` and `exp` are options here only so that a token without them reaches the
/// library's required-claim check (`missing claim sub`) instead of failing to deserialize
/// (`malformed token`); a verified token always has both.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    ent: Vec<String>,
    #[serde(default)]
    dly: Vec<String>,
    #[serde(default)]
    acct: Vec<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default, rename = "use")]
    usage: tickmesh_core::usage::Use,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    max_symbols: Option<u32>,
}

/// Revoked users and token ids: from `ctl.revoke` (kept in memory only), and from the
/// bucket `ctl_revoked` (replaced whole on each replay).
#[derive(Debug, Default)]
struct Revocations {
    /// `sub` → revoked at (seconds): tokens issued at or before it are refused.
    subs: HashMap<String, u64>,
    /// `jti` → kept until (seconds).
    jtis: HashMap<String, u64>,
    /// What the bucket holds.
    stored: RevokedSet,
}

/// The revocations of the bucket `ctl_revoked` ([`tickmesh_core::revocation`]): `sub` and
/// `jti` → revoked at (seconds, the writer's clock). Entries leave with the bucket's TTL:
/// the edge holds what the bucket holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RevokedSet {
    subs: HashMap<String, u64>,
    jtis: HashMap<String, u64>,
}

impl RevokedSet {
    /// Records `what`, revoked at `at`.
    pub fn insert(&mut self, what: Revoked, at: u64) {
        match what {
            Revoked::Sub(sub) => self.subs.insert(sub, at),
            Revoked::Jti(jti) => self.jtis.insert(jti, at),
        };
    }

    /// Lifts the revocation of `what` (its key was deleted).
    pub fn remove(&mut self, what: &Revoked) {
        match what {
            Revoked::Sub(sub) => self.subs.remove(sub),
            Revoked::Jti(jti) => self.jtis.remove(jti),
        };
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.subs.len() + self.jtis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Verifier {
    config: AuthConfig,
    keys: RwLock<Keys>,
    revoked: Mutex<Revocations>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long a revocation of a user is kept: longer than any token lives.
const REVOCATION_TTL_S: u64 = 7 * 24 * 3600;

/// The `alg` and `kid` of a token's header, read without trusting anything else in it.
fn header(token: &str) -> Result<(String, Option<String>), AuthError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let bytes = segment(token, 0)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    Ok((header.alg, header.kid))
}

/// The JSON of a token's segment `i` (0 the header, 1 the claims). Refused when it nests
/// deeper than [`nesting::MAX_DEPTH`]: the JWT library parses both with serde, whose
/// recursion, not the 16 KiB head, is what bounds the stack it uses.
fn segment(token: &str, i: usize) -> Result<Vec<u8>, AuthError> {
    let part = token.split('.').nth(i).ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    nesting::check_json(&bytes).map_err(|_| AuthError::Malformed)?;
    Ok(bytes)
}

impl Verifier {
    /// Loads the configured keys; an unreadable or invalid key file is an error that names it.
    /// A JWKS file without a single usable key is an error too: at the start, that is a
    /// configuration to fix, not an edge that refuses every token.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let keys = keys::load(config)?;
        if let Some(path) = &config.jwks_file {
            anyhow::ensure!(
                keys.jwks_usable > 0,
                "{}: no usable key (RSA or Ed25519, for signatures)",
                path.display()
            );
        }
        metrics::gauge!("tickmesh_edge_jwks_keys_skipped").set(keys.jwks_skipped as f64);
        Ok(Verifier {
            keys: RwLock::new(keys),
            config: config.clone(),
            revoked: Mutex::new(Revocations::default()),
        })
    }

    /// Re-reads the key files if any changed. A file that cannot be read or parsed keeps
    /// the old keys; otherwise the new set replaces the old at once, so a key removed from
    /// a file is no longer trusted (see [`Verifier::is_grant_trusted`] for the sessions it
    /// verified).
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let changed = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .changed();
        if !changed {
            return Ok(false);
        }
        let fresh = keys::load(&self.config)?;
        metrics::gauge!("tickmesh_edge_jwks_keys_skipped").set(fresh.jwks_skipped as f64);
        if fresh.keys.is_empty() {
            tracing::error!("no usable key left after the reload: every token is refused");
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(true)
    }

    fn tier(&self, name: &str) -> Option<&TierConfig> {
        self.config.tiers.get(name)
    }

    /// The grant of a connection without a token, if anonymous access is on.
    pub fn anonymous(&self) -> Result<Grant, AuthError> {
        if !self.config.anonymous {
            return Err(AuthError::Missing);
        }
        let name = &self.config.anonymous_tier;
        let tier = self
            .tier(name)
            .ok_or_else(|| AuthError::UnknownTier(name.clone()))?;
        Ok(Grant {
            sub: None,
            jti: None,
            iat: None,
            exp: None,
            key: None,
            tier: name.clone(),
            ent: self.config.anonymous_ent.clone(),
            dly: self.config.anonymous_dly.clone(),
            acct: Vec::new(),
            org: None,
            usage: tickmesh_core::usage::Use::Display,
            min_interval_ms: tier.min_interval_ms,
            max_symbols: tier.max_symbols,
            max_msgs_per_s: tier.max_msgs_per_s,
        })
    }

    /// Verifies `token` and turns its claims into a grant.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let (alg, kid) = header(token)?;
        segment(token, 1)?;
        let algorithm = match alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(AuthError::Algorithm(other.chars().take(16).collect())),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.config.leeway_s;
        validation.validate_nbf = true;
        // `aud` and `iss` are checked only when present unless required: where one is
        // configured, a token without it is refused like one with the wrong value.
        let mut required = vec!["exp", "sub"];
        match &self.config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let candidates = candidates(&keys.keys, algorithm, kid.as_deref())?;
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return self.grant(data.claims, key.fingerprint),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::Audience,
                        ErrorKind::InvalidIssuer => AuthError::Issuer,
                        ErrorKind::InvalidAlgorithm => AuthError::Algorithm(alg.clone()),
                        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                            "aud" => AuthError::Audience,
                            "iss" => AuthError::Issuer,
                            _ => AuthError::MissingClaim(c.clone()),
                        },
                        _ => AuthError::Malformed,
                    };
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn grant(&self, claims: Claims, key: u64) -> Result<Grant, AuthError> {
        // Both required above; checked again rather than trusted to the library.
        let sub = claims
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let exp = claims
            .exp
            .ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
        self.check_lifetime(claims.iat, exp)?;
        if self.is_revoked(&sub, claims.jti.as_deref(), claims.iat) {
            return Err(AuthError::Revoked);
        }
        let name = claims
            .tier
            .unwrap_or_else(|| self.config.default_tier.clone());
        let tier = self
            .tier(&name)
            .ok_or_else(|| AuthError::UnknownTier(name.chars().take(32).collect()))?;
        Ok(Grant {
            sub: Some(sub),
            jti: claims.jti,
            iat: claims.iat,
            exp: Some(exp),
            key: Some(key),
            min_interval_ms: tier.min_interval_ms,
            max_symbols: claims
                .max_symbols
                .map_or(tier.max_symbols, |m| m.min(tier.max_symbols)),
            max_msgs_per_s: tier.max_msgs_per_s,
            tier: name,
            ent: claims.ent,
            dly: claims.dly,
            acct: claims.acct,
            org: claims.org,
            usage: claims.usage,
        })
    }

    /// An `iat` in the future (beyond `leeway_s`) is refused whether or not a lifetime is
    /// set: with it a token could outlive the maximum lifetime (`exp - iat` looks short)
    /// and escape a revocation of its user (which covers tokens issued before it).
    fn check_lifetime(&self, iat: Option<u64>, exp: u64) -> Result<(), AuthError> {
        if iat.is_some_and(|iat| iat > now_s().saturating_add(self.config.leeway_s)) {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(max) = self.config.max_token_lifetime_s {
            let iat = iat.ok_or_else(|| AuthError::MissingClaim("iat".into()))?;
            if exp.saturating_sub(iat) > max {
                return Err(AuthError::Lifetime(max));
            }
        }
        Ok(())
    }

    /// Whether the key that verified the grant is still configured; anonymous grants
    /// always are. A session whose key was dropped by a reload is no longer trusted.
    pub fn is_grant_trusted(&self, grant: &Grant) -> bool {
        grant.key.is_none_or(|fingerprint| {
            self.keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .trusts(fingerprint)
        })
    }

    /// Records a revocation of a user (every token issued until `at`, default now) or of a
    /// token id, from `ctl.revoke`: in memory only.
    pub fn revoke(&self, sub: Option<&str>, jti: Option<&str>, at: Option<u64>) {
        let now = now_s();
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        r.subs.retain(|_, at| *at + REVOCATION_TTL_S > now);
        r.jtis.retain(|_, until| *until > now);
        if let Some(sub) = sub {
            r.subs.insert(sub.to_string(), at.unwrap_or(now));
        }
        if let Some(jti) = jti {
            r.jtis.insert(jti.to_string(), now + REVOCATION_TTL_S);
        }
    }

    /// Replaces the bucket's revocations with a fresh replay of it; true if they changed.
    pub fn replace_stored(&self, set: RevokedSet) -> bool {
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let changed = r.stored != set;
        r.stored = set;
        changed
    }

    /// Applies a change of the bucket; returns how many entries it now holds.
    pub fn update_stored(&self, f: impl FnOnce(&mut RevokedSet)) -> usize {
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r.stored);
        r.stored.len()
    }

    /// Whether a revocation since covers this grant.
    pub fn is_grant_revoked(&self, grant: &Grant) -> bool {
        grant
            .sub
            .as_deref()
            .is_some_and(|sub| self.is_revoked(sub, grant.jti.as_deref(), grant.iat))
    }

    fn is_revoked(&self, sub: &str, jti: Option<&str>, iat: Option<u64>) -> bool {
        let r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        // A token without `iat` cannot show it was issued after: it is covered.
        let covers = |at: &u64| iat.is_none_or(|iat| iat <= *at);
        let by_sub =
            r.subs.get(sub).is_some_and(covers) || r.stored.subs.get(sub).is_some_and(covers);
        let by_jti = jti.is_some_and(|j| r.jtis.contains_key(j) || r.stored.jtis.contains_key(j));
        by_sub || by_jti
    }
}

/// The keys to try for a token of `alg`: with a `kid` that a configured key carries, that
/// key only; with another `kid`, the keys without one (the secret, PEM files); without a
/// `kid`, every key of the algorithm.
fn candidates<'k>(
    keys: &'k [Key],
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<&'k Key>, AuthError> {
    let of_alg = || keys.iter().filter(move |k| k.alg == alg);
    let name = || format!("{alg:?}");
    if of_alg().next().is_none() {
        return Err(AuthError::Algorithm(name()));
    }
    let Some(kid) = kid else {
        return Ok(of_alg().collect());
    };
    if keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
        let named: Vec<&Key> = of_alg().filter(|k| k.kid.as_deref() == Some(kid)).collect();
        return if named.is_empty() {
            // The key named is for another algorithm.
            Err(AuthError::Algorithm(name()))
        } else {
            Ok(named)
        };
    }
    let unnamed: Vec<&Key> = of_alg().filter(|k| k.kid.is_none()).collect();
    if unnamed.is_empty() {
        Err(AuthError::UnknownKey)
    } else {
        Ok(unnamed)
    }
}

/// What the edge's unit tests sign their tokens with.
#[cfg(test)]
pub(crate) mod test_keys {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    use super::{Verifier, now_s};
    use crate::config::AuthConfig;

    pub const SECRET: &str = "a-secret-for-these-tests-32-bytes-long";

    /// A verifier that trusts [`SECRET`].
    pub fn verifier() -> Verifier {
        Verifier::new(&AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    /// A grant of user `u` with `ent`, as a `pro` token with `max_symbols` would give.
    pub fn grant(ent: &[&str], max_symbols: u32) -> super::Grant {
        super::Grant {
            sub: Some("u".into()),
            jti: None,
            iat: None,
            exp: None,
            key: None,
            tier: "pro".into(),
            ent: ent.iter().map(|s| s.to_string()).collect(),
            dly: Vec::new(),
            acct: Vec::new(),
            org: None,
            usage: tickmesh_core::usage::Use::Display,
            min_interval_ms: 0,
            max_symbols,
            max_msgs_per_s: 10,
        }
    }

    /// A token of `sub` issued at `iat`, valid for ten minutes from now.
    pub fn token(sub: &str, iat: u64) -> String {
        let claims = serde_json::json!({"sub": sub, "iat": iat, "exp": now_s() + 600});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::path::Path;

    const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

    fn verifier(f: impl FnOnce(&mut AuthConfig)) -> Verifier {
        let mut c = AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        };
        f(&mut c);
        Verifier::new(&c).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// Options of AAPL, T and BRK-B (OCC root BRKB); TSLA and BAC have none.
    struct Refs(HashMap<&'static str, &'static str>);

    impl Families for Refs {
        fn underlying(&self, symbol: &str) -> Option<String> {
            self.0.get(symbol).map(|u| u.to_string())
        }
    }

    fn refs() -> Refs {
        Refs(HashMap::from([
            ("AAPL261218C00150000", "AAPL"),
            ("T261218P00022500", "T"),
            ("BRKB261218C00460000", "BRK-B"),
        ]))
    }

    fn grant(ent: &[&str]) -> Grant {
        test_keys::grant(ent, 10)
    }

    #[test]
    fn a_family_pattern_is_the_underlying_and_its_derivatives_only() {
        let refs = refs();
        let allowed = |ent: &[&str], symbol: &str| grant(ent).allows(symbol, &refs);
        assert!(allowed(&["T*"], "T") && allowed(&["T*"], "T261218P00022500"));
        for other in ["TSLA", "TXN", "TLT", "AAPL261218C00150000"] {
            assert!(!allowed(&["T*"], other), "T* granted {other}");
        }
        for (pattern, other) in [
            ("V*", "VZ"),
            ("V*", "VIX"),
            ("BA*", "BAC"),
            ("GOOG*", "GOOGL"),
        ] {
            assert!(!allowed(&[pattern], other), "{pattern} granted {other}");
        }
        // The OCC root of BRK-B's options is BRKB: the family follows the reference data.
        assert!(allowed(&["BRK-B*"], "BRKB261218C00460000"));
        assert!(!allowed(&["BRK*"], "BRK-B") && !allowed(&["BRK*"], "BRKB261218C00460000"));
        // An option the reference data does not know is in no family.
        assert!(!allowed(&["AAPL*"], "AAPL270115C00150000"));
        assert!(allowed(&["*"], "ANYTHING") && allowed(&["AAPL"], "AAPL"));
        for bad in ["A*B", "**", "aapl*", "AAPL.*", "", "*AAPL"] {
            assert!(!allowed(&[bad], "AAPL"), "{bad:?} granted AAPL");
        }
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": now_s() + 600, "iat": now_s(), "ent": ["AAPL*", "SPY"], "tier": "delayed"})
    }

    #[test]
    fn a_good_token_gives_its_tier_and_entitlements() {
        let g = verifier(|_| {}).verify(&token(claims())).unwrap();
        assert_eq!(g.sub.as_deref(), Some("alice"));
        assert_eq!((g.min_interval_ms, g.max_symbols), (1000, 50));
        let refs = refs();
        assert!(g.allows("AAPL", &refs) && g.allows("AAPL261218C00150000", &refs));
        assert!(g.allows("SPY", &refs));
        assert!(!g.allows("SPYX", &refs) && !g.allows("MSFT", &refs));
    }

    #[test]
    fn org_and_use_say_how_usage_is_reported_and_a_bad_use_is_malformed() {
        use tickmesh_core::usage::Use;
        let v = verifier(|_| {});
        let g = v.verify(&token(claims())).unwrap();
        assert_eq!((g.org, g.usage), (None, Use::Display));
        let mut c = claims();
        c["org"] = json!("ACME");
        c["use"] = json!("non_display");
        let g = v.verify(&token(c.clone())).unwrap();
        assert_eq!((g.org.as_deref(), g.usage), (Some("ACME"), Use::NonDisplay));
        c["use"] = json!("sometimes");
        assert_eq!(v.verify(&token(c)), Err(AuthError::Malformed));
    }

    #[test]
    fn max_symbols_claim_only_lowers() {
        let v = verifier(|_| {});
        let mut c = claims();
        c["max_symbols"] = json!(10);
        assert_eq!(v.verify(&token(c.clone())).unwrap().max_symbols, 10);
        c["max_symbols"] = json!(10_000);
        assert_eq!(v.verify(&token(c)).unwrap().max_symbols, 50);
    }

    #[test]
    fn refusals() {
        let v = verifier(|c| {
            c.audience = Some("tickmesh".into());
            c.issuer = Some("https://auth.example".into());
            c.leeway_s = 0;
        });
        let good = || {
            let mut c = claims();
            c["aud"] = json!("tickmesh");
            c["iss"] = json!("https://auth.example");
            c
        };
        v.verify(&token(good())).unwrap();
        let mut c = good();
        c["exp"] = json!(now_s() - 10);
        assert_eq!(v.verify(&token(c)), Err(AuthError::Expired));
        let mut c = good();
        c["nbf"] = json!(now_s() + 600);
        assert_eq!(v.verify(&token(c)), Err(AuthError::NotYetValid));
        let mut c = good();
        c["aud"] = json!("other");
        assert_eq!(v.verify(&token(c)), Err(AuthError::Audience));
        let mut c = good();
        c["iss"] = json!("https://evil.example");
        assert_eq!(v.verify(&token(c)), Err(AuthError::Issuer));
        let mut c = good();
        c["tier"] = json!("platinum");
        assert!(matches!(
            v.verify(&token(c)),
            Err(AuthError::UnknownTier(_))
        ));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long"),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        assert_eq!(v.verify("not.a.token"), Err(AuthError::Malformed));
        // Nesting past the bound, in the header or in the (signed) claims.
        let inner = nesting::MAX_DEPTH - 1; // inside the claims object
        let deep =
            serde_json::from_str::<serde_json::Value>(&("[".repeat(inner) + &"]".repeat(inner)))
                .unwrap();
        let mut c = good();
        c["x"] = json!([deep.clone()]);
        assert_eq!(v.verify(&token(c)), Err(AuthError::Malformed));
        let mut c = good();
        c["x"] = deep.clone();
        v.verify(&token(c)).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.cty = Some("[".repeat(10_000));
        let quoted = encode(
            &header,
            &good(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        );
        v.verify(&quoted.unwrap()).unwrap();
        assert_eq!(v.verify(""), Err(AuthError::Malformed));
        // alg none: header {"alg":"none"}, no signature.
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg":"none","typ":"JWT"})),
            b64(good())
        );
        assert_eq!(v.verify(&none), Err(AuthError::Algorithm("none".into())));
        // RS256 header with no RSA key configured: refused as an algorithm, never tried as HMAC.
        let rs = format!("{}.{}.sig", b64(json!({"alg":"RS256"})), b64(good()));
        assert_eq!(v.verify(&rs), Err(AuthError::Algorithm("RS256".into())));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs384), Err(AuthError::Algorithm("HS384".into())));
    }

    #[test]
    fn missing_claims_are_named() {
        let v = verifier(|c| {
            c.audience = Some("tickmesh".into());
            c.issuer = Some("https://auth.example".into());
        });
        let good = || {
            let mut c = claims();
            c["aud"] = json!("tickmesh");
            c["iss"] = json!("https://auth.example");
            c
        };
        let without = |k: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(k);
            token(c)
        };
        v.verify(&token(good())).unwrap();
        assert_eq!(
            v.verify(&without("sub")),
            Err(AuthError::MissingClaim("sub".into()))
        );
        assert_eq!(
            v.verify(&without("exp")),
            Err(AuthError::MissingClaim("exp".into()))
        );
        assert_eq!(
            v.verify(&without("sub")).unwrap_err().to_string(),
            "missing claim sub"
        );
        // Configured audience and issuer: a token without them is refused like a wrong one.
        assert_eq!(v.verify(&without("aud")), Err(AuthError::Audience));
        assert_eq!(v.verify(&without("iss")), Err(AuthError::Issuer));
        // Not configured: neither is required.
        let open = verifier(|_| {});
        open.verify(&token(claims())).unwrap();
    }

    #[test]
    fn token_lifetime_is_bounded_from_iat() {
        let v = verifier(|c| {
            c.max_token_lifetime_s = Some(3600);
            c.leeway_s = 5;
        });
        let now = now_s();
        let with = |iat: Option<u64>, exp: u64| {
            let mut c = claims();
            c["exp"] = json!(exp);
            match iat {
                Some(iat) => c["iat"] = json!(iat),
                None => {
                    c.as_object_mut().unwrap().remove("iat");
                }
            }
            token(c)
        };
        v.verify(&with(Some(now), now + 3600)).unwrap();
        assert_eq!(
            v.verify(&with(Some(now), now + 3601)),
            Err(AuthError::Lifetime(3600))
        );
        assert_eq!(
            v.verify(&with(Some(now), now + 3601))
                .unwrap_err()
                .to_string(),
            "token lifetime over 3600 s"
        );
        assert_eq!(
            v.verify(&with(Some(now), 10_000_000_000_000_000_000)),
            Err(AuthError::Lifetime(3600))
        );
        assert_eq!(
            v.verify(&with(None, now + 60)),
            Err(AuthError::MissingClaim("iat".into()))
        );
        // A future iat would make a long-lived token look short (and dodge a revocation of
        // its user): refused beyond the leeway, with or without a lifetime.
        assert_eq!(
            v.verify(&with(Some(now + 86_400 * 365), now + 86_400 * 365 + 60)),
            Err(AuthError::IssuedInFuture)
        );
        v.verify(&with(Some(now + 3), now + 60)).unwrap();
        let open = verifier(|c| c.leeway_s = 5);
        assert_eq!(
            open.verify(&with(Some(now + 600), now + 900)),
            Err(AuthError::IssuedInFuture)
        );
        // No lifetime configured: iat stays optional and exp may be far off.
        open.verify(&with(None, 10_000_000_000_000_000_000))
            .unwrap();
    }

    #[test]
    fn revocation_by_user_and_by_token_id() {
        let v = verifier(|_| {});
        let mut c = claims();
        c["jti"] = json!("t-1");
        c["iat"] = json!(now_s() - 5);
        v.verify(&token(c.clone())).unwrap();
        v.revoke(None, Some("t-1"), None);
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        c["jti"] = json!("t-2");
        v.verify(&token(c.clone())).unwrap();
        v.revoke(Some("alice"), None, None);
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        // A token issued after the revocation works again.
        c["iat"] = json!(now_s() + 2);
        v.verify(&token(c)).unwrap();
    }

    #[test]
    fn stored_revocations_go_by_the_tokens_iat_and_are_replaced_whole() {
        let v = verifier(|_| {});
        let at = now_s() - 100;
        let mut set = RevokedSet::default();
        set.insert(Revoked::Sub("alice".into()), at);
        set.insert(Revoked::Jti("t-9".into()), at);
        v.replace_stored(set);
        // Issued at or before `at`: refused; after it (by the token's own iat): accepted,
        // however late the edge heard of the revocation.
        let mut c = claims();
        c["iat"] = json!(at);
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        c["iat"] = json!(at + 1);
        v.verify(&token(c.clone())).unwrap();
        c["sub"] = json!("bob");
        c["jti"] = json!("t-9");
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        // A deleted key lifts its revocation; a fresh replay replaces everything.
        assert_eq!(
            v.update_stored(|s| s.remove(&Revoked::Jti("t-9".into()))),
            1
        );
        v.verify(&token(c.clone())).unwrap();
        v.replace_stored(RevokedSet::default());
        c["sub"] = json!("alice");
        c["iat"] = json!(at);
        v.verify(&token(c)).unwrap();
    }

    #[test]
    fn anonymous_access_is_a_tier_or_off() {
        let on = verifier(|c| {
            c.anonymous = true;
            c.anonymous_ent = vec!["SPY".into()];
        });
        let grant = on.anonymous().unwrap();
        assert_eq!(
            (grant.tier.as_str(), grant.ent.as_slice()),
            ("anonymous", &["SPY".to_string()][..])
        );
        // Off by default.
        assert_eq!(verifier(|_| {}).anonymous(), Err(AuthError::Missing));
    }

    #[test]
    fn an_ed25519_pem_key_verifies_until_its_file_is_rotated() {
        use rcgen::{KeyPair, PKCS_ED25519};
        let dir = tempfile::tempdir().unwrap();
        let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let pub_path = dir.path().join("ed.pem");
        std::fs::write(&pub_path, kp.public_key_pem()).unwrap();
        let v = verifier(|c| c.ed25519_public_keys = vec![pub_path.clone()]);
        let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
        let t = encode(&Header::new(Algorithm::EdDSA), &claims(), &enc).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub.as_deref(), Some("alice"));
        // Rotate the key file: the old token stops verifying after a reload.
        let other = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&pub_path, other.public_key_pem()).unwrap();
        let when = SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&pub_path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        assert!(v.reload_if_changed().unwrap());
        assert_eq!(v.verify(&t), Err(AuthError::BadSignature));
    }

    /// An Ed25519 key pair: its JWKS entry under `kid`, and its signing key.
    fn ed_jwk(kid: &str) -> (serde_json::Value, EncodingKey) {
        use rcgen::{KeyPair, PKCS_ED25519};
        let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"});
        let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
        (jwk, enc)
    }

    fn signed(enc: &EncodingKey, kid: Option<&str>) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_owned);
        encode(&h, &claims(), enc).unwrap()
    }

    /// Entries a JWKS may carry that the edge cannot use.
    fn unusable_jwks_entries() -> Vec<serde_json::Value> {
        use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = ec.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        vec![
            // ES256: not an accepted algorithm.
            json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]), "kid": "ec"}),
            // An RSA entry without its modulus.
            json!({"kty": "RSA", "e": "AQAB", "kid": "broken"}),
            // A shared secret in a JWKS.
            json!({"kty": "oct", "k": b64(b"0123456789abcdef0123456789abcdef"), "kid": "oct"}),
            // An encryption key.
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[7; 32]), "use": "enc", "kid": "enc"}),
        ]
    }

    fn write_jwks(path: &Path, keys: &[serde_json::Value], modified: SystemTime) {
        std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    #[test]
    fn the_kid_picks_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (a, enc_a) = ed_jwk("a");
        let (b, enc_b) = ed_jwk("b");
        write_jwks(&path, &[a, b], SystemTime::now());
        let v = verifier(|c| c.jwks_file = Some(path.clone()));
        v.verify(&signed(&enc_a, Some("a"))).unwrap();
        v.verify(&signed(&enc_b, Some("b"))).unwrap();
        // Without a kid every key of the algorithm is tried.
        v.verify(&signed(&enc_b, None)).unwrap();
        // With one, only the key it names: b's signature under a's name is not tried on b.
        assert_eq!(
            v.verify(&signed(&enc_b, Some("a"))),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&signed(&enc_b, Some("nope"))),
            Err(AuthError::UnknownKey)
        );
        // A kid no key carries falls back to the keys without one: here the HS256 secret.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("idp-1".into());
        let t = encode(&h, &claims(), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub.as_deref(), Some("alice"));
    }

    #[test]
    fn unusable_jwks_entries_are_skipped_and_removed_keys_dropped_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (a, enc_a) = ed_jwk("a");
        let (b, enc_b) = ed_jwk("b");
        let mut first = unusable_jwks_entries();
        first.extend([a.clone(), b]);
        write_jwks(&path, &first, SystemTime::now());
        let v = verifier(|c| c.jwks_file = Some(path.clone()));
        assert_eq!(v.keys.read().unwrap().jwks_skipped, 4);
        let grant_a = v.verify(&signed(&enc_a, Some("a"))).unwrap();
        let grant_b = v.verify(&signed(&enc_b, None)).unwrap();
        assert!(v.is_grant_trusted(&grant_a) && v.is_grant_trusted(&grant_b));
        // The same file without b (and with another odd entry): b is refused at once, and
        // the sessions it verified are no longer trusted; a carries on.
        let mut second = unusable_jwks_entries();
        second.push(a);
        write_jwks(
            &path,
            &second,
            SystemTime::now() + std::time::Duration::from_secs(2),
        );
        assert!(v.reload_if_changed().unwrap());
        assert_eq!(
            v.verify(&signed(&enc_b, Some("b"))),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            v.verify(&signed(&enc_b, None)),
            Err(AuthError::BadSignature)
        );
        assert!(!v.is_grant_trusted(&grant_b));
        assert!(v.is_grant_trusted(&grant_a));
        v.verify(&signed(&enc_a, Some("a"))).unwrap();
        // Anonymous grants verified by no key stay trusted.
        let open = verifier(|c| {
            c.anonymous = true;
            c.anonymous_ent = vec!["AAPL".into()];
        });
        assert!(v.is_grant_trusted(&open.anonymous().unwrap()));
        // A JWKS with nothing usable is refused at the start.
        let empty = dir.path().join("empty.json");
        write_jwks(&empty, &unusable_jwks_entries(), SystemTime::now());
        let c = AuthConfig {
            jwks_file: Some(empty),
            ..AuthConfig::default()
        };
        let e = format!("{:#}", Verifier::new(&c).unwrap_err());
        assert!(e.contains("no usable key"), "{e}");
    }

    /// Writes `bytes` to `path`, stamped `modified`, so that a rewrite is noticed however
    /// coarse the file system's clock.
    fn write_stamped(path: &Path, bytes: &[u8], modified: SystemTime) {
        std::fs::write(path, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    fn later(s: u64) -> SystemTime {
        SystemTime::now() + std::time::Duration::from_secs(s)
    }

    /// An RSA key pair, generated now: its public key as a PEM file's text, its JWKS entry
    /// under `kid`, and its signing key.
    fn rsa_key(kid: &str) -> (String, serde_json::Value, EncodingKey) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = private.to_public_key();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "RSA", "n": b64(&public.n().to_bytes_be()),
            "e": b64(&public.e().to_bytes_be()), "kid": kid, "alg": "RS256", "use": "sig"});
        let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
        let private_pem = private.to_pkcs1_pem(LineEnding::LF).unwrap();
        let enc = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
        (pem, jwk, enc)
    }

    fn rs256(enc: &EncodingKey, kid: Option<&str>) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(str::to_owned);
        encode(&h, &claims(), enc).unwrap()
    }

    #[test]
    fn rs256_tokens_verify_with_pem_files_and_jwks_until_their_key_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (pem_a, _, enc_a) = rsa_key("a");
        let (pem_b, jwk_b, enc_b) = rsa_key("b");
        let pem = dir.path().join("rsa.pem");
        let jwks = dir.path().join("jwks.json");
        write_stamped(&pem, pem_a.as_bytes(), SystemTime::now());
        write_jwks(&jwks, std::slice::from_ref(&jwk_b), SystemTime::now());
        let v = verifier(|c| {
            c.rsa_public_keys = vec![pem.clone()];
            c.jwks_file = Some(jwks.clone());
        });
        // A from the PEM file, B from the JWKS (by its kid, or tried without one).
        let grant_a = v.verify(&rs256(&enc_a, None)).unwrap();
        let grant_b = v.verify(&rs256(&enc_b, Some("b"))).unwrap();
        assert_eq!(grant_a.sub.as_deref(), Some("alice"));
        v.verify(&rs256(&enc_b, None)).unwrap();
        // A key of neither is refused.
        let (_, _, enc_c) = rsa_key("c");
        assert_eq!(v.verify(&rs256(&enc_c, None)), Err(AuthError::BadSignature));
        // B leaves the JWKS: its tokens are refused (its kid now falls back to the PEM
        // key, which did not sign them) and the sessions it verified are no longer trusted.
        write_jwks(&jwks, &[], later(2));
        assert!(v.reload_if_changed().unwrap());
        assert_eq!(
            v.verify(&rs256(&enc_b, Some("b"))),
            Err(AuthError::BadSignature)
        );
        assert!(!v.is_grant_trusted(&grant_b) && v.is_grant_trusted(&grant_a));
        // The PEM file now holds B instead of A: A's tokens and sessions are done, B's
        // tokens verify again, through the file.
        write_stamped(&pem, pem_b.as_bytes(), later(4));
        assert!(v.reload_if_changed().unwrap());
        assert_eq!(v.verify(&rs256(&enc_a, None)), Err(AuthError::BadSignature));
        assert!(!v.is_grant_trusted(&grant_a));
        v.verify(&rs256(&enc_b, Some("b"))).unwrap();
    }

    #[test]
    fn a_jwks_entry_whose_alg_does_not_match_its_key_type_is_skipped_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (mut ed_as_rs, enc_ed) = ed_jwk("ed-as-rs");
        ed_as_rs["alg"] = json!("RS256");
        // An RSA entry that says EdDSA (the check comes before the modulus is looked at).
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let rsa_as_ed = json!({"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB",
            "kid": "rsa-as-ed", "alg": "EdDSA"});
        let (good, enc_good) = ed_jwk("good");
        write_jwks(&path, &[ed_as_rs, rsa_as_ed, good], SystemTime::now());
        let logs = crate::testlog::Logs::default();
        let v = logs.capture(|| verifier(|c| c.jwks_file = Some(path.clone())));
        let keys = v.keys.read().unwrap();
        assert_eq!((keys.jwks_usable, keys.jwks_skipped), (1, 2));
        drop(keys);
        // The skipped key verifies nothing, by its kid or without one; the other one does.
        assert_eq!(
            v.verify(&signed(&enc_ed, Some("ed-as-rs"))),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            v.verify(&signed(&enc_ed, None)),
            Err(AuthError::BadSignature)
        );
        v.verify(&signed(&enc_good, Some("good"))).unwrap();
        let text = logs.text();
        for kid in ["ed-as-rs", "rsa-as-ed"] {
            let line = text
                .lines()
                .find(|l| l.contains("JWKS key skipped") && l.contains(&format!("kid={kid}")))
                .unwrap_or_else(|| panic!("no warning for {kid} in:\n{text}"));
            assert!(
                line.contains("WARN")
                    && line.contains(&path.display().to_string())
                    && line.contains("`alg` does not match the key type"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_key_file_that_cannot_be_read_or_parsed_keeps_the_old_keys() {
        use rcgen::{KeyPair, PKCS_ED25519};
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ed.pem");
        let jwks = dir.path().join("jwks.json");
        let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        write_stamped(&pem, kp.public_key_pem().as_bytes(), SystemTime::now());
        let (j, enc_j) = ed_jwk("j");
        write_jwks(&jwks, std::slice::from_ref(&j), SystemTime::now());
        let v = verifier(|c| {
            c.ed25519_public_keys = vec![pem.clone()];
            c.jwks_file = Some(jwks.clone());
        });
        let enc_pem = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
        let from_pem = signed(&enc_pem, None);
        let from_jwks = signed(&enc_j, Some("j"));
        let grants = [v.verify(&from_pem).unwrap(), v.verify(&from_jwks).unwrap()];
        let still_trusted = |what: &str| {
            assert_eq!(v.verify(&from_pem).unwrap().sub.as_deref(), Some("alice"));
            assert_eq!(v.verify(&from_jwks).unwrap().sub.as_deref(), Some("alice"));
            assert!(grants.iter().all(|g| v.is_grant_trusted(g)), "{what}");
        };
        let breakages: [(&str, &Path, Option<&[u8]>); 4] = [
            (
                "a PEM file that is no key",
                &pem,
                Some(b"-----BEGIN PUBLIC KEY-----\nnope\n"),
            ),
            ("a JWKS file that is no JSON", &jwks, Some(b"{\"keys\": [")),
            ("a JWKS file without its keys", &jwks, Some(b"{}")),
            ("a PEM file removed", &pem, None),
        ];
        for (i, (what, path, bytes)) in breakages.into_iter().enumerate() {
            let stamp = later(2 * i as u64 + 2);
            match bytes {
                Some(bytes) => write_stamped(path, bytes, stamp),
                None => std::fs::remove_file(path).unwrap(),
            }
            let e = format!("{:#}", v.reload_if_changed().unwrap_err());
            assert!(e.contains(&path.display().to_string()), "{what}: {e}");
            still_trusted(what);
            // Mended, the file is read again.
            if path == pem.as_path() {
                write_stamped(
                    &pem,
                    kp.public_key_pem().as_bytes(),
                    later(2 * i as u64 + 3),
                );
            } else {
                write_jwks(&jwks, std::slice::from_ref(&j), later(2 * i as u64 + 3));
            }
            assert!(v.reload_if_changed().unwrap(), "{what}");
            still_trusted(what);
        }
    }

    #[test]
    fn leeway_covers_exp_and_nbf_by_that_many_seconds_and_no_more() {
        let v = verifier(|c| c.leeway_s = 30);
        let now = now_s();
        let with = |k: &str, t: u64| {
            let mut c = claims();
            c[k] = json!(t);
            token(c)
        };
        v.verify(&with("exp", now - 10)).unwrap();
        assert_eq!(v.verify(&with("exp", now - 60)), Err(AuthError::Expired));
        v.verify(&with("nbf", now + 10)).unwrap();
        assert_eq!(
            v.verify(&with("nbf", now + 60)),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn a_token_without_tier_gets_the_default_tier() {
        let v = verifier(|c| c.default_tier = "delayed".into());
        let mut c = claims();
        c.as_object_mut().unwrap().remove("tier");
        let g = v.verify(&token(c)).unwrap();
        assert_eq!(
            (
                g.tier.as_str(),
                g.min_interval_ms,
                g.max_symbols,
                g.max_msgs_per_s
            ),
            ("delayed", 1000, 50, 10)
        );
    }

    #[test]
    fn a_revocation_of_a_user_covers_their_tokens_without_iat() {
        let mut no_iat = claims();
        no_iat.as_object_mut().unwrap().remove("iat");
        let mut after = claims();
        after["iat"] = json!(now_s());
        let at = now_s() - 3600;
        // From ctl.revoke, and from the bucket.
        let by_message = verifier(|_| {});
        by_message.revoke(Some("alice"), None, Some(at));
        let by_bucket = verifier(|_| {});
        let mut set = RevokedSet::default();
        set.insert(Revoked::Sub("alice".into()), at);
        by_bucket.replace_stored(set);
        for v in [by_message, by_bucket] {
            assert_eq!(v.verify(&token(no_iat.clone())), Err(AuthError::Revoked));
            let session = Grant {
                iat: None,
                ..v.verify(&token(after.clone())).unwrap()
            };
            assert!(v.is_grant_revoked(&session));
            // Issued after `at`: not covered.
            v.verify(&token(after.clone())).unwrap();
        }
    }

    /// Every refusal counts under its own label of `tickmesh_edge_auth_failures_total`.
    #[test]
    fn each_refusal_has_its_metric_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (ed, enc_ed) = ed_jwk("ed");
        write_jwks(&path, &[ed], SystemTime::now());
        let v = verifier(|c| {
            c.audience = Some("tickmesh".into());
            c.issuer = Some("https://auth.example".into());
            c.max_token_lifetime_s = Some(3600);
            c.leeway_s = 0;
            c.jwks_file = Some(path.clone());
        });
        let good = || {
            let mut c = claims();
            c["aud"] = json!("tickmesh");
            c["iss"] = json!("https://auth.example");
            c["jti"] = json!("t-1");
            c
        };
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good();
            c[k] = val;
            token(c)
        };
        let without = |k: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(k);
            token(c)
        };
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let now = now_s();
        let mut unknown_kid = Header::new(Algorithm::EdDSA);
        unknown_kid.kid = Some("nope".into());
        let cases = [
            ("garbage".to_string(), "malformed"),
            (
                format!("{}.{}.", b64(json!({"alg": "none"})), b64(good())),
                "algorithm",
            ),
            (
                encode(
                    &Header::new(Algorithm::HS256),
                    &good(),
                    &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long"),
                )
                .unwrap(),
                "bad_signature",
            ),
            (with("exp", json!(now - 10)), "expired"),
            (with("nbf", json!(now + 600)), "not_yet_valid"),
            (with("aud", json!("other")), "audience"),
            (without("aud"), "audience"),
            (with("iss", json!("https://evil.example")), "issuer"),
            (without("iss"), "issuer"),
            (without("sub"), "missing_claim"),
            (without("exp"), "missing_claim"),
            (without("iat"), "missing_claim"),
            (with("exp", json!(now + 7200)), "lifetime"),
            (with("iat", json!(now + 600)), "issued_in_future"),
            (
                encode(&unknown_kid, &good(), &enc_ed).unwrap(),
                "unknown_key",
            ),
            (with("tier", json!("platinum")), "unknown_tier"),
        ];
        v.verify(&token(good())).unwrap();
        for (token, label) in &cases {
            let e = v.verify(token).unwrap_err();
            assert_eq!(e.label(), *label, "{e}");
        }
        v.revoke(None, Some("t-1"), None);
        assert_eq!(v.verify(&token(good())).unwrap_err().label(), "revoked");
        assert_eq!(v.anonymous().unwrap_err().label(), "missing");
    }
}
