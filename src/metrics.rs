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
    /// Readings the dispatcher could not hand to a sink because its queue was full.
    pub readings_dropped_queue_full: AtomicU64,
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
    /// Points refused by the server as invalid (400/422); never retried.
    pub points_rejected: AtomicU64,
    /// Points dropped because the in-memory buffer was full during an outage.
    pub points_dropped_overflow: AtomicU64,
    /// Readings that could not be encoded (non-finite values).
    pub points_unencodable: AtomicU64,
    /// Points waiting in memory right now.
    pub points_buffered: AtomicU64,
}

#[derive(Default)]
pub struct MqttMetrics {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub subscribes: AtomicU64,
    /// Subscriptions the broker has confirmed.
    pub subacks: AtomicU64,
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
