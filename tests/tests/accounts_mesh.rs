//! Account channels through the deployment's topology and its faults: the stream `acct`
//! on the 3-node hub, edges in two regions reading it through the hub's JetStream domain
//! with their least-privilege NATS user. A client whose edge is killed resumes on the
//! other region's edge with `from_seq` and ends with exactly the events of a client that
//! stayed connected; a region cut off from the hub resumes its clients' account streams
//! where they were once the link heals.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::accounts::{self, Writer};
use tickmesh_tests::mesh::{EdgeProcess, Mesh};
use tickmesh_tests::*;
use tokio::task::JoinHandle;

const A: &str = "region-a";
const B: &str = "region-b";
const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "an-accounts-mesh-hs256-secret-of-32-bytes";
/// Events the writer appends, one every [`EVERY`].
const EVENTS: u64 = 300;
const EVERY: Duration = Duration::from_millis(25);

/// The mesh with ingest on the hub (reference data, so edges turn ready) and the account
/// stream on the hub.
async fn world() -> (Mesh, Service, Writer) {
    let mesh = Mesh::start(&[A, B], 2).await.unwrap();
    let ingest = start_ingest(mesh.ingest_config(200));
    let hub = async_nats::jetstream::new(mesh.hub_client_as("oms").await.unwrap());
    let writer = Writer::on(hub).await.unwrap();
    (mesh, ingest, writer)
}

fn edge_config(mesh: &Mesh, region: &str) -> tickmesh_edge::config::EdgeConfig {
    let mut c = mesh.edge_config(region);
    c.auth.hs256_secret = Some(SECRET.into());
    c
}

/// Appends [`EVENTS`] events to DEMO1, one every [`EVERY`]; returns the last seq.
fn write_on(mut writer: Writer) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut last = 0;
        for _ in 0..EVENTS {
            last = writer.append("DEMO1").await.unwrap().seq;
            tokio::time::sleep(EVERY).await;
        }
        last
    })
}

async fn subscribed(addr: SocketAddr, from_seq: Option<u64>) -> Client {
    let token = accounts::token(SECRET, "trader", &["DEMO1"]);
    let mut c = Client::connect_with(addr, Format::Json, Some(&token))
        .await
        .unwrap();
    let mut req = json!({"op":"subscribe","id":1,"account":"DEMO1"});
    if let Some(n) = from_seq {
        req["from_seq"] = json!(n);
    }
    c.send(req).await.unwrap();
    let reply = c.next_non_hb(10 * SECOND).await.unwrap();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    c
}

/// What a client keeps of an account: the snapshot's seq, then each event it got.
#[derive(Default)]
struct Log {
    snapshot: Option<u64>,
    events: Vec<Value>,
}

impl Log {
    fn last(&self) -> Option<u64> {
        let last = self.events.last().and_then(|e| e["seq"].as_u64());
        last.or(self.snapshot)
    }

    fn take(&mut self, v: Value) {
        match v["type"].as_str() {
            Some("account_snapshot") => self.snapshot = v["seq"].as_u64(),
            Some("account") => self.events.push(v),
            Some("error") => panic!("{v}"),
            _ => {}
        }
    }

    /// Each seq after the snapshot once and in order, up to `last`.
    fn assert_whole(&self, who: &str, last: u64) {
        let first = self.snapshot.expect("a snapshot") + 1;
        let seqs: Vec<u64> = self
            .events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (first..=last).collect();
        assert!(
            seqs == want,
            "{who}: {} events from {:?} to {:?}, want {first} to {last}; first difference at {:?}",
            seqs.len(),
            seqs.first(),
            seqs.last(),
            seqs.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}

/// Reads `c` into `log` until event `last` came, the socket ended, or `within` passed;
/// whether `last` came.
async fn read_until(c: &mut Client, log: &mut Log, last: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while log.last() != Some(last) {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_event(left).await {
            Ok(Event::Msg(v)) => log.take(v),
            Ok(Event::Closed(_)) | Err(_) => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_edge_resumes_in_the_other_region_and_misses_nothing() {
    let (mesh, ingest, writer) = world().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tickmesh-test-edge"));
    let env = [("TICKMESH_EDGE_AUTH__HS256_SECRET", SECRET.to_string())];
    let mut edge_a = EdgeProcess::launch(bin, None, &edge_config(&mesh, A), &env)
        .await
        .unwrap();
    edge_a.ready_within(40 * SECOND).await.unwrap();
    let (edge_b, addr_b) = start_edge(edge_config(&mesh, B)).await.unwrap();

    let mut roamer = subscribed(edge_a.addr, None).await;
    let mut stayer = subscribed(addr_b, None).await;
    let writing = write_on(writer);
    let (mut roamed, mut stayed) = (Log::default(), Log::default());
    // A second of events, then the roamer's edge dies.
    read_until(&mut roamer, &mut roamed, u64::MAX, SECOND).await;
    edge_a.kill();
    assert!(!read_until(&mut roamer, &mut roamed, u64::MAX, 5 * SECOND).await);
    let resume_at = roamed.last().unwrap() + 1;
    let mut roamer = subscribed(addr_b, Some(resume_at)).await;
    let last = writing.await.unwrap();
    let (r, s) = tokio::join!(
        read_until(&mut roamer, &mut roamed, last, 30 * SECOND),
        read_until(&mut stayer, &mut stayed, last, 30 * SECOND)
    );
    assert!(
        r && s,
        "roamer at {:?}, stayer at {:?}",
        roamed.last(),
        stayed.last()
    );
    roamed.assert_whole("the roamer", last);
    stayed.assert_whole("the stayer", last);
    // The same events, whole, where both have them.
    let from = roamed.snapshot.max(stayed.snapshot).unwrap();
    let after = |log: &Log| -> Vec<Value> {
        let events = log.events.iter();
        events
            .filter(|e| e["seq"].as_u64() > Some(from))
            .cloned()
            .collect()
    };
    assert!(
        after(&roamed) == after(&stayed),
        "the two clients' events differ"
    );
    edge_b.stop().await.unwrap();
    ingest.stop().await.unwrap();
    let found = mesh.permission_violations();
    assert!(
        found.is_empty(),
        "permission violations:\n{}",
        found.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_cut_off_from_the_hub_resumes_its_account_streams_where_they_were() {
    let (mesh, ingest, writer) = world().await;
    let (edge_a, addr_a) = start_edge(edge_config(&mesh, A)).await.unwrap();
    let mut c = subscribed(addr_a, None).await;
    let mut log = Log::default();
    let writing = write_on(writer);
    read_until(&mut c, &mut log, u64::MAX, SECOND).await;
    mesh.region(A).link.black_hole();
    read_until(&mut c, &mut log, u64::MAX, 4 * SECOND).await;
    mesh.region(A).link.pass();
    let last = writing.await.unwrap();
    assert!(
        read_until(&mut c, &mut log, last, 60 * SECOND).await,
        "at {:?} of {last} a minute after the link healed",
        log.last()
    );
    log.assert_whole("the client", last);
    edge_a.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
