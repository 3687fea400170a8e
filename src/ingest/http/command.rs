//! Commands to devices through the carrier platforms' APIs, as bytes: CTWing's CreateCommand
//! (`POST /aep_device_command/command`, version 20190712225145) with its request signature,
//! OneNET Studio's `thingmodel/call-service` with its `authorization` token, the command bodies
//! and how each platform's answer is read.
//!
//! - CTWing signature: Base64(HMAC-SHA1(app secret, "application:" key "\n" "timestamp:" ms
//!   "\n", then `name:value\n` for the `MasterKey` header and every query parameter, names in
//!   Java `String` order (UTF-16 code units, so upper case first), then the body bytes and
//!   "\n" when there is a body)). The body signed is the body sent, byte for byte.
//! - OneNET token: `version=…&res=…&et=…&method=…&sign=…`, each value URL-encoded, with sign =
//!   Base64(HMAC-method(Base64-decoded access key, et "\n" method "\n" res "\n" version)).
//!
//! Owns: the signing rules, the bodies and the reading of answers (the platform stand-in
//! tests/interop/iot_platform.py and tests/golden/platforms/vectors.json are the second
//! opinion). Must not touch: IO, the clock (callers pass the time), counters or logging; the
//! sending and its retries are `ingest::platform`'s.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Map, Value};

/// CreateCommand's path under the CTWing API gateway.
pub const CTWING_COMMAND_PATH: &str = "/aep_device_command/command";
/// CreateCommand's API version (the `version` header).
pub const CTWING_COMMAND_VERSION: &str = "20190712225145";
/// OneNET Studio's service call, under the application API.
pub const ONENET_CALL_SERVICE_PATH: &str = "/thingmodel/call-service";
/// The token version the Studio application API takes.
pub const ONENET_TOKEN_VERSION: &str = "2022-05-01";
/// How long a OneNET token is valid, in seconds: long enough for a slow request and its
/// retries, short enough that a leaked header soon expires.
pub const ONENET_TOKEN_LIFETIME_S: i64 = 3600;

/// What a command asks of a device (the model's, which acknowledgements carry).
pub use crate::model::DeviceCommand;

/// Why a command was not built or not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The platform refused the credentials (CTWing 401/403, OneNET 10403): a wrong secret,
    /// key or product; trying again cannot help.
    #[error("the platform refused the credentials (HTTP {status}, code {code}: {message})")]
    AuthFailed {
        status: u16,
        code: i64,
        message: String,
    },
    /// The platform understood the request and refused the command (a non-zero `code`:
    /// device not online, bad parameters, ...).
    #[error("the platform refused the command (HTTP {status}, code {code}: {message})")]
    Rejected {
        status: u16,
        code: i64,
        message: String,
    },
    /// No answer after every try: timeouts, connection errors, HTTP 5xx.
    #[error("the platform did not answer: {0}")]
    Unreachable(String),
    /// The command could not be built: no secret, an access key that is not Base64, bytes
    /// for a OneNET device.
    #[error("the command cannot be sent: {0}")]
    NotSent(String),
}

impl CommandError {
    /// True for failures that another try may cure.
    pub fn is_transient(&self) -> bool {
        matches!(self, CommandError::Unreachable(_))
    }
}

// --- CTWing ------------------------------------------------------------------------------------

/// The CTWing string to sign: `application`, `timestamp`, the parameters by name in Java
/// `String` order (a repeated name keeps its last value), then the body and a newline when
/// there is a body.
pub fn ctwing_string_to_sign(
    app_key: &str,
    timestamp_ms: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    // Java's TreeSet<String> compares UTF-16 code units; for names outside the BMP that is
    // not the order of `str`'s bytes, so the key is the UTF-16 form.
    let mut sorted: BTreeMap<Vec<u16>, (&str, &str)> = BTreeMap::new();
    for (name, value) in params {
        sorted.insert(name.encode_utf16().collect(), (name, value));
    }
    let mut text = format!("application:{app_key}\ntimestamp:{timestamp_ms}\n");
    for (name, value) in sorted.values() {
        text.push_str(name);
        text.push(':');
        text.push_str(value);
        text.push('\n');
    }
    let mut out = text.into_bytes();
    if !body.is_empty() {
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}

/// The signed parameters of a request: its query's (form-decoded) and the `MasterKey` header,
/// when the API takes one.
pub fn ctwing_sign_params(query: &str, master_key: Option<&str>) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (super::form_decode(name), super::form_decode(value))
        })
        .collect();
    if let Some(key) = master_key {
        params.push(("MasterKey".into(), key.into()));
    }
    params
}

/// Base64(HMAC-SHA1(secret, message)).
pub fn ctwing_signature(secret: &str, message: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The headers of a CreateCommand request with `body`, signed at `timestamp_ms`.
pub fn ctwing_command_headers(
    app_key: &str,
    secret: &str,
    master_key: &str,
    timestamp_ms: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let timestamp = timestamp_ms.to_string();
    let params = ctwing_sign_params("", Some(master_key));
    let signature = ctwing_signature(
        secret,
        &ctwing_string_to_sign(app_key, &timestamp, &params, body),
    );
    vec![
        ("application", app_key.to_string()),
        ("timestamp", timestamp),
        ("version", CTWING_COMMAND_VERSION.to_string()),
        ("MasterKey", master_key.to_string()),
        ("signature", signature),
        (
            "Content-Type",
            "application/json; charset=UTF-8".to_string(),
        ),
    ]
}

#[derive(Serialize)]
#[serde(untagged)]
enum CtwingContent<'a> {
    Transparent {
        #[serde(rename = "dataType")]
        data_type: u8,
        payload: String,
    },
    Service {
        #[serde(rename = "serviceIdentifier")]
        service_identifier: &'a str,
        params: &'a Map<String, Value>,
    },
}

/// CreateCommand's body, in the order of the API document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CtwingCommand<'a> {
    content: CtwingContent<'a>,
    device_id: &'a str,
    operator: &'a str,
    product_id: u64,
    ttl: u32,
    /// 1: a command to one device.
    level: u8,
}

/// The CreateCommand body for `command` to `device_id`.
pub fn ctwing_command_body(
    command: &DeviceCommand,
    device_id: &str,
    operator: &str,
    product_id: u64,
    ttl_s: u32,
) -> Vec<u8> {
    let content = match command {
        DeviceCommand::Bytes(bytes) => CtwingContent::Transparent {
            data_type: 2,
            payload: bytes.iter().map(|b| format!("{b:02X}")).collect(),
        },
        DeviceCommand::Service { identifier, params } => CtwingContent::Service {
            service_identifier: identifier,
            params,
        },
    };
    let body = CtwingCommand {
        content,
        device_id,
        operator,
        product_id,
        ttl: ttl_s,
        level: 1,
    };
    // Serialising plain structs, strings and JSON values cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

// --- OneNET ------------------------------------------------------------------------------------

/// The OneNET token's string to sign: et, method, res and version, one a line.
pub fn onenet_token_string(et: i64, method: &str, res: &str, version: &str) -> String {
    format!("{et}\n{method}\n{res}\n{version}")
}

/// Base64(HMAC-`method`(Base64-decoded access key, `message`)); `method` is `md5`, `sha1` or
/// `sha256`.
pub fn onenet_sign(access_key: &str, method: &str, message: &str) -> Result<String, CommandError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(access_key.trim())
        .map_err(|_| CommandError::NotSent("the OneNET access key is not Base64".into()))?;
    fn mac<M: Mac + KeyInit>(key: &[u8], message: &str) -> Vec<u8> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let digest = match method {
        "md5" => mac::<Hmac<md5::Md5>>(&key, message),
        "sha1" => mac::<Hmac<sha1::Sha1>>(&key, message),
        "sha256" => mac::<Hmac<sha2::Sha256>>(&key, message),
        other => {
            return Err(CommandError::NotSent(format!(
                "unknown token method `{other}`"
            )))
        }
    };
    Ok(b64.encode(digest))
}

/// Every byte but letters, digits and `-_.~` escaped, as the token's values must be (a raw
/// `+` in the sign would be read as a space by the platform).
const TOKEN_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The `authorization` header value for `res` (`products/{id}`), valid until `et` (Unix
/// seconds).
pub fn onenet_authorization(
    access_key: &str,
    version: &str,
    res: &str,
    et: i64,
    method: &str,
) -> Result<String, CommandError> {
    let sign = onenet_sign(
        access_key,
        method,
        &onenet_token_string(et, method, res, version),
    )?;
    let q = |v: &str| percent_encoding::utf8_percent_encode(v, TOKEN_ESCAPED).to_string();
    Ok(format!(
        "version={}&res={}&et={et}&method={}&sign={}",
        q(version),
        q(res),
        q(method),
        q(&sign)
    ))
}

/// The `call-service` body for `command` to the device `device_name` of `product_id`.
pub fn onenet_call_service_body(
    command: &DeviceCommand,
    product_id: &str,
    device_name: &str,
) -> Result<Vec<u8>, CommandError> {
    let DeviceCommand::Service { identifier, params } = command else {
        return Err(CommandError::NotSent(
            "OneNET Studio takes service calls, not raw bytes".into(),
        ));
    };
    let body = serde_json::json!({
        "product_id": product_id,
        "device_name": device_name,
        "identifier": identifier,
        "params": params,
    });
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

// --- acknowledgements --------------------------------------------------------------------------

/// The acknowledgement a device's message asks for through endpoint `endpoint`'s platform API:
/// when its `ack.quantity` is one of `ack.states` and the profile has an `[ack] command`, that
/// command to `device_id` with `{device}`, `{event}` and `{ts}` (`now_s`) filled into its text
/// parameters (a parameter that is exactly `{ts}` becomes a number).
pub fn platform_ack(
    endpoint: &str,
    ack: &crate::config::DeviceAckConfig,
    device_id: &str,
    readings: &[crate::model::Reading],
    now_s: i64,
) -> Option<crate::model::DeviceAck> {
    use crate::config::CommandParam;
    let config = ack.command.as_ref()?;
    let state = readings.iter().find_map(|r| match &r.value {
        crate::model::Value::Text(t) if *r.quantity == *ack.quantity => {
            ack.states.iter().any(|s| **s == **t).then_some(t)
        }
        _ => None,
    })?;
    let command = match (&config.service, &config.hex) {
        (Some(service), None) => {
            let fill = |text: &str| {
                text.replace("{device}", device_id)
                    .replace("{event}", state)
                    .replace("{ts}", &now_s.to_string())
            };
            let params = config
                .params
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        CommandParam::Text(t) if t == "{ts}" => Value::from(now_s),
                        CommandParam::Text(t) => Value::String(fill(t)),
                        CommandParam::Int(n) => Value::from(*n),
                        CommandParam::Float(x) => Value::from(*x),
                        CommandParam::Bool(b) => Value::from(*b),
                    };
                    (name.clone(), value)
                })
                .collect();
            DeviceCommand::Service {
                identifier: service.clone(),
                params,
            }
        }
        (None, Some(_)) => DeviceCommand::Bytes(config.hex_bytes()?),
        // Refused when the profile was loaded.
        _ => return None,
    };
    Some(crate::model::DeviceAck::Platform {
        endpoint: endpoint.to_string(),
        device_id: device_id.to_string(),
        command,
    })
}

// --- answers -----------------------------------------------------------------------------------

/// Which platform answered, for reading its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPlatform {
    Ctwing,
    Onenet,
}

/// OneNET's code for an authorization it refuses.
const ONENET_AUTH_FAILED: i64 = 10403;

/// Reads an answer: `Ok` with the platform's id of the command (CTWing `result.commandId`,
/// OneNET `request_id`) when it took it, else why not. An HTTP 5xx is `Unreachable` (worth
/// another try); any other answer without `code` 0 is a refusal.
pub fn read_answer(
    platform: ApiPlatform,
    status: u16,
    body: &[u8],
) -> Result<Option<String>, CommandError> {
    if status >= 500 {
        return Err(CommandError::Unreachable(format!("HTTP {status}")));
    }
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let code = doc.as_ref().and_then(|d| d.get("code")).and_then(|c| {
        c.as_i64()
            .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
    });
    let message = doc
        .as_ref()
        .and_then(|d| d.get("msg"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect::<String>();
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if status == 200 && code == Some(0) {
        let id = match platform {
            ApiPlatform::Ctwing => text(doc.as_ref().and_then(|d| d.pointer("/result/commandId"))),
            ApiPlatform::Onenet => text(doc.as_ref().and_then(|d| d.get("request_id"))),
        };
        return Ok(id);
    }
    let code = code.unwrap_or(-1);
    let auth = match platform {
        ApiPlatform::Ctwing => matches!(status, 401 | 403),
        ApiPlatform::Onenet => status == 401 || status == 403 || code == ONENET_AUTH_FAILED,
    };
    if auth {
        Err(CommandError::AuthFailed {
            status,
            code,
            message,
        })
    } else {
        Err(CommandError::Rejected {
            status,
            code,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vectors shared with the platform stand-in.
    fn vectors(kind: &str) -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/platforms/vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("vectors.json");
        let all: Vec<Value> = serde_json::from_str(&text).expect("vectors");
        let found: Vec<Value> = all.into_iter().filter(|v| v["kind"] == kind).collect();
        assert!(!found.is_empty(), "no {kind} vectors");
        found
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
    }

    #[test]
    fn ctwing_signatures_reproduce_the_vectors() {
        for v in vectors("ctwing_api") {
            let inputs = &v["inputs"];
            let body = inputs["body"].as_str().unwrap_or("").as_bytes();
            let params = ctwing_sign_params(s(inputs, "query"), inputs["master_key"].as_str());
            let sts =
                ctwing_string_to_sign(s(inputs, "app_key"), s(inputs, "timestamp"), &params, body);
            let name = s(&v, "name");
            assert_eq!(
                String::from_utf8_lossy(&sts),
                s(&v, "string_to_sign"),
                "{name}"
            );
            assert_eq!(
                ctwing_signature(s(inputs, "secret"), &sts),
                s(&v, "expected"),
                "{name}"
            );
        }
    }

    #[test]
    fn ctwing_command_bodies_and_headers_are_the_vectors() {
        let transparent = vectors("ctwing_api")
            .into_iter()
            .find(|v| v["name"] == "ctwing_command_post_transparent")
            .expect("vector");
        let inputs = &transparent["inputs"];
        let body = ctwing_command_body(
            &DeviceCommand::Bytes(vec![0x01, 0x02, 0xA0, 0xFF]),
            "8a3c0f1e2b4d4c6e9f0a1b2c3d4e5f60",
            "parkguard",
            15000001,
            7200,
        );
        assert_eq!(String::from_utf8_lossy(&body), s(inputs, "body"));
        let headers = ctwing_command_headers(
            "pgAppKey0001",
            "pgSecret0001",
            s(inputs, "master_key"),
            1714550400000,
            &body,
        );
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("signature"), Some(s(&transparent, "expected")));
        assert_eq!(get("timestamp"), Some("1714550400000"));
        assert_eq!(get("version"), Some(CTWING_COMMAND_VERSION));
        assert_eq!(get("MasterKey"), inputs["master_key"].as_str());

        let thing = vectors("ctwing_api")
            .into_iter()
            .find(|v| v["name"] == "ctwing_command_post_thing_model_utf8")
            .expect("vector");
        let mut params = Map::new();
        params.insert("silence".into(), Value::from(1));
        params.insert("zone".into(), Value::from(3));
        let body = ctwing_command_body(
            &DeviceCommand::Service {
                identifier: "alarm_silence".into(),
                params,
            },
            "8a3c0f1e2b4d4c6e9f0a1b2c3d4e5f60",
            "停车场网关",
            15000001,
            0,
        );
        // The same document; its `params` keys come out sorted, so the bytes differ from the
        // vector's, and the signature is over whatever is sent.
        let sent: Value = serde_json::from_slice(&body).expect("json");
        let want: Value = serde_json::from_str(s(&thing["inputs"], "body")).expect("json");
        assert_eq!(sent, want);
    }

    #[test]
    fn java_string_order_puts_upper_case_first() {
        let params = vec![
            ("productId".to_string(), "1".to_string()),
            ("deviceId".to_string(), "d".to_string()),
            ("MasterKey".to_string(), "m".to_string()),
            ("deviceId".to_string(), "last".to_string()),
        ];
        let sts = ctwing_string_to_sign("k", "1", &params, b"");
        assert_eq!(
            String::from_utf8_lossy(&sts),
            "application:k\ntimestamp:1\nMasterKey:m\ndeviceId:last\nproductId:1\n"
        );
    }

    #[test]
    fn onenet_tokens_reproduce_the_vectors() {
        for v in vectors("onenet_token") {
            let inputs = &v["inputs"];
            let et = inputs["et"].as_i64().expect("et");
            let (version, res, method) =
                (s(inputs, "version"), s(inputs, "res"), s(inputs, "method"));
            let name = s(&v, "name");
            let sts = onenet_token_string(et, method, res, version);
            assert_eq!(sts, s(&v, "string_to_sign"), "{name}");
            assert_eq!(
                onenet_sign(s(inputs, "access_key"), method, &sts).as_deref(),
                Ok(s(&v, "expected")),
                "{name}"
            );
            assert_eq!(
                onenet_authorization(s(inputs, "access_key"), version, res, et, method).as_deref(),
                Ok(s(&v, "authorization")),
                "{name}"
            );
        }
        assert!(matches!(
            onenet_sign("not base64!", "sha1", "x"),
            Err(CommandError::NotSent(_))
        ));
    }

    #[test]
    fn onenet_takes_service_calls_only() {
        let call = DeviceCommand::Service {
            identifier: "alarm_ack".into(),
            params: Map::new(),
        };
        let body = onenet_call_service_body(&call, "pgPid0001", "gas-1").expect("body");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            doc,
            serde_json::json!({"product_id": "pgPid0001", "device_name": "gas-1",
                               "identifier": "alarm_ack", "params": {}})
        );
        assert!(onenet_call_service_body(&DeviceCommand::Bytes(vec![1]), "p", "d").is_err());
    }

    fn ack_config(text: &str) -> crate::config::DeviceAckConfig {
        toml::from_str(text).expect("ack")
    }

    fn event(state: &str) -> Vec<crate::model::Reading> {
        vec![crate::model::Reading {
            tags: std::sync::Arc::new(crate::model::Tags::default()),
            measurement: "smoke".into(),
            quantity: "event".into(),
            value: crate::model::Value::Text(state.into()),
            unit: None,
            timestamp_ns: 0,
            quality: crate::model::Quality::Good,
        }]
    }

    #[test]
    fn acknowledgements_fill_the_profiles_command_for_the_states_named() {
        let ack = ack_config(
            r#"quantity = "event"
            states = ["alarm"]
            command = { service = "alarm_ack", params = { event = "{event}", dev = "{device}", ts = "{ts}", at = "t={ts}", n = 1, on = true } }"#,
        );
        let sent = platform_ack("ct", &ack, "dev-9", &event("alarm"), 1_700_000_000);
        let Some(crate::model::DeviceAck::Platform {
            endpoint,
            device_id,
            command: DeviceCommand::Service { identifier, params },
        }) = sent
        else {
            panic!("{sent:?}");
        };
        assert_eq!((endpoint.as_str(), device_id.as_str()), ("ct", "dev-9"));
        assert_eq!(identifier, "alarm_ack");
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"event": "alarm", "dev": "dev-9", "ts": 1_700_000_000_i64,
                               "at": "t=1700000000", "n": 1, "on": true})
        );
        assert_eq!(platform_ack("ct", &ack, "dev-9", &event("normal"), 0), None);
        let mqtt_only = ack_config(
            r#"quantity = "event"
            states = ["alarm"]
            topic = "t"
            payload = "p""#,
        );
        assert_eq!(
            platform_ack("ct", &mqtt_only, "d", &event("alarm"), 0),
            None
        );
        let bytes = ack_config(
            r#"quantity = "event"
            states = ["alarm"]
            command = { hex = "a5010F" }"#,
        );
        assert!(matches!(
            platform_ack("ct", &bytes, "d", &event("alarm"), 0),
            Some(crate::model::DeviceAck::Platform { command: DeviceCommand::Bytes(b), .. })
                if b == [0xA5, 0x01, 0x0F]
        ));
    }

    #[test]
    fn answers_are_read_by_code_and_status() {
        let ok = br#"{"code":0,"msg":"ok","result":{"commandId":"1001"}}"#;
        assert_eq!(
            read_answer(ApiPlatform::Ctwing, 200, ok),
            Ok(Some("1001".into()))
        );
        let failed = r#"{"code":-1,"msg":"指令下发失败","result":null}"#.as_bytes();
        assert!(matches!(
            read_answer(ApiPlatform::Ctwing, 200, failed),
            Err(CommandError::Rejected { code: -1, .. })
        ));
        let unauthorized = br#"{"code":401,"msg":"Unauthorized","result":null}"#;
        assert!(matches!(
            read_answer(ApiPlatform::Ctwing, 401, unauthorized),
            Err(CommandError::AuthFailed { status: 401, .. })
        ));
        assert!(matches!(
            read_answer(ApiPlatform::Ctwing, 503, b"busy"),
            Err(CommandError::Unreachable(_))
        ));
        let auth = br#"{"code":10403,"msg":"authentication failed","data":null}"#;
        assert!(matches!(
            read_answer(ApiPlatform::Onenet, 200, auth),
            Err(CommandError::AuthFailed { code: 10403, .. })
        ));
        let took = br#"{"code":0,"data":{},"msg":"succ","request_id":"ab12"}"#;
        assert_eq!(
            read_answer(ApiPlatform::Onenet, 200, took),
            Ok(Some("ab12".into()))
        );
        // A 200 that is not the platform's answer is no success.
        assert!(matches!(
            read_answer(ApiPlatform::Onenet, 200, b"<html>"),
            Err(CommandError::Rejected { code: -1, .. })
        ));
    }
}
