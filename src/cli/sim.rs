//! `parkguard sim`: scenario playback and the load mode.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{usage_error, wait_for_signal, EXIT_INVALID_CONFIG};

/// `parkguard sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Scenario file (see firmware-config/scenarios/).
    #[arg(long, required_unless_present = "load")]
    scenario: Option<PathBuf>,
    /// Folder with the profiles the scenario names.
    #[arg(long, default_value = "firmware-config/profiles")]
    profiles_dir: PathBuf,
    /// Modbus TCP listen address for the scenario's Modbus devices.
    #[arg(long, default_value = "127.0.0.1:1502")]
    modbus_listen: String,
    /// Also answer as RTU on this serial device (e.g. one end of a socat pair).
    #[arg(long)]
    rtu_serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// The broker MQTT devices publish to, `host:port`.
    #[arg(long)]
    mqtt: Option<String>,
    /// Load mode: meter messages per second (12 readings each) through --mqtt.
    #[arg(long, requires = "mqtt")]
    load: Option<u64>,
    /// Load mode: number of devices the messages are spread over.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Load mode: stop after this many seconds (default: Ctrl-C).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Load mode: park id in the topics.
    #[arg(long, default_value = "xinghe")]
    park: String,
}

impl SimArgs {
    pub fn run(self) -> ExitCode {
        let mqtt = match self.mqtt.as_deref().map(parse_host_port).transpose() {
            Ok(mqtt) => mqtt,
            Err(message) => return usage_error(format!("--mqtt: {message}")),
        };
        match (self.load, mqtt) {
            (Some(rate), Some(target)) => {
                sim_load(&target, &self.park, rate, self.devices, self.duration_s)
            }
            (_, mqtt) => sim_scenario(
                self.scenario.as_deref(),
                &self.profiles_dir,
                &self.modbus_listen,
                self.rtu_serial.as_deref(),
                self.baud,
                mqtt,
            ),
        }
    }
}

pub fn parse_host_port(text: &str) -> Result<parkguard::sim::scenario::MqttTarget, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: give host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("`{text}`: the port is not a number"))?;
    Ok(parkguard::sim::scenario::MqttTarget {
        host: host.to_string(),
        port,
    })
}

pub fn sim_load(
    target: &parkguard::sim::scenario::MqttTarget,
    park: &str,
    rate: u64,
    devices: usize,
    duration_s: Option<f64>,
) -> ExitCode {
    let runtime = match super::multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let duration = duration_s
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(std::time::Duration::from_secs_f64);
    let report = runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stopper.cancel();
        });
        eprintln!(
            "load: {rate} messages/s ({} readings/s) over {devices} devices to {}:{}",
            rate * parkguard::sim::load::READINGS_PER_MESSAGE,
            target.host,
            target.port
        );
        parkguard::sim::load::run(target, park, rate, devices, duration, cancel).await
    });
    println!(
        "load: {} messages in {:.1} s = {:.0} messages/s ({:.0} readings/s)",
        report.messages,
        report.elapsed.as_secs_f64(),
        report.messages_per_s(),
        report.messages_per_s() * parkguard::sim::load::READINGS_PER_MESSAGE as f64
    );
    ExitCode::SUCCESS
}

/// Profiles from a folder, keyed by file stem.
pub fn read_profiles(
    dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, parkguard::config::Profile>, String> {
    let mut profiles = std::collections::BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let profile: parkguard::config::Profile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        profiles.insert(stem.to_string(), profile);
    }
    Ok(profiles)
}

pub fn sim_scenario(
    scenario: Option<&std::path::Path>,
    profiles_dir: &std::path::Path,
    modbus_listen: &str,
    rtu_serial: Option<&str>,
    baud: u32,
    mqtt: Option<parkguard::sim::scenario::MqttTarget>,
) -> ExitCode {
    use parkguard::sim::scenario::{self, Scenario};
    let Some(path) = scenario else {
        return usage_error("give --scenario FILE (or --load with --mqtt)");
    };
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| Scenario::parse(&text));
    let scenario = match parsed {
        Ok(scenario) => scenario,
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let profiles = match read_profiles(profiles_dir) {
        Ok(profiles) => profiles,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let problems = scenario.problems(&profiles);
    if !problems.is_empty() {
        for problem in problems {
            eprintln!("{}: {problem}", path.display());
        }
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let runtime = match super::multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let bus = parkguard::sim::modbus::SimulatedBus::new(scenario.units());
        if !scenario.units().is_empty() {
            let listener = match tokio::net::TcpListener::bind(modbus_listen).await {
                Ok(listener) => listener,
                Err(err) => {
                    eprintln!("--modbus-listen {modbus_listen}: {err}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "Modbus TCP: {} (units {:?})",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                scenario.units()
            );
            tokio::spawn(bus.clone().serve_tcp(listener));
            if let Some(device) = rtu_serial {
                let settings = parkguard::config::SerialConfig {
                    baud,
                    ..Default::default()
                };
                let serial_bus = bus.clone();
                let device = device.to_string();
                println!("Modbus RTU: {device} at {baud} 8N1");
                tokio::spawn(async move {
                    if let Err(err) = serial_bus.serve_rtu_serial(&device, &settings).await {
                        tracing::error!(error = %err, "RTU serial simulator stopped.");
                    }
                });
            }
        }
        println!(
            "Scenario: {} ({} devices, {} steps). Ctrl-C stops it.",
            scenario.name,
            scenario.devices.len(),
            scenario.steps.len()
        );
        let cancel = tokio_util::sync::CancellationToken::new();
        let player = tokio::spawn(scenario::play(
            scenario,
            profiles,
            bus,
            mqtt,
            cancel.clone(),
        ));
        wait_for_signal().await;
        cancel.cancel();
        let _ = player.await;
        ExitCode::SUCCESS
    })
}
