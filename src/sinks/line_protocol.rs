//! InfluxDB line protocol encoder: pure, allocation-light, with the escaping rules of the
//! InfluxDB reference:
//!
//! | element              | escaped with a backslash      |
//! |----------------------|-------------------------------|
//! | measurement          | comma, space, backslash       |
//! | tag key, tag value   | comma, equals, space, backslash |
//! | field key            | comma, equals, space, backslash |
//! | string field value   | double quote, backslash       |
//!
//! Line protocol cannot carry a line break outside a string field, so CR and LF in names and
//! tag values become spaces (in string field values they are kept); nor can a name or tag value
//! end with a backslash, even an escaped one, so a final backslash becomes `_`. A measurement
//! starting with `#` would be read as a comment line, so its `#` becomes `_`. Empty tag values
//! are left out.
//!
//! Consecutive readings with the same measurement, tags and timestamp share one line, so a
//! 12-quantity meter message is one line with 12 fields.

use std::sync::Arc;

use crate::model::{Quality, Reading, Value};

/// Appends the readings to `out` as line protocol, one line per series and timestamp.
/// Returns how many readings could not be encoded (non-finite floats); the rest are written.
pub fn encode(readings: &[Reading], out: &mut String) -> usize {
    let mut skipped = 0;
    let mut i = 0;
    while i < readings.len() {
        let first = &readings[i];
        let mut end = i + 1;
        while end < readings.len() && same_line(first, &readings[end]) {
            end += 1;
        }
        let line_start = out.len();
        write_measurement(&first.measurement, out);
        first.tags.for_each_pair(|key, value| {
            out.push(',');
            write_escaped(key, out, TAG_SPECIALS);
            out.push('=');
            write_escaped(value, out, TAG_SPECIALS);
        });
        let mut separator = ' ';
        for reading in &readings[i..end] {
            let field_start = out.len();
            out.push(separator);
            if reading.quality == Quality::Good {
                write_escaped(&reading.quantity, out, TAG_SPECIALS);
                out.push('=');
                if !write_value(&reading.value, out) {
                    out.truncate(field_start);
                    skipped += 1;
                    continue;
                }
            } else {
                write_escaped(&reading.quantity, out, TAG_SPECIALS);
                write_escaped("_quality", out, TAG_SPECIALS);
                out.push_str("=\"");
                out.push_str(reading.quality.as_str());
                out.push('"');
            }
            separator = ',';
        }
        if separator == ' ' {
            // Every field of this line was skipped: a line without fields is invalid.
            out.truncate(line_start);
        } else {
            out.push(' ');
            out.push_str(itoa::Buffer::new().format(first.timestamp_ns));
            out.push('\n');
        }
        i = end;
    }
    skipped
}

fn same_line(a: &Reading, b: &Reading) -> bool {
    a.timestamp_ns == b.timestamp_ns
        && (Arc::ptr_eq(&a.tags, &b.tags) || a.tags == b.tags)
        && a.measurement == b.measurement
}

const MEASUREMENT_SPECIALS: &[char] = &[',', ' ', '\\'];
const TAG_SPECIALS: &[char] = &[',', '=', ' ', '\\'];

fn write_measurement(name: &str, out: &mut String) {
    match name.strip_prefix('#') {
        Some(rest) => {
            out.push('_');
            write_escaped(rest, out, MEASUREMENT_SPECIALS);
        }
        None => write_escaped(name, out, MEASUREMENT_SPECIALS),
    }
}

fn write_escaped(text: &str, out: &mut String, specials: &[char]) {
    let (text, trailing_backslash) = match text.strip_suffix('\\') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    if !text.contains(|c: char| specials.contains(&c) || c == '\n' || c == '\r') {
        out.push_str(text);
    } else {
        write_escaped_chars(text, out, specials);
    }
    if trailing_backslash {
        out.push('_');
    }
}

fn write_escaped_chars(text: &str, out: &mut String, specials: &[char]) {
    for c in text.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        match c {
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// Writes a field value; false for a value line protocol cannot hold (NaN, infinity).
fn write_value(value: &Value, out: &mut String) -> bool {
    match value {
        Value::Float(f) if !f.is_finite() => return false,
        // The shortest representation that reads back to the same f64, in scientific
        // notation when shorter (1e300), which InfluxDB accepts.
        Value::Float(f) => out.push_str(ryu::Buffer::new().format_finite(*f)),
        Value::Int(i) => {
            out.push_str(itoa::Buffer::new().format(*i));
            out.push('i');
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Text(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tags;

    fn reading(quantity: &str, value: Value) -> Reading {
        Reading {
            tags: Arc::new(Tags {
                park: "p".into(),
                device: "d".into(),
                ..Tags::default()
            }),
            measurement: Arc::from("meter"),
            quantity: Arc::from(quantity),
            value,
            unit: None,
            timestamp_ns: 1_700_000_000_000_000_000,
            quality: Quality::Good,
        }
    }

    fn encode_one(r: Reading) -> String {
        let mut out = String::new();
        encode(&[r], &mut out);
        out
    }

    #[test]
    fn float_int_bool_and_text_fields_have_their_syntax() {
        let rs = [
            reading("a", Value::Float(1.0)),
            reading("b", Value::Int(-3)),
            reading("c", Value::Bool(true)),
            reading("d", Value::Text("x".into())),
        ];
        let mut out = String::new();
        encode(&rs, &mut out);
        assert_eq!(
            out,
            "meter,device=d,park=p a=1.0,b=-3i,c=true,d=\"x\" 1700000000000000000\n"
        );
    }

    #[test]
    fn measurement_escapes_comma_space_backslash_but_not_equals() {
        let mut r = reading("v", Value::Int(1));
        r.measurement = Arc::from("a,b c\\d=e");
        assert!(encode_one(r).starts_with("a\\,b\\ c\\\\d=e,"));
    }

    #[test]
    fn measurement_starting_with_hash_is_not_a_comment() {
        let mut r = reading("v", Value::Int(1));
        r.measurement = Arc::from("#m");
        assert!(encode_one(r).starts_with("_m,"));
    }

    #[test]
    fn tag_keys_and_values_escape_comma_equals_space_backslash() {
        let mut r = reading("v", Value::Int(1));
        r.tags = Arc::new(Tags {
            extra: vec![("k,=y \\z".into(), "v,=x \\w".into())],
            ..Tags::default()
        });
        assert_eq!(
            encode_one(r),
            "meter,k\\,\\=y\\ \\\\z=v\\,\\=x\\ \\\\w v=1i 1700000000000000000\n"
        );
    }

    #[test]
    fn field_keys_escape_comma_equals_space_backslash() {
        let r = reading("a b,c=d\\e", Value::Int(1));
        assert!(encode_one(r).contains(" a\\ b\\,c\\=d\\\\e=1i "));
    }

    #[test]
    fn string_values_escape_quote_and_backslash_only() {
        let r = reading("s", Value::Text("say \"hi\", a=b \\o/".into()));
        assert!(encode_one(r).contains(" s=\"say \\\"hi\\\", a=b \\\\o/\" "));
    }

    #[test]
    fn final_backslash_of_a_name_becomes_underscore() {
        let mut r = reading("v\\", Value::Int(1));
        r.tags = Arc::new(Tags {
            device: "a\\".into(),
            ..Tags::default()
        });
        assert_eq!(encode_one(r), "meter,device=a_ v_=1i 1700000000000000000\n");
    }

    #[test]
    fn line_breaks_in_names_become_spaces() {
        let mut r = reading("v", Value::Int(1));
        r.tags = Arc::new(Tags {
            device: "a\nb".into(),
            ..Tags::default()
        });
        assert_eq!(
            encode_one(r),
            "meter,device=a\\ b v=1i 1700000000000000000\n"
        );
    }

    #[test]
    fn chinese_names_pass_through_unescaped() {
        let mut r = reading("温度", Value::Float(21.5));
        r.tags = Arc::new(Tags {
            location: "3号楼配电箱".into(),
            ..Tags::default()
        });
        assert_eq!(
            encode_one(r),
            "meter,location=3号楼配电箱 温度=21.5 1700000000000000000\n"
        );
    }

    #[test]
    fn empty_tag_values_are_left_out() {
        let r = reading("v", Value::Int(1));
        assert!(!encode_one(r).contains("enterprise"));
    }

    #[test]
    fn non_finite_floats_are_skipped_and_counted() {
        let rs = [
            reading("a", Value::Float(f64::NAN)),
            reading("b", Value::Int(1)),
        ];
        let mut out = String::new();
        assert_eq!(encode(&rs, &mut out), 1);
        assert_eq!(out, "meter,device=d,park=p b=1i 1700000000000000000\n");
        let mut out = String::new();
        assert_eq!(
            encode(&[reading("a", Value::Float(f64::INFINITY))], &mut out),
            1
        );
        assert_eq!(out, "", "a line with no fields must not be written");
    }

    #[test]
    fn bad_quality_is_written_as_a_quality_field_without_a_value() {
        let mut r = reading("t1", Value::Float(0.0));
        r.quality = Quality::Invalid;
        assert!(encode_one(r).contains(" t1_quality=\"invalid\" "));
    }

    #[test]
    fn different_timestamps_make_separate_lines() {
        let a = reading("a", Value::Int(1));
        let mut b = reading("b", Value::Int(2));
        b.timestamp_ns += 1;
        let mut out = String::new();
        encode(&[a, b], &mut out);
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn large_and_small_floats_round_trip_textually() {
        for f in [1e300, -2.5e-300, 0.1, 123456789.125] {
            let out = encode_one(reading("f", Value::Float(f)));
            let text = out.split(' ').nth(1).unwrap().trim_start_matches("f=");
            assert_eq!(text.parse::<f64>().unwrap(), f);
        }
    }
}
