//! The edge and ingest are one-way stacks: no module of either crate reaches, through
//! `crate::` paths in its code, a module that reaches back to it. A cycle shows up as the
//! modules on it, in order.
//!
//! The check reads the sources: every `crate::<module>` outside comments and outside test
//! code (a `tests.rs` file, or what follows `#[cfg(test)]` at the end of a file) is an
//! edge from the file's top-level module to `<module>`.
//!
//! Ingest speaks to NATS in one module: no file of `ingest/src` but `nats.rs` and those
//! under `nats/` names `async_nats`, in its code or its tests.

#![allow(clippy::unwrap_used)] // a failed read is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tickmesh_tests::root;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file below `src`, as its path relative to `src`.
fn rust_files(src: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(src).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file under `src` belongs to: `nats` for `nats.rs` and
/// `nats/buckets.rs`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// The lines of `text` that are not whole-line comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// `src`'s top-level modules and the ones each refers to.
fn imports(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for rel in rust_files(src) {
        if rel.file_name().unwrap() == "tests.rs"
            || rel == Path::new("lib.rs")
            || rel == Path::new("main.rs")
        {
            continue;
        }
        let module = module_of(&rel);
        let text = std::fs::read_to_string(src.join(&rel)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for line in code_lines(code) {
            for (at, _) in line.match_indices("crate::") {
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // e.g. `tickmesh_core::`
                }
                let dep: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !dep.is_empty() && dep != module {
                    deps.insert(dep);
                }
            }
        }
    }
    graph
}

/// The first line of `text`'s code that names `krate` (as a whole identifier: `use
/// krate::…`, `krate::Type`, `{krate, …}`), if any. Comments do not count, so a doc may
/// still speak of it.
fn naming<'a>(text: &'a str, krate: &str) -> Option<&'a str> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code_lines(text).find(|line| {
        let code = line.split("//").next().unwrap();
        code.match_indices(krate).any(|(at, _)| {
            let before = code[..at].chars().next_back();
            let after = code[at + krate.len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
    })
}

/// A cycle of `graph`, as the modules on it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        graph: &'a Graph,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut found: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            found.push(node.to_string());
            return Some(found);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(graph, start, &mut Vec::new(), &mut done))
}

#[test]
fn edge_and_ingest_modules_import_one_way() {
    for krate in ["edge", "ingest"] {
        let graph = imports(&root().join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: only {graph:?}");
        if let Some(found) = cycle(&graph) {
            panic!("{krate}: modules import each other: {}", found.join(" → "));
        }
    }
}

#[test]
fn only_the_nats_module_of_ingest_names_async_nats() {
    let src = root().join("ingest").join("src");
    let files = rust_files(&src);
    assert!(
        files.contains(&PathBuf::from("nats.rs")),
        "ingest's NATS boundary is nats.rs: {files:?}"
    );
    let outside: Vec<String> = files
        .iter()
        .filter(|rel| module_of(rel) != "nats")
        .filter_map(|rel| {
            let text = std::fs::read_to_string(src.join(rel)).unwrap();
            let line = naming(&text, "async_nats")?;
            Some(format!("{}: {}", rel.display(), line.trim()))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "ingest modules other than nats name async_nats; go through crate::nats instead:\n{}",
        outside.join("\n")
    );
}

#[test]
fn naming_a_crate_is_found_in_code_only() {
    for code in [
        "use async_nats::jetstream;",
        "    let c: async_nats::Client = todo!();",
        "use {async_nats, bytes};",
        "fn f() -> ::async_nats::Subject {} // a comment",
    ] {
        assert_eq!(naming(code, "async_nats"), Some(code), "{code}");
    }
    for code in [
        "//! raw async_nats publishes",
        "    /// see async_nats::Client",
        "use my_async_nats::X;",
        "use async_nats_extra::X;",
        "let n = 1; // async_nats is elsewhere",
    ] {
        assert_eq!(naming(code, "async_nats"), None, "{code}");
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g
        });
    let found = cycle(&graph).expect("a → b → c → a");
    assert_eq!(found.first(), found.last());
    assert_eq!(found.len(), 4, "{found:?}");
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
}
