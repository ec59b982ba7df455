//! The control plane: revocations arrive on NATS `ctl.revoke`, and key files are reloaded
//! when they change (sessions whose key is gone are then closed).
//!
//! A revocation is a JSON object naming a user, a token id or both:
//! `{"sub": "alice"}` revokes every token of alice issued until now (or until `"at"`, in
//! seconds, when given); `{"jti": "t-42"}` revokes one token. Every edge connected at that
//! moment closes the matching sessions with 4403. This path keeps nothing: an edge that
//! was cut off or starts later never hears it. The durable path is the bucket
//! `ctl_revoked` ([`crate::revocations`]); `ctl.revoke` stays for scripts that publish it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::auth::Verifier;
use crate::state::Edge;

/// The revocation subject.
pub const REVOKE_SUBJECT: &str = "ctl.revoke";

/// One revocation: a user, a token id or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Revocation {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
    /// When the revocation was made (seconds): a user's tokens issued at or before it are
    /// refused. Default: when the edge receives it.
    #[serde(default)]
    pub at: Option<u64>,
}

/// Why a `ctl.revoke` message was ignored.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("not a revocation object: {0}")]
    Malformed(#[from] tickmesh_core::nesting::NestingError),
    #[error("a revocation names a `sub`, a `jti` or both")]
    Empty,
}

/// Parses a `ctl.revoke` payload (untrusted bytes from NATS).
pub fn parse_revocation(payload: &[u8]) -> Result<Revocation, RevocationError> {
    let r: Revocation = tickmesh_core::nesting::from_json(payload)?;
    if r.sub.is_none() && r.jti.is_none() {
        return Err(RevocationError::Empty);
    }
    Ok(r)
}

/// Subscribes to revocations and starts the key reloader; both stop with the edge.
pub async fn spawn(edge: Arc<Edge>, client: async_nats::Client) -> anyhow::Result<()> {
    let mut sub = client.subscribe(REVOKE_SUBJECT).await?;
    // The edge turns ready only once the server has answered a PING sent after the SUB: a
    // revocation published after readiness must not race a SUB still queued in the client.
    // The link connects in the background, so this waits for it.
    let e = edge.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = e.shutdown.cancelled() => return,
                flushed = client.flush() => if flushed.is_ok() { break },
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        e.control_subscribed.store(true, Ordering::Release);
        tracing::debug!("subscribed to {REVOKE_SUBJECT}");
    });
    let e = edge.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = e.shutdown.cancelled() => return,
                msg = sub.next() => match msg { Some(m) => m, None => return },
            };
            match parse_revocation(&msg.payload) {
                Ok(r) => {
                    revoke(&e.verifier, &r);
                    e.revocations.send_modify(|n| *n += 1);
                    metrics::counter!("tickmesh_edge_revocations_total").increment(1);
                    tracing::info!(sub = ?r.sub, jti = ?r.jti, "revocation");
                }
                Err(error) => {
                    tracing::warn!(%error, "ignored a malformed revocation on {REVOKE_SUBJECT}")
                }
            }
        }
    });
    let period = Duration::from_millis(edge.config.auth.key_reload_ms);
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = edge.shutdown.cancelled() => return,
                _ = timer.tick() => {}
            }
            if reload_keys(&edge.verifier) {
                // Sessions check that the key of their token is still there.
                edge.revocations.send_modify(|n| *n += 1);
            }
        }
    });
    Ok(())
}

/// Records a revocation from `ctl.revoke`.
fn revoke(verifier: &Verifier, r: &Revocation) {
    verifier.revoke(r.sub.as_deref(), r.jti.as_deref(), r.at);
}

/// Re-reads the key files if any changed; true when the keys were replaced. A file that
/// cannot be read or parsed is logged as an error and the old keys stay.
fn reload_keys(verifier: &Verifier) -> bool {
    match verifier.reload_if_changed() {
        Ok(true) => {
            tracing::info!("authentication keys reloaded");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "key reload failed; keeping the old keys");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_names_a_user_or_a_token() {
        let r = parse_revocation(br#"{"sub":"alice"}"#).unwrap();
        assert_eq!(r.sub.as_deref(), Some("alice"));
        let r = parse_revocation(br#"{"jti":"t-42","reason":"leaked"}"#).unwrap();
        assert_eq!((r.sub, r.jti.as_deref()), (None, Some("t-42")));
        for empty in [&b"{}"[..], br#"{"sub":null}"#] {
            assert!(matches!(
                parse_revocation(empty),
                Err(RevocationError::Empty)
            ));
        }
        for bad in [&b"[1]"[..], b"", br#"{"sub":7}"#] {
            assert!(matches!(
                parse_revocation(bad),
                Err(RevocationError::Malformed(_))
            ));
        }
    }

    use crate::auth::{AuthError, now_s};
    use crate::config::AuthConfig;

    use crate::auth::test_keys::{SECRET, token, verifier};

    #[test]
    fn a_revocation_with_at_refuses_the_tokens_issued_until_then() {
        let at = now_s() - 100;
        let r = parse_revocation(format!(r#"{{"sub":"alice","at":{at}}}"#).as_bytes()).unwrap();
        assert_eq!((r.sub.as_deref(), r.at), (Some("alice"), Some(at)));
        let v = verifier();
        revoke(&v, &r);
        for iat in [at - 50, at] {
            assert_eq!(v.verify(&token("alice", iat)), Err(AuthError::Revoked));
        }
        v.verify(&token("alice", at + 1)).unwrap();
        v.verify(&token("bob", at - 50)).unwrap();
        // Without `at`: every token issued until the edge heard of it.
        revoke(&v, &parse_revocation(br#"{"sub":"alice"}"#).unwrap());
        assert_eq!(v.verify(&token("alice", at + 1)), Err(AuthError::Revoked));
    }

    #[test]
    fn a_failed_key_reload_is_logged_and_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hs256.secret");
        std::fs::write(&path, SECRET).unwrap();
        let v = Verifier::new(&AuthConfig {
            hs256_secret_file: Some(path.clone()),
            ..AuthConfig::default()
        })
        .unwrap();
        let t = token("alice", now_s());
        let grant = v.verify(&t).unwrap();
        // Too short a secret, stamped later so that the change is seen.
        std::fs::write(&path, "short").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        let logs = crate::testlog::Logs::default();
        assert!(!logs.capture(|| reload_keys(&v)));
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("key reload failed; keeping the old keys"))
            .unwrap_or_else(|| panic!("no error logged:\n{text}"));
        assert!(
            line.contains("ERROR") && line.contains(&path.display().to_string()),
            "{line}"
        );
        v.verify(&t).unwrap();
        assert!(v.is_grant_trusted(&grant));
    }
}
