//! `cargo xtask demo --feed sim|itch[:FILE]`: the feed the demo's ingest publishes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Order events of the ITCH day the demo generates when no file is given: at the
/// demo's speed (60: an hour a minute), about a thousand a second.
const DEMO_EVENTS: &str = "400000";
/// The demo's ITCH replay speed unless `TICKMESH_INGEST_ITCH__SPEED` says otherwise.
const DEMO_SPEED: &str = "60";

/// Which feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// The simulator, as `config/ingest.toml` sets it up.
    Sim,
    /// A NASDAQ TotalView-ITCH 5.0 file; a generated day when `None`.
    Itch(Option<PathBuf>),
}

impl Feed {
    pub fn parse(value: &str) -> anyhow::Result<Feed> {
        match value.split_once(':') {
            _ if value == "sim" => Ok(Feed::Sim),
            _ if value == "itch" => Ok(Feed::Itch(None)),
            Some(("itch", file)) if !file.is_empty() => {
                let file = std::path::absolute(file)
                    .with_context(|| format!("--feed itch:{file}: not a usable path"))?;
                if !file.is_file() {
                    bail!("--feed itch:{}: no such file", file.display());
                }
                Ok(Feed::Itch(Some(file)))
            }
            _ => bail!("--feed {value}: expected sim, itch or itch:FILE"),
        }
    }

    /// Points the ingest command at the feed, generating an ITCH day into `state` with
    /// `ingest_bin` when no file was given.
    pub fn configure(
        &self,
        ingest_bin: &Path,
        state: &Path,
        ingest: &mut Command,
    ) -> anyhow::Result<()> {
        let Feed::Itch(file) = self else {
            return Ok(());
        };
        let file = match file {
            Some(f) => f.clone(),
            None => {
                let out = state.join("itch-day.bin");
                eprintln!("xtask: generating an ITCH 5.0 day into {}", out.display());
                super::run(
                    Command::new(ingest_bin)
                        .args(["itch-gen", "--events", DEMO_EVENTS, "--out"])
                        .arg(&out),
                )?;
                out
            }
        };
        let speed = std::env::var("TICKMESH_INGEST_ITCH__SPEED").unwrap_or(DEMO_SPEED.into());
        eprintln!(
            "xtask: ingest replays {} at speed {speed}, in a loop",
            file.display()
        );
        ingest
            .env("TICKMESH_INGEST_SOURCE", "itch")
            .env(
                "TICKMESH_INGEST_ITCH__FILES",
                format!("[\"{}\"]", file.display()),
            )
            .env("TICKMESH_INGEST_ITCH__SPEED", speed)
            .env("TICKMESH_INGEST_ITCH__LOOP", "true")
            .env("TICKMESH_INGEST_ITCH__MAX_WAIT_MS", "1000");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_parse() {
        assert_eq!(Feed::parse("sim").unwrap(), Feed::Sim);
        assert_eq!(Feed::parse("itch").unwrap(), Feed::Itch(None));
        assert!(Feed::parse("itch:/nonexistent/day.bin").is_err());
        assert!(Feed::parse("itch:").is_err());
        assert!(Feed::parse("ouch").is_err());
        let here = std::env::current_exe().unwrap();
        let f = Feed::parse(&format!("itch:{}", here.display())).unwrap();
        assert_eq!(f, Feed::Itch(Some(here)));
    }
}
