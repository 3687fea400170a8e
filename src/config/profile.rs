//! Device profiles: `<profiles_dir>/<id>.toml`, one per device model and firmware, with its
//! Modbus register map or MQTT payload mapping, the device's own alarms, maintenance states
//! and how it is acknowledged; and their loading, each problem located in its own file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Problem, Severity, SourceFile};
use crate::decode::payload::PayloadMapping;
use crate::decode::registers::ModbusProfile;

/// A device profile file: `<profiles_dir>/<id>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The device's maker, e.g. `Acrel`; shown by `parkguard modbus profile-test`.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// The maker's model name, e.g. `ADW300`; shown by `parkguard modbus profile-test`.
    #[serde(default)]
    pub model: Option<String>,
    /// Firmware version(s) the register map or payload mapping was written for; register
    /// maps change between firmware releases.
    #[serde(default)]
    pub firmware: Option<String>,
    /// Notes for whoever maintains the profile (where the map comes from, quirks); not used
    /// by the gateway.
    #[serde(default)]
    pub description: Option<String>,
    /// Device kind of devices with this profile: `meter`, `detector`, `gas`, `smoke`, ...
    pub kind: String,
    /// InfluxDB measurement for its readings; defaults to `kind`.
    #[serde(default)]
    pub measurement: Option<String>,
    /// How to decode MQTT JSON payloads of this device.
    #[serde(default)]
    pub payload: Option<PayloadMapping>,
    /// Register map, for devices polled over Modbus.
    #[serde(default)]
    pub modbus: Option<ModbusProfile>,
    /// Seconds between a device's unprompted messages (heartbeats), for offline detection of
    /// devices that publish rather than being polled.
    #[serde(default)]
    pub heartbeat_s: Option<f64>,
    /// How the gateway acknowledges the device's alarm messages on its downlink, for MQTT
    /// devices that retransmit an alarm until acknowledged.
    #[serde(default)]
    pub ack: Option<DeviceAckConfig>,
    /// Device states in which its readings are not real (a gas detector warming up or being
    /// calibrated with span gas, a self-test): while one holds, the device's alarms are
    /// suppressed by design (evaluated, journaled and shown, not pushed), and they end by
    /// themselves when the state does; an alarm still active then is annunciated again.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceState>,
    /// The device's own alarm decisions (a red lamp at its own set-point): each raises the
    /// named level of a gateway rule's alarm on this device, like the rule's threshold does.
    /// Whichever comes first raises the alarm; it clears when both have cleared.
    #[serde(default)]
    pub device_alarms: Vec<DeviceAlarm>,
    /// How the host resets the device's latched alarms (a Modbus write), e.g.
    /// `[reset] address = 20, value = 1`. With it, an operator's Reset of a latched alarm
    /// the device still holds writes it and completes once the device drops the alarm.
    #[serde(default)]
    pub reset: Option<super::DeviceResetConfig>,
    /// `[[quantities]]`: how the duty room sees the device's quantities, in the order shown:
    /// a name in Chinese and English, a role, and whether it is one of the two to four
    /// values the device list shows (without any `primary`, the list shows the first named
    /// measurements, or the first values). Quantities not listed are shown on the device page
    /// under their id.
    #[serde(default)]
    pub quantities: Vec<QuantityInfo>,
}

/// One `[[quantities]]` entry of a profile, e.g.
/// `{ id = "leakage", zh = "剩余电流", en = "Residual current", primary = true }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityInfo {
    /// The quantity, as the payload mapping or register map names it (a flag of `bits` and
    /// a field of `fields` count too).
    pub id: String,
    /// Its name in Chinese, e.g. `剩余电流`.
    pub zh: String,
    /// Its name in English, e.g. `Residual current`.
    pub en: String,
    /// `measurement` (default: a physical value to watch), `status` (states and flags),
    /// `setting` (the device's own set-points and configuration) or `counter` (counts,
    /// sequence numbers). Settings and counters are shown on the device page only.
    #[serde(default)]
    pub role: QuantityRole,
    /// One of the values shown for the device in the device list (at most four a profile; a
    /// measurement or a status).
    #[serde(default)]
    pub primary: bool,
}

/// What a quantity is to an operator.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuantityRole {
    /// A physical value to watch: current, temperature, concentration.
    #[default]
    Measurement,
    /// A state or flag: alarm bits, events, battery state.
    Status,
    /// The device's own set-points and configuration.
    Setting,
    /// Counts and sequence numbers.
    Counter,
}

/// The most values a device shows in the device list.
pub const MAX_PRIMARY_QUANTITIES: usize = 4;

/// One `[[device_alarms]]` entry of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAlarm {
    /// The device's flag (a status bit), or its text state when `states` is given.
    pub quantity: String,
    /// For text quantities: the states that mean this alarm. Empty: the quantity is a flag.
    #[serde(default)]
    pub states: Vec<String>,
    /// The gateway rule whose alarm the device's decision raises, e.g. `R1`.
    pub rule: String,
    /// Which of the rule's levels, by its severity.
    pub severity: Severity,
    /// For rules with one alarm per quantity: the quantity whose alarm it is (`leakage`).
    /// Absent: every alarm of the rule on the device.
    #[serde(default)]
    pub source: Option<String>,
}

/// One quantity of `[[maintenance]]`: a text state among `states`, or a flag that is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceState {
    /// The quantity that tells the device's state: a text quantity (with `states`), or a flag
    /// that is set during maintenance.
    pub quantity: String,
    /// For text quantities: the states that mean maintenance. Empty: the quantity is a flag.
    #[serde(default)]
    pub states: Vec<String>,
}

/// `[ack]` of a profile: once a message whose `quantity` is one of `states` is durably
/// recorded (its alarm transition journaled), the gateway acknowledges it so that the device
/// stops retransmitting: for a device on MQTT it publishes `payload` to `topic` (QoS 1) on the
/// connection the message came from; for a device that reports through an `[[http_ingest]]`
/// endpoint with platform API credentials (`ctwing_api`, `onenet_api`) it sends `command`
/// through the platform's API. In `topic`, `payload` and the command's text parameters,
/// `{name}` is a level the subscription's topic template captured (`{park}`, ...; MQTT only),
/// `{device}` the device's id, `{event}` the state and `{ts}` the gateway's time in Unix
/// seconds. Give `topic` and `payload`, or `command`, or all three for a profile used both ways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAckConfig {
    /// The payload mapping's `text` quantity that carries the device's event, e.g. `event`.
    pub quantity: String,
    /// The states of `quantity` whose messages are acknowledged, e.g. `["alarm", "fault"]`.
    pub states: Vec<String>,
    /// Topic of the acknowledgement (MQTT devices), e.g. `park/{park}/smoke/{device}/down`.
    #[serde(default)]
    pub topic: Option<String>,
    /// The acknowledgement's payload text (MQTT devices), e.g.
    /// `'{"cmd":"ack","dev":"{device}","event":"{event}","ts":{ts}}'`.
    #[serde(default)]
    pub payload: Option<String>,
    /// The acknowledgement as a platform command (devices behind CTWing or OneNET), e.g.
    /// `command = { service = "alarm_ack", params = { event = "{event}" } }`, or for a
    /// CTWing transparent product `command = { hex = "A5010F" }`.
    #[serde(default)]
    pub command: Option<AckCommandConfig>,
}

/// `[ack.command]`: a thing-model service call (`service` and `params`) or the device's own
/// bytes (`hex`, CTWing transparent products only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckCommandConfig {
    /// The service's identifier in the product's thing model (CTWing `serviceIdentifier`,
    /// OneNET Studio `identifier`).
    #[serde(default)]
    pub service: Option<String>,
    /// The service's parameters; in text values `{device}`, `{event}` and `{ts}` are filled
    /// in (a value that is exactly `{ts}` becomes a number).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, CommandParam>,
    /// The bytes to send, in hex (an even number of digits), for a CTWing product without a
    /// thing model.
    #[serde(default)]
    pub hex: Option<String>,
}

/// A parameter of a platform command: a boolean, an integer, a float or a text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CommandParam {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl AckCommandConfig {
    /// The bytes of `hex`, when it is given and valid.
    pub fn hex_bytes(&self) -> Option<Vec<u8>> {
        self.hex.as_deref().and_then(hex_bytes)
    }

    /// Why this command cannot be sent, if it cannot.
    pub fn problem(&self) -> Option<String> {
        match (&self.service, &self.hex) {
            (Some(_), Some(_)) | (None, None) => {
                Some("give either `service` (with `params`) or `hex`".into())
            }
            (Some(service), None) if service.trim().is_empty() => {
                Some("`service` must not be empty".into())
            }
            (None, Some(hex)) if hex.is_empty() || hex_bytes(hex).is_none() => {
                Some(format!("`{hex}` is not an even number of hex digits"))
            }
            (None, Some(_)) if !self.params.is_empty() => {
                Some("`params` belong to a `service`, not to `hex`".into())
            }
            _ => None,
        }
    }
}

/// The bytes of an even-length hex string.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Profile {
    pub fn measurement(&self) -> &str {
        self.measurement.as_deref().unwrap_or(&self.kind)
    }

    /// Every quantity the profile's payload mapping or register map produces, in mapping
    /// order: mapped fields (JSON and `bytes`), registers, their flags (`bits`) and their bit
    /// fields (`fields`).
    pub fn produced_quantities(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let Some(payload) = &self.payload {
            names.extend(payload.fields.iter().map(|f| f.quantity.as_str()));
            if let Some(bytes) = &payload.bytes {
                names.extend(bytes.fields.iter().map(|f| f.quantity.as_str()));
            }
        }
        if let Some(modbus) = &self.modbus {
            for register in &modbus.registers {
                names.push(register.quantity.as_str());
                names.extend(register.bits.values().map(String::as_str));
                names.extend(register.fields.iter().map(|f| f.quantity.as_str()));
            }
        }
        names
    }

    /// Problems of `[[quantities]]`, as (key path, message).
    fn quantity_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let produced: std::collections::BTreeSet<&str> =
            self.produced_quantities().into_iter().collect();
        let mut seen = std::collections::BTreeSet::new();
        for (i, q) in self.quantities.iter().enumerate() {
            if !produced.contains(q.id.as_str()) {
                problems.push((
                    format!("quantities[{i}].id"),
                    format!(
                        "`{}` is not a quantity of this profile's payload mapping or register map",
                        q.id
                    ),
                ));
            }
            if !seen.insert(q.id.as_str()) {
                problems.push((
                    format!("quantities[{i}].id"),
                    format!("`{}` is listed twice", q.id),
                ));
            }
            if q.zh.trim().is_empty() || q.en.trim().is_empty() {
                problems.push((
                    format!("quantities[{i}]"),
                    "a quantity needs its name in both `zh` and `en`".to_string(),
                ));
            }
            if q.primary && matches!(q.role, QuantityRole::Setting | QuantityRole::Counter) {
                problems.push((
                    format!("quantities[{i}].primary"),
                    "settings and counters are shown on the device page only, not in the list"
                        .to_string(),
                ));
            }
        }
        let primary = self.quantities.iter().filter(|q| q.primary).count();
        if primary > MAX_PRIMARY_QUANTITIES {
            problems.push((
                "quantities".to_string(),
                format!(
                    "{primary} quantities are primary; the device list shows at most {MAX_PRIMARY_QUANTITIES}"
                ),
            ));
        }
        problems
    }
}

/// Loads every `*.toml` in the profiles folder; problems inside a profile are located in its
/// own file.
pub(super) fn load_profiles(
    dir: &Path,
    site: &SourceFile,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Profile> {
    let mut profiles = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problems.push(site.locate(
                "gateway.profiles_dir",
                format!("cannot read profiles folder {}: {err}", dir.display()),
            ));
            return profiles;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let source = match SourceFile::read(&path) {
            Ok(source) => source,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        match source.deserialize::<Profile>() {
            Ok(profile) => {
                if let Some(payload) = &profile.payload {
                    for (path, message) in payload.problems() {
                        problems.push(source.locate(&format!("payload.{path}"), message));
                    }
                }
                if let Some(modbus) = &profile.modbus {
                    for (path, message) in modbus.problems() {
                        problems.push(source.locate(&format!("modbus.{path}"), message));
                    }
                }
                for (path, message) in profile.quantity_problems() {
                    problems.push(source.locate(&path, message));
                }
                if let Some(ack) = &profile.ack {
                    let decoded = profile
                        .payload
                        .as_ref()
                        .is_some_and(|p| p.fields.iter().any(|f| f.quantity == ack.quantity));
                    if !decoded {
                        problems.push(source.locate(
                            "ack.quantity",
                            format!(
                                "`{}` is not a quantity of this profile's payload mapping",
                                ack.quantity
                            ),
                        ));
                    }
                    if ack.states.is_empty() {
                        problems.push(source.locate(
                            "ack.states",
                            "name the states whose messages are acknowledged".to_string(),
                        ));
                    }
                    let mqtt = ack.topic.is_some() && ack.payload.is_some();
                    if ack.topic.is_some() != ack.payload.is_some()
                        || (!mqtt && ack.command.is_none())
                    {
                        problems.push(source.locate(
                            "ack",
                            "give `topic` and `payload` (MQTT devices), or `command` (devices behind CTWing or OneNET)".to_string(),
                        ));
                    }
                    if let Some(problem) = ack.command.as_ref().and_then(|c| c.problem()) {
                        problems.push(source.locate("ack.command", problem));
                    }
                }
                profiles.insert(id, profile);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    profiles
}

#[cfg(test)]
mod tests {
    use super::AckCommandConfig;

    fn command(text: &str) -> AckCommandConfig {
        toml::from_str(text).expect("command")
    }

    #[test]
    fn an_ack_command_is_a_service_or_hex_bytes() {
        assert_eq!(
            command(
                r#"service = "alarm_ack"
            params = { a = 1 }"#
            )
            .problem(),
            None
        );
        assert_eq!(command(r#"hex = "A5010f""#).problem(), None);
        assert_eq!(
            command(r#"hex = "A5010f""#).hex_bytes(),
            Some(vec![0xA5, 1, 0x0F])
        );
        for bad in [
            "",
            r#"service = "a"
            hex = "00""#,
            r#"service = " ""#,
            r#"hex = "A50""#,
            r#"hex = "zz""#,
            r#"hex = """#,
            r#"hex = "00"
            params = { a = 1 }"#,
        ] {
            assert!(command(bad).problem().is_some(), "{bad}");
        }
    }
}
