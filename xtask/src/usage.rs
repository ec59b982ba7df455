//! `cargo xtask usage [--month YYYY-MM] [--format text|csv|json] [--users]`: the demo
//! mesh's usage report, `tickmesh usage` over both regions' leaf nodes (each region keeps
//! its edges' records), as the demo's operator.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Parser;
use tickmesh_cli::args::{Cli, Command};
use tickmesh_core::usage::Month;

pub fn usage(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let pki = root.join(".tools/demo/pki");
    if !pki.join("admin.password").exists() {
        bail!(
            "no demo mesh credentials in {}: start `cargo xtask demo` first",
            pki.display()
        );
    }
    let mut argv: Vec<String> = vec!["tickmesh".into(), "usage".into()];
    for region in &crate::DEMO_REGIONS {
        argv.push("--nats".into());
        argv.push(format!("nats://127.0.0.1:{}", region.leaves[0].1));
    }
    let admin = |file: &str| pki.join(file).to_string_lossy().into_owned();
    argv.extend(["--user".into(), "admin".into()]);
    argv.extend(["--password-file".into(), admin("admin.password")]);
    argv.extend(["--ca".into(), admin("ca.pem")]);
    argv.extend(args.iter().cloned());
    let cli = Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Command::Usage(args) = cli.command else {
        bail!("not the usage command");
    };
    let month = match &args.month {
        Some(m) => Month::parse(m).map_err(anyhow::Error::msg)?,
        None => Month::of_unix_us(tickmesh_core::tick::now_us()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(tickmesh_cli::usage::report(&args, month))
        .context("is `cargo xtask demo` running?")?;
    print!("{report}");
    Ok(())
}
