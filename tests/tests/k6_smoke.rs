//! Short runs of the k6 scenarios in `loadtest/k6/` (`SMOKE=1`: a few VUs for a few
//! seconds) against a real nats-server, ingest and edge: each must pass its thresholds,
//! and each must fail them (k6 exit code 99) when what it checks is broken.
//!
//! k6 is `$TICKMESH_K6`, else the one `cargo xtask test` installs into `.tools/venv`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tickmesh_tests::*;

/// k6's exit code when thresholds were crossed.
const THRESHOLDS_CROSSED: i32 = 99;
/// Upper bound on one k6 run; the smoke runs take about 5 s.
const RUN_LIMIT: Duration = Duration::from_secs(40);
/// The test kit's ingest universe.
const SYMBOLS: &str = "AAPL,MSFT,SPY,NVDA,TSLA";

fn k6_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TICKMESH_K6") {
        return p.into();
    }
    root().join(".tools/venv/bin/k6")
}

struct Run {
    script: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every check passed and every threshold held, according to the summary.
    fn assert_passed(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "{} failed:\n{}",
            self.script,
            self.output()
        );
        assert!(
            !self.stdout.contains('✗'),
            "{}: a crossed threshold or failed check:\n{}",
            self.script,
            self.output()
        );
        let failed = summary_line(&self.stdout, "checks_failed");
        assert!(
            failed.contains(" 0 out of "),
            "{}: {failed}\n{}",
            self.script,
            self.output()
        );
        let passed = summary_line(&self.stdout, "checks_succeeded");
        assert!(
            passed.contains("100.00%"),
            "{}: {passed}\n{}",
            self.script,
            self.output()
        );
        let updates = summary_line(&self.stdout, "tickmesh_updates");
        assert!(
            !updates.contains(": 0 "),
            "{}: no updates: {updates}",
            self.script
        );
    }

    /// k6 exited with 99 and named `metric` among the crossed thresholds.
    fn assert_crossed(&self, metric: &str) {
        assert_eq!(
            self.code,
            Some(THRESHOLDS_CROSSED),
            "{} should have crossed a threshold:\n{}",
            self.script,
            self.output()
        );
        let crossed = self
            .stderr
            .lines()
            .find(|l| l.contains("have been crossed"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no crossed-threshold line:\n{}",
                    self.script,
                    self.output()
                )
            });
        assert!(
            crossed.contains(metric),
            "{}: expected {metric} among: {crossed}",
            self.script
        );
    }

    fn output(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// The summary line of `metric` (its first occurrence), or "" when absent.
fn summary_line<'a>(summary: &'a str, metric: &str) -> &'a str {
    summary
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{metric}.")))
        .unwrap_or("")
}

/// Runs `loadtest/k6/<script>` in smoke mode against the edge at `addr`, with extra
/// `-e NAME=value` pairs, within [`RUN_LIMIT`].
async fn k6(script: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Run {
    let out = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new(k6_bin());
    cmd.current_dir(root())
        .args(["run", "--quiet", "--no-color"])
        .args(["-e", &format!("TICKMESH_URL=ws://{addr}/v1/stream")])
        .args(["-e", "SMOKE=1", "-e", &format!("SYMBOLS={SYMBOLS}")]);
    for (k, v) in env {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    let mut child = cmd
        .arg(format!("loadtest/k6/{script}"))
        .env("K6_NO_USAGE_REPORT", "true")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {} ({e}); run `cargo xtask test` to install it",
                k6_bin().display()
            )
        });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("k6 {script} still running after {RUN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Run {
        script: format!("{script} {env:?}"),
        code: status.code(),
        stdout: std::fs::read_to_string(stdout_path).unwrap(),
        stderr: std::fs::read_to_string(stderr_path).unwrap(),
    }
}

/// nats-server, ingest at 1000 ticks/s over the 5-symbol universe, and an edge.
struct Mesh {
    _nats: NatsServer,
    ingest: Option<Service>,
    edge: Service,
    addr: SocketAddr,
}

async fn mesh(with_feed: bool) -> Mesh {
    let nats = NatsServer::start().unwrap();
    let ingest = with_feed.then(|| start_ingest(ingest_config(&nats.url(), 1000)));
    if !with_feed {
        // The scripts' symbols are listed, but nothing publishes them: a dead feed.
        let symbols: Vec<&str> = SYMBOLS.split(',').collect();
        create_refdata(&nats.url(), &symbols).await.unwrap();
    }
    let (edge, addr) = start_edge(edge_config(&nats.url())).await.unwrap();
    if with_feed {
        // The KV writer runs every 250 ms: give it two rounds, so every symbol has a snapshot.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    Mesh {
        _nats: nats,
        ingest,
        edge,
        addr,
    }
}

impl Mesh {
    async fn stop(mut self) {
        if let Some(i) = self.ingest.take() {
            i.stop().await.unwrap();
        }
        self.edge.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_smoke_passes() {
    let m = mesh(true).await;
    k6("soak.js", m.addr, &[]).await.assert_passed();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_smoke_passes() {
    let m = mesh(true).await;
    k6("storm.js", m.addr, &[]).await.assert_passed();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_smoke_passes() {
    let m = mesh(true).await;
    k6("churn.js", m.addr, &[]).await.assert_passed();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correctness_smoke_passes_in_json_and_msgpack() {
    let m = mesh(true).await;
    let (json, msgpack) = tokio::join!(
        k6("correctness.js", m.addr, &[("ENCODING", "json")]),
        k6("correctness.js", m.addr, &[("ENCODING", "msgpack")]),
    );
    json.assert_passed();
    msgpack.assert_passed();
    m.stop().await;
}

/// Each guarantee's check fails the run when the script is made to see it broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correctness_thresholds_fail_on_each_broken_guarantee() {
    let m = mesh(true).await;
    let (reorder, tight, drop, no_snapshot) = tokio::join!(
        k6("correctness.js", m.addr, &[("FAULT", "reorder")]),
        k6("correctness.js", m.addr, &[("FAULT", "tight_interval")]),
        k6("correctness.js", m.addr, &[("FAULT", "drop")]),
        k6("correctness.js", m.addr, &[("FAULT", "no_snapshot")]),
    );
    reorder.assert_crossed("tickmesh_seq_regressions");
    tight.assert_crossed("tickmesh_conflation_violations");
    drop.assert_crossed("tickmesh_seq_gaps");
    drop.assert_crossed("tickmesh_continuity_errors");
    no_snapshot.assert_crossed("tickmesh_tick_before_snapshot");
    m.stop().await;
}

/// An edge whose feed is dead: every scenario's thresholds fail (no snapshots, no updates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_fails_when_the_feed_is_dead() {
    let m = mesh(false).await;
    let quick = [("SNAPSHOT_TIMEOUT_MS", "1000")];
    let (soak, storm, churn, correctness) = tokio::join!(
        k6("soak.js", m.addr, &quick),
        k6("storm.js", m.addr, &quick),
        k6("churn.js", m.addr, &quick),
        k6("correctness.js", m.addr, &quick),
    );
    for run in [soak, storm, churn, correctness] {
        run.assert_crossed("tickmesh_updates");
        run.assert_crossed("tickmesh_snapshot_complete");
    }
    m.stop().await;
}
