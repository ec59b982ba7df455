//! Graceful drain on SIGTERM, end to end: region A of the mesh (3 hub nodes, 2 leaf nodes,
//! the regional mirror), ingest on the hub, and two edges of region A, each its own process
//! started from a TOML config file, so that edge 1 gets a real SIGTERM.
//!
//! What a user sees is asserted: edge 1's `/readyz` turns 503 at once; each of its
//! sessions is told `reconnect` with an `after_ms` spread over
//! `shutdown.reconnect_window_ms`, keeps streaming until that is over, and is then closed
//! with 4001; the process exits within
//! `shutdown.grace_ms`. Each client then moves to edge 2 after its `after_ms`,
//! resubscribes, and gets a fresh snapshot and live ticks above what it saw on edge 1,
//! while a session that was on edge 2 all along notices nothing.
//!
//! A few of the clients are far away (a 100 ms link each way, through the kit's proxy):
//! their close handshakes keep edge 1 draining for a few hundred milliseconds, as real
//! users do, and `/readyz` must say 503 throughout.
//!
//! The edge process is `tickmesh-test-edge --config <file>` (`tickmesh_edge::run` with the
//! same SIGTERM/SIGINT handling as `tickmesh-edge`), which cargo builds with the tests:
//! no nested build. `TICKMESH_TEST_EDGE_BIN=target/debug/tickmesh-edge` runs the production
//! binary instead (`tickmesh-edge --config <file>`, as `cargo xtask demo` starts it; build
//! it first with `cargo build -p tickmesh-ingest -p tickmesh-edge`).

#![cfg(unix)]
#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tickmesh_core::Format;
use tickmesh_tests::mesh::{BUCKET, HUB_DOMAIN, Mesh};
use tickmesh_tests::*;

const A: &str = "region-a";
/// Ticks per second over the 5-symbol test universe (about 100 per symbol).
const RATE: u32 = 500;
const SECOND: Duration = Duration::from_secs(1);
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"];
/// Clients on the edge that drains; every `FAR_EVERY`th of them over a link with
/// `FAR_DELAY` each way.
const CLIENTS: usize = 20;
const FAR_EVERY: usize = 5;
const FAR_DELAY: Duration = Duration::from_millis(100);
/// `shutdown.reconnect_window_ms` and `shutdown.grace_ms` of both edges.
const WINDOW_MS: u64 = 2000;
const GRACE_MS: u64 = 4000;
/// The conflated subscriptions' interval.
const CONFLATED_MS: u64 = 200;

/// An edge process on a free loopback port, configured by a TOML file; SIGKILLed on drop
/// if it is still running.
struct EdgeProc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl EdgeProc {
    async fn start(mesh: &Mesh, name: &str, dir: &Path) -> EdgeProc {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        // The kit's edge of region A (leaf nodes, domains, TLS and user), as a config file.
        let mut c = mesh.edge_config(A);
        c.name = name.into();
        c.nats.name = format!("tickmesh-{name}");
        c.listen = addr;
        c.shutdown.reconnect_window_ms = WINDOW_MS;
        c.shutdown.grace_ms = GRACE_MS;
        let toml = to_toml(&serde_json::to_value(&c).unwrap());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        // A relative path is the workspace's (tests run in tests/).
        let bin = std::env::var_os("TICKMESH_TEST_EDGE_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_tickmesh-test-edge")),
            |bin| root().join(bin),
        );
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut edge = EdgeProc { child, addr, log };
        let deadline = Instant::now() + 20 * SECOND;
        loop {
            if http_get(addr, "/readyz").await.is_ok_and(|(s, _)| s == 200) {
                return edge;
            }
            if let Ok(Some(status)) = edge.child.try_wait() {
                panic!("{name} exited at start ({status}):\n{}", edge.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready within 20 s:\n{}",
                edge.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A real SIGTERM, as systemd or Kubernetes sends it.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON object as a TOML document: each object a table, `null` left out (the default).
fn to_toml(v: &Value) -> String {
    fn key(k: &str) -> String {
        if !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            k.to_string()
        } else {
            Value::from(k).to_string()
        }
    }
    fn value(v: &Value) -> String {
        match v {
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(value).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Object(map) => {
                let items: Vec<String> = map
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                    .collect();
                format!("{{ {} }}", items.join(", "))
            }
            // JSON's string escapes are TOML's; numbers and booleans read the same.
            other => other.to_string(),
        }
    }
    fn table(out: &mut String, path: &str, v: &Value) {
        let map = v.as_object().expect("a table");
        if !path.is_empty() {
            out.push_str(&format!("\n[{path}]\n"));
        }
        for (k, v) in map {
            if !v.is_object() && !v.is_null() {
                out.push_str(&format!("{} = {}\n", key(k), value(v)));
            }
        }
        for (k, v) in map {
            if v.is_object() {
                let sub = if path.is_empty() {
                    key(k)
                } else {
                    format!("{path}.{}", key(k))
                };
                table(out, &sub, v);
            }
        }
    }
    let mut out = String::new();
    table(&mut out, "", v);
    out
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Client `i`'s subscriptions: its first symbol every tick, the others conflated.
fn requests(i: usize) -> (Vec<&'static str>, Vec<Value>) {
    let n = 2 + i % 2;
    let symbols: Vec<&str> = (0..n).map(|k| SYMBOLS[(i + k) % SYMBOLS.len()]).collect();
    let reqs = vec![
        json!({"op": "subscribe", "id": 1, "symbols": [symbols[0]], "interval_ms": 0}),
        json!({"op": "subscribe", "id": 2, "symbols": symbols[1..], "interval_ms": CONFLATED_MS}),
    ];
    (symbols, reqs)
}

/// Per symbol: the highest seq seen, over snapshots and live ticks; fails on any seq that
/// is not above the previous one of its symbol.
fn note_ticks(who: &str, v: &Value, seen: &mut HashMap<String, u64>, live: &mut Vec<String>) {
    let ticks: Vec<&Value> = match v["type"].as_str() {
        Some("snapshot") => vec![v],
        Some("ticks") => v["ticks"].as_array().unwrap().iter().collect(),
        _ => return,
    };
    for t in ticks {
        let symbol = t["symbol"].as_str().unwrap().to_string();
        let seq = t["seq"].as_u64().unwrap();
        if let Some(prev) = seen.get(&symbol) {
            assert!(seq > *prev, "{who}: {symbol} seq {seq} after {prev}: {v}");
        }
        seen.insert(symbol.clone(), seq);
        if v["type"] == "ticks" {
            live.push(symbol);
        }
    }
}

/// What one client went through.
struct Trip {
    after_ms: u64,
    /// Since the SIGTERM: the `reconnect` notice, the close.
    notice_at: Duration,
    closed_at: Duration,
    /// From the end of its `after_ms` to live ticks of every symbol on edge 2.
    resumed_in: Duration,
}

/// Client `i`: on edge 1 until it is drained, then on edge 2 after `after_ms`.
async fn trip(
    i: usize,
    edge1: SocketAddr,
    edge2: SocketAddr,
    ready: tokio::sync::mpsc::Sender<()>,
    terminated: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Trip {
    let who = format!("client {i}");
    let (symbols, reqs) = requests(i);
    let mut c = Client::connect(edge1, Format::Json).await.unwrap();
    assert_eq!(c.welcome["edge"], "edge-a-1");
    for r in &reqs {
        c.send(r.clone()).await.unwrap();
    }

    // On edge 1: live ticks of every symbol, then the drain.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut live = Vec::new();
    let mut ready = Some(ready);
    let deadline = Instant::now() + 30 * SECOND;
    let (after_ms, notice) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = c.next_msg(left).await.unwrap();
        match v["type"].as_str() {
            Some("reconnect") => {
                assert_eq!(v["reason"], "draining", "{who}: {v}");
                break (v["after_ms"].as_u64().unwrap(), Instant::now());
            }
            Some("error") => panic!("{who}: {v}"),
            _ => note_ticks(&who, &v, &mut seen, &mut live),
        }
        if ready.is_some() && symbols.iter().all(|s| live.iter().any(|l| l == s)) {
            ready.take().unwrap().send(()).await.unwrap();
        }
    };
    assert!(ready.is_none(), "{who}: drained before it had every symbol");
    // Data keeps flowing until the close, which comes when `after_ms` is over.
    let live_before_notice = live.len();
    let code = c
        .closed_within(Duration::from_millis(after_ms) + 5 * SECOND, |v| {
            note_ticks(&who, v, &mut seen, &mut live)
        })
        .await
        .unwrap();
    let closed = Instant::now();
    assert_eq!(code, Some(4001), "{who}: closed with {code:?}");
    let streamed = closed - notice;
    assert!(
        streamed + Duration::from_millis(50) >= Duration::from_millis(after_ms),
        "{who}: closed {streamed:?} after the notice, before its after_ms {after_ms}"
    );
    if after_ms >= 500 {
        assert!(
            live.len() > live_before_notice,
            "{who}: no tick between the notice and the close {streamed:?} later"
        );
    }
    // Reading on sends our close reply, as a browser does; then the edge closes the socket.
    let _ = c.next_event(SECOND).await;
    drop(c);
    let sigterm = terminated
        .borrow()
        .expect("the drain started before the SIGTERM");

    // On edge 2 after `after_ms`: the same subscriptions, a fresh snapshot of each
    // symbol, then live ticks above what edge 1 had sent.
    let before = seen.clone();
    tokio::time::sleep_until((notice + Duration::from_millis(after_ms)).into()).await;
    let back = Instant::now();
    let mut c = Client::connect(edge2, Format::Json).await.unwrap();
    assert_eq!(c.welcome["edge"], "edge-a-2", "{who}");
    for r in &reqs {
        c.send(r.clone()).await.unwrap();
    }
    let mut snapshots: HashMap<String, Value> = HashMap::new();
    let mut seen2: HashMap<String, u64> = HashMap::new();
    let mut resumed: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + 5 * SECOND;
    while resumed.len() < symbols.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = c
            .next_msg(left)
            .await
            .unwrap_or_else(|e| panic!("{who} on edge 2: {e}; live so far {resumed:?}"));
        match v["type"].as_str() {
            Some("snapshot") => {
                let s = v["symbol"].as_str().unwrap().to_string();
                let age = Duration::from_micros(now_us().saturating_sub(v["ts"].as_u64().unwrap()));
                assert!(
                    age < Duration::from_millis(1500),
                    "{who}: snapshot {age:?} old: {v}"
                );
                let seq = v["seq"].as_u64().unwrap();
                assert!(
                    seq >= before[&s],
                    "{who}: snapshot of {s} at seq {seq}, below the {} seen on edge 1",
                    before[&s]
                );
                assert!(
                    !resumed.contains_key(&s),
                    "{who}: snapshot of {s} after its live ticks"
                );
                snapshots.insert(s, v.clone());
            }
            Some("ticks") => {
                for t in v["ticks"].as_array().unwrap() {
                    let s = t["symbol"].as_str().unwrap().to_string();
                    assert!(
                        snapshots.contains_key(&s),
                        "{who}: live {s} before its snapshot"
                    );
                    let seq = t["seq"].as_u64().unwrap();
                    assert!(
                        seq > before[&s],
                        "{who}: live {s} at seq {seq}, not above the {} seen on edge 1",
                        before[&s]
                    );
                    resumed.entry(s).or_insert_with(Instant::now);
                }
            }
            Some("error") => panic!("{who} on edge 2: {v}"),
            _ => {}
        }
        let mut none = Vec::new();
        note_ticks(&who, &v, &mut seen2, &mut none);
    }
    assert_eq!(
        snapshots.len(),
        symbols.len(),
        "{who}: snapshots {snapshots:?}"
    );
    // And it keeps flowing, in order.
    for (_, v) in c.collect(Duration::from_millis(500)).await.unwrap() {
        let mut none = Vec::new();
        note_ticks(&who, &v, &mut seen2, &mut none);
    }
    Trip {
        after_ms,
        notice_at: notice - sigterm,
        closed_at: closed - sigterm,
        resumed_in: resumed.values().max().unwrap().duration_since(back),
    }
}

/// `/readyz` over fresh connections (as a load balancer asks), back to back from two
/// threads of their own (the test's runtime is busy with the clients' drain at that very
/// moment): (start, end, status) of each poll since `from` (status 0: no answer),
/// ordered by start. Polling stops at the first unanswered poll once a 503 came, or at
/// `until`.
fn poll_readyz(
    addr: SocketAddr,
    from: Instant,
    until: Instant,
) -> std::thread::JoinHandle<Vec<(Duration, Duration, u16)>> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::Relaxed;
    let get = move || -> std::io::Result<u16> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, SECOND)?;
        s.set_read_timeout(Some(SECOND))?;
        write!(
            s,
            "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        Ok(text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    };
    let seen_503 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let seen_503 = seen_503.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..20_000 {
                    let start = Instant::now();
                    let status = get().unwrap_or(0);
                    let end = Instant::now();
                    out.push((start - from, end - from, status));
                    if status == 503 {
                        seen_503.store(true, Relaxed);
                    }
                    if status == 0 && seen_503.load(Relaxed) || end > until {
                        break;
                    }
                    if status == 0 {
                        // Nothing answers: no need to spin.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                out
            })
        })
        .collect();
    std::thread::spawn(move || {
        let mut all: Vec<_> = pollers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        all.sort();
        all
    })
}

/// `/readyz` polls as runs: "200 from 0.1 ms (x12), 503 from 3.2 ms (x4), ...".
fn runs(polls: &[(Duration, Duration, u16)]) -> String {
    let mut out: Vec<(u16, Duration, usize)> = Vec::new();
    for (at, _, s) in polls {
        match out.last_mut() {
            Some((last, _, n)) if last == s => *n += 1,
            _ => out.push((*s, *at, 1)),
        }
    }
    out.iter()
        .map(|(s, at, n)| format!("{s} from {:.1} ms (x{n})", ms(*at)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_to_the_other_edge() {
    let t0 = Instant::now();
    let mesh = Mesh::start(&[A], 2).await.unwrap();
    let meshed = t0.elapsed();
    let ingest = start_ingest(mesh.ingest_config(RATE));
    let hub = async_nats::jetstream::with_domain(mesh.hub_client().await.unwrap(), HUB_DOMAIN);
    let deadline = Instant::now() + 20 * SECOND;
    loop {
        if let Ok(kv) = hub.get_key_value(BUCKET).await
            && let Ok(Some(_)) = kv.get("AAPL").await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest wrote no md_last/AAPL in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mesh.create_mirror(A, "AAPL").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut edge1 = EdgeProc::start(&mesh, "edge-a-1", dir.path()).await;
    let edge2 = EdgeProc::start(&mesh, "edge-a-2", dir.path()).await;
    eprintln!(
        "set-up: mesh {:.1} s, ingest, mirror and both edges {:.1} s",
        meshed.as_secs_f64(),
        (t0.elapsed() - meshed).as_secs_f64()
    );

    // A session that stays on edge 2 throughout; it also makes edge 2 carry every symbol.
    let mut bystander = Client::connect(edge2.addr, Format::Json).await.unwrap();
    bystander
        .send(json!({"op": "subscribe", "id": 1, "symbols": SYMBOLS, "interval_ms": 0}))
        .await
        .unwrap();
    bystander.next_of("subscribed", 5 * SECOND).await.unwrap();
    let watch_start = Instant::now();
    let stop_watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = stop_watching.clone();
    let watched = tokio::spawn(async move {
        let mut msgs = Vec::new();
        // Bounded: the test ends well within a minute.
        for _ in 0..240 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            msgs.extend(bystander.collect(Duration::from_millis(250)).await.unwrap());
        }
        (bystander, msgs)
    });

    let far1 = tickmesh_tests::proxy::Proxy::start(vec![edge1.addr])
        .await
        .unwrap();
    let far2 = tickmesh_tests::proxy::Proxy::start(vec![edge2.addr])
        .await
        .unwrap();
    far1.delay(FAR_DELAY);
    far2.delay(FAR_DELAY);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS);
    let (term_tx, term_rx) = tokio::sync::watch::channel(None);
    let trips: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(trip(
                i,
                if i % FAR_EVERY == 0 {
                    far1.addr()
                } else {
                    edge1.addr
                },
                if i % FAR_EVERY == 0 {
                    far2.addr()
                } else {
                    edge2.addr
                },
                ready_tx.clone(),
                term_rx.clone(),
            ))
        })
        .collect();
    for n in 0..CLIENTS {
        tokio::time::timeout(10 * SECOND, ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {CLIENTS} clients had live ticks in 10 s"))
            .unwrap();
    }

    let sigterm = Instant::now();
    term_tx.send(Some(sigterm)).unwrap();
    let readyz = poll_readyz(edge1.addr, sigterm, sigterm + 3 * SECOND);
    edge1.terminate();
    let exit_deadline = sigterm + Duration::from_millis(GRACE_MS) + 3 * SECOND;
    let (status, exited) = loop {
        if let Some(status) = edge1.child.try_wait().unwrap() {
            break (status, Instant::now() - sigterm);
        }
        assert!(
            Instant::now() < exit_deadline,
            "edge 1 still running {:?} after SIGTERM:\n{}",
            Instant::now() - sigterm,
            edge1.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };

    // readyz: 200 until the signal is handled, then 503 until the edge stops listening,
    // just before it exits; never a refused connection in between.
    let polls = tokio::task::spawn_blocking(move || readyz.join().unwrap())
        .await
        .unwrap();
    let answers_503: Vec<&(Duration, Duration, u16)> =
        polls.iter().filter(|p| p.2 == 503).collect();
    assert!(
        !answers_503.is_empty(),
        "edge 1's /readyz never answered 503 (the process exited {exited:?} after SIGTERM): \
         {}\nedge 1's log:\n{}",
        runs(&polls),
        edge1.log_tail()
    );
    let first_503_end = answers_503.iter().map(|p| p.1).min().unwrap();
    let last_503_start = answers_503.iter().map(|p| p.0).max().unwrap();
    for (start, end, s) in &polls {
        assert!(
            !(*start > first_503_end && *s == 200),
            "/readyz said 200 again after 503: {}",
            runs(&polls)
        );
        assert!(
            !(*end < last_503_start && *s == 0),
            "/readyz went unanswered while the edge was draining: {}",
            runs(&polls)
        );
    }
    eprintln!(
        "edge 1: /readyz 503 {:.1} ms after SIGTERM, last 503 at {:.0} ms ({} answers of 503 \
         in {} polls); exited {:.0} ms after SIGTERM ({status})",
        ms(first_503_end),
        ms(last_503_start),
        answers_503.len(),
        polls.len(),
        ms(exited),
    );
    assert!(
        first_503_end < Duration::from_millis(200),
        "/readyz turned 503 only {first_503_end:?} after SIGTERM"
    );
    assert!(
        status.success(),
        "edge 1 exited with {status}:\n{}",
        edge1.log_tail()
    );
    assert!(
        exited <= Duration::from_millis(GRACE_MS + 500),
        "edge 1 exited {exited:?} after SIGTERM; shutdown.grace_ms is {GRACE_MS}"
    );

    let mut results = Vec::new();
    for t in trips {
        results.push(t.await.unwrap());
    }
    let mut after: Vec<u64> = results.iter().map(|t| t.after_ms).collect();
    after.sort_unstable();
    let mut distinct = after.clone();
    distinct.dedup();
    let notice_max = results.iter().map(|t| t.notice_at).max().unwrap();
    let close_max = results.iter().map(|t| t.closed_at).max().unwrap();
    let resumed_of = |far: bool| {
        let mut r: Vec<Duration> = (0..CLIENTS)
            .filter(|i| (i % FAR_EVERY == 0) == far)
            .map(|i| results[i].resumed_in)
            .collect();
        r.sort_unstable();
        r
    };
    let (near, far) = (resumed_of(false), resumed_of(true));
    let mut resumed: Vec<Duration> = results.iter().map(|t| t.resumed_in).collect();
    resumed.sort_unstable();
    eprintln!(
        "after_ms over {CLIENTS} clients: min {} median {} max {} ({} distinct; window {WINDOW_MS}); \
         last notice {:.0} ms, last close {:.0} ms after SIGTERM",
        after[0],
        after[CLIENTS / 2],
        after[CLIENTS - 1],
        distinct.len(),
        ms(notice_max),
        ms(close_max)
    );
    eprintln!(
        "live ticks of every symbol on edge 2, after the client's after_ms: {} local clients \
         min {:.0} ms, median {:.0} ms, max {:.0} ms; {} far clients min {:.0} ms, max {:.0} ms",
        near.len(),
        ms(near[0]),
        ms(near[near.len() / 2]),
        ms(near[near.len() - 1]),
        far.len(),
        ms(far[0]),
        ms(far[far.len() - 1])
    );
    assert!(after[CLIENTS - 1] < WINDOW_MS, "after_ms {after:?}");
    assert!(
        distinct.len() >= CLIENTS / 2 && after[CLIENTS - 1] - after[0] >= WINDOW_MS / 4,
        "after_ms not spread over the window: {after:?}"
    );
    assert!(
        notice_max < SECOND,
        "a reconnect notice came {notice_max:?} after SIGTERM"
    );
    assert!(
        close_max < Duration::from_millis(WINDOW_MS) + SECOND,
        "a close came {close_max:?} after SIGTERM (window {WINDOW_MS} ms)"
    );
    assert!(
        resumed[CLIENTS - 1] < 2 * SECOND,
        "a client took {:?} to get live ticks on edge 2",
        resumed[CLIENTS - 1]
    );

    // The session on edge 2 saw nothing of it.
    stop_watching.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut bystander, msgs) = watched.await.unwrap();
    let end = Instant::now();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut times = vec![watch_start];
    for (at, symbol, seq, _, _) in tick_events(&msgs) {
        if let Some(prev) = last.get(&symbol) {
            assert!(seq > *prev, "bystander: {symbol} seq {seq} after {prev}");
        }
        last.insert(symbol, seq);
        times.push(at);
    }
    times.push(end);
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "bystander on edge 2: longest gap without a tick {:.0} ms",
        ms(gap)
    );
    assert!(
        gap < SECOND,
        "the bystander on edge 2 went {gap:?} without a tick"
    );
    bystander.ping(2).await.unwrap();
    assert_eq!(http_get(edge2.addr, "/readyz").await.unwrap().0, 200);
    ingest.stop().await.unwrap();
    eprintln!(
        "drain to end {:.1} s; whole test {:.1} s",
        (Instant::now() - sigterm).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
