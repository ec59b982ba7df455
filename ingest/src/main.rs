use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickmesh_ingest::IngestConfig;
use tickmesh_ingest::bench::{self, BenchOptions};
use tickmesh_ingest::config::SourceKind;
use tickmesh_ingest::record::{self, RecordOptions};
use tickmesh_ingest::sources::itch::{self, generate};
use tickmesh_ingest::tickfile::FileFormat;

/// TickMesh ingest: market data (simulated or replayed), sequenced and published to NATS.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; TICKMESH_INGEST_* variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Write logs as JSON lines (for log shippers) instead of text.
    #[arg(long, global = true, env = "TICKMESH_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the configured feed (the default).
    Run {
        /// Replay these files instead of the configured source.
        #[arg(long)]
        replay: Vec<PathBuf>,
        /// Replay pace: 1 = as recorded, N = N× faster, 0 = as fast as possible.
        #[arg(long)]
        speed: Option<f64>,
        /// Replay the files again and again.
        #[arg(long = "loop")]
        repeat: bool,
    },
    /// Capture the live tick stream and its prints into a file (NDJSON or CSV by name,
    /// .gz to compress).
    Record {
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many ticks.
        #[arg(long)]
        max_ticks: Option<u64>,
        /// Subject to capture.
        #[arg(long, default_value = "md.>")]
        subject: String,
        /// Ticks only: leave out their prints (`tr.` for `md.` in the subject).
        #[arg(long)]
        no_trades: bool,
        /// ndjson or csv; default: from the file name.
        #[arg(long, value_parser = parse_format, default_value = "auto")]
        format: FileFormat,
    },
    /// Write a synthetic NASDAQ TotalView-ITCH 5.0 day of the simulator's universe
    /// (`[sim] universe`; gzip when the name ends in .gz).
    ItchGen {
        #[arg(long)]
        out: PathBuf,
        /// Random seed: the same seed and universe write the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Order events in the continuous session (09:30–16:00), at most 20000000 (the
        /// day is built in memory: about 33 bytes per event).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
    },
    /// Read an ITCH 5.0 file (plain or gzip) into books on one core, publishing nothing:
    /// prints the messages, bad frames, refused messages and messages/s.
    ItchRead { file: PathBuf },
    /// Measure publish throughput against the configured nats-server.
    Bench {
        /// Target ticks/s of the publish phase.
        #[arg(long, default_value_t = 1_000_000)]
        rate: u32,
        /// Target ticks/s of the phase with the gap-checking subscriber.
        #[arg(long, default_value_t = 500_000)]
        check_rate: u32,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn parse_format(s: &str) -> Result<FileFormat, String> {
    match s {
        "auto" => Ok(FileFormat::Auto),
        "ndjson" => Ok(FileFormat::Ndjson),
        "csv" => Ok(FileFormat::Csv),
        _ => Err(format!("{s:?}: expected auto, ndjson or csv")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tickmesh_service::init_logging(args.log_json);
    let mut config = IngestConfig::load(args.config.as_deref())?;
    match args.command.unwrap_or(Command::Run {
        replay: Vec::new(),
        speed: None,
        repeat: false,
    }) {
        Command::Run {
            replay,
            speed,
            repeat,
        } => {
            if !replay.is_empty() {
                config.source = SourceKind::Replay;
                config.replay.files = replay;
            }
            if let Some(speed) = speed {
                config.replay.speed = speed;
            }
            config.replay.repeat |= repeat;
            config.validate()?;
            tickmesh_ingest::run(config, tickmesh_service::shutdown_signal()).await
        }
        Command::Record {
            out,
            duration,
            max_ticks,
            subject,
            no_trades,
            format,
        } => {
            let duration = duration
                .map(|s| {
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| anyhow::anyhow!("--duration {s}: not a number of seconds"))
                })
                .transpose()?;
            let opts = RecordOptions {
                out,
                duration,
                max_ticks,
                subject,
                trades: !no_trades,
                format,
            };
            let summary =
                record::record(&config.nats, &opts, tickmesh_service::shutdown_signal()).await?;
            eprintln!(
                "recorded {} ticks and {} prints to {} ({} invalid messages skipped, {} prints without their tick, {} slow-consumer drops)",
                summary.ticks,
                summary.trades,
                opts.out.display(),
                summary.invalid,
                summary.unpaired,
                summary.dropped
            );
            Ok(())
        }
        Command::ItchGen { out, seed, events } => {
            anyhow::ensure!(events <= 20_000_000, "--events must be at most 20000000");
            let universe = match config.sim.universe.is_empty() {
                true => tickmesh_ingest::sources::universe::default_universe(),
                false => config.sim.universe.clone(),
            };
            let params = generate::GenParams {
                seed,
                universe: &universe,
                events,
            };
            let messages = generate::write_file(&out, &params)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {messages} ITCH 5.0 messages to {}", out.display());
            Ok(())
        }
        Command::ItchRead { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let started = std::time::Instant::now();
            let day = itch::read_day(f).with_context(|| format!("reading {}", file.display()))?;
            let secs = started.elapsed().as_secs_f64();
            let c = &day.counts;
            println!(
                "{}: {} messages, {} bad frames, {} refused, {} stocks, {} live orders at the end; {:.3} s, {:.2} M messages/s",
                file.display(),
                c.messages(),
                c.bad_frames(),
                day.books.malformed.total(),
                day.books.iter().count(),
                day.books.orders(),
                secs,
                c.messages() as f64 / secs / 1e6
            );
            Ok(())
        }
        Command::Bench {
            rate,
            check_rate,
            seconds,
        } => {
            anyhow::ensure!(
                (1..=5_000_000).contains(&rate) && (1..=5_000_000).contains(&check_rate),
                "--rate and --check-rate must be 1..=5000000"
            );
            anyhow::ensure!((1..=600).contains(&seconds), "--seconds must be 1..=600");
            let opts = BenchOptions {
                nats: config.nats.clone(),
                rate,
                check_rate,
                seconds,
                shards: config.shards,
            };
            let report = bench::bench(&opts).await?;
            println!("{}", report.markdown());
            Ok(())
        }
    }
}
