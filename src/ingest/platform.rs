//! Commands to devices through the carrier platforms' APIs: an `[[http_ingest]]` endpoint with
//! `ctwing_api` (CTWing CreateCommand) or `onenet_api` (OneNET Studio `call-service`) reaches
//! its devices this way, since NB-IoT detectors take no MQTT. Every request has a time limit;
//! a timeout, a connection error or an HTTP 5xx is tried again (three tries in all, jittered
//! backoff); each command's result is counted (`parkguard_platform_commands_total`) and logged.
//!
//! Owns: the HTTP client, the tries and the counting. Must not touch: the signing, the bodies
//! and the reading of answers (`ingest::http::command`, pure), nor when a command is due (the
//! caller sends a device's acknowledgement only once its alarm transition is journaled).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::http::command::{self, ApiPlatform, CommandError, DeviceCommand};
use crate::backoff::Backoff;
use crate::config::{HttpIngestConfig, Secret};
use crate::metrics::{CommandResult, Metrics, PlatformCommandMetrics};

/// Tries of one command, the first included.
pub const ATTEMPTS: u32 = 3;

/// Commands of one endpoint under way at once, at most. A platform that hangs holds each for
/// up to three time limits; beyond this many, new ones are not sent (counted `not_sent`)
/// rather than piling up tasks and connections while every detector retransmits.
pub const MAX_IN_FLIGHT: usize = 32;

/// One endpoint's platform API client.
pub struct PlatformApi {
    endpoint: String,
    api: Api,
    client: reqwest::Client,
    timeout: Duration,
    backoff: Backoff,
    metrics: Arc<PlatformCommandMetrics>,
    in_flight: AtomicUsize,
}

/// One command under way; counted down when it ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Api {
    Ctwing {
        url: String,
        app_key: String,
        secret: Option<String>,
        master_key: Option<String>,
        product_id: u64,
        operator: String,
        ttl_s: u32,
    },
    Onenet {
        url: String,
        product_id: String,
        access_key: Option<String>,
    },
}

fn value(secret: &Secret) -> Option<String> {
    secret.value().map(str::to_string)
}

impl PlatformApi {
    /// The client of `endpoint`'s platform API; `None` when it has no API credentials.
    pub fn for_endpoint(endpoint: &HttpIngestConfig, metrics: &Metrics) -> Option<PlatformApi> {
        let (api, timeout_s) = match (&endpoint.ctwing_api, &endpoint.onenet_api) {
            (Some(c), _) => (
                Api::Ctwing {
                    url: format!("{}{}", c.api_url, command::CTWING_COMMAND_PATH),
                    app_key: c.app_key.clone(),
                    secret: value(&c.app_secret),
                    master_key: value(&c.master_key),
                    product_id: c.product_id,
                    operator: c.operator.clone(),
                    ttl_s: c.ttl_s,
                },
                c.timeout_s,
            ),
            (None, Some(o)) => (
                Api::Onenet {
                    url: format!("{}{}", o.api_url, command::ONENET_CALL_SERVICE_PATH),
                    product_id: o.product_id.clone(),
                    access_key: value(&o.access_key),
                },
                o.timeout_s,
            ),
            (None, None) => return None,
        };
        let timeout = Duration::from_secs(timeout_s.max(1));
        // The builder fails only without a TLS backend, which the build always has; the
        // default client then carries no timeout, which the per-request limit below covers.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Some(PlatformApi {
            endpoint: endpoint.name.clone(),
            api,
            client,
            timeout,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(5)),
            metrics: metrics.platform_commands(&endpoint.name),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The first pause between tries (doubling, jittered); tests shorten it.
    pub fn with_retry_pause(mut self, initial: Duration) -> Self {
        self.backoff = Backoff::new(initial, initial * 8);
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `command` to the platform's device `device_id` (CTWing `deviceId`, OneNET Studio
    /// `deviceName`): the platform's id of the command when it took it. Counted and logged
    /// either way.
    pub async fn send(
        &self,
        device_id: &str,
        command: &DeviceCommand,
    ) -> Result<Option<String>, CommandError> {
        let result = if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            Err(CommandError::NotSent(format!(
                "{MAX_IN_FLIGHT} commands to the platform are already under way"
            )))
        } else {
            let _in_flight = InFlight(&self.in_flight);
            self.try_send(device_id, command).await
        };
        let counted = match &result {
            Ok(_) => CommandResult::Sent,
            Err(CommandError::Rejected { .. }) => CommandResult::Rejected,
            Err(CommandError::AuthFailed { .. }) => CommandResult::AuthFailed,
            Err(CommandError::Unreachable(_)) => CommandResult::Unreachable,
            Err(CommandError::NotSent(_)) => CommandResult::NotSent,
        };
        self.metrics.count(counted);
        match &result {
            Ok(id) => debug!(endpoint = %self.endpoint, device = device_id,
                command_id = id.as_deref().unwrap_or("?"), "Command taken by the platform."),
            Err(err) => warn!(endpoint = %self.endpoint, device = device_id, error = %err,
                "Command to the device not taken by the platform."),
        }
        result
    }

    async fn try_send(
        &self,
        device_id: &str,
        command: &DeviceCommand,
    ) -> Result<Option<String>, CommandError> {
        let mut backoff = self.backoff.clone();
        let mut attempt = 1;
        loop {
            // Signed afresh on every try: CTWing refuses an old timestamp.
            let (platform, request) = self.request(device_id, command)?;
            let result = self.exchange(platform, request).await;
            match result {
                Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                    attempt += 1;
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    let pause = backoff.next_delay();
                    debug!(endpoint = %self.endpoint, error = %err, ?pause,
                        "Platform API request failed; trying again.");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// The signed request for `command`, now.
    fn request(
        &self,
        device_id: &str,
        command: &DeviceCommand,
    ) -> Result<(ApiPlatform, reqwest::RequestBuilder), CommandError> {
        let missing = |what: &str| CommandError::NotSent(format!("no {what} was loaded"));
        match &self.api {
            Api::Ctwing {
                url,
                app_key,
                secret,
                master_key,
                product_id,
                operator,
                ttl_s,
            } => {
                let secret = secret.as_deref().ok_or_else(|| missing("app_secret"))?;
                let master_key = master_key.as_deref().ok_or_else(|| missing("master_key"))?;
                let body =
                    command::ctwing_command_body(command, device_id, operator, *product_id, *ttl_s);
                let headers = command::ctwing_command_headers(
                    app_key,
                    secret,
                    master_key,
                    crate::model::now_ms(),
                    &body,
                );
                let mut request = self.client.post(url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                Ok((ApiPlatform::Ctwing, request.body(body)))
            }
            Api::Onenet {
                url,
                product_id,
                access_key,
            } => {
                let access_key = access_key.as_deref().ok_or_else(|| missing("access_key"))?;
                let body = command::onenet_call_service_body(command, product_id, device_id)?;
                let et = crate::model::now_ms() / 1000 + command::ONENET_TOKEN_LIFETIME_S;
                let authorization = command::onenet_authorization(
                    access_key,
                    command::ONENET_TOKEN_VERSION,
                    &format!("products/{product_id}"),
                    et,
                    "sha1",
                )?;
                let request = self
                    .client
                    .post(url)
                    .header("authorization", authorization)
                    .header("Content-Type", "application/json")
                    .body(body);
                Ok((ApiPlatform::Onenet, request))
            }
        }
    }

    /// One request and its answer, within the time limit (the client's own covers the
    /// connection; this one the answer's body too).
    async fn exchange(
        &self,
        platform: ApiPlatform,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<String>, CommandError> {
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| CommandError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| CommandError::Unreachable(e.without_url().to_string()))?;
            command::read_answer(platform, status, &body)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CommandError::Unreachable(format!(
                "no answer within {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_beyond_the_cap_are_not_sent_and_are_counted() {
        let endpoint: HttpIngestConfig = toml::from_str(
            "name = \"ct\"\nplatform = \"ctwing\"\npath = \"/ingest/ct\"\n\
             token = { env = \"T\" }\nprofile = \"p\"\n[ctwing_api]\napp_key = \"k\"\n\
             app_secret = { env = \"S\" }\nmaster_key = { env = \"M\" }\nproduct_id = 1\n\
             api_url = \"http://127.0.0.1:9\"\n",
        )
        .expect("endpoint");
        let metrics = Metrics::new();
        let api = PlatformApi::for_endpoint(&endpoint, &metrics).expect("credentials");
        let command = DeviceCommand::Bytes(vec![1]);
        api.in_flight.store(MAX_IN_FLIGHT, Ordering::Relaxed);
        let refused = api.send("d", &command).await;
        assert!(
            matches!(refused, Err(CommandError::NotSent(_))),
            "{refused:?}"
        );
        assert_eq!(api.in_flight.load(Ordering::Relaxed), MAX_IN_FLIGHT);
        // Under the cap: tried, and (no secret was loaded here) not sent either; the count
        // comes back down.
        api.in_flight.store(0, Ordering::Relaxed);
        let unsigned = api.send("d", &command).await;
        assert!(
            matches!(unsigned, Err(CommandError::NotSent(_))),
            "{unsigned:?}"
        );
        assert_eq!(api.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(
            metrics.platform_commands("ct").get(CommandResult::NotSent),
            2
        );
    }
}
