//! What the bench keeps in `target/bench/<scenario>.json`: each scenario's own figures,
//! the load generator's summary of each run ([`tickmesh_loadgen::summary::Summary`], the
//! type it writes), and what every scenario records about its run. Every field is
//! required: a figure missing from a file is an error that names it and the file, never a
//! zero in the report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tickmesh_loadgen::summary::{Resource, Summary};

/// A scenario's result file: its figures and how it was run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored<T> {
    pub scenario: String,
    pub quick: bool,
    pub took_s: u64,
    /// The `cargo xtask bench ...` command line that produced it.
    pub xtask_command: String,
    #[serde(flatten)]
    pub result: T,
}

impl<T> Stored<T> {
    /// The report's mark on a section from a `--quick` run.
    pub fn quick_mark(&self) -> &'static str {
        if self.quick { " (--quick)" } else { "" }
    }
}

/// The part every scenario's result file has, whatever its scenario.
#[derive(Deserialize)]
pub struct Header {
    pub xtask_command: String,
}

/// Which system a load generator run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Tickmesh,
    Nats,
}

impl System {
    pub fn of(nats: bool) -> Self {
        if nats { System::Nats } else { System::Tickmesh }
    }

    /// As `tickmesh-loadgen --target` spells it.
    pub fn name(self) -> &'static str {
        match self {
            System::Tickmesh => "tickmesh",
            System::Nats => "nats",
        }
    }
}

/// One load generator run: its summary and what the bench adds to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub label: String,
    pub system: System,
    /// The load generator's command line, its ports replaced by `PORT`.
    pub command: String,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Run {
    /// The run labelled `label` among `runs`.
    pub fn find<'a>(runs: &'a [Run], label: &str) -> anyhow::Result<&'a Run> {
        runs.iter()
            .find(|r| r.label == label)
            .with_context(|| format!("no run labelled `{label}`"))
    }

    /// The sampled processes whose name starts with `prefix` ("edge" is edge1, edge2...);
    /// an error when there is none.
    fn targets(&self, prefix: &str) -> anyhow::Result<impl Iterator<Item = &Resource>> {
        let mut matching = self
            .summary
            .targets
            .iter()
            .filter(move |t| t.name.starts_with(prefix))
            .peekable();
        anyhow::ensure!(
            matching.peek().is_some(),
            "run `{}` sampled no `{prefix}` process",
            self.label
        );
        Ok(matching)
    }

    /// Cores busy in the named processes.
    pub fn cores(&self, prefix: &str) -> anyhow::Result<f64> {
        Ok(self.targets(prefix)?.map(|t| t.cores).sum())
    }

    /// One RSS figure of the named processes, summed, KiB.
    pub fn kib(&self, prefix: &str, field: fn(&Resource) -> u64) -> anyhow::Result<f64> {
        Ok(self.targets(prefix)?.map(|t| field(t) as f64).sum())
    }

    /// The serving system's cores: edges and nats-server for TickMesh, nats-server alone
    /// for the comparison (ingest feeds both and is shown apart).
    pub fn server_cores(&self) -> anyhow::Result<f64> {
        Ok(match self.system {
            System::Nats => self.cores("nats-server")?,
            System::Tickmesh => self.cores("edge")? + self.cores("nats-server")?,
        })
    }

    /// Updates delivered per server CPU-second.
    pub fn per_cpu(&self) -> anyhow::Result<f64> {
        let c = self.server_cores()?;
        Ok(if c > 0.0 {
            self.summary.updates_per_s / c
        } else {
            0.0
        })
    }
}

/// The result file of scenario `name` in `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Reads the result file of scenario `name`: None when the scenario has not run, an error
/// naming the file and the figure when a figure is missing or malformed.
pub fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> anyhow::Result<Option<T>> {
    let path = path(dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text)
        .map(Some)
        .with_context(|| path.display().to_string())
}

/// Parses JSON into `T`; the error names the field that is missing or malformed.
pub fn parse<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_str(text)?)
}

/// The JSON text of a value as it appears in the report (a count, a map of counts).
pub fn raw<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A run with the figures the curve and the tables read, for tests.
#[cfg(test)]
pub fn sample_run(label: &str, system: System, delivered: f64, p50_us: u64, p99_us: u64) -> Run {
    use tickmesh_loadgen::summary::Percentiles;
    let target = |name: &str| Resource {
        name: name.into(),
        cores: 0.5,
        ..Resource::default()
    };
    Run {
        label: label.into(),
        system,
        command: format!("tickmesh-loadgen --target {}", system.name()),
        summary: Summary {
            updates_per_s: delivered,
            latency: Percentiles {
                p50_us,
                p99_us,
                ..Percentiles::default()
            },
            targets: vec![target("nats-server"), target("ingest"), target("edge1")],
            ..Summary::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::latency::{self, Latency};

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-bench-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LATENCY: &str = include_str!("testdata/latency.json");

    #[test]
    fn a_missing_figure_is_an_error_naming_it_and_the_file() {
        let scratch = Scratch::new("missing");
        let mut v: serde_json::Value = serde_json::from_str(LATENCY).expect("test data");
        let removed = v["runs"][0]["latency"]
            .as_object_mut()
            .and_then(|l| l.remove("p99_us"));
        assert!(removed.is_some(), "the test data has the figure to remove");
        std::fs::write(path(&scratch.0, "latency"), v.to_string()).expect("written");

        let err = load::<Stored<Latency>>(&scratch.0, "latency")
            .expect_err("a result without a p99 must not read as a p99 of 0");
        let text = format!("{err:#}");
        assert!(text.contains("p99_us"), "{text}");
        assert!(text.contains("latency.json"), "{text}");

        // The whole report fails the same way instead of showing "none".
        let err = crate::bench::report::report(&scratch.0, Path::new("nats-server"))
            .expect_err("the report of a broken result");
        let text = format!("{err:#}");
        assert!(
            text.contains("p99_us") && text.contains("latency.json"),
            "{text}"
        );
    }

    #[test]
    fn a_run_without_a_sampled_process_is_an_error() {
        let mut v: Stored<Latency> = parse(LATENCY).expect("test data");
        v.result.runs[0]
            .summary
            .targets
            .retain(|t| t.name != "ingest");
        let (mut md, mut d) = (String::new(), String::new());
        let err = latency::report(&v, &mut md, &mut d).expect_err("no ingest cores to show");
        assert!(format!("{err:#}").contains("`ingest`"), "{err:#}");
    }

    #[test]
    fn known_results_render_to_known_report_lines() {
        let v: Stored<Latency> = parse(LATENCY).expect("test data");
        let (mut md, mut d) = (String::new(), String::new());
        latency::report(&v, &mut md, &mut d).expect("a complete result");
        assert_eq!(
            md,
            "| latency | 10k ticks/s in, ~100k updates/s out: p50 ≤ 0.25 ms, p99 ≤ 2 ms | p50 1.60 ms, p99 8.11 ms (99,986 /s) | p50 1.01 ms, p99 11.48 ms (99,918 /s) | TickMesh's p99 is 0.71× nats-server's | **no** |\n"
        );
        for line in [
            "| TickMesh | 1000 | 99,986 | 1.60 ms | 8.11 ms | 12.07 ms | 17.74 ms | 0 | 0 | 1.09 | 0.09 | 0.53 | 0.00 cores, steal 0.00, load avg 2.2 | 39.7 MiB |",
            "| nats-server WS | 1000 | 99,918 | 1.01 ms | 11.48 ms | 17.45 ms | 23.10 ms | 0 | 0 | 1.00 | 0.08 | 0.53 | 0.00 cores, steal 0.00, load avg 2.3 | 96.0 MiB |",
            "- `tickmesh`: `tickmesh-loadgen --server 127.0.0.1:PORT --target tickmesh --conns 1000 --symbols S0000,…,S0005 --per-conn 1`",
        ] {
            assert!(d.lines().any(|l| l == line), "missing {line:?} in\n{d}");
        }
    }

    #[test]
    fn a_stored_result_reads_back_as_written() {
        let v: Stored<Latency> = parse(LATENCY).expect("test data");
        let again: Stored<Latency> =
            parse(&serde_json::to_string(&v).expect("serialized")).expect("read back");
        assert_eq!(again.result.runs[1].label, "nats");
        assert_eq!(again.result.runs[1].system, System::Nats);
        assert_eq!(again.xtask_command, v.xtask_command);
        assert_eq!(
            again.result.runs[0].summary.latency.p99_us,
            v.result.runs[0].summary.latency.p99_us
        );
    }
}
