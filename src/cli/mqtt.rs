//! `parkguard mqtt tap`.

use std::process::ExitCode;

use std::path::PathBuf;

use super::{current_thread_runtime, load, usage_error, EXIT_INVALID_CONFIG};

#[derive(clap::Subcommand)]
pub enum MqttCommand {
    /// Prints the messages on the site's broker and how each decodes with the site's
    /// subscriptions and profiles; decode errors are marked `!!` (red on a terminal). Uses a
    /// client id of its own and QoS 0, so the daemon's session is not disturbed.
    Tap {
        /// Site configuration file (broker address, credentials, TLS, subscriptions).
        #[arg(short, long, env = "PARKGUARD_CONFIG")]
        config: PathBuf,
        /// Which `[[mqtt]]` connection of the site (default: the first).
        #[arg(long)]
        connection: Option<String>,
        /// Topic filter, e.g. `park/+/smoke/#` (default: the connection's subscriptions).
        filter: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

impl MqttCommand {
    pub fn run(self) -> ExitCode {
        match self {
            MqttCommand::Tap {
                config,
                connection,
                filter,
                count,
            } => mqtt_tap(&config, connection.as_deref(), filter, count),
        }
    }
}

pub fn mqtt_tap(
    file: &std::path::Path,
    connection: Option<&str>,
    filter: Option<String>,
    count: Option<u64>,
) -> ExitCode {
    use parkguard::ingest::mqtt::{MqttIngest, TapEvent};
    use std::io::IsTerminal;
    let config = match load(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let index = match connection {
        None if !config.site.mqtt.is_empty() => 0,
        None => {
            eprintln!("{}: the site has no [[mqtt]] connection", file.display());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        Some(name) => match config.site.mqtt.iter().position(|m| m.name == name) {
            Some(index) => index,
            None => {
                return usage_error(format!(
                    "{}: no [[mqtt]] connection named `{name}`",
                    file.display()
                ));
            }
        },
    };
    parkguard::pipeline::init_tls();
    let devices = std::sync::Arc::new(parkguard::config::devices::DeviceDirectory::from_config(
        &config,
    ));
    let metrics = parkguard::metrics::Metrics::new();
    let tap = match MqttIngest::new(&config, index, devices, metrics) {
        Ok(tap) => tap,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let colour = std::io::stdout().is_terminal();
    let (mark, reset) = if colour {
        ("\x1b[31m!!", "\x1b[0m")
    } else {
        ("!!", "")
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let stopper = cancel.clone();
    let mut seen = 0u64;
    let time = || {
        let ms = parkguard::model::now_ms();
        let s = ms.div_euclid(1000);
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            ms % 1000
        )
    };
    runtime.block_on(async {
        let report = |event: TapEvent| {
            match event {
                TapEvent::Subscribed(filters) => {
                    eprintln!("subscribed to {} (UTC times)", filters.join(", "));
                    return true;
                }
                TapEvent::Problem(problem) => {
                    eprintln!("{mark} {problem}{reset}");
                    return true;
                }
                TapEvent::Decoded {
                    topic,
                    readings,
                    problem,
                } => {
                    let device = readings
                        .first()
                        .map(|r| r.tags.device.clone())
                        .unwrap_or_default();
                    let profile = readings
                        .first()
                        .map(|r| r.tags.profile.clone())
                        .unwrap_or_default();
                    let values: Vec<String> = readings
                        .iter()
                        .map(|r| {
                            let quality = if r.quality == parkguard::model::Quality::Good {
                                String::new()
                            } else {
                                format!(" [{}]", r.quality.as_str())
                            };
                            match &r.unit {
                                Some(unit) => format!("{}={} {unit}{quality}", r.quantity, r.value),
                                None => format!("{}={}{quality}", r.quantity, r.value),
                            }
                        })
                        .collect();
                    println!(
                        "{} {topic}  {device} ({profile}): {}",
                        time(),
                        values.join("  ")
                    );
                    if let Some(problem) = problem {
                        println!(
                            "{mark}   problem: {}: {}{reset}",
                            problem.kind.as_str(),
                            problem.detail
                        );
                    }
                }
                TapEvent::Failed {
                    topic,
                    problem,
                    payload,
                } => {
                    let (reason, detail) = problem
                        .map(|p| (p.kind.as_str(), p.detail))
                        .unwrap_or(("no_readings", "nothing to read in it".to_string()));
                    let shown: String = String::from_utf8_lossy(&payload)
                        .chars()
                        .take(200)
                        .collect();
                    println!(
                        "{} {topic}  {mark} DECODE ERROR {reason}: {detail}{reset}",
                        time()
                    );
                    println!("   payload: {shown}");
                }
            }
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                stopper.cancel();
                return false;
            }
            true
        };
        let stop_on_signal = {
            let cancel = cancel.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                cancel.cancel();
            }
        };
        tokio::select! {
            _ = tap.tap(filter, cancel.clone(), report) => {}
            _ = stop_on_signal => {}
        }
    });
    ExitCode::SUCCESS
}
