//! Every NATS config in `nats/`, rendered, passes `nats-server -t`; every service config
//! in `config/` loads and validates.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::process::Command;

use tickmesh_tests::mesh::Pki;
use tickmesh_tests::{nats_server_bin, root};

#[test]
fn every_nats_config_passes_nats_server_t() {
    let store = tempfile::tempdir().unwrap();
    let pki = Pki::create(store.path()).unwrap();
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
            .env("TICKMESH_NATS_WS_PORT", "18443")
            .envs(MESH_ENV.iter().copied())
            .envs(pki.server_env())
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

/// Dummy values for the variables of the mesh templates (`nats/hub.conf`,
/// `nats/leaf.conf`), lists included.
const MESH_ENV: &[(&str, &str)] = &[
    ("TICKMESH_NATS_NAME", "node-1"),
    ("TICKMESH_NATS_HOST", "127.0.0.1"),
    ("TICKMESH_NATS_CLUSTER_PORT", "16222"),
    (
        "TICKMESH_NATS_ROUTES",
        r#"["nats://127.0.0.1:16222", "nats://127.0.0.1:16223", "nats://127.0.0.1:16224"]"#,
    ),
    ("TICKMESH_NATS_LEAF_PORT", "17422"),
    ("TICKMESH_NATS_LEAF_USER", "region"),
    ("TICKMESH_NATS_LEAF_PASSWORD", "secret"),
    ("TICKMESH_REGION", "region-a"),
    (
        "TICKMESH_HUB_LEAF_URLS",
        r#"["nats-leaf://region:secret@127.0.0.1:17422", "nats-leaf://region:secret@127.0.0.1:17423"]"#,
    ),
];

/// Each mesh template uses every variable it documents: leaving one out is refused, so a
/// deployment cannot silently run with a half-rendered file.
#[test]
fn mesh_templates_refuse_a_missing_variable() {
    let store = tempfile::tempdir().unwrap();
    let pki = Pki::create(store.path()).unwrap();
    // Every node: its TLS files; the users' passwords of the users it defines.
    let tls = [
        "TICKMESH_NATS_TLS_CA",
        "TICKMESH_NATS_TLS_CERT",
        "TICKMESH_NATS_TLS_KEY",
        "TICKMESH_NATS_EDGE_PASSWORD",
        "TICKMESH_NATS_ADMIN_PASSWORD",
    ];
    for (file, vars) in [
        (
            "hub.conf",
            &[
                "TICKMESH_NATS_NAME",
                "TICKMESH_NATS_ROUTES",
                "TICKMESH_NATS_LEAF_PORT",
                "TICKMESH_NATS_LEAF_USER",
                "TICKMESH_NATS_LEAF_PASSWORD",
                "TICKMESH_NATS_INGEST_PASSWORD",
                "TICKMESH_NATS_STORE",
            ][..],
        ),
        (
            "leaf.conf",
            &[
                "TICKMESH_REGION",
                "TICKMESH_HUB_LEAF_URLS",
                "TICKMESH_NATS_ROUTES",
                "TICKMESH_NATS_STORE",
            ][..],
        ),
    ] {
        for missing in vars.iter().chain(&tls) {
            let out = Command::new(nats_server_bin())
                .arg("-t")
                .arg("-c")
                .arg(root().join("nats").join(file))
                .env("TICKMESH_NATS_PORT", "14222")
                .env("TICKMESH_NATS_HTTP_PORT", "18222")
                .env("TICKMESH_NATS_STORE", store.path())
                .envs(MESH_ENV.iter().copied())
                .envs(pki.server_env())
                .env_remove(missing)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{file} passed without {missing}");
            let said = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(said.contains(missing), "{file} without {missing}: {said}");
        }
    }
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
