//! Self-metrics: counters every stage bumps, read by the shutdown report, tests and (later) the
//! `/metrics` endpoint.
//!
//! Owns: the counters. Must not touch: anything else; stages hold an `Arc<Metrics>` and only add.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::decode::payload::DecodeErrorKind;

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
    sinks: Mutex<BTreeMap<String, Arc<SinkMetrics>>>,
    mqtt: Mutex<BTreeMap<String, Arc<MqttMetrics>>>,
    modbus: Mutex<BTreeMap<String, Arc<ModbusMetrics>>>,
}

#[derive(Default)]
pub struct ModbusMetrics {
    pub connects: AtomicU64,
    /// Read requests sent.
    pub requests: AtomicU64,
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    pub exceptions: AtomicU64,
    pub timeouts: AtomicU64,
    /// Poll ticks skipped because the connection was still busy with earlier polls.
    pub missed_cycles: AtomicU64,
    pub units_offline: AtomicU64,
    /// Time spent polling, summed, for the mean poll latency.
    pub poll_micros_total: AtomicU64,
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

    pub fn sink_names(&self) -> Vec<String> {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.keys().cloned().collect()
    }
}

/// Writes metrics in the Prometheus text exposition format (version 0.0.4).
pub struct PrometheusText {
    out: String,
}

impl PrometheusText {
    pub fn new() -> Self {
        PrometheusText { out: String::new() }
    }

    /// Declares a metric family; its samples follow with `sample`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.out, "# HELP parkguard_{name} {help}");
        let _ = writeln!(self.out, "# TYPE parkguard_{name} {kind}");
    }

    /// One sample; label values are escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        use std::fmt::Write;
        self.out.push_str("parkguard_");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Default for PrometheusText {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every counter and gauge of the pipeline.
    pub fn render(&self, text: &mut PrometheusText) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        text.single(
            "mqtt_messages_received_total",
            "counter",
            "MQTT messages received, whatever became of them.",
            get(&self.messages_received),
        );
        text.single(
            "readings_decoded_total",
            "counter",
            "Readings that left decoding (MQTT and Modbus).",
            get(&self.readings_decoded),
        );
        text.family(
            "decode_errors_total",
            "counter",
            "Messages that could not be decoded, by reason.",
        );
        for kind in DecodeErrorKind::ALL {
            text.sample(
                "decode_errors_total",
                &[("reason", kind.as_str())],
                self.decode_errors(kind) as f64,
            );
        }
        for (name, help, counter) in [
            (
                "readings_unencodable_total",
                "Readings with values line protocol cannot carry (NaN, infinity).",
                &self.readings_unencodable,
            ),
            (
                "readings_evaluated_total",
                "Readings the rule engine evaluated.",
                &self.readings_evaluated,
            ),
            (
                "alarm_transitions_total",
                "Alarm transitions (raised, cleared, acknowledged, ...).",
                &self.alarm_transitions,
            ),
            (
                "store_errors_total",
                "Alarm state or journal writes that failed for good.",
                &self.store_errors,
            ),
            (
                "alerts_queued_total",
                "Alarm pushes queued (per transition, route, channel and e-mail recipient).",
                &self.alerts_queued,
            ),
            (
                "alerts_delivered_total",
                "Alarm pushes a receiver took.",
                &self.alerts_delivered,
            ),
            (
                "alerts_send_failures_total",
                "Failed push attempts, retried until the route's give-up time.",
                &self.alerts_send_failures,
            ),
            (
                "alerts_given_up_total",
                "Alarm pushes given up after the route's give-up time (gateway fault G3).",
                &self.alerts_given_up,
            ),
            (
                "alerts_digests_total",
                "Sends that carried several pushes as one digest (rate limit reached).",
                &self.alerts_digests,
            ),
            (
                "outbox_commits_total",
                "Ingest transactions committed to the outbox.",
                &self.outbox_commits,
            ),
            (
                "outbox_commit_failures_total",
                "Outbox commits that failed and were retried.",
                &self.outbox_commit_failures,
            ),
            (
                "outbox_points_committed_total",
                "Readings committed to the outbox.",
                &self.outbox_points_committed,
            ),
            (
                "outbox_points_evicted_total",
                "Readings deleted from a full outbox before every sink had them.",
                &self.outbox_points_evicted,
            ),
            (
                "outbox_evictions_total",
                "Times the outbox was full and evicted telemetry.",
                &self.outbox_evictions,
            ),
        ] {
            text.single(name, "counter", help, get(counter));
        }
        text.single(
            "alerts_pending",
            "gauge",
            "Alarm pushes waiting in the queue.",
            get(&self.alerts_pending),
        );
        text.single(
            "outbox_bytes",
            "gauge",
            "Compressed bytes in the outbox.",
            get(&self.outbox_bytes),
        );

        let sinks: Vec<(String, Arc<SinkMetrics>)> = {
            let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
            sinks
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        type SinkField = fn(&SinkMetrics) -> &AtomicU64;
        let sink_families: [(&str, &str, &str, SinkField); 8] = [
            (
                "sink_points_written_total",
                "counter",
                "Readings a sink's server accepted.",
                |s| &s.points_written,
            ),
            (
                "sink_batches_written_total",
                "counter",
                "Requests a sink's server accepted.",
                |s| &s.batches_written,
            ),
            (
                "sink_write_failures_total",
                "counter",
                "Failed write requests.",
                |s| &s.write_failures,
            ),
            (
                "sink_points_retried_total",
                "counter",
                "Readings in requests that failed and were sent again.",
                |s| &s.points_retried,
            ),
            (
                "sink_points_dead_lettered_total",
                "counter",
                "Readings the server refused as invalid, kept as dead letters.",
                |s| &s.points_dead_lettered,
            ),
            (
                "outbox_depth_points",
                "gauge",
                "Readings in the outbox not yet written to the sink.",
                |s| &s.depth_points,
            ),
            (
                "outbox_depth_batches",
                "gauge",
                "Batches in the outbox not yet written to the sink.",
                |s| &s.depth_batches,
            ),
            (
                "outbox_oldest_created_seconds",
                "gauge",
                "When the oldest batch waiting for the sink was committed (Unix time; 0: none).",
                |s| &s.oldest_created_ms,
            ),
        ];
        for (name, kind, help, field) in sink_families {
            text.family(name, kind, help);
            for (sink, m) in &sinks {
                let mut value = get(field(m));
                if name == "outbox_oldest_created_seconds" {
                    value /= 1000.0;
                }
                text.sample(name, &[("sink", sink)], value);
            }
        }

        let mqtt: Vec<(String, Arc<MqttMetrics>)> = {
            let conns = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        text.family(
            "mqtt_connected",
            "gauge",
            "1 while the MQTT connection is up.",
        );
        for (name, m) in &mqtt {
            let up = f64::from(u8::from(m.connected.load(Ordering::Relaxed)));
            text.sample("mqtt_connected", &[("connection", name)], up);
        }
        type MqttField = fn(&MqttMetrics) -> &AtomicU64;
        let mqtt_families: [(&str, &str, MqttField); 3] = [
            ("mqtt_connects_total", "Successful MQTT connections.", |m| {
                &m.connects
            }),
            (
                "mqtt_connection_errors_total",
                "MQTT connection errors.",
                |m| &m.connection_errors,
            ),
            (
                "mqtt_acks_deferred_total",
                "Acknowledgements sent later because the client's queue was full.",
                |m| &m.acks_deferred,
            ),
        ];
        for (name, help, field) in mqtt_families {
            text.family(name, "counter", help);
            for (conn, m) in &mqtt {
                text.sample(name, &[("connection", conn)], get(field(m)));
            }
        }

        let modbus: Vec<(String, Arc<ModbusMetrics>)> = {
            let conns = self.modbus.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        type ModbusField = fn(&ModbusMetrics) -> &AtomicU64;
        let modbus_families: [(&str, &str, &str, ModbusField); 7] = [
            (
                "modbus_requests_total",
                "counter",
                "Modbus read requests sent.",
                |m| &m.requests,
            ),
            (
                "modbus_polls_ok_total",
                "counter",
                "Device polls that succeeded.",
                |m| &m.polls_ok,
            ),
            (
                "modbus_polls_failed_total",
                "counter",
                "Device polls that failed.",
                |m| &m.polls_failed,
            ),
            (
                "modbus_exceptions_total",
                "counter",
                "Modbus exception responses.",
                |m| &m.exceptions,
            ),
            (
                "modbus_timeouts_total",
                "counter",
                "Modbus requests that timed out.",
                |m| &m.timeouts,
            ),
            (
                "modbus_missed_cycles_total",
                "counter",
                "Poll ticks skipped because the link was still busy.",
                |m| &m.missed_cycles,
            ),
            (
                "modbus_units_offline",
                "gauge",
                "Units counted offline now.",
                |m| &m.units_offline,
            ),
        ];
        for (name, kind, help, field) in modbus_families {
            text.family(name, kind, help);
            for (conn, m) in &modbus {
                text.sample(name, &[("endpoint", conn)], get(field(m)));
            }
        }
        text.family(
            "modbus_poll_seconds",
            "summary",
            "Time spent polling devices (sum and count: mean latency).",
        );
        for (conn, m) in &modbus {
            let labels = [("endpoint", conn.as_str())];
            text.sample(
                "modbus_poll_seconds_sum",
                &labels,
                get(&m.poll_micros_total) / 1e6,
            );
            let polls = get(&m.polls_ok) + get(&m.polls_failed);
            text.sample("modbus_poll_seconds_count", &labels, polls);
        }
    }
}
