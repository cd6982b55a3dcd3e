//! The modules of `shared/src` depend on one another one way: read from the `use crate::...`
//! lines (and `crate::x::` paths) of each top-level module's files, the graph has no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its files name through `crate::`.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                if inner.extension().is_some_and(|e| e == "rs") {
                    files.push((name.clone(), inner));
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push((name, path));
        }
    }
    for (module, file) in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let targets = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let target: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !target.is_empty() && target != module {
                targets.insert(target);
            }
        }
    }
    graph
}

/// A cycle through `start`, if the graph has one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        return Some(path[at..].to_vec());
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn shared_modules_depend_on_one_another_one_way() {
    let graph = edges();
    assert!(graph.len() >= 10, "the modules were found: {graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = cycle_from(&graph, module, &mut Vec::new(), &mut done);
        assert_eq!(cycle, None, "a cycle between modules of shared/src");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("config", &["db"][..]),
        ("db", &["error"]),
        ("error", &["config"]),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_owned(), t.iter().map(|s| s.to_string()).collect()))
    .collect();
    let cycle = cycle_from(&graph, "config", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(
        cycle,
        Some(vec!["config".into(), "db".into(), "error".into()])
    );
}
