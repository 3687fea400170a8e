//! `parkguard mqtt tap`.

use std::process::ExitCode;

use super::current_thread_runtime;
use crate::{load, EXIT_INVALID_CONFIG};

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
                eprintln!("{}: no [[mqtt]] connection named `{name}`", file.display());
                return ExitCode::from(EXIT_INVALID_CONFIG);
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
