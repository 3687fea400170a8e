//! Self-metrics: counters every stage bumps, read by the shutdown report, `parkguard status`,
//! tests and the `/metrics` endpoint, and their rendering as Prometheus text (the families in
//! `render`, the exposition writer and its checker in `exposition`).
//!
//! Owns: the counters, the names, types, labels and help of the Prometheus families (the
//! reference is docs/metrics.md; a test keeps the two in step), and the exposition writer and
//! its checker. Must not touch: anything else; stages hold an `Arc<Metrics>` and only add.
//!
//! Every label value that can occur is exported from start-up, at 0 until it first happens
//! (`Metrics::for_config` registers the configured sinks, connections and routes), so that
//! `rate()` and `absent()` work. Ages, not timestamps: a 0 timestamp for "nothing waiting"
//! would read as 1970 and keep `time() - x > 300` firing.

mod exposition;
mod render;
#[cfg(test)]
mod tests;

pub use exposition::{
    check_exposition, documented_families, exposed_families, PrometheusText, PREFIX,
};

use crate::config::{Config, Severity};
use crate::decode::payload::DecodeErrorKind;
use crate::model::alarm::AlarmState;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Metrics {
    /// MQTT messages received, whatever became of them.
    pub messages_received: AtomicU64,
    /// Readings that left decoding.
    pub readings_decoded: AtomicU64,
    decode_errors: [AtomicU64; DecodeErrorKind::ALL.len()],
    /// Readings that could not be encoded as line protocol (non-finite values).
    pub readings_unencodable: AtomicU64,
    /// Transactions of the ingest path committed to the outbox.
    pub outbox_commits: AtomicU64,
    /// Outbox commits that failed and were retried (disk full, I/O errors).
    pub outbox_commit_failures: AtomicU64,
    /// Readings committed to the outbox.
    pub outbox_points_committed: AtomicU64,
    /// Readings deleted from a full outbox before every sink had them.
    pub outbox_points_evicted: AtomicU64,
    /// Of those, readings of a new batch that did not fit even after eviction.
    pub outbox_points_dropped: AtomicU64,
    /// Times the outbox was full and evicted telemetry.
    pub outbox_evictions: AtomicU64,
    /// Bytes (compressed) in the outbox now.
    pub outbox_bytes: AtomicU64,
    /// Readings the rule engine evaluated.
    pub readings_evaluated: AtomicU64,
    /// Alarm transitions (raised, cleared, acknowledged, ...).
    pub alarm_transitions: AtomicU64,
    /// Failed writes of alarm state and journal to the SQLite store.
    pub store_errors: AtomicU64,
    /// Alarm pushes queued (one per transition, route, channel and e-mail recipient).
    pub alerts_queued: AtomicU64,
    /// Alarm pushes a receiver took.
    pub alerts_delivered: AtomicU64,
    /// Failed push attempts (each retried until the route's give-up time).
    pub alerts_send_failures: AtomicU64,
    /// Alarm pushes given up after the route's give-up time.
    pub alerts_given_up: AtomicU64,
    /// Sends that carried several pushes as one digest (rate limit reached).
    pub alerts_digests: AtomicU64,
    /// Alarm pushes waiting in the queue now.
    pub alerts_pending: AtomicU64,
    /// True while the store refuses the alarm journal's writes (disk full, read-only
    /// filesystem, I/O errors).
    pub journal_store_failing: AtomicBool,
    /// True while the store refuses the outbox's commits.
    pub outbox_store_failing: AtomicBool,
    /// Per alert route: when its oldest undelivered critical push was queued (ms since the
    /// epoch); absent when it has none.
    pub alerts_oldest_critical: Mutex<BTreeMap<String, i64>>,
    /// The configured alert routes, exported from start-up (the map above only holds the
    /// routes that have a critical push waiting).
    routes: Mutex<BTreeSet<String>>,
    sinks: Mutex<BTreeMap<String, Arc<SinkMetrics>>>,
    mqtt: Mutex<BTreeMap<String, Arc<MqttMetrics>>>,
    modbus: Mutex<BTreeMap<String, Arc<ModbusMetrics>>>,
    http_ingest: Mutex<BTreeMap<String, Arc<HttpIngestMetrics>>>,
    platform_commands: Mutex<BTreeMap<String, Arc<PlatformCommandMetrics>>>,
}

/// What became of a command to a device through a carrier platform's API (an
/// `[[http_ingest]]` endpoint's `ctwing_api` or `onenet_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// The platform took it (`code` 0).
    Sent,
    /// The platform understood it and refused it (a non-zero `code`).
    Rejected,
    /// The platform refused the credentials.
    AuthFailed,
    /// No answer after every try (timeouts, connection errors, HTTP 5xx).
    Unreachable,
    /// Not sent: it could not be built (no secret, a bad access key, bytes for OneNET).
    NotSent,
}

impl CommandResult {
    pub const ALL: [CommandResult; 5] = [
        CommandResult::Sent,
        CommandResult::Rejected,
        CommandResult::AuthFailed,
        CommandResult::Unreachable,
        CommandResult::NotSent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandResult::Sent => "sent",
            CommandResult::Rejected => "rejected",
            CommandResult::AuthFailed => "auth_failed",
            CommandResult::Unreachable => "unreachable",
            CommandResult::NotSent => "not_sent",
        }
    }
}

/// Commands through one endpoint's platform API, by result, and the tries repeated.
#[derive(Default)]
pub struct PlatformCommandMetrics {
    results: [AtomicU64; CommandResult::ALL.len()],
    /// Requests sent again after a timeout, a connection error or an HTTP 5xx.
    pub retries: AtomicU64,
}

impl PlatformCommandMetrics {
    pub fn count(&self, result: CommandResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, result: CommandResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }
}

/// What became of a request to a `[[http_ingest]]` endpoint (a carrier IoT platform's push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpIngestResult {
    /// Committed to the outbox, answered 200.
    Accepted,
    /// A OneNET URL verification answered with its `msg`.
    Verified,
    /// A valid push of a message type without device data (answered 200, nothing recorded).
    Ignored,
    /// A CTWing push without the right `?token=` (403).
    BadToken,
    /// A OneNET push or URL verification whose signature does not verify (403).
    BadSignature,
    /// Not the platform's envelope (400).
    Malformed,
    /// Over the endpoint's `max_body_bytes` (413).
    TooLarge,
    /// For no device of `[[devices]]` (404).
    UnknownDevice,
    /// Not committed within `commit_timeout_s`, or the gateway is stopping (503).
    NotCommitted,
}

impl HttpIngestResult {
    pub const ALL: [HttpIngestResult; 9] = [
        HttpIngestResult::Accepted,
        HttpIngestResult::Verified,
        HttpIngestResult::Ignored,
        HttpIngestResult::BadToken,
        HttpIngestResult::BadSignature,
        HttpIngestResult::Malformed,
        HttpIngestResult::TooLarge,
        HttpIngestResult::UnknownDevice,
        HttpIngestResult::NotCommitted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpIngestResult::Accepted => "accepted",
            HttpIngestResult::Verified => "verified",
            HttpIngestResult::Ignored => "ignored",
            HttpIngestResult::BadToken => "bad_token",
            HttpIngestResult::BadSignature => "bad_signature",
            HttpIngestResult::Malformed => "malformed",
            HttpIngestResult::TooLarge => "too_large",
            HttpIngestResult::UnknownDevice => "unknown_device",
            HttpIngestResult::NotCommitted => "not_committed",
        }
    }
}

/// Requests to one `[[http_ingest]]` endpoint, by result.
#[derive(Default)]
pub struct HttpIngestMetrics {
    results: [AtomicU64; HttpIngestResult::ALL.len()],
}

impl HttpIngestMetrics {
    pub fn count(&self, result: HttpIngestResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, result: HttpIngestResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct ModbusMetrics {
    pub connects: AtomicU64,
    /// Read requests sent (counted before the answer; the outcomes below after it).
    pub requests: AtomicU64,
    /// Requests the device answered with data.
    pub answered_ok: AtomicU64,
    /// Requests the device answered with a Modbus exception.
    pub exceptions: AtomicU64,
    /// Requests without an answer within the link's timeout.
    pub timeouts: AtomicU64,
    /// Requests that failed in the transport (connection lost, bad frame).
    pub transport_errors: AtomicU64,
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    /// Poll ticks skipped because the connection was still busy with earlier polls.
    pub missed_cycles: AtomicU64,
    /// Units configured on the link (set at start-up).
    pub units: AtomicU64,
    pub units_offline: AtomicU64,
    /// Time spent polling, summed, for the mean poll latency.
    pub poll_micros_total: AtomicU64,
}

impl ModbusMetrics {
    /// Counts one request's outcome from `timeout(limit, read)`'s answer, whose layers are the
    /// time limit, the transport and the device's exception (tokio-modbus' shape).
    pub fn count_answer<T, X, E, L>(&self, answer: &Result<Result<Result<T, X>, E>, L>) {
        let counter = match answer {
            Err(_) => &self.timeouts,
            Ok(Err(_)) => &self.transport_errors,
            Ok(Ok(Err(_))) => &self.exceptions,
            Ok(Ok(Ok(_))) => &self.answered_ok,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct SinkMetrics {
    pub points_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_failures: AtomicU64,
    /// Points in requests that failed and were sent again.
    pub points_retried: AtomicU64,
    /// Points refused by the server as invalid (400/422), kept as dead letters.
    pub points_dead_lettered: AtomicU64,
    /// Points in the outbox not yet written to this sink.
    pub depth_points: AtomicU64,
    pub depth_batches: AtomicU64,
    /// When the oldest of them was committed (ms since the epoch; 0: none).
    pub oldest_created_ms: AtomicU64,
    /// When the sink last wrote a batch (ms since the epoch; 0: not since start).
    pub last_write_ms: AtomicU64,
}

#[derive(Default)]
pub struct MqttMetrics {
    pub connected: AtomicBool,
    /// When the current connection was made (ms since the epoch; 0 while disconnected).
    pub connected_since_ms: AtomicU64,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub subscribes: AtomicU64,
    /// Subscriptions the broker has confirmed.
    pub subacks: AtomicU64,
    /// Acknowledgements that found the client's queue full and were sent a little later.
    pub acks_deferred: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Metrics with every configured sink, MQTT and Modbus connection and alert route
    /// registered, so that their series exist (at 0) before anything happened on them.
    pub fn for_config(config: &Config) -> Arc<Self> {
        let metrics = Metrics::default();
        for sink in &config.site.influx {
            metrics.sink(&sink.name);
        }
        for conn in &config.site.mqtt {
            metrics.mqtt(&conn.name);
        }
        for link in &config.site.modbus {
            let m = metrics.modbus(&link.name);
            m.units.store(link.units.len() as u64, Ordering::Relaxed);
        }
        for route in config.site.alerts.iter().flat_map(|a| &a.routes) {
            metrics.route(&route.name);
        }
        for endpoint in &config.site.http_ingest {
            metrics.http_ingest(&endpoint.name);
            if endpoint.ctwing_api.is_some() || endpoint.onenet_api.is_some() {
                metrics.platform_commands(&endpoint.name);
            }
        }
        Arc::new(metrics)
    }

    pub fn count_decode_error(&self, kind: DecodeErrorKind) {
        self.decode_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn decode_errors(&self, kind: DecodeErrorKind) -> u64 {
        self.decode_errors[kind.index()].load(Ordering::Relaxed)
    }

    pub fn sink(&self, name: &str) -> Arc<SinkMetrics> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(sinks.entry(name.to_string()).or_default())
    }

    pub fn mqtt(&self, name: &str) -> Arc<MqttMetrics> {
        let mut conns = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(conns.entry(name.to_string()).or_default())
    }

    pub fn modbus(&self, name: &str) -> Arc<ModbusMetrics> {
        let mut conns = self.modbus.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(conns.entry(name.to_string()).or_default())
    }

    pub fn http_ingest(&self, endpoint: &str) -> Arc<HttpIngestMetrics> {
        let mut endpoints = self.http_ingest.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(endpoints.entry(endpoint.to_string()).or_default())
    }

    pub fn platform_commands(&self, endpoint: &str) -> Arc<PlatformCommandMetrics> {
        let mut endpoints = self
            .platform_commands
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(endpoints.entry(endpoint.to_string()).or_default())
    }

    /// Registers an alert route, whose series are exported from now on.
    pub fn route(&self, name: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.insert(name.to_string());
    }
}

/// The `state` label of `parkguard_alarms`: the ISA-18.2 states, and the two the web handler
/// reports instead of the state (shelved; suppressed or out of service).
fn alarm_states() -> Vec<&'static str> {
    // An exhaustive match, so a new state fails to compile until it is listed here.
    let all = |s: AlarmState| match s {
        AlarmState::Normal
        | AlarmState::Unacknowledged
        | AlarmState::Acknowledged
        | AlarmState::ReturnedUnacknowledged => s.as_str(),
    };
    let mut states: Vec<&str> = [
        AlarmState::Normal,
        AlarmState::Unacknowledged,
        AlarmState::Acknowledged,
        AlarmState::ReturnedUnacknowledged,
    ]
    .into_iter()
    .map(all)
    .collect();
    states.extend(["shelved", "suppressed"]);
    states
}

/// The `severity` label of `parkguard_alarms`: the severities, and `none` for alarms without.
fn alarm_severities() -> Vec<&'static str> {
    let all = |s: Severity| match s {
        Severity::Low | Severity::Medium | Severity::High | Severity::Critical => s.as_str(),
    };
    let mut severities: Vec<&str> = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .into_iter()
    .map(all)
    .collect();
    severities.push("none");
    severities
}
