//! Pure decoding of device data into readings: MQTT JSON payloads (`payload`, over
//! the borrowed tree of `json`, with the device's own bytes inside them read by `bytes`) and
//! Modbus register words (`registers`), and the commissioning views of raw words (`inspect`).
//!
//! Owns: turning bytes into `model::Reading`s and saying precisely why bytes could not be
//! turned into one. Must not touch: IO, the clock (callers pass the receive time), logging,
//! counters or configuration files.

pub mod bytes;
pub mod inspect;
pub mod json;
pub mod payload;
pub mod registers;
