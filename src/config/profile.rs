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
}

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
/// recorded (its alarm transition journaled), the gateway publishes `payload` to `topic`
/// (QoS 1) on the MQTT connection the message came from, so that the device stops
/// retransmitting. In `topic` and `payload`, `{name}` is a level the subscription's topic
/// template captured (`{park}`, ...), `{device}` the device's id, `{event}` the state and
/// `{ts}` the gateway's time in Unix seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAckConfig {
    /// The payload mapping's `text` quantity that carries the device's event, e.g. `event`.
    pub quantity: String,
    /// The states of `quantity` whose messages are acknowledged, e.g. `["alarm", "fault"]`.
    pub states: Vec<String>,
    /// Topic of the acknowledgement, e.g. `park/{park}/smoke/{device}/down`.
    pub topic: String,
    /// The acknowledgement's payload text, e.g.
    /// `'{"cmd":"ack","dev":"{device}","event":"{event}","ts":{ts}}'`.
    pub payload: String,
}

impl Profile {
    pub fn measurement(&self) -> &str {
        self.measurement.as_deref().unwrap_or(&self.kind)
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
                }
                profiles.insert(id, profile);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    profiles
}
