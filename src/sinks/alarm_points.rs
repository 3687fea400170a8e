//! Alarm transitions and journal anchors as InfluxDB points (`alarm`, `journal_anchor`),
//! encoded and compressed exactly as the ingest writer's telemetry, for the same outbox.
//!
//! Owns: the shape of those points. Must not touch: the store or the outbox itself; the rules
//! task commits what this returns in its journal transaction.

use std::sync::Arc;

use crate::model::alarm::{AlarmEvent, Observed};
use crate::model::{Quality, Reading, Tags, Value};
use crate::sinks::{influx, line_protocol};

/// Encodes points as line protocol and compresses them as one outbox batch: the batch and the
/// number of points in it (non-finite values are left out, as in ingest).
pub fn encode_batch(points: &[Reading], text: &mut String) -> (Vec<u8>, u64) {
    text.clear();
    let skipped = line_protocol::encode(points, text);
    (
        influx::gzip(text.as_bytes()),
        (points.len() - skipped) as u64,
    )
}

/// The `alarm` points of transitions whose journal entries get the numbers from `first_seq` on.
pub fn events_batch(events: &[AlarmEvent], first_seq: i64, text: &mut String) -> (Vec<u8>, u64) {
    let points: Vec<Reading> = events
        .iter()
        .zip(first_seq..)
        .flat_map(|(e, seq)| alarm_point(e, seq))
        .collect();
    encode_batch(&points, text)
}

/// The `journal_anchor` point of the journal's head at `seq`.
pub fn anchor_batch(gateway: &str, at_ms: i64, seq: i64, hash: &str) -> Vec<u8> {
    let tags = Arc::new(Tags {
        extra: vec![("gateway".to_string(), gateway.to_string())],
        ..Tags::default()
    });
    let point = |name: &str, value: Value| Reading {
        tags: Arc::clone(&tags),
        measurement: Arc::from("journal_anchor"),
        quantity: Arc::from(name),
        value,
        unit: None,
        timestamp_ns: at_ms.saturating_mul(1_000_000),
        quality: Quality::Good,
    };
    let points = [
        point("seq", Value::Int(seq)),
        point("hash", Value::Text(Arc::from(hash))),
    ];
    encode_batch(&points, &mut String::new()).0
}

/// One transition as fields of one `alarm` point (tags park, enterprise, location, device,
/// rule, kind, severity), with its journal sequence number `seq`. Two transitions of one alarm
/// in the same millisecond (raised and chatter-flagged, say) would be one point in InfluxDB,
/// the second overwriting the first, so the sequence number also becomes the timestamp's
/// sub-millisecond part.
pub fn alarm_point(e: &AlarmEvent, seq: i64) -> Vec<Reading> {
    let mut extra = vec![
        ("rule".to_string(), e.rule.to_string()),
        ("severity".to_string(), e.severity.as_str().to_string()),
    ];
    if !e.source.is_empty() {
        extra.push(("source".to_string(), e.source.to_string()));
    }
    extra.sort();
    let tags = Arc::new(Tags {
        park: e.tags.park.clone(),
        enterprise: e.tags.enterprise.clone(),
        location: e.tags.location.clone(),
        device: e.tags.device.clone(),
        kind: e.kind.as_str().to_string(),
        profile: String::new(),
        extra,
    });
    let measurement: Arc<str> = Arc::from("alarm");
    let timestamp_ns = e
        .at_ms
        .saturating_mul(1_000_000)
        .saturating_add(seq.rem_euclid(1_000_000));
    let field = |name: &str, value: Value| Reading {
        tags: Arc::clone(&tags),
        measurement: Arc::clone(&measurement),
        quantity: Arc::from(name),
        value,
        unit: None,
        timestamp_ns,
        quality: Quality::Good,
    };
    let mut fields = vec![
        field("action", Value::Text(Arc::from(e.action.as_str()))),
        field("state", Value::Text(Arc::from(e.state.as_str()))),
        field("message", Value::Text(Arc::from(e.message.as_str()))),
        field("annunciated", Value::Bool(e.annunciated)),
        field("journal_seq", Value::Int(seq)),
    ];
    match &e.value {
        Some(Observed::Number(n)) => fields.push(field("value", Value::Float(*n))),
        Some(Observed::Text(t)) => {
            fields.push(field("value_text", Value::Text(Arc::from(t.as_str()))))
        }
        None => {}
    }
    if let Some(t) = e.threshold {
        fields.push(field("threshold", Value::Float(t)));
    }
    if let Some(op) = &e.operator {
        fields.push(field("operator", Value::Text(Arc::from(op.name.as_str()))));
        if let Some(c) = &op.comment {
            fields.push(field("comment", Value::Text(Arc::from(c.as_str()))));
        }
    }
    fields
}
