//! The channels behind one `Notifier` trait, one file each: the generic webhook (parkguard's
//! JSON, signed with HMAC-SHA256) and the WeCom, DingTalk and Feishu group robots in their
//! documented formats (`http`), MQTT with retained state per alarm (`mqtt`) and e-mail over
//! SMTP with lettre (`email`), SMS and voice calls through Aliyun and Tencent Cloud (`sms`).
//! `build` makes the configured channels' notifiers.
//!
//! Request building is pure (`http::http_request`), so formats and signatures are tested
//! against golden files; the notifiers only send and judge the answer. Every send has a
//! timeout.

mod email;
mod http;
mod mqtt;
pub mod sms;

use super::message::{render, Message};
use super::routing::{Notice, SCHEMA};
use crate::backoff::Backoff;
use crate::config::alerts::{ChannelConfig, ChannelType, SmtpSecurity};
use crate::config::Config;
use base64::Engine;
use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value as Json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use email::*;
use http::*;
pub use mqtt::mqtt_client_ids;
use mqtt::*;

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

/// An answer as the channels judge it: status, the pause asked for (Retry-After), body.
struct Answer {
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

/// POSTs `out` (the client's timeout covers connecting, sending and reading the answer).
/// A `host` header is left to reqwest, which sets it from the URL.
async fn post(client: &reqwest::Client, out: Outgoing) -> Result<Answer, SendError> {
    let mut request = client.post(&out.url).body(out.body);
    for (k, v) in &out.headers {
        if !k.eq_ignore_ascii_case("host") {
            request = request.header(k, v);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| SendError::new(format!("{}: {}", redact(&out.url), causes(e))))?;
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
    Ok(Answer {
        status,
        retry_after,
        body,
    })
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
            ChannelType::AliyunSms | ChannelType::TencentSms | ChannelType::AliyunVoice => {
                Arc::new(sms::CloudNotifier {
                    channel: sms::CloudChannel::from_config(channel),
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(channel.timeout_s))
                        .connect_timeout(Duration::from_secs(channel.timeout_s))
                        .build()?,
                    utc_offset_minutes: alerts.utc_offset_minutes,
                })
            }
        };
        out.insert(channel.name.clone(), notifier);
    }
    Ok(out)
}
