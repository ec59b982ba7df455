//! The edge and ingest are one-way stacks: no module of either crate reaches, through
//! `crate::` paths in its code, a module that reaches back to it. A cycle shows up as the
//! modules on it, in order.
//!
//! The check reads the sources: every `crate::<module>` outside comments and outside test
//! code (a `tests.rs` file, or what follows `#[cfg(test)]` at the end of a file) is an
//! edge from the file's top-level module to `<module>`.

#![allow(clippy::unwrap_used)] // a failed read is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tickmesh_tests::root;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `src`'s top-level modules and the ones each refers to.
fn imports(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            if path.extension().is_none_or(|e| e != "rs")
                || name == "tests.rs"
                || rel == Path::new("lib.rs")
                || rel == Path::new("main.rs")
            {
                continue;
            }
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = graph.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
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
    }
    graph
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
