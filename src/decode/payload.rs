//! JSON payload mapping: JSON pointers to quantities, with a strict type per field.
//!
//! Each field decodes on its own: a missing or mistyped field is reported and skipped, and the
//! message's other fields are kept. Only a payload that is not JSON at all is lost as a whole.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::decode::bytes::{decode_text, BytesEncoding, BytesMapping, CompiledByteField};
use crate::decode::json::{Json, Pointer};

use crate::model::{Quality, Reading, Tags, TimestampNs, Value};

/// `[payload]` of a device profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadMapping {
    /// JSON pointer to the device id in the payload (e.g. `/dev`), for topics without a
    /// `{device}` level. When both are present the topic wins.
    #[serde(default)]
    pub device: Option<String>,
    /// Where the device's own timestamp is; absent means the time the message was received.
    #[serde(default)]
    pub timestamp: Option<TimestampField>,
    /// `[[payload.fields]]`: one entry per quantity.
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
    /// The device's own bytes, when the payload carries them as a Base64 or hex string (CTWing's
    /// transparent `APPdata`), read as fields at byte offsets.
    #[serde(default)]
    pub bytes: Option<BytesMapping>,
}

/// `[payload.timestamp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampField {
    /// JSON pointer to a number of seconds (or `unit`) since 1970-01-01 UTC.
    pub pointer: String,
    /// `s` (default), `ms`, `us` or `ns`.
    #[serde(default)]
    pub unit: TimeUnit,
}

/// The unit of a device timestamp counted from 1970-01-01 UTC; it may have a fraction.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Seconds (Unix time), e.g. `1795600800`.
    #[default]
    S,
    /// Milliseconds, e.g. `1795600800000`.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TimeUnit {
    fn nanos(self) -> i64 {
        match self {
            TimeUnit::S => 1_000_000_000,
            TimeUnit::Ms => 1_000_000,
            TimeUnit::Us => 1_000,
            TimeUnit::Ns => 1,
        }
    }
}

/// `[[payload.fields]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// JSON pointer (RFC 6901), e.g. `/smoke_pct` or `/phases/0/current`.
    pub pointer: String,
    /// Quantity name, written as the InfluxDB field key.
    pub quantity: String,
    /// Engineering unit, for display.
    #[serde(default)]
    pub unit: Option<String>,
    /// `float`, `int`, `bool` or `text`. A JSON value of another type is a `wrong_type` error;
    /// an integer is accepted for `float`.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// An optional field may be absent (or null) without an error, e.g. values that only some
    /// message types carry.
    #[serde(default)]
    pub optional: bool,
}

/// The JSON type a payload field must have, and the type of the quantity it becomes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A number, integer or not (an integer is read as a float).
    Float,
    /// An integer that fits 64 bits signed; `1.0` is not one.
    Int,
    /// `true` or `false`; `0`, `1` and `"true"` are not.
    Bool,
    /// A string, e.g. a state or event name (`alarm`, `warm_up`) that `state` rules watch.
    Text,
}

impl PayloadMapping {
    /// Problems a mapping can have that serde cannot see, as (key path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let bad_pointer = |p: &str| Pointer::parse(p).is_err();
        if let Some(device) = &self.device {
            if bad_pointer(device) {
                problems.push(("device".into(), "a JSON pointer starts with `/`".into()));
            }
        }
        if let Some(ts) = &self.timestamp {
            if bad_pointer(&ts.pointer) {
                problems.push((
                    "timestamp.pointer".into(),
                    "a JSON pointer starts with `/`".into(),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            if bad_pointer(&f.pointer) {
                problems.push((
                    format!("fields[{i}].pointer"),
                    "a JSON pointer starts with `/`".into(),
                ));
            }
            if f.quantity.is_empty() {
                problems.push((format!("fields[{i}].quantity"), "must not be empty".into()));
            }
            if !seen.insert(f.quantity.as_str()) {
                problems.push((
                    format!("fields[{i}].quantity"),
                    format!("quantity `{}` is mapped twice", f.quantity),
                ));
            }
        }
        if let Some(bytes) = &self.bytes {
            for (path, message) in bytes.problems() {
                problems.push((format!("bytes.{path}"), message));
            }
            for (i, f) in bytes.fields.iter().enumerate() {
                if !seen.insert(f.quantity.as_str()) {
                    problems.push((
                        format!("bytes.fields[{i}].quantity"),
                        format!("quantity `{}` is mapped twice", f.quantity),
                    ));
                }
            }
        } else if self.fields.is_empty() {
            problems.push((
                "fields".into(),
                "map at least one field (or the device's bytes, `[payload.bytes]`)".into(),
            ));
        }
        problems
    }
}

/// Why (part of) a message could not be decoded. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeErrorKind {
    /// Not valid JSON (NaN and Infinity literals included: JSON has no such numbers).
    BadJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has another JSON type than its mapping says.
    WrongType,
    /// A number that is not finite, or does not fit the mapped type.
    OutOfRange,
    /// The payload is larger than the subscription allows.
    TooLarge,
    /// The message's topic matches no subscription template.
    UnknownTopic,
    /// The device timestamp is absent, not a number or implausible; the receive time is used.
    BadTimestamp,
    /// The device is not declared in the site file.
    UnknownDevice,
    /// Neither the topic nor the payload names the device.
    NoDevice,
    /// An undeclared device beyond `gateway.max_unknown_devices`: dropped.
    UnknownOverCap,
}

impl DecodeErrorKind {
    pub const ALL: [DecodeErrorKind; 10] = [
        DecodeErrorKind::BadJson,
        DecodeErrorKind::MissingField,
        DecodeErrorKind::WrongType,
        DecodeErrorKind::OutOfRange,
        DecodeErrorKind::TooLarge,
        DecodeErrorKind::UnknownTopic,
        DecodeErrorKind::BadTimestamp,
        DecodeErrorKind::UnknownDevice,
        DecodeErrorKind::NoDevice,
        DecodeErrorKind::UnknownOverCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::BadJson => "bad_json",
            DecodeErrorKind::MissingField => "missing_field",
            DecodeErrorKind::WrongType => "wrong_type",
            DecodeErrorKind::OutOfRange => "out_of_range",
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::UnknownTopic => "unknown_topic",
            DecodeErrorKind::BadTimestamp => "bad_timestamp",
            DecodeErrorKind::UnknownDevice => "unknown_device",
            DecodeErrorKind::NoDevice => "no_device",
            DecodeErrorKind::UnknownOverCap => "unknown_over_cap",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub detail: String,
}

impl DecodeError {
    pub fn new(kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        DecodeError {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for DecodeError {}

struct CompiledField {
    pointer: Pointer,
    quantity: Arc<str>,
    unit: Option<Arc<str>>,
    kind: FieldType,
    optional: bool,
}

/// A payload mapping prepared for the hot path: pointers split once, names shared rather than
/// copied per reading.
pub struct PayloadDecoder {
    measurement: Arc<str>,
    device_pointer: Option<Pointer>,
    timestamp: Option<(Pointer, TimeUnit)>,
    fields: Vec<CompiledField>,
    /// The device's bytes: where, how written, and their fields.
    bytes: Option<(Pointer, BytesEncoding, Vec<CompiledByteField>)>,
    /// How far a device timestamp may be ahead of the receive time.
    max_ahead_ns: i64,
}

/// A payload that parsed as JSON, not yet mapped; borrows from the payload bytes.
pub struct ParsedPayload<'a>(Json<'a>);

// Device clocks outside these bounds (before 2000 or after 2100) are wrong, not history.
const EARLIEST_PLAUSIBLE_NS: i64 = 946_684_800_000_000_000;
const LATEST_PLAUSIBLE_NS: i64 = 4_102_444_800_000_000_000;
// A device clock this far ahead of the gateway's is wrong; a reading dated in the future
// would pin the device's last-seen time and its history buckets.
const DEFAULT_MAX_AHEAD_NS: i64 = 300 * 1_000_000_000;

impl PayloadDecoder {
    /// Fails only on a malformed pointer, which configuration validation reports first.
    pub fn new(mapping: &PayloadMapping, measurement: &str) -> Result<Self, String> {
        let mut fields = Vec::with_capacity(mapping.fields.len());
        for f in &mapping.fields {
            fields.push(CompiledField {
                pointer: Pointer::parse(&f.pointer)?,
                quantity: Arc::from(f.quantity.as_str()),
                unit: f.unit.as_deref().map(Arc::from),
                kind: f.kind,
                optional: f.optional,
            });
        }
        Ok(PayloadDecoder {
            measurement: Arc::from(measurement),
            device_pointer: mapping.device.as_deref().map(Pointer::parse).transpose()?,
            timestamp: match &mapping.timestamp {
                Some(ts) => Some((Pointer::parse(&ts.pointer)?, ts.unit)),
                None => None,
            },
            fields,
            bytes: match &mapping.bytes {
                Some(b) => Some((
                    Pointer::parse(&b.pointer)?,
                    b.encoding,
                    b.fields
                        .iter()
                        .map(CompiledByteField::new)
                        .collect::<Result<_, _>>()?,
                )),
                None => None,
            },
            max_ahead_ns: DEFAULT_MAX_AHEAD_NS,
        })
    }

    /// Device timestamps more than `ns` ahead of the receive time are `bad_timestamp`.
    pub fn with_max_ahead_ns(mut self, ns: i64) -> Self {
        self.max_ahead_ns = ns.max(0);
        self
    }

    pub fn parse<'a>(&self, payload: &'a [u8]) -> Result<ParsedPayload<'a>, DecodeError> {
        Json::parse(payload)
            .map(ParsedPayload)
            .map_err(|err| DecodeError::new(DecodeErrorKind::BadJson, err.to_string()))
    }

    /// True when the mapping takes the device id from the payload.
    pub fn names_device_in_payload(&self) -> bool {
        self.device_pointer.is_some()
    }

    /// The device id the payload itself names, when the mapping says where.
    pub fn device_id<'p>(
        &self,
        parsed: &'p ParsedPayload<'_>,
    ) -> Option<std::borrow::Cow<'p, str>> {
        match parsed.0.get(self.device_pointer.as_ref()?)? {
            Json::Str(s) => Some(std::borrow::Cow::Borrowed(s.as_ref())),
            Json::Int(i) => Some(std::borrow::Cow::Owned(i.to_string())),
            Json::UInt(u) => Some(std::borrow::Cow::Owned(u.to_string())),
            _ => None,
        }
    }

    /// Maps a parsed payload to readings, appending to `out`. Field-level problems go to
    /// `problems`; the other fields still become readings.
    pub fn readings(
        &self,
        parsed: &ParsedPayload<'_>,
        tags: &Arc<Tags>,
        received_ns: TimestampNs,
        out: &mut Vec<Reading>,
        problems: &mut Vec<DecodeError>,
    ) {
        let timestamp_ns = match self.device_timestamp(&parsed.0, received_ns) {
            Some(Ok(ts)) => ts,
            Some(Err(problem)) => {
                problems.push(problem);
                received_ns
            }
            None => received_ns,
        };
        for field in &self.fields {
            let value = match parsed.0.get(&field.pointer) {
                None | Some(Json::Null) => {
                    if !field.optional {
                        problems.push(DecodeError::new(
                            DecodeErrorKind::MissingField,
                            format!("`{}` ({}) is absent", field.pointer, field.quantity),
                        ));
                    }
                    continue;
                }
                Some(raw) => match convert(raw, field.kind) {
                    Ok(value) => value,
                    Err(kind) => {
                        problems.push(DecodeError::new(
                            kind,
                            format!(
                                "`{}` ({}) is {}, expected {:?}",
                                field.pointer,
                                field.quantity,
                                describe(raw),
                                field.kind
                            ),
                        ));
                        continue;
                    }
                },
            };
            out.push(Reading {
                tags: Arc::clone(tags),
                measurement: Arc::clone(&self.measurement),
                quantity: Arc::clone(&field.quantity),
                value,
                unit: field.unit.clone(),
                timestamp_ns,
                quality: Quality::Good,
            });
        }
        if let Some((pointer, encoding, fields)) = &self.bytes {
            let bytes = match parsed.0.get(pointer) {
                // A message without the bytes (an online report) has none to read.
                None | Some(Json::Null) => return,
                Some(Json::Str(text)) => match decode_text(*encoding, text) {
                    Ok(bytes) => bytes,
                    Err(problem) => {
                        problems.push(problem);
                        return;
                    }
                },
                Some(other) => {
                    problems.push(DecodeError::new(
                        DecodeErrorKind::WrongType,
                        format!("`{pointer}` (the device's bytes) is {}", describe(other)),
                    ));
                    return;
                }
            };
            for field in fields {
                match field.read(&bytes) {
                    Ok(value) => out.push(Reading {
                        tags: Arc::clone(tags),
                        measurement: Arc::clone(&self.measurement),
                        quantity: Arc::clone(&field.quantity),
                        value,
                        unit: field.unit.clone(),
                        timestamp_ns,
                        quality: Quality::Good,
                    }),
                    Err(problem) => problems.push(problem),
                }
            }
        }
    }

    fn device_timestamp(
        &self,
        root: &Json<'_>,
        received_ns: TimestampNs,
    ) -> Option<Result<TimestampNs, DecodeError>> {
        let (pointer, unit) = self.timestamp.as_ref()?;
        let bad =
            |detail: String| Some(Err(DecodeError::new(DecodeErrorKind::BadTimestamp, detail)));
        let Some(raw) = root.get(pointer) else {
            return bad(format!("`{pointer}` is absent"));
        };
        let ns = match raw {
            Json::Int(i) => i.checked_mul(unit.nanos()),
            Json::Float(f) => {
                let ns = f * unit.nanos() as f64;
                (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64)
            }
            Json::UInt(_) => None,
            other => {
                return bad(format!(
                    "`{pointer}` is {}, expected a number",
                    describe(other)
                ))
            }
        };
        match ns {
            Some(ns) if ns > received_ns.saturating_add(self.max_ahead_ns) => bad(format!(
                "`{pointer}` is {} s ahead of the gateway's clock (limit {} s)",
                (ns - received_ns) / 1_000_000_000,
                self.max_ahead_ns / 1_000_000_000
            )),
            Some(ns) if (EARLIEST_PLAUSIBLE_NS..LATEST_PLAUSIBLE_NS).contains(&ns) => Some(Ok(ns)),
            _ => bad(format!("`{pointer}` is not a plausible time")),
        }
    }
}

fn convert(raw: &Json<'_>, kind: FieldType) -> Result<Value, DecodeErrorKind> {
    match (kind, raw) {
        (FieldType::Float, Json::Float(f)) if f.is_finite() => Ok(Value::Float(*f)),
        (FieldType::Float, Json::Float(_)) => Err(DecodeErrorKind::OutOfRange),
        (FieldType::Float, Json::Int(i)) => Ok(Value::Float(*i as f64)),
        (FieldType::Float, Json::UInt(u)) => Ok(Value::Float(*u as f64)),
        (FieldType::Int, Json::Int(i)) => Ok(Value::Int(*i)),
        // Beyond i64 an integer field cannot hold it; a fraction is another type altogether.
        (FieldType::Int, Json::UInt(_)) => Err(DecodeErrorKind::OutOfRange),
        (FieldType::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::Text, Json::Str(s)) => Ok(Value::Text(Arc::from(s.as_ref()))),
        _ => Err(DecodeErrorKind::WrongType),
    }
}

fn describe(raw: &Json<'_>) -> &'static str {
    match raw {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Float(_) => "a fractional number",
        Json::Int(_) | Json::UInt(_) => "an integer",
        Json::Str(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the test messages arrive: shortly after the device times they carry.
    const RECEIVED_NS: i64 = 1_718_000_100_000_000_000;

    fn mapping() -> PayloadMapping {
        toml::from_str(
            r#"
            device = "/dev"
            timestamp = { pointer = "/ts", unit = "s" }
            [[fields]]
            pointer = "/smoke_pct"
            quantity = "smoke_pct"
            unit = "%"
            type = "float"
            [[fields]]
            pointer = "/battery_pct"
            quantity = "battery_pct"
            type = "int"
            [[fields]]
            pointer = "/event"
            quantity = "event"
            type = "text"
            [[fields]]
            pointer = "/alarm"
            quantity = "alarm"
            type = "bool"
            optional = true
            "#,
        )
        .expect("test mapping parses")
    }

    fn decode(payload: &str) -> Result<(Vec<Reading>, Vec<DecodeError>), DecodeError> {
        let decoder = PayloadDecoder::new(&mapping(), "smoke").unwrap();
        let parsed = decoder.parse(payload.as_bytes())?;
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        decoder.readings(
            &parsed,
            &Arc::new(Tags::default()),
            RECEIVED_NS,
            &mut out,
            &mut problems,
        );
        Ok((out, problems))
    }

    #[test]
    fn well_formed_payload_yields_every_field_with_device_time() {
        let (readings, problems) =
            decode(r#"{"dev":"8699","ts":1718000000,"smoke_pct":12.5,"battery_pct":78,"event":"alarm","alarm":true}"#)
                .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(readings.len(), 4);
        assert_eq!(readings[0].value, Value::Float(12.5));
        assert_eq!(readings[1].value, Value::Int(78));
        assert_eq!(readings[2].value, Value::Text("alarm".into()));
        assert_eq!(readings[3].value, Value::Bool(true));
        assert!(readings
            .iter()
            .all(|r| r.timestamp_ns == 1_718_000_000_000_000_000));
    }

    #[test]
    fn the_devices_own_bytes_are_read_from_a_base64_string() {
        let mapping: PayloadMapping = toml::from_str(
            r#"
            [bytes]
            pointer = "/APPdata"
            encoding = "base64"
            [[bytes.fields]]
            quantity = "event"
            offset = 0
            type = "u8"
            enum = { 0 = "normal", 1 = "alarm" }
            [[bytes.fields]]
            quantity = "smoke_pct"
            offset = 2
            type = "u16"
            scale = 0.1
            "#,
        )
        .expect("mapping");
        assert!(mapping.problems().is_empty(), "{:?}", mapping.problems());
        let decoder = PayloadDecoder::new(&mapping, "smoke").expect("decoder");
        let tags = Arc::new(Tags::default());
        let run = |payload: &str| {
            let parsed = decoder.parse(payload.as_bytes()).expect("json");
            let (mut out, mut problems) = (Vec::new(), Vec::new());
            decoder.readings(&parsed, &tags, RECEIVED_NS, &mut out, &mut problems);
            (out, problems)
        };
        // 01 00 01 9A: alarm, 41.0 %.
        let (readings, problems) = run(r#"{"APPdata":"AQABmg=="}"#);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(readings[0].value, Value::Text("alarm".into()));
        assert_eq!(readings[1].value, Value::Float(410.0 * 0.1));
        let (readings, problems) = run(r#"{"online":true}"#);
        assert!(
            readings.is_empty() && problems.is_empty(),
            "no bytes, nothing to read"
        );
        let (_, problems) = run(r#"{"APPdata":12}"#);
        assert_eq!(problems[0].kind, DecodeErrorKind::WrongType);
        let (readings, problems) = run(r#"{"APPdata":"AQ=="}"#);
        assert_eq!(readings.len(), 1, "the event byte is there");
        assert_eq!(problems[0].kind, DecodeErrorKind::MissingField);
    }

    #[test]
    fn integer_is_accepted_where_float_is_mapped() {
        let (readings, _) =
            decode(r#"{"ts":1718000000,"smoke_pct":12,"battery_pct":78,"event":"x"}"#).unwrap();
        assert_eq!(readings[0].value, Value::Float(12.0));
    }

    #[test]
    fn not_json_is_bad_json() {
        assert_eq!(
            decode("{not json").unwrap_err().kind,
            DecodeErrorKind::BadJson
        );
    }

    #[test]
    fn nan_and_infinity_literals_are_bad_json() {
        assert_eq!(
            decode(r#"{"smoke_pct":NaN}"#).unwrap_err().kind,
            DecodeErrorKind::BadJson
        );
        assert_eq!(
            decode(r#"{"smoke_pct":Infinity}"#).unwrap_err().kind,
            DecodeErrorKind::BadJson
        );
    }

    #[test]
    fn number_too_large_for_f64_is_rejected_not_infinite() {
        // serde_json refuses 1e400 rather than yielding infinity.
        assert_eq!(
            decode(r#"{"smoke_pct":1e400}"#).unwrap_err().kind,
            DecodeErrorKind::BadJson
        );
    }

    #[test]
    fn wrong_type_skips_only_that_field() {
        let (readings, problems) =
            decode(r#"{"ts":1718000000,"smoke_pct":"12.5","battery_pct":78,"event":"alarm"}"#)
                .unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, DecodeErrorKind::WrongType);
        assert!(
            problems[0].detail.contains("/smoke_pct"),
            "{}",
            problems[0].detail
        );
        assert_eq!(readings.len(), 2);
    }

    #[test]
    fn fraction_for_int_field_is_wrong_type() {
        let (_, problems) =
            decode(r#"{"ts":1718000000,"smoke_pct":1,"battery_pct":7.5,"event":"a"}"#).unwrap();
        assert_eq!(problems[0].kind, DecodeErrorKind::WrongType);
    }

    #[test]
    fn integer_beyond_i64_is_out_of_range() {
        let (_, problems) = decode(
            r#"{"ts":1718000000,"smoke_pct":1,"battery_pct":18446744073709551615,"event":"a"}"#,
        )
        .unwrap();
        assert_eq!(problems[0].kind, DecodeErrorKind::OutOfRange);
    }

    #[test]
    fn missing_required_field_is_reported_but_optional_is_not() {
        let (readings, problems) =
            decode(r#"{"ts":1718000000,"battery_pct":78,"event":"heartbeat"}"#).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, DecodeErrorKind::MissingField);
        assert_eq!(readings.len(), 2);
    }

    #[test]
    fn null_counts_as_missing() {
        let (_, problems) =
            decode(r#"{"ts":1718000000,"smoke_pct":null,"battery_pct":1,"event":"a"}"#).unwrap();
        assert_eq!(problems[0].kind, DecodeErrorKind::MissingField);
    }

    #[test]
    fn implausible_device_time_falls_back_to_receive_time() {
        let (readings, problems) =
            decode(r#"{"ts":12,"smoke_pct":1,"battery_pct":1,"event":"a"}"#).unwrap();
        assert_eq!(problems[0].kind, DecodeErrorKind::BadTimestamp);
        assert!(readings.iter().all(|r| r.timestamp_ns == RECEIVED_NS));
    }

    #[test]
    fn device_time_far_ahead_of_the_gateway_is_bad_and_receive_time_is_used() {
        // 2099: a wrong device clock must not pin the device's last-seen time.
        let (readings, problems) =
            decode(r#"{"ts":4070908800,"smoke_pct":1,"battery_pct":1,"event":"a"}"#).unwrap();
        assert_eq!(problems[0].kind, DecodeErrorKind::BadTimestamp);
        assert!(
            problems[0].detail.contains("ahead"),
            "{}",
            problems[0].detail
        );
        assert!(readings.iter().all(|r| r.timestamp_ns == RECEIVED_NS));
    }

    #[test]
    fn device_time_slightly_ahead_is_kept() {
        // 4 minutes ahead: within the default 5 minutes of clock disagreement.
        let (readings, problems) =
            decode(r#"{"ts":1718000340,"smoke_pct":1,"battery_pct":1,"event":"a"}"#).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(readings
            .iter()
            .all(|r| r.timestamp_ns == 1_718_000_340_000_000_000));
    }

    #[test]
    fn millisecond_timestamps_scale() {
        let mut m = mapping();
        m.timestamp = Some(TimestampField {
            pointer: "/ts".into(),
            unit: TimeUnit::Ms,
        });
        let decoder = PayloadDecoder::new(&m, "smoke").unwrap();
        let parsed = decoder
            .parse(br#"{"ts":1718000000123,"smoke_pct":1}"#)
            .unwrap();
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        decoder.readings(
            &parsed,
            &Arc::new(Tags::default()),
            RECEIVED_NS,
            &mut out,
            &mut problems,
        );
        assert_eq!(out[0].timestamp_ns, 1_718_000_000_123_000_000);
    }

    #[test]
    fn device_id_comes_from_payload_pointer() {
        let decoder = PayloadDecoder::new(&mapping(), "smoke").unwrap();
        let parsed = decoder.parse(br#"{"dev":869975031234567}"#).unwrap();
        assert_eq!(
            decoder.device_id(&parsed).as_deref(),
            Some("869975031234567")
        );
    }

    #[test]
    fn mapping_problems_name_their_keys() {
        let mut m = mapping();
        m.fields[1].pointer = "battery".into();
        m.fields[2].quantity = "smoke_pct".into();
        let problems = m.problems();
        assert_eq!(problems[0].0, "fields[1].pointer");
        assert_eq!(problems[1].0, "fields[2].quantity");
    }
}
