//! The channels behind one `Notifier` trait: the generic webhook (parkguard's JSON, signed
//! with HMAC-SHA256), the WeCom, DingTalk and Feishu group robots in their documented
//! formats, MQTT (retained state per alarm) and e-mail over SMTP (lettre).
//!
//! Request building is pure (`http_request`), so formats and signatures are tested against
//! golden files; the notifiers only send and judge the answer. Every send has a timeout.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value as Json};
use sha2::Sha256;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::config::alerts::{ChannelConfig, ChannelType, SmtpSecurity};
use crate::config::Config;

use super::message::{render, Message};
use super::plan::{Notice, SCHEMA};

/// One send: one notice, or a digest of several (rate limit reached), to one channel and, for
/// e-mail, one recipient.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Names the delivery (the first notice's queue id, `-`, the count); receivers can use it
    /// to drop a repeat after a gateway crash between their answer and its record.
    pub id: String,
    pub recipient: String,
    pub notices: Vec<Notice>,
    /// When it is sent (the service's clock): the signatures' timestamps.
    pub sent_at_ms: i64,
}

impl Batch {
    pub fn is_digest(&self) -> bool {
        self.notices.len() > 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub message: String,
    /// The receiver asked for this pause (HTTP 429/503 Retry-After).
    pub retry_after: Option<Duration>,
}

impl SendError {
    fn new(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A way of delivering pushes. `send` resolves once the receiver has taken the batch (HTTP
/// 2xx with a success body, MQTT PUBACK, SMTP 250) or failed.
pub trait Notifier: Send + Sync {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>>;
}

/// An HTTP request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
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
fn batch_message(batch: &Batch, utc_offset_minutes: i32) -> Message {
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

fn mention_mobiles(batch: &Batch) -> Vec<String> {
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
        ChannelType::Mqtt | ChannelType::Email => String::new(),
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
    kind: ChannelType,
    url: String,
    secret: Option<String>,
    client: reqwest::Client,
    utc_offset_minutes: i32,
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
            let mut request = self.client.post(&out.url).body(out.body);
            for (k, v) in &out.headers {
                request = request.header(k, v);
            }
            // The client's timeout covers connecting, sending and reading the answer.
            let response = request
                .send()
                .await
                .map_err(|e| SendError::new(format!("{}: {}", redact(&self.url), causes(e))))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::backoff::parse_retry_after(v, std::time::SystemTime::now()));
            let body = response
                .bytes()
                .await
                .map_err(|e| SendError::new(format!("reading the answer: {}", causes(e))))?;
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

/// The error and its causes ("connection refused" is the useful part), without the URL,
/// whose query may hold a robot's access key.
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where a channel sends, for errors, logs, the store and the API: scheme, host and port only.
/// Robots and webhooks carry their keys in the query (DingTalk, WeCom) or in the path
/// (Feishu, most webhooks), so neither ever leaves.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("?");
            match parsed.port() {
                Some(port) => format!("{}://{host}:{port}/…", parsed.scheme()),
                None => format!("{}://{host}/…", parsed.scheme()),
            }
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

/// The retained topic of an alarm: `<prefix>/<device>/<rule>[/<quantity>]`, with MQTT's
/// special characters in ids replaced.
pub fn alarm_topic(prefix: &str, notice: &Notice) -> String {
    let clean = |s: &str| s.replace(['/', '+', '#', '\0'], "_");
    let a = &notice.alarm;
    let mut topic = format!("{prefix}/{}/{}", clean(&a.device), clean(&a.rule));
    if !a.quantity.is_empty() {
        topic.push('/');
        topic.push_str(&clean(&a.quantity));
    }
    topic
}

/// The retained payload of an alarm: its state as JSON, or empty (which deletes the retained
/// message) once it is over.
pub fn alarm_state_payload(notice: &Notice, utc_offset_minutes: i32) -> Vec<u8> {
    let over = notice.alarm.state == "normal" || notice.event == "retired";
    if over {
        return Vec::new();
    }
    let m = render(notice, utc_offset_minutes);
    let mut v = serde_json::to_value(notice).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("schema".into(), json!(SCHEMA));
        o.insert("title".into(), json!(m.title));
        o.remove("recipients");
    }
    v.to_string().into_bytes()
}

/// MQTT channel: one session of its own; a publish counts once the broker's PUBACK arrived.
/// The client id of MQTT alert channel `channel` on connection `mqtt`.
fn alert_client_id(config: &Config, mqtt: &crate::config::MqttConfig, channel: &str) -> String {
    let base_id = mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("parkguard-{}", config.site.gateway.name));
    format!("{base_id}-alerts-{channel}")
}

/// The client ids of the MQTT alert channels on connection `connection`.
pub fn mqtt_client_ids(config: &Config, connection: &str) -> Vec<String> {
    let Some(mqtt) = config.site.mqtt.iter().find(|m| m.name == connection) else {
        return Vec::new();
    };
    config
        .site
        .alerts
        .iter()
        .flat_map(|a| a.channels.iter())
        .filter(|c| c.mqtt.as_deref() == Some(connection))
        .map(|c| alert_client_id(config, mqtt, &c.name))
        .collect()
}

pub struct MqttNotifier {
    prefix: String,
    client: rumqttc::AsyncClient,
    acks: Mutex<mpsc::Receiver<u16>>,
    timeout: Duration,
    utc_offset_minutes: i32,
}

impl MqttNotifier {
    fn start(config: &Config, channel: &ChannelConfig) -> anyhow::Result<MqttNotifier> {
        let name = channel.mqtt.as_deref().unwrap_or_default();
        let mqtt = config
            .site
            .mqtt
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow::anyhow!("no [[mqtt]] connection `{name}`"))?;
        let embedded = crate::ingest::broker::daemon_link_for(config, mqtt);
        let (host, port) = match &embedded {
            Some(link) => (link.address.ip().to_string(), link.address.port()),
            None => (mqtt.host.clone(), mqtt.port()),
        };
        let mut options =
            rumqttc::MqttOptions::new(alert_client_id(config, mqtt, &channel.name), host, port);
        options
            .set_keep_alive(Duration::from_secs(mqtt.keepalive_s))
            .set_clean_session(true);
        if let Some((user, password)) = embedded.as_ref().and_then(|l| l.login.clone()) {
            options.set_credentials(user, password);
        } else if let Some(user) = &mqtt.username {
            let password = mqtt
                .password
                .as_ref()
                .and_then(crate::config::Secret::value)
                .unwrap_or_default();
            options.set_credentials(user, password);
        }
        if let (Some(tls), None) = (&mqtt.tls, &embedded) {
            let tls = crate::ingest::mqtt::load_tls(config, tls)?;
            options.set_transport(rumqttc::Transport::Tls(tls));
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        eventloop
            .network_options
            .set_connection_timeout(mqtt.connect_timeout_s);
        let (ack_tx, acks) = mpsc::channel(64);
        let channel_name = channel.name.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                        if ack_tx.send(ack.pkid).await.is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        backoff.reset();
                        debug!(channel = %channel_name, "Alert MQTT channel connected.");
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if ack_tx.is_closed() {
                            return;
                        }
                        let delay = backoff.next_delay();
                        warn!(channel = %channel_name, error = %err, retry_in_ms = delay.as_millis() as u64, "Alert MQTT channel disconnected.");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        Ok(MqttNotifier {
            prefix: channel.topic_prefix.clone(),
            client,
            acks: Mutex::new(acks),
            timeout: Duration::from_secs(channel.timeout_s),
            utc_offset_minutes: config
                .site
                .alerts
                .as_ref()
                .map_or(480, |a| a.utc_offset_minutes),
        })
    }
}

impl Notifier for MqttNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            // One publish in flight at a time, so the next PUBACK is this publish's.
            let mut acks = self.acks.lock().await;
            while acks.try_recv().is_ok() {}
            for notice in &batch.notices {
                let topic = alarm_topic(&self.prefix, notice);
                let payload = alarm_state_payload(notice, self.utc_offset_minutes);
                tokio::time::timeout(
                    self.timeout,
                    self.client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload),
                )
                .await
                .map_err(|_| SendError::new("MQTT request queue full"))?
                .map_err(|e| SendError::new(e.to_string()))?;
                match tokio::time::timeout(self.timeout, acks.recv()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(SendError::new("MQTT channel stopped")),
                    Err(_) => {
                        return Err(SendError::new(format!(
                            "no PUBACK within {} s",
                            self.timeout.as_secs()
                        )))
                    }
                }
            }
            Ok(())
        })
    }
}

/// E-mail channel: one message per recipient, plain UTF-8 text.
pub struct EmailNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    utc_offset_minutes: i32,
}

impl EmailNotifier {
    fn new(config: &Config, index: usize, channel: &ChannelConfig) -> anyhow::Result<Self> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let host = channel.smtp_host.clone().unwrap_or_default();
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(ca) = &channel.ca {
            let path = config.resolve_path(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            tls = tls.add_root_certificate(Certificate::from_pem(&pem)?);
        }
        let tls = tls.build_rustls()?;
        let (mode, port) = match channel.security {
            SmtpSecurity::Starttls => (Tls::Required(tls), 587),
            SmtpSecurity::Tls => (Tls::Wrapper(tls), 465),
            SmtpSecurity::None => (Tls::None, 25),
        };
        let mut builder =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
                .port(channel.smtp_port.unwrap_or(port))
                .tls(mode)
                .timeout(Some(Duration::from_secs(channel.timeout_s)));
        if let Some(user) = &channel.username {
            let password = channel
                .password
                .as_ref()
                .and_then(crate::config::Secret::value)
                .unwrap_or_default();
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.to_string(),
                ));
        }
        let from = channel
            .from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("alerts.channels[{index}].from: {e}"))?;
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            utc_offset_minutes: config
                .site
                .alerts
                .as_ref()
                .map_or(480, |a| a.utc_offset_minutes),
        })
    }
}

/// The e-mail for a batch to one address: subject = title, body = the plain text.
pub fn email_message(
    from: &lettre::message::Mailbox,
    batch: &Batch,
    utc_offset_minutes: i32,
) -> Result<lettre::Message, String> {
    let message = batch_message(batch, utc_offset_minutes);
    let to: lettre::message::Mailbox = batch
        .recipient
        .parse()
        .map_err(|e| format!("recipient `{}`: {e}", batch.recipient))?;
    let mut body = message.plain();
    if batch.is_digest() {
        body.push('\n');
        for n in &batch.notices {
            body.push_str(&render(n, utc_offset_minutes).plain());
            body.push('\n');
        }
    }
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(message.title)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())
}

impl Notifier for EmailNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            use lettre::AsyncTransport;
            let email = email_message(&self.from, batch, self.utc_offset_minutes)
                .map_err(SendError::new)?;
            self.transport
                .send(email)
                .await
                .map(|_| ())
                .map_err(|e| SendError::new(format!("SMTP: {e}")))
        })
    }
}

/// Builds the notifier of every configured channel, by name.
pub fn build(
    config: &Config,
) -> anyhow::Result<std::collections::BTreeMap<String, Arc<dyn Notifier>>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(alerts) = &config.site.alerts else {
        return Ok(out);
    };
    for (index, channel) in alerts.channels.iter().enumerate() {
        let notifier: Arc<dyn Notifier> = match channel.kind {
            ChannelType::Webhook
            | ChannelType::Wecom
            | ChannelType::Dingtalk
            | ChannelType::Feishu => Arc::new(HttpNotifier {
                kind: channel.kind,
                url: channel.url.clone().unwrap_or_default(),
                secret: channel
                    .secret
                    .as_ref()
                    .and_then(crate::config::Secret::value)
                    .map(str::to_string),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(channel.timeout_s))
                    .connect_timeout(Duration::from_secs(channel.timeout_s))
                    .build()?,
                utc_offset_minutes: alerts.utc_offset_minutes,
            }),
            ChannelType::Mqtt => Arc::new(MqttNotifier::start(config, channel)?),
            ChannelType::Email => Arc::new(EmailNotifier::new(config, index, channel)?),
        };
        out.insert(channel.name.clone(), notifier);
    }
    Ok(out)
}
