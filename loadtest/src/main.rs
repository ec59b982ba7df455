//! `tickmesh-loadgen`: opens many WebSocket connections to a TickMesh edge (or to
//! nats-server's own WebSocket listener, with the same workload), subscribes each to a mix
//! of symbols, and measures what arrives: ingest-to-client latency from each tick's `ts`,
//! updates per second, seq gaps, protocol errors, and the CPU and RSS of the servers.
//!
//! - [`ws`]: a minimal WebSocket client with small buffers.
//! - [`scan`]: lean readers of TickMesh JSON/MessagePack messages and NATS `MSG`s.
//! - [`conn`]: one connection's life and its checks.
//! - [`account`]: an account-channel connection (`--accounts`) and its checks.
//! - [`append`]: `tickmesh-loadgen append`, the account events' writer.
//! - [`stats`]: counters and histograms; the JSON summary is the library's
//!   [`tickmesh_loadgen::summary`].
//! - [`procfs`]: CPU and RSS from /proc.
//!
//! Connections are spread over source addresses 127.0.K.1.. (about 28k ports each) and,
//! with `--procs`, over child processes (20,000 open files per process), each of which
//! runs `--threads` single-threaded runtimes. Children report progress and their counts
//! on stdout; the parent merges them and samples the servers.

mod account;
mod append;
mod conn;
mod procfs;
mod scan;
mod stats;
mod ws;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use conn::{Progress, Protocol, Timeline, Workload};
use stats::{Percentiles, Resource, Stats, Summary, WireStats};
use tickmesh_core::{Format, Mode, Symbol};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// A TickMesh edge: protocol v1 on /v1/stream.
    Tickmesh,
    /// nats-server's WebSocket listener: the NATS protocol, `md.<shard>.<symbol>`.
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Encoding {
    Json,
    Msgpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StreamArg {
    Ticks,
    Trades,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Ltp,
    Quote,
    Full,
}

/// Load generator for TickMesh edges and, for comparison, nats-server's WebSocket
/// listener. Loopback only: it refuses servers outside 127.0.0.0/8.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// Server address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, value_enum, default_value = "tickmesh")]
    target: Target,
    /// WebSocket path (the edge serves /v1/stream; nats-server takes any).
    #[arg(long)]
    path: Option<String>,
    /// Connections in total (over every process).
    #[arg(long, default_value_t = 100)]
    conns: u64,
    /// The universe, comma separated; connection i takes `per-conn` consecutive symbols
    /// starting at i × per-conn.
    #[arg(long, value_delimiter = ',', default_value = "AAPL,MSFT,SPY,NVDA,TSLA")]
    symbols: Vec<String>,
    /// Symbols per connection (0: connect and stay idle).
    #[arg(long, default_value_t = 1)]
    per_conn: usize,
    #[arg(long, value_enum, default_value = "quote")]
    mode: ModeArg,
    /// Conflation interval; 0 = every tick.
    #[arg(long, default_value_t = 0)]
    interval_ms: u32,
    /// What each connection follows: the symbols' ticks, or their prints (TickMesh
    /// `stream: "trades"` without history; `tr.<shard>.<symbol>` with --target nats).
    #[arg(long, value_enum, default_value = "ticks")]
    stream: StreamArg,
    /// TickMesh encoding.
    #[arg(long, value_enum, default_value = "json")]
    format: Encoding,
    /// Offer permessage-deflate (RFC 7692) to a TickMesh edge, as browsers do; the
    /// summary counts bytes on the wire (`wire_bytes`) and the connections that got it.
    #[arg(long)]
    deflate: bool,
    /// Subject shards (md.<fnv1a_32(symbol) % shards>.<symbol>) for --target nats.
    #[arg(long, default_value_t = 64)]
    shards: u32,
    /// New connections per second over the whole run; 0 = all at once.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Extra time after the last scheduled connect before the warm-up starts, s.
    #[arg(long, default_value_t = 2.0)]
    settle_s: f64,
    /// Warm-up before the measurement window, s.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Measurement window, s.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Every Nth connection never reads after subscribing, until the window ends
    /// (10 = 10 %).
    #[arg(long)]
    slow_every: Option<u64>,
    /// SO_RCVBUF of the slow connections, bytes (so that their backlog reaches the server
    /// quickly instead of filling a large kernel buffer).
    #[arg(long, default_value_t = 8192)]
    slow_rcvbuf: u32,
    /// Symbols each slow connection subscribes to (default: --per-conn). A client that
    /// asked for a lot and cannot keep up is the usual slow consumer.
    #[arg(long)]
    slow_per_conn: Option<usize>,
    /// Do not open the slow connections at all: the baseline run to compare with.
    #[arg(long)]
    slow_skip: bool,
    /// How long slow connections read again after the window to learn their fate, s.
    #[arg(long, default_value_t = 3.0)]
    resume_s: f64,
    /// A connection has its full picture if it holds a value of each symbol within this
    /// long of its start, ms.
    #[arg(long, default_value_t = 2000)]
    full_picture_ms: u64,
    /// Each reading connection sends its subscription again this many times a second
    /// (NATS: unsubscribes and subscribes anew); 0 = once. With the tier's rate limit, a
    /// client that re-sends a subscribe as fast as it is allowed to.
    #[arg(long, default_value_t = 0.0)]
    resubscribe_per_s: f64,
    /// Source addresses 127.0.<source-net>.1 ..= .<source-addrs>.
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    #[arg(long, default_value_t = 1)]
    source_net: u8,
    /// Processes to spread the connections over (each may hold ~19,500 sockets).
    #[arg(long, default_value_t = 1)]
    procs: u32,
    /// Single-threaded runtimes per process.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Processes to sample, NAME=PID or PID; repeatable.
    #[arg(long = "target-pid")]
    target_pids: Vec<String>,
    /// JSON summary file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    /// Follow accounts instead of symbols: connection i subscribes to account
    /// `<account-prefix><i % accounts>` (on nats-server: `SUB acct.<account>.>`). JSON only.
    #[arg(long)]
    accounts: Option<u64>,
    #[arg(long, default_value = "B")]
    account_prefix: String,
    /// Subscribe to the account with `from_seq` (on nats-server: a JetStream consumer of
    /// every event of the account kept).
    #[arg(long)]
    from_seq: Option<u64>,
    /// A connection is caught up when this seq of its account arrives; the time from its
    /// subscribe is reported as its "full picture".
    #[arg(long)]
    caught_up_seq: Option<u64>,
    /// HS256 secret the edge checks tokens with: each connection gets a token naming its
    /// account.
    #[arg(long)]
    token_secret: Option<String>,
    /// Internal: run as a child over connections START:COUNT, starting at this Unix µs.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    t0_unix_us: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("append") {
        return append::main(std::env::args().skip(1));
    }
    let args = Args::parse();
    raise_nofile_limit();
    check(&args)?;
    if let Some(slice) = &args.child {
        return child(&args, slice);
    }
    let summary = parent(&args)?;
    let json = serde_json::to_string_pretty(&summary)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
    }
    print_summary(&summary);
    Ok(())
}

/// The soft open-files limit up to the hard one: each connection is a file.
fn raise_nofile_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("tickmesh-loadgen: could not raise the open-files limit: {e}");
    }
}

fn check(args: &Args) -> anyhow::Result<()> {
    let loopback = match args.server.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        bail!(
            "--server {} is not a loopback address: this tool only loads servers on this machine",
            args.server
        );
    }
    if args.symbols.is_empty() {
        bail!("--symbols is empty");
    }
    if args.deflate && args.target == Target::Nats {
        bail!("--deflate is for --target tickmesh (nats-server's listener is measured plain)");
    }
    if !(0.0..=1000.0).contains(&args.resubscribe_per_s) {
        bail!(
            "--resubscribe-per-s must be 0..=1000, got {}",
            args.resubscribe_per_s
        );
    }
    for s in &args.symbols {
        Symbol::parse(s).map_err(|e| anyhow::anyhow!("--symbols: {s:?}: {e}"))?;
    }
    if args.per_conn.max(args.slow_per_conn.unwrap_or(0)) > args.symbols.len() {
        bail!(
            "--per-conn/--slow-per-conn {} is more than the {} symbols given",
            args.per_conn.max(args.slow_per_conn.unwrap_or(0)),
            args.symbols.len()
        );
    }
    if args.accounts.is_some() && args.format != Encoding::Json {
        bail!("--accounts is measured in JSON only");
    }
    if args.accounts == Some(0) {
        bail!("--accounts must be at least 1");
    }
    if args.procs == 0 || args.threads == 0 || args.source_addrs == 0 {
        bail!("--procs, --threads and --source-addrs must be at least 1");
    }
    let per_proc = args.conns.div_ceil(u64::from(args.procs));
    if per_proc > 19_500 {
        bail!(
            "{per_proc} connections per process is over the ~19,500 that 20,000 open files allow: raise --procs"
        );
    }
    let per_addr = args.conns.div_ceil(u64::from(args.source_addrs));
    if per_addr > 28_000 {
        bail!(
            "{per_addr} connections per source address is over the ephemeral port range: raise --source-addrs"
        );
    }
    Ok(())
}

/// The run's fixed points, from its start.
#[derive(Debug, Clone, Copy)]
struct Plan {
    spacing: Duration,
    window_start: Duration,
    window: Duration,
    resume: Duration,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        let spacing = if args.connect_rate > 0.0 {
            Duration::from_secs_f64(1.0 / args.connect_rate)
        } else {
            Duration::ZERO
        };
        let connecting = spacing * u32::try_from(args.conns).unwrap_or(u32::MAX);
        let window_start = connecting + Duration::from_secs_f64(args.settle_s + args.warmup_s);
        Plan {
            spacing,
            window_start,
            window: Duration::from_secs_f64(args.duration_s),
            resume: if args.slow_every.is_some() && !args.slow_skip {
                Duration::from_secs_f64(args.resume_s)
            } else {
                Duration::ZERO
            },
        }
    }

    fn end(&self) -> Duration {
        self.window_start + self.window + self.resume
    }
}

fn workload(args: &Args) -> Workload {
    let base = Ipv4Addr::new(127, 0, args.source_net, 0).octets();
    Workload {
        protocol: match (args.target, args.format) {
            (Target::Nats, _) => Protocol::Nats,
            (Target::Tickmesh, Encoding::Json) => Protocol::TickMesh(Format::Json),
            (Target::Tickmesh, Encoding::Msgpack) => Protocol::TickMesh(Format::MsgPack),
        },
        server: args.server,
        path: args.path.clone().unwrap_or_else(|| match args.target {
            Target::Tickmesh => "/v1/stream".into(),
            Target::Nats => "/".into(),
        }),
        sources: (1..=args.source_addrs)
            .map(|k| IpAddr::V4(Ipv4Addr::new(base[0], base[1], base[2], k)))
            .collect(),
        index: args
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_bytes().to_vec(), i as u32))
            .collect(),
        symbols: args.symbols.clone(),
        per_conn: args.per_conn,
        mode: match args.mode {
            ModeArg::Ltp => Mode::Ltp,
            ModeArg::Quote => Mode::Quote,
            ModeArg::Full => Mode::Full,
        },
        interval_ms: args.interval_ms,
        shards: args.shards,
        slow_every: args.slow_every,
        slow_rcvbuf: Some(args.slow_rcvbuf),
        slow_per_conn: args.slow_per_conn.unwrap_or(args.per_conn),
        slow_skip: args.slow_skip,
        full_picture_deadline: Duration::from_millis(args.full_picture_ms),
        resubscribe_every: (args.resubscribe_per_s > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / args.resubscribe_per_s)),
        trades: args.stream == StreamArg::Trades,
        accounts: args.accounts.map(|count| account::Accounts {
            prefix: args.account_prefix.clone(),
            count,
            from_seq: args.from_seq,
            caught_up_seq: args.caught_up_seq,
            secret: args.token_secret.clone(),
        }),
        deflate: args.deflate,
    }
}

/// Runs connections `range` on `threads` single-threaded runtimes; returns merged stats.
fn run_connections(
    args: &Args,
    range: std::ops::Range<u64>,
    t0_unix_us: u64,
    progress: Arc<Progress>,
) -> anyhow::Result<Stats> {
    let plan = Plan::of(args);
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let args = args.clone();
            let range = range.clone();
            let progress = progress.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || -> anyhow::Result<Stats> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    let stats = Rc::new(RefCell::new(Stats::default()));
                    let s = stats.clone();
                    local.block_on(&rt, async move {
                        let now_us = conn::now_unix_us();
                        let t0 = if t0_unix_us >= now_us {
                            tokio::time::Instant::now() + Duration::from_micros(t0_unix_us - now_us)
                        } else {
                            tokio::time::Instant::now() - Duration::from_micros(now_us - t0_unix_us)
                        };
                        let tl = Timeline {
                            t0,
                            spacing: plan.spacing,
                            window_start: t0 + plan.window_start,
                            window_end: t0 + plan.window_start + plan.window,
                            resume_end: t0 + plan.end(),
                        };
                        let w = Rc::new(workload(&args));
                        let mut tasks = Vec::new();
                        for i in range.filter(|i| i % u64::from(args.threads) == u64::from(t)) {
                            if w.accounts.is_some() {
                                let (w, s, p) = (w.clone(), s.clone(), progress.clone());
                                tasks.push(tokio::task::spawn_local(async move {
                                    let a = w.accounts.as_ref().expect("checked above");
                                    account::run(i, &w, a, tl, &s, p).await;
                                }));
                                continue;
                            }
                            tasks.push(tokio::task::spawn_local(conn::run(
                                i,
                                w.clone(),
                                tl,
                                s.clone(),
                                progress.clone(),
                            )));
                        }
                        for task in tasks {
                            let _ = task.await;
                        }
                    });
                    Ok(stats.borrow().clone())
                })
                .context("spawning a worker thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = Stats::default();
    for t in threads {
        let s = t
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
        total.merge(&s);
    }
    Ok(total)
}

/// A child process: runs its slice and prints progress lines, then `result <json>`.
fn child(args: &Args, slice: &str) -> anyhow::Result<()> {
    let (start, count) = slice
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .context("--child START:COUNT")?;
    let t0 = args.t0_unix_us.context("--t0-unix-us with --child")?;
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let progress = progress.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            while !done.load(Ordering::Relaxed) {
                let _ = writeln!(
                    out,
                    "progress {} {} {} {}",
                    progress.connected.load(Ordering::Relaxed),
                    progress.updates.load(Ordering::Relaxed),
                    progress.closed.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed)
                );
                let _ = out.flush();
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let stats = run_connections(args, start..start + count, t0, progress)?;
    done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    println!("result {}", serde_json::to_string(&stats.to_wire())?);
    Ok(())
}

struct Targets {
    named: Vec<(String, u32)>,
}

impl Targets {
    fn parse(list: &[String]) -> anyhow::Result<Targets> {
        let named = list
            .iter()
            .map(|t| {
                let (name, pid) = t.split_once('=').unwrap_or(("target", t.as_str()));
                let pid: u32 = pid.parse().with_context(|| format!("--target-pid {t}"))?;
                if procfs::cpu_seconds(pid).is_none() {
                    bail!("--target-pid {t}: no such process");
                }
                Ok((name.to_string(), pid))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Targets { named })
    }
}

/// CPU of some processes at one moment.
fn cpu_of(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|&p| procfs::cpu_seconds(p).unwrap_or(0.0))
        .collect()
}

fn parent(args: &Args) -> anyhow::Result<Summary> {
    let targets = Targets::parse(&args.target_pids)?;
    let target_pids: Vec<u32> = targets.named.iter().map(|(_, p)| *p).collect();
    let plan = Plan::of(args);
    let rss_before: Vec<u64> = target_pids
        .iter()
        .map(|&p| procfs::rss_kib(p).unwrap_or(0))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = procfs::RssWatch::start(target_pids.clone(), stop.clone());
    let t0_unix = conn::now_unix_us() + 300_000;
    let t0 = std::time::Instant::now() + Duration::from_millis(300);
    let bar = progress_bar(args);

    // Workers: this process's threads, or child processes.
    let progress = Arc::new(Progress::default());
    let mut children = Vec::new();
    let mut local = None;
    if args.procs <= 1 {
        let a = args.clone();
        let p = progress.clone();
        local = Some(std::thread::spawn(move || {
            run_connections(&a, 0..a.conns, t0_unix, p)
        }));
    } else {
        let exe = std::env::current_exe().context("locating this executable")?;
        let per = args.conns.div_ceil(u64::from(args.procs));
        for k in 0..u64::from(args.procs) {
            let start = k * per;
            let count = per.min(args.conns.saturating_sub(start));
            if count == 0 {
                continue;
            }
            let mut cmd = Command::new(&exe);
            cmd.args(child_args())
                .arg("--child")
                .arg(format!("{start}:{count}"))
                .arg("--t0-unix-us")
                .arg(t0_unix.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            children.push(cmd.spawn().context("starting a child load generator")?);
        }
    }
    let child_pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let child_progress: Vec<Arc<Progress>> = children
        .iter()
        .map(|_| Arc::new(Progress::default()))
        .collect();
    let readers: Vec<_> = children
        .iter_mut()
        .zip(&child_progress)
        .map(|(c, p)| {
            let out = c.stdout.take().expect("stdout was piped");
            let p = p.clone();
            std::thread::spawn(move || -> anyhow::Result<WireStats> {
                let mut result = None;
                for line in BufReader::new(out).lines() {
                    let line = line?;
                    if let Some(rest) = line.strip_prefix("progress ") {
                        let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                        if let [c, u, cl, f] = v[..] {
                            p.connected.store(c, Ordering::Relaxed);
                            p.updates.store(u, Ordering::Relaxed);
                            p.closed.store(cl, Ordering::Relaxed);
                            p.failed.store(f, Ordering::Relaxed);
                        }
                    } else if let Some(json) = line.strip_prefix("result ") {
                        result = Some(serde_json::from_str(json)?);
                    }
                }
                result.context("a child load generator ended without a result")
            })
        })
        .collect();

    let own_pids: Vec<u32> = if child_pids.is_empty() {
        vec![std::process::id()]
    } else {
        child_pids.clone()
    };
    let totals = || -> (u64, u64, u64, u64) {
        let all = std::iter::once(&progress).chain(child_progress.iter());
        all.fold((0, 0, 0, 0), |acc, p| {
            (
                acc.0 + p.connected.load(Ordering::Relaxed),
                acc.1 + p.updates.load(Ordering::Relaxed),
                acc.2 + p.closed.load(Ordering::Relaxed),
                acc.3 + p.failed.load(Ordering::Relaxed),
            )
        })
    };

    // Sample the window's edges while the bar runs.
    let window_start = t0 + plan.window_start;
    let window_end = window_start + plan.window;
    let mut at_start = None;
    let mut at_end = None;
    let mut machine_start = (0.0, 0.0, 0.0);
    let mut machine_end = (0.0, 0.0, 0.0);
    let mut last_updates = (std::time::Instant::now(), 0u64);
    loop {
        let now = std::time::Instant::now();
        let (connected, updates, closed, failed) = totals();
        if at_start.is_none() && now >= window_start {
            let (busy, steal) = procfs::machine_cpu().unwrap_or_default();
            machine_start = (busy, steal, procfs::loadavg());
            at_start = Some((
                cpu_of(&target_pids),
                cpu_of(&own_pids),
                target_pids
                    .iter()
                    .map(|&p| procfs::rss_kib(p).unwrap_or(0))
                    .collect::<Vec<_>>(),
                now,
            ));
        }
        if at_end.is_none() && now >= window_end {
            let (busy, steal) = procfs::machine_cpu().unwrap_or_default();
            machine_end = (busy, steal, procfs::loadavg());
            at_end = Some((
                cpu_of(&target_pids),
                cpu_of(&own_pids),
                target_pids
                    .iter()
                    .map(|&p| procfs::rss_kib(p).unwrap_or(0))
                    .collect::<Vec<_>>(),
                now,
            ));
        }
        let rate = (updates.saturating_sub(last_updates.1)) as f64
            / now.duration_since(last_updates.0).as_secs_f64().max(1e-3);
        last_updates = (now, updates);
        let phase = if now < window_start {
            "warming up"
        } else if now < window_end {
            "measuring"
        } else {
            "finishing"
        };
        bar.set_position(connected);
        bar.set_message(format!(
            "{phase}  {rate:>9.0} updates/s  closed {closed}  failed {failed}"
        ));
        let workers_done = local.as_ref().is_none_or(|h| h.is_finished())
            && readers.iter().all(|r| r.is_finished());
        if workers_done && at_end.is_some() {
            break;
        }
        if workers_done && now > t0 + plan.end() + Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);

    let mut stats = match local {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("the worker thread panicked"))??,
        None => Stats::default(),
    };
    for r in readers {
        let w = r
            .join()
            .map_err(|_| anyhow::anyhow!("a child reader panicked"))??;
        stats.merge(&Stats::from_wire(&w)?);
    }
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("a child load generator failed: {status}");
        }
    }

    let (start, end) = match (at_start, at_end) {
        (Some(s), Some(e)) => (s, e),
        _ => bail!("the run ended before its measurement window did"),
    };
    let window_s = end.3.duration_since(start.3).as_secs_f64().max(1e-3);
    let max_rss = watch.max();
    let targets_out: Vec<Resource> = targets
        .named
        .iter()
        .enumerate()
        .map(|(i, (name, pid))| {
            let cpu = end.0[i] - start.0[i];
            Resource {
                name: name.clone(),
                pid: *pid,
                cpu_s: cpu,
                cores: cpu / window_s,
                rss_before_kib: rss_before[i],
                rss_window_start_kib: start.2[i],
                rss_max_kib: max_rss[i].max(end.2[i]),
                rss_end_kib: end.2[i],
            }
        })
        .collect();
    let loadgen_cpu: f64 = end.1.iter().sum::<f64>() - start.1.iter().sum::<f64>();
    let target_cpu: f64 = targets_out.iter().map(|t| t.cpu_s).sum();
    let connected = stats.counts.connected.max(1) as f64;
    let rss_growth: f64 = targets_out
        .iter()
        .map(|t| t.rss_window_start_kib as f64 - t.rss_before_kib as f64)
        .sum::<f64>()
        * 1024.0;
    Ok(Summary {
        protocol: match args.target {
            Target::Tickmesh => {
                let deflate = if args.deflate { "-deflate" } else { "" };
                format!("tickmesh-{:?}{deflate}", args.format).to_lowercase()
            }
            Target::Nats => "nats-websocket".into(),
        },
        connections: args.conns,
        procs: args.procs,
        window_s,
        updates_per_s: stats.counts.updates as f64 / window_s,
        latency: Percentiles::of(&stats.latency),
        full_picture: Percentiles::of(&stats.full_picture),
        connect: Percentiles::of(&stats.connect),
        updates_per_target_cpu_s: if target_cpu > 0.0 {
            stats.counts.updates as f64 / target_cpu
        } else {
            0.0
        },
        target_rss_per_connection_bytes: rss_growth / connected,
        counts: stats.counts,
        machine_busy_cores: (machine_end.0 - machine_start.0) / window_s,
        machine_steal_cores: (machine_end.1 - machine_start.1) / window_s,
        other_cores: ((machine_end.0 - machine_start.0) - target_cpu - loadgen_cpu).max(0.0)
            / window_s,
        loadavg: (machine_start.2, machine_end.2),
        targets: targets_out,
        loadgen_cpu_s: loadgen_cpu,
        loadgen_cores: loadgen_cpu / window_s,
        args: std::env::args().skip(1).collect(),
    })
}

/// This process's arguments without `--out FILE` (the parent writes the summary).
fn child_args() -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if a == "--out" {
            skip = true;
            continue;
        }
        if a == "--no-progress" || a.to_str().is_some_and(|s| s.starts_with("--out=")) {
            continue;
        }
        out.push(a);
    }
    out.push("--no-progress".into());
    out
}

fn progress_bar(args: &Args) -> indicatif::ProgressBar {
    if args.no_progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(args.conns);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} connected  {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar
}

fn print_summary(s: &Summary) {
    let c = &s.counts;
    println!(
        "{}: {} connected ({} failed), {:.0} updates/s over {:.1} s",
        s.protocol, c.connected, c.connect_failures, s.updates_per_s, s.window_s
    );
    let l = &s.latency;
    if l.count > 0 {
        println!(
            "latency µs: p50 {} p99 {} p99.9 {} max {} ({} samples)",
            l.p50_us, l.p99_us, l.p999_us, l.max_us, l.count
        );
    }
    if s.connect.count > 0 {
        let c = &s.connect;
        println!(
            "connect + upgrade ms: p50 {:.1} p99 {:.1} max {:.1}",
            c.p50_us as f64 / 1000.0,
            c.p99_us as f64 / 1000.0,
            c.max_us as f64 / 1000.0
        );
    }
    if s.full_picture.count > 0 {
        let f = &s.full_picture;
        println!(
            "full picture ms: p50 {:.1} p99 {:.1} max {:.1}; {} in time, {} never",
            f.p50_us as f64 / 1000.0,
            f.p99_us as f64 / 1000.0,
            f.max_us as f64 / 1000.0,
            c.full_picture_in_time,
            c.full_picture_never
        );
    }
    println!(
        "seq gaps {} ({} missing), regressions {}, protocol errors {}, interval violations {}",
        c.seq_gaps, c.seq_missing, c.seq_regressions, c.protocol_errors, c.interval_violations
    );
    println!(
        "ticks conflated {}, lost and told (gap) {}, continuity errors {}",
        c.conflated, c.lost_told, c.continuity_errors
    );
    if !c.errors_by_code.is_empty() || !c.closes.is_empty() {
        println!("errors {:?} closes {:?}", c.errors_by_code, c.closes);
    }
    if c.slow.clients > 0 {
        println!("slow clients: {:?}", c.slow);
    }
    for t in &s.targets {
        println!(
            "{} (pid {}): {:.2} cores, RSS {} → {} KiB (max {})",
            t.name, t.pid, t.cores, t.rss_before_kib, t.rss_window_start_kib, t.rss_max_kib
        );
    }
    println!(
        "loadgen: {:.2} cores; other processes: {:.2} cores; steal {:.2}; load average {:.1} → {:.1}",
        s.loadgen_cores, s.other_cores, s.machine_steal_cores, s.loadavg.0, s.loadavg.1
    );
    for e in &c.samples {
        println!("  e.g. {e}");
    }
}
