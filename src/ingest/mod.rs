//! Connection lifecycles of the sources: MQTT brokers (and the embedded broker) and Modbus
//! connections (`modbus`, executing the pure request plan of `plan`).
//!
//! Owns: connections, subscriptions, reconnects with backoff and jitter, and handing decoded
//! readings downstream. Must not touch: rules, sinks or storage; it only sends readings into
//! the channel it is given.

pub mod backoff;
pub mod broker;
pub mod devices;
pub mod modbus;
pub mod mqtt;
pub mod plan;
pub mod topic;
