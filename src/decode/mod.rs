//! Pure decoding of device data into readings: MQTT JSON payloads (`payload`) and, later,
//! Modbus register words.
//!
//! Owns: turning bytes into `model::Reading`s and saying precisely why bytes could not be
//! turned into one. Must not touch: IO, the clock (callers pass the receive time), logging,
//! counters or configuration files.

pub mod json;
pub mod payload;
