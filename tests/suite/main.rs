//! The integration tests, one test binary: linking the library and its dependencies once
//! instead of once per file keeps a clean build within CI's time and disk. Each file below
//! is a module; `cargo test --test suite MODULE::` runs one file's tests, and `support` holds
//! the real servers and helpers they share.

mod support;

mod alarm_safety;
mod alarms;
mod alerts;
mod backup;
mod commissioning;
mod config_check;
mod config_reference;
mod crash_windows;
mod demo;
mod deploy;
mod docs_links;
mod downlink;
mod durable_delivery;
mod failsafe;
mod fuzz;
mod gb26875_golden;
mod golden_pushes;
mod hostile;
mod http_ingest;
mod line_protocol_roundtrip;
mod linkage;
mod local_history;
mod modbus;
mod modbus_interop;
mod module_graph;
mod mqtt_tls_and_broker;
mod mqtt_to_influx;
mod northbound;
mod northbound_mapping;
mod operations;
mod promises;
mod recovery;
mod register_fixtures;
mod rules_engine;
mod sim;
mod sms;
mod store_upgrade;
mod web_api;
mod web_devices;
mod web_outputs;
mod web_ui;
mod web_wall;
