//! The edge gateway as its own process, for tests that kill one the hard way (SIGKILL):
//! `tickmesh_edge::run` configured from `TICKMESH_EDGE_*` variables only, stopped by
//! SIGINT/SIGTERM like the real binary. Cargo builds it with the tests, so they need no
//! nested build.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = tickmesh_edge::EdgeConfig::load(None)?;
    let listener = tickmesh_edge::bind(config.listen)?;
    tickmesh_edge::run(config, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
