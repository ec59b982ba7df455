//! The mesh's NATS servers, from `nats/hub.conf` and `nats/leaf.conf`, speak only TLS and
//! give each service the least it needs (`nats/include/*.conf`): ingest publishes ticks
//! and writes KV; an edge subscribes and reads; an operator publishes control messages;
//! a region's leaf-node link cannot inject anything into the hub, even from a server
//! that drops the region's own export denials.
//!
//! Each refusal is checked as a user of the mesh would notice it: the message never
//! arrives, the value never changes; and the server names the violation to the client
//! that tried.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tickmesh_tests::mesh::{HUB_DOMAIN, Mesh};
use tickmesh_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const A: &str = "region-a";
const SECOND: Duration = Duration::from_secs(1);

/// A client as `user` whose server errors (permission violations) are collected.
async fn client_as(
    mesh: &Mesh,
    user: &str,
    urls: &[String],
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let urls: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let client = tickmesh_service::nats::options(&mesh.pki.tls(), &mesh.pki.auth(user))
        .await
        .unwrap()
        .name(format!("security-{user}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(urls)
        .await
        .unwrap();
    (client, rx)
}

/// Waits for the server to name a violation on `subject` to this client.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let want = format!("\"{}\"", subject.to_lowercase());
    let found = tokio::time::timeout(2 * SECOND, async {
        while let Some(e) = errors.recv().await {
            let e = e.to_lowercase();
            if e.contains("permissions violation") && e.contains(&want) {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no permissions violation reported for {subject}"
    );
}

/// Whether `sub` receives anything within half a second.
async fn receives(sub: &mut async_nats::Subscriber) -> bool {
    tokio::time::timeout(Duration::from_millis(500), sub.next())
        .await
        .is_ok_and(|m| m.is_some())
}

/// The hub's `md_last` value of `key`, read by an operator.
async fn hub_value(mesh: &Mesh, key: &str) -> Option<Vec<u8>> {
    let js = jetstream::with_domain(mesh.hub_client().await.unwrap(), HUB_DOMAIN);
    let value = js
        .get_key_value("md_last")
        .await
        .ok()?
        .get(key)
        .await
        .ok()??;
    Some(value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nats_user_gets_only_what_its_service_needs() {
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(200));
    let hub = mesh.hub_urls();
    let region = mesh.region(A).urls();
    let admin = mesh.hub_client().await.unwrap();
    let mut ticks = admin.subscribe("md.*.AAPL").await.unwrap();
    let mut fake = admin.subscribe("md.*.FAKE").await.unwrap();
    let mut revoke = admin.subscribe("ctl.revoke").await.unwrap();
    admin.flush().await.unwrap();
    assert!(receives(&mut ticks).await, "ingest's ticks do not arrive");
    let deadline = tokio::time::Instant::now() + 20 * SECOND;
    while hub_value(&mesh, "AAPL").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no md_last/AAPL in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An edge on the hub: subscribes to ticks and reads KV; publishes nothing of its own.
    let (edge, mut errors) = client_as(&mesh, "edge", &hub).await;
    let mut edge_ticks = edge.subscribe("md.*.AAPL").await.unwrap();
    edge.flush().await.unwrap();
    assert!(
        receives(&mut edge_ticks).await,
        "the edge user gets no ticks"
    );
    let js = jetstream::ContextBuilder::new()
        .domain(HUB_DOMAIN)
        .timeout(SECOND)
        .build(edge.clone());
    let kv = js.get_key_value("md_last").await.unwrap();
    let before = kv
        .get("AAPL")
        .await
        .unwrap()
        .expect("the edge user reads md_last");
    edge.publish("md.0.FAKE", "x".into()).await.unwrap();
    violation(&mut errors, "md.0.FAKE").await;
    assert!(!receives(&mut fake).await, "an edge published a tick");
    edge.publish("ctl.revoke", "{\"sub\":\"anyone\"}".into())
        .await
        .unwrap();
    violation(&mut errors, "ctl.revoke").await;
    assert!(!receives(&mut revoke).await, "an edge revoked a user");
    assert!(
        kv.put("AAPL", "forged".into()).await.is_err(),
        "an edge wrote md_last"
    );
    violation(&mut errors, "$KV.md_last.AAPL").await;
    let created = js
        .create_key_value(jetstream::kv::Config {
            bucket: "md_forged".into(),
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "an edge created a bucket on the hub");
    assert_ne!(hub_value(&mesh, "AAPL").await.unwrap(), b"forged");
    drop(before);

    // An edge in a region reads the region's mirror... once an operator (or an edge with
    // nats.kv_mirror_create) made it.
    mesh.create_mirror(A, "AAPL").await.unwrap();
    let (region_edge, mut region_errors) = client_as(&mesh, "edge", &region).await;
    let js = jetstream::ContextBuilder::new()
        .domain(A)
        .timeout(SECOND)
        .build(region_edge.clone());
    let mirror = js.get_key_value("md_last").await.unwrap();
    assert!(
        mirror.get("AAPL").await.unwrap().is_some(),
        "no mirror read"
    );
    region_edge.publish("md.0.FAKE", "x".into()).await.unwrap();
    violation(&mut region_errors, "md.0.FAKE").await;
    assert!(
        !receives(&mut fake).await,
        "a region's edge published a tick"
    );

    // Ingest: ticks and KV writes, no control messages, no reading them either.
    let (ingest_user, mut ingest_errors) = client_as(&mesh, "ingest", &hub).await;
    let mut ctl = ingest_user.subscribe("ctl.>").await.unwrap();
    ingest_user.flush().await.unwrap();
    violation(&mut ingest_errors, "ctl.>").await;
    ingest_user
        .publish("ctl.revoke", "{\"sub\":\"anyone\"}".into())
        .await
        .unwrap();
    violation(&mut ingest_errors, "ctl.revoke").await;
    assert!(!receives(&mut revoke).await, "ingest revoked a user");
    assert!(!receives(&mut ctl).await);

    // An operator revokes; it cannot forge a tick.
    admin
        .publish("ctl.revoke", "{\"sub\":\"mallory\"}".into())
        .await
        .unwrap();
    assert!(
        receives(&mut revoke).await,
        "the operator's revocation is lost"
    );
    let (admin2, mut admin_errors) = client_as(&mesh, "admin", &hub).await;
    admin2.publish("md.0.FAKE", "x".into()).await.unwrap();
    violation(&mut admin_errors, "md.0.FAKE").await;
    assert!(!receives(&mut fake).await, "an operator published a tick");

    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_clients_with_a_known_password_get_in() {
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    for url in [&mesh.hub_urls()[0], &mesh.region(A).urls()[0]] {
        // In clear: the server announces TLS as required and refuses to go on without it.
        let addr = url.trim_start_matches("nats://");
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let info = lines.next_line().await.unwrap().unwrap();
        assert!(info.contains("\"tls_required\":true"), "{url}: {info}");
        let password = mesh.pki.password("edge");
        let connect = format!("CONNECT {{\"user\":\"edge\",\"pass\":\"{password}\"}}\r\nPING\r\n");
        let _ = write.write_all(connect.as_bytes()).await;
        let answer = tokio::time::timeout(5 * SECOND, lines.next_line()).await;
        let answer = answer.unwrap().ok().flatten().unwrap_or_default();
        assert!(
            !answer.starts_with("PONG"),
            "{url} answered in clear: {answer}"
        );

        // TLS with a wrong password, or as a user the server does not know.
        for (user, password) in [("edge", "guess"), ("mallory", "x")] {
            let refused =
                async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                    .add_root_certificates(mesh.pki.ca.clone())
                    .require_tls(true)
                    .connect(url.as_str())
                    .await;
            let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.to_lowercase().contains("authorization"),
                "{url} let {user} in: {err:?}"
            );
        }
        // A server certificate from another CA is not trusted.
        let other = tempfile::tempdir().unwrap();
        let stranger = tickmesh_tests::mesh::Pki::create(other.path()).unwrap();
        let refused = async_nats::ConnectOptions::with_user_and_password(
            "edge".into(),
            mesh.pki.password("edge"),
        )
        .add_root_certificates(stranger.ca.clone())
        .require_tls(true)
        .connect(url.as_str())
        .await;
        assert!(
            refused.is_err(),
            "{url}: a certificate of an unknown CA was accepted"
        );
    }
    // The services' own settings: an edge and ingest with the mesh's CA and their users.
    let (edge_client, _) = client_as(&mesh, "edge", &mesh.hub_urls()).await;
    edge_client.flush().await.unwrap();
}

/// A rogue server with the region's leaf credentials and none of its export denials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_link_cannot_inject_into_the_hub() {
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let conf = dir.path().join("rogue.conf");
    std::fs::write(
        &conf,
        format!(
            "server_name: rogue\nhost: 127.0.0.1\nport: {port}\nhttp_port: {http}\n\
             leafnodes {{ reconnect: \"1s\", remotes: [ {{ urls: [\"{}\"], \
             tls: {{ ca_file: \"{}\" }} }} ] }}\n",
            mesh.leaf_url(A),
            mesh.pki.ca.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("rogue.log");
    let mut rogue = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin = mesh.hub_client().await.unwrap();
    let mut fake = admin.subscribe("md.*.FAKE").await.unwrap();
    let mut revoke = admin.subscribe("ctl.>").await.unwrap();
    let mut kv = admin.subscribe("$KV.>").await.unwrap();
    let mut probe = admin.subscribe("probe.rogue").await.unwrap();
    admin.flush().await.unwrap();

    let mut local = None;
    for _ in 0..50 {
        match async_nats::connect(format!("nats://127.0.0.1:{port}")).await {
            Ok(c) => {
                local = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let Some(local) = local else {
        let _ = rogue.kill();
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("the rogue server did not start within 5 s:\n{said}");
    };
    // The link is up and carries what it may: an ordinary subject crosses.
    let mut crossed = false;
    for _ in 0..50 {
        local.publish("probe.rogue", "x".into()).await.unwrap();
        local.flush().await.unwrap();
        if receives(&mut probe).await {
            crossed = true;
            break;
        }
    }
    for subject in ["md.0.FAKE", "ctl.revoke", "$KV.md_last.AAPL"] {
        local.publish(subject, "forged".into()).await.unwrap();
    }
    local.flush().await.unwrap();
    let (got_fake, got_revoke, got_kv) = (
        receives(&mut fake).await,
        receives(&mut revoke).await,
        receives(&mut kv).await,
    );
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert!(crossed, "the rogue leaf never linked to the hub");
    assert!(!got_fake, "a leaf link injected a tick");
    assert!(!got_revoke, "a leaf link injected a control message");
    assert!(!got_kv, "a leaf link injected a KV write");
}
