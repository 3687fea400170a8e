//! parkguard: a telemetry gateway for electrical and fire safety in small-factory parks.
//!
//! # Layout
//!
//! Data flows `ingest -> decode -> rules -> store / sinks / alerts / web`:
//!
//! - [`model`]: readings, values, quality, site tags and the alarm vocabulary; the types every
//!   stage speaks.
//! - [`config`]: the site file, device profiles and rule files, loaded with every problem
//!   located.
//! - [`ingest`]: connection lifecycles: MQTT (rumqttc, behind a relay that defuses oversized
//!   messages), the embedded broker (rumqttd) and Modbus polling.
//! - [`decode`]: pure decoding of MQTT payloads and Modbus registers into readings, and the
//!   commissioning views of raw words.
//! - [`rules`]: thresholds, delays, the ISA-18.2 alarm state machine and the rule engine (pure).
//! - [`rules_task`]: the task that runs the engine, and the store writer thread that journals
//!   its transitions.
//! - [`store`]: SQLite: alarm states across restarts, the hash-chained alarm journal, the
//!   outbox, the local history, the push queue's tables and commissioning sign-offs.
//! - [`sinks`]: the outbox writer, line protocol encoding and retried writes to InfluxDB.
//! - [`alerts`]: alarm pushes: routing, escalation, messages, channels and their delivery.
//! - [`web`]: the operators' web UI and HTTP API (axum): alarm board over server-sent events,
//!   commands with roles, devices, history, commissioning, `/metrics`.
//! - [`status`]: the gateway's own condition as readings, for the built-in gateway rules.
//! - [`health`]: supervision of long-lived tasks, loop liveness and the systemd watchdog.
//! - [`control`]: the control socket `parkguard status` and `parkguard reload` talk over.
//! - [`live`]: the latest value of every device's quantities, for the web UI.
//! - [`metrics`]: self-metrics counters and their Prometheus text form.
//! - [`backoff`]: exponential backoff with jitter, and `Retry-After`.
//! - [`secure`]: constant-time secret comparison and TLS servers from PEM files.
//! - [`footprint`]: the C allocator's tuning, to keep resident memory small.
//! - [`sim`]: device simulators and the demo park, for `parkguard sim`, the demo and tests.
//! - [`pipeline`]: builds the stages back to front and shuts them down front to back.

pub mod alerts;
pub mod backoff;
pub mod config;
pub mod control;
pub mod crashpoint;
pub mod decode;
pub mod footprint;
pub mod health;
pub mod ingest;
pub mod linkage;
pub mod live;
pub mod metrics;
pub mod model;
pub mod northbound;
pub mod pipeline;
pub mod rules;
pub mod rules_task;
pub mod secure;
pub mod sim;
pub mod sinks;
pub mod status;
pub mod store;
pub mod web;
