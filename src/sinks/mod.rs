//! Outputs for readings: InfluxDB over HTTP (`influx`), its pure encoder (`line_protocol`) and
//! the batching, retrying runner (`runner`).
//!
//! Owns: batching, encoding, writing and the retry policy. Must not touch: MQTT, Modbus or
//! rules; it receives readings and knows nothing of where they came from.

pub mod influx;
pub mod line_protocol;
pub mod runner;
