use std::path::PathBuf;

use clap::Parser;
use tickmesh_edge::EdgeConfig;

/// TickMesh edge gateway: market data over WebSocket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; TICKMESH_EDGE_* variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write logs as JSON lines (for log shippers) instead of text.
    #[arg(long, env = "TICKMESH_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tickmesh_service::init_logging(args.log_json);
    raise_nofile_limit();
    let config = EdgeConfig::load(args.config.as_deref())?;
    let listener = tickmesh_edge::bind(config.listen)?;
    tickmesh_edge::run(config, listener, tickmesh_service::shutdown_signal()).await
}

/// Each WebSocket is an open file: lift the soft limit to the hard one, as far as the
/// system allows (often 1024 soft under a much higher hard limit).
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}
