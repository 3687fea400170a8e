//! Rules and the alarm lifecycle: pure evaluation (`threshold`, `alarm`, `engine`) and the one
//! task that owns the engine (`runtime`). Nothing here waits on the disk, InfluxDB or a push:
//! transitions leave through channels that never block evaluation.

pub mod alarm;
pub mod engine;
pub mod runtime;
pub mod threshold;
