//! Deserializes a TOML document into a typed configuration while collecting *every* problem,
//! each located as `file:line:column: key.path: message`.
//!
//! Owns: spans, key paths and the error-collection strategy. Must not touch: the meaning of any
//! configuration key (that is the sections' checks, `validate_<section>` in their own files).
//!
//! serde stops at the first error. To report more than one, the failing array element (or
//! top-level table) is taken out of the parsed document and deserialization is tried again, until
//! it succeeds or nothing more can be taken out. Array indices in later messages are mapped back
//! to the original document so that `devices[7]` means the eighth `[[devices]]` in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One located configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `mqtt[0].subscriptions[1].profile`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            path,
            self.message
        )
    }
}

/// A TOML file kept in memory with its parse tree, so that problems found after deserialization
/// (dangling references, impossible values) can be located by key path too.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<Self, Problem> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(SourceFile {
                path: path.to_path_buf(),
                text,
            }),
            Err(err) => Err(Problem {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                path: String::new(),
                message: format!("cannot read file: {err}"),
            }),
        }
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
        (line, column)
    }

    pub fn problem_at(&self, span: Option<Range<usize>>, path: &str, message: String) -> Problem {
        let (line, column) = self.position(span.map(|s| s.start).unwrap_or(0));
        Problem {
            file: self.path.clone(),
            line,
            column,
            path: path.to_string(),
            message,
        }
    }

    /// Locates a key path (as produced by serde_path_to_error or by validation code) in the
    /// document, falling back to the nearest ancestor that exists.
    pub fn locate(&self, path: &str, message: String) -> Problem {
        let span = DeTable::parse(&self.text)
            .ok()
            .and_then(|root| span_of_path(&root, &parse_path(path)));
        self.problem_at(span, path, message)
    }

    /// Deserializes the whole file, collecting every problem that can be found.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Vec<Problem>> {
        match self.deserialize_partial() {
            (Some(value), problems, _) if problems.is_empty() => Ok(value),
            (_, problems, _) => Err(problems),
        }
    }

    /// Like `deserialize`, but also returns what could be read once the failing elements were
    /// taken out, so that later checks (references between sections) can still run, and the
    /// map from that value's key paths back to the file's.
    pub fn deserialize_partial<T: DeserializeOwned>(&self) -> (Option<T>, Vec<Problem>, PathMap) {
        let mut root = match DeTable::parse(&self.text) {
            Ok(root) => root,
            Err(err) => {
                let problem = self.problem_at(err.span(), "", err.message().to_string());
                return (None, vec![problem], PathMap::default());
            }
        };
        root.get_mut().make_owned();
        let mut removed = PathMap::default();
        let mut problems = Vec::new();
        loop {
            let deserializer = toml::de::Deserializer::from(root.clone());
            match serde_path_to_error::deserialize::<_, T>(deserializer) {
                Ok(value) => return (Some(value), problems, removed),
                Err(err) => {
                    let current_path = parse_path(&err.path().to_string());
                    let original_path = removed.to_original(&current_path);
                    let path_text = format_path(&original_path);
                    let inner = err.into_inner();
                    let message = inner.message().to_string();
                    // A required section we took out ourselves is not a new problem.
                    if removed.explains_missing_field(&current_path, &message) {
                        return (None, problems, removed);
                    }
                    problems.push(self.problem_at(inner.span(), &path_text, message));
                    if !removed.take_out(root.get_mut(), &current_path, &original_path) {
                        return (None, problems, removed);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(text: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    if text == "." || text.is_empty() {
        return segments;
    }
    for part in text.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(index) = rest[1..end].parse() {
                segments.push(Segment::Index(index));
            }
            rest = &rest[end + 1..];
        }
    }
    segments
}

fn format_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn span_of_path(root: &Spanned<DeTable<'_>>, path: &[Segment]) -> Option<Range<usize>> {
    let mut best = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for segment in path {
        let next = match (segment, table, value) {
            (Segment::Key(key), Some(t), _) => t.get(key.as_str()),
            (Segment::Index(i), _, Some(v)) => v.get_ref().as_array().and_then(|a| a.get(*i)),
            _ => None,
        };
        let Some(next) = next else { break };
        best = next.span();
        // For a key, point at the key itself (where an editor would put the cursor) when it
        // is a leaf; tables and array elements point at their header.
        if let (Segment::Key(key), Some(t)) = (segment, table) {
            if !next.get_ref().is_table() && !next.get_ref().is_array() {
                if let Some((k, _)) = t.get_key_value(key.as_str()) {
                    best = k.span();
                }
            }
        }
        table = next.get_ref().as_table();
        value = Some(next);
    }
    Some(best)
}

/// What has been taken out of the document so far, to map later paths back to the file.
#[derive(Default)]
pub struct PathMap {
    /// Per array key path: original indices removed, ascending.
    array_elements: BTreeMap<String, Vec<usize>>,
    top_level_keys: Vec<String>,
}

impl PathMap {
    /// The file's key path for a key path of the partially read value.
    pub fn original(&self, path: &str) -> String {
        format_path(&self.to_original(&parse_path(path)))
    }

    fn to_original(&self, current: &[Segment]) -> Vec<Segment> {
        let mut out = Vec::with_capacity(current.len());
        for segment in current {
            match segment {
                Segment::Index(i) => {
                    let key = format_path(&out);
                    let mut index = *i;
                    if let Some(gone) = self.array_elements.get(&key) {
                        for g in gone {
                            if *g <= index {
                                index += 1;
                            }
                        }
                    }
                    out.push(Segment::Index(index));
                }
                key => out.push(key.clone()),
            }
        }
        out
    }

    fn explains_missing_field(&self, current: &[Segment], message: &str) -> bool {
        current.is_empty()
            && self
                .top_level_keys
                .iter()
                .any(|k| message.contains(&format!("missing field `{k}`")))
    }

    /// Takes the innermost top-level array element (or top-level table) of `current` out of the
    /// document. Returns false when there is nothing that could be taken out.
    fn take_out(
        &mut self,
        root: &mut DeTable<'_>,
        current: &[Segment],
        original: &[Segment],
    ) -> bool {
        let Some(Segment::Key(top)) = current.first() else {
            return false;
        };
        match (current.get(1), original.get(1)) {
            (Some(Segment::Index(i)), Some(Segment::Index(orig))) => {
                let Some(entry) = root.get_mut(top.as_str()) else {
                    return false;
                };
                let DeValue::Array(array) = entry.get_mut() else {
                    return false;
                };
                if *i >= array.len() {
                    return false;
                }
                // DeArray derefs to a slice only, so it is rebuilt without the element.
                let mut kept = toml::de::DeArray::new();
                for (j, element) in array.iter().enumerate() {
                    if j != *i {
                        kept.push(element.clone());
                    }
                }
                *array = kept;
                let gone = self.array_elements.entry(top.clone()).or_default();
                gone.push(*orig);
                gone.sort_unstable();
                true
            }
            _ => {
                let taken = root.remove(top.as_str()).is_some();
                if taken {
                    self.top_level_keys.push(top.clone());
                }
                taken
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        devices: Vec<Device>,
        #[serde(default)]
        other: Option<Other>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Device {
        id: String,
        port: Option<u16>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Other {
        x: u8,
    }

    fn source(text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from("site.toml"),
            text: text.to_string(),
        }
    }

    #[test]
    fn every_bad_element_is_reported_with_original_index_and_line() {
        let text = "[[devices]]\nid = \"a\"\nbogus = 1\n\n[[devices]]\nid = \"b\"\n\n[[devices]]\nid = \"c\"\nport = \"x\"\n\n[other]\nx = 300\n";
        let problems = source(text).deserialize::<Doc>().unwrap_err();
        let rendered: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{rendered:#?}");
        assert!(
            rendered[0].starts_with("site.toml:3:1: devices[0]"),
            "{rendered:#?}"
        );
        assert!(rendered[0].contains("bogus"));
        assert!(
            rendered[1].starts_with("site.toml:10:8: devices[2].port"),
            "{rendered:#?}"
        );
        assert!(
            rendered[2].starts_with("site.toml:13:5: other.x"),
            "{rendered:#?}"
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let problems = source("a = \n").deserialize::<Doc>().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (1, 5));
    }

    #[test]
    fn locate_finds_leaf_keys_and_falls_back_to_ancestors() {
        let file = source("[[devices]]\nid = \"a\"\n\n[[devices]]\nid = \"b\"\n");
        let p = file.locate("devices[1].id", "x".into());
        assert_eq!((p.line, p.column), (5, 1));
        let p = file.locate("devices[1].nothing", "x".into());
        assert_eq!(p.line, 4);
    }
}
