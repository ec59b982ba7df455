//! `tickmesh usage` refuses bad arguments with exit status 2 and says why, and a NATS
//! server that does not answer is an error naming it, not an empty report.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tickmesh");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_month_or_format_is_refused_with_status_2() {
    let (code, out, err) = run(&["usage", "--month", "2026-13"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty());
    assert!(err.contains("YYYY-MM"), "{err}");
    let (code, _, err) = run(&["usage", "--format", "xml"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn an_unreachable_server_is_an_error_that_names_it() {
    // Nothing listens on port 9 (discard) of loopback.
    let (code, out, err) = run(&[
        "usage",
        "--nats",
        "nats://127.0.0.1:9",
        "--month",
        "2026-12",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("nats://127.0.0.1:9"), "{err}");
}
