//! GB/T 26875.3-2011, the urban fire remote-monitoring protocol, from the device's side:
//! frames (`frame`), application data (`unit`) and what an alarm transition becomes
//! (`mapping`), all pure.

pub mod frame;
pub mod mapping;
pub mod unit;
