//! Durable revocations: the KV bucket `ctl_revoked` (schema:
//! [`tickmesh_core::revocation`]), written on the hub by an operator and mirrored into
//! each region, replayed by the edge at start and after every reconnect, then watched.
//!
//! Where it is read: in a region (`nats.kv_mirror_domain` set), the region's mirror of the
//! bucket, so that an edge starting while its region is cut off from the hub still learns
//! every revocation the region holds; the hub's bucket (`nats.js_domain`) when the region
//! has no mirror or its JetStream cannot serve the replay, each step within
//! `snapshot.kv_timeout_ms`. No bucket on the hub means nothing was ever revoked. Edges only read: the
//! bucket and the mirrors are the operator's (`cargo xtask revoke`, docs/operations.md).
//!
//! A replay loads every key into a fresh set and swaps it in whole, so that a deletion or
//! an expiry made while the edge was away is not missed; until the replay that follows the
//! latest (re)connect is done, `/readyz` is 503. Each change then bumps
//! [`Edge::revocations`], and sessions check their grant against it. A watch that fails is
//! opened again every second, keeping what the edge knows meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tickmesh_core::revocation::{BUCKET, Revoked, Value};
use tokio::sync::watch;

use crate::auth::RevokedSet;
use crate::state::Edge;

/// Pause between two attempts to open or watch the bucket.
const RETRY: Duration = Duration::from_secs(1);
/// A replay that has not reached the bucket's last entry in this long is started again
/// (an entry that expires between the count and the watch would otherwise be awaited
/// for ever).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

/// One place the bucket may be: the region's mirror, or the hub.
struct Source {
    js: jetstream::Context,
    label: &'static str,
}

/// Replays and watches the bucket until the edge shuts down.
pub fn spawn(edge: Arc<Edge>) {
    let client = edge.nats.client().clone();
    let config = &edge.config.nats;
    let mut sources = Vec::new();
    if let Some(domain) = &config.kv_mirror_domain {
        sources.push(Source {
            js: jetstream::with_domain(client.clone(), domain),
            label: "mirror",
        });
    }
    sources.push(Source {
        js: match &config.js_domain {
            Some(domain) => jetstream::with_domain(client, domain),
            None => jetstream::new(client),
        },
        label: "hub",
    });
    let reconnects = edge.nats.reconnects();
    tokio::spawn(run(edge, sources, reconnects));
}

/// Whether the replay that follows the latest (re)connect is done.
pub fn is_replayed(edge: &Edge) -> bool {
    let generation = *edge.nats.reconnects().borrow();
    edge.revocations_replayed.load(Ordering::Acquire) == generation + 1
}

async fn run(edge: Arc<Edge>, sources: Vec<Source>, mut reconnects: watch::Receiver<u64>) {
    let mut failures = 0u32;
    let mut ttl_seen = None;
    loop {
        let generation = *reconnects.borrow_and_update();
        let result = tokio::select! {
            _ = edge.shutdown.cancelled() => return,
            // Reconnected: whatever happened meanwhile is read again from the start.
            _ = reconnects.changed() => continue,
            r = sync(&edge, &sources, generation, &mut ttl_seen) => r,
        };
        match result {
            Ok(Ended::NoBucket) => failures = 0,
            Ok(Ended::Watch) => {
                failures = 0;
                tracing::info!("revocation watch ended; replaying");
            }
            Err(e) if failures == 0 => {
                tracing::warn!(error = %format!("{e:#}"), "revocations: cannot read {BUCKET}; retrying")
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "revocations: still cannot read {BUCKET}")
            }
        }
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = edge.shutdown.cancelled() => return,
            _ = reconnects.changed() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Why a [`sync`] ended without an error.
enum Ended {
    /// No source has the bucket: nothing is revoked. It is looked for again after [`RETRY`].
    NoBucket,
    /// The watch ended.
    Watch,
}

/// Opens the bucket where it is, replays it, swaps it in, then applies changes until the
/// watch ends or fails. No bucket at all counts as a replay of nothing. A source that
/// cannot be replayed (not found in time, or its watch cannot be made or does not reach
/// the last entry: a region whose JetStream lost its quorum may still answer for the
/// stream but cannot make a consumer) is passed over for the next.
/// `ttl_seen`: the bucket's TTL when last checked, so that a warning about it is logged
/// once, not at every replay.
async fn sync(
    edge: &Edge,
    sources: &[Source],
    generation: u64,
    ttl_seen: &mut Option<Duration>,
) -> anyhow::Result<Ended> {
    let timeout = Duration::from_millis(edge.config.snapshot.kv_timeout_ms);
    let mut failed = None;
    for (n, source) in sources.iter().enumerate() {
        let store = match lookup(source, timeout).await {
            Ok(Some(store)) => store,
            // The hub (the last source, the authority) has none: nothing was revoked.
            Ok(None) if n + 1 == sources.len() => {
                finish(edge, RevokedSet::default(), generation, "none");
                return Ok(Ended::NoBucket);
            }
            Ok(None) => continue,
            Err(e) => {
                failed = Some(e);
                continue;
            }
        };
        let (fresh, mut entries) = match replay(edge, &store, source.label, timeout, ttl_seen).await
        {
            Ok(replayed) => replayed,
            Err(e) => {
                tracing::debug!(source = source.label, error = %format!("{e:#}"), "revocations: replay failed; trying the next source");
                failed = Some(e);
                continue;
            }
        };
        finish(edge, fresh, generation, source.label);
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            let held = edge.verifier.update_stored(|set| apply(set, &entry));
            metrics::gauge!("tickmesh_edge_revocations_stored").set(held as f64);
            edge.revocations.send_modify(|n| *n += 1);
        }
        return Ok(Ended::Watch);
    }
    Err(failed.unwrap_or_else(|| anyhow::anyhow!("no source of {BUCKET}")))
}

/// The bucket in `source`, `None` if it says it has none, within `timeout`.
async fn lookup(source: &Source, timeout: Duration) -> anyhow::Result<Option<kv::Store>> {
    let stream = format!("KV_{BUCKET}");
    let lookup = async {
        match source.js.get_stream(&stream).await {
            Ok(_) => source
                .js
                .get_key_value(BUCKET)
                .await
                .map(Some)
                .map_err(anyhow::Error::from),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    match tokio::time::timeout(timeout, lookup).await {
        Ok(r) => r.with_context(|| format!("looking up {BUCKET} ({})", source.label)),
        Err(_) => Err(anyhow::anyhow!(
            "looking up {BUCKET} ({}) timed out",
            source.label
        )),
    }
}

/// Reads every entry of `store` (the last value of every key, deletions included), and
/// returns them with the watch, which then yields every change.
async fn replay(
    edge: &Edge,
    store: &kv::Store,
    label: &str,
    timeout: Duration,
    ttl_seen: &mut Option<Duration>,
) -> anyhow::Result<(RevokedSet, kv::Watch)> {
    let status = tokio::time::timeout(timeout, store.status())
        .await
        .with_context(|| format!("{BUCKET} ({label}): no status in time"))??;
    if *ttl_seen != Some(status.max_age()) {
        *ttl_seen = Some(status.max_age());
        check_ttl(edge, status.max_age());
    }
    let empty = status.values() == 0;
    let mut entries = tokio::time::timeout(timeout, store.watch_with_history(">"))
        .await
        .with_context(|| format!("{BUCKET} ({label}): the watch was not made in time"))??;
    let mut fresh = RevokedSet::default();
    if !empty {
        let replay = async {
            while let Some(entry) = entries.next().await {
                let entry = entry?;
                apply(&mut fresh, &entry);
                if entry.delta == 0 {
                    return Ok(());
                }
            }
            anyhow::bail!("the watch of {BUCKET} ended during the replay")
        };
        tokio::time::timeout(REPLAY_TIMEOUT, replay)
            .await
            .with_context(|| format!("replaying {BUCKET} ({label}) timed out"))??;
    }
    Ok((fresh, entries))
}

/// Swaps a replay in, tells the sessions, and marks the edge ready for `generation`.
fn finish(edge: &Edge, set: RevokedSet, generation: u64, label: &'static str) {
    let held = set.len();
    if edge.verifier.replace_stored(set) {
        edge.revocations.send_modify(|n| *n += 1);
    }
    let before = edge
        .revocations_replayed
        .swap(generation + 1, Ordering::AcqRel);
    metrics::gauge!("tickmesh_edge_revocations_stored").set(held as f64);
    metrics::counter!("tickmesh_edge_revocation_replays_total", "source" => label).increment(1);
    if before != generation + 1 {
        tracing::info!(held, source = label, "revocations replayed");
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Warns when the bucket could drop a revocation while a token it refuses is still valid.
fn check_ttl(edge: &Edge, ttl: Duration) {
    let lifetime = edge.config.auth.max_token_lifetime_s;
    if ttl_too_short(ttl, lifetime) {
        tracing::warn!(
            ttl_s = ttl.as_secs(),
            max_token_lifetime_s = ?lifetime,
            "{BUCKET} keeps revocations for less than a token may live: set \
             auth.max_token_lifetime_s at or below the bucket's TTL"
        );
    }
}

/// Whether a bucket that keeps entries for `ttl` (zero: for ever) can drop a revocation
/// before every token it refuses has expired: a token may live `lifetime` seconds (None:
/// without limit).
fn ttl_too_short(ttl: Duration, lifetime: Option<u64>) -> bool {
    !ttl.is_zero() && lifetime.is_none_or(|l| Duration::from_secs(l) > ttl)
}

/// Applies one entry of the bucket. A key outside the scheme is ignored; a value that is
/// not `{"at": <seconds>}` revokes every token of the user, whenever issued, until the
/// entry goes (a revocation is never dropped for being badly written).
fn apply(set: &mut RevokedSet, entry: &kv::Entry) {
    let Some(what) = Revoked::parse_key(&entry.key) else {
        tracing::warn!(key = %entry.key, "ignored a {BUCKET} key outside the scheme");
        return;
    };
    if entry.operation != kv::Operation::Put {
        set.remove(&what);
        return;
    }
    let at = match Value::parse(&entry.value) {
        Some(v) => v.at,
        None => {
            tracing::warn!(key = %entry.key, "{BUCKET} value is not {{\"at\": <seconds>}}; revoking every token it names");
            u64::MAX
        }
    };
    set.insert(what, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, Verifier, now_s};

    use crate::auth::test_keys::token;

    #[test]
    fn a_ttl_shorter_than_a_token_may_live_is_too_short() {
        let day = Duration::from_secs(86_400);
        assert!(!ttl_too_short(day, Some(3600)), "24 h against 1 h tokens");
        assert!(!ttl_too_short(day, Some(86_400)), "equal");
        assert!(ttl_too_short(day, Some(86_401)), "tokens outlive the entry");
        assert!(ttl_too_short(day, None), "tokens without a lifetime limit");
        assert!(
            !ttl_too_short(Duration::ZERO, None),
            "a bucket that keeps entries for ever"
        );
    }

    fn entry(key: &str, value: &[u8], operation: kv::Operation) -> kv::Entry {
        kv::Entry {
            bucket: BUCKET.into(),
            key: key.into(),
            value: bytes::Bytes::copy_from_slice(value),
            revision: 1,
            delta: 0,
            created: async_nats::datetime::now(),
            operation,
            seen_current: true,
        }
    }

    fn put(key: &str, value: &[u8]) -> kv::Entry {
        entry(key, value, kv::Operation::Put)
    }

    /// An edge's verifier holding `set` as the bucket's revocations (leeway 5 s).
    fn verifier(set: RevokedSet) -> Verifier {
        let v = crate::auth::test_keys::verifier();
        v.replace_stored(set);
        v
    }

    #[test]
    fn a_malformed_value_revokes_every_token_of_the_user_whenever_issued() {
        let alice = Revoked::Sub("alice".into()).key().unwrap();
        let deep = |depth: usize| {
            let inner = depth - 1;
            format!(
                r#"{{"at": 5, "x": {}{}}}"#,
                "[".repeat(inner),
                "]".repeat(inner)
            )
        };
        let now = now_s();
        for value in [
            &b"yes"[..],
            b"",
            b"{}",
            br#"{"at": "yesterday"}"#,
            br#"{"at": -1}"#,
            // `at` is there, but past the nesting bound of untrusted bytes.
            deep(tickmesh_core::nesting::MAX_DEPTH + 1).as_bytes(),
        ] {
            let shown = String::from_utf8_lossy(&value[..value.len().min(24)]).into_owned();
            let mut set = RevokedSet::default();
            apply(&mut set, &put(&alice, value));
            let v = verifier(set);
            // Issued long ago, now, and as late as the leeway lets a token say.
            for iat in [now - 86_400, now, now + 4] {
                assert_eq!(
                    v.verify(&token("alice", iat)),
                    Err(AuthError::Revoked),
                    "{shown}: iat {iat}"
                );
            }
            v.verify(&token("bob", now)).unwrap();
        }
        // Within the bound, the same value is read: tokens issued after `at` pass.
        let mut set = RevokedSet::default();
        apply(
            &mut set,
            &put(&alice, deep(tickmesh_core::nesting::MAX_DEPTH).as_bytes()),
        );
        verifier(set).verify(&token("alice", now)).unwrap();
        // Deleting the key lifts the revocation.
        let mut set = RevokedSet::default();
        apply(&mut set, &put(&alice, b"yes"));
        apply(&mut set, &entry(&alice, b"", kv::Operation::Delete));
        assert!(set.is_empty());
    }

    #[test]
    fn a_key_outside_the_scheme_is_ignored_with_a_log_line() {
        let value = Value { at: now_s() }.to_json();
        let logs = crate::testlog::Logs::default();
        let mut set = RevokedSet::default();
        for key in ["alice", "sub.***", "other.YWxpY2U", "jti.", "sub"] {
            logs.capture(|| apply(&mut set, &put(key, &value)));
            assert!(set.is_empty(), "{key}");
            let text = logs.text();
            assert!(
                text.lines().any(|l| l.contains("WARN")
                    && l.contains("outside the scheme")
                    && l.contains(&format!("key={key}"))),
                "{key}: {text}"
            );
        }
        let v = verifier(set);
        v.verify(&token("alice", now_s() - 10)).unwrap();
    }
}
