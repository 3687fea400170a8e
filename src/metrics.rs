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
}

#[derive(Default)]
pub struct MqttMetrics {
    pub connected: AtomicBool,
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
