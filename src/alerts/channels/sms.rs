//! SMS and voice calls through the Chinese cloud providers, one delivery per recipient's
//! mobile: Aliyun SMS (`SendSms`) and voice notifications (`SingleCallByTts`) with Aliyun's RPC
//! signature (HMAC-SHA1 over the sorted, percent-encoded parameters), and Tencent Cloud SMS
//! (`SendSms`) with its v3 signature (TC3-HMAC-SHA256). Building and signing requests is pure
//! (`aliyun_request`, `tencent_request`); the notifier only sends and judges the answer.

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::Digest;

use super::http::hmac_sha256;
use super::*;
use crate::config::alerts::TemplateParam;
use crate::model::CivilTime;

type HmacSha1 = Hmac<Sha1>;

const ALIYUN_SMS: &str = "https://dysmsapi.aliyuncs.com/";
const ALIYUN_VOICE: &str = "https://dyvmsapi.aliyuncs.com/";
const TENCENT_SMS: &str = "https://sms.tencentcloudapi.com/";

/// RFC 3986 unreserved characters stay; everything else is `%XX` (upper case), as Aliyun's
/// signature wants (a space is `%20`, `*` is `%2A`, `~` stays).
const ALIYUN_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn aliyun_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, ALIYUN_ESCAPED).to_string()
}

/// Aliyun's RPC signature of `params` (without `Signature`) for `method`: Base64 of
/// HMAC-SHA1, keyed with the secret and `&`, of `METHOD&%2F&` and the percent-encoded,
/// sorted, percent-encoded `name=value` pairs joined by `&`.
pub fn aliyun_signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let canonical = params
        .iter()
        .map(|(k, v)| format!("{}={}", aliyun_encode(k), aliyun_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!(
        "{method}&{}&{}",
        aliyun_encode("/"),
        aliyun_encode(&canonical)
    );
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha1::new_from_slice(format!("{secret}&").as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn iso_utc(at_ms: i64) -> String {
    let t = CivilTime::at(at_ms, 0);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// What a channel needs to build its requests.
#[derive(Debug, Clone)]
pub struct CloudChannel {
    pub kind: ChannelType,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub sign_name: String,
    pub template: String,
    pub params: Vec<TemplateParam>,
    pub region: String,
    pub app_id: String,
    pub called_show_number: Option<String>,
    pub play_times: u8,
}

impl CloudChannel {
    pub fn from_config(channel: &ChannelConfig) -> CloudChannel {
        let (endpoint, region) = match channel.kind {
            ChannelType::TencentSms => (TENCENT_SMS, "ap-guangzhou"),
            ChannelType::AliyunVoice => (ALIYUN_VOICE, "cn-hangzhou"),
            _ => (ALIYUN_SMS, "cn-hangzhou"),
        };
        CloudChannel {
            kind: channel.kind,
            endpoint: channel
                .endpoint
                .clone()
                .unwrap_or_else(|| endpoint.to_string()),
            key_id: channel.access_key_id.clone().unwrap_or_default(),
            secret: channel
                .secret
                .as_ref()
                .and_then(crate::config::Secret::value)
                .unwrap_or_default()
                .to_string(),
            sign_name: channel.sign_name.clone().unwrap_or_default(),
            template: channel.template.clone().unwrap_or_default(),
            params: channel.template_params.clone(),
            region: channel.region.clone().unwrap_or_else(|| region.to_string()),
            app_id: channel.sms_app_id.clone().unwrap_or_default(),
            called_show_number: channel.called_show_number.clone(),
            play_times: channel.play_times,
        }
    }
}

/// The number as the provider wants it: Aliyun mainland numbers without `+86`, Tencent in
/// E.164.
fn number_for(kind: ChannelType, mobile: &str) -> String {
    let digits: String = mobile
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let national = digits
        .strip_prefix("+86")
        .or_else(|| digits.strip_prefix("0086"))
        .unwrap_or(&digits);
    match kind {
        ChannelType::TencentSms if digits.starts_with('+') => digits.clone(),
        ChannelType::TencentSms => format!("+86{national}"),
        _ => national.to_string(),
    }
}

/// The notice an SMS or call is about: a digest is told by its most urgent notice.
fn lead(batch: &Batch) -> Option<&Notice> {
    batch
        .notices
        .iter()
        .find(|n| n.urgent())
        .or(batch.notices.first())
}

/// Whether a call is made for this event: only for what needs someone now.
pub fn calls_for(event: &str) -> bool {
    matches!(
        event,
        "raised" | "escalated" | "reannunciated" | "fire_confirmed" | "unacknowledged" | "reminder"
    )
}

/// The template's variables for `notice`, by name, in the channel's order.
fn values(
    channel: &CloudChannel,
    notice: &Notice,
    utc_offset_minutes: i32,
) -> Vec<(&'static str, String)> {
    channel
        .params
        .iter()
        .map(|p| {
            (
                p.as_str(),
                crate::alerts::message::template_value(*p, notice, utc_offset_minutes),
            )
        })
        .collect()
}

/// An Aliyun `SendSms` or `SingleCallByTts` request to `mobile`: a form POST, signed.
pub fn aliyun_request(
    channel: &CloudChannel,
    notice: &Notice,
    mobile: &str,
    at_ms: i64,
    nonce: &str,
    utc_offset_minutes: i32,
) -> Outgoing {
    let template_values: serde_json::Map<String, Json> =
        values(channel, notice, utc_offset_minutes)
            .into_iter()
            .map(|(k, v)| (k.to_string(), Json::String(v)))
            .collect();
    let template_json = Json::Object(template_values).to_string();
    let mut params: BTreeMap<String, String> = [
        ("AccessKeyId", channel.key_id.clone()),
        ("Format", "JSON".into()),
        ("RegionId", channel.region.clone()),
        ("SignatureMethod", "HMAC-SHA1".into()),
        ("SignatureNonce", nonce.to_string()),
        ("SignatureVersion", "1.0".into()),
        ("Timestamp", iso_utc(at_ms)),
        ("Version", "2017-05-25".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let number = number_for(channel.kind, mobile);
    if channel.kind == ChannelType::AliyunVoice {
        params.insert("Action".into(), "SingleCallByTts".into());
        params.insert("CalledNumber".into(), number);
        params.insert("TtsCode".into(), channel.template.clone());
        params.insert("TtsParam".into(), template_json);
        params.insert("PlayTimes".into(), channel.play_times.to_string());
        if let Some(show) = &channel.called_show_number {
            params.insert("CalledShowNumber".into(), show.clone());
        }
    } else {
        params.insert("Action".into(), "SendSms".into());
        params.insert("PhoneNumbers".into(), number);
        params.insert("SignName".into(), channel.sign_name.clone());
        params.insert("TemplateCode".into(), channel.template.clone());
        params.insert("TemplateParam".into(), template_json);
    }
    let signature = aliyun_signature("POST", &params, &channel.secret);
    params.insert("Signature".into(), signature);
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", aliyun_encode(k), aliyun_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Outgoing {
        url: channel.endpoint.clone(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: body.into_bytes(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tencent Cloud's v3 signature (TC3-HMAC-SHA256) of a POST with a JSON `payload` to `host`:
/// the `Authorization` header's value.
#[allow(clippy::too_many_arguments)]
pub fn tencent_authorization(
    secret_id: &str,
    secret_key: &str,
    host: &str,
    service: &str,
    content_type: &str,
    payload: &[u8],
    timestamp_s: i64,
) -> String {
    let t = CivilTime::at(timestamp_s * 1000, 0);
    let date = format!("{:04}-{:02}-{:02}", t.year, t.month, t.day);
    let canonical = format!(
        "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\ncontent-type;host\n{}",
        hex(&sha2::Sha256::digest(payload))
    );
    let scope = format!("{date}/{service}/tc3_request");
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp_s}\n{scope}\n{}",
        hex(&sha2::Sha256::digest(canonical.as_bytes()))
    );
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    let signature = hex(&hmac_sha256(&secret_signing, to_sign.as_bytes()));
    format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
    )
}

/// A Tencent Cloud `SendSms` request to `mobile`: a JSON POST, signed.
pub fn tencent_request(
    channel: &CloudChannel,
    notice: &Notice,
    mobile: &str,
    at_ms: i64,
    utc_offset_minutes: i32,
) -> Outgoing {
    let body = json!({
        "PhoneNumberSet": [number_for(channel.kind, mobile)],
        "SmsSdkAppId": channel.app_id,
        "SignName": channel.sign_name,
        "TemplateId": channel.template,
        "TemplateParamSet": values(channel, notice, utc_offset_minutes)
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    let content_type = "application/json; charset=utf-8";
    let host = reqwest::Url::parse(&channel.endpoint)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_default();
    let timestamp_s = at_ms / 1000;
    let authorization = tencent_authorization(
        &channel.key_id,
        &channel.secret,
        &host,
        "sms",
        content_type,
        &body,
        timestamp_s,
    );
    Outgoing {
        url: channel.endpoint.clone(),
        headers: vec![
            ("authorization".into(), authorization),
            ("content-type".into(), content_type.into()),
            ("host".into(), host),
            ("x-tc-action".into(), "SendSms".into()),
            ("x-tc-timestamp".into(), timestamp_s.to_string()),
            ("x-tc-version".into(), "2021-01-11".into()),
            ("x-tc-region".into(), channel.region.clone()),
        ],
        body,
    }
}

/// Whether the provider took the message: Aliyun `Code` "OK"; Tencent no `Error` and every
/// number's `Code` "Ok". Anything else is a failure, retried, with the provider's code.
pub fn judge_cloud_answer(kind: ChannelType, body: &[u8]) -> Result<(), String> {
    let answer: Json = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if kind == ChannelType::TencentSms {
        let response = &answer["Response"];
        if let Some(error) = response.get("Error") {
            return Err(format!(
                "refused: {} {}",
                error["Code"].as_str().unwrap_or("?"),
                error["Message"].as_str().unwrap_or("")
            ));
        }
        let statuses = response["SendStatusSet"].as_array().ok_or_else(|| {
            format!(
                "answer has no SendStatusSet: {}",
                String::from_utf8_lossy(body)
            )
        })?;
        return match statuses.iter().find(|s| s["Code"] != "Ok") {
            None if !statuses.is_empty() => Ok(()),
            None => Err("answer's SendStatusSet is empty".into()),
            Some(s) => Err(format!(
                "refused for {}: {} {}",
                s["PhoneNumber"].as_str().unwrap_or("?"),
                s["Code"].as_str().unwrap_or("?"),
                s["Message"].as_str().unwrap_or("")
            )),
        };
    }
    match answer["Code"].as_str() {
        Some("OK") => Ok(()),
        Some(code) => Err(format!(
            "refused: {code} {}",
            answer["Message"].as_str().unwrap_or("")
        )),
        None => Err(format!(
            "answer has no Code: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
    }
}

pub(super) struct CloudNotifier {
    pub(super) channel: CloudChannel,
    pub(super) client: reqwest::Client,
    pub(super) utc_offset_minutes: i32,
}

impl Notifier for CloudNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let Some(notice) = lead(batch) else {
                return Ok(());
            };
            if self.channel.kind == ChannelType::AliyunVoice && !calls_for(&notice.event) {
                debug!(event = %notice.event, "No call for this event.");
                return Ok(());
            }
            let nonce = format!("{:032x}", rand::random::<u128>());
            let out = match self.channel.kind {
                ChannelType::TencentSms => tencent_request(
                    &self.channel,
                    notice,
                    &batch.recipient,
                    batch.sent_at_ms,
                    self.utc_offset_minutes,
                ),
                _ => aliyun_request(
                    &self.channel,
                    notice,
                    &batch.recipient,
                    batch.sent_at_ms,
                    &nonce,
                    self.utc_offset_minutes,
                ),
            };
            // The Host reqwest sets from the URL is the one signed.
            let Answer {
                status,
                retry_after,
                body,
            } = post(&self.client, out).await?;
            match judge_cloud_answer(self.channel.kind, &body) {
                Ok(()) if status.is_success() => Ok(()),
                Ok(()) => Err(SendError::new(format!("HTTP {status}"))),
                Err(message) => Err(SendError {
                    message: format!("HTTP {status}: {message}"),
                    retry_after,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vectors the providers publish, gathered with their sources in
    /// tests/golden/sms/vectors.json for the independent receiver (tests/interop/
    /// sms_receiver.py): Aliyun's RPC signature examples (DescribeRegions, SendSms) and
    /// Tencent Cloud's signature v3 example (CVM DescribeInstances).
    fn vectors() -> Json {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/sms/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
    }

    #[test]
    fn aliyun_signatures_match_the_published_examples() {
        let vectors = vectors();
        let aliyun = vectors["aliyun"].as_array().expect("aliyun vectors");
        let mut checked = 0;
        for v in aliyun
            .iter()
            .filter(|v| !v["name"].as_str().unwrap_or("").starts_with("worked"))
        {
            let params: BTreeMap<String, String> = v["params"]
                .as_object()
                .expect("params")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
                .collect();
            let method = v["method"].as_str().expect("method");
            let secret = v["secret"].as_str().expect("secret");
            assert_eq!(
                aliyun_signature(method, &params, secret),
                v["signature"].as_str().expect("signature"),
                "{}",
                v["name"]
            );
            checked += 1;
        }
        assert!(checked >= 3, "the published Aliyun examples: {checked}");
        for pair in vectors["percent_encode"].as_array().expect("table") {
            assert_eq!(
                aliyun_encode(pair[0].as_str().expect("in")),
                pair[1].as_str().expect("out")
            );
        }
    }

    #[test]
    fn tencent_signature_matches_the_published_example() {
        let vectors = vectors();
        let v = vectors["tencent"]
            .as_array()
            .expect("tencent vectors")
            .iter()
            .find(|v| v["name"] == "cvm_describe_instances")
            .expect("the example with its keys")
            .clone();
        let authorization = tencent_authorization(
            v["secret_id"].as_str().expect("id"),
            v["secret_key"].as_str().expect("key"),
            v["headers"]["Host"].as_str().expect("host"),
            v["service"].as_str().expect("service"),
            v["headers"]["Content-Type"].as_str().expect("type"),
            v["payload"].as_str().expect("payload").as_bytes(),
            v["timestamp"].as_i64().expect("timestamp"),
        );
        assert_eq!(
            authorization,
            v["authorization"].as_str().expect("authorization")
        );
    }

    #[test]
    fn numbers_are_written_as_each_provider_wants() {
        assert_eq!(
            number_for(ChannelType::AliyunSms, "+86 138-0000-0001"),
            "13800000001"
        );
        assert_eq!(
            number_for(ChannelType::TencentSms, "13800000001"),
            "+8613800000001"
        );
        assert_eq!(
            number_for(ChannelType::TencentSms, "+8613800000001"),
            "+8613800000001"
        );
    }

    #[test]
    fn refusals_in_a_200_answer_are_failures() {
        assert!(
            judge_cloud_answer(ChannelType::AliyunSms, br#"{"Code":"OK","Message":"OK"}"#).is_ok()
        );
        let limited = judge_cloud_answer(
            ChannelType::AliyunSms,
            br#"{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"limit"}"#,
        );
        assert!(limited.is_err_and(|e| e.contains("isv.BUSINESS_LIMIT_CONTROL")));
        let tencent_ok = br#"{"Response":{"SendStatusSet":[{"Code":"Ok","PhoneNumber":"+8613800000001"}],"RequestId":"r"}}"#;
        assert!(judge_cloud_answer(ChannelType::TencentSms, tencent_ok).is_ok());
        let tencent_limit = br#"{"Response":{"SendStatusSet":[{"Code":"LimitExceeded.PhoneNumberThirtySecondLimit","PhoneNumber":"+8613800000001","Message":"m"}],"RequestId":"r"}}"#;
        assert!(judge_cloud_answer(ChannelType::TencentSms, tencent_limit).is_err());
        let tencent_auth = br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"m"},"RequestId":"r"}}"#;
        assert!(judge_cloud_answer(ChannelType::TencentSms, tencent_auth)
            .is_err_and(|e| e.contains("AuthFailure.SignatureFailure")));
    }
}
