//! Device simulators, for tests, benchmarks and (later) `parkguard sim` and the demo.
//!
//! Owns: simulated devices and their servers. Must not touch: the daemon's pipeline; simulators
//! talk to it only over the network, like real devices.

pub mod modbus;
