//! HTTP channels: the signed webhook and the WeCom, DingTalk and Feishu group robots, each with
//! its documented body and signature, and the robots' refusals in a 200 answer judged as failures.

use super::*;

pub(super) type HmacSha256 = Hmac<Sha256>;

pub(super) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The generic webhook's signature header value: `sha256=` and the hex HMAC-SHA256 of
/// `<timestamp>.<body>` with the shared secret.
pub fn webhook_signature(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp_s}.").into_bytes();
    message.extend_from_slice(body);
    let mac = hmac_sha256(secret.as_bytes(), &message);
    format!(
        "sha256={}",
        mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// DingTalk's robot signature: base64 of HMAC-SHA256 over `<timestamp_ms>\n<secret>`, keyed
/// by the secret (sent URL-encoded in the query).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Feishu's robot signature: base64 of HMAC-SHA256 keyed by `<timestamp_s>\n<secret>` over
/// nothing (sic, as Feishu documents it).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let mac = hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b"");
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Title and lines of a batch: the notice's own, or a digest listing every notice.
pub(super) fn batch_message(batch: &Batch, utc_offset_minutes: i32) -> Message {
    let first = &batch.notices[0];
    let mut message = render(first, utc_offset_minutes);
    if batch.is_digest() {
        let zh = first.language == crate::config::alerts::Language::Zh;
        message.title = if zh {
            format!(
                "【汇总】{} 条报警推送（发送频率已达上限）",
                batch.notices.len()
            )
        } else {
            format!(
                "[Digest] {} alarm pushes (route rate limit reached)",
                batch.notices.len()
            )
        };
        message.lines = batch
            .notices
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let one = render(n, utc_offset_minutes);
                let time = crate::model::local_time(n.at_ms, utc_offset_minutes);
                (
                    if i == 0 { "1" } else { "·" },
                    format!("{} ({time})", one.title),
                )
            })
            .collect();
        message.link = first.link.as_ref().map(|l| match l.find("#alarm=") {
            Some(at) => l[..at].to_string(),
            None => l.clone(),
        });
    }
    message
}

pub(super) fn mention_mobiles(batch: &Batch) -> Vec<String> {
    let mut mobiles: Vec<String> = batch
        .notices
        .iter()
        .flat_map(|n| n.recipients.iter().filter_map(|r| r.mobile.clone()))
        .collect();
    mobiles.sort();
    mobiles.dedup();
    mobiles
}

/// The JSON document the generic webhook receives: the notices as queued, each with its
/// rendered title and text.
pub fn webhook_document(batch: &Batch, utc_offset_minutes: i32) -> Json {
    let notices: Vec<Json> = batch
        .notices
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or(Json::Null);
            let m = render(n, utc_offset_minutes);
            if let Some(o) = v.as_object_mut() {
                o.insert("title".into(), json!(m.title));
                o.insert("text".into(), json!(m.plain()));
            }
            v
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "id": batch.id,
        "digest": batch.is_digest(),
        "notices": notices,
    })
}

/// The HTTP request for a batch on a webhook or robot channel, signed at `now_ms`.
pub fn http_request(
    kind: ChannelType,
    url: &str,
    secret: Option<&str>,
    batch: &Batch,
    now_ms: i64,
    utc_offset_minutes: i32,
) -> Outgoing {
    let message = batch_message(batch, utc_offset_minutes);
    let json_header = ("Content-Type".to_string(), "application/json".to_string());
    let mut url = url.to_string();
    let mut headers = vec![json_header];
    let body = match kind {
        ChannelType::Webhook => {
            let body = webhook_document(batch, utc_offset_minutes).to_string();
            let ts = now_ms / 1000;
            headers.push(("X-Parkguard-Delivery".into(), batch.id.clone()));
            headers.push(("X-Parkguard-Timestamp".into(), ts.to_string()));
            if let Some(secret) = secret {
                headers.push((
                    "X-Parkguard-Signature".into(),
                    webhook_signature(secret, ts, body.as_bytes()),
                ));
            }
            body
        }
        ChannelType::Wecom => {
            let mut content = message.markdown();
            for m in mention_mobiles(batch) {
                content.push_str(&format!("@{m} "));
            }
            json!({"msgtype": "markdown", "markdown": {"content": content}}).to_string()
        }
        ChannelType::Dingtalk => {
            if let Some(secret) = secret {
                let sign = dingtalk_sign(secret, now_ms);
                let encoded = percent_encoding::utf8_percent_encode(
                    &sign,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!("{url}{sep}timestamp={now_ms}&sign={encoded}");
            }
            let mobiles = mention_mobiles(batch);
            let mut text = message.markdown();
            // DingTalk shows a mention only when the number also appears in the text.
            for m in &mobiles {
                text.push_str(&format!("@{m} "));
            }
            json!({
                "msgtype": "markdown",
                "markdown": {"title": message.title, "text": text},
                "at": {"atMobiles": mobiles, "isAtAll": false},
            })
            .to_string()
        }
        ChannelType::Feishu => {
            let mut content: Vec<Json> = message
                .lines
                .iter()
                .map(|(label, value)| json!([{"tag": "text", "text": format!("{label}: {value}")}]))
                .collect();
            if let Some(link) = &message.link {
                content.push(json!([{"tag": "a", "text": message.link_label, "href": link}]));
            }
            let lang = match batch.notices[0].language {
                crate::config::alerts::Language::Zh => "zh_cn",
                crate::config::alerts::Language::En => "en_us",
            };
            let mut doc = json!({
                "msg_type": "post",
                "content": {"post": {lang: {"title": message.title, "content": content}}},
            });
            if let (Some(secret), Some(o)) = (secret, doc.as_object_mut()) {
                let ts = now_ms / 1000;
                o.insert("timestamp".into(), json!(ts.to_string()));
                o.insert("sign".into(), json!(feishu_sign(secret, ts)));
            }
            doc.to_string()
        }
        ChannelType::Mqtt
        | ChannelType::Email
        | ChannelType::AliyunSms
        | ChannelType::TencentSms
        | ChannelType::AliyunVoice => String::new(),
    };
    Outgoing {
        url,
        headers,
        body: body.into_bytes(),
    }
}

/// Judges a robot's answer body: the robots answer HTTP 200 also for refused messages and say
/// so in `errcode` (WeCom, DingTalk) or `code` (Feishu).
pub fn judge_answer(kind: ChannelType, body: &[u8]) -> Result<(), String> {
    if kind == ChannelType::Webhook {
        return Ok(());
    }
    let answer: Json = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })?;
    let code = answer
        .get("errcode")
        .or_else(|| answer.get("code"))
        .or_else(|| answer.get("StatusCode"))
        .and_then(Json::as_i64);
    match code {
        Some(0) => Ok(()),
        Some(code) => {
            let msg = answer
                .get("errmsg")
                .or_else(|| answer.get("msg"))
                .and_then(Json::as_str)
                .unwrap_or("");
            Err(format!("refused with code {code}: {msg}"))
        }
        None => Err(format!(
            "answer has no result code: {}",
            String::from_utf8_lossy(body)
        )),
    }
}

/// Webhook and robot channels.
pub struct HttpNotifier {
    pub(super) kind: ChannelType,
    pub(super) url: String,
    pub(super) secret: Option<String>,
    pub(super) client: reqwest::Client,
    pub(super) utc_offset_minutes: i32,
}

impl Notifier for HttpNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let out = http_request(
                self.kind,
                &self.url,
                self.secret.as_deref(),
                batch,
                batch.sent_at_ms,
                self.utc_offset_minutes,
            );
            let Answer {
                status,
                retry_after,
                body,
            } = post(&self.client, out).await?;
            if !status.is_success() {
                return Err(SendError {
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ),
                    retry_after,
                });
            }
            judge_answer(self.kind, &body).map_err(SendError::new)
        })
    }
}
