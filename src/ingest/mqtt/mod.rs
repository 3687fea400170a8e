//! One task per MQTT connection: connect (TCP or TLS, MQTT 3.1.1 or 5), subscribe, decode each
//! message into readings and send them downstream; reconnect with backoff and jitter. Here is
//! the connection loop; messages become readings in `messages`, the two protocol versions are
//! `session`'s and TLS is `tls`'s. `parkguard mqtt tap` runs the same decoding
//! (`MqttIngest::tap`).
//!
//! rumqttc reconnects on the next `poll()` with no delay at all (rumqtt#703), so after an error
//! this task sleeps a jittered, growing delay before polling again. Subscriptions are sent again
//! on every CONNACK whose `session_present` is false: a broker that lost (or never kept) the
//! session would otherwise deliver nothing after a restart, silently.
//!
//! A bad message never stops the stream: it is counted by reason, logged at most once a minute
//! per device and reason (and at most `LOG_LINES_PER_MINUTE` lines a minute in all; both in
//! `messages`), and the next message is read. The client reaches the broker through
//! [`mqtt_guard`]'s relay, so an oversized message is a counted bad message too, never a broken
//! session.
//!
//! A connection counts as up only once it has stayed up for `STABLE_AFTER` (the status
//! module's): only then is the backoff reset, so a broker that accepts and drops connections
//! at once is retried with the same growing delay as one that refuses them, and the gateway
//! fault for a lost connection (G4, from `connected_since_ms`) is not cleared by a connection
//! that cannot stay up.
//!
//! [`mqtt_guard`]: crate::ingest::mqtt_guard

mod messages;
mod session;
mod tls;

use crate::backoff::Backoff;
use crate::config::devices::DeviceDirectory;
use crate::config::topic::TopicTemplate;
use crate::config::{Config, MqttConfig, MqttProtocol, UnknownDevices};
use crate::decode::payload::{DecodeError, DecodeErrorKind, PayloadDecoder};
use crate::health::Heartbeat;
use crate::ingest::downlink::{Downlinks, Publisher};
use crate::ingest::mqtt_guard::{self, Relay, Upstream};
use crate::ingest::{Ack, Ingested};
use crate::metrics::{Metrics, MqttMetrics};
use crate::model::{now_ns, BadMessage, DeviceAck, ReadingBatch, Tags};
pub use crate::status::STABLE_AFTER;
use bytes::Bytes;
use rumqttc::{QoS, TlsConfiguration, Transport};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use messages::*;
pub use session::client_id;
use session::*;
pub(crate) use tls::load_tls;
use tls::*;

/// What `MqttIngest::tap` saw.
#[derive(Debug)]
pub enum TapEvent {
    /// The broker confirmed the subscriptions.
    Subscribed(Vec<String>),
    /// A message and its readings; `problem` names a part that could not be decoded.
    Decoded {
        topic: String,
        readings: ReadingBatch,
        problem: Option<DecodeError>,
    },
    /// A message nothing could be read from, and why.
    Failed {
        topic: String,
        problem: Option<DecodeError>,
        payload: Vec<u8>,
    },
    /// Connection trouble.
    Problem(String),
}

/// Everything a connection task needs, prepared from the configuration before it starts.
pub struct MqttIngest {
    name: String,
    session: SessionSettings,
    upstream: Upstream,
    /// Where the relay's private socket directory goes.
    runtime_dir: PathBuf,
    heartbeat: Option<Arc<Heartbeat>>,
    downlinks: Option<Arc<Downlinks>>,
    /// The device acknowledgement the last message `handle_message` decoded asks for.
    last_device_ack: Option<DeviceAck>,
    routes: Vec<Route>,
    devices: Arc<DeviceDirectory>,
    metrics: Arc<Metrics>,
    conn_metrics: Arc<MqttMetrics>,
    log_limiter: LogLimiter,
    /// The last problem `handle_message` counted, for the record of a message that yielded
    /// nothing.
    last_problem: Option<DecodeError>,
}

impl MqttIngest {
    pub fn new(
        config: &Config,
        index: usize,
        devices: Arc<DeviceDirectory>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mqtt = config.site.mqtt[index].clone();
        let password = mqtt
            .password
            .as_ref()
            .and_then(crate::config::Secret::value)
            .map(str::to_string);
        let tls = match &mqtt.tls {
            None => None,
            Some(tls) => Some(relay_tls(config, tls)?),
        };
        let upstream = Upstream {
            host: mqtt.host.clone(),
            port: mqtt.port(),
            tls,
            // Two thirds of the client's own timeout, which covers CONNECT and CONNACK too:
            // the relay gives up on the broker before the client gives up on the relay.
            connect_timeout: Duration::from_millis(mqtt.connect_timeout_s.max(1) * 2000 / 3),
        };
        let protocol = mqtt.protocol(config.site.broker.embedded.as_ref().map(|b| b.listen));
        let embedded = super::broker::daemon_link_for(config, &mqtt);
        let (upstream, mqtt, password) = match embedded {
            Some(link) => {
                let mut mqtt = mqtt;
                let password = link.login.as_ref().map(|(_, p)| p.clone()).or(password);
                if let Some((user, _)) = &link.login {
                    mqtt.username = Some(user.clone());
                }
                let upstream = Upstream {
                    host: link.address.ip().to_string(),
                    port: link.address.port(),
                    tls: None,
                    ..upstream
                };
                (upstream, mqtt, password)
            }
            None => (upstream, mqtt, password),
        };
        let max_ahead_ns = i64::try_from(config.site.gateway.max_clock_ahead_s)
            .unwrap_or(i64::MAX / 2)
            * 1_000_000_000;
        let mut routes = Vec::new();
        for s in &mqtt.subscriptions {
            let template = TopicTemplate::parse(&s.topic).map_err(anyhow::Error::msg)?;
            let profile = config.profile(&s.profile)?;
            let mapping = profile
                .payload
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("profile `{}` has no payload mapping", s.profile))?;
            routes.push(Route {
                filter: template.filter(),
                template,
                decoder: PayloadDecoder::new(mapping, profile.measurement())
                    .map_err(|e| anyhow::anyhow!("profile `{}`: {e}", s.profile))?
                    .with_max_ahead_ns(max_ahead_ns),
                profile: s.profile.clone(),
                kind: profile.kind.clone(),
                max_payload_bytes: s.max_payload_bytes,
                unknown_devices: s.unknown_devices,
                ack: profile.ack.clone(),
                tags_by_topic: HashMap::new(),
            });
        }
        let client_id = client_id(config, &mqtt);
        let conn_metrics = metrics.mqtt(&mqtt.name);
        let status = StatusTopic::new(config, &mqtt.name);
        Ok(MqttIngest {
            name: mqtt.name.clone(),
            session: SessionSettings {
                config: mqtt,
                protocol,
                password,
                client_id,
                status,
            },
            upstream,
            runtime_dir: runtime_dir(),
            heartbeat: None,
            downlinks: None,
            last_device_ack: None,
            routes,
            devices,
            metrics,
            conn_metrics,
            log_limiter: LogLimiter::new(Duration::from_secs(60)),
            last_problem: None,
        })
    }

    /// Runs until `cancel` fires. Never returns early: every error is logged, counted and
    /// retried after a backoff.
    pub async fn run(mut self, output: mpsc::Sender<Ingested>, cancel: CancellationToken) {
        let relay = loop {
            match self.start_relay() {
                Ok(relay) => break relay,
                Err(err) => {
                    error!(connection = %self.name, error = %err, "Cannot start the MQTT relay; retrying in 5 s.");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        match self.session.protocol {
            MqttProtocol::V311 => {
                let session = v311::Session::new(&self.session, relay.socket());
                self.drive(session, &relay, output, cancel).await
            }
            MqttProtocol::V5 => {
                let session = v5::Session::new(&self.session, relay.socket());
                self.drive(session, &relay, output, cancel).await
            }
        }
    }

    /// Device acknowledgements go out through this connection's client, registered here.
    pub fn with_downlinks(mut self, downlinks: Arc<Downlinks>) -> Self {
        self.downlinks = Some(downlinks);
        self
    }

    /// The connection loop beats this heartbeat each time round.
    pub fn with_heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    fn start_relay(&self) -> std::io::Result<Relay> {
        Relay::start(
            &self.runtime_dir,
            self.upstream.clone(),
            self.session.config.max_packet_bytes,
            self.session.protocol == MqttProtocol::V5,
        )
    }

    async fn drive<S: Session>(
        &mut self,
        mut session: S,
        relay: &Relay,
        output: mpsc::Sender<Ingested>,
        cancel: CancellationToken,
    ) {
        if let Some(downlinks) = &self.downlinks {
            downlinks.register(&self.name, session.publisher());
        }
        // Each message holds a permit until the outbox writer has committed it; without one
        // the loop stops reading and the broker holds further messages.
        let unacked = Arc::new(Semaphore::new(usize::from(self.session.config.max_unacked)));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut down_since: Option<Instant> = None;
        let mut last_failure_log: Option<Instant> = None;
        let mut connected_at: Option<Instant> = None;
        let mut ever_connected = false;
        let mut awaiting_subacks = 0usize;
        // `poll()` returns at least once a keep-alive (a ping) while connected, and within
        // the connect timeout while connecting. It is never dropped half-way: dropping it
        // while connecting abandons the attempt (and leaves a half-open CONNECT behind).
        let poll_promise = Duration::from_secs(
            self.session.config.keepalive_s + self.session.config.connect_timeout_s,
        );
        let qos = match self.session.config.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        // Acknowledgements the client's queue had no room for, tried again before each poll
        // (which is what empties the queue): an acknowledgement is delayed, never dropped. (A
        // dropped one would leave the message in the broker's in-flight window for good, and
        // a full window stops the stream.)
        let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<TryAck>();
        let mut retry_acks: VecDeque<TryAck> = VecDeque::new();
        loop {
            while let Ok(ack) = retry_rx.try_recv() {
                retry_acks.push_back(ack);
            }
            while let Some(mut ack) = retry_acks.pop_front() {
                if !ack() {
                    retry_acks.push_front(ack);
                    break;
                }
            }
            if let Some(heartbeat) = &self.heartbeat {
                heartbeat.beat(poll_promise);
            }
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = session.poll() => event,
            };
            match event {
                Ok(SessionEvent::Connected { session_present }) => {
                    self.conn_metrics.connected.store(true, Ordering::Relaxed);
                    self.conn_metrics
                        .connected_since_ms
                        .store((now_ns() / 1_000_000).max(0) as u64, Ordering::Relaxed);
                    self.conn_metrics.connects.fetch_add(1, Ordering::Relaxed);
                    connected_at = Some(Instant::now());
                    match down_since.take() {
                        Some(since) if ever_connected => info!(
                            connection = %self.name,
                            attempts = backoff.attempts(),
                            down_for_s = since.elapsed().as_secs(),
                            session_present,
                            "MQTT connection recovered."
                        ),
                        _ => info!(connection = %self.name, session_present, "MQTT connected."),
                    }
                    ever_connected = true;
                    if let Some(status) = &self.session.status {
                        if let Err(err) = session.publish_retained(&status.topic, &status.online) {
                            warn!(connection = %self.name, topic = %status.topic, error = %err, "Cannot publish the gateway's status.");
                        }
                    }
                    if !session_present {
                        for route in &self.routes {
                            if let Err(err) = session.subscribe(&route.filter, qos) {
                                warn!(connection = %self.name, filter = %route.filter, error = %err, "MQTT subscribe failed.");
                            } else {
                                awaiting_subacks += 1;
                                self.conn_metrics.subscribes.fetch_add(1, Ordering::Relaxed);
                                debug!(connection = %self.name, filter = %route.filter, "Subscribed.");
                            }
                        }
                    }
                }
                Ok(SessionEvent::Publish {
                    topic,
                    payload,
                    ack,
                }) => {
                    let ack = match ack {
                        Some(mut try_ack) => {
                            let permit = tokio::select! {
                                _ = cancel.cancelled() => break,
                                permit = Arc::clone(&unacked).acquire_owned() => permit,
                            };
                            let Ok(permit) = permit else { break };
                            let retry = retry_tx.clone();
                            let deferred = Arc::clone(&self.conn_metrics);
                            Some(Ack::new(move || {
                                // Committed: the permit is free whether or not the client's
                                // queue has room for the acknowledgement right now.
                                drop(permit);
                                if !try_ack() {
                                    deferred.acks_deferred.fetch_add(1, Ordering::Relaxed);
                                    let _ = retry.send(try_ack);
                                }
                            }))
                        }
                        None => None,
                    };
                    let readings = self.handle_message(&topic, &payload);
                    let rejected = match (&readings, self.last_problem.take()) {
                        (None, Some(problem)) => Some(self.bad_message(&topic, &payload, problem)),
                        _ => None,
                    };
                    let item = Ingested {
                        readings,
                        rejected,
                        ack,
                        device_ack: self.last_device_ack.take(),
                    };
                    if output.send(item).await.is_err() {
                        // Downstream is gone: the daemon is shutting down.
                        break;
                    }
                }
                Ok(SessionEvent::Subscribed) => {
                    self.conn_metrics.subacks.fetch_add(1, Ordering::Relaxed);
                    awaiting_subacks = awaiting_subacks.saturating_sub(1);
                    if awaiting_subacks == 0 {
                        info!(connection = %self.name, subscriptions = self.routes.len(), "MQTT subscriptions confirmed by the broker.");
                    }
                }
                Ok(SessionEvent::Other) => {}
                Err(err) => {
                    self.conn_metrics.connected.store(false, Ordering::Relaxed);
                    self.conn_metrics
                        .connected_since_ms
                        .store(0, Ordering::Relaxed);
                    self.conn_metrics
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    awaiting_subacks = 0;
                    // Only a connection that stayed up counts as recovered: one that breaks
                    // right after connecting keeps the growing delay of failed connects.
                    if connected_at
                        .take()
                        .is_some_and(|at| at.elapsed() >= STABLE_AFTER)
                    {
                        backoff.reset();
                        last_failure_log = None;
                    }
                    // The relay knows what the broker side did; the client sees only a closed
                    // socket.
                    let err = match relay.take_error() {
                        Some(cause) => format!("{err} ({cause})"),
                        None => err,
                    };
                    let delay = backoff.next_delay();
                    let due = last_failure_log.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY);
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        last_failure_log = Some(Instant::now());
                        warn!(connection = %self.name, error = %err, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost; reconnecting with backoff.");
                    } else if due {
                        last_failure_log = Some(Instant::now());
                        warn!(connection = %self.name, error = %err, attempts = backoff.attempts(), down_for_s = down_since.map_or(0, |t| t.elapsed().as_secs()), retry_in_ms = delay.as_millis() as u64, "MQTT connection still failing (logged once a minute).");
                    } else {
                        debug!(connection = %self.name, error = %err, attempt = backoff.attempts(), "MQTT reconnect failed.");
                    }
                    if let Some(heartbeat) = &self.heartbeat {
                        heartbeat.beat(delay + poll_promise);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.conn_metrics.connected.store(false, Ordering::Relaxed);
        self.conn_metrics
            .connected_since_ms
            .store(0, Ordering::Relaxed);
        // A clean DISCONNECT discards the last will: say `offline` ourselves.
        if let Some(status) = &self.session.status {
            let _ = session.publish_retained(&status.topic, &status.offline);
        }
        session.disconnect().await;
        info!(connection = %self.name, "MQTT ingest stopped.");
    }

    /// Watches the broker for the technician (`parkguard mqtt tap`): subscribes to `filter`
    /// (or to the configuration's own subscriptions) with QoS 0 and a clean session under a
    /// client id of its own, so the daemon's session is not disturbed, and reports how each
    /// message decodes. Ends with `cancel` or when `report` returns false.
    pub async fn tap(
        mut self,
        filter: Option<String>,
        cancel: CancellationToken,
        mut report: impl FnMut(TapEvent) -> bool,
    ) {
        let suffix: u32 = rand::random();
        self.session.client_id = format!("parkguard-tap-{suffix:08x}");
        self.session.config.persistent_session = false;
        self.session.config.qos = 0;
        self.session.status = None;
        let filters: Vec<String> = match filter {
            Some(filter) => vec![filter],
            None => self.routes.iter().map(|r| r.filter.clone()).collect(),
        };
        let relay = match self.start_relay() {
            Ok(relay) => relay,
            Err(err) => {
                report(TapEvent::Problem(format!(
                    "cannot start the MQTT relay: {err}"
                )));
                return;
            }
        };
        match self.session.protocol {
            MqttProtocol::V311 => {
                let session = v311::Session::new(&self.session, relay.socket());
                self.tap_with(session, &filters, cancel, report).await
            }
            MqttProtocol::V5 => {
                let session = v5::Session::new(&self.session, relay.socket());
                self.tap_with(session, &filters, cancel, report).await
            }
        }
    }

    async fn tap_with<S: Session>(
        &mut self,
        mut session: S,
        filters: &[String],
        cancel: CancellationToken,
        mut report: impl FnMut(TapEvent) -> bool,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = session.poll() => event,
            };
            let keep_going = match event {
                Ok(SessionEvent::Connected { .. }) => {
                    backoff.reset();
                    for filter in filters {
                        if let Err(err) = session.subscribe(filter, QoS::AtMostOnce) {
                            report(TapEvent::Problem(format!(
                                "cannot subscribe to {filter}: {err}"
                            )));
                        }
                    }
                    true
                }
                Ok(SessionEvent::Subscribed) => report(TapEvent::Subscribed(filters.to_vec())),
                Ok(SessionEvent::Publish {
                    topic,
                    payload,
                    ack,
                }) => {
                    if let Some(mut ack) = ack {
                        let _ = ack();
                    }
                    let topic_text = String::from_utf8_lossy(&topic).to_string();
                    match self.handle_message(&topic, &payload) {
                        Some(readings) => report(TapEvent::Decoded {
                            topic: topic_text,
                            readings,
                            problem: self.last_problem.take(),
                        }),
                        None => report(TapEvent::Failed {
                            topic: topic_text,
                            problem: self.last_problem.take(),
                            payload: payload.to_vec(),
                        }),
                    }
                }
                Ok(SessionEvent::Other) => true,
                Err(err) => {
                    let keep_going = report(TapEvent::Problem(format!(
                        "connection to {}:{} failed: {err}; retrying",
                        self.session.config.host,
                        self.session.config.port()
                    )));
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    keep_going
                }
            };
            if !keep_going {
                break;
            }
        }
        session.disconnect().await;
    }
}

struct SessionSettings {
    config: MqttConfig,
    protocol: MqttProtocol,
    password: Option<String>,
    client_id: String,
    /// The retained status topic and its `online` and `offline` (last will) payloads.
    status: Option<StatusTopic>,
}

#[derive(Clone)]
struct StatusTopic {
    topic: String,
    online: Vec<u8>,
    offline: Vec<u8>,
}

impl StatusTopic {
    fn new(config: &Config, connection: &str) -> Option<Self> {
        let gateway = &config.site.gateway;
        if gateway.status_topic.is_empty() {
            return None;
        }
        let payload = |state: &str| {
            json!({
                "state": state,
                "gateway": gateway.name,
                "version": env!("CARGO_PKG_VERSION"),
                "connection": connection,
            })
            .to_string()
            .into_bytes()
        };
        Some(StatusTopic {
            topic: gateway.status_topic.replace("{gateway}", &gateway.name),
            online: payload("online"),
            offline: payload("offline"),
        })
    }
}

/// A connection that keeps failing is logged again this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_ids_logs_a_bounded_number_of_lines_and_keeps_no_more_keys() {
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        let mut logged = 0;
        for i in 0..200_000 {
            if limiter
                .allow(&format!("ghost-{i}"), DecodeErrorKind::UnknownDevice)
                .0
            {
                logged += 1;
            }
        }
        assert_eq!(logged, LOG_LINES_PER_MINUTE);
        assert_eq!(limiter.logged.len(), LOG_LINES_PER_MINUTE as usize);
        assert_eq!(
            limiter.suppressed,
            200_000 - u64::from(LOG_LINES_PER_MINUTE)
        );
    }

    #[test]
    fn one_device_and_reason_is_logged_once_per_interval_and_a_summary_follows() {
        let mut limiter = LogLimiter::new(Duration::from_millis(30));
        assert_eq!(limiter.allow("m1", DecodeErrorKind::BadJson), (true, 0));
        assert_eq!(limiter.allow("m1", DecodeErrorKind::BadJson), (false, 0));
        assert_eq!(limiter.allow("m1", DecodeErrorKind::WrongType), (true, 0));
        for i in 0..LOG_LINES_PER_MINUTE {
            limiter.allow(&format!("d{i}"), DecodeErrorKind::BadJson);
        }
        std::thread::sleep(Duration::from_millis(40));
        // The interval turned: the key may log again, and the suppressed count is reported.
        let (log, summary) = limiter.allow("m1", DecodeErrorKind::BadJson);
        assert!(log);
        assert_eq!(summary, 2);
    }
}
