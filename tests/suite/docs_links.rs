//! Every relative link in README.md, CHANGELOG.md and docs/*.md leads somewhere: the file or
//! folder exists in the repository, and a `#fragment` names a heading of the Markdown page it
//! points at (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens) or an
//! explicit `<a id="...">` on it (the generated docs/configuration.md uses those). Links with
//! a scheme (https:, mailto:) are not followed. A broken link fails, naming file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The line's text with inline code spans emptied (their content is not Markdown).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(c);
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// (line number, target) of every inline link `[text](target)` outside fenced code blocks.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n + 1, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown page's headings (outside code blocks), with GitHub's `-1`, `-2`
/// suffixes for repeated headings, and its explicit `<a id="...">` anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            let after = &rest[at + 7..];
            let Some(end) = after.find('"') else { break };
            out.insert(after[..end].to_string());
            rest = &after[end..];
        }
        if !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(&heading.replace('`', ""));
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.insert(anchor);
    }
    out
}

fn problems() -> Vec<String> {
    let mut problems = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read a Markdown page");
        let name = page
            .strip_prefix(root())
            .unwrap_or(&page)
            .display()
            .to_string();
        for (line, target) in links(&text) {
            if target.is_empty() {
                problems.push(format!("{name}:{line}: empty link"));
                continue;
            }
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a page's folder").join(path)
            };
            if !file.exists() {
                problems.push(format!("{name}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                if file.extension().is_some_and(|ext| ext == "md") {
                    let linked = std::fs::read_to_string(&file).expect("read the linked page");
                    if !anchors(&linked).contains(fragment) {
                        problems.push(format!(
                            "{name}:{line}: {target}: no heading with the anchor #{fragment}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let problems = problems();
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anchors_follow_githubs_rules() {
    assert_eq!(slug("Status, reload"), "status-reload");
    assert_eq!(
        slug("Delivery: nothing acknowledged is lost"),
        "delivery-nothing-acknowledged-is-lost"
    );
    assert_eq!(slug("1. The devices"), "1-the-devices");
    let found = anchors("# A\n```\n# not a heading\n```\n## A\n#nospace\n");
    assert_eq!(found, BTreeSet::from(["a".to_string(), "a-1".to_string()]));
    let found = anchors("<a id=\"site-gateway\"></a>\n```\n<a id=\"fenced\"></a>\n```\n");
    assert_eq!(found, BTreeSet::from(["site-gateway".to_string()]));
    assert_eq!(
        links("[a](x.md) `[b](y.md)` [`c`](z.md#q)\n```\n[d](w.md)\n```\n"),
        vec![(1, "x.md".to_string()), (1, "z.md#q".to_string())]
    );
}
