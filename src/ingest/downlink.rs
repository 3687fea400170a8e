//! The gateway's ways to reach devices after a commit, by name: the MQTT connections'
//! publishers, for what it sends to devices (their alarm acknowledgements) and to the platform
//! (journal anchors), and the `[[http_ingest]]` endpoints' platform APIs, for devices behind
//! CTWing or OneNET. A connection registers its client when it starts a session; the pipeline
//! registers each endpoint's API client at start. The rules task's store writer sends through
//! them after a commit, so that a device is told only what is durably recorded.
//!
//! Owns: the registry. Must not touch: sessions themselves; a publish only queues a request
//! in the client, which the connection's own loop sends; a platform command is handed to a
//! task on the runtime (the store writer is a thread and must not wait on the network).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::platform::PlatformApi;
use crate::model::DeviceAck;

/// Queues a QoS 1 publish (topic, payload) on a connection's client.
pub type Publisher = Arc<dyn Fn(&str, Vec<u8>) -> Result<(), String> + Send + Sync>;

#[derive(Default)]
pub struct Downlinks {
    publishers: Mutex<HashMap<String, Publisher>>,
    /// Per `[[http_ingest]]` endpoint: its platform API, and the runtime its commands run on.
    platforms: Mutex<HashMap<String, (Arc<PlatformApi>, tokio::runtime::Handle)>>,
    /// Acknowledgements queued to a connection or handed to a platform API client (which
    /// counts what the platform made of them).
    pub sent: AtomicU64,
    /// Acknowledgements that found no connection, a full client queue or an endpoint without
    /// API credentials (the device then retransmits, and the next one is tried).
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

    /// Registers an endpoint's platform API; called on the runtime its commands are to run on.
    pub fn register_platform(&self, api: PlatformApi) {
        let handle = tokio::runtime::Handle::current();
        self.platforms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(api.endpoint().to_string(), (Arc::new(api), handle));
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

    /// Sends a device's acknowledgement: queued on its MQTT connection, or handed to a task
    /// that sends its platform command (whose result the platform's metrics count).
    pub fn send(&self, ack: &DeviceAck) -> Result<(), String> {
        let result = match ack {
            DeviceAck::Mqtt {
                connection,
                topic,
                payload,
            } => self.publish(connection, topic, payload.clone()),
            DeviceAck::Platform {
                endpoint,
                device_id,
                command,
            } => {
                let platform = self
                    .platforms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(endpoint)
                    .cloned();
                match platform {
                    Some((api, runtime)) => {
                        let (device_id, command) = (device_id.clone(), command.clone());
                        // The client logs and counts the outcome; the device retransmits
                        // if the command is lost, and its next alarm is acknowledged then.
                        runtime.spawn(async move {
                            let _ = api.send(&device_id, &command).await;
                        });
                        Ok(())
                    }
                    None => Err(format!(
                        "endpoint `{endpoint}` has no platform API credentials"
                    )),
                }
            }
        };
        match &result {
            Ok(()) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }
}
