//! The command line: `tickmesh watch [OPTIONS] SYMBOL...` and `tickmesh usage [OPTIONS]`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use tickmesh_core::{Format, Mode};

/// Longest `--interval-ms` the edge accepts.
pub const MAX_INTERVAL_MS: u32 = 60_000;

/// The environment variable read for the token when `--token` is not given (a token on
/// the command line is visible to every user of the machine in the process list).
pub const TOKEN_ENV: &str = "TICKMESH_TOKEN";

/// TickMesh command-line client.
#[derive(Debug, Parser)]
#[command(name = "tickmesh", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live quotes of SYMBOLs from an edge gateway: a table redrawn in place, or JSON lines.
    Watch(WatchArgs),
    /// The month's usage report: unique users per feed, class (real time or delayed) and
    /// use (display or not), from the usage records the edges keep in NATS.
    Usage(UsageArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// The month, YYYY-MM; default: this month (UTC).
    #[arg(long)]
    pub month: Option<String>,

    /// text (a table), csv, or json.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// One line per user, feed, class and use (first and last seen, sessions), instead of
    /// the counts.
    #[arg(long)]
    pub users: bool,

    /// A NATS server of a domain whose edges keep records (each region keeps its own);
    /// repeat for every region: a user seen in several is counted once.
    #[arg(
        long = "nats",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: Vec<String>,

    /// The stream the edges write to.
    #[arg(long, default_value = "usage")]
    pub stream: String,

    /// NATS user (with --password-file).
    #[arg(long)]
    pub user: Option<String>,

    /// File holding the NATS user's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,

    /// NATS credentials file (operator mode), instead of --user.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<std::path::PathBuf>,

    /// CA that signed the NATS servers' certificates (TLS).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Csv,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Symbols to watch, e.g. AAPL BRK-B AAPL261218C00150000 (or AAPL,MSFT); lower case is
    /// upper-cased.
    #[arg(required_unless_present = "account", value_name = "SYMBOL")]
    pub symbols: Vec<String>,

    /// Also follow this account's orders, fills, positions and balances (the token must
    /// name it in its `acct` claim); resumed from the last seq after every reconnect.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,

    /// The edge's stream endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/stream")]
    pub url: String,

    /// Access token (JWT), sent in the `Authorization: Bearer` header (never in the URL,
    /// which proxies and servers log); default: $TICKMESH_TOKEN.
    #[arg(long)]
    pub token: Option<String>,

    /// Fields to receive: ltp (last price only), quote (level 1) or full (with depth).
    #[arg(long, value_enum, default_value_t = ModeArg::Quote)]
    pub mode: ModeArg,

    /// At most one update per symbol every this many milliseconds; 0 = every tick.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=MAX_INTERVAL_MS as i64))]
    pub interval_ms: u32,

    /// Speak MessagePack (binary frames) instead of JSON.
    #[arg(long)]
    pub msgpack: bool,

    /// Write one JSON line per tick or snapshot to stdout instead of drawing the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Ltp,
    Quote,
    Full,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Ltp => Mode::Ltp,
            ModeArg::Quote => Mode::Quote,
            ModeArg::Full => Mode::Full,
        }
    }
}

impl WatchArgs {
    pub fn format(&self) -> Format {
        if self.msgpack {
            Format::MsgPack
        } else {
            Format::Json
        }
    }
}

/// Upper-cases, splits on commas, checks each symbol against the protocol's grammar and
/// drops repeats (keeping the first position). The error names the offending input.
pub fn parse_symbols(raw: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for arg in raw {
        for part in arg.split(',') {
            let sym = part.trim().to_ascii_uppercase();
            if sym.is_empty() {
                continue;
            }
            tickmesh_core::symbol::validate(&sym)
                .map_err(|e| format!("invalid symbol {:?}: {e}", part.trim()))?;
            if !out.contains(&sym) {
                out.push(sym);
            }
        }
    }
    if out.is_empty() {
        return Err("no symbol given".into());
    }
    Ok(out)
}

/// The URL to dial: `url`, checked. The token is not part of it: it goes in a header.
pub fn stream_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = if let Some(rest) = url.strip_prefix("ws://") {
        rest
    } else if url.starts_with("wss://") {
        return Err(format!(
            "{url}: wss:// (TLS) is not supported yet by this client; use a ws:// address"
        ));
    } else {
        return Err(format!("{url}: the URL must start with ws://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url}: no host in the URL"));
    }
    if url.contains('#') {
        return Err(format!("{url}: a stream URL has no #fragment"));
    }
    url.parse::<tokio_tungstenite::tungstenite::http::Uri>()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn symbols_are_upper_cased_split_and_deduplicated() {
        assert_eq!(
            parse_symbols(&strings(&["aapl", "MSFT,spy", "AAPL", "brk-b"])).unwrap(),
            ["AAPL", "MSFT", "SPY", "BRK-B"]
        );
    }

    #[test]
    fn bad_symbols_are_refused_by_name() {
        let e = parse_symbols(&strings(&["AAPL", "md.>"])).unwrap_err();
        assert!(e.contains("\"md.>\""), "{e}");
        assert!(parse_symbols(&strings(&["A*"])).is_err());
        assert!(parse_symbols(&strings(&["A B"])).is_err());
        assert!(parse_symbols(&strings(&[&"A".repeat(65)])).is_err());
        assert_eq!(
            parse_symbols(&strings(&[","])).unwrap_err(),
            "no symbol given"
        );
    }

    #[test]
    fn the_url_is_dialled_as_given() {
        assert_eq!(
            stream_url(" ws://h:1/v1/stream?x=1 ").unwrap(),
            "ws://h:1/v1/stream?x=1"
        );
    }

    #[test]
    fn urls_other_than_ws_are_refused() {
        assert!(stream_url("http://h/v1/stream").is_err());
        assert!(
            stream_url("wss://h/v1/stream")
                .unwrap_err()
                .contains("wss://")
        );
        assert!(stream_url("ws:///v1/stream").is_err());
        assert!(stream_url("ws://h h/v1/stream").is_err());
    }

    #[test]
    fn interval_is_bounded() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["tickmesh", "watch", "--interval-ms", "0", "AAPL"]).is_ok());
        assert!(parse(&["tickmesh", "watch", "--interval-ms", "60001", "AAPL"]).is_err());
        assert!(parse(&["tickmesh", "watch", "--mode", "depth", "AAPL"]).is_err());
        assert!(
            parse(&["tickmesh", "watch"]).is_err(),
            "a symbol is required"
        );
        assert!(
            parse(&["tickmesh", "watch", "--account", "DEMO1"]).is_ok(),
            "or an account"
        );
    }
}
