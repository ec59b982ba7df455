use std::path::PathBuf;

use clap::Parser;
use tickmesh_oms::OmsConfig;

/// TickMesh's simulated order system: demo accounts trading at the market's prints, their
/// events appended to the account stream.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; TICKMESH_OMS_* variables override it.
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
    let config = OmsConfig::load(args.config.as_deref())?;
    tickmesh_oms::run(config, tickmesh_service::shutdown_signal()).await
}
