//! `cargo xtask fuzz [--seconds N] [TARGET]`: builds the libFuzzer targets of `fuzz/`
//! with coverage instrumentation and runs each (or one) for N seconds.
//!
//! Stable Rust builds them: the instrumentation is LLVM's SanitizerCoverage pass, asked
//! for with `-Cpasses=sancov-module` and `-Cllvm-args` (both stable flags), the same
//! counters `cargo fuzz build --sanitizer none` asks for; `libfuzzer-sys` compiles the
//! libFuzzer runtime from its C++ sources, so a C++ compiler is the only tool needed
//! (installed with apt-get if missing). Everything goes to `target/fuzz/`: the build, the
//! corpus each run grows (`corpus/TARGET`, seeded from `fuzz/seeds/TARGET`), crash inputs
//! (`artifacts/TARGET/`) and each run's log (`logs/TARGET.log`).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Every fuzz target; `fuzz/Cargo.toml` has a `[[bin]]` for each.
pub const TARGETS: [&str; 11] = [
    "client_json",
    "client_msgpack",
    "wire_tick",
    "tickfile",
    "replay",
    "record",
    "jwt",
    "md_ref",
    "revocation",
    "itch",
    "deflate",
];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// SanitizerCoverage as libFuzzer reads it: 8-bit edge counters, the PC table, and
/// comparison tracing (so the fuzzer learns the keys and magic values the decoders compare
/// against). `--cfg fuzzing` is what fuzzed crates conventionally test for.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

pub fn fuzz(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut only: Option<&str> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("--seconds: {v:?} is not a positive number"))?;
            }
            "-h" | "--help" => {
                eprintln!(
                    "usage: cargo xtask fuzz [--seconds N] [TARGET]\n\
                     runs every fuzz target (or TARGET) for N seconds (default {DEFAULT_SECONDS})\n\
                     targets: {}",
                    TARGETS.join(", ")
                );
                return Ok(());
            }
            t if TARGETS.contains(&t) && only.is_none() => only = Some(t),
            other => bail!(
                "unknown argument {other:?}; targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    let targets: Vec<&str> = match only {
        Some(t) => vec![t],
        None => TARGETS.to_vec(),
    };

    crate::tools::ensure_cxx()?;
    let out = root.join("target/fuzz");
    let host = host_triple()?;
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--release", "--target", &host, "--target-dir"])
        .arg(&out)
        .arg("--manifest-path")
        .arg(root.join("fuzz/Cargo.toml"))
        .env("RUSTFLAGS", RUSTFLAGS)
        // Set by a cargo that runs xtask with flags of its own; they must not reach here.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root);
    for t in &targets {
        build.args(["--bin", t]);
    }
    eprintln!("xtask: building the fuzz targets with coverage instrumentation");
    let started = std::time::Instant::now();
    crate::run(&mut build)?;
    eprintln!(
        "xtask: fuzz build took {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let bin_dir = out.join(&host).join("release");
    let scratch = out.join("tmp");
    std::fs::create_dir_all(out.join("logs"))?;
    let mut failed = Vec::new();
    for t in &targets {
        match run_target(root, &out, &bin_dir, &scratch, t, seconds) {
            Ok(summary) => eprintln!("xtask: fuzz {t}: {summary}"),
            Err(e) => {
                eprintln!("xtask: fuzz {t} FAILED: {e:#}");
                failed.push(*t);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in target/fuzz/artifacts/; reproduce with \
             target/fuzz/{host}/release/TARGET FILE)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs one target for `seconds`; returns its summary line (executions, corpus).
fn run_target(
    root: &Path,
    out: &Path,
    bin_dir: &Path,
    scratch: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<String> {
    let corpus = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    let seeds = root.join("fuzz/seeds").join(target);
    for dir in [&corpus, &artifacts, &scratch.to_path_buf()] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = out.join("logs").join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    let status = Command::new(bin_dir.join(target))
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        // One input taking 10 s is a finding (a hang), as is 2 GiB of memory.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .env("TICKMESH_FUZZ_TMP", scratch)
        .stdout(Stdio::null())
        .stderr(log)
        .current_dir(root)
        .status()
        .with_context(|| format!("starting fuzz target {target}"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{status}; log {}:\n{}", log_path.display(), tail.join("\n"));
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?", str::trim)
            .to_string()
    };
    let corpus_len = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
    Ok(format!(
        "{} executions in {seconds} s, corpus {corpus_len} inputs, peak RSS {} MB, no crash",
        stat("number_of_executed_units"),
        stat("peak_rss_mb")
    ))
}

/// The host's target triple, from `rustc -vV`. The targets are built for it by name so that
/// the instrumentation flags reach only them, not build scripts and proc macros.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")
}
