//! Property test: any readings the encoder writes are parsed back, by a line-protocol parser
//! parkguard did not write (the `influxdb-line-protocol` crate), to the same names and values.

use std::sync::Arc;

use influxdb_line_protocol::{parse_lines, FieldValue};
use parkguard::model::{Quality, Reading, Tags, Value};
use parkguard::sinks::line_protocol::encode;
use proptest::prelude::*;

/// Names with every character line protocol treats specially, plus CJK text. Line breaks are
/// left out here: they cannot be carried and are replaced (a unit test covers that).
/// A final backslash cannot be carried either; `carried` gives the documented replacement.
fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_ ,=\"\\\\号楼配电箱温度é-]{1,12}")
        .expect("regex")
        .prop_filter("no leading #, not only spaces", |s| {
            !s.starts_with('#') && !s.trim().is_empty()
        })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        proptest::string::string_regex("[a-z \",=\\\\号\\n{}]{0,16}")
            .expect("regex")
            .prop_map(|s| Value::Text(s.into())),
    ]
}

/// One message: readings of distinct quantities sharing measurement, tags and time.
fn message() -> impl Strategy<Value = Vec<Reading>> {
    (
        name(),
        name(),
        name(),
        proptest::collection::vec((name(), value()), 1..6),
        any::<i64>(),
    )
        .prop_map(|(measurement, device, location, fields, ts)| {
            let tags = Arc::new(Tags {
                device,
                location,
                ..Tags::default()
            });
            // One message: distinct quantities sharing tags and time.
            let mut seen = std::collections::BTreeSet::new();
            let fields: Vec<_> = fields
                .into_iter()
                .filter(|(q, _)| seen.insert(q.clone()))
                .collect();
            let measurement: Arc<str> = measurement.into();
            fields
                .into_iter()
                .map(|(quantity, value)| Reading {
                    tags: Arc::clone(&tags),
                    measurement: Arc::clone(&measurement),
                    quantity: quantity.into(),
                    value,
                    unit: None,
                    timestamp_ns: ts,
                    quality: Quality::Good,
                })
                .collect::<Vec<_>>()
        })
}

fn carried(name: &str) -> String {
    match name.strip_suffix('\\') {
        Some(rest) => format!("{rest}_"),
        None => name.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encoded_readings_parse_back_to_the_same_values(messages in proptest::collection::vec(message(), 1..8)) {
        let readings = messages.concat();
        let mut text = String::new();
        let skipped = encode(&readings, &mut text);
        prop_assert_eq!(skipped, 0);
        let lines: Vec<_> = parse_lines(&text).collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        // Readings that share measurement, tags and time share a line: flatten to compare.
        let mut parsed = Vec::new();
        for line in &lines {
            let tags: Vec<(String, String)> = line.series.tag_set.iter().flatten()
                .map(|(k, v)| (k.to_string(), v.to_string())).collect();
            for (key, value) in &line.field_set {
                parsed.push((line.series.measurement.to_string(), tags.clone(), key.to_string(), value.clone(), line.timestamp));
            }
        }
        prop_assert_eq!(parsed.len(), readings.len(), "{}", text);
        for (reading, (measurement, tags, key, value, ts)) in readings.iter().zip(parsed) {
            prop_assert_eq!(measurement, carried(&reading.measurement));
            let expected_tags: Vec<(String, String)> = reading.tags.pairs().into_iter()
                .map(|(k, v)| (carried(k), carried(v))).collect();
            prop_assert_eq!(tags, expected_tags);
            prop_assert_eq!(key, carried(&reading.quantity));
            prop_assert_eq!(ts, Some(reading.timestamp_ns));
            match (&reading.value, value) {
                (Value::Float(a), FieldValue::F64(b)) => prop_assert_eq!(a.to_bits(), b.to_bits(), "{} vs {}", a, b),
                (Value::Int(a), FieldValue::I64(b)) => prop_assert_eq!(*a, b),
                (Value::Bool(a), FieldValue::Boolean(b)) => prop_assert_eq!(*a, b),
                (Value::Text(a), FieldValue::String(b)) => prop_assert_eq!(a.as_ref(), b.to_string()),
                (a, b) => prop_assert!(false, "type changed: {:?} became {:?}", a, b),
            }
        }
    }
}
