//! The `[[http_ingest]]` endpoints: pushes of carrier IoT platforms (CTWing, OneNET) received
//! on the web server, verified and turned into documents by `ingest::http`, decoded with the
//! endpoint's profile, handed downstream like MQTT messages, and answered 200 only once the
//! outbox writer has committed them (as an MQTT PUBACK is sent after the commit), so a push
//! lost in a crash is one the platform sends again.
//!
//! Owns: the endpoints' HTTP side (body limits, statuses, counting per result, waiting for
//! the commit). Must not touch: logins, sessions and CSRF (the platforms cannot log in; the
//! token or signature is their authentication), alarm state or the store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::devices::DeviceDirectory;
use crate::config::{Config, DeviceAckConfig, HttpIngestConfig, IngestPlatform};
use crate::decode::payload::{DecodeErrorKind, PayloadDecoder};
use crate::ingest::http::{self, command, ctwing, onenet, DeviceMessage, Refusal};
use crate::ingest::{Ack, Ingested};
use crate::metrics::{HttpIngestMetrics, HttpIngestResult, Metrics};
use crate::model::{now_ns, BadMessage};

/// How long the body of a push may take to arrive, once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first bytes of an undecodable document kept in the store's bad-message table.
const BAD_DOCUMENT_KEPT: usize = 1024;
/// Refusals are logged at most this often per endpoint.
const REFUSAL_LOG_INTERVAL_MS: i64 = 60_000;

/// What the endpoints need from the pipeline: where ingested messages go, and the devices.
pub struct IngestLink {
    pub output: mpsc::Sender<Ingested>,
    pub devices: Arc<DeviceDirectory>,
}

/// One configured endpoint, ready to serve.
pub struct Endpoint {
    pub path: String,
    pub platform: IngestPlatform,
    name: String,
    /// The endpoint's profile: only devices declared with it are taken here.
    profile: String,
    token: String,
    max_body_bytes: usize,
    commit_timeout: Duration,
    decoder: PayloadDecoder,
    link: Arc<IngestLink>,
    counts: Arc<HttpIngestMetrics>,
    metrics: Arc<Metrics>,
    /// When a refusal was last logged (ms since the epoch), and how many were not since.
    refusal_logged_ms: AtomicI64,
    refusals_not_logged: AtomicU64,
    /// The profile's `[ack]`, when it has a `command` and the endpoint platform API
    /// credentials to send it with.
    ack: Option<DeviceAckConfig>,
}

/// The configured endpoints; an error for a profile or secret that validation let through,
/// which only a `Config` not made by `Config::load` can have.
pub fn endpoints(
    config: &Config,
    link: IngestLink,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Vec<Arc<Endpoint>>> {
    let link = Arc::new(link);
    let max_ahead_ns = i64::try_from(config.site.gateway.max_clock_ahead_s)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1_000_000_000);
    config
        .site
        .http_ingest
        .iter()
        .map(|e: &HttpIngestConfig| {
            let profile = config.profile(&e.profile)?;
            let mapping = profile.payload.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "http_ingest {}: profile `{}` has no payload mapping",
                    e.name,
                    e.profile
                )
            })?;
            let decoder = PayloadDecoder::new(mapping, profile.measurement())
                .map_err(|err| anyhow::anyhow!("profile `{}`: {err}", e.profile))?
                .with_max_ahead_ns(max_ahead_ns);
            let token = e
                .token
                .value()
                .ok_or_else(|| anyhow::anyhow!("http_ingest {}: the token was not read", e.name))?;
            Ok(Arc::new(Endpoint {
                path: e.path.clone(),
                platform: e.platform,
                name: e.name.clone(),
                profile: e.profile.clone(),
                token: token.to_string(),
                max_body_bytes: e.max_body_bytes,
                commit_timeout: Duration::from_secs(e.commit_timeout_s),
                decoder,
                link: Arc::clone(&link),
                counts: metrics.http_ingest(&e.name),
                metrics: Arc::clone(metrics),
                refusal_logged_ms: AtomicI64::new(i64::MIN),
                refusals_not_logged: AtomicU64::new(0),
                ack: profile
                    .ack
                    .clone()
                    .filter(|a| a.command.is_some())
                    .filter(|_| e.ctwing_api.is_some() || e.onenet_api.is_some()),
            }))
        })
        .collect()
}

/// Answers one request to `endpoint` and counts its result.
pub async fn handle(endpoint: Arc<Endpoint>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (result, response) = endpoint.answer(request).await;
    endpoint.counts.count(result);
    let refused = !matches!(
        result,
        HttpIngestResult::Accepted
            | HttpIngestResult::Verified
            | HttpIngestResult::Ignored
            | HttpIngestResult::NotCommitted
    );
    if refused {
        endpoint.log_refusal(result, peer, response.status());
    }
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

impl Endpoint {
    /// Logs a refusal at most once a minute per endpoint (a wrong token configured on one
    /// side shows at once; a flood of guesses does not fill the log), with how many were not
    /// logged since; the counters see every one.
    fn log_refusal(&self, result: HttpIngestResult, peer: Option<SocketAddr>, status: StatusCode) {
        let now_ms = now_ns() / 1_000_000;
        let last = self.refusal_logged_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS
            && self
                .refusal_logged_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !due {
            self.refusals_not_logged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let not_logged = self.refusals_not_logged.swap(0, Ordering::Relaxed);
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        warn!(endpoint = %self.name, result = result.as_str(), status = status.as_u16(), %peer, refused_before_not_logged = not_logged, "Push refused (logged once a minute per endpoint; see parkguard_http_ingest_requests_total).");
    }

    async fn answer(&self, request: Request) -> (HttpIngestResult, Response) {
        let (parts, body) = request.into_parts();
        let query = parts.uri.query().unwrap_or("");
        if self.platform == IngestPlatform::Onenet && parts.method == Method::GET {
            return match onenet::verify_url(&self.token, query) {
                Ok(msg) => (HttpIngestResult::Verified, text(StatusCode::OK, msg)),
                Err(refusal) => self.refused(refusal),
            };
        }
        // Nothing of a body announced too large is read.
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_body_bytes as u64) {
            return self.too_large();
        }
        // CTWing's token is in the URL: checked before the body is read.
        if self.platform == IngestPlatform::Ctwing {
            if let Err(refusal) = ctwing::check_token(&self.token, Some(query)) {
                return self.refused(refusal);
            }
        }
        let body =
            match tokio::time::timeout(BODY_TIMEOUT, read_body(body, self.max_body_bytes)).await {
                Ok(Ok(Some(body))) => body,
                Ok(Ok(None)) => return self.too_large(),
                Ok(Err(err)) => {
                    return (
                        HttpIngestResult::Malformed,
                        text(
                            StatusCode::BAD_REQUEST,
                            format!("the body could not be read: {err}"),
                        ),
                    )
                }
                // Counted with the malformed bodies (400): both are bodies that never came whole.
                Err(_) => {
                    return (
                        HttpIngestResult::Malformed,
                        text(
                            StatusCode::REQUEST_TIMEOUT,
                            "the body took too long to arrive",
                        ),
                    )
                }
            };
        let received_ns = now_ns();
        let received_ms = received_ns / 1_000_000;
        let parsed = match self.platform {
            IngestPlatform::Ctwing => ctwing::parse_push(&body, received_ms),
            IngestPlatform::Onenet => {
                onenet::parse_push(&self.token, &body, received_ms).map(|(_, messages)| messages)
            }
        };
        let messages = match parsed {
            Ok(messages) => messages,
            Err(refusal) => return self.refused(refusal),
        };
        if messages.is_empty() {
            return (HttpIngestResult::Ignored, text(StatusCode::OK, "ok"));
        }
        let mut items = Vec::with_capacity(messages.len());
        let mut unknown = Vec::new();
        for message in &messages {
            match self.ingested(message, received_ns) {
                Some(Some(item)) => items.push(item),
                Some(None) => {}
                None => unknown.push(message.name().to_string()),
            }
        }
        if items.is_empty() && !unknown.is_empty() {
            debug!(endpoint = %self.name, devices = ?unknown, "Push for undeclared devices refused.");
            return (
                HttpIngestResult::UnknownDevice,
                text(
                    StatusCode::NOT_FOUND,
                    format!("not declared in [[devices]]: {}", unknown.join(", ")),
                ),
            );
        }
        let recorded = if items.is_empty() {
            HttpIngestResult::Ignored
        } else {
            HttpIngestResult::Accepted
        };
        if self.commit(items).await {
            (recorded, text(StatusCode::OK, "ok"))
        } else {
            (
                HttpIngestResult::NotCommitted,
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not recorded in time; send it again",
                ),
            )
        }
    }

    /// A message decoded for its declared device: `None` for a device not declared with the
    /// endpoint's profile (counted), `Some(None)` when nothing of it is to be recorded. Only
    /// the endpoint's own devices: its token must not write readings for the site's other
    /// devices (a Modbus breaker, an MQTT meter), nor decode them with a mapping not theirs.
    fn ingested(&self, message: &DeviceMessage, received_ns: i64) -> Option<Option<Ingested>> {
        let Some(tags) = message.candidate_ids().find_map(|id| {
            self.link
                .devices
                .get(id)
                .filter(|tags| tags.profile == self.profile)
        }) else {
            self.metrics
                .count_decode_error(DecodeErrorKind::UnknownDevice);
            return None;
        };
        let tags = Arc::new(tags.clone());
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        http::decode(
            &self.decoder,
            message,
            &tags,
            received_ns,
            &mut readings,
            &mut problems,
        );
        for problem in &problems {
            self.metrics.count_decode_error(problem.kind);
        }
        if let Some(problem) = problems.first() {
            debug!(endpoint = %self.name, device = %tags.device, reason = problem.kind.as_str(), error = %problem.detail, "Push not fully decoded.");
        }
        self.metrics
            .readings_decoded
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        let rejected = match (readings.is_empty(), problems.into_iter().next()) {
            (true, Some(problem)) => {
                let mut document = message.document_text();
                document.truncate(BAD_DOCUMENT_KEPT);
                Some(BadMessage {
                    at_ms: received_ns / 1_000_000,
                    source: format!("http/{}/{}", self.name, tags.device),
                    reason: problem.kind.as_str().to_string(),
                    detail: problem.detail,
                    payload: document,
                })
            }
            _ => None,
        };
        if readings.is_empty() && rejected.is_none() {
            return Some(None);
        }
        // Sent by the rules' store writer once the alarm transition is journaled; addressed by
        // the platform's own id of the device, which the command API takes.
        let device_ack = self.ack.as_ref().and_then(|ack| {
            let platform_id = message.device_id.as_deref().unwrap_or(&tags.device);
            command::platform_ack(
                &self.name,
                ack,
                platform_id,
                &readings,
                received_ns / 1_000_000_000,
            )
        });
        Some(Some(Ingested {
            readings: (!readings.is_empty()).then(|| readings.into()),
            rejected,
            ack: None,
            device_ack,
        }))
    }

    /// Hands the items downstream and waits for the outbox writer to acknowledge every one,
    /// within the endpoint's commit timeout. False when that did not happen: the platform is
    /// told to send the push again.
    async fn commit(&self, items: Vec<Ingested>) -> bool {
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        let mut committed = Vec::with_capacity(items.len());
        for mut item in items {
            let (done, acknowledged) = oneshot::channel::<()>();
            item.ack = Some(Ack::new(move || {
                let _ = done.send(());
            }));
            committed.push(acknowledged);
            match tokio::time::timeout_at(deadline, self.link.output.send(item)).await {
                Ok(Ok(())) => {}
                // Full beyond the timeout, or closed because the gateway is stopping.
                _ => return false,
            }
        }
        for acknowledged in committed {
            match tokio::time::timeout_at(deadline, acknowledged).await {
                Ok(Ok(())) => {}
                _ => {
                    warn!(endpoint = %self.name, timeout_s = self.commit_timeout.as_secs(), "A push was not committed in time; answered 503 for the platform to send it again.");
                    return false;
                }
            }
        }
        true
    }

    fn refused(&self, refusal: Refusal) -> (HttpIngestResult, Response) {
        match refusal {
            Refusal::BadToken => (
                HttpIngestResult::BadToken,
                text(StatusCode::FORBIDDEN, "wrong or missing token"),
            ),
            Refusal::BadSignature => (
                HttpIngestResult::BadSignature,
                text(StatusCode::FORBIDDEN, "the signature does not verify"),
            ),
            Refusal::Malformed(why) => (
                HttpIngestResult::Malformed,
                text(StatusCode::BAD_REQUEST, why),
            ),
        }
    }

    fn too_large(&self) -> (HttpIngestResult, Response) {
        (
            HttpIngestResult::TooLarge,
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {} bytes", self.max_body_bytes),
            ),
        )
    }
}

/// The body, or `None` once it grows past `limit` (the rest is not read).
async fn read_body(body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site with one CTWing endpoint (token `t0k-of-the-unit-tests`, commit timeout 1 s) and device `d1`.
    fn site() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("dir");
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(&profiles).expect("profiles");
        std::fs::write(
            profiles.join("smoke.toml"),
            "kind = \"smoke\"\n[payload]\n[[payload.fields]]\npointer = \"/smoke_pct\"\n\
             quantity = \"smoke_pct\"\ntype = \"float\"\n",
        )
        .expect("profile");
        std::fs::write(dir.path().join("token"), "t0k-of-the-unit-tests").expect("token");
        let site = "[gateway]\nprofiles_dir = \"profiles\"\nrule_files = []\n\
             [[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n\
             [[locations]]\nid = \"l\"\nenterprise = \"e\"\n\
             [[devices]]\nid = \"d1\"\nlocation = \"l\"\nprofile = \"smoke\"\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\
             [[http_ingest]]\nname = \"ct\"\nplatform = \"ctwing\"\npath = \"/ingest/ct\"\n\
             token = { file = \"token\" }\nprofile = \"smoke\"\ncommit_timeout_s = 1\n";
        let path = dir.path().join("site.toml");
        std::fs::write(&path, site).expect("site");
        let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
        (dir, config)
    }

    fn push(device: &str) -> Request {
        let body = format!(
            r#"{{"messageType":"dataReport","deviceId":"{device}","payload":{{"smoke_pct":2.5}}}}"#
        );
        Request::builder()
            .method(Method::POST)
            .uri("/ingest/ct?token=t0k-of-the-unit-tests")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request")
    }

    fn serving(
        config: &Config,
        output: mpsc::Sender<Ingested>,
    ) -> (Arc<Endpoint>, Arc<HttpIngestMetrics>) {
        let metrics = Metrics::for_config(config);
        let link = IngestLink {
            output,
            devices: Arc::new(DeviceDirectory::from_config(config)),
        };
        let endpoint = endpoints(config, link, &metrics)
            .expect("endpoints")
            .remove(0);
        (endpoint, metrics.http_ingest("ct"))
    }

    #[tokio::test]
    async fn a_push_is_answered_200_only_once_its_commit_is_acknowledged() {
        let (_dir, config) = site();
        let (tx, mut rx) = mpsc::channel(8);
        let (endpoint, counts) = serving(&config, tx);
        // The outbox writer's part: acknowledge after the "commit".
        let writer = tokio::spawn(async move {
            let item: Ingested = rx.recv().await.expect("the push");
            let readings = item.readings.clone().expect("readings");
            assert_eq!(readings[0].value, crate::model::Value::Float(2.5));
            assert_eq!(readings[0].tags.device, "d1");
            item.ack.expect("an acknowledgement to send").send();
            rx
        });
        let response = handle(Arc::clone(&endpoint), push("d1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(counts.get(HttpIngestResult::Accepted), 1);
        let _rx = writer.await.expect("writer");
    }

    #[tokio::test]
    async fn without_a_commit_in_time_the_platform_is_told_to_send_it_again() {
        let (_dir, config) = site();
        let (tx, mut rx) = mpsc::channel(8);
        let (endpoint, counts) = serving(&config, tx);
        // Taken but never acknowledged: a stalled store.
        let held = tokio::spawn(async move {
            let item = rx.recv().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(item);
        });
        let started = std::time::Instant::now();
        let response = handle(Arc::clone(&endpoint), push("d1")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(counts.get(HttpIngestResult::NotCommitted), 1);
        held.abort();

        // The pipeline gone (the gateway stopping): at once.
        let (tx, rx) = mpsc::channel(8);
        drop(rx);
        let (endpoint, counts) = serving(&config, tx);
        let response = handle(endpoint, push("d1")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(counts.get(HttpIngestResult::NotCommitted), 1);
    }

    #[tokio::test]
    async fn refusals_never_reach_the_pipeline() {
        let (_dir, config) = site();
        let (tx, mut rx) = mpsc::channel(8);
        let (endpoint, counts) = serving(&config, tx);
        let response = handle(Arc::clone(&endpoint), push("d2")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let mut wrong_token = push("d1");
        *wrong_token.uri_mut() = "/ingest/ct?token=t0K".parse().expect("uri");
        let response = handle(Arc::clone(&endpoint), wrong_token).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let announced_large = Request::builder()
            .method(Method::POST)
            .uri("/ingest/ct?token=t0k-of-the-unit-tests")
            .header(header::CONTENT_LENGTH, "70000")
            .body(Body::empty())
            .expect("request");
        let response = handle(Arc::clone(&endpoint), announced_large).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(counts.get(HttpIngestResult::UnknownDevice), 1);
        assert_eq!(counts.get(HttpIngestResult::BadToken), 1);
        assert_eq!(counts.get(HttpIngestResult::TooLarge), 1);
        assert!(rx.try_recv().is_err(), "nothing was handed on");
    }
}
