//! Self-metrics: counters every stage bumps, read by the shutdown report, `parkguard status`,
//! tests and the `/metrics` endpoint, and their rendering as Prometheus text.
//!
//! Owns: the counters, the names, types, labels and help of the Prometheus families (the
//! reference is docs/metrics.md; a test keeps the two in step), and the exposition writer and
//! its checker. Must not touch: anything else; stages hold an `Arc<Metrics>` and only add.
//!
//! Every label value that can occur is exported from start-up, at 0 until it first happens
//! (`Metrics::for_config` registers the configured sinks, connections and routes), so that
//! `rate()` and `absent()` work. Ages, not timestamps: a 0 timestamp for "nothing waiting"
//! would read as 1970 and keep `time() - x > 300` firing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, Severity};
use crate::decode::payload::DecodeErrorKind;
use crate::model::alarm::AlarmState;

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

    /// Registers an alert route, whose series are exported from now on.
    pub fn route(&self, name: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.insert(name.to_string());
    }

    pub fn sink_names(&self) -> Vec<String> {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.keys().cloned().collect()
    }
}

/// Every prefix of this crate's families.
pub const PREFIX: &str = "parkguard_";

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

type Labels = Vec<(String, String)>;

struct Family {
    name: String,
    kind: String,
    help: String,
    samples: Vec<(String, Labels, f64)>,
}

/// Writes metrics in the Prometheus text exposition format (version 0.0.4).
///
/// Families are collected, then written at `finish`: a family declared twice still gets one
/// HELP and one TYPE with all its samples together, and families with a closed set of label
/// values (`expect`) get every combination, 0 where no sample was given.
pub struct PrometheusText {
    families: Vec<Family>,
    expected: BTreeMap<String, Vec<Labels>>,
}

impl PrometheusText {
    pub fn new() -> Self {
        PrometheusText {
            families: Vec::new(),
            expected: BTreeMap::new(),
        }
    }

    /// Declares a metric family; its samples follow with `sample`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        if self.families.iter().any(|f| f.name == name) {
            return;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: kind.to_string(),
            help: help.to_string(),
            samples: Vec::new(),
        });
    }

    /// One sample; label values are escaped as the format requires at `finish`. `name` is the
    /// family's, or for a summary the family's with `_sum` or `_count`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let owner = self.families.iter().rposition(|f| {
            name == f.name
                || (f.kind == "summary"
                    && name
                        .strip_prefix(f.name.as_str())
                        .is_some_and(|s| s == "_sum" || s == "_count"))
        });
        let index = match owner {
            Some(index) => index,
            None => {
                // Undeclared: written as untyped, which the exposition check refuses, so a
                // test finds it rather than Prometheus guessing.
                self.families.push(Family {
                    name: name.to_string(),
                    kind: "untyped".to_string(),
                    help: "Undeclared.".to_string(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families[index]
            .samples
            .push((name.to_string(), labels, value));
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// Says that family `name` has these label sets, each of which is written (at 0 if no
    /// sample gave it a value) wherever and whenever the family is declared.
    pub fn expect(&mut self, name: &str, label_sets: Vec<Vec<(&str, &str)>>) {
        let sets = label_sets
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        self.expected.insert(name.to_string(), sets);
    }

    pub fn finish(mut self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for family in &mut self.families {
            if let Some(sets) = self.expected.get(&family.name) {
                let mut given = std::mem::take(&mut family.samples);
                for set in sets {
                    let value = match given.iter().position(|(_, l, _)| l == set) {
                        Some(at) => given.remove(at).2,
                        None => 0.0,
                    };
                    family
                        .samples
                        .push((family.name.clone(), set.clone(), value));
                }
                // Values outside the declared set still count: written after it.
                family.samples.append(&mut given);
            }
            let name = &family.name;
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}{name} {}", family.kind);
            for (sample, labels, value) in &family.samples {
                out.push_str(PREFIX);
                out.push_str(sample);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (key, value)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(key);
                        out.push_str("=\"");
                        for c in value.chars() {
                            match c {
                                '\\' => out.push_str("\\\\"),
                                '"' => out.push_str("\\\""),
                                '\n' => out.push_str("\\n"),
                                c => out.push(c),
                            }
                        }
                        out.push('"');
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

impl Default for PrometheusText {
    fn default() -> Self {
        Self::new()
    }
}

/// A sample value as the format spells it (Rust writes `inf`, Prometheus wants `+Inf`).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// Seconds from `since_ms` to `now_ms`; 0 for none (`since_ms` 0) and for a clock that went
/// back.
fn age_seconds(now_ms: i64, since_ms: i64) -> f64 {
    if since_ms <= 0 {
        return 0.0;
    }
    (now_ms - since_ms).max(0) as f64 / 1000.0
}

impl Metrics {
    /// Every counter and gauge of the pipeline, and the label sets of `alarms`, which the web
    /// handler adds.
    pub fn render(&self, text: &mut PrometheusText) {
        self.render_at(text, crate::model::now_ms());
    }

    /// `render` with the wall clock read by the caller (ages are relative to `now_ms`).
    pub fn render_at(&self, text: &mut PrometheusText, now_ms: i64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let flag = |b: &AtomicBool| f64::from(u8::from(b.load(Ordering::Relaxed)));
        text.family(
            "build_info",
            "gauge",
            "Always 1; the labels name the running build.",
        );
        text.sample(
            "build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
                ("os", std::env::consts::OS),
            ],
            1.0,
        );
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
        ] {
            text.single(name, "counter", help, get(counter));
        }
        text.family(
            "store_failing",
            "gauge",
            "1 while the store refuses the writes of the alarm journal or of the outbox.",
        );
        text.sample(
            "store_failing",
            &[("store", "journal")],
            flag(&self.journal_store_failing),
        );
        text.sample(
            "store_failing",
            &[("store", "outbox")],
            flag(&self.outbox_store_failing),
        );

        text.single(
            "alerts_queued_total",
            "counter",
            "Alarm pushes queued (per transition, route, channel and e-mail recipient).",
            get(&self.alerts_queued),
        );
        text.family(
            "alerts_finished_total",
            "counter",
            "Alarm pushes done with: delivered, or given up after the route's give-up time \
             (gateway fault G3).",
        );
        for (result, counter) in [
            ("delivered", &self.alerts_delivered),
            ("given_up", &self.alerts_given_up),
        ] {
            text.sample("alerts_finished_total", &[("result", result)], get(counter));
        }
        text.single(
            "alerts_send_failures_total",
            "counter",
            "Failed push attempts, retried until the route's give-up time.",
            get(&self.alerts_send_failures),
        );
        text.single(
            "alerts_digests_total",
            "counter",
            "Sends that carried several pushes as one digest (rate limit reached).",
            get(&self.alerts_digests),
        );
        text.single(
            "alerts_pending",
            "gauge",
            "Alarm pushes waiting in the queue.",
            get(&self.alerts_pending),
        );
        text.family(
            "alerts_oldest_critical_age_seconds",
            "gauge",
            "Per route: how long its oldest undelivered critical push has waited (0: none).",
        );
        {
            let oldest = self
                .alerts_oldest_critical
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut routes = self
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            routes.extend(oldest.keys().cloned());
            for route in &routes {
                let since = oldest.get(route).copied().unwrap_or(0);
                text.sample(
                    "alerts_oldest_critical_age_seconds",
                    &[("route", route)],
                    age_seconds(now_ms, since),
                );
            }
        }

        text.family(
            "outbox_commits_total",
            "counter",
            "Ingest transactions committed to the outbox (ok), and commits that failed and \
             were retried (failed).",
        );
        for (result, counter) in [
            ("ok", &self.outbox_commits),
            ("failed", &self.outbox_commit_failures),
        ] {
            text.sample("outbox_commits_total", &[("result", result)], get(counter));
        }
        for (name, help, counter) in [
            (
                "outbox_points_committed_total",
                "Readings committed to the outbox.",
                &self.outbox_points_committed,
            ),
            (
                "outbox_points_evicted_total",
                "Readings deleted from a full outbox before every sink had them (gateway \
                 fault G1).",
                &self.outbox_points_evicted,
            ),
            (
                "outbox_points_dropped_total",
                "Of the evicted readings, those of a new batch that did not fit even after \
                 eviction.",
                &self.outbox_points_dropped,
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
        type SinkValue = fn(&SinkMetrics, i64) -> f64;
        let sink_families: [(&str, &str, &str, SinkValue); 6] = [
            (
                "outbox_depth_points",
                "gauge",
                "Readings in the outbox not yet written to the sink.",
                |s, _| s.depth_points.load(Ordering::Relaxed) as f64,
            ),
            (
                "outbox_depth_batches",
                "gauge",
                "Batches in the outbox not yet written to the sink.",
                |s, _| s.depth_batches.load(Ordering::Relaxed) as f64,
            ),
            (
                "outbox_oldest_age_seconds",
                "gauge",
                "How long the oldest batch waiting for the sink has waited (0: none waiting).",
                |s, now| {
                    let created = s.oldest_created_ms.load(Ordering::Relaxed);
                    age_seconds(now, i64::try_from(created).unwrap_or(0))
                },
            ),
            (
                "sink_points_written_total",
                "counter",
                "Readings a sink's server accepted.",
                |s, _| s.points_written.load(Ordering::Relaxed) as f64,
            ),
            (
                "sink_points_retried_total",
                "counter",
                "Readings in requests that failed and were sent again.",
                |s, _| s.points_retried.load(Ordering::Relaxed) as f64,
            ),
            (
                "sink_points_dead_lettered_total",
                "counter",
                "Readings the server refused as invalid, kept as dead letters.",
                |s, _| s.points_dead_lettered.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in sink_families {
            text.family(name, kind, help);
            for (sink, m) in &sinks {
                text.sample(name, &[("sink", sink)], value(m, now_ms));
            }
        }
        text.family(
            "sink_write_requests_total",
            "counter",
            "Write requests to a sink's server, by result: accepted (ok) or failed (failed; \
             retried, split or dead-lettered).",
        );
        for (sink, m) in &sinks {
            for (result, counter) in [("ok", &m.batches_written), ("failed", &m.write_failures)] {
                text.sample(
                    "sink_write_requests_total",
                    &[("sink", sink), ("result", result)],
                    get(counter),
                );
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
            text.sample(
                "mqtt_connected",
                &[("connection", name)],
                flag(&m.connected),
            );
        }
        type MqttField = fn(&MqttMetrics) -> &AtomicU64;
        let mqtt_families: [(&str, &str, MqttField); 3] = [
            ("mqtt_connects_total", "Successful MQTT connections.", |m| {
                &m.connects
            }),
            (
                "mqtt_connection_errors_total",
                "MQTT connection errors (failed connects and dropped connections).",
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
        text.family(
            "modbus_requests_total",
            "counter",
            "Modbus read requests by result: data (ok), a Modbus exception, no answer in time \
             (timeout), or a transport error.",
        );
        for (conn, m) in &modbus {
            for (result, counter) in [
                ("ok", &m.answered_ok),
                ("exception", &m.exceptions),
                ("timeout", &m.timeouts),
                ("transport", &m.transport_errors),
            ] {
                text.sample(
                    "modbus_requests_total",
                    &[("connection", conn), ("result", result)],
                    get(counter),
                );
            }
        }
        text.family(
            "modbus_polls_total",
            "counter",
            "Device polls (one unit, one poll class) by result.",
        );
        for (conn, m) in &modbus {
            for (result, counter) in [("ok", &m.polls_ok), ("failed", &m.polls_failed)] {
                text.sample(
                    "modbus_polls_total",
                    &[("connection", conn), ("result", result)],
                    get(counter),
                );
            }
        }
        type ModbusField = fn(&ModbusMetrics) -> &AtomicU64;
        let modbus_families: [(&str, &str, &str, ModbusField); 4] = [
            (
                "modbus_connects_total",
                "counter",
                "Modbus connections made.",
                |m| &m.connects,
            ),
            (
                "modbus_missed_cycles_total",
                "counter",
                "Poll ticks skipped because the link was still busy.",
                |m| &m.missed_cycles,
            ),
            (
                "modbus_units",
                "gauge",
                "Units configured on the link.",
                |m| &m.units,
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
                text.sample(name, &[("connection", conn)], get(field(m)));
            }
        }
        text.family(
            "modbus_poll_seconds",
            "summary",
            "Time spent polling devices (sum and count: mean latency).",
        );
        for (conn, m) in &modbus {
            let labels = [("connection", conn.as_str())];
            text.sample(
                "modbus_poll_seconds_sum",
                &labels,
                get(&m.poll_micros_total) / 1e6,
            );
            let polls = get(&m.polls_ok) + get(&m.polls_failed);
            text.sample("modbus_poll_seconds_count", &labels, polls);
        }

        // Written by the web handler, which counts the alarms; every state and severity is
        // there from start-up.
        let states = alarm_states();
        let severities = alarm_severities();
        let sets = states
            .iter()
            .flat_map(|&state| {
                severities
                    .iter()
                    .map(move |&severity| vec![("state", state), ("severity", severity)])
            })
            .collect();
        text.expect("alarms", sets);
    }
}

/// Checks Prometheus text (format 0.0.4) against the format and this crate's conventions;
/// returns one line per problem. Stricter than Prometheus: every sample's family has HELP and
/// TYPE, each once and before its samples; a family's samples are together; names are
/// `parkguard_` snake case; counters end in `_total` and nothing else does; no `untyped`; no
/// series twice; label values well escaped; `_info` gauges are 1.
pub fn check_exposition(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut help: BTreeSet<String> = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let snake = |name: &str| {
        name.starts_with(PREFIX)
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        let mut enter = |family: &str, problems: &mut Vec<String>| {
            if current.as_deref() != Some(family) {
                if closed.contains(family) {
                    problems.push(format!("line {at}: {family} again after other families"));
                }
                if let Some(previous) = current.replace(family.to_string()) {
                    closed.insert(previous);
                }
            }
        };
        if line.is_empty() {
            problems.push(format!("line {at}: empty line"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            enter(name, &mut problems);
            if !help.insert(name.to_string()) {
                problems.push(format!("line {at}: second HELP for {name}"));
            }
            if rest.len() <= name.len() + 1 {
                problems.push(format!("line {at}: {name} has an empty HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            let kind = words.next().unwrap_or_default();
            enter(name, &mut problems);
            if words.next().is_some() {
                problems.push(format!("line {at}: TYPE with more than a kind"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                problems.push(format!("line {at}: second TYPE for {name}"));
            }
            if !help.contains(name) {
                problems.push(format!("line {at}: TYPE of {name} before its HELP"));
            }
            if !snake(name) {
                problems.push(format!("line {at}: {name} is not parkguard_ snake case"));
            }
            match kind {
                "counter" if !name.ends_with("_total") => {
                    problems.push(format!("line {at}: counter {name} does not end in _total"))
                }
                "gauge" | "summary" | "histogram" if name.ends_with("_total") => {
                    problems.push(format!("line {at}: {kind} {name} ends in _total"))
                }
                "counter" | "gauge" | "summary" | "histogram" => {}
                other => problems.push(format!("line {at}: {name} has type {other:?}")),
            }
            for unit in [
                "_ms",
                "_milliseconds",
                "_us",
                "_kb",
                "_mb",
                "_percent",
                "_minutes",
            ] {
                if name.trim_end_matches("_total").ends_with(unit) {
                    problems.push(format!("line {at}: {name} is not in base units"));
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = match split_sample(line) {
            Ok(parts) => parts,
            Err(why) => {
                problems.push(format!("line {at}: {why}: {line}"));
                continue;
            }
        };
        let family = types
            .iter()
            .filter(|(family, kind)| {
                name == family.as_str()
                    || (matches!(kind.as_str(), "summary" | "histogram")
                        && name.strip_prefix(family.as_str()).is_some_and(|s| {
                            s == "_sum" || s == "_count" || (*kind == "histogram" && s == "_bucket")
                        }))
            })
            .map(|(family, kind)| (family.clone(), kind.clone()))
            .next();
        let Some((family, kind)) = family else {
            problems.push(format!("line {at}: {name} has no TYPE before it"));
            continue;
        };
        if current.as_deref() != Some(family.as_str()) {
            problems.push(format!(
                "line {at}: {name} away from its family's HELP and TYPE"
            ));
        }
        let mut names = BTreeSet::new();
        for (label, _) in &labels {
            if !names.insert(label.clone()) {
                problems.push(format!("line {at}: label {label} twice"));
            }
        }
        let mut key = name.clone();
        for (label, value) in &labels {
            key.push_str(&format!("|{label}={value}"));
        }
        if !series.insert(key) {
            problems.push(format!("line {at}: series written twice: {line}"));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            problems.push(format!("line {at}: counter {name} is {value}"));
        }
        if family.ends_with("_info") && value != 1.0 {
            problems.push(format!("line {at}: info {name} is not 1"));
        }
    }
    problems
}

/// A sample line's name, labels (unescaped) and value; the timestamp, if any, is checked and
/// dropped.
fn split_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                Some(_) => {}
                None => break,
            }
            let start = chars.peek().map_or(0, |(i, _)| *i);
            let mut label_end = start;
            while let Some((i, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || *c == '_' {
                    label_end = *i + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let label = &inner[start..label_end];
            if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("bad label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(format!("label {label} without =\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(format!("bad escape in label {label}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {label} not closed")),
                }
            }
            labels.push((label.to_string(), value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("labels not separated by ','".into()),
            }
        }
        let Some(end) = end else {
            return Err("labels not closed".into());
        };
        rest = &inner[end + 1..];
    }
    let Some(rest) = rest.strip_prefix(' ') else {
        return Err("no space before the value".into());
    };
    let mut words = rest.split(' ');
    let value = match words.next().unwrap_or_default() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("bad value {other:?}"))?,
    };
    if let Some(timestamp) = words.next() {
        if timestamp.parse::<i64>().is_err() {
            return Err(format!("bad timestamp {timestamp:?}"));
        }
    }
    if words.next().is_some() {
        return Err("more than value and timestamp".into());
    }
    Ok((name.to_string(), labels, value))
}

/// The families docs/metrics.md lists (its `### parkguard_...` headings), for the tests that
/// keep the reference and the endpoint in step.
pub fn documented_families(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().trim_matches('`').to_string())
        .filter(|h| h.starts_with(PREFIX))
        .collect()
}

/// The families (TYPE lines) of an exposition.
pub fn exposed_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the web handler adds to `Metrics::render`; tests/web_api.rs checks the real
    /// endpoint, these included, against docs/metrics.md.
    const WEB_FAMILIES: [&str; 3] = [
        "parkguard_alarms",
        "parkguard_web_event_clients",
        "parkguard_web_sessions",
    ];

    const NOW: i64 = 1_700_000_000_000;

    /// A gateway's metrics with one of each kind of connection, a sink and a route, some of
    /// them with awkward names, and the web handler's families as it writes them.
    fn sample_text() -> String {
        let metrics = Metrics::new();
        metrics.sink("influx \"main\"");
        metrics.mqtt("park\\broker");
        metrics.modbus("bus\n1");
        metrics.route("operators");
        let mut text = PrometheusText::new();
        metrics.render_at(&mut text, NOW);
        text.family("alarms", "gauge", "Alarms that are not normal.");
        text.sample(
            "alarms",
            &[("state", "unacknowledged"), ("severity", "critical")],
            2.0,
        );
        text.single("web_event_clients", "gauge", "Clients.", 0.0);
        text.single("web_sessions", "gauge", "Sessions.", 0.0);
        text.finish()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_rendered_text_follows_the_exposition_format_and_conventions() {
        let text = sample_text();
        assert_eq!(check_exposition(&text), Vec::<String>::new(), "{text}");
        assert!(text.contains(r#"sink="influx \"main\"""#), "{text}");
        assert!(text.contains(r#"connection="park\\broker""#), "{text}");
        assert!(text.contains(r#"connection="bus\n1""#), "{text}");
    }

    #[test]
    fn every_label_value_is_there_from_the_start_at_zero() {
        let text = sample_text();
        for kind in DecodeErrorKind::ALL {
            let series = format!(
                "parkguard_decode_errors_total{{reason=\"{}\"}}",
                kind.as_str()
            );
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        let alarms = text
            .lines()
            .filter(|l| l.starts_with("parkguard_alarms{"))
            .count();
        assert_eq!(alarms, 6 * 5, "every state × severity: {text}");
        assert_eq!(
            value(
                &text,
                r#"parkguard_alarms{state="unacknowledged",severity="critical"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"parkguard_alarms{state="shelved",severity="none"}"#
            ),
            Some(0.0)
        );
        for result in ["ok", "exception", "timeout", "transport"] {
            let series = format!(
                "parkguard_modbus_requests_total{{connection=\"bus\\n1\",result=\"{result}\"}}"
            );
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        for series in [
            r#"parkguard_alerts_finished_total{result="delivered"}"#,
            r#"parkguard_alerts_finished_total{result="given_up"}"#,
            r#"parkguard_alerts_oldest_critical_age_seconds{route="operators"}"#,
            r#"parkguard_outbox_commits_total{result="failed"}"#,
            r#"parkguard_sink_write_requests_total{sink="influx \"main\"",result="failed"}"#,
            r#"parkguard_outbox_oldest_age_seconds{sink="influx \"main\""}"#,
            r#"parkguard_store_failing{store="journal"}"#,
            r#"parkguard_mqtt_connected{connection="park\\broker"}"#,
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series}: {text}");
        }
    }

    #[test]
    fn ages_count_from_the_oldest_waiting_and_are_zero_when_none_waits() {
        let metrics = Metrics::new();
        let sink = metrics.sink("s");
        metrics.route("quiet");
        let render = || {
            let mut text = PrometheusText::new();
            metrics.render_at(&mut text, NOW);
            text.finish()
        };
        let age = r#"parkguard_outbox_oldest_age_seconds{sink="s"}"#;
        assert_eq!(value(&render(), age), Some(0.0));
        sink.oldest_created_ms
            .store((NOW - 90_500) as u64, Ordering::Relaxed);
        assert_eq!(value(&render(), age), Some(90.5));
        // A batch stamped by a clock ahead of this one: no negative age.
        sink.oldest_created_ms
            .store((NOW + 5_000) as u64, Ordering::Relaxed);
        assert_eq!(value(&render(), age), Some(0.0));

        metrics
            .alerts_oldest_critical
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert("loud".into(), NOW - 400_000);
        let text = render();
        let route = |name: &str| {
            value(
                &text,
                &format!("parkguard_alerts_oldest_critical_age_seconds{{route=\"{name}\"}}"),
            )
        };
        assert_eq!(route("loud"), Some(400.0));
        assert_eq!(route("quiet"), Some(0.0));
    }

    #[test]
    fn outcomes_are_one_family_with_a_result_label() {
        let metrics = Metrics::new();
        let link = metrics.modbus("bus");
        let ok: Result<Result<Result<(), ()>, ()>, ()> = Ok(Ok(Ok(())));
        link.count_answer(&ok);
        link.count_answer(&ok);
        link.count_answer(&Ok::<Result<Result<(), ()>, ()>, ()>(Ok(Err(()))));
        link.count_answer(&Ok::<Result<Result<(), ()>, ()>, ()>(Err(())));
        link.count_answer(&Err::<Result<Result<(), ()>, ()>, ()>(()));
        metrics.alerts_delivered.store(3, Ordering::Relaxed);
        let mut text = PrometheusText::new();
        metrics.render_at(&mut text, NOW);
        let text = text.finish();
        for (result, n) in [
            ("ok", 2.0),
            ("exception", 1.0),
            ("transport", 1.0),
            ("timeout", 1.0),
        ] {
            let series = format!(
                "parkguard_modbus_requests_total{{connection=\"bus\",result=\"{result}\"}}"
            );
            assert_eq!(value(&text, &series), Some(n), "{series}");
        }
        assert_eq!(
            value(
                &text,
                r#"parkguard_alerts_finished_total{result="delivered"}"#
            ),
            Some(3.0)
        );
        let build = text
            .lines()
            .find(|l| l.starts_with("parkguard_build_info{"))
            .unwrap_or_default();
        assert!(
            build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && build.ends_with(" 1"),
            "{build}"
        );
    }

    #[test]
    fn a_family_declared_twice_is_written_once_with_all_its_samples() {
        let mut text = PrometheusText::new();
        text.family("x_total", "counter", "X.");
        text.sample("x_total", &[("a", "1")], 1.0);
        text.single("y", "gauge", "Y.", 2.0);
        text.family("x_total", "counter", "X.");
        text.sample("x_total", &[("a", "2")], 3.0);
        let text = text.finish();
        assert_eq!(check_exposition(&text), Vec::<String>::new(), "{text}");
        assert_eq!(text.matches("# TYPE parkguard_x_total").count(), 1);
        assert_eq!(value(&text, r#"parkguard_x_total{a="2"}"#), Some(3.0));
    }

    #[test]
    fn the_check_finds_convention_breaks() {
        let broken = [
            ("parkguard_a_total 1\n", "no TYPE"),
            ("# TYPE parkguard_a_total counter\nparkguard_a_total 1\n", "TYPE of"),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a counter\nparkguard_a 1\n",
                "does not end in _total",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\n# HELP parkguard_a A.\nparkguard_a 1\n",
                "second HELP",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a{l=\"x\\y\"} 1\n",
                "bad escape",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a{l=\"x\"\"} 1\n",
                "not separated",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\n# HELP parkguard_b B.\n# TYPE parkguard_b gauge\nparkguard_a 1\n",
                "away from its family",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a 1\nparkguard_a 2\n",
                "twice",
            ),
            (
                "# HELP parkguard_a_ms A.\n# TYPE parkguard_a_ms gauge\nparkguard_a_ms 1\n",
                "base units",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a untyped\nparkguard_a 1\n",
                "type",
            ),
            (
                "# HELP parkguard_aB A.\n# TYPE parkguard_aB gauge\nparkguard_aB 1\n",
                "snake case",
            ),
            (
                "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a inf\n",
                "bad value",
            ),
        ];
        for (text, why) in broken {
            let problems = check_exposition(text);
            assert!(
                problems.iter().any(|p| p.contains(why)),
                "{text:?} should fail with {why:?}: {problems:?}"
            );
        }
        let mut undeclared = PrometheusText::new();
        undeclared.sample("z", &[], 1.0);
        assert!(!check_exposition(&undeclared.finish()).is_empty());
    }

    #[test]
    fn docs_metrics_md_lists_every_family_once_and_nothing_else() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        let documented = documented_families(&docs);
        assert!(
            !documented.is_empty(),
            "no `### parkguard_...` headings in {path}"
        );
        let mut once = BTreeSet::new();
        for name in &documented {
            assert!(
                once.insert(name.clone()),
                "{name} listed twice in docs/metrics.md"
            );
        }
        let exposed: BTreeSet<String> = exposed_families(&sample_text()).into_iter().collect();
        let missing: Vec<&String> = exposed.difference(&once).collect();
        assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
        let stale: Vec<&String> = once.difference(&exposed).collect();
        assert!(
            stale.is_empty(),
            "in docs/metrics.md but not exported: {stale:?}"
        );
        assert!(WEB_FAMILIES.iter().all(|f| exposed.contains(*f)));
        // Every name the reference mentions (rules and examples included) is a family or a
        // summary's _sum/_count.
        for word in docs.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with(PREFIX) || word == "parkguard_" {
                continue;
            }
            let known = exposed.contains(word)
                || ["_sum", "_count"].iter().any(|s| {
                    word.strip_suffix(s)
                        .is_some_and(|base| exposed.contains(base))
                });
            assert!(
                known,
                "docs/metrics.md mentions {word}, which is not exported"
            );
        }
    }
}
