//! The command line of the `parkguard` binary (the library never calls it): the commands and
//! their arguments, and the work of each: running the daemon and talking to it, validating a
//! site, the store's journal, outbox and backups, logins and tokens, commissioning over Modbus
//! and MQTT, the simulator and the demo. Each command returns its exit code; what it computes
//! lives in the library (`config`, `decode::inspect`, `ingest::modbus`, `ingest::mqtt`'s tap,
//! `store`, `sim`, `web`'s password and token hashes), here is the printing.
//!
//! Owns: argument parsing, exit codes, terminal output, logging's set-up, and the daemon's
//! process (signals, systemd notifications, the allocator's tuning, the failure note; `ops`).
//! Must not touch: anything the daemon does at run time beyond starting it
//! (`pipeline::Gateway`) and asking it (`control`).

pub mod access;
pub mod check;
pub mod demo;
pub mod modbus;
pub mod mqtt;
pub mod ops;
pub mod sim;
pub mod store;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parkguard::config::Config;
use tracing_subscriber::EnvFilter;

/// Exit code for an invalid configuration: a site file, profile or scenario that does not
/// validate (`check`, `run`, `reload`). systemd does not restart the daemon on it.
pub const EXIT_INVALID_CONFIG: u8 = 2;
/// Exit code of the daemon when one of its tasks failed (systemd restarts it).
pub const EXIT_TASK_FAILED: u8 = 3;
/// Exit code for a command line that cannot be carried out as written: an unknown option, a
/// missing argument, a value out of range (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "parkguard",
    version,
    about = "Telemetry gateway for electrical and fire safety",
    after_help = "Exit codes: 0 success, 1 the command found a failure, 2 invalid configuration, \
                  3 a daemon task failed, 64 usage error."
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The parsed command line; help and version are printed with exit 0, a usage error with
    /// exit 64, so that scripts and service managers can tell it from an invalid site file.
    pub fn parse_args() -> Result<Cli, ExitCode> {
        Cli::try_parse().map_err(|err| {
            let _ = err.print();
            if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        })
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// One command, no external services: the embedded MQTT broker, a simulated park (about
    /// 20 enterprises with meters, electrical-fire detectors, gas and smoke detectors), the
    /// daemon with the default rules and the web UI. Prints the URL and a login; alarms occur
    /// within the first minute. Ctrl-C stops it.
    Demo(demo::DemoArgs),
    /// Device simulators for commissioning practice, tests and benchmarks: plays a scenario
    /// file (Modbus devices on TCP and optionally RTU on a serial line, MQTT devices through a
    /// broker), or generates load (--load).
    Sim(sim::SimArgs),
    /// Run the daemon.
    Run(ops::RunArgs),
    /// Show the running daemon's condition: connections, devices offline, outbox depth, pushes
    /// waiting, active alarms. Asks the daemon over its control socket (`<store>.sock`).
    Status(ops::StatusArgs),
    /// Make the running daemon re-read its site file (as SIGHUP does) and report how it went:
    /// exit 0 when reloaded; 2 with the file's errors when refused (the daemon keeps running
    /// with the configuration it had).
    Reload(ops::ReloadArgs),
    /// Validate a site configuration and the profiles it uses; exit 0 when valid, 2 when not.
    Check(check::CheckArgs),
    /// The alarm journal in the store.
    Journal {
        #[command(subcommand)]
        command: store::JournalCommand,
    },
    /// The outbox of batches waiting for the InfluxDB sinks.
    Outbox {
        #[command(subcommand)]
        command: store::OutboxCommand,
    },
    /// Commissioning tools for Modbus devices.
    Modbus {
        #[command(subcommand)]
        command: modbus::ModbusCommand,
    },
    /// Commissioning tools for MQTT devices.
    Mqtt {
        #[command(subcommand)]
        command: mqtt::MqttCommand,
    },
    /// Copies the store (alarm states, journal, outbox, history, sign-offs) into a new file
    /// while the daemon runs (SQLite online backup), then checks the copy's journal chain.
    Backup(store::BackupArgs),
    /// Web UI users.
    User {
        #[command(subcommand)]
        command: access::UserCommand,
    },
    /// API tokens for machine clients of the web API.
    Token {
        #[command(subcommand)]
        command: access::TokenCommand,
    },
}

impl Command {
    pub fn run(self) -> ExitCode {
        match self {
            Command::Demo(args) => args.run(),
            Command::Sim(args) => args.run(),
            Command::Run(args) => ops::run(&args.config),
            Command::Status(args) => ops::status(args.config.as_deref(), args.socket, args.json),
            Command::Reload(args) => ops::reload_command(args.config.as_deref(), args.socket),
            Command::Check(args) => args.run(),
            Command::Journal { command } => command.run(),
            Command::Outbox { command } => command.run(),
            Command::Modbus { command } => command.run(),
            Command::Mqtt { command } => command.run(),
            Command::Backup(args) => args.run(),
            Command::User { command } => command.run(),
            Command::Token { command } => command.run(),
        }
    }
}

/// A command line that names something impossible: said on standard error, exit 64.
pub fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_USAGE)
}

pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::FAILURE
        })
}

pub fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("cannot start the runtime: {err}");
        ExitCode::FAILURE
    })
}

/// Loads and validates a site file; its problems are printed, one per line, and end the
/// command with exit 2.
pub fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|problems| {
        for problem in &problems {
            eprintln!("{problem}");
        }
        eprintln!("{} problem(s) found in {}", problems.len(), file.display());
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

/// A TOML basic string (quotes and backslashes escaped).
pub fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

pub fn init_logging(json: bool) {
    // rumqttd logs per-client events as ERRORs (a client closing its socket, an ordinary
    // disconnect: "no-connection id N is already gone"); with hundreds of NB-IoT sensors that
    // would bury real errors. Its startup failures are checked by `ingest::broker` itself, so
    // its own log is off unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off,rumqttc=warn"));
    // No colour codes in journald, files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
