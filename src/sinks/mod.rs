//! Outputs for readings and alarm events: the durable outbox (`outbox_writer`: the ingest side, which
//! commits and then acknowledges), one drain task per InfluxDB sink (`drain`: cursors, retry
//! classes, dead letters), the HTTP writer (`influx`), its pure encoder (`line_protocol`), and
//! alarm transitions and journal anchors as points for the same outbox (`alarm_points`).
//!
//! Owns: encoding, the outbox's use, writing and the retry policy. Must not touch: MQTT, Modbus
//! or rules; it receives what ingest hands on (`ingest::Ingested`: readings, rejects and an
//! opaque acknowledgement) and knows nothing of where it came from.

pub mod alarm_points;
pub mod drain;
pub mod influx;
pub mod line_protocol;
pub mod outbox_writer;
