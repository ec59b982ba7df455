//! `tickmesh watch --json` as a script would run it, against a real mesh: nats-server
//! from nats/local.conf, the simulator ingest and an edge (tickmesh_tests).

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tickmesh_tests::accounts;
use tickmesh_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tickmesh");

/// A running `tickmesh` with its stdout lines and stderr collected; killed on drop.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watcher {
            child,
            lines,
            stderr,
        }
    }

    /// Every stdout line for `dur`, parsed as JSON.
    fn collect(&self, dur: Duration) -> Vec<Value> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")),
                ),
                Err(RecvTimeoutError::Timeout) => return out,
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("tickmesh ended early; stderr:\n{}", self.stderr())
                }
            }
        }
    }

    /// Lines until `n` have come or `within` has passed.
    fn take(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(serde_json::from_str(&line).unwrap()),
                Err(_) => panic!(
                    "{} of {n} lines within {within:?}; stderr:\n{}",
                    out.len(),
                    self.stderr()
                ),
            }
        }
        out
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stderr once it holds `needle`, or as it is after `within`. Stdout and stderr are read
    /// by two threads, so a line the command wrote to stderr before a stdout line may still
    /// be on its way here when that stdout line has arrived.
    fn stderr_with(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let stderr = self.stderr();
            if stderr.contains(needle) || Instant::now() >= deadline {
                return stderr;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C, then the exit status (within 5 s).
    fn interrupt(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no exit within 5 s of SIGINT; stderr:\n{}", self.stderr()))
    }

    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/v1/stream")
}

/// Checks the lines a script would read: ticks and snapshots of `symbols` only, each
/// symbol's seq strictly growing. Returns the lines per symbol.
fn by_symbol(lines: &[Value], symbols: &[&str]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for l in lines {
        let kind = l["type"].as_str().unwrap();
        assert!(kind == "tick" || kind == "snapshot", "{l}");
        let sym = l["symbol"].as_str().unwrap();
        assert!(symbols.contains(&sym), "unrequested symbol in {l}");
        let seq = l["seq"].as_u64().unwrap();
        let seen = out.entry(sym.to_string()).or_default();
        if let Some(prev) = seen.last() {
            let prev = prev["seq"].as_u64().unwrap();
            assert!(seq > prev, "{sym}: seq {seq} after {prev}");
        }
        seen.push(l.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_growing_seqs_for_the_requested_symbols() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 500));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();

    let mut w = Watcher::spawn(&[
        "watch",
        "--json",
        "--url",
        &url(addr),
        "--interval-ms",
        "0",
        "aapl",
        "MSFT",
    ]);
    let lines = tokio::task::block_in_place(|| w.collect(Duration::from_millis(2500)));
    let status = w.interrupt();
    assert!(
        status.success(),
        "Ctrl-C exits 0: {status:?}\n{}",
        w.stderr()
    );

    let per = by_symbol(&lines, &["AAPL", "MSFT"]);
    for sym in ["AAPL", "MSFT"] {
        let got = per.get(sym).map_or(0, Vec::len);
        // 500 ticks/s over 5 symbols, every tick asked for: about 100/s each.
        assert!(got >= 20, "{sym}: {got} lines in 2.5 s");
        let first = &per[sym][0];
        for field in ["last", "bid", "ask", "epoch", "ts"] {
            assert!(
                first.get(field).is_some(),
                "quote mode has {field}: {first}"
            );
        }
    }
    let stderr =
        tokio::task::block_in_place(|| w.stderr_with("connected to", Duration::from_secs(5)));
    assert!(stderr.contains("connected to"), "{stderr}");

    edge.stop().await.unwrap();
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_reconnects_to_a_new_edge_and_resubscribes_by_itself() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 500));
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();

    let mut w = Watcher::spawn(&[
        "watch",
        "--json",
        "--msgpack",
        "--mode",
        "ltp",
        "--interval-ms",
        "50",
        "--url",
        &url(addr),
        "SPY",
    ]);
    let before = tokio::task::block_in_place(|| w.take(5, Duration::from_secs(10)));
    assert!(
        before[0].get("bid").is_none(),
        "ltp mode has no bid: {}",
        before[0]
    );

    // Drain: the edge tells the client to come back within its reconnect window.
    edge.stop().await.unwrap();
    let mut config = edge_config(&nats.url());
    config.listen = addr;
    config.name = "edge-second".into();
    let (edge2, _) = start_edge(config).await.unwrap();

    let last_before = before.last().unwrap()["seq"].as_u64().unwrap();
    let after = tokio::task::block_in_place(|| {
        let mut after = w.collect(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.stderr().contains("connected to edge-second") && Instant::now() < deadline {
            after.extend(w.collect(Duration::from_millis(100)));
        }
        // The new edge may take the client before it has read the reference data: it then
        // answers `unavailable` with `retry_ms` (2 s), and the client asks again.
        let newer = |lines: &[Value]| {
            lines
                .iter()
                .filter(|l| l["symbol"] == "SPY" && l["seq"].as_u64() > Some(last_before))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(8);
        while newer(&after) < 5 && Instant::now() < deadline {
            after.extend(w.collect(Duration::from_millis(250)));
        }
        after
    });
    let stderr = tokio::task::block_in_place(|| w.stderr_with("draining", Duration::from_secs(5)));
    assert!(stderr.contains("draining"), "{stderr}");
    assert!(stderr.contains("connected to edge-second"), "{stderr}");
    let all: Vec<Value> = before.iter().chain(&after).cloned().collect();
    let per = by_symbol(&all, &["SPY"]);
    let newer = per["SPY"]
        .iter()
        .filter(|l| l["seq"].as_u64().unwrap() > last_before)
        .count();
    assert!(
        newer >= 5,
        "{newer} lines after the new edge came up\n{stderr}"
    );
    let status = w.interrupt();
    assert!(status.success(), "{status:?}\n{}", w.stderr());

    edge2.stop().await.unwrap();
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_go_to_stderr_and_the_rest_keeps_flowing() {
    let nats = NatsServer::start().unwrap();
    let ingest = start_ingest(ingest_config(&nats.url(), 500));
    // Anonymous sessions may hold 3 symbols here.
    let mut config = edge_config(&nats.url());
    config.auth.tiers.get_mut("anonymous").unwrap().max_symbols = 3;
    let (edge, addr) = start_edge(config).await.unwrap();
    assert_eq!(edge_max_symbols(addr).await, 3);

    // One listed symbol past the session limit: the last one is refused with
    // too_many_symbols.
    let u = url(addr);
    let args = [
        "watch", "--json", "--url", &u, "AAPL", "MSFT", "SPY", "NVDA",
    ];
    let mut w = Watcher::spawn(&args);

    let lines = tokio::task::block_in_place(|| w.take(3, Duration::from_secs(10)));
    by_symbol(&lines, &["AAPL", "MSFT", "SPY"]);
    let stderr = tokio::task::block_in_place(|| {
        w.stderr_with("too_many_symbols NVDA", Duration::from_secs(5))
    });
    assert!(stderr.contains("too_many_symbols NVDA"), "{stderr}");
    let status = w.interrupt();
    assert!(status.success(), "{status:?}\n{}", w.stderr());

    edge.stop().await.unwrap();
    ingest.stop().await.unwrap();
}

/// The session symbol limit the edge announces in `welcome`.
async fn edge_max_symbols(addr: SocketAddr) -> usize {
    let client = Client::connect(addr, tickmesh_core::Format::Json)
        .await
        .unwrap();
    client.welcome["limits"]["max_symbols"].as_u64().unwrap() as usize
}

#[test]
fn bad_symbols_are_refused_before_connecting() {
    // Nothing listens on port 9 of loopback: only local validation can answer.
    let out = Command::new(BIN)
        .args([
            "watch",
            "--json",
            "--url",
            "ws://127.0.0.1:9/v1/stream",
            "AAPL",
            "md.>",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid symbol \"md.>\""), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_refused_upgrade_ends_the_command_with_the_reason() {
    // A plain HTTP server that refuses every upgrade, as an edge does for a bad token, and
    // hands over the request head it read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (head_tx, head_rx) = channel();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = head_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = "token expired";
            // One write: `write!` would send the pieces apart, and a client that has the
            // headers may stop reading before the body arrives.
            let response = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(response.as_bytes());
        }
    });
    let start = Instant::now();
    let out = Command::new(BIN)
        .args([
            "watch",
            "--json",
            "--url",
            &url(addr),
            "--token",
            "x.y.z",
            "AAPL",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 401: token expired"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(5), "no retry loop");
    // The token travels in the Authorization header, never in the URL (which proxies and
    // servers write to their logs).
    let head = head_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let request_line = head.lines().next().unwrap_or_default();
    assert_eq!(request_line, "GET /v1/stream HTTP/1.1", "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer x.y.z")),
        "{head}"
    );
}

/// `--account`: the snapshot, then every event; across a move to a new edge, during which
/// the writer went on, the command resumes with `from_seq` and prints each event once, in
/// order (a fresh snapshot instead would skip what was written meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_resumes_on_a_new_edge_with_each_event_once() {
    const SECRET: &str = "a-cli-accounts-hs256-secret-of-32-bytes!";
    let nats = NatsServer::start().unwrap();
    create_refdata(&nats.url(), &["AAPL"]).await.unwrap();
    let mut writer = accounts::Writer::create(&nats.url()).await.unwrap();
    writer.append_many("DEMO1", 5).await.unwrap();
    let config = |addr| {
        let mut c = edge_config(&nats.url());
        c.auth.hs256_secret = Some(SECRET.into());
        c.auth.anonymous = false;
        if let Some(addr) = addr {
            c.listen = addr;
            c.name = "edge-second".into();
        }
        c
    };
    let (edge, addr) = start_edge(config(None)).await.unwrap();
    let token = accounts::token(SECRET, "trader", &["DEMO1"]);
    let mut w = Watcher::spawn(&[
        "watch",
        "--json",
        "--url",
        &url(addr),
        "--token",
        &token,
        "--account",
        "DEMO1",
    ]);
    let first = tokio::task::block_in_place(|| w.take(1, Duration::from_secs(10)));
    assert_eq!(first[0]["type"], "account_snapshot", "{}", first[0]);
    assert_eq!(first[0]["seq"], 5);
    writer.append_many("DEMO1", 5).await.unwrap();
    let live = tokio::task::block_in_place(|| w.take(5, Duration::from_secs(10)));

    edge.stop().await.unwrap();
    writer.append_many("DEMO1", 5).await.unwrap();
    let (edge2, _) = start_edge(config(Some(addr))).await.unwrap();
    let after = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut after = Vec::new();
        while !after.iter().any(|l: &Value| l["seq"] == 15) && Instant::now() < deadline {
            after.extend(w.collect(Duration::from_millis(200)));
        }
        after.extend(w.collect(Duration::from_millis(500)));
        after
    });
    let events: Vec<u64> = live
        .iter()
        .chain(&after)
        .map(|l| {
            assert_eq!(l["type"], "account", "only events after the snapshot: {l}");
            assert_eq!(l["account"], "DEMO1");
            l["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(events, (6..=15).collect::<Vec<_>>(), "{}", w.stderr());
    let status = w.interrupt();
    assert!(status.success(), "{status:?}\n{}", w.stderr());
    edge2.stop().await.unwrap();
}

/// An edge that has not read its reference data yet refuses a `subscribe` whole with
/// `unavailable` and `retry_ms`: the command asks again after it, and the prices come
/// once the edge is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_refused_as_unavailable_is_asked_again_after_retry_ms() {
    let nats = NatsServer::start().unwrap();
    let mut config = edge_config(&nats.url());
    config.limits.retry_after_ms = 300;
    let (edge, addr) = spawn_edge(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(addr, "/healthz").await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the edge never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut w = Watcher::spawn(&["watch", "--json", "--url", &url(addr), "AAPL"]);
    let stderr =
        tokio::task::block_in_place(|| w.stderr_with("unavailable", Duration::from_secs(10)));
    assert!(stderr.contains("asking again"), "{stderr}");
    let ingest = start_ingest(ingest_config(&nats.url(), 500));
    let lines = tokio::task::block_in_place(|| w.take(3, Duration::from_secs(30)));
    assert!(
        lines.iter().all(|l| l["symbol"] == "AAPL"),
        "{lines:?}\n{}",
        w.stderr()
    );
    let status = w.interrupt();
    assert!(status.success(), "{status:?}\n{}", w.stderr());
    ingest.stop().await.unwrap();
    edge.stop().await.unwrap();
}
