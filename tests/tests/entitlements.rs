//! Entitlement patterns over the whole demo universe: `X*` grants X and the instruments
//! whose underlying is X (its options, by the reference data that ingest writes to
//! `md_ref`), and nothing else, for every pattern a token could name after a listed
//! ticker or any prefix of one.
//!
//! The families are computed here from the chains (`chain.<UNDERLYING>` records), and
//! the grant's answer comes through the edge's own lookup (instrument records), so the
//! test holds the two views of the reference data to each other.

#![allow(clippy::unwrap_used)] // a failed setup is a failed test

use std::collections::{BTreeSet, HashMap};

use tickmesh_core::date::Date;
use tickmesh_edge::auth::Grant;
use tickmesh_edge::refdata::RefData;
use tickmesh_ingest::sources::options::OptionsConfig;
use tickmesh_ingest::sources::session::SessionConfig;
use tickmesh_ingest::sources::sim::{SimParams, Simulator, default_universe};

/// The demo universe with options on every listed instrument: every ticker that could
/// be confused with another by its first letters has a chain of its own.
fn reference() -> (RefData, Vec<String>, HashMap<String, BTreeSet<String>>) {
    let universe = default_universe();
    let options = OptionsConfig {
        underlyings: universe.iter().map(|s| s.symbol.clone()).collect(),
        weeklies: 1,
        monthlies: 1,
        strikes: 3,
        ..OptionsConfig::default()
    };
    let session = SessionConfig::default();
    let sim = Simulator::new(&SimParams {
        seed: 7,
        ticks_per_sec: 100.0,
        universe: &universe,
        session: &session,
        options: &options,
        depth: 0,
        today: Date::parse("2026-12-07").unwrap(),
    });
    let update = sim.reference();
    let mut families: HashMap<String, BTreeSet<String>> = HashMap::new();
    for chain in &update.chains {
        let members = families.entry(chain.underlying.clone()).or_default();
        for e in &chain.expiries {
            let symbols = chain.symbols(e.expiry).unwrap();
            members.extend(symbols.iter().map(|s| s.to_string()));
        }
    }
    let symbols: Vec<String> = update
        .instruments
        .iter()
        .map(|i| i.symbol.clone())
        .collect();
    (
        RefData::fixed(update.instruments, update.chains),
        symbols,
        families,
    )
}

fn grant(ent: &str) -> Grant {
    Grant {
        sub: Some("auditor".into()),
        jti: None,
        iat: None,
        exp: None,
        key: None,
        tier: "pro".into(),
        ent: vec![ent.to_string()],
        dly: Vec::new(),
        acct: Vec::new(),
        org: None,
        usage: tickmesh_core::usage::Use::Display,
        min_interval_ms: 0,
        max_symbols: 1,
        max_msgs_per_s: 1,
    }
}

#[test]
fn no_pattern_grants_a_symbol_outside_its_family() {
    let (refdata, symbols, families) = reference();
    let tickers: Vec<String> = default_universe().into_iter().map(|s| s.symbol).collect();
    assert!(families.len() >= 60, "{} chains", families.len());
    assert!(symbols.len() > 800, "{} instruments", symbols.len());
    // Every ticker and every proper prefix of one, as an exact and as a family pattern.
    let mut names = BTreeSet::new();
    for t in &tickers {
        for end in 1..=t.len() {
            names.insert(t[..end].to_string());
        }
    }
    let mut checked = 0u64;
    for name in &names {
        let family = families.get(name);
        let exact = grant(name);
        let wide = grant(&format!("{name}*"));
        for s in &symbols {
            let in_family = s == name || family.is_some_and(|f| f.contains(s));
            assert_eq!(
                wide.allows(s, &refdata),
                in_family,
                "{name}* and {s}: family membership is {in_family}"
            );
            assert_eq!(exact.allows(s, &refdata), s == name, "{name} and {s}");
            checked += 2;
        }
    }
    // The pairs the old prefix test got wrong.
    for (pattern, other) in [
        ("T*", "TSLA"),
        ("T*", "TXN"),
        ("T*", "TLT"),
        ("V*", "VZ"),
        ("V*", "VTI"),
        ("V*", "VIX"),
        ("BA*", "BAC"),
        ("GOOG*", "GOOGL"),
    ] {
        assert!(symbols.iter().any(|s| s == other), "{other} is listed");
        assert!(
            !grant(pattern).allows(other, &refdata),
            "{pattern} granted {other}"
        );
    }
    // BRK-B's options have the OCC root BRKB, and still belong to BRK-B.
    let brk = &families["BRK-B"];
    assert!(brk.iter().all(|o| o.starts_with("BRKB")) && !brk.is_empty());
    assert!(brk.iter().all(|o| grant("BRK-B*").allows(o, &refdata)));
    assert!(checked > 200_000, "{checked} checks");
}
