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
                "TICKMESH_NATS_OMS_PASSWORD",
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
    tickmesh_oms::OmsConfig::load(Some(&root().join("config/oms.toml"))).unwrap();
}

/// The demo turns anonymous access on itself, with its limited `demo` tier, and says by
/// name that it is open to every symbol; its tier table is its own.
#[test]
fn the_demo_config_turns_anonymous_access_on_explicitly() {
    let c = tickmesh_edge::EdgeConfig::load(Some(&root().join("config/edge.toml"))).unwrap();
    let a = &c.auth;
    assert!(a.anonymous && a.allow_open_anonymous);
    assert_eq!(a.anonymous_tier, "demo");
    let demo = &a.tiers["demo"];
    assert!(
        demo.min_interval_ms >= 100 && demo.max_symbols <= 200,
        "{demo:?}"
    );
    let tiers: Vec<&str> = a.tiers.keys().map(String::as_str).collect();
    assert_eq!(tiers, ["delayed", "demo", "pro", "realtime"]);
    assert_eq!(
        c.metrics_listen, None,
        "the demo serves /metrics on its client port"
    );
}

/// The production example: tokens only, for one audience and issuer, with a maximum
/// lifetime; its own tiers only; /metrics on a port of its own. Its files are stood in for
/// by empty ones so that it loads as it would on a host.
#[test]
fn the_production_config_requires_tokens_and_keeps_metrics_apart() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/tickmesh");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    for file in [
        "tls/nats-ca.pem",
        "jwks.json",
        "tls/edge.crt",
        "tls/edge.key",
    ] {
        std::fs::write(etc.join(file), "").unwrap();
    }
    std::fs::write(etc.join("nats-edge.password"), "secret\n").unwrap();
    let text = std::fs::read_to_string(root().join("config/edge.prod.toml")).unwrap();
    let local = dir.path().join("edge.prod.toml");
    std::fs::write(
        &local,
        text.replace("\"/etc/tickmesh/", &format!("\"{}/", etc.display())),
    )
    .unwrap();
    let c = tickmesh_edge::EdgeConfig::load(Some(&local)).unwrap();
    let a = &c.auth;
    assert!(!a.anonymous && !a.allow_open_anonymous && a.anonymous_ent.is_empty());
    assert!(a.jwks_file.is_some());
    assert!(a.audience.is_some() && a.issuer.is_some());
    assert!(a.max_token_lifetime_s.is_some_and(|s| s <= 3600), "{a:?}");
    let tiers: Vec<&str> = a.tiers.keys().map(String::as_str).collect();
    assert_eq!(
        tiers,
        ["delayed", "pro", "realtime"],
        "no built-in tier added"
    );
    let metrics = c.metrics_listen.expect("metrics_listen is set");
    assert_ne!(metrics.port(), c.listen.port());
}

/// The edge binary refuses to start on a config that would let anyone in unchecked, and
/// says which key is wrong: without its opt-in, anonymous access to everything or at every
/// tick; and with no key at all and anonymous access off (the built-in defaults).
#[test]
fn an_edge_refuses_to_start_when_anyone_could_get_everything() {
    let secret = (
        "TICKMESH_EDGE_AUTH__HS256_SECRET",
        "a-test-secret-of-32-bytes-or-more!!",
    );
    let on = ("TICKMESH_EDGE_AUTH__ANONYMOUS", "true");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "auth: no key is configured"),
        (
            &[secret, on, ("TICKMESH_EDGE_AUTH__ANONYMOUS_ENT", "[\"*\"]")],
            "auth.anonymous_ent",
        ),
        (
            &[
                secret,
                on,
                ("TICKMESH_EDGE_AUTH__ANONYMOUS_ENT", "[\"SPY\"]"),
                ("TICKMESH_EDGE_AUTH__ANONYMOUS_TIER", "realtime"),
            ],
            "auth.anonymous_tier",
        ),
        (&[secret, on], "auth.anonymous_ent"),
    ];
    for (env, key) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickmesh-test-edge"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TICKMESH_EDGE_") {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .envs(env.iter().copied())
            // Nothing listens there: only the config check can answer.
            .env("TICKMESH_EDGE_NATS__URLS", "[\"nats://127.0.0.1:9\"]")
            .env("TICKMESH_EDGE_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} started");
        assert!(stderr.contains(key), "{env:?}: {stderr}");
        if key.contains("anonymous_") && env.len() > 2 {
            assert!(stderr.contains("auth.allow_open_anonymous"), "{stderr}");
        }
    }
}

/// The first whole number in `text` (digits, with thousands separators dropped).
fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Every bound in docs/security.md's tables whose first cell names a config key states
/// the key's real default: the edge's (`key`, `limits.key`, `auth.key`) or ingest's
/// (`replay.*`). A row that names no key of either is listed here by name, so that a new
/// row is checked or consciously left out.
#[test]
fn the_security_docs_state_the_real_defaults() {
    let edge = serde_json::to_value(tickmesh_edge::EdgeConfig::default()).unwrap();
    let ingest = serde_json::to_value(tickmesh_ingest::IngestConfig::default()).unwrap();
    // Rows whose first cell is not a config key with a number for a default.
    const NOT_KEYS: [&str; 8] = [
        "auth.anonymous",
        "auth.anonymous_ent",
        "auth.anonymous_tier",
        "auth.allow_open_anonymous",
        "auth.tiers",
        "*",
        "md_last",
        "src_ts",
    ];
    let lookup = |root: &serde_json::Value, path: &str| {
        path.split('.')
            .try_fold(root, |v, k| v.get(k))
            .and_then(serde_json::Value::as_u64)
    };
    let doc = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let mut checked = Vec::new();
    let mut in_table_with_defaults = false;
    for line in doc.lines() {
        if !line.starts_with('|') {
            in_table_with_defaults = false;
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.get(2) == Some(&"default") {
            in_table_with_defaults = true;
            continue;
        }
        if !in_table_with_defaults {
            continue;
        }
        let Some(key) = cells[1].strip_prefix('`').and_then(|k| k.split('`').next()) else {
            continue;
        };
        if NOT_KEYS.contains(&key) {
            continue;
        }
        let real = [
            lookup(&edge, key),
            lookup(&edge, &format!("limits.{key}")),
            lookup(&edge, &format!("auth.{key}")),
            lookup(&ingest, key),
        ]
        .into_iter()
        .flatten()
        .next();
        let Some(real) = real else {
            panic!("docs/security.md: `{key}` is no numeric config key of the edge or ingest");
        };
        assert_eq!(
            first_number(cells[2]),
            Some(real),
            "docs/security.md says `{key}` defaults to {:?}; the code says {real}",
            cells[2]
        );
        checked.push(key);
    }
    assert!(
        checked.len() >= 25,
        "only {} keys checked: {checked:?}",
        checked.len()
    );
}
