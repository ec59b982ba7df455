//! Authentication and entitlements: JWT verification at the upgrade (and for in-band
//! `auth`), the tier table, revocations, and the [`Grant`] a session works under.
//!
//! Accepted: HS256 with a shared secret, RS256 and EdDSA with public keys from PEM files or
//! a JWKS file. `none` and any other algorithm are refused. Key files are re-read when they
//! change. A token is never logged: errors carry reasons, not tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use serde::Deserialize;
use tickmesh_core::nesting;

use crate::config::{AuthConfig, TierConfig};

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
    pub tier: String,
    /// Entitlement patterns (see [`Pattern`]).
    pub ent: Vec<String>,
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
    /// Whether the grant covers `symbol`. The reference data is asked for the symbol's
    /// underlying only when a family pattern needs it; a symbol it does not know is in
    /// no family but its own.
    pub fn allows(&self, symbol: &str, families: &impl Families) -> bool {
        let mut underlying: Option<Option<String>> = None;
        self.ent.iter().any(|p| match Pattern::parse(p) {
            Pattern::Family(name) if name != symbol => {
                let u = underlying.get_or_insert_with(|| families.underlying(symbol));
                Pattern::Family(name).covers(symbol, u.as_deref())
            }
            pattern => pattern.covers(symbol, None),
        })
    }
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
            AuthError::UnknownTier(_) => "unknown_tier",
            AuthError::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    ent: Vec<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    max_symbols: Option<u32>,
}

#[derive(Default)]
struct Keys {
    hs256: Option<DecodingKey>,
    rsa: Vec<DecodingKey>,
    ed: Vec<DecodingKey>,
    /// From the JWKS file: (kid, key, algorithm family is RSA).
    jwks: Vec<(Option<String>, DecodingKey, bool)>,
    /// Files read and their modification times, to notice changes.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

/// Revoked users and token ids, from `ctl.revoke`.
#[derive(Debug, Default)]
struct Revocations {
    /// `sub` → revoked at (seconds): tokens issued at or before it are refused.
    subs: HashMap<String, u64>,
    /// `jti` → kept until (seconds).
    jtis: HashMap<String, u64>,
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

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path, stamps: &mut Vec<(PathBuf, Option<SystemTime>)>) -> anyhow::Result<Vec<u8>> {
    stamps.push((path.to_path_buf(), mtime(path)));
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn load_keys(config: &AuthConfig) -> anyhow::Result<Keys> {
    let mut keys = Keys::default();
    if let Some(secret) = &config.hs256_secret {
        keys.hs256 = Some(DecodingKey::from_secret(secret.as_bytes()));
    }
    if let Some(path) = &config.hs256_secret_file {
        let secret = read(path, &mut keys.stamps)?;
        let secret = secret.trim_ascii();
        anyhow::ensure!(
            secret.len() >= 32,
            "{}: an HS256 secret needs at least 32 bytes",
            path.display()
        );
        keys.hs256 = Some(DecodingKey::from_secret(secret));
    }
    for path in &config.rsa_public_keys {
        let pem = read(path, &mut keys.stamps)?;
        keys.rsa.push(
            DecodingKey::from_rsa_pem(&pem)
                .with_context(|| format!("{}: not an RSA public key", path.display()))?,
        );
    }
    for path in &config.ed25519_public_keys {
        let pem = read(path, &mut keys.stamps)?;
        keys.ed.push(
            DecodingKey::from_ed_pem(&pem)
                .with_context(|| format!("{}: not an Ed25519 public key", path.display()))?,
        );
    }
    if let Some(path) = &config.jwks_file {
        let bytes = read(path, &mut keys.stamps)?;
        let set: JwkSet = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a JWKS document", path.display()))?;
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).with_context(|| {
                format!("{}: unusable key {:?}", path.display(), jwk.common.key_id)
            })?;
            let rsa = matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
            );
            keys.jwks.push((jwk.common.key_id.clone(), key, rsa));
        }
    }
    Ok(keys)
}

/// The `alg` of a token's header, read without trusting anything else in it.
fn header_alg(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let bytes = segment(token, 0)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let _ = header.kid;
    Ok(header.alg)
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
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Verifier {
            keys: RwLock::new(load_keys(config)?),
            config: config.clone(),
            revoked: Mutex::new(Revocations::default()),
        })
    }

    /// Re-reads the key files if any changed. A broken new file keeps the old keys.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let changed = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.stamps
                .iter()
                .any(|(path, stamp)| mtime(path) != *stamp)
        };
        if !changed {
            return Ok(false);
        }
        let fresh = load_keys(&self.config)?;
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
            tier: name.clone(),
            ent: self.config.anonymous_ent.clone(),
            min_interval_ms: tier.min_interval_ms,
            max_symbols: tier.max_symbols,
            max_msgs_per_s: tier.max_msgs_per_s,
        })
    }

    /// Verifies `token` and turns its claims into a grant.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let alg = header_alg(token)?;
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
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<&DecodingKey> = match algorithm {
            Algorithm::HS256 => keys.hs256.iter().collect(),
            Algorithm::RS256 => keys
                .rsa
                .iter()
                .chain(keys.jwks.iter().filter(|k| k.2).map(|k| &k.1))
                .collect(),
            _ => keys
                .ed
                .iter()
                .chain(keys.jwks.iter().filter(|k| !k.2).map(|k| &k.1))
                .collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::Algorithm(alg));
        }
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match decode::<Claims>(token, key, &validation) {
                Ok(data) => return self.grant(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::Audience,
                        ErrorKind::InvalidIssuer => AuthError::Issuer,
                        ErrorKind::InvalidAlgorithm => AuthError::Algorithm(alg.clone()),
                        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
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

    fn grant(&self, claims: Claims) -> Result<Grant, AuthError> {
        if self.is_revoked(&claims.sub, claims.jti.as_deref(), claims.iat) {
            return Err(AuthError::Revoked);
        }
        let name = claims
            .tier
            .unwrap_or_else(|| self.config.default_tier.clone());
        let tier = self
            .tier(&name)
            .ok_or_else(|| AuthError::UnknownTier(name.chars().take(32).collect()))?;
        Ok(Grant {
            sub: Some(claims.sub),
            jti: claims.jti,
            iat: claims.iat,
            exp: Some(claims.exp),
            min_interval_ms: tier.min_interval_ms,
            max_symbols: claims
                .max_symbols
                .map_or(tier.max_symbols, |m| m.min(tier.max_symbols)),
            max_msgs_per_s: tier.max_msgs_per_s,
            tier: name,
            ent: claims.ent,
        })
    }

    /// Records a revocation of a user (every token issued until now) or of a token id.
    pub fn revoke(&self, sub: Option<&str>, jti: Option<&str>) {
        let now = now_s();
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        r.subs.retain(|_, at| *at + REVOCATION_TTL_S > now);
        r.jtis.retain(|_, until| *until > now);
        if let Some(sub) = sub {
            r.subs.insert(sub.to_string(), now);
        }
        if let Some(jti) = jti {
            r.jtis.insert(jti.to_string(), now + REVOCATION_TTL_S);
        }
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
        let by_sub = r
            .subs
            .get(sub)
            .is_some_and(|at| iat.is_none_or(|iat| iat <= *at));
        by_sub || jti.is_some_and(|j| r.jtis.contains_key(j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

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
        Grant {
            sub: Some("u".into()),
            jti: None,
            iat: None,
            exp: None,
            tier: "pro".into(),
            ent: ent.iter().map(|s| s.to_string()).collect(),
            min_interval_ms: 0,
            max_symbols: 10,
            max_msgs_per_s: 10,
        }
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
    fn revocation_by_user_and_by_token_id() {
        let v = verifier(|_| {});
        let mut c = claims();
        c["jti"] = json!("t-1");
        c["iat"] = json!(now_s() - 5);
        v.verify(&token(c.clone())).unwrap();
        v.revoke(None, Some("t-1"));
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        c["jti"] = json!("t-2");
        v.verify(&token(c.clone())).unwrap();
        v.revoke(Some("alice"), None);
        assert_eq!(v.verify(&token(c.clone())), Err(AuthError::Revoked));
        // A token issued after the revocation works again.
        c["iat"] = json!(now_s() + 2);
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
    fn eddsa_and_rsa_keys_from_pem_and_jwks_reload() {
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
}
