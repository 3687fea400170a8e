//! One task per MQTT connection: connect (TCP or TLS, MQTT 3.1.1 or 5), subscribe, decode each
//! message into readings and send them downstream; reconnect with backoff and jitter.
//!
//! rumqttc reconnects on the next `poll()` with no delay at all (rumqtt#703), so after an error
//! this task sleeps a jittered, growing delay before polling again. Subscriptions are sent again
//! on every CONNACK whose `session_present` is false: a broker that lost (or never kept) the
//! session would otherwise deliver nothing after a restart, silently.
//!
//! A bad message never stops the stream: it is counted by reason, logged at most once a minute
//! per device and reason (and at most `LOG_LINES_PER_MINUTE` lines a minute in all), and the
//! next message is read. The client reaches the broker through [`mqtt_guard`]'s relay, so an
//! oversized message is a counted bad message too, never a broken session.
//!
//! A connection counts as up only once it has stayed up for `STABLE_AFTER`: only then is the
//! backoff reset, so a broker that accepts and drops connections at once is retried with the
//! same growing delay as one that refuses them, and the gateway fault for a lost connection
//! (G4, from `connected_since_ms`) is not cleared by a connection that cannot stay up.
//!
//! [`mqtt_guard`]: crate::ingest::mqtt_guard

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{QoS, TlsConfiguration, Transport};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

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

pub use crate::status::STABLE_AFTER;
/// A connection that keeps failing is logged again this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

struct Route {
    template: TopicTemplate,
    filter: String,
    decoder: PayloadDecoder,
    profile: String,
    kind: String,
    max_payload_bytes: usize,
    unknown_devices: UnknownDevices,
    /// The profile's acknowledgement of alarm messages on the device's downlink.
    ack: Option<crate::config::DeviceAckConfig>,
    /// Tags per topic: built once per device and topic, then shared by all its readings. The
    /// problem (unknown device) is kept too, so that every message of such a device is counted.
    tags_by_topic: HashMap<String, (Option<Arc<Tags>>, Option<DecodeError>)>,
}

/// Problem lines logged per minute over all devices; the counters still see every problem.
const LOG_LINES_PER_MINUTE: u32 = 50;

/// Logs a given (device, reason) at most once per interval, and at most
/// `LOG_LINES_PER_MINUTE` lines per interval in all; the counters still see every problem.
/// Constant time per problem and bounded memory whatever a flood of distinct ids does: keys
/// are remembered only when a line is logged, and forgotten when the interval turns.
struct LogLimiter {
    interval: Duration,
    window_started: Instant,
    logged: HashSet<u64>,
    lines: u32,
    suppressed: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl LogLimiter {
    fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            window_started: Instant::now(),
            logged: HashSet::new(),
            lines: 0,
            suppressed: 0,
            hasher: Default::default(),
        }
    }

    /// True when this problem may be logged. Returns the number of problems that were not
    /// logged in the window that just ended, for one summary line.
    fn allow(&mut self, device: &str, kind: DecodeErrorKind) -> (bool, u64) {
        let now = Instant::now();
        let mut summary = 0;
        if now.duration_since(self.window_started) >= self.interval {
            summary = std::mem::take(&mut self.suppressed);
            self.logged.clear();
            self.lines = 0;
            self.window_started = now;
        }
        let mut h = self.hasher.build_hasher();
        device.hash(&mut h);
        kind.hash(&mut h);
        let key = h.finish();
        if self.logged.contains(&key) {
            return (false, summary);
        }
        if self.lines >= LOG_LINES_PER_MINUTE {
            self.suppressed += 1;
            return (false, summary);
        }
        self.lines += 1;
        self.logged.insert(key);
        (true, summary)
    }
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

    /// Decodes one message. Returns the readings to send on, or `None` when nothing is left of it.
    pub fn handle_message(&mut self, topic: &[u8], payload: &[u8]) -> Option<ReadingBatch> {
        self.last_problem = None;
        self.last_device_ack = None;
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        let received_ns = now_ns();
        let topic = String::from_utf8_lossy(topic);
        let Some(route_index) = self
            .routes
            .iter()
            .position(|r| r.template.capture(&topic).is_some())
        else {
            self.count_problem(
                &topic,
                &DecodeError::new(
                    DecodeErrorKind::UnknownTopic,
                    format!("topic `{topic}` matches no subscription"),
                ),
            );
            return None;
        };
        let route = &self.routes[route_index];
        if let Some(oversized) = mqtt_guard::oversized(payload) {
            let err = DecodeError::new(
                DecodeErrorKind::TooLarge,
                format!(
                    "{} bytes, over the connection's max_packet_bytes {}; discarded unread",
                    oversized.size, self.session.config.max_packet_bytes
                ),
            );
            self.count_problem(&topic, &err);
            return None;
        }
        if payload.len() > route.max_payload_bytes {
            let err = DecodeError::new(
                DecodeErrorKind::TooLarge,
                format!("{} bytes, limit {}", payload.len(), route.max_payload_bytes),
            );
            self.count_problem(&topic, &err);
            return None;
        }
        let parsed = match route.decoder.parse(payload) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.count_problem(&topic, &err);
                return None;
            }
        };
        let (tags, problem) = match route.tags_by_topic.get(topic.as_ref()) {
            Some(cached) => cached.clone(),
            None => {
                let payload_device = route.decoder.device_id(&parsed).map(|d| d.into_owned());
                let resolved = match build_tags(
                    route,
                    &self.devices,
                    &topic,
                    payload_device.as_deref(),
                ) {
                    Ok(tags) => (Some(Arc::new(tags)), None),
                    Err(err) => {
                        let accept = err.kind == DecodeErrorKind::UnknownDevice
                            && route.unknown_devices == UnknownDevices::Accept;
                        let tags = accept.then(|| {
                            build_tags_unchecked(route, &topic, payload_device.as_deref())
                        });
                        match tags {
                            Some(tags) if self.devices.admit_unknown(&tags.device) => {
                                (Some(Arc::new(tags)), Some(err))
                            }
                            Some(tags) => {
                                let over = DecodeError::new(
                                        DecodeErrorKind::UnknownOverCap,
                                        format!(
                                            "device `{}` is not declared and {} unknown devices are already accepted (gateway.max_unknown_devices)",
                                            tags.device,
                                            self.devices.unknown_cap()
                                        ),
                                    );
                                self.count_problem(&tags.device, &over);
                                return None;
                            }
                            None => (None, Some(err)),
                        }
                    }
                };
                // Payload-named devices can differ per message on one topic: no caching then.
                // Refusals are not cached either: a flood of made-up ids must not fill it.
                let route = &mut self.routes[route_index];
                if !route.decoder.names_device_in_payload() && resolved.0.is_some() {
                    if route.tags_by_topic.len() >= TAGS_CACHED {
                        route.tags_by_topic.clear();
                    }
                    route
                        .tags_by_topic
                        .insert(topic.to_string(), resolved.clone());
                }
                resolved
            }
        };
        if let Some(problem) = &problem {
            let device = tags
                .as_ref()
                .map(|t| t.device.clone())
                .unwrap_or_else(|| topic.to_string());
            self.count_problem(&device, problem);
        }
        let tags = tags?;
        let route = &self.routes[route_index];
        let mut readings = Vec::with_capacity(16);
        let mut problems = Vec::new();
        route
            .decoder
            .readings(&parsed, &tags, received_ns, &mut readings, &mut problems);
        for problem in &problems {
            self.count_problem(&tags.device, problem);
        }
        if readings.is_empty() {
            return None;
        }
        let route = &self.routes[route_index];
        if let Some(ack) = &route.ack {
            self.last_device_ack = device_ack(&self.name, route, ack, &topic, &tags, &readings);
        }
        self.metrics
            .readings_decoded
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        Some(readings.into())
    }

    fn bad_message(&self, topic: &[u8], payload: &[u8], problem: DecodeError) -> BadMessage {
        // A stand-in for an oversized message keeps the original's head, never the marker.
        let payload = mqtt_guard::oversized(payload).map_or(payload, |o| o.head);
        BadMessage {
            at_ms: now_ns() / 1_000_000,
            source: format!("mqtt/{}/{}", self.name, String::from_utf8_lossy(topic)),
            reason: problem.kind.as_str().to_string(),
            detail: problem.detail,
            payload: payload[..payload.len().min(BAD_PAYLOAD_KEPT)].to_vec(),
        }
    }

    fn count_problem(&mut self, device: &str, err: &DecodeError) {
        self.last_problem = Some(err.clone());
        self.metrics.count_decode_error(err.kind);
        let (log, suppressed) = self.log_limiter.allow(device, err.kind);
        if suppressed > 0 {
            warn!(connection = %self.name, not_logged = suppressed, "More messages could not be decoded than are logged; see the decode error counters.");
        }
        if log {
            warn!(connection = %self.name, device = %device, reason = err.kind.as_str(), error = %err.detail, "Message could not be fully decoded (logged once a minute per device and reason).");
        }
    }
}

fn build_tags_unchecked(route: &Route, topic: &str, device: Option<&str>) -> Tags {
    let mut tags = Tags {
        kind: route.kind.clone(),
        profile: route.profile.clone(),
        ..Tags::default()
    };
    for (name, value) in route.template.capture(topic).unwrap_or_default() {
        match name {
            "park" => tags.park = value.to_string(),
            "enterprise" => tags.enterprise = value.to_string(),
            "location" => tags.location = value.to_string(),
            "device" => tags.device = value.to_string(),
            "kind" => tags.kind = value.to_string(),
            other => tags.extra.push((other.to_string(), value.to_string())),
        }
    }
    if tags.device.is_empty() {
        if let Some(device) = device {
            tags.device = device.to_string();
        }
    }
    tags.extra.sort();
    tags
}

/// Tags for a message: topic levels first, then the declared device's place in the site,
/// which wins over what the topic says.
fn build_tags(
    route: &Route,
    devices: &DeviceDirectory,
    topic: &str,
    payload_device: Option<&str>,
) -> Result<Tags, DecodeError> {
    let mut tags = build_tags_unchecked(route, topic, payload_device);
    if tags.device.is_empty() {
        return Err(DecodeError::new(
            DecodeErrorKind::NoDevice,
            format!("topic `{topic}` has no {{device}} level and the payload names none"),
        ));
    }
    match devices.get(&tags.device) {
        Some(declared) => {
            let extra = std::mem::take(&mut tags.extra);
            tags = declared.clone();
            tags.extra = extra;
            Ok(tags)
        }
        None => Err(DecodeError::new(
            DecodeErrorKind::UnknownDevice,
            format!("device `{}` is not declared in [[devices]]", tags.device),
        )),
    }
}

/// The acknowledgement a message asks for: when its `ack.quantity` is one of `ack.states`,
/// the profile's topic and payload with the topic's levels, the state and the time filled in.
fn device_ack(
    connection: &str,
    route: &Route,
    ack: &crate::config::DeviceAckConfig,
    topic: &str,
    tags: &Tags,
    readings: &[crate::model::Reading],
) -> Option<DeviceAck> {
    let state = readings.iter().find_map(|r| match &r.value {
        crate::model::Value::Text(t) if *r.quantity == *ack.quantity => {
            ack.states.iter().any(|s| **s == **t).then_some(t)
        }
        _ => None,
    })?;
    let mut fields: Vec<(String, String)> = route
        .template
        .capture(topic)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    if !fields.iter().any(|(name, _)| name == "device") {
        fields.push(("device".into(), tags.device.clone()));
    }
    fields.push(("event".into(), state.to_string()));
    fields.push(("ts".into(), (now_ns() / 1_000_000_000).to_string()));
    let fill = |template: &str| {
        fields
            .iter()
            .fold(template.to_string(), |text, (name, value)| {
                text.replace(&format!("{{{name}}}"), value)
            })
    };
    Some(DeviceAck {
        connection: connection.to_string(),
        topic: fill(&ack.topic),
        payload: fill(&ack.payload).into_bytes(),
    })
}

/// Topics whose tags are cached per subscription; the cache starts afresh beyond this.
const TAGS_CACHED: usize = 50_000;

/// Where private sockets go: systemd's `RuntimeDirectory=`, else the temporary folder.
fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| {
            std::env::split_paths(&dirs)
                .next()
                .filter(|d| !d.as_os_str().is_empty())
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// The relay's TLS settings for `[mqtt.tls]`.
fn relay_tls(
    config: &Config,
    tls: &crate::config::MqttTlsConfig,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let read = |p: &Path| {
        let full = config.resolve_path(p);
        std::fs::read(&full).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", full.display()))
    };
    let ca = read(&tls.ca)?;
    let client = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    mqtt_guard::tls_config(
        &ca,
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .map_err(anyhow::Error::msg)
}

pub(crate) fn load_tls(
    config: &Config,
    tls: &crate::config::MqttTlsConfig,
) -> anyhow::Result<TlsConfiguration> {
    let read = |p: &Path| {
        let full = config.resolve_path(p);
        std::fs::read(&full).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", full.display()))
    };
    let ca = read(&tls.ca)?;
    let client_auth = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}

/// What a protocol-specific session reports to the shared connection loop.
pub enum SessionEvent {
    Connected {
        session_present: bool,
    },
    /// `ack` is set for QoS 1 and 2: the message stays unacknowledged until it is called.
    Publish {
        topic: Bytes,
        payload: Bytes,
        ack: Option<TryAck>,
    },
    Subscribed,
    Other,
}

/// Hands a PUBACK to the client's request queue; false when the queue is full (the event loop
/// has not been polled for a while), so that it is tried again instead of lost.
pub type TryAck = Box<dyn FnMut() -> bool + Send>;

/// The part of an MQTT client that differs between protocol versions.
trait Session {
    async fn poll(&mut self) -> Result<SessionEvent, String>;
    fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String>;
    /// Queues a retained QoS 1 message (the gateway's status).
    fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String>;
    /// Queues QoS 1 messages from elsewhere (device acknowledgements).
    fn publisher(&self) -> Publisher;
    async fn disconnect(&mut self);
}

// How long a clean DISCONNECT may take at shutdown before the connection is simply dropped.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
// Requests queued towards the event loop beyond one acknowledgement per unacknowledged
// message (subscriptions, disconnect): neither acknowledging nor subscribing ever waits on it.
const CLIENT_REQUEST_HEADROOM: usize = 256;
// QoS 1 publications the MQTT 5 ingest client may have unacknowledged: its status messages.
const OUTGOING_INFLIGHT: u16 = 32;
// Bytes of an undecodable payload kept in the store for inspection.
const BAD_PAYLOAD_KEPT: usize = 1024;
// MQTT 5 session expiry for a persistent session: a week covers a long outage of the gateway.
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// The client id of connection `mqtt`: as configured, else `<gateway>-<connection>`.
pub fn client_id(config: &Config, mqtt: &MqttConfig) -> String {
    mqtt.client_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", config.site.gateway.name, mqtt.name))
}

mod v311 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

    pub struct Session {
        client: AsyncClient,
        eventloop: EventLoop,
    }

    impl Session {
        pub fn new(s: &SessionSettings, relay: &Path) -> Self {
            let c = &s.config;
            let mut options =
                MqttOptions::new(&s.client_id, relay.to_string_lossy().into_owned(), 0);
            options
                .set_transport(Transport::Unix)
                .set_keep_alive(Duration::from_secs(c.keepalive_s))
                .set_clean_session(!c.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(
                    mqtt_guard::client_packet_limit(c.max_packet_bytes),
                    c.max_packet_bytes,
                );
            if let Some(user) = &c.username {
                options.set_credentials(user, s.password.clone().unwrap_or_default());
            }
            if let Some(status) = &s.status {
                options.set_last_will(rumqttc::LastWill::new(
                    &status.topic,
                    status.offline.clone(),
                    QoS::AtLeastOnce,
                    true,
                ));
            }
            let capacity = usize::from(c.max_unacked) + CLIENT_REQUEST_HEADROOM;
            let (client, mut eventloop) = AsyncClient::new(options, capacity);
            eventloop
                .network_options
                .set_connection_timeout(c.connect_timeout_s);
            Session { client, eventloop }
        }
    }

    impl super::Session for Session {
        async fn poll(&mut self) -> Result<SessionEvent, String> {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(SessionEvent::Connected {
                    session_present: ack.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != QoS::AtMostOnce).then(|| {
                        let client = self.client.clone();
                        // An acknowledgement needs the packet id, not the payload.
                        let mut publish = p.clone();
                        publish.payload = Bytes::new();
                        Box::new(move || client.try_ack(&publish).is_ok()) as TryAck
                    });
                    Ok(SessionEvent::Publish {
                        topic: Bytes::copy_from_slice(p.topic.as_bytes()),
                        payload: p.payload,
                        ack,
                    })
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Ok(SessionEvent::Subscribed),
                Ok(_) => Ok(SessionEvent::Other),
                Err(err) => Err(err.to_string()),
            }
        }

        fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
            self.client
                .try_subscribe(filter, qos)
                .map_err(|e| e.to_string())
        }

        fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.client
                .try_publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
                .map_err(|e| e.to_string())
        }

        fn publisher(&self) -> Publisher {
            let client = self.client.clone();
            Arc::new(move |topic: &str, payload: Vec<u8>| {
                client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                    .map_err(|e| e.to_string())
            })
        }

        async fn disconnect(&mut self) {
            if self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
                    while self.eventloop.poll().await.is_ok() {}
                })
                .await;
            }
        }
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub struct Session {
        client: AsyncClient,
        eventloop: EventLoop,
    }

    impl Session {
        pub fn new(s: &SessionSettings, relay: &Path) -> Self {
            let c = &s.config;
            let mut options =
                MqttOptions::new(&s.client_id, relay.to_string_lossy().into_owned(), 0);
            // MQTT's own maximum is announced, so that the broker delivers every message,
            // whatever its size: the relay shrinks the oversized ones into counted bad
            // messages instead of the broker dropping them unseen.
            options
                .set_transport(Transport::Unix)
                .set_keep_alive(Duration::from_secs(c.keepalive_s))
                .set_clean_start(!c.persistent_session)
                .set_manual_acks(true)
                .set_receive_maximum(Some(c.max_unacked))
                // The client keeps a slot per packet id it may have in flight, 65,535 by
                // default (14 MB); this session publishes only the gateway's status.
                .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
                .set_max_packet_size(Some(mqtt_guard::MQTT_MAX_PACKET as u32))
                .set_connection_timeout(c.connect_timeout_s);
            if c.persistent_session {
                options.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            if let Some(user) = &c.username {
                options.set_credentials(user, s.password.clone().unwrap_or_default());
            }
            if let Some(status) = &s.status {
                options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    &status.topic,
                    status.offline.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            let capacity = usize::from(c.max_unacked) + CLIENT_REQUEST_HEADROOM;
            let (client, eventloop) = AsyncClient::new(options, capacity);
            Session { client, eventloop }
        }
    }

    impl super::Session for Session {
        async fn poll(&mut self) -> Result<SessionEvent, String> {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(SessionEvent::Connected {
                    session_present: ack.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then(|| {
                        let client = self.client.clone();
                        // An acknowledgement needs the packet id, not the payload.
                        let mut publish = p.clone();
                        publish.payload = Bytes::new();
                        Box::new(move || client.try_ack(&publish).is_ok()) as TryAck
                    });
                    Ok(SessionEvent::Publish {
                        topic: p.topic,
                        payload: p.payload,
                        ack,
                    })
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Ok(SessionEvent::Subscribed),
                Ok(_) => Ok(SessionEvent::Other),
                Err(err) => Err(err.to_string()),
            }
        }

        fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
            let qos = match qos {
                QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
            };
            self.client
                .try_subscribe(filter, qos)
                .map_err(|e| e.to_string())
        }

        fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.client
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    payload.to_vec(),
                )
                .map_err(|e| e.to_string())
        }

        fn publisher(&self) -> Publisher {
            let client = self.client.clone();
            Arc::new(move |topic: &str, payload: Vec<u8>| {
                client
                    .try_publish(
                        topic,
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .map_err(|e| e.to_string())
            })
        }

        async fn disconnect(&mut self) {
            if self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
                    while self.eventloop.poll().await.is_ok() {}
                })
                .await;
            }
        }
    }
}

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
