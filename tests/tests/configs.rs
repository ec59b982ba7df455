//! Every NATS config in `nats/`, rendered, passes `nats-server -t`; every service config
//! in `config/` loads and validates.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::process::Command;

use tickmesh_tests::{nats_server_bin, root};

#[test]
fn every_nats_config_passes_nats_server_t() {
    let store = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("nats")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let out = Command::new(nats_server_bin())
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("TICKMESH_NATS_PORT", "14222")
            .env("TICKMESH_NATS_HTTP_PORT", "18222")
            .env("TICKMESH_NATS_STORE", store.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn a_broken_nats_config_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "port: 4222\njetstream { store_dir: \n").unwrap();
    let out = Command::new(nats_server_bin())
        .arg("-t")
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn service_configs_load() {
    tickmesh_edge::EdgeConfig::load(Some(&root().join("config/edge.toml"))).unwrap();
    tickmesh_ingest::IngestConfig::load(Some(&root().join("config/ingest.toml"))).unwrap();
}
