//! The load generator's JSON summary (what `--out` holds): written by `tickmesh-loadgen`,
//! read by `cargo xtask bench`, which builds its report from these fields.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Plain counters; all add up when merged except the min/max fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub connected: u64,
    pub connect_failures: u64,
    /// Live updates (tick objects or NATS messages) in the measurement window.
    pub updates: u64,
    /// Live updates over the whole run.
    pub updates_total: u64,
    pub snapshots: u64,
    /// Subscriptions sent again (`--resubscribe-per-s`).
    pub resubscribes: u64,
    pub frames: u64,
    /// Payload bytes of the messages received (inflated, when compressed).
    pub bytes: u64,
    /// Bytes read off the sockets after the upgrade response: frames as sent, compressed
    /// or not.
    #[serde(default)]
    pub wire_bytes: u64,
    /// Connections on which permessage-deflate was negotiated (`--deflate`).
    #[serde(default)]
    pub deflate_connections: u64,
    /// Ticks missing between two every-tick updates of a symbol in the same epoch.
    pub seq_missing: u64,
    /// Places where ticks were missing.
    pub seq_gaps: u64,
    /// Ticks the gateway folded into the updates it sent (conflation: not a loss).
    #[serde(default)]
    pub conflated: u64,
    /// Ticks the gateway said never reached it (`gap` messages): a loss it owned up to.
    #[serde(default)]
    pub lost_told: u64,
    /// Updates whose `from_seq` did not follow from what the connection had and the gaps
    /// it was told of (a broken continuity promise).
    #[serde(default)]
    pub continuity_errors: u64,
    /// A seq not above the last one of its symbol (a broken ordering guarantee).
    pub seq_regressions: u64,
    /// Malformed messages, unexpected symbols, and other protocol violations.
    pub protocol_errors: u64,
    /// Conflated updates that came sooner than 90 % of their interval after the previous
    /// live update of the same symbol.
    pub interval_violations: u64,
    /// Fewest and most live updates one connection got in the window (per-client rate).
    pub min_conn_updates: Option<u64>,
    pub max_conn_updates: Option<u64>,
    /// Connections that had a value of every symbol within the full-picture deadline.
    pub full_picture_in_time: u64,
    pub full_picture_never: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Closes by code; "none" when the stream ended without a close frame, "reset" when
    /// it broke (counted again under "none").
    pub closes: BTreeMap<String, u64>,
    /// First few protocol error texts, for diagnosis.
    pub samples: Vec<String>,
    pub slow: SlowOutcome,
}

/// What happened to the clients that stopped reading.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlowOutcome {
    pub clients: u64,
    /// Got `error` `slow_consumer` (moved to conflation).
    pub told_slow_consumer: u64,
    pub closed_4008: u64,
    /// The stream ended without a 4008 close frame (cut while the socket was full, or
    /// closed with another code).
    pub dropped_without_close: u64,
    /// Still open and never told anything.
    pub untouched: u64,
}

fn add_opt(a: Option<u64>, b: Option<u64>, f: fn(u64, u64) -> u64) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Counts {
    pub fn merge(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.connect_failures += o.connect_failures;
        self.updates += o.updates;
        self.updates_total += o.updates_total;
        self.snapshots += o.snapshots;
        self.resubscribes += o.resubscribes;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.wire_bytes += o.wire_bytes;
        self.deflate_connections += o.deflate_connections;
        self.seq_missing += o.seq_missing;
        self.seq_gaps += o.seq_gaps;
        self.conflated += o.conflated;
        self.lost_told += o.lost_told;
        self.continuity_errors += o.continuity_errors;
        self.seq_regressions += o.seq_regressions;
        self.protocol_errors += o.protocol_errors;
        self.interval_violations += o.interval_violations;
        self.min_conn_updates = add_opt(self.min_conn_updates, o.min_conn_updates, u64::min);
        self.max_conn_updates = add_opt(self.max_conn_updates, o.max_conn_updates, u64::max);
        self.full_picture_in_time += o.full_picture_in_time;
        self.full_picture_never += o.full_picture_never;
        for (k, v) in &o.errors_by_code {
            *self.errors_by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.closes {
            *self.closes.entry(k.clone()).or_default() += v;
        }
        for s in &o.samples {
            if self.samples.len() < 10 {
                self.samples.push(s.clone());
            }
        }
        self.slow.clients += o.slow.clients;
        self.slow.told_slow_consumer += o.slow.told_slow_consumer;
        self.slow.closed_4008 += o.slow.closed_4008;
        self.slow.dropped_without_close += o.slow.dropped_without_close;
        self.slow.untouched += o.slow.untouched;
    }

    pub fn sample(&mut self, text: impl Into<String>) {
        self.protocol_errors += 1;
        if self.samples.len() < 10 {
            self.samples.push(text.into());
        }
    }

    pub fn conn_updates(&mut self, n: u64) {
        self.min_conn_updates = add_opt(self.min_conn_updates, Some(n), u64::min);
        self.max_conn_updates = add_opt(self.max_conn_updates, Some(n), u64::max);
    }
}

/// Percentiles of a histogram, µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// CPU and memory of one process over the measurement window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub pid: u32,
    /// CPU seconds (user + system) used in the window.
    pub cpu_s: f64,
    /// Average cores busy in the window.
    pub cores: f64,
    /// RSS before the load generator connected, KiB.
    pub rss_before_kib: u64,
    /// RSS at the start of the window (every connection open), KiB.
    pub rss_window_start_kib: u64,
    /// Highest RSS seen during the run, KiB.
    pub rss_max_kib: u64,
    /// RSS at the end of the window, KiB.
    pub rss_end_kib: u64,
}

/// The JSON summary of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub protocol: String,
    pub connections: u64,
    pub procs: u32,
    pub window_s: f64,
    /// Live updates delivered per second in the window (all connections).
    pub updates_per_s: f64,
    pub latency: Percentiles,
    pub full_picture: Percentiles,
    /// Time to open each connection (TCP connect and WebSocket upgrade).
    pub connect: Percentiles,
    pub counts: Counts,
    /// The servers sampled with --target-pid.
    pub targets: Vec<Resource>,
    /// The load generator's own CPU in the window (all its processes).
    pub loadgen_cpu_s: f64,
    pub loadgen_cores: f64,
    /// Cores busy on the whole machine in the window, every process included.
    pub machine_busy_cores: f64,
    /// Cores the hypervisor took away in the window (steal).
    pub machine_steal_cores: f64,
    /// Cores busy in processes that are neither targets nor the load generator: other
    /// work on a shared machine.
    pub other_cores: f64,
    /// 1-minute load average at the start and end of the window.
    pub loadavg: (f64, f64),
    /// Updates per CPU-second of the targets together.
    pub updates_per_target_cpu_s: f64,
    /// RSS growth of the targets per open connection, from before connecting to the
    /// start of the window, bytes.
    pub target_rss_per_connection_bytes: f64,
    pub args: Vec<String>,
}
