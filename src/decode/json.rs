//! A borrowed JSON tree for payload decoding: keys and strings without escapes point into the
//! payload, objects are small vectors. Sensor payloads are a dozen keys, so a linear search
//! beats building a map, and parsing allocates a few vectors instead of a string per key.
//! Pointers (RFC 6901) are split once, when the profile is loaded.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers above i64::MAX.
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Follows a pointer split by `Pointer::parse`; for duplicate keys the last one wins, as
    /// with serde_json's own maps.
    pub fn get(&self, pointer: &Pointer) -> Option<&Json<'a>> {
        let mut node = self;
        for token in &pointer.tokens {
            node = match node {
                Json::Object(entries) => entries
                    .iter()
                    .rev()
                    .find(|(k, _)| k == token)
                    .map(|(_, v)| v)?,
                Json::Array(items) => {
                    // RFC 6901: array indices are decimal without leading zeros.
                    if token.len() > 1 && token.starts_with('0') {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(node)
    }
}

/// A JSON pointer split into unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<String>,
    text: String,
}

impl Pointer {
    /// `""` is the whole document; otherwise the pointer starts with `/`. `~1` is `/`, `~0` is `~`.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                tokens: Vec::new(),
                text: String::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err("a JSON pointer starts with `/`".into());
        };
        let tokens = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(Pointer {
            tokens,
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(i64::try_from(v).map(Json::Int).unwrap_or(Json::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Json::Object(entries))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(doc: &'a Json<'a>, pointer: &str) -> Option<&'a Json<'a>> {
        doc.get(&Pointer::parse(pointer).unwrap())
    }

    #[test]
    fn pointers_follow_objects_and_arrays() {
        let doc = Json::parse(br#"{"a":{"b":[10,{"c":true}]},"t":[1.5]}"#).unwrap();
        assert_eq!(get(&doc, "/a/b/0"), Some(&Json::Int(10)));
        assert_eq!(get(&doc, "/a/b/1/c"), Some(&Json::Bool(true)));
        assert_eq!(get(&doc, "/t/0"), Some(&Json::Float(1.5)));
        assert_eq!(get(&doc, "/a/b/2"), None);
        assert_eq!(get(&doc, "/a/b/01"), None, "leading zeros are not indices");
        assert_eq!(get(&doc, ""), Some(&doc));
    }

    #[test]
    fn escaped_pointer_tokens_and_keys_match() {
        let doc = Json::parse(br#"{"a/b":1,"m~n":2,"q\"x":3}"#).unwrap();
        assert_eq!(get(&doc, "/a~1b"), Some(&Json::Int(1)));
        assert_eq!(get(&doc, "/m~0n"), Some(&Json::Int(2)));
        assert_eq!(get(&doc, "/q\"x"), Some(&Json::Int(3)));
    }

    #[test]
    fn last_duplicate_key_wins() {
        let doc = Json::parse(br#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(get(&doc, "/a"), Some(&Json::Int(2)));
    }

    #[test]
    fn big_unsigned_integers_are_kept() {
        let doc = Json::parse(br#"{"a":18446744073709551615}"#).unwrap();
        assert_eq!(get(&doc, "/a"), Some(&Json::UInt(u64::MAX)));
    }

    #[test]
    fn pointer_without_leading_slash_is_refused() {
        assert!(Pointer::parse("a/b").is_err());
    }
}
