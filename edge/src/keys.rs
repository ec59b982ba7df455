//! The keys the edge trusts, read from the configuration and its key files: the HS256
//! secret, RSA and Ed25519 public keys in PEM files, and a JWKS file. Each key verifies one
//! algorithm and carries a fingerprint of its material, which grants record so that a key
//! dropped by a reload can be told apart. [`crate::auth`] decides which keys a token may
//! use.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::AuthConfig;

/// One trusted key.
pub(crate) struct Key {
    /// The JWKS `kid`; `None` for the secret and PEM keys.
    pub(crate) kid: Option<String>,
    /// The one algorithm the key verifies.
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
    /// A hash of the key's material, recorded in the grants it verifies.
    pub(crate) fingerprint: u64,
}

#[derive(Default)]
pub(crate) struct Keys {
    pub(crate) keys: Vec<Key>,
    /// JWKS entries taken, and left out because the edge cannot use them.
    pub(crate) jwks_usable: usize,
    pub(crate) jwks_skipped: usize,
    /// Files read and their modification times, to notice changes.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

impl Keys {
    fn push(&mut self, kid: Option<String>, alg: Algorithm, key: DecodingKey, material: &[u8]) {
        let mut h = DefaultHasher::new();
        (alg as u8, material).hash(&mut h);
        self.keys.push(Key {
            kid,
            alg,
            key,
            fingerprint: h.finish(),
        });
    }

    pub(crate) fn trusts(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }

    /// Whether a file read changed since (its modification time).
    pub(crate) fn changed(&self) -> bool {
        self.stamps
            .iter()
            .any(|(path, stamp)| mtime(path) != *stamp)
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path, stamps: &mut Vec<(PathBuf, Option<SystemTime>)>) -> anyhow::Result<Vec<u8>> {
    stamps.push((path.to_path_buf(), mtime(path)));
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads every configured key; an unreadable or invalid key file is an error that names it.
pub(crate) fn load(config: &AuthConfig) -> anyhow::Result<Keys> {
    let mut keys = Keys::default();
    if let Some(secret) = &config.hs256_secret {
        let secret = secret.as_bytes();
        keys.push(
            None,
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            secret,
        );
    }
    if let Some(path) = &config.hs256_secret_file {
        let secret = read(path, &mut keys.stamps)?;
        let secret = secret.trim_ascii();
        anyhow::ensure!(
            secret.len() >= 32,
            "auth.hs256_secret_file: {}: an HS256 secret needs at least 32 bytes",
            path.display()
        );
        keys.keys.retain(|k| k.alg != Algorithm::HS256);
        keys.push(
            None,
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            secret,
        );
    }
    for path in &config.rsa_public_keys {
        let pem = read(path, &mut keys.stamps)?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .with_context(|| format!("{}: not an RSA public key", path.display()))?;
        keys.push(None, Algorithm::RS256, key, &pem);
    }
    for path in &config.ed25519_public_keys {
        let pem = read(path, &mut keys.stamps)?;
        let key = DecodingKey::from_ed_pem(&pem)
            .with_context(|| format!("{}: not an Ed25519 public key", path.display()))?;
        keys.push(None, Algorithm::EdDSA, key, &pem);
    }
    if let Some(path) = &config.jwks_file {
        let bytes = read(path, &mut keys.stamps)?;
        load_jwks(path, &bytes, &mut keys)?;
    }
    Ok(keys)
}

/// Adds the usable keys of a JWKS document. An entry the edge cannot use (another key
/// type or algorithm, an encryption key, a broken entry) is skipped with a warning rather
/// than failing the set: one odd key an identity provider publishes must not stop the edge
/// from trusting the others, or from dropping a key that was removed.
fn load_jwks(path: &Path, bytes: &[u8], keys: &mut Keys) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(bytes)
        .with_context(|| format!("{}: not a JWKS document", path.display()))?;
    for entry in &set.keys {
        match jwks_key(entry) {
            Ok((kid, alg, key)) => {
                let material = serde_json::to_vec(entry).expect("a JSON value serializes");
                keys.push(kid, alg, key, &material);
                keys.jwks_usable += 1;
            }
            Err(why) => {
                keys.jwks_skipped += 1;
                let kid = entry.get("kid").and_then(|k| k.as_str()).unwrap_or("-");
                let kid: String = kid.chars().take(64).collect();
                tracing::warn!(file = %path.display(), %kid, reason = %why, "JWKS key skipped");
            }
        }
    }
    Ok(())
}

/// One JWKS entry as a key the edge can use (RSA for RS256, Ed25519 for EdDSA, for
/// signatures), or why not.
fn jwks_key(entry: &serde_json::Value) -> Result<(Option<String>, Algorithm, DecodingKey), String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("not a signature key (`use`)".into());
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return Err("key type not accepted (RSA and Ed25519 are)".into()),
    };
    match jwk.common.key_algorithm {
        None | Some(KeyAlgorithm::RS256 | KeyAlgorithm::EdDSA) => {}
        Some(other) => return Err(format!("algorithm {other:?} not accepted")),
    }
    if jwk.common.key_algorithm == Some(KeyAlgorithm::RS256) && alg != Algorithm::RS256
        || jwk.common.key_algorithm == Some(KeyAlgorithm::EdDSA) && alg != Algorithm::EdDSA
    {
        return Err("`alg` does not match the key type".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok((jwk.common.key_id, alg, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads the keys of a config whose only key is a secret file holding `content`.
    fn load_secret_file(content: &[u8]) -> (PathBuf, anyhow::Result<Keys>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hs256.secret");
        std::fs::write(&path, content).unwrap();
        let config = AuthConfig {
            hs256_secret_file: Some(path.clone()),
            ..AuthConfig::default()
        };
        (path, load(&config))
    }

    #[test]
    fn an_hs256_secret_file_under_32_bytes_is_refused_naming_the_key_and_file() {
        let (_, keys) = load_secret_file(&[b'k'; 32]);
        let keys = keys.unwrap().keys;
        assert_eq!((keys.len(), keys[0].alg), (1, Algorithm::HS256));
        // The whitespace around it (a trailing newline) does not count.
        let padded = [&b"  "[..], &[b'k'; 31], b"\n\n\n"].concat();
        for short in [&[b'k'; 31][..], &padded, b""] {
            let (path, keys) = load_secret_file(short);
            let e = format!("{:#}", keys.err().expect("a short secret was accepted"));
            assert!(
                e.contains("auth.hs256_secret_file")
                    && e.contains(&path.display().to_string())
                    && e.contains("at least 32 bytes"),
                "{e}"
            );
        }
    }
}
