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
use tickmesh_core::revocation::Revoked;

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
    /// Entitlement patterns: `*`, an exact symbol, or a prefix ending in `*`.
    pub ent: Vec<String>,
    pub min_interval_ms: u32,
    pub max_symbols: u32,
    pub max_msgs_per_s: u32,
}

impl Grant {
    /// Whether the grant covers `symbol`.
    pub fn allows(&self, symbol: &str) -> bool {
        self.ent.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => symbol.starts_with(prefix),
            None => p == symbol,
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
    let head = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let _ = header.kid;
    Ok(header.alg)
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

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": now_s() + 600, "iat": now_s(), "ent": ["AAPL*", "SPY"], "tier": "delayed"})
    }

    #[test]
    fn a_good_token_gives_its_tier_and_entitlements() {
        let g = verifier(|_| {}).verify(&token(claims())).unwrap();
        assert_eq!(g.sub.as_deref(), Some("alice"));
        assert_eq!((g.min_interval_ms, g.max_symbols), (1000, 50));
        assert!(g.allows("AAPL") && g.allows("AAPL261218C00150000") && g.allows("SPY"));
        assert!(!g.allows("SPYX") && !g.allows("MSFT"));
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
        assert_eq!(verifier(|_| {}).anonymous().unwrap().tier, "anonymous");
        assert_eq!(
            verifier(|c| c.anonymous = false).anonymous(),
            Err(AuthError::Missing)
        );
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
