//! HTTP writes to InfluxDB: the 1.x `/write` API and the 2.x/3.x `/api/v2/write` API (also
//! served by VictoriaMetrics and other compatible servers), gzip-compressed.
//!
//! Both APIs are the same POST of line protocol with a different URL and authentication, so one
//! writer serves both. (The `influxdb2` crate was not used: it hides the response headers, so a
//! 429/503 `Retry-After` could not be honoured, and it would bring a second HTTP and TLS stack.)
//!
//! `classify` is the one place that decides what a failed write means.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};

use crate::backoff::parse_retry_after;
use crate::config::{Config, InfluxApi, InfluxSinkConfig};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
}

/// What to do with a batch whose write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Transient: try the same batch again after a backoff (or the server's `Retry-After`).
    Retry { after: Option<Duration> },
    /// 413: the batch is too large for the server; split it and send the halves.
    Split,
    /// 400/422 and other 4xx: the data itself is refused; retrying cannot help.
    Reject,
    /// 401/403: credentials are wrong; keep the data and retry slowly until an operator fixes it.
    Unauthorized,
}

pub fn classify(err: &WriteError) -> RetryClass {
    match err {
        WriteError::Transport(_) => RetryClass::Retry { after: None },
        WriteError::Status {
            status,
            retry_after,
            ..
        } => match *status {
            429 | 503 => RetryClass::Retry {
                after: *retry_after,
            },
            413 => RetryClass::Split,
            401 | 403 => RetryClass::Unauthorized,
            408 => RetryClass::Retry { after: None },
            400..=499 => RetryClass::Reject,
            _ => RetryClass::Retry { after: None },
        },
    }
}

pub struct InfluxWriter {
    client: reqwest::Client,
    write_url: reqwest::Url,
    authorization: Option<HeaderValue>,
    gzip: bool,
    timeout: Duration,
}

impl InfluxWriter {
    pub fn new(config: &Config, index: usize) -> anyhow::Result<Self> {
        let sink: &InfluxSinkConfig = &config.site.influx[index];
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(sink.request_timeout_s))
            .connect_timeout(Duration::from_secs(sink.request_timeout_s.min(10)))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(ca) = &sink.ca {
            let pem = std::fs::read(config.resolve_path(ca))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let client = builder.build()?;
        let base = sink.url.trim_end_matches('/');
        let (write_url, authorization) = match sink.api {
            InfluxApi::V1 => {
                let mut url = reqwest::Url::parse(&format!("{base}/write"))?;
                url.query_pairs_mut()
                    .append_pair("db", sink.database.as_deref().unwrap_or_default())
                    .append_pair("precision", "ns");
                if let Some(rp) = &sink.retention_policy {
                    url.query_pairs_mut().append_pair("rp", rp);
                }
                let auth = match &sink.username {
                    Some(user) => {
                        let password = sink
                            .password
                            .as_ref()
                            .and_then(crate::config::Secret::value)
                            .unwrap_or_default();
                        Some(basic_auth(user, password)?)
                    }
                    None => None,
                };
                (url, auth)
            }
            InfluxApi::V2 => {
                let mut url = reqwest::Url::parse(&format!("{base}/api/v2/write"))?;
                url.query_pairs_mut()
                    .append_pair("org", sink.org.as_deref().unwrap_or_default())
                    .append_pair("bucket", sink.bucket.as_deref().unwrap_or_default())
                    .append_pair("precision", "ns");
                let token = sink
                    .token
                    .as_ref()
                    .and_then(crate::config::Secret::value)
                    .unwrap_or_default();
                let mut value = HeaderValue::from_str(&format!("Token {token}"))?;
                value.set_sensitive(true);
                (url, Some(value))
            }
        };
        Ok(InfluxWriter {
            client,
            write_url,
            authorization,
            gzip: sink.gzip,
            timeout: Duration::from_secs(sink.request_timeout_s),
        })
    }

    /// Sends gzip-compressed line protocol (one or more gzip members), decompressed first for
    /// a sink configured without gzip. The request itself carries the timeout.
    pub async fn write(&self, gz: &bytes::Bytes) -> Result<(), WriteError> {
        let mut request = self
            .client
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request = if self.gzip {
            request.header(CONTENT_ENCODING, "gzip").body(gz.clone())
        } else {
            request.body(gunzip(gz).map_err(|e| WriteError::Transport(e.to_string()))?)
        };
        let response = request
            .send()
            .await
            // Without the URL: one with credentials in it (user:pass@, ?p=) must not be logged.
            .map_err(|e| WriteError::Transport(error_chain(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let message = match tokio::time::timeout(self.timeout, response.text()).await {
            Ok(Ok(text)) => text.chars().take(500).collect(),
            _ => String::new(),
        };
        Err(WriteError::Status {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }
}

/// Compresses line protocol into one gzip member. Level 1: line protocol compresses about
/// 10:1 even at the fastest level, and a small gateway's CPU is better spent elsewhere.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Decompresses every gzip member of `data` (the outbox concatenates them).
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(data.len() * 8);
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

fn basic_auth(user: &str, password: &str) -> anyhow::Result<HeaderValue> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> WriteError {
        WriteError::Status {
            status: code,
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn throttling_honours_retry_after() {
        assert_eq!(
            classify(&status(429, Some(7))),
            RetryClass::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(&status(503, Some(2))),
            RetryClass::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
    }

    #[test]
    fn server_errors_and_transport_errors_retry() {
        assert_eq!(
            classify(&status(500, None)),
            RetryClass::Retry { after: None }
        );
        assert_eq!(
            classify(&WriteError::Transport("refused".into())),
            RetryClass::Retry { after: None }
        );
    }

    #[test]
    fn too_large_splits_bad_data_rejects_bad_credentials_keep_data() {
        assert_eq!(classify(&status(413, None)), RetryClass::Split);
        assert_eq!(classify(&status(400, None)), RetryClass::Reject);
        assert_eq!(classify(&status(422, None)), RetryClass::Reject);
        assert_eq!(classify(&status(401, None)), RetryClass::Unauthorized);
        assert_eq!(classify(&status(403, None)), RetryClass::Unauthorized);
    }

    #[test]
    fn concatenated_gzip_members_round_trip() {
        let a = "m,t=a f=1i 1\n".repeat(100);
        let b = "m,t=b f=2i 2\n".repeat(50);
        let mut both = gzip(a.as_bytes());
        both.extend(gzip(b.as_bytes()));
        assert_eq!(gunzip(&both).unwrap(), format!("{a}{b}").into_bytes());
    }
}
