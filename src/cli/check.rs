//! `parkguard check`: validates a site file and every profile and rule file it uses without
//! starting anything; with `--plan`, prints each profile's Modbus read plan; with
//! `--components`, each monitoring centre link's component addresses.

use std::path::PathBuf;
use std::process::ExitCode;

use parkguard::config::Config;

use super::{load, usage_error};

/// `parkguard check [-c] SITE.toml [--plan]`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Site configuration file.
    #[arg(short, long, env = "PARKGUARD_CONFIG")]
    config: Option<PathBuf>,
    /// The site file as a positional argument (the same as -c; it wins over PARKGUARD_CONFIG).
    #[arg(value_name = "SITE")]
    file: Option<PathBuf>,
    /// Also print the Modbus read plan of every profile: one line per request.
    #[arg(long)]
    plan: bool,
    /// Also print, for each `[[northbound]]` link, every device's address towards the
    /// monitoring centre: what to give the centre at registration.
    #[arg(long)]
    components: bool,
}

impl CheckArgs {
    pub fn run(self) -> ExitCode {
        match self.file.or(self.config) {
            Some(file) => check(&file, self.plan, self.components),
            None => usage_error("give the site file: parkguard check -c SITE.toml"),
        }
    }
}

fn check(file: &std::path::Path, print_plan: bool, print_components: bool) -> ExitCode {
    match load(file) {
        Ok(config) => {
            if print_plan {
                print_read_plans(&config);
            }
            if print_components {
                print_components_of(&config);
            }
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            if let Some(alerts) = &config.site.alerts {
                for line in alerts.escalation_summary() {
                    println!("{line}");
                }
            }
            println!(
                "{}: valid ({} devices, {} profiles, {} MQTT connections, {} InfluxDB sinks)",
                file.display(),
                config.site.devices.len(),
                config.profiles.len(),
                config.site.mqtt.len(),
                config.site.influx.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn print_components_of(config: &Config) {
    use parkguard::northbound::gb26875::mapping::Mapper;
    for link in &config.site.northbound {
        println!(
            "northbound {} (device address {}, centre {} at {}):",
            link.name, link.device_address, link.centre_address, link.centre
        );
        println!(
            "  system type  system address  component type  component address  device  description"
        );
        for (device, c) in Mapper::new(config, link).components() {
            let (description, _, _) = encoding_rs::GB18030.decode(&c.description);
            println!(
                "  {:>11}  {:>14}  {:>14}  {:>17}  {device}  {description}",
                c.system_type, c.system_address, c.component_type, c.component_address
            );
        }
    }
}

fn print_read_plans(config: &Config) {
    use parkguard::decode::registers::RegisterDecoder;
    use parkguard::ingest::read_plan::{plan, PlanOptions};
    for (id, profile) in &config.profiles {
        let Some(modbus) = &profile.modbus else {
            continue;
        };
        let decoders: Vec<RegisterDecoder> = modbus
            .registers
            .iter()
            .map(|r| RegisterDecoder::new(r, modbus.address_base))
            .collect();
        for (class, interval_ms) in &modbus.poll_classes {
            let requests = plan(&decoders, class, PlanOptions::from(modbus));
            if requests.is_empty() {
                continue;
            }
            println!(
                "{id} [{class}, every {interval_ms} ms]: {} request(s)",
                requests.len()
            );
            for r in requests {
                let names: Vec<&str> = r
                    .values
                    .iter()
                    .map(|&i| modbus.registers[i].quantity.as_str())
                    .collect();
                let last = u32::from(r.start) + u32::from(r.count) - 1;
                println!(
                    "  {:?} {}..{last} (0x{:04X}..0x{last:04X}, count {}): {}",
                    r.area,
                    r.start,
                    r.start,
                    r.count,
                    names.join(", ")
                );
            }
        }
    }
}
