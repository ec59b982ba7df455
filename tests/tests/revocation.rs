//! Durable revocations on the real mesh: written into the hub's KV bucket `ctl_revoked`
//! (as `cargo xtask revoke` does), mirrored into each region, replayed by every edge at
//! start and after every reconnect.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tickmesh_core::Format;
use tickmesh_core::revocation::Revoked;
use tickmesh_edge::EdgeConfig;
use tickmesh_edge::auth::now_s as now;
use tickmesh_tests::mesh::{HUB_DOMAIN, Mesh};
use tickmesh_tests::proxy::Proxy;
use tickmesh_tests::*;

const A: &str = "region-a";
const B: &str = "region-b";
const SECRET: &str = "a-test-only-hs256-secret-32-bytes-long!";
const SECOND: Duration = Duration::from_secs(1);

/// A token of `sub` issued at `iat`.
fn token(sub: &str, iat: u64) -> String {
    let claims = json!({"sub": sub, "iat": iat, "exp": now() + 600, "ent": ["*"], "tier": "pro"});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An edge of `region` that takes tokens signed with [`SECRET`] only.
fn edge_config(mesh: &Mesh, region: &str) -> EdgeConfig {
    let mut c = mesh.edge_config(region);
    c.auth.hs256_secret = Some(SECRET.into());
    c.auth.anonymous = false;
    c
}

async fn session(addr: SocketAddr, token: &str) -> Client {
    Client::connect_with(addr, Format::Json, Some(token))
        .await
        .unwrap()
}

async fn upgrade(addr: SocketAddr, token: &str) -> (u16, String) {
    upgrade_status(&format!("ws://{addr}/v1/stream"), Some(token)).await
}

async fn readyz(addr: SocketAddr) -> (u16, String) {
    http_get(addr, "/readyz")
        .await
        .unwrap_or((0, String::new()))
}

/// Waits until `/readyz` answers `status`; returns its body.
async fn wait_readyz(addr: SocketAddr, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = readyz(addr).await;
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz is {s} {body:?}, not {status}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An empty `md_ref` on the hub, as ingest would make it: an edge serves (and is ready)
/// only once it has read the reference data.
async fn create_refdata(mesh: &Mesh) {
    // As ingest, the bucket's one writer, on the hub.
    let js = async_nats::jetstream::new(mesh.hub_client_as("ingest").await.unwrap());
    let refs = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: tickmesh_core::refdata::BUCKET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    refs.put(tickmesh_core::refdata::COMPLETE_KEY, "{}".into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_regions_honour_a_revocation_and_edges_started_later_refuse_the_token() {
    let mesh = Mesh::start(&[A, B], 2).await.unwrap();
    create_refdata(&mesh).await;
    let (_ea, addr_a) = start_edge(edge_config(&mesh, A)).await.unwrap();
    let (_eb, addr_b) = start_edge(edge_config(&mesh, B)).await.unwrap();
    let old = token("alice", now() - 60);
    let mut alice_a = session(addr_a, &old).await;
    let mut alice_b = session(addr_b, &old).await;
    let mut bob_a = session(addr_a, &token("bob", now() - 60)).await;

    // Revoked as of 10 s ago: tokens of alice issued until then.
    let at = now() - 10;
    let what = Revoked::Sub("alice".into());
    let written = Instant::now();
    mesh.revoke(&what, at).await.unwrap();
    for (region, c) in [(A, &mut alice_a), (B, &mut alice_b)] {
        let code = c.closed_within(10 * SECOND, |_| {}).await.unwrap();
        assert_eq!(code, Some(4403), "alice's session in {region}");
    }
    eprintln!(
        "both regions closed alice's sessions {:?} after the write",
        written.elapsed()
    );
    bob_a.ping(1).await.unwrap();

    // The operator mirrors the bucket into each region; new edges start in both regions
    // and replay the region's copy; then region A is cut off from the hub. (An edge cannot
    // start while its region is cut off: it needs the hub's reference data.)
    for region in [A, B] {
        mesh.create_revocation_mirror(region).await.unwrap();
        mesh.wait_mirrored(region, &what).await.unwrap();
    }
    let (_ea2, addr_a2) = start_edge(edge_config(&mesh, A)).await.unwrap();
    let (_eb2, addr_b2) = start_edge(edge_config(&mesh, B)).await.unwrap();
    mesh.region(A).link.black_hole();
    // After the revocation by the token's own iat, not by when an edge heard of it: a
    // token issued after `at` works, on edges that learnt of the revocation later still.
    let fresh = token("alice", at + 5);
    for addr in [addr_a, addr_b, addr_a2, addr_b2] {
        assert_eq!(
            upgrade(addr, &old).await,
            (401, "token revoked".into()),
            "{addr}"
        );
        assert_eq!(upgrade(addr, &fresh).await.0, 101, "{addr}");
        assert_eq!(upgrade(addr, &token("bob", at - 5)).await.0, 101, "{addr}");
    }
    // Region A's edges stay ready while it is cut off: they replayed all the region holds.
    tokio::time::sleep(3 * SECOND).await;
    for addr in [addr_a, addr_a2] {
        assert_eq!(
            readyz(addr).await.0,
            200,
            "{addr} while its region is cut off"
        );
    }
    mesh.region(A).link.pass();

    // Edges only read the bucket; an operator writes it.
    let edge = mesh.pki.connect("edge", &mesh.hub_urls()).await.unwrap();
    let js = async_nats::jetstream::with_domain(edge, HUB_DOMAIN);
    let bucket = js.get_key_value("ctl_revoked").await.unwrap();
    let bob = Revoked::Sub("bob".into()).key().unwrap();
    assert!(
        bucket.put(&bob, "{\"at\":1}".into()).await.is_err(),
        "an edge wrote a revocation"
    );
    let forged: Vec<String> = mesh
        .permission_violations()
        .into_iter()
        .filter(|v| !v.contains("ctl_revoked.sub"))
        .collect();
    assert!(
        forged.is_empty(),
        "permission violations:\n{}",
        forged.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_while_a_revocation_is_written_closes_the_sessions_when_it_heals() {
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    create_refdata(&mesh).await;
    // The deployment's state: the bucket on the hub (something revoked earlier) and its
    // mirror in the region.
    mesh.revoke(&Revoked::Jti("an-earlier-one".into()), now())
        .await
        .unwrap();
    mesh.create_revocation_mirror(A).await.unwrap();
    // The edge reaches its leaf node through a link the test can cut.
    let leaves = mesh.region(A).leaves.iter();
    let leaves = leaves.map(|l| SocketAddr::from(([127, 0, 0, 1], l.port)));
    let link = Proxy::start(leaves.collect()).await.unwrap();
    let mut config = edge_config(&mesh, A);
    config.nats.urls = vec![format!("nats://{}", link.addr())];
    let (_edge, addr) = start_edge(config).await.unwrap();
    let old = token("carol", now() - 60);
    let mut carol = session(addr, &old).await;
    let mut dave = session(addr, &token("dave", now() - 60)).await;

    link.black_hole();
    link.reset();
    let body = wait_readyz(addr, 503, 10 * SECOND).await;
    assert_eq!(body, "NATS disconnected");
    let what = Revoked::Sub("carol".into());
    mesh.revoke(&what, now()).await.unwrap();
    mesh.wait_mirrored(A, &what).await.unwrap();
    // Nothing reached the edge meanwhile: carol is still streaming.
    let quiet = carol.collect(SECOND).await;
    assert!(
        quiet.is_ok(),
        "carol's session ended during the cut: {quiet:?}"
    );

    let healed = Instant::now();
    link.pass();
    let code = carol.closed_within(10 * SECOND, |_| {}).await.unwrap();
    let took = healed.elapsed();
    assert_eq!(code, Some(4403));
    assert!(
        took < SECOND,
        "carol's session closed {took:?} after the link healed"
    );
    eprintln!("closed {took:?} after the link healed");
    wait_readyz(addr, 200, 10 * SECOND).await;
    assert_eq!(upgrade(addr, &old).await, (401, "token revoked".into()));
    dave.ping(1).await.unwrap();
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let stored = metrics
        .lines()
        .find(|l| l.starts_with("tickmesh_edge_revocations_stored "))
        .map(|l| l.to_string());
    assert_eq!(
        stored.as_deref(),
        Some("tickmesh_edge_revocations_stored 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_cannot_replay_the_revocations_is_not_ready() {
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    create_refdata(&mesh).await;
    // No mirror in the region, and the hub out of reach: the edge cannot know what is
    // revoked.
    mesh.region(A).link.black_hole();
    let config = edge_config(&mesh, A);
    let listener = tickmesh_edge::bind(config.listen).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let edge = tokio::spawn(async move {
        tickmesh_edge::run(config, listener, async move { stopped.cancelled().await }).await
    });
    let mut last = (0, String::new());
    let until = Instant::now() + 4 * SECOND;
    while Instant::now() < until {
        last = readyz(addr).await;
        assert_ne!(last.0, 200, "ready without the revocations");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, (503, "revocations not replayed yet".into()));
    // The hub answers again: no bucket there, nothing revoked, ready.
    mesh.region(A).link.pass();
    wait_readyz(addr, 200, 20 * SECOND).await;
    // Its watch of the hub's bucket, which does not exist yet, is opened again every
    // second: the first revocation written there still closes the user's session.
    let mut erin = session(addr, &token("erin", now() - 60)).await;
    mesh.revoke(&Revoked::Sub("erin".into()), now())
        .await
        .unwrap();
    let code = erin.closed_within(5 * SECOND, |_| {}).await.unwrap();
    assert_eq!(code, Some(4403), "erin's session after the bucket appeared");
    stop.cancel();
    let _ = tokio::time::timeout(5 * SECOND, edge).await;
}

/// A region whose JetStream cannot serve a replay (one of its two leaf nodes down: no
/// quorum) is passed over within `snapshot.kv_timeout_ms`: an edge that starts there
/// replays the hub's bucket, and refuses the revoked token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_regions_jetstream_is_down_replays_the_hubs_bucket() {
    let mut mesh = Mesh::start(&[A], 2).await.unwrap();
    create_refdata(&mesh).await;
    let what = Revoked::Sub("frank".into());
    mesh.revoke(&what, now() - 10).await.unwrap();
    mesh.create_revocation_mirror(A).await.unwrap();
    mesh.wait_mirrored(A, &what).await.unwrap();
    // The node without the mirror goes: the survivor still answers for the mirror's
    // stream, but without a quorum nothing can make the consumer a replay needs.
    let (leader, _) = mesh
        .region_stream_leader(A, "KV_ctl_revoked")
        .await
        .expect("no node of the region leads the mirror");
    mesh.region_mut(A).leaves[1 - leader].kill();
    let (_edge, addr) = start_edge(edge_config(&mesh, A)).await.unwrap();
    assert_eq!(
        upgrade(addr, &token("frank", now() - 60)).await,
        (401, "token revoked".into())
    );
    assert_eq!(upgrade(addr, &token("grace", now() - 60)).await.0, 101);
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tickmesh_edge_revocation_replays_total{source=\"hub\"}")),
        "not replayed from the hub:\n{metrics}"
    );
}

/// On one nats-server (the hub's bucket, no region): a `jti` entry closes the sessions of
/// that token and no other; a `sub` entry whose value is not `{"at": <seconds>}` refuses
/// every token of the user, a fresh one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_entries_close_the_sessions_of_a_token_id_and_malformed_ones_every_token() {
    use async_nats::jetstream::kv;
    use tickmesh_core::revocation::{BUCKET, Value};
    let nats = NatsServer::start().unwrap();
    create_empty_refdata(&nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = js
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = tickmesh_tests::edge_config(&nats.url());
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.anonymous = false;
    let (edge, addr) = start_edge(config).await.unwrap();
    let with_jti = |sub: &str, jti: &str| {
        let claims = json!({"sub": sub, "iat": now() - 60, "exp": now() + 600, "ent": ["*"],
            "tier": "pro", "jti": jti});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let (t1, t2) = (with_jti("sam", "t-1"), with_jti("sam", "t-2"));
    let mut holders = [session(addr, &t1).await, session(addr, &t1).await];
    let mut other = session(addr, &t2).await;
    let jti = Revoked::Jti("t-1".into()).key().unwrap();
    bucket
        .put(&jti, Value { at: now() }.to_json().into())
        .await
        .unwrap();
    for c in &mut holders {
        assert_eq!(
            c.closed_within(5 * SECOND, |_| {}).await.unwrap(),
            Some(4403)
        );
    }
    assert_eq!(upgrade(addr, &t1).await, (401, "token revoked".into()));
    other.ping(1).await.unwrap();
    assert_eq!(upgrade(addr, &t2).await.0, 101);

    // A value nested past the bound (though it holds an `at` of long ago) is not read as
    // one: every token of the user is refused, issued before it or after.
    let sub = Revoked::Sub("sam".into()).key().unwrap();
    let deep = format!(r#"{{"at": 1, "x": {}{}}}"#, "[".repeat(40), "]".repeat(40));
    bucket.put(&sub, deep.into()).await.unwrap();
    assert_eq!(
        other.closed_within(5 * SECOND, |_| {}).await.unwrap(),
        Some(4403)
    );
    assert_eq!(
        upgrade(addr, &token("sam", now())).await,
        (401, "token revoked".into())
    );
    // Deleted, both revocations are lifted.
    bucket.delete(&sub).await.unwrap();
    bucket.delete(&jti).await.unwrap();
    let deadline = Instant::now() + 5 * SECOND;
    while upgrade(addr, &t1).await.0 != 101 {
        assert!(
            Instant::now() < deadline,
            "t-1 still refused after the delete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge.stop().await.unwrap();
}
