//! The Prometheus text exposition: families declared once with HELP and TYPE, label values
//! escaped, and a strict checker of the format and the naming rules (used by the tests against
//! what `/metrics` serves and against docs/metrics.md).

use super::*;

/// Every prefix of this crate's families.
pub const PREFIX: &str = "parkguard_";

type Labels = Vec<(String, String)>;

struct Family {
    name: String,
    kind: String,
    help: String,
    samples: Vec<(String, Labels, f64)>,
}

/// Writes metrics in the Prometheus text exposition format (version 0.0.4).
///
/// Families are collected, then written at `finish`: a family declared twice still gets one
/// HELP and one TYPE with all its samples together, and families with a closed set of label
/// values (`expect`) get every combination, 0 where no sample was given.
pub struct PrometheusText {
    families: Vec<Family>,
    expected: BTreeMap<String, Vec<Labels>>,
}

impl PrometheusText {
    pub fn new() -> Self {
        PrometheusText {
            families: Vec::new(),
            expected: BTreeMap::new(),
        }
    }

    /// Declares a metric family; its samples follow with `sample`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        if self.families.iter().any(|f| f.name == name) {
            return;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: kind.to_string(),
            help: help.to_string(),
            samples: Vec::new(),
        });
    }

    /// One sample; label values are escaped as the format requires at `finish`. `name` is the
    /// family's, or for a summary the family's with `_sum` or `_count`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let owner = self.families.iter().rposition(|f| {
            name == f.name
                || (f.kind == "summary"
                    && name
                        .strip_prefix(f.name.as_str())
                        .is_some_and(|s| s == "_sum" || s == "_count"))
        });
        let index = match owner {
            Some(index) => index,
            None => {
                // Undeclared: written as untyped, which the exposition check refuses, so a
                // test finds it rather than Prometheus guessing.
                self.families.push(Family {
                    name: name.to_string(),
                    kind: "untyped".to_string(),
                    help: "Undeclared.".to_string(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families[index]
            .samples
            .push((name.to_string(), labels, value));
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// Says that family `name` has these label sets, each of which is written (at 0 if no
    /// sample gave it a value) wherever and whenever the family is declared.
    pub fn expect(&mut self, name: &str, label_sets: Vec<Vec<(&str, &str)>>) {
        let sets = label_sets
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        self.expected.insert(name.to_string(), sets);
    }

    pub fn finish(mut self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for family in &mut self.families {
            if let Some(sets) = self.expected.get(&family.name) {
                let mut given = std::mem::take(&mut family.samples);
                for set in sets {
                    let value = match given.iter().position(|(_, l, _)| l == set) {
                        Some(at) => given.remove(at).2,
                        None => 0.0,
                    };
                    family
                        .samples
                        .push((family.name.clone(), set.clone(), value));
                }
                // Values outside the declared set still count: written after it.
                family.samples.append(&mut given);
            }
            let name = &family.name;
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}{name} {}", family.kind);
            for (sample, labels, value) in &family.samples {
                out.push_str(PREFIX);
                out.push_str(sample);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (key, value)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(key);
                        out.push_str("=\"");
                        for c in value.chars() {
                            match c {
                                '\\' => out.push_str("\\\\"),
                                '"' => out.push_str("\\\""),
                                '\n' => out.push_str("\\n"),
                                c => out.push(c),
                            }
                        }
                        out.push('"');
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

impl Default for PrometheusText {
    fn default() -> Self {
        Self::new()
    }
}

/// A sample value as the format spells it (Rust writes `inf`, Prometheus wants `+Inf`).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// Checks Prometheus text (format 0.0.4) against the format and this crate's conventions;
/// returns one line per problem. Stricter than Prometheus: every sample's family has HELP and
/// TYPE, each once and before its samples; a family's samples are together; names are
/// `parkguard_` snake case; counters end in `_total` and nothing else does; no `untyped`; no
/// series twice; label values well escaped; `_info` gauges are 1.
pub fn check_exposition(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut help: BTreeSet<String> = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let snake = |name: &str| {
        name.starts_with(PREFIX)
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        let mut enter = |family: &str, problems: &mut Vec<String>| {
            if current.as_deref() != Some(family) {
                if closed.contains(family) {
                    problems.push(format!("line {at}: {family} again after other families"));
                }
                if let Some(previous) = current.replace(family.to_string()) {
                    closed.insert(previous);
                }
            }
        };
        if line.is_empty() {
            problems.push(format!("line {at}: empty line"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            enter(name, &mut problems);
            if !help.insert(name.to_string()) {
                problems.push(format!("line {at}: second HELP for {name}"));
            }
            if rest.len() <= name.len() + 1 {
                problems.push(format!("line {at}: {name} has an empty HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            let kind = words.next().unwrap_or_default();
            enter(name, &mut problems);
            if words.next().is_some() {
                problems.push(format!("line {at}: TYPE with more than a kind"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                problems.push(format!("line {at}: second TYPE for {name}"));
            }
            if !help.contains(name) {
                problems.push(format!("line {at}: TYPE of {name} before its HELP"));
            }
            if !snake(name) {
                problems.push(format!("line {at}: {name} is not parkguard_ snake case"));
            }
            match kind {
                "counter" if !name.ends_with("_total") => {
                    problems.push(format!("line {at}: counter {name} does not end in _total"))
                }
                "gauge" | "summary" | "histogram" if name.ends_with("_total") => {
                    problems.push(format!("line {at}: {kind} {name} ends in _total"))
                }
                "counter" | "gauge" | "summary" | "histogram" => {}
                other => problems.push(format!("line {at}: {name} has type {other:?}")),
            }
            for unit in [
                "_ms",
                "_milliseconds",
                "_us",
                "_kb",
                "_mb",
                "_percent",
                "_minutes",
            ] {
                if name.trim_end_matches("_total").ends_with(unit) {
                    problems.push(format!("line {at}: {name} is not in base units"));
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = match split_sample(line) {
            Ok(parts) => parts,
            Err(why) => {
                problems.push(format!("line {at}: {why}: {line}"));
                continue;
            }
        };
        let family = types
            .iter()
            .filter(|(family, kind)| {
                name == family.as_str()
                    || (matches!(kind.as_str(), "summary" | "histogram")
                        && name.strip_prefix(family.as_str()).is_some_and(|s| {
                            s == "_sum" || s == "_count" || (*kind == "histogram" && s == "_bucket")
                        }))
            })
            .map(|(family, kind)| (family.clone(), kind.clone()))
            .next();
        let Some((family, kind)) = family else {
            problems.push(format!("line {at}: {name} has no TYPE before it"));
            continue;
        };
        if current.as_deref() != Some(family.as_str()) {
            problems.push(format!(
                "line {at}: {name} away from its family's HELP and TYPE"
            ));
        }
        let mut names = BTreeSet::new();
        for (label, _) in &labels {
            if !names.insert(label.clone()) {
                problems.push(format!("line {at}: label {label} twice"));
            }
        }
        let mut key = name.clone();
        for (label, value) in &labels {
            key.push_str(&format!("|{label}={value}"));
        }
        if !series.insert(key) {
            problems.push(format!("line {at}: series written twice: {line}"));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            problems.push(format!("line {at}: counter {name} is {value}"));
        }
        if family.ends_with("_info") && value != 1.0 {
            problems.push(format!("line {at}: info {name} is not 1"));
        }
    }
    problems
}

/// A sample line's name, labels (unescaped) and value; the timestamp, if any, is checked and
/// dropped.
fn split_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                Some(_) => {}
                None => break,
            }
            let start = chars.peek().map_or(0, |(i, _)| *i);
            let mut label_end = start;
            while let Some((i, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || *c == '_' {
                    label_end = *i + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let label = &inner[start..label_end];
            if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("bad label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(format!("label {label} without =\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(format!("bad escape in label {label}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {label} not closed")),
                }
            }
            labels.push((label.to_string(), value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("labels not separated by ','".into()),
            }
        }
        let Some(end) = end else {
            return Err("labels not closed".into());
        };
        rest = &inner[end + 1..];
    }
    let Some(rest) = rest.strip_prefix(' ') else {
        return Err("no space before the value".into());
    };
    let mut words = rest.split(' ');
    let value = match words.next().unwrap_or_default() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("bad value {other:?}"))?,
    };
    if let Some(timestamp) = words.next() {
        if timestamp.parse::<i64>().is_err() {
            return Err(format!("bad timestamp {timestamp:?}"));
        }
    }
    if words.next().is_some() {
        return Err("more than value and timestamp".into());
    }
    Ok((name.to_string(), labels, value))
}

/// The families docs/metrics.md lists (its `### parkguard_...` headings), for the tests that
/// keep the reference and the endpoint in step.
pub fn documented_families(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().trim_matches('`').to_string())
        .filter(|h| h.starts_with(PREFIX))
        .collect()
}

/// The families (TYPE lines) of an exposition.
pub fn exposed_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}
