//! Device simulators, for tests, benchmarks, the demo (`park`) and (later) `parkguard sim`.
//!
//! Owns: simulated devices and their servers. Must not touch: the daemon's pipeline; simulators
//! talk to it only over the network, like real devices.

pub mod modbus;
pub mod park;
