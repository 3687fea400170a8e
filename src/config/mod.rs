//! The daemon's configuration: one TOML site file plus the device profiles and rule files it
//! refers to.
//!
//! Owns: the configuration schema (these structs and their doc comments are the operator's
//! reference, and `docs/configuration.md` is generated from them), loading, secret resolution
//! and cross-reference validation, one file per section with its checks (`validate_<section>`;
//! `alerts::validate` for `[alerts]`). A profile's payload and register maps are `decode`'s
//! types: configuration depends on decode, never the reverse. Must not touch: connections,
//! tasks or any runtime state; a `Config` is inert data.
//!
//! Every problem is reported as `file:line:column: key.path: message`, all at once.

pub mod alerts;
mod broker;
pub mod devices;
pub mod fire;
mod gateway;
pub mod http_ingest;
mod influx;
pub mod linkage;
mod locate;
mod modbus;
mod mqtt;
pub mod northbound;
mod profile;
pub mod rules;
mod secret;
mod site;
pub mod topic;
mod web;

pub use broker::{parse_broker_users, BrokerAcl, BrokerConfig, EmbeddedBrokerConfig};
pub use gateway::GatewayConfig;
pub use http_ingest::{CtwingApiConfig, HttpIngestConfig, IngestPlatform, OnenetApiConfig};
pub use influx::{InfluxApi, InfluxSinkConfig};
pub use linkage::{DeviceResetConfig, LinkageConfig, OutputConfig, OutputKind};
pub use locate::{PathMap, Problem, SourceFile};
pub use modbus::{
    ModbusConfig, ModbusLink, ModbusTransport, ModbusUnitConfig, Parity, SerialConfig,
};
pub use mqtt::{MqttConfig, MqttProtocol, MqttTlsConfig, SubscriptionConfig, UnknownDevices};
pub use profile::{
    AckCommandConfig, CommandParam, DeviceAckConfig, DeviceAlarm, MaintenanceState, Profile,
    QuantityInfo, QuantityRole,
};
pub use rules::{
    AlarmKind, ConditionConfig, LevelConfig, RuleConfig, RuleOverride, RuleSetFile, Severity,
};
pub use secret::Secret;
pub use site::{DeviceConfig, EnterpriseConfig, LocationConfig, ParkConfig};
pub use web::{Role, WebConfig, WebTokenConfig, WebUserConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A site file: the gateway, its site hierarchy, devices, MQTT connections and InfluxDB sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// This gateway.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Parks this gateway watches (top of the site hierarchy).
    #[serde(default)]
    pub parks: Vec<ParkConfig>,
    /// Enterprises (tenants) inside a park.
    #[serde(default)]
    pub enterprises: Vec<EnterpriseConfig>,
    /// Locations (building, floor, distribution box) inside an enterprise.
    #[serde(default)]
    pub locations: Vec<LocationConfig>,
    /// Devices, each at one location and decoded with one profile.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// An MQTT broker run inside the daemon.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// MQTT connections to subscribe on.
    #[serde(default)]
    pub mqtt: Vec<MqttConfig>,
    /// Modbus endpoints to poll.
    #[serde(default)]
    pub modbus: Vec<ModbusConfig>,
    /// InfluxDB servers to write readings to.
    #[serde(default)]
    pub influx: Vec<InfluxSinkConfig>,
    /// Changes to rules for this site or part of it (thresholds, delays, off).
    #[serde(default)]
    pub rule_overrides: Vec<RuleOverride>,
    /// The operators' web UI and HTTP API (alarm board, devices, history, `/metrics`). Absent:
    /// no HTTP server is started.
    #[serde(default)]
    pub web: Option<WebConfig>,
    /// Alarm pushes: channels, routes, escalation. Absent: alarms are not pushed.
    #[serde(default)]
    pub alerts: Option<alerts::AlertsConfig>,
    /// What parkguard can switch: gas shut-off valves, exhaust fans, sounders, strobes,
    /// breaker trips, each a Modbus coil or register or an MQTT publish.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Interlocks: which alarms operate which outputs, and what releases them.
    #[serde(default)]
    pub linkage: Vec<LinkageConfig>,
    /// How fire alarms are confirmed or dismissed before they are forwarded.
    #[serde(default)]
    pub fire: fire::FireConfig,
    /// Urban fire remote-monitoring centres that fires and the facilities' state are
    /// forwarded to (GB/T 26875.3).
    #[serde(default)]
    pub northbound: Vec<northbound::NorthboundConfig>,
    /// Push endpoints of carrier IoT platforms (CTWing, OneNET) on the web server, for NB-IoT
    /// and 4G detectors that report through them.
    #[serde(default)]
    pub http_ingest: Vec<HttpIngestConfig>,
}

/// A loaded, validated configuration with resolved paths and secrets.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Folder of the site file; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub site: SiteFile,
    pub profiles: BTreeMap<String, Profile>,
    /// Rules of every rule file, in file order.
    pub rules: Vec<RuleConfig>,
}

impl Config {
    /// What is valid but likely wrong: `parkguard check` prints it and the daemon logs it.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.rules.iter().filter_map(|r| r.risky_clear()).collect();
        for (id, profile) in &self.profiles {
            for a in &profile.device_alarms {
                let bound = self
                    .rules
                    .iter()
                    .any(|r| r.id == a.rule && r.levels.iter().any(|l| l.severity == a.severity));
                if !bound {
                    out.push(format!(
                        "profile {id}: device alarm `{}` names rule {} at {}, which the rule set does not have; the device's decision is ignored",
                        a.quantity,
                        a.rule,
                        a.severity.as_str()
                    ));
                }
            }
        }
        out.extend(linkage::linkage_warnings(
            &self.site.linkage,
            &self.site.outputs,
        ));
        if let Some(web) = &self.site.web {
            let beyond_loopback = web
                .listen
                .parse::<SocketAddr>()
                .map_or(true, |a| !a.ip().is_loopback());
            if beyond_loopback && web.tls_cert.is_none() {
                out.push(format!(
                    "web.listen = \"{}\" serves plain HTTP beyond this machine: passwords and session cookies cross the park network readable; set web.tls_cert and web.tls_key",
                    web.listen
                ));
            }
            if beyond_loopback && web.metrics_token_sha256.is_none() {
                out.push(format!(
                    "web.listen = \"{}\": /metrics (alarm and session counts) is open to anyone on the network; set web.metrics_token_sha256",
                    web.listen
                ));
            }
        }
        out
    }

    /// Loads and validates a site file and the profiles it uses. Every problem found is
    /// returned, not just the first.
    pub fn load(file: &Path) -> Result<Config, Vec<Problem>> {
        let source = SourceFile::read(file).map_err(|p| vec![p])?;
        let (site, mut problems, paths) = source.deserialize_partial::<SiteFile>();
        let Some(site) = site else {
            return Err(problems);
        };
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let profiles_dir = base_dir.join(&site.gateway.profiles_dir);
        let profiles = profile::load_profiles(&profiles_dir, &source, &mut problems);
        let rules = load_rules(
            &base_dir,
            &site.gateway.rule_files(),
            &source,
            &mut problems,
        );
        let mut config = Config {
            file: file.to_path_buf(),
            base_dir,
            site,
            profiles,
            rules,
        };
        config.validate(&source, &paths, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(problems)
        }
    }

    /// A profile validation has already checked to exist; an error only if the config was
    /// built without `load`.
    pub fn profile(&self, id: &str) -> anyhow::Result<&Profile> {
        self.profiles
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no profile `{id}`"))
    }

    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn validate(&mut self, source: &SourceFile, paths: &PathMap, problems: &mut Vec<Problem>) {
        let mut report = |path: String, message: String| {
            let path = paths.original(&path);
            problems.push(source.locate(&path, message))
        };
        let report: &mut dyn FnMut(String, String) = &mut report;
        {
            let site = &self.site;
            let ids = site::validate_site(site, report);
            let refs = References {
                profiles: &self.profiles,
                profiles_dir: &site.gateway.profiles_dir,
                base_dir: &self.base_dir,
                ids: &ids,
            };
            gateway::validate_gateway(&site.gateway, report);
            site::validate_devices(site, &refs, report);
            mqtt::validate_mqtt(&site.mqtt, &refs, report);
            modbus::validate_modbus(&site.modbus, &site.devices, &refs, report);
            influx::validate_influx(&site.influx, report);
            http_ingest::validate_http_ingest(&site.http_ingest, site.web.is_some(), &refs, report);
            if let Some(web) = &site.web {
                web::validate_web(web, &self.base_dir, report);
            }
            if let Some(broker) = &site.broker.embedded {
                broker::validate_embedded_broker(broker, &self.base_dir, report);
            }
            if let Some(alerts) = &site.alerts {
                let mqtt_names = site.mqtt.iter().map(|m| m.name.as_str()).collect();
                alerts::validate(alerts, &mqtt_names, &self.base_dir, report);
            }
            rules::validate_rule_overrides(&site.rule_overrides, &self.rules, &ids, report);
            linkage::validate_outputs(
                &site.outputs,
                &site.modbus,
                &site.mqtt,
                &ids.locations,
                report,
            );
            linkage::validate_linkage(&site.linkage, &site.outputs, &self.rules, report);
            fire::validate_fire(&site.fire, report);
            let kind_of = |d: &DeviceConfig| {
                d.kind
                    .clone()
                    .or_else(|| self.profiles.get(&d.profile).map(|p| p.kind.clone()))
                    .unwrap_or_default()
            };
            northbound::validate_northbound(
                &site.northbound,
                &site.devices,
                &kind_of,
                &ids.enterprises,
                report,
            );
        }
        secret::resolve_secrets(&mut self.site, &self.base_dir, report);
    }
}

/// What the sections' checks look up across the site: the profiles and the hierarchy's ids.
struct References<'a> {
    profiles: &'a BTreeMap<String, Profile>,
    profiles_dir: &'a Path,
    base_dir: &'a Path,
    ids: &'a site::SiteIds<'a>,
}

impl References<'_> {
    /// The message for a profile name that is not in the profiles folder.
    fn dangling_profile(&self, name: &str) -> String {
        let known = self.profiles.keys().map(String::as_str).collect::<Vec<_>>();
        format!(
            "no profile `{name}` in {} (known: {})",
            self.profiles_dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }
}

/// Loads the site's rule files, then the built-in gateway rules the site does not replace;
/// problems inside a rule file are located in its own file.
fn load_rules(
    base_dir: &Path,
    files: &[PathBuf],
    site: &SourceFile,
    problems: &mut Vec<Problem>,
) -> Vec<RuleConfig> {
    let mut rules: Vec<RuleConfig> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let path = base_dir.join(file);
        let source = match SourceFile::read(&path) {
            Ok(source) => source,
            Err(_) => {
                problems.push(site.locate(
                    &format!("gateway.rule_files[{i}]"),
                    format!("cannot read rule file {}", path.display()),
                ));
                continue;
            }
        };
        match source.deserialize::<RuleSetFile>() {
            Ok(set) => {
                for (j, rule) in set.rules.into_iter().enumerate() {
                    for (key, message) in rule.problems() {
                        problems.push(source.locate(&format!("rules[{j}].{key}"), message));
                    }
                    if rules.iter().any(|r| r.id == rule.id) {
                        problems.push(source.locate(
                            &format!("rules[{j}].id"),
                            format!("rule id `{}` is already used", rule.id),
                        ));
                    }
                    rules.push(rule);
                }
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    let builtin = SourceFile {
        path: PathBuf::from("<built-in>/rules/gateway.toml"),
        text: GATEWAY_RULES.to_string(),
    };
    match builtin.deserialize::<RuleSetFile>() {
        Ok(set) => rules.extend(
            set.rules
                .into_iter()
                .filter(|g| !rules.iter().any(|r| r.id == g.id))
                .collect::<Vec<_>>(),
        ),
        Err(mut found) => problems.append(&mut found),
    }
    rules
}

/// Rules about the gateway itself, always loaded (a site rule with the same id replaces one).
const GATEWAY_RULES: &str = include_str!("../../firmware-config/rules/gateway.toml");

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rtu_frame_gap_is_three_and_a_half_characters_with_a_floor_above_19200_baud() {
        let line = |baud, parity, stop_bits| SerialConfig {
            baud,
            parity,
            data_bits: 8,
            stop_bits,
        };
        // 9600 8N1: 10 bits a character, 3.5 characters = 3.646 ms.
        assert_eq!(
            line(9600, Parity::None, 1).frame_gap(),
            Duration::from_micros(3645)
        );
        // 9600 8E1: 11 bits.
        assert_eq!(
            line(9600, Parity::Even, 1).frame_gap(),
            Duration::from_micros(4010)
        );
        assert_eq!(
            line(115_200, Parity::None, 1).frame_gap(),
            Duration::from_micros(1750)
        );
    }
}
