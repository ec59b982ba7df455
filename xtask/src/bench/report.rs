//! The report: the generated sections of docs/benchmarks.md, and the helpers every
//! scenario's part of it shares (number formats, the table of runs, the commands).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::results::{self, Header, Run, System};
use super::{OWN_SECTION, SCENARIOS, conflation, idle, ingest, latency, slow, storm, throughput};

/// The generated part of docs/benchmarks.md lies between these lines; text outside them
/// (the analysis, other benchmarks' sections) is kept when the report is rebuilt.
pub const BEGIN: &str =
    "<!-- bench:begin: written by `cargo xtask bench`; edit outside these markers -->";
pub const END: &str = "<!-- bench:end -->";
pub const RESUBSCRIBE_BEGIN: &str =
    "<!-- bench:resubscribe:begin: written by `cargo xtask bench --scenario resubscribe` -->";
pub const RESUBSCRIBE_END: &str = "<!-- bench:resubscribe:end -->";
pub const CURVE_BEGIN: &str =
    "<!-- bench:curve:begin: written by `cargo xtask bench --scenario curve` -->";
pub const CURVE_END: &str = "<!-- bench:curve:end -->";
pub const MARKET_OPEN_BEGIN: &str =
    "<!-- bench:market-open:begin: written by `cargo xtask bench --scenario market-open` -->";
pub const MARKET_OPEN_END: &str = "<!-- bench:market-open:end -->";
pub const TRADES_BEGIN: &str =
    "<!-- bench:trades:begin: written by `cargo xtask bench --scenario trades` -->";
pub const TRADES_END: &str = "<!-- bench:trades:end -->";
pub const ACCOUNTS_BEGIN: &str =
    "<!-- bench:accounts:begin: written by `cargo xtask bench --scenario accounts` -->";
pub const ACCOUNTS_END: &str = "<!-- bench:accounts:end -->";
pub const DEFLATE_BEGIN: &str =
    "<!-- bench:deflate:begin: written by `cargo xtask bench --scenario deflate` -->";
pub const DEFLATE_END: &str = "<!-- bench:deflate:end -->";
pub const DELAYED_BEGIN: &str =
    "<!-- bench:delayed:begin: written by `cargo xtask bench --scenario delayed` -->";
pub const DELAYED_END: &str = "<!-- bench:delayed:end -->";

/// `page` with the text between `begin` and `end` replaced by `body` (appended, with the
/// markers, when they are missing).
pub fn with_section(page: &str, begin: &str, end: &str, body: &str) -> String {
    match (page.find(begin), page.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{body}{}", &page[..b], &page[e..]),
        _ if page.trim().is_empty() => format!("# Benchmarks\n\n{begin}\n{body}{end}\n"),
        _ => format!("{}\n\n{begin}\n{body}{end}\n", page.trim_end()),
    }
}

/// A time recorded in µs, in ms; "none" when nothing was recorded.
pub fn ms(us: u64) -> String {
    if us == 0 {
        return "none".into();
    }
    format!("{:.2} ms", us as f64 / 1000.0)
}

pub fn num(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

/// The machine the figures come from; `nats` is the nats-server binary.
fn machine(nats: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |k| format!("{:.1} GiB", k / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nats = Command::new(nats)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let v: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "open files per process: {} soft, {} hard",
                        v.get(3).unwrap_or(&"?"),
                        v.get(4).unwrap_or(&"?")
                    )
                })
        })
        .unwrap_or_default();
    format!(
        "- CPU: {cpu}, {nproc} cores (`nproc`)\n- memory: {mem}\n- kernel: Linux {kernel}\n\
         - {nofile}\n- {nats}\n"
    )
}

/// The main block, from the results in `dir` of the scenarios without a section of their
/// own; `nats` is the nats-server binary (its version is shown).
pub fn report(dir: &Path, nats: &Path) -> anyhow::Result<String> {
    let mut commands = Vec::new();
    for name in SCENARIOS {
        if let Some(h) = results::load::<Header>(dir, name)? {
            commands.push(h.xtask_command);
        }
    }
    commands.dedup();
    if commands.is_empty() {
        commands.push("cargo xtask bench".into());
    }
    let command = commands
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", then ");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by {command} (release build) on one machine, with nats-server, \
         `tickmesh-ingest`, the edge(s) and `tickmesh-loadgen` all sharing it over loopback. \
         The machine is shared with other work and noisy: figures move by 10–30 % between \
         runs; read ratios and orders of magnitude, not the last digit.\n"
    );
    let _ = writeln!(md, "## Machine\n\n{}", machine(nats));
    let _ = writeln!(
        md,
        "## How to read this\n\n\
         - **Latency** is ingest-to-client: the loadgen's wall clock at receipt minus the \
           tick's `ts`, which ingest stamps just before it publishes (one clock: same host).\n\
         - **nats-server WS** is the same workload on nats-server's own WebSocket listener \
           (`nats/websocket.conf`): each client sends `SUB md.<shard>.<symbol>` per symbol and \
           gets every tick as a NATS `MSG` with the MessagePack tick as payload.\n\
         - **CPU** is cores busy on average over the measurement window, from \
           `/proc/<pid>/stat`. TickMesh's server CPU is edge(s) + nats-server (which feeds the \
           edges); the comparison's is nats-server alone. Ingest feeds both and is shown apart.\n\
         - **Updates per CPU-second** = updates delivered per second ÷ server cores.\n\
         - Each scenario's raw results, with the exact load generator command line, are in \
           `target/bench/<scenario>*.json` after a run.\n"
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| scenario | target | TickMesh | nats-server WS | ratio | target met? |\n|---|---|---|---|---|---|"
    );
    let mut details = String::new();
    for name in SCENARIOS.iter().filter(|n| !OWN_SECTION.contains(n)) {
        let (md, d) = (&mut md, &mut details);
        let ran = match *name {
            "idle" => section(dir, name, md, d, idle::report)?,
            "throughput" => section(dir, name, md, d, throughput::report)?,
            "latency" => section(dir, name, md, d, latency::report)?,
            "conflation" => section(dir, name, md, d, conflation::report)?,
            "slow" => section(dir, name, md, d, slow::report)?,
            "storm" => section(dir, name, md, d, storm::report)?,
            "ingest" => section(dir, name, md, d, ingest::report)?,
            _ => true,
        };
        if !ran {
            let _ = writeln!(md, "| {name} | | not run | | | |");
        }
    }
    md.push('\n');
    md.push_str(&details);
    Ok(md)
}

/// Scenario `name`'s rows of the results table (into `md`) and its details section (into
/// `d`), from its result file in `dir`; false when it has not run.
fn section<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    md: &mut String,
    d: &mut String,
    report: fn(&results::Stored<T>, &mut String, &mut String) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let Some(v) = results::load(dir, name)? else {
        return Ok(false);
    };
    report(&v, md, d).with_context(|| results::path(dir, name).display().to_string())?;
    Ok(true)
}

pub fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// The table of load generator runs most scenarios show: (row label, run).
pub fn run_table(details: &mut String, runs: &[(&str, &Run)]) -> anyhow::Result<()> {
    let _ = writeln!(
        details,
        "| run | connected | updates/s | p50 | p99 | p99.9 | max | seq gaps | errors | server cores | ingest cores | loadgen cores | other load | server RSS max |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (label, r) in runs {
        let s = &r.summary;
        let (l, c) = (&s.latency, &s.counts);
        let rss = match r.system {
            System::Nats => r.kib("nats-server", |t| t.rss_max_kib)?,
            System::Tickmesh => r.kib("edge", |t| t.rss_max_kib)?,
        };
        let _ = writeln!(
            details,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} MiB |",
            c.connected,
            num(s.updates_per_s),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            c.seq_gaps,
            c.protocol_errors + c.connect_failures,
            r.server_cores()?,
            r.cores("ingest")?,
            s.loadgen_cores,
            other(r),
            rss / 1024.0
        );
    }
    details.push('\n');
    Ok(())
}

/// Other work on the machine during a run: cores busy outside the servers and the load
/// generator, cores stolen by the hypervisor, and the load average.
pub fn other(r: &Run) -> String {
    let s = &r.summary;
    format!(
        "{:.2} cores, steal {:.2}, load avg {:.1}",
        s.other_cores, s.machine_steal_cores, s.loadavg.1
    )
}

/// A command line with long `--symbols` lists shortened to their ends.
fn short_command(cmd: &str) -> String {
    let mut out = Vec::new();
    let mut symbols_next = false;
    for word in cmd.split(' ') {
        if symbols_next && word.matches(',').count() > 4 {
            let first = word.split(',').next().unwrap_or_default();
            let last = word.rsplit(',').next().unwrap_or_default();
            out.push(format!("{first},…,{last}"));
        } else {
            out.push(word.to_string());
        }
        symbols_next = word == "--symbols";
    }
    out.join(" ")
}

/// The load generator command of each run.
pub fn commands(details: &mut String, runs: &[Run]) {
    details.push_str("Load generator runs:\n\n");
    for r in runs {
        let _ = writeln!(details, "- `{}`: `{}`", r.label, short_command(&r.command));
    }
    details.push('\n');
}

/// A command line with a long `--symbols` list shown by its ends and count.
pub fn shorten_symbols(command: &str) -> String {
    let mut words: Vec<String> = command.split(' ').map(str::to_string).collect();
    for i in 1..words.len() {
        if words[i - 1] == "--symbols" {
            let list: Vec<&str> = words[i].split(',').collect();
            if list.len() > 4 {
                words[i] = format!(
                    "{},{},…,{} ({} symbols)",
                    list[0],
                    list[1],
                    list[list.len() - 1],
                    list.len()
                );
            }
        }
    }
    words.join(" ")
}
