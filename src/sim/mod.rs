//! Device simulators: the Modbus server (`modbus`), scenario files and their player
//! (`scenario`, `encode`), the load generator (`load`) and the demo park (`park`), used by
//! `parkguard sim`, `parkguard demo`, tests and benchmarks.
//!
//! Owns: simulated devices and their servers. Must not touch: the daemon's pipeline; simulators
//! talk to it only over the network, like real devices.

pub mod encode;
pub mod load;
pub mod modbus;
pub mod park;
pub mod scenario;
