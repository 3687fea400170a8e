//! The crate's top-level modules form a graph without circles, layered as the architecture
//! says: the pure cores (rules, decode) depend on the model and the configuration only, the
//! store on what it stores, and nothing below reaches back up into the wiring (pipeline, web,
//! sim). Read from the sources: every `crate::<module>` path is an edge, comments and test
//! modules included. A new import that closes a circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default();
            let module = first.trim_end_matches(".rs").to_string();
            if matches!(module.as_str(), "main" | "lib" | "cli") {
                continue; // the binary's side: it may use everything
            }
            // Every mention counts, in comments and test modules too: a doc link upwards is
            // a dependency of the reader's, and the stricter reading keeps this test in step
            // with the review tools.
            let text = std::fs::read_to_string(&path).expect("source");
            let targets = edges.entry(module.clone()).or_default();
            for line in text.lines() {
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        targets.insert(name);
                    }
                }
            }
        }
    }
    edges
}

/// A path from `from` back to itself, if any.
fn circle_through(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut path = vec![from.to_string()];
    let mut seen = BTreeSet::new();
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(last) = path.last().cloned() else {
            return false;
        };
        for next in edges.get(&last).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(edges, from, &mut path, &mut seen).then_some(path)
}

#[test]
fn top_level_modules_form_no_circle() {
    let edges = graph();
    assert!(edges.len() > 10, "modules found: {edges:?}");
    let circles: Vec<String> = edges
        .keys()
        .filter_map(|m| circle_through(&edges, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(circles.is_empty(), "module circles: {circles:#?}");
}

#[test]
fn the_pure_cores_and_the_store_depend_only_on_what_they_describe() {
    let edges = graph();
    let allowed: &[(&str, &[&str])] = &[
        ("model", &[]),
        ("decode", &["model"]),
        ("config", &["model", "decode"]),
        ("rules", &["model", "config"]),
        // The store keeps alarm states and the journal in the model's alarm vocabulary.
        ("store", &["model"]),
    ];
    for (module, may) in allowed {
        let uses = edges.get(*module).cloned().unwrap_or_default();
        let beyond: Vec<&String> = uses.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(
            beyond.is_empty(),
            "`{module}` depends on {beyond:?}; it may depend on {may:?} only"
        );
    }
}
