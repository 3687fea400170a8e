//! The command-line tools' work, for the `parkguard` binary only (the library never calls
//! it): running the daemon and talking to it, commissioning over Modbus and MQTT, the
//! simulator and the demo. Each function does
//! one subcommand and returns its exit code; what they compute lives in the library
//! (`decode::inspect`, `ingest::modbus`, `sim`), here is the printing.

pub mod demo;
pub mod modbus;
pub mod mqtt;
pub mod ops;
pub mod sim;

use std::process::ExitCode;

pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::FAILURE
        })
}
