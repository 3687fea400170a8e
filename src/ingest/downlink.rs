//! The MQTT connections' publishers, by connection name, for what the gateway sends to
//! devices (their alarm acknowledgements) and to the platform (journal anchors). A connection
//! registers its client when it starts a session; the rules task's store writer publishes
//! through it after a commit, so that a device is told only what is durably recorded.
//!
//! Owns: the registry. Must not touch: sessions themselves; a publish only queues a request
//! in the client, which the connection's own loop sends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::DeviceAck;

/// Queues a QoS 1 publish (topic, payload) on a connection's client.
pub type Publisher = Arc<dyn Fn(&str, Vec<u8>) -> Result<(), String> + Send + Sync>;

#[derive(Default)]
pub struct Downlinks {
    publishers: Mutex<HashMap<String, Publisher>>,
    /// Acknowledgements queued to a connection.
    pub sent: AtomicU64,
    /// Acknowledgements that found no connection or a full client queue (the device then
    /// retransmits, and the next one is tried).
    pub failed: AtomicU64,
}

impl Downlinks {
    pub fn new() -> Arc<Self> {
        Arc::new(Downlinks::default())
    }

    pub fn register(&self, connection: &str, publisher: Publisher) {
        self.publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(connection.to_string(), publisher);
    }

    /// Queues `payload` on `topic` on every connection; how many took it.
    pub fn publish_everywhere(&self, topic: &str, payload: &[u8]) -> usize {
        let publishers: Vec<Publisher> = self
            .publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        publishers
            .iter()
            .filter(|publish| publish(topic, payload.to_vec()).is_ok())
            .count()
    }

    /// Queues `payload` on `topic` on connection `connection` (linkage's MQTT outputs).
    pub fn publish(&self, connection: &str, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let publisher = self
            .publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(connection)
            .cloned();
        match publisher {
            Some(publish) => publish(topic, payload),
            None => Err(format!("no MQTT connection `{connection}` is up")),
        }
    }

    pub fn send(&self, ack: &DeviceAck) -> Result<(), String> {
        let result = self.publish(&ack.connection, &ack.topic, ack.payload.clone());
        match &result {
            Ok(()) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }
}
