//! parkguard: a telemetry gateway for electrical and fire safety in small-factory parks.
//!
//! # Layout
//!
//! Data flows `ingest -> decode -> rules -> store / sinks / web`:
//!
//! - [`model`]: readings, values, quality and site tags; the types every stage speaks.
//! - [`config`]: the site file and device profiles, loaded with every problem located.
//! - [`ingest`]: connection lifecycles; MQTT (rumqttc) and the embedded broker (rumqttd).
//! - [`decode`]: pure decoding of payloads into readings.
//! - [`rules`]: thresholds, delays and the ISA-18.2 alarm state machine (pure), and the task
//!   that owns them.
//! - [`store`]: SQLite: alarm states across restarts and the hash-chained alarm journal.
//! - [`sinks`]: line protocol encoding and batched, retried writes to InfluxDB.
//! - [`web`]: the operators' web UI and HTTP API (axum): alarm board over server-sent events,
//!   commands with roles, devices, history, `/metrics`.
//! - [`health`]: supervision of long-lived tasks, loop liveness and the systemd watchdog.
//! - [`live`]: the latest value of every device's quantities, for the web UI.
//! - [`metrics`]: self-metrics counters and their Prometheus text form.
//! - [`secure`]: constant-time secret comparison and TLS servers from PEM files.
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
pub mod live;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod rules;
pub mod rules_task;
pub mod secure;
pub mod sim;
pub mod sinks;
pub mod status;
pub mod store;
pub mod web;
