//! MQTT topic templates: `park/{park}/smoke/{device}/up` is subscribed as `park/+/smoke/+/up`,
//! and a received topic is matched back to extract the named levels as tags. Pure; part of the
//! configuration because templates are checked when the site file is loaded.
//!
//! Owns: template parsing and matching. Must not touch: connections.

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Named(String),
    Any,
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, String> {
        if template.is_empty() {
            return Err("a topic template must not be empty".into());
        }
        let parts: Vec<&str> = template.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err("`#` may only be the last level".into()),
                "+" => Level::Any,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!(
                            "level name `{name}` may only use letters, digits and `_`"
                        ));
                    }
                    if !names.insert(name.to_string()) {
                        return Err(format!("level name `{name}` is used twice"));
                    }
                    Level::Named(name.to_string())
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!("level `{p}` mixes text with `+`, `#` or braces"));
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        Ok(TopicTemplate { levels })
    }

    /// The MQTT subscription filter for this template.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Named(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The named levels of `topic`, or `None` when it does not match.
    pub fn capture<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut captured = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return Some(captured),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(s) if s != part => return None,
                        Level::Named(name) => captured.push((name.as_str(), part)),
                        _ => {}
                    }
                }
            }
        }
        parts.next().is_none().then_some(captured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_levels_subscribe_as_plus_and_capture_as_tags() {
        let t = TopicTemplate::parse("park/{park}/smoke/{device}/up").unwrap();
        assert_eq!(t.filter(), "park/+/smoke/+/up");
        assert_eq!(
            t.capture("park/星河/smoke/8699/up"),
            Some(vec![("park", "星河"), ("device", "8699")])
        );
    }

    #[test]
    fn other_topics_do_not_match() {
        let t = TopicTemplate::parse("park/{park}/smoke/{device}/up").unwrap();
        assert_eq!(t.capture("park/a/smoke/b/down"), None);
        assert_eq!(t.capture("park/a/smoke/b/up/extra"), None);
        assert_eq!(t.capture("park/a/smoke/b"), None);
    }

    #[test]
    fn trailing_hash_matches_any_depth() {
        let t = TopicTemplate::parse("meters/{device}/#").unwrap();
        assert_eq!(t.filter(), "meters/+/#");
        assert_eq!(t.capture("meters/m1/a/b"), Some(vec![("device", "m1")]));
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(TopicTemplate::parse("a/#/b").is_err());
        assert!(TopicTemplate::parse("a/x+/b").is_err());
        assert!(TopicTemplate::parse("{d}/{d}").is_err());
        assert!(TopicTemplate::parse("").is_err());
    }
}
