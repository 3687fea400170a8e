//! Connection lifecycles of the sources: MQTT connections (`mqtt`, reaching the broker through
//! the relay of `mqtt_guard`), the embedded broker (`broker`, with `broker_front` for TLS and
//! topic rules; it runs only in a build with the `embedded-broker` feature), Modbus connections
//! (`modbus`, executing the pure request plan of `read_plan`), and the publishers through which the
//! gateway answers devices (`downlink`), and the push formats of the carrier IoT platforms
//! (`http`, pure: the web server serves their endpoints).
//!
//! Owns: connections, subscriptions, reconnects with backoff and jitter, and handing decoded
//! readings downstream with their acknowledgement. Must not touch: rules, sinks or storage; it
//! only sends into the channel it is given.

pub mod broker;
#[cfg(feature = "embedded-broker")]
pub mod broker_front;
pub mod downlink;
pub mod http;
pub mod modbus;
pub mod mqtt;
pub mod mqtt_guard;
pub mod platform;
pub mod read_plan;

use crate::model::{BadMessage, DeviceAck, ReadingBatch};

/// What ingest hands downstream for one message or poll: its readings, or what was wrong with
/// it, and the acknowledgement to send once it is durable.
#[derive(Default)]
pub struct Ingested {
    pub readings: Option<ReadingBatch>,
    pub rejected: Option<BadMessage>,
    pub ack: Option<Ack>,
    /// The device's own acknowledgement, sent once its readings' transitions are journaled.
    pub device_ack: Option<DeviceAck>,
}

impl Ingested {
    pub fn readings(readings: ReadingBatch) -> Self {
        Ingested {
            readings: Some(readings),
            ..Ingested::default()
        }
    }
}

/// Acknowledges a message to its source (an MQTT PUBACK) when called; dropping it without a
/// call leaves the message unacknowledged, so the broker delivers it again.
pub struct Ack(Box<dyn FnOnce() + Send>);

impl Ack {
    pub fn new(ack: impl FnOnce() + Send + 'static) -> Self {
        Ack(Box::new(ack))
    }

    pub fn send(self) {
        (self.0)()
    }
}
