//! China Telecom CTWing (AEP) subscription pushes: `POST` of one JSON object per device message
//! (`dataReport`, `eventReport`, `deviceOnlineOfflineReport`), answered 200 or retried by the
//! platform (at most 3 times). CTWing does not sign pushes, so the subscription URL carries
//! parkguard's own secret as `?token=`, compared in constant time.
//!
//! Owns: the push format and the token check. Must not touch: IO, the clock, counters.

use serde_json::{Map, Value};

use super::{id_text, millis, query_param, DeviceMessage, Refusal};

/// `Ok` when the request's query carries `token=<expected>`.
pub fn check_token(expected: &str, query: Option<&str>) -> Result<(), Refusal> {
    let given = query.and_then(|q| query_param(q, "token"));
    match given {
        Some(given) if crate::secure::same_secret(&given, expected) => Ok(()),
        _ => Err(Refusal::BadToken),
    }
}

/// The device messages of a push body: one, or none for message types that carry no device
/// data (command responses and the like, which are acknowledged and ignored).
pub fn parse_push(body: &[u8], received_ms: i64) -> Result<Vec<DeviceMessage>, Refusal> {
    let push: Value =
        serde_json::from_slice(body).map_err(|e| Refusal::malformed(format!("not JSON: {e}")))?;
    let Value::Object(push) = push else {
        return Err(Refusal::malformed("a CTWing push is a JSON object"));
    };
    let Some(message_type) = push.get("messageType").and_then(Value::as_str) else {
        return Err(Refusal::malformed("no `messageType`"));
    };
    let device_id = id_text(push.get("deviceId"));
    let imei = id_text(push.get("IMEI"));
    if device_id.is_none() && imei.is_none() {
        return Err(Refusal::malformed(
            "neither `deviceId` nor `IMEI` names the device",
        ));
    }
    let ts_ms = millis(push.get("timestamp")).unwrap_or(received_ms);
    let mut fields = Map::new();
    match message_type {
        "dataReport" => {
            let Some(Value::Object(payload)) = push.get("payload") else {
                return Err(Refusal::malformed(
                    "a dataReport without a `payload` object",
                ));
            };
            match payload.get("serviceData") {
                // Thing-model products with services: the service's properties.
                Some(Value::Object(service)) => {
                    fields.extend(service.clone());
                    if let Some(id) = payload.get("serviceId") {
                        fields.insert("serviceId".into(), id.clone());
                    }
                }
                // Transparent products (`APPdata`, Base64 of the device's bytes) and plain
                // thing-model properties alike: the payload's members as they are.
                _ => fields.extend(payload.clone()),
            }
        }
        "eventReport" => {
            if let Some(Value::Object(content)) = push.get("eventContent") {
                fields.extend(content.clone());
            }
            if let Some(event_type) = push.get("eventType") {
                fields.insert("eventType".into(), event_type.clone());
            }
        }
        "deviceOnlineOfflineReport" => {
            let online = match push.get("eventType").and_then(Value::as_i64) {
                Some(1) => true,
                Some(0) => false,
                _ => return Err(Refusal::malformed(
                    "deviceOnlineOfflineReport: `eventType` is neither 1 (online) nor 0 (offline)",
                )),
            };
            fields.insert("online".into(), Value::Bool(online));
        }
        _ => return Ok(Vec::new()),
    }
    Ok(vec![DeviceMessage::new(
        message_type,
        device_id,
        imei,
        ts_ms,
        fields,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED_MS: i64 = 1_714_550_500_000;

    #[test]
    fn the_token_must_match_exactly() {
        assert_eq!(check_token("s3cret", Some("token=s3cret")), Ok(()));
        assert_eq!(check_token("s3cret", Some("a=1&token=s3cret")), Ok(()));
        assert_eq!(check_token("a b", Some("token=a+b")), Ok(()));
        for bad in [
            None,
            Some(""),
            Some("token="),
            Some("token=s3cre"),
            Some("tok=s3cret"),
        ] {
            assert_eq!(
                check_token("s3cret", bad),
                Err(Refusal::BadToken),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_thing_model_data_report_becomes_its_properties() {
        let body = br#"{"upPacketSN":-1,"upDataSN":-1,"topic":"v1/up/ad","timestamp":1714550400000,"tenantId":"2000000001","serviceId":"","protocol":"lwm2m","productId":"15000001","payload":{"smoke_state":1,"battery_pct":87},"messageType":"dataReport","deviceType":"","deviceId":"15000001860000000000001","assocAssetId":"","IMSI":"undefined","IMEI":"860000000000001"}"#;
        let messages = parse_push(body, RECEIVED_MS).expect("parsed");
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!(m.device_id.as_deref(), Some("15000001860000000000001"));
        assert_eq!(m.imei.as_deref(), Some("860000000000001"));
        assert_eq!(m.document["smoke_state"], 1);
        assert_eq!(m.document["battery_pct"], 87);
        assert_eq!(m.document["ts"], 1_714_550_400_000_i64);
        assert_eq!(m.document["message_type"], "dataReport");
    }

    #[test]
    fn service_data_and_transparent_bytes_are_passed_on() {
        let body = br#"{"messageType":"dataReport","deviceId":"d1","payload":{"serviceId":"smoke","serviceData":{"alarm":true}}}"#;
        let m = &parse_push(body, RECEIVED_MS).expect("parsed")[0];
        assert_eq!(m.document["alarm"], true);
        assert_eq!(m.document["serviceId"], "smoke");
        assert_eq!(
            m.document["ts"], RECEIVED_MS,
            "no timestamp: the receive time"
        );
        let body =
            br#"{"messageType":"dataReport","deviceId":"d1","payload":{"APPdata":"AQKg/w=="}}"#;
        let m = &parse_push(body, RECEIVED_MS).expect("parsed")[0];
        assert_eq!(m.document["APPdata"], "AQKg/w==");
    }

    #[test]
    fn events_and_online_reports() {
        let body = br#"{"timestamp":1714550400000,"messageType":"eventReport","eventType":2,"eventContent":{"alarm_type":"smoke"},"deviceSn":"","deviceId":"d1","IMSI":"undefined","IMEI":""}"#;
        let m = &parse_push(body, RECEIVED_MS).expect("parsed")[0];
        assert_eq!(m.document["alarm_type"], "smoke");
        assert_eq!(m.document["eventType"], 2);
        assert_eq!(m.imei, None, "an empty IMEI is no IMEI");
        let body = br#"{"timestamp":1714550400000,"messageType":"deviceOnlineOfflineReport","iccid":"undefined","eventType":0,"deviceId":"d1"}"#;
        let m = &parse_push(body, RECEIVED_MS).expect("parsed")[0];
        assert_eq!(m.document["online"], false);
        let body = br#"{"messageType":"deviceOnlineOfflineReport","eventType":7,"deviceId":"d1"}"#;
        assert!(matches!(
            parse_push(body, RECEIVED_MS),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn other_message_types_are_acknowledged_without_messages() {
        let body = br#"{"messageType":"commandResponse","deviceId":"d1","result":{}}"#;
        assert_eq!(parse_push(body, RECEIVED_MS), Ok(Vec::new()));
    }

    #[test]
    fn malformed_pushes_say_why() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"deviceId":"d1"}"#,
            br#"{"messageType":"dataReport","payload":{}}"#,
            br#"{"messageType":"dataReport","deviceId":"d1","payload":"x"}"#,
        ] {
            assert!(
                matches!(parse_push(body, RECEIVED_MS), Err(Refusal::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
