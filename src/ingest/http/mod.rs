//! Pushes of the carrier IoT platforms NB-IoT and 4G detectors report to: China Telecom CTWing
//! (`ctwing`) and China Mobile OneNET (`onenet`). Their envelopes are parsed and verified here,
//! and each device message becomes one flat JSON document (`DeviceMessage`) that a profile's
//! `[payload]` mapping decodes like an MQTT payload (`decode`).
//!
//! Owns: the platforms' push formats and verification rules, and the document's shape (which
//! the `[[http_ingest]]` reference describes to operators). Must not touch: IO of any kind (the
//! web server reads the request, hands the readings downstream and answers), the clock
//! (callers pass the receive time), counters or logging.

pub mod command;
pub mod ctwing;
pub mod onenet;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::decode::payload::{DecodeError, PayloadDecoder};
use crate::model::{Reading, Tags, TimestampNs};

/// Why a push is refused. The web server answers each with its own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The `?token=` of a CTWing push is missing or wrong (403).
    BadToken,
    /// A OneNET signature is missing or does not verify (403).
    BadSignature,
    /// The body (or query) is not the platform's envelope (400); the text says what is wrong.
    Malformed(String),
}

impl Refusal {
    fn malformed(what: impl Into<String>) -> Self {
        Refusal::Malformed(what.into())
    }
}

/// One device's message out of a push, as the document its profile decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceMessage {
    /// The platform's id of the device: CTWing `deviceId`, OneNET NB-IoT `dev_id`, OneNET
    /// Studio `deviceName`.
    pub device_id: Option<String>,
    /// The module's IMEI, when the push carries it.
    pub imei: Option<String>,
    /// `{identifier: value, …, "device_id", "imei", "ts" (ms), "message_type"}`.
    pub document: Map<String, Value>,
}

impl DeviceMessage {
    /// The document for `fields`; the envelope's keys are written last, so a device property
    /// of the same name cannot pass for them.
    fn new(
        message_type: &str,
        device_id: Option<String>,
        imei: Option<String>,
        ts_ms: i64,
        fields: Map<String, Value>,
    ) -> Self {
        let mut document = fields;
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        document.insert("device_id".into(), text(&device_id));
        document.insert("imei".into(), text(&imei));
        document.insert("ts".into(), Value::from(ts_ms));
        document.insert("message_type".into(), Value::from(message_type));
        DeviceMessage {
            device_id,
            imei,
            document,
        }
    }

    /// The ids a `[[devices]]` entry may have for this device, in the order they are looked
    /// up: the platform's device id, then the IMEI.
    pub fn candidate_ids(&self) -> impl Iterator<Item = &str> {
        self.device_id
            .iter()
            .chain(self.imei.iter())
            .map(String::as_str)
    }

    /// How logs and bad-message records name the device.
    pub fn name(&self) -> &str {
        self.candidate_ids().next().unwrap_or("?")
    }

    /// The document as JSON text.
    pub fn document_text(&self) -> Vec<u8> {
        serde_json::to_vec(&self.document).unwrap_or_default()
    }
}

/// Decodes a message's document with a profile's payload mapping, for the device `tags`:
/// readings appended to `out`, field-level problems to `problems` (as for MQTT payloads).
pub fn decode(
    decoder: &PayloadDecoder,
    message: &DeviceMessage,
    tags: &Arc<Tags>,
    received_ns: TimestampNs,
    out: &mut Vec<Reading>,
    problems: &mut Vec<DecodeError>,
) {
    let text = message.document_text();
    match decoder.parse(&text) {
        Ok(parsed) => decoder.readings(&parsed, tags, received_ns, out, problems),
        Err(err) => problems.push(err),
    }
}

/// A device id from a JSON string (not empty, not the platforms' `"undefined"`) or integer.
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() && s != "undefined" => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Milliseconds since the epoch from a JSON integer (or a string of one, which some platform
/// versions send).
fn millis(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The value of query parameter `name` (the first one), decoded as an HTML form would be:
/// `%XX` escapes, and `+` for a space.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_form_decoded() {
        let q = "msg=a%20b&nonce=x+y&signature=ab%2Bc%2F%3D&empty";
        assert_eq!(query_param(q, "msg").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "nonce").as_deref(), Some("x y"));
        assert_eq!(query_param(q, "signature").as_deref(), Some("ab+c/="));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
    }

    #[test]
    fn envelope_keys_win_over_device_properties_of_the_same_name() {
        let mut fields = Map::new();
        fields.insert("ts".into(), Value::from("device's own"));
        fields.insert("smoke".into(), Value::from(1));
        let m = DeviceMessage::new("x", Some("d1".into()), None, 1_700_000_000_000, fields);
        assert_eq!(m.document["ts"], Value::from(1_700_000_000_000_i64));
        assert_eq!(m.document["smoke"], Value::from(1));
        assert_eq!(m.document["imei"], Value::Null);
        assert_eq!(m.candidate_ids().collect::<Vec<_>>(), ["d1"]);
    }

    #[test]
    fn ids_are_text_or_integers_and_never_the_platforms_undefined() {
        assert_eq!(
            id_text(Some(&Value::from(2016617))).as_deref(),
            Some("2016617")
        );
        assert_eq!(
            id_text(Some(&Value::from("860000000000001"))).as_deref(),
            Some("860000000000001")
        );
        assert_eq!(id_text(Some(&Value::from("undefined"))), None);
        assert_eq!(id_text(Some(&Value::from(""))), None);
        assert_eq!(id_text(Some(&Value::from(1.5))), None);
        assert_eq!(id_text(None), None);
    }
}
