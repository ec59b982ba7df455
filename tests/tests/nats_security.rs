//! The mesh's NATS servers, from `nats/hub.conf` and `nats/leaf.conf`, speak only TLS and
//! give each service the least it needs (`nats/include/*.conf`): ingest publishes ticks
//! and writes KV; an edge subscribes and reads, and takes only its own user's replies; an
//! operator publishes control messages and manages JetStream; a region's leaf-node link
//! carries the mirror and the edges' reads, and cannot inject, delete or step down
//! anything in the hub, even from a server that drops the region's own export denials;
//! only the order system appends to the account stream, which edges only read.
//!
//! Each refusal is checked as a user of the mesh would notice it: the message never
//! arrives, the value never changes, the stream, bucket or consumer is still there (or
//! never was); and the server names the violation to the client that tried. Each needed
//! operation is checked to work.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
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

/// Waits for the server to name a violation on `subject` to this client. A server names a
/// call into its own JetStream domain (`$JS.<domain>.API.…`) by the local API subject
/// (`$JS.API.…`) it maps the call to; either is taken.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) {
    let want = format!("\"{}\"", subject.to_lowercase());
    let local = match subject.split('.').collect::<Vec<_>>().as_slice() {
        ["$JS", _, "API", rest @ ..] => format!("\"$js.api.{}\"", rest.join(".").to_lowercase()),
        _ => want.clone(),
    };
    let mut others = Vec::new();
    let found = tokio::time::timeout(2 * SECOND, async {
        while let Some(e) = errors.recv().await {
            let lower = e.to_lowercase();
            if lower.contains("permissions violation")
                && (lower.contains(&want) || lower.contains(&local))
            {
                return;
            }
            others.push(e);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no permissions violation reported for {subject}; the server said {others:?}"
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

/// A JetStream context of `client` in `domain`, whose calls give up after a second.
fn js_in(client: &async_nats::Client, domain: &str) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .domain(domain)
        .timeout(SECOND)
        .build(client.clone())
}

/// JetStream API calls no edge makes: each is refused by name.
const EDGE_NEVER_CALLS: [&str; 8] = [
    "$JS.hub.API.STREAM.UPDATE.KV_md_last",
    "$JS.hub.API.STREAM.PURGE.KV_md_last",
    "$JS.hub.API.STREAM.MSG.DELETE.KV_md_last",
    "$JS.hub.API.CONSUMER.DELETE.KV_md_last.any",
    "$JS.hub.API.CONSUMER.CREATE.KV_md_lease",
    "$JS.hub.API.STREAM.NAMES",
    "$JS.hub.API.META.LEADER.STEPDOWN",
    "$JS.hub.API.SERVER.REMOVE",
];

/// What an edge (as `client`, in `domain`) may not do to streams and buckets: create or
/// delete either. Each attempt fails, the server names it, and an operator (`admin`)
/// sees nothing change.
async fn edge_cannot_make_or_remove_streams(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    admin: &async_nats::Client,
    domain: &str,
) {
    let js = js_in(client, domain);
    let operator = js_in(admin, domain);
    let made = js
        .create_stream(stream::Config {
            name: "EDGE_MADE".into(),
            subjects: vec!["edge.made.>".into()],
            ..Default::default()
        })
        .await;
    assert!(made.is_err(), "an edge created a stream in {domain}");
    violation(errors, &format!("$JS.{domain}.API.STREAM.CREATE.EDGE_MADE")).await;
    assert!(operator.get_stream("EDGE_MADE").await.is_err());
    let made = js
        .create_key_value(jetstream::kv::Config {
            bucket: "md_forged".into(),
            ..Default::default()
        })
        .await;
    assert!(made.is_err(), "an edge created a bucket in {domain}");
    violation(
        errors,
        &format!("$JS.{domain}.API.STREAM.CREATE.KV_md_forged"),
    )
    .await;
    assert!(operator.get_key_value("md_forged").await.is_err());
    assert!(
        js.delete_stream("KV_md_last").await.is_err(),
        "an edge deleted md_last in {domain}"
    );
    violation(
        errors,
        &format!("$JS.{domain}.API.STREAM.DELETE.KV_md_last"),
    )
    .await;
    assert!(
        js.delete_key_value("md_last").await.is_err(),
        "an edge deleted the bucket md_last in {domain}"
    );
    assert!(operator.get_stream("KV_md_last").await.is_ok());
}

/// An edge may take its own replies only: `_INBOX.>` and other users' inboxes are refused,
/// and an operator's reply never reaches the edge.
async fn edge_cannot_read_other_inboxes(
    edge: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    admin: &async_nats::Client,
) {
    let mut taps = Vec::new();
    for inbox in ["_INBOX.>", "_INBOX_admin.>", "_INBOX_ingest.>", ">"] {
        taps.push(edge.subscribe(inbox).await.unwrap());
        edge.flush().await.unwrap();
        violation(errors, inbox).await;
    }
    // The operator's JetStream call is answered on its own inbox, which no edge hears.
    js_in(admin, HUB_DOMAIN)
        .get_stream("KV_md_last")
        .await
        .expect("the operator reads the stream's info");
    for tap in &mut taps {
        assert!(!receives(tap).await, "an edge read an operator's reply");
    }
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
    // Its start (buckets and streams created, R3) is not what is checked: the first tick
    // may take a few seconds.
    let first = tokio::time::timeout(20 * SECOND, ticks.next()).await;
    assert!(
        first.is_ok_and(|m| m.is_some()),
        "ingest's ticks do not arrive"
    );
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
    edge_cannot_make_or_remove_streams(&edge, &mut errors, &admin, HUB_DOMAIN).await;
    for subject in EDGE_NEVER_CALLS {
        edge.publish(subject, "{}".into()).await.unwrap();
        violation(&mut errors, subject).await;
    }
    edge_cannot_read_other_inboxes(&edge, &mut errors, &admin).await;

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
    // ...falls back to the hub's md_last and watches the hub's md_ref, both across the
    // region's leaf link, as its snapshots and reference data do...
    let hub_js = js_in(&region_edge, HUB_DOMAIN);
    let fallback = hub_js.get_key_value("md_last").await.unwrap();
    assert!(
        fallback.get("AAPL").await.unwrap().is_some(),
        "no read of the hub's md_last from a region"
    );
    let refdata = hub_js.get_key_value("md_ref").await.unwrap();
    let mut entries = refdata.watch_with_history(">").await.unwrap();
    let first = tokio::time::timeout(10 * SECOND, entries.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "no md_ref entry from a watch across the leaf link: {first:?}"
    );
    // ...and neither creates nor removes a stream or bucket there or in the hub (the
    // region's mirror is the operator's).
    let region_admin = mesh.region_client(A).await.unwrap();
    edge_cannot_make_or_remove_streams(&region_edge, &mut region_errors, &region_admin, A).await;
    assert!(
        mirror.get("AAPL").await.unwrap().is_some(),
        "the mirror is gone"
    );
    assert!(
        hub_js.delete_stream("KV_md_ref").await.is_err(),
        "a region's edge deleted md_ref"
    );
    violation(&mut region_errors, "$JS.hub.API.STREAM.DELETE.KV_md_ref").await;

    // Ingest: ticks and KV writes, no control messages, no reading them either.
    let (ingest_user, mut ingest_errors) = client_as(&mesh, "ingest", &hub).await;
    // What `tickmesh-ingest record` reads, as ingest: the ticks and their prints.
    for subject in ["md.>", "tr.>"] {
        let mut tap = ingest_user.subscribe(subject).await.unwrap();
        ingest_user.flush().await.unwrap();
        assert!(
            receives(&mut tap).await,
            "the ingest user cannot read {subject}"
        );
    }
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
    // It manages its own buckets, but deletes none, and reads no one else's replies.
    let ingest_js = jetstream::ContextBuilder::new()
        .timeout(SECOND)
        .build(ingest_user.clone());
    assert!(
        ingest_js.delete_stream("KV_md_last").await.is_err(),
        "ingest deleted md_last"
    );
    violation(&mut ingest_errors, "$JS.API.STREAM.DELETE.KV_md_last").await;
    assert!(hub_value(&mesh, "AAPL").await.is_some(), "md_last is gone");
    for inbox in ["_INBOX.>", "_INBOX_edge.>", "_INBOX_admin.>"] {
        let _tap = ingest_user.subscribe(inbox).await.unwrap();
        ingest_user.flush().await.unwrap();
        violation(&mut ingest_errors, inbox).await;
    }
    // Nor does it touch a stream that is not its own: the revocations, or a purge.
    for subject in [
        "$KV.ctl_revoked.sub.mallory",
        "$JS.API.STREAM.INFO.KV_ctl_revoked",
        "$JS.API.STREAM.PURGE.KV_md_ref",
    ] {
        ingest_user.publish(subject, "{}".into()).await.unwrap();
        violation(&mut ingest_errors, subject).await;
    }

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
    admin2
        .publish("$KV.md_last.AAPL", "forged".into())
        .await
        .unwrap();
    violation(&mut admin_errors, "$KV.md_last.AAPL").await;
    assert_ne!(hub_value(&mesh, "AAPL").await.unwrap(), b"forged");

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

/// The hub's JetStream meta leader, as the first hub node sees it.
async fn meta_leader(mesh: &Mesh) -> String {
    let jsz = mesh.hub[0].monitor("/jsz").await.unwrap();
    jsz["meta_cluster"]["leader"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A rogue server with the region's leaf credentials and none of its export denials: what
/// its clients publish cannot reach the hub as a tick, a control message or a KV write,
/// cannot delete, step down or remove anything in the hub's JetStream, and what the hub
/// sends it is only what a region needs (no other user's replies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_link_cannot_inject_into_or_manage_the_hub() {
    let mut mesh = Mesh::start(&[A], 2).await.unwrap();
    // A replicated stream with a durable consumer, for the leaf link to try to break.
    let admin = mesh.hub_client().await.unwrap();
    let operator = js_in(&admin, HUB_DOMAIN);
    let deadline = tokio::time::Instant::now() + 20 * SECOND;
    let probe = loop {
        let made = operator
            .get_or_create_stream(stream::Config {
                name: "PROBE".into(),
                subjects: vec!["probe.data.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match made {
            Ok(s) => break s,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no replicated stream in 20 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    probe
        .create_consumer(consumer::pull::Config {
            durable_name: Some("probe-durable".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let stream_leader = mesh.stream_leader("PROBE").await.unwrap();
    let meta = meta_leader(&mesh).await;
    assert!(!meta.is_empty(), "no meta leader");

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
    let mut fake = admin.subscribe("md.*.FAKE").await.unwrap();
    let mut revoke = admin.subscribe("ctl.revoke").await.unwrap();
    let mut kv = admin.subscribe("$KV.>").await.unwrap();
    let mut plain = admin.subscribe("probe.rogue").await.unwrap();
    admin.flush().await.unwrap();

    // A client of the rogue server, with replies of its own (`_INBOX_rogue`), so that the
    // taps below hear only what crosses the link.
    let mut local = None;
    for _ in 0..50 {
        let options = async_nats::ConnectOptions::new().custom_inbox_prefix("_INBOX_rogue");
        match options.connect(format!("127.0.0.1:{port}")).await {
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
    // Taps on other users' replies, made before the link is known to be up.
    let mut taps = Vec::new();
    for inbox in ["_INBOX.>", "_INBOX_admin.>", "_INBOX_ingest.>"] {
        taps.push(local.subscribe(inbox).await.unwrap());
    }
    // The link is up and carries what a region needs: control messages come down it.
    let mut control = local.subscribe("ctl.>").await.unwrap();
    local.flush().await.unwrap();
    let mut crossed = false;
    for _ in 0..50 {
        admin.publish("ctl.probe", "x".into()).await.unwrap();
        admin.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(200), control.next())
            .await
            .is_ok()
        {
            crossed = true;
            break;
        }
    }
    for subject in ["md.0.FAKE", "ctl.revoke", "$KV.md_last.AAPL", "probe.rogue"] {
        local.publish(subject, "forged".into()).await.unwrap();
    }
    local.flush().await.unwrap();
    // Management calls, in the hub's domain and in the local API a leaf without
    // JetStream would otherwise reach: none gets an answer.
    let mut answered = Vec::new();
    for (subject, body) in [
        ("$JS.hub.API.META.LEADER.STEPDOWN", "{}".to_string()),
        ("$JS.API.META.LEADER.STEPDOWN", "{}".into()),
        ("$JS.hub.API.SERVER.REMOVE", r#"{"peer":"hub-3"}"#.into()),
        ("$JS.API.SERVER.REMOVE", r#"{"peer":"hub-3"}"#.into()),
        ("$JS.hub.API.STREAM.LEADER.STEPDOWN.PROBE", "{}".into()),
        (
            "$JS.hub.API.STREAM.PEER.REMOVE.PROBE",
            r#"{"peer":"hub-2"}"#.into(),
        ),
        (
            "$JS.hub.API.CONSUMER.LEADER.STEPDOWN.PROBE.probe-durable",
            "{}".into(),
        ),
        (
            "$JS.hub.API.CONSUMER.DELETE.PROBE.probe-durable",
            "{}".into(),
        ),
        ("$JS.API.CONSUMER.DELETE.PROBE.probe-durable", "{}".into()),
        ("$JS.hub.API.STREAM.DELETE.PROBE", "{}".into()),
        ("$JS.API.STREAM.DELETE.PROBE", "{}".into()),
        (
            "$JS.hub.API.STREAM.CREATE.ROGUE",
            r#"{"name":"ROGUE"}"#.into(),
        ),
    ] {
        let reply = tokio::time::timeout(SECOND, local.request(subject, body.into())).await;
        if let Ok(Ok(m)) = reply {
            answered.push(format!(
                "{subject}: {}",
                String::from_utf8_lossy(&m.payload)
            ));
        }
    }
    // An operator's call, answered on the operator's inbox.
    operator.get_stream("PROBE").await.unwrap();
    let (got_fake, got_revoke, got_kv, got_plain) = (
        receives(&mut fake).await,
        receives(&mut revoke).await,
        receives(&mut kv).await,
        receives(&mut plain).await,
    );
    let mut tapped = false;
    for tap in &mut taps {
        tapped |= receives(tap).await;
    }
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert!(crossed, "the rogue leaf never linked to the hub");
    // Every failure at once: each names a hole in the leaf user's permissions.
    let mut holes = Vec::new();
    for (got, what) in [
        (got_fake, "injected a tick"),
        (got_revoke, "injected a control message"),
        (got_kv, "injected a KV write"),
        (got_plain, "published outside what a region needs"),
        (tapped, "read another user's replies"),
    ] {
        if got {
            holes.push(what.to_string());
        }
    }
    if !answered.is_empty() {
        holes.push(format!("was answered: {answered:?}"));
    }

    // Nothing changed: same leaders, all peers, the stream and its consumer.
    tokio::time::sleep(SECOND).await;
    if meta_leader(&mesh).await != meta {
        holes.push("stepped the meta leader down".into());
    }
    if mesh.stream_leader("PROBE").await.ok() != Some(stream_leader) {
        holes.push("stepped the stream leader down".into());
    }
    match operator.get_stream("PROBE").await {
        Err(_) => holes.push("deleted the stream".into()),
        Ok(mut probe) => {
            let info = probe.info().await.unwrap();
            let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
            if peers != 2 {
                holes.push(format!("removed a peer of the stream: {:?}", info.cluster));
            }
            if probe.consumer_info("probe-durable").await.is_err() {
                holes.push("deleted the consumer".into());
            }
        }
    }
    let jsz = mesh.hub[0].monitor("/jsz").await.unwrap();
    if jsz["meta_cluster"]["cluster_size"].as_u64() != Some(3) {
        holes.push(format!("removed a hub server: {}", jsz["meta_cluster"]));
    }
    assert!(holes.is_empty(), "a leaf link {}", holes.join("; "));
}

/// The account stream: only the order system (user `oms`) appends to `acct` and writes
/// `acct_snap`, and it can purge or delete neither; an edge in a region reads an account
/// through the hub's domain (its events by direct gets, an ordered consumer and live as
/// republished, its snapshot) and changes nothing; ingest and operators append nothing,
/// and nobody publishes a live event but the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_order_system_appends_to_accounts_and_edges_only_read_them() {
    use tickmesh_core::account::{self, Balance, Data, Event};
    use tickmesh_oms::writer::{self, StreamConfig, Writer};
    use tickmesh_tests::oms::{snapshot, stored_events};

    let mesh = Mesh::start(&[A], 2).await.unwrap();
    let hub = mesh.hub_urls();
    let deposit = |cash: f64| {
        Data::Balance(Balance {
            currency: "USD".into(),
            cash,
            realized_pnl: 0.0,
        })
    };
    let seqs = |events: &[tickmesh_tests::oms::Stored]| -> Vec<u64> {
        events.iter().map(|s| s.event.seq).collect()
    };

    // The order system creates the stream and the bucket with 3 replicas and appends.
    let (oms, mut oms_errors) = client_as(&mesh, "oms", &hub).await;
    let oms_js = jetstream::new(oms.clone());
    let config = StreamConfig {
        replicas: 3,
        ..StreamConfig::default()
    };
    let writer = Writer::open(oms_js.clone(), &config).await.unwrap();
    let mut log = writer.account("ACC1").await.unwrap();
    log.append(deposit(1.0)).await.unwrap();
    log.append(deposit(2.0)).await.unwrap();
    // An event appended without its snapshot, as a crash would leave it: the rebuild
    // reads it through an ordered consumer.
    let third = Event {
        account: "ACC1".into(),
        seq: 3,
        ts: tickmesh_core::tick::now_us(),
        data: deposit(3.0),
    };
    writer::publish(&oms_js, &third, log.stream_seq())
        .await
        .unwrap();
    assert_eq!(writer.account("ACC1").await.unwrap().state().seq, 3);
    // It purges and deletes nothing, and writes no other bucket.
    let acct = oms_js.get_stream(account::STREAM).await.unwrap();
    assert!(acct.purge().await.is_err(), "the order system purged acct");
    violation(&mut oms_errors, "$JS.API.STREAM.PURGE.acct").await;
    assert!(oms_js.delete_stream(account::STREAM).await.is_err());
    violation(&mut oms_errors, "$JS.API.STREAM.DELETE.acct").await;
    oms.publish("$KV.md_last.AAPL", "forged".into())
        .await
        .unwrap();
    violation(&mut oms_errors, "$KV.md_last.AAPL").await;

    // An edge in region A reads the account through the hub's domain: its events by
    // direct gets (one, the next on the account's subjects, a batch) and live as the
    // stream republishes them...
    let (edge, mut edge_errors) = client_as(&mesh, "edge", &mesh.region(A).urls()).await;
    let hub_js = jetstream::ContextBuilder::new()
        .domain(HUB_DOMAIN)
        .timeout(5 * SECOND)
        .build(edge.clone());
    let events = stored_events(&jetstream::new(oms.clone()), "ACC1")
        .await
        .unwrap();
    assert_eq!(seqs(&events), [1, 2, 3]);
    let stream = hub_js.get_stream(account::STREAM).await.unwrap();
    let first = stream.direct_get(events[0].stream_seq).await.unwrap();
    assert_eq!(
        account::decode_wire(&first.payload).unwrap(),
        events[0].event
    );
    let next = stream
        .direct_get_next_for_subject(account::filter("ACC1"), Some(events[1].stream_seq))
        .await
        .unwrap();
    assert_eq!(
        account::decode_wire(&next.payload).unwrap(),
        events[1].event
    );
    let inbox = edge.new_inbox();
    let mut batch = edge.subscribe(inbox.clone()).await.unwrap();
    let request = format!(
        r#"{{"seq":1,"next_by_subj":"{}","batch":10}}"#,
        account::filter("ACC1")
    );
    edge.publish_with_reply("$JS.hub.API.DIRECT.GET.acct", inbox, request.into())
        .await
        .unwrap();
    for want in &events {
        let msg = tokio::time::timeout(5 * SECOND, batch.next())
            .await
            .expect("a batched event within 5 s")
            .unwrap();
        assert_eq!(account::decode_wire(&msg.payload).unwrap(), want.event);
    }
    let mut live = edge.subscribe(account::live_filter("ACC1")).await.unwrap();
    edge.flush().await.unwrap();
    // Interest crosses the leaf link after the subscription: append once it has.
    tokio::time::sleep(SECOND).await;
    let mut log = writer.account("ACC1").await.unwrap();
    log.append(deposit(4.0)).await.unwrap();
    let msg = tokio::time::timeout(5 * SECOND, live.next())
        .await
        .expect("the appended event live within 5 s")
        .unwrap();
    let fourth = account::decode_wire(&msg.payload).unwrap();
    assert_eq!((fourth.account.as_str(), fourth.seq), ("ACC1", 4));
    // An ordered consumer filtered to the account (its fetches are requests of their
    // own).
    let pulled = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: account::filter("ACC1"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = pulled.messages().await.unwrap();
    for want in [1, 2, 3, 4] {
        let msg = tokio::time::timeout(5 * SECOND, messages.next())
            .await
            .expect("a pulled event within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(account::decode_wire(&msg.payload).unwrap().seq, want);
    }
    assert_eq!(snapshot(&hub_js, "ACC1").await.unwrap().state.seq, 4);
    // ...and changes nothing: no append, no core subscription, no purge, no snapshot.
    edge.publish("acct.ACC1.balance", account::encode_wire(&third).into())
        .await
        .unwrap();
    violation(&mut edge_errors, "acct.ACC1.balance").await;
    let _tap = edge.subscribe("acct.>").await.unwrap();
    edge.flush().await.unwrap();
    violation(&mut edge_errors, "acct.>").await;
    assert!(stream.purge().await.is_err(), "an edge purged acct");
    violation(&mut edge_errors, "$JS.hub.API.STREAM.PURGE.acct").await;
    let snaps = hub_js.get_key_value(account::SNAPSHOTS).await.unwrap();
    assert!(snaps.put("ACC1", "{}".into()).await.is_err());
    violation(&mut edge_errors, "$JS.hub.API.$KV.acct_snap.ACC1").await;
    edge.publish("acctlive.ACC1.balance", account::encode_wire(&third).into())
        .await
        .unwrap();
    violation(&mut edge_errors, "acctlive.ACC1.balance").await;

    // Ingest neither appends nor reads; an operator does not append.
    let (ingest, mut ingest_errors) = client_as(&mesh, "ingest", &hub).await;
    ingest.publish("acct.ACC1.fill", "{}".into()).await.unwrap();
    violation(&mut ingest_errors, "acct.ACC1.fill").await;
    let ingest_js = jetstream::ContextBuilder::new()
        .timeout(SECOND)
        .build(ingest.clone());
    assert!(ingest_js.get_stream(account::STREAM).await.is_err());
    violation(&mut ingest_errors, "$JS.API.STREAM.INFO.acct").await;
    let (admin, mut admin_errors) = client_as(&mesh, "admin", &hub).await;
    admin.publish("acct.ACC1.fill", "{}".into()).await.unwrap();
    violation(&mut admin_errors, "acct.ACC1.fill").await;
    oms.publish("acctlive.ACC1.fill", "{}".into())
        .await
        .unwrap();
    violation(&mut oms_errors, "acctlive.ACC1.fill").await;
    admin
        .publish("$KV.acct_snap.ACC1", "{}".into())
        .await
        .unwrap();
    violation(&mut admin_errors, "$KV.acct_snap.ACC1").await;

    // None of it reached the stream or the bucket.
    let operator = jetstream::new(admin);
    assert_eq!(
        seqs(&stored_events(&operator, "ACC1").await.unwrap()),
        [1, 2, 3, 4]
    );
    assert_eq!(snapshot(&operator, "ACC1").await.unwrap().state.seq, 4);
}
