//! China Mobile OneNET HTTP push: the URL verification handshake, the NB-IoT suite's envelope
//! and OneNET Studio's, each signed with Base64(MD5(token + nonce + msg)).
//!
//! - URL verification: `GET path?msg=…&nonce=…&signature=…`; answered 200 with `msg` as the
//!   body when the URL-decoded signature verifies.
//! - NB-IoT suite: `{"msg": <object or array>, "msg_signature": "…", "nonce": "…"}`, signed over
//!   the `msg` member's JSON text exactly as it appears in the body (a re-serialisation could
//!   order keys or escape text differently, so the raw text is kept). Data points (`type` 1:
//!   `dev_id`, `ds_id`, `at`, `value`, `imei`) and online/offline messages (`type` 2, `status`).
//! - Studio: `{"msg": "<JSON document as a string>", "signature": "…", "nonce": "…", "time": …,
//!   "id": "…"}`, signed over the string's value. Thing-model messages: `notify` of properties
//!   (`data.params.{identifier: {value, time}}`) or events, and `lifeCycle`; `deviceName` names
//!   the device.
//!
//! Owns: the envelopes and the signature rule. Must not touch: IO, the clock, counters.

use base64::Engine as _;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{id_text, millis, query_param, DeviceMessage, Refusal};

/// Base64(MD5(UTF-8 of token + nonce + msg)), the signature of pushes and URL verification.
pub fn signature(token: &str, nonce: &str, msg: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(token.as_bytes());
    md5.update(nonce.as_bytes());
    md5.update(msg.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(md5.finalize())
}

/// True when `claimed` is the signature of (token, nonce, msg); compared in constant time.
pub fn signature_matches(token: &str, nonce: &str, msg: &str, claimed: &str) -> bool {
    crate::secure::same_secret(&signature(token, nonce, msg), claimed)
}

/// The URL verification handshake: the `msg` to answer with when the query's signature
/// verifies. A Base64 signature has no spaces, so a `+` that arrived unencoded (and so was
/// decoded as a space) is read back as the `+` it was.
pub fn verify_url(token: &str, query: &str) -> Result<String, Refusal> {
    let param = |name| {
        query_param(query, name)
            .ok_or_else(|| Refusal::malformed(format!("URL verification without `{name}`")))
    };
    let msg = param("msg")?;
    let nonce = param("nonce")?;
    let claimed = param("signature")?.replace(' ', "+");
    if signature_matches(token, &nonce, &msg, &claimed) {
        Ok(msg)
    } else {
        Err(Refusal::BadSignature)
    }
}

/// Which of OneNET's envelopes a push came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The NB-IoT suite's: `msg` an object or an array, `msg_signature`.
    NbIot,
    /// OneNET Studio's: `msg` a string holding a JSON document, `signature`.
    Studio,
}

/// Both envelopes' members; the `msg` member borrowed as the exact text it has in the body.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    msg: &'a RawValue,
    #[serde(default)]
    msg_signature: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    nonce: String,
    /// Studio: when the platform sent the push (ms).
    #[serde(default)]
    time: Option<Value>,
}

/// Verifies a push with `token` and returns its style and device messages (none for message
/// types that carry no device data, which are acknowledged and ignored).
pub fn parse_push(
    token: &str,
    body: &[u8],
    received_ms: i64,
) -> Result<(Style, Vec<DeviceMessage>), Refusal> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        Refusal::malformed(format!(
            "not OneNET's envelope {{msg, msg_signature|signature, nonce}}: {e}"
        ))
    })?;
    let raw = envelope.msg.get();
    if raw.starts_with('"') {
        let msg: String =
            serde_json::from_str(raw).map_err(|e| Refusal::malformed(format!("msg: {e}")))?;
        let claimed = envelope
            .signature
            .as_deref()
            .or(envelope.msg_signature.as_deref())
            .ok_or(Refusal::BadSignature)?;
        if !signature_matches(token, &envelope.nonce, &msg, claimed) {
            return Err(Refusal::BadSignature);
        }
        let sent_ms = millis(envelope.time.as_ref()).unwrap_or(received_ms);
        Ok((Style::Studio, studio_messages(&msg, sent_ms)?))
    } else {
        let claimed = envelope
            .msg_signature
            .as_deref()
            .ok_or(Refusal::BadSignature)?;
        if !signature_matches(token, &envelope.nonce, raw, claimed) {
            return Err(Refusal::BadSignature);
        }
        Ok((Style::NbIot, nbiot_messages(raw, received_ms)?))
    }
}

/// The data points of one device in an NB-IoT push, gathered into one document.
struct DataPoints {
    device_id: Option<String>,
    imei: Option<String>,
    latest_at: i64,
    /// `{ds_id: value}`.
    fields: Map<String, Value>,
}

/// NB-IoT suite messages: each device's data points of the push as one document (its latest
/// `at` as the time), and each online/offline message as its own.
fn nbiot_messages(raw: &str, received_ms: i64) -> Result<Vec<DeviceMessage>, Refusal> {
    let msg: Value =
        serde_json::from_str(raw).map_err(|e| Refusal::malformed(format!("msg: {e}")))?;
    let items = match msg {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => return Err(Refusal::malformed("msg is neither an object nor an array")),
    };
    let mut points: Vec<DataPoints> = Vec::new();
    let mut out = Vec::new();
    for item in &items {
        let Value::Object(item) = item else {
            return Err(Refusal::malformed("an element of msg is not an object"));
        };
        let device_id = id_text(item.get("dev_id"));
        let imei = id_text(item.get("imei"));
        if device_id.is_none() && imei.is_none() {
            return Err(Refusal::malformed(
                "a message names no device (`dev_id` or `imei`)",
            ));
        }
        let at = millis(item.get("at")).unwrap_or(received_ms);
        match item.get("type").and_then(Value::as_i64) {
            Some(1) => {
                let Some(ds_id) = item.get("ds_id").and_then(Value::as_str) else {
                    return Err(Refusal::malformed("a data point (type 1) without `ds_id`"));
                };
                let value = item.get("value").cloned().unwrap_or(Value::Null);
                // One device: the same platform id, and no IMEI that says otherwise.
                let same_device = |entry: &&mut DataPoints| {
                    entry.device_id == device_id
                        && (imei.is_none() || entry.imei.is_none() || entry.imei == imei)
                };
                match points.iter_mut().find(same_device) {
                    Some(entry) => {
                        entry.latest_at = entry.latest_at.max(at);
                        if entry.imei.is_none() {
                            entry.imei = imei.clone();
                        }
                        entry.fields.insert(ds_id.to_string(), value);
                    }
                    None => {
                        let mut fields = Map::new();
                        fields.insert(ds_id.to_string(), value);
                        points.push(DataPoints {
                            device_id,
                            imei,
                            latest_at: at,
                            fields,
                        });
                    }
                }
            }
            Some(2) => {
                let online =
                    match item.get("status").and_then(Value::as_i64) {
                        Some(1) => true,
                        Some(0) => false,
                        _ => return Err(Refusal::malformed(
                            "an online/offline message (type 2) whose `status` is neither 1 nor 0",
                        )),
                    };
                let mut fields = Map::new();
                fields.insert("online".into(), Value::Bool(online));
                out.push(DeviceMessage::new("online", device_id, imei, at, fields));
            }
            // Other types (device lifecycle, command answers) carry no readings.
            Some(_) => {}
            None => return Err(Refusal::malformed("a message without a numeric `type`")),
        }
    }
    let mut messages: Vec<DeviceMessage> = points
        .into_iter()
        .map(|p| DeviceMessage::new("data", p.device_id, p.imei, p.latest_at, p.fields))
        .collect();
    messages.append(&mut out);
    Ok(messages)
}

/// A Studio message document: thing-model properties or events of one device, or its life
/// cycle (online, offline).
fn studio_messages(msg: &str, sent_ms: i64) -> Result<Vec<DeviceMessage>, Refusal> {
    let doc: Value = serde_json::from_str(msg)
        .map_err(|e| Refusal::malformed(format!("msg is not a JSON document: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(Refusal::malformed("msg is not a JSON object"));
    };
    let message_type = doc.get("messageType").and_then(Value::as_str).unwrap_or("");
    let device = id_text(doc.get("deviceName"));
    let data = doc.get("data").and_then(Value::as_object);
    match message_type {
        "notify" => {
            let Some(device) = device else {
                return Err(Refusal::malformed("a notify message without `deviceName`"));
            };
            let notify_type = doc.get("notifyType").and_then(Value::as_str).unwrap_or("");
            let Some(params) = data
                .and_then(|d| d.get("params"))
                .and_then(Value::as_object)
            else {
                return Err(Refusal::malformed("a notify message without `data.params`"));
            };
            let mut fields = Map::new();
            let mut latest: Option<i64> = None;
            for (identifier, entry) in params {
                // `{identifier: {value, time}}`; a bare value is taken as it is.
                let (value, time) = match entry {
                    Value::Object(e) => match e.get("value") {
                        Some(value) => (value.clone(), millis(e.get("time"))),
                        None => (entry.clone(), None),
                    },
                    other => (other.clone(), None),
                };
                if let Some(time) = time {
                    latest = Some(latest.map_or(time, |l| l.max(time)));
                }
                if notify_type == "event" {
                    // The event's name, for `state` rules; its output fields under its name.
                    fields.insert("event".into(), Value::String(identifier.clone()));
                }
                fields.insert(identifier.clone(), value);
            }
            let message_type = if notify_type == "event" {
                "event"
            } else {
                "property"
            };
            Ok(vec![DeviceMessage::new(
                message_type,
                Some(device),
                None,
                latest.unwrap_or(sent_ms),
                fields,
            )])
        }
        "lifeCycle" => {
            let status = data.and_then(|d| d.get("status"));
            let online = match status {
                Some(Value::String(s)) if s == "online" => Some(true),
                Some(Value::String(s)) if s == "offline" => Some(false),
                Some(Value::Number(n)) if n.as_i64() == Some(1) => Some(true),
                Some(Value::Number(n)) if n.as_i64() == Some(0) => Some(false),
                _ => None,
            };
            match (online, device) {
                (Some(online), Some(device)) => {
                    let mut fields = Map::new();
                    fields.insert("online".into(), Value::Bool(online));
                    let at = data.and_then(|d| millis(d.get("time"))).unwrap_or(sent_ms);
                    Ok(vec![DeviceMessage::new(
                        "online",
                        Some(device),
                        None,
                        at,
                        fields,
                    )])
                }
                _ => Ok(Vec::new()),
            }
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "pgPushToken0001";
    const RECEIVED_MS: i64 = 1_714_550_500_000;

    /// The known-answer vectors of tests/golden/platforms/vectors.json, written from the
    /// platform's documents by an independent program (tests/interop/iot_platform.py).
    fn vectors(kind: &str) -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/platforms/vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("vectors.json");
        let all: Vec<Value> = serde_json::from_str(&text).expect("vectors are JSON");
        all.into_iter().filter(|v| v["kind"] == kind).collect()
    }

    #[test]
    fn push_vectors_verify_and_forgeries_do_not() {
        let vectors = vectors("onenet_push");
        assert!(vectors.len() >= 3, "{vectors:?}");
        for v in &vectors {
            let name = v["name"].as_str().expect("name");
            let input = &v["inputs"];
            let (token, nonce, msg) = (
                input["token"].as_str().expect("token"),
                input["nonce"].as_str().expect("nonce"),
                input["msg"].as_str().expect("msg"),
            );
            let expected = v["expected"].as_str().expect("expected");
            assert_eq!(signature(token, nonce, msg), expected, "{name}");
            let body = v["body"].as_str().expect("body");
            let (style, messages) = parse_push(token, body.as_bytes(), RECEIVED_MS).expect(name);
            let want = if v["style"] == "studio" {
                Style::Studio
            } else {
                Style::NbIot
            };
            assert_eq!(style, want, "{name}");
            assert!(!messages.is_empty(), "{name}");
            assert_eq!(
                parse_push("another-token", body.as_bytes(), RECEIVED_MS),
                Err(Refusal::BadSignature),
                "{name}: a wrong token"
            );
            // The signed text changed by one character, the signature kept.
            let forged = body.replacen("1714550400000", "1714550400001", 1);
            assert_ne!(forged, body, "{name}");
            assert_eq!(
                parse_push(token, forged.as_bytes(), RECEIVED_MS),
                Err(Refusal::BadSignature),
                "{name}: a changed body"
            );
        }
    }

    #[test]
    fn url_verification_vectors_answer_msg() {
        let vectors = vectors("onenet_url");
        assert!(!vectors.is_empty());
        for v in &vectors {
            let name = v["name"].as_str().expect("name");
            let input = &v["inputs"];
            let token = input["token"].as_str().expect("token");
            let query = v["url_query"].as_str().expect("url_query");
            assert_eq!(
                signature(
                    token,
                    input["nonce"].as_str().expect("nonce"),
                    input["msg"].as_str().expect("msg")
                ),
                v["expected"].as_str().expect("expected"),
                "{name}"
            );
            assert_eq!(
                verify_url(token, query).as_deref(),
                Ok(v["answer"].as_str().expect("answer")),
                "{name}"
            );
            assert_eq!(
                verify_url("another-token", query),
                Err(Refusal::BadSignature),
                "{name}"
            );
        }
        assert!(matches!(
            verify_url(TOKEN, "msg=abc&nonce=12345678"),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn an_unencoded_plus_in_the_url_signature_still_verifies() {
        // Find a nonce whose signature has a `+`, and send it unencoded.
        let (nonce, sig) = (0..1000)
            .map(|i| format!("n{i:07}"))
            .map(|n| {
                let s = signature(TOKEN, &n, "hello");
                (n, s)
            })
            .find(|(_, s)| s.contains('+'))
            .expect("some signature has a +");
        let query = format!("msg=hello&nonce={nonce}&signature={sig}");
        assert_eq!(verify_url(TOKEN, &query).as_deref(), Ok("hello"));
    }

    fn nbiot_body(msg: &str, nonce: &str) -> String {
        let sig = signature(TOKEN, nonce, msg);
        format!(r#"{{"msg":{msg},"msg_signature":"{sig}","nonce":"{nonce}"}}"#)
    }

    #[test]
    fn the_exact_msg_text_is_signed_spacing_and_key_order_included() {
        let msg =
            r#"{ "type": 1, "ds_id": "gas_lel", "value": 12.5, "dev_id": 7, "at": 1714550400000 }"#;
        let (_, messages) =
            parse_push(TOKEN, nbiot_body(msg, "abcdefgh").as_bytes(), RECEIVED_MS).expect("ok");
        assert_eq!(messages[0].document["gas_lel"], 12.5);
        assert_eq!(messages[0].device_id.as_deref(), Some("7"));
    }

    #[test]
    fn data_points_of_one_device_are_one_document_and_online_messages_their_own() {
        let msg = r#"[{"type":1,"dev_id":7,"ds_id":"gas_lel","at":1714550400000,"value":12,"imei":"861"},{"type":1,"dev_id":7,"ds_id":"state","at":1714550401000,"value":"alarm","imei":"861"},{"type":1,"dev_id":8,"ds_id":"gas_lel","at":1714550400000,"value":1},{"type":2,"dev_id":7,"status":0,"login_type":10,"at":1714550402000},{"type":7,"dev_id":7}]"#;
        let (_, messages) =
            parse_push(TOKEN, nbiot_body(msg, "abcdefgh").as_bytes(), RECEIVED_MS).expect("ok");
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert_eq!(messages[0].document["gas_lel"], 12);
        assert_eq!(messages[0].document["state"], "alarm");
        assert_eq!(messages[0].document["ts"], 1_714_550_401_000_i64);
        assert_eq!(messages[0].imei.as_deref(), Some("861"));
        assert_eq!(messages[1].device_id.as_deref(), Some("8"));
        assert_eq!(messages[2].document["online"], false);
        assert_eq!(messages[2].document["message_type"], "online");
    }

    fn studio_body(msg: &str, nonce: &str) -> String {
        let sig = signature(TOKEN, nonce, msg);
        serde_json::json!({"msg": msg, "signature": sig, "nonce": nonce, "time": 1714550409000_i64, "id": "x"}).to_string()
    }

    #[test]
    fn studio_properties_events_and_life_cycle() {
        let msg = r#"{"deviceName":"gas-7","productId":"p","messageType":"notify","notifyType":"property","data":{"id":"1","params":{"gas_lel":{"value":31,"time":1714550400000},"state":{"value":"alarm","time":1714550400500}}}}"#;
        let (style, messages) =
            parse_push(TOKEN, studio_body(msg, "n1").as_bytes(), RECEIVED_MS).expect("ok");
        assert_eq!(style, Style::Studio);
        let m = &messages[0];
        assert_eq!(m.device_id.as_deref(), Some("gas-7"));
        assert_eq!(m.document["gas_lel"], 31);
        assert_eq!(m.document["state"], "alarm");
        assert_eq!(m.document["ts"], 1_714_550_400_500_i64);

        let msg = r#"{"deviceName":"gas-7","messageType":"notify","notifyType":"event","data":{"params":{"gas_alarm":{"value":{"lel":55},"time":1714550400000}}}}"#;
        let (_, messages) =
            parse_push(TOKEN, studio_body(msg, "n2").as_bytes(), RECEIVED_MS).expect("ok");
        assert_eq!(messages[0].document["event"], "gas_alarm");
        assert_eq!(messages[0].document["gas_alarm"]["lel"], 55);

        let msg = r#"{"deviceName":"gas-7","messageType":"lifeCycle","data":{"status":"offline"}}"#;
        let (_, messages) =
            parse_push(TOKEN, studio_body(msg, "n3").as_bytes(), RECEIVED_MS).expect("ok");
        assert_eq!(messages[0].document["online"], false);
        assert_eq!(
            messages[0].document["ts"], 1_714_550_409_000_i64,
            "the push's time"
        );
    }

    #[test]
    fn malformed_envelopes_are_not_signature_failures() {
        for body in [
            "",
            "[]",
            r#"{"msg":{"type":1}}"#,
            r#"{"nonce":"x","msg_signature":"y"}"#,
        ] {
            assert!(
                matches!(
                    parse_push(TOKEN, body.as_bytes(), RECEIVED_MS),
                    Err(Refusal::Malformed(_))
                ),
                "{body}"
            );
        }
        // Signed, but not the platform's message shape.
        let body = nbiot_body(r#""just text""#, "n");
        assert!(parse_push(TOKEN, body.as_bytes(), RECEIVED_MS).is_err());
        let body = nbiot_body(r#"{"type":1,"dev_id":7}"#, "n");
        assert!(matches!(
            parse_push(TOKEN, body.as_bytes(), RECEIVED_MS),
            Err(Refusal::Malformed(_))
        ));
    }
}
