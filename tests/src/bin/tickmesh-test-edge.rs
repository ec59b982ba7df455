//! The edge gateway as its own process, for tests that kill one (SIGKILL) or drain it
//! (SIGTERM): `tickmesh_edge::run` configured from `--config FILE` (optional) and the
//! `TICKMESH_EDGE_*` variables, stopped by SIGINT/SIGTERM like the real binary. Cargo
//! builds it with the tests, so they need no nested build.

use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = match args.as_slice() {
        [] => None,
        [flag, file] if flag == "--config" => Some(PathBuf::from(file)),
        _ => anyhow::bail!("usage: tickmesh-test-edge [--config FILE]"),
    };
    let config = tickmesh_edge::EdgeConfig::load(file.as_deref())?;
    let listener = tickmesh_edge::bind(config.listen)?;
    tickmesh_edge::run(config, listener, tickmesh_service::shutdown_signal()).await
}
