use std::process::ExitCode;

use clap::Parser;
use tickmesh_cli::args::{self, Cli, Command, UsageArgs, WatchArgs};
use tickmesh_cli::watch::{self, Options};
use tickmesh_core::usage::Month;
use tokio_util::sync::CancellationToken;

/// Exit status for bad arguments (as clap uses).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Watch(a) => watch_command(a),
        Command::Usage(a) => usage_command(a),
    }
}

fn usage_command(a: UsageArgs) -> ExitCode {
    let month = match a.month.as_deref().map(Month::parse).transpose() {
        Ok(m) => m.unwrap_or_else(|| Month::of_unix_us(tickmesh_core::tick::now_us())),
        Err(e) => return usage(&e),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(tickmesh_cli::usage::report(&a, month)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn watch_command(a: WatchArgs) -> ExitCode {
    let symbols = match args::parse_symbols(&a.symbols) {
        Ok(s) => s,
        Err(_) if a.symbols.is_empty() && a.account.is_some() => Vec::new(),
        Err(e) => return usage(&e),
    };
    if let Some(account) = &a.account
        && let Err(e) = tickmesh_core::account::validate(account)
    {
        return usage(&e.to_string());
    }
    let token = a
        .token
        .clone()
        .or_else(|| std::env::var(args::TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    if token
        .as_deref()
        .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return usage("the token must be printable ASCII without spaces (a JWT)");
    }
    let url = match args::stream_url(&a.url) {
        Ok(u) => u,
        Err(e) => return usage(&e),
    };
    let opts = Options {
        url,
        token,
        symbols,
        mode: a.mode.into(),
        interval_ms: a.interval_ms,
        format: a.format(),
        json: a.json,
        account: a.account.clone(),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        watch::run(opts, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command's runtime: one thread is plenty for one connection.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tickmesh: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn usage(message: &str) -> ExitCode {
    eprintln!("tickmesh: {message}");
    ExitCode::from(USAGE)
}

/// Ctrl-C (SIGINT) or SIGTERM: close the connection cleanly and exit 0.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                ctrl_c.await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
    shutdown.cancel();
}
