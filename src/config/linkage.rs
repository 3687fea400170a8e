//! `[[outputs]]` (what parkguard can switch: gas shut-off valves, exhaust fans, sounders and
//! strobes, breaker trips) and `[[linkage]]` (which alarms switch them and what releases
//! them), with their checks; and a profile's `[reset]` (how a latched detector is reset).
//!
//! The safety rules are checked here, not left to the operator's care: a gas valve or a power
//! trip is never released automatically, and a power trip needs `allow_power_trip = true`
//! (`parkguard check` then warns, quoting the code's reason).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::site::unique_ids;
use super::{AlarmKind, ModbusConfig, MqttConfig, RuleConfig, Severity};
use crate::decode::registers::Area;

/// What an output is. It decides what may release it and how its two states are named.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// An emergency gas shut-off valve (紧急切断阀). Operated = closed. Released only by a
    /// person: a closed valve is reopened after someone has found and fixed the leak.
    GasValve,
    /// An exhaust fan (排风机). Operated = running.
    Fan,
    /// A sounder (声光报警器 / 警铃). Operated = sounding.
    Sounder,
    /// A strobe or warning light. Operated = flashing.
    Strobe,
    /// A shunt trip or contactor that cuts a circuit's power. Operated = tripped. Needs
    /// `allow_power_trip = true` on the linkage, and is released only by a person.
    PowerTrip,
    /// Anything else switched by a coil or register.
    Other,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::GasValve => "gas_valve",
            OutputKind::Fan => "fan",
            OutputKind::Sounder => "sounder",
            OutputKind::Strobe => "strobe",
            OutputKind::PowerTrip => "power_trip",
            OutputKind::Other => "other",
        }
    }

    /// Whether a person must release it (it never releases when the alarm clears).
    pub fn manual_release_only(self) -> bool {
        matches!(self, OutputKind::GasValve | OutputKind::PowerTrip)
    }

    /// The words for its two states: (operated, released).
    pub fn state_words(self) -> (&'static str, &'static str) {
        match self {
            OutputKind::GasValve => ("closed", "open"),
            OutputKind::Fan => ("running", "stopped"),
            OutputKind::Sounder => ("sounding", "silent"),
            OutputKind::Strobe => ("flashing", "off"),
            OutputKind::PowerTrip => ("tripped", "closed"),
            OutputKind::Other => ("on", "off"),
        }
    }
}

/// `[[outputs]]`: something parkguard switches, on a link it already has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Identifier, used by `[[linkage]]`, the web UI, the API and the journal, e.g.
    /// `b2-gas-valve`.
    pub id: String,
    /// `gas_valve`, `fan`, `sounder`, `strobe`, `power_trip` or `other`.
    pub kind: OutputKind,
    /// The `id` of the location it acts at: linkage scopes (`same location`, `same
    /// enterprise`) are judged by it.
    pub location: String,
    /// Display name, e.g. `B2厨房燃气紧急切断阀`. Absent: the `id` is shown.
    #[serde(default)]
    pub name: Option<String>,
    /// Switched by a Modbus write: `{ connection = "bus-1", unit_id = 9, area = "coil",
    /// address = 0 }`.
    #[serde(default)]
    pub modbus: Option<ModbusOutputConfig>,
    /// Switched by an MQTT publish (QoS 1) on a connection of `[[mqtt]]`. It cannot be read
    /// back: parkguard knows the message left, not that the device acted.
    #[serde(default)]
    pub mqtt: Option<MqttOutputConfig>,
    /// Milliseconds to wait for the read-back to show the new state after each write.
    #[serde(default = "default_confirm_ms")]
    pub confirm_ms: u64,
    /// Writes tried before the action counts as failed and the linkage fault (G11, critical)
    /// is raised. parkguard keeps trying after that, every 30 s at most, until the output
    /// confirms.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_confirm_ms() -> u64 {
    1000
}

fn default_attempts() -> u32 {
    3
}

impl OutputConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// `[outputs.modbus]`: a coil (function 05) or holding register (function 06) write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusOutputConfig {
    /// The `name` of a `[[modbus]]` connection; requests share its bus with the polling.
    pub connection: String,
    /// The unit (slave) id of the relay module or valve controller.
    pub unit_id: u8,
    /// `coil` or `holding`.
    pub area: Area,
    /// Protocol address (0-based, as sent on the wire).
    pub address: u16,
    /// Value written to operate (close the valve, start the fan); 1 for a coil.
    #[serde(default = "one")]
    pub on: u16,
    /// Value written to release; 0 for a coil.
    #[serde(default)]
    pub off: u16,
    /// Where the device shows what it did, e.g. a valve's limit switch on a discrete input:
    /// `{ area = "discrete_input", address = 0, on = 1, off = 0 }`. Absent: the written
    /// coil or register is read back.
    #[serde(default)]
    pub readback: Option<ReadbackConfig>,
}

fn one() -> u16 {
    1
}

/// Where an output's actual state is read.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadbackConfig {
    /// `coil`, `discrete_input`, `holding` or `input`.
    pub area: Area,
    /// Protocol address (0-based).
    pub address: u16,
    /// The value that means operated (valve closed).
    #[serde(default = "one")]
    pub on: u16,
    /// The value that means released (valve open).
    #[serde(default)]
    pub off: u16,
}

impl ModbusOutputConfig {
    /// Where the state is read back: the configured place, or the written one.
    pub fn readback(&self) -> ReadbackConfig {
        self.readback.unwrap_or(ReadbackConfig {
            area: self.area,
            address: self.address,
            on: self.on,
            off: self.off,
        })
    }
}

/// `[outputs.mqtt]`: a QoS 1 publish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOutputConfig {
    /// The `name` of an `[[mqtt]]` connection.
    pub connection: String,
    /// Topic published to (no wildcards), e.g. `park/b2/valve/set`.
    pub topic: String,
    /// Payload that operates the output, e.g. `{"cmd":"close"}`.
    pub on: String,
    /// Payload that releases it.
    pub off: String,
}

/// Which outputs an alarm may act on, judged from the alarming device's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkageScope {
    /// Outputs at the alarming device's location.
    #[default]
    Location,
    /// Outputs at any location of the alarming device's enterprise.
    Enterprise,
    /// Outputs anywhere in the alarming device's park.
    Park,
}

/// What releases an interlock's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// A technician, on the web UI or the API, with a reason (journaled).
    #[default]
    Manual,
    /// Once every alarm that operated the output has cleared (its condition is gone). Not
    /// allowed for gas valves and power trips.
    Clear,
}

/// `[[linkage]]`: alarms that operate outputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageConfig {
    /// Name, shown in the journal: `gas leak shuts the valve`.
    pub name: String,
    /// Rule ids whose alarms act, e.g. `["R11"]`. Empty: any rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Device kinds whose alarms act, e.g. `["gas"]`. Empty: any.
    #[serde(default)]
    pub device_kinds: Vec<String>,
    /// Alarm kinds that act. Default `["alarm"]`: faults and pre-alarms do not switch
    /// anything unless named.
    #[serde(default = "default_alarm_kinds")]
    pub alarm_kinds: Vec<AlarmKind>,
    /// Least severity: an alarm acts when it is raised at this severity or above, or
    /// escalates to it.
    pub severity: Severity,
    /// Outputs by `id`, operated when they are in `scope`.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Every output of these kinds in `scope`, e.g. `["sounder"]`.
    #[serde(default)]
    pub output_kinds: Vec<OutputKind>,
    /// `location` (default), `enterprise` or `park`: outputs acted on must be there,
    /// judged from the alarming device.
    #[serde(default)]
    pub scope: LinkageScope,
    /// `manual` (default) or `clear`.
    #[serde(default)]
    pub release: Release,
    /// Must be `true` for a linkage that operates a `power_trip` output. Electrical fire
    /// monitoring should alarm, not cut power (GB 50116 §9.1.6): a trip can stop fire pumps,
    /// lifts, lights and ventilation that people need.
    #[serde(default)]
    pub allow_power_trip: bool,
}

fn default_alarm_kinds() -> Vec<AlarmKind> {
    vec![AlarmKind::Alarm]
}

/// `[reset]` of a profile: how the device's latched alarms are reset from the host
/// (GB 14287 detectors hold an alarm until reset). An operator's Reset of such an alarm
/// writes it, and completes once the device has dropped its alarm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceResetConfig {
    /// `holding` (function 06) or `coil` (function 05).
    #[serde(default = "holding")]
    pub area: Area,
    /// Protocol address (0-based) of the reset register or coil.
    pub address: u16,
    /// Value written (1 for a coil).
    #[serde(default = "one")]
    pub value: u16,
    /// Seconds to wait for the device to drop its alarm after the write; then the reset is
    /// reported as failed and the alarm stays.
    #[serde(default = "default_reset_wait_s")]
    pub wait_s: u64,
}

fn holding() -> Area {
    Area::Holding
}

fn default_reset_wait_s() -> u64 {
    10
}

pub(super) fn validate_outputs(
    outputs: &[OutputConfig],
    modbus: &[ModbusConfig],
    mqtt: &[MqttConfig],
    locations: &BTreeSet<&str>,
    report: &mut dyn FnMut(String, String),
) {
    unique_ids(outputs.iter().map(|o| &o.id), "outputs", report);
    for (i, o) in outputs.iter().enumerate() {
        let at = |key: &str| format!("outputs[{i}].{key}");
        if !locations.contains(o.location.as_str()) {
            report(at("location"), format!("no location `{}`", o.location));
        }
        match (&o.modbus, &o.mqtt) {
            (None, None) => report(
                format!("outputs[{i}]"),
                "give `modbus = { ... }` or `mqtt = { ... }`: how the output is switched".into(),
            ),
            (Some(_), Some(_)) => report(
                format!("outputs[{i}]"),
                "give one of `modbus` and `mqtt`, not both".into(),
            ),
            _ => {}
        }
        if let Some(m) = &o.modbus {
            if !modbus.iter().any(|c| c.name == m.connection) {
                report(
                    at("modbus.connection"),
                    format!("no [[modbus]] connection `{}`", m.connection),
                );
            }
            match m.area {
                Area::Coil => {
                    if m.on > 1 || m.off > 1 || m.on == m.off {
                        report(
                            at("modbus.on"),
                            "a coil is written 1 or 0: `on` and `off` must be 1 and 0 (or 0 and 1)"
                                .into(),
                        );
                    }
                }
                Area::Holding => {
                    if m.on == m.off {
                        report(at("modbus.on"), "`on` and `off` must differ".into());
                    }
                }
                Area::Input | Area::DiscreteInput => report(
                    at("modbus.area"),
                    "only a `coil` or a `holding` register can be written".into(),
                ),
            }
            if let Some(r) = &m.readback {
                if r.on == r.off {
                    report(
                        at("modbus.readback.on"),
                        "`on` and `off` must differ, or the read-back cannot tell the states apart"
                            .into(),
                    );
                }
                if r.area.is_bit() && (r.on > 1 || r.off > 1) {
                    report(
                        at("modbus.readback.on"),
                        "a bit reads 1 or 0: `on` and `off` must be 1 and 0 (or 0 and 1)".into(),
                    );
                }
            }
        }
        if let Some(m) = &o.mqtt {
            if !mqtt.iter().any(|c| c.name == m.connection) {
                report(
                    at("mqtt.connection"),
                    format!("no [[mqtt]] connection `{}`", m.connection),
                );
            }
            if m.topic.is_empty() || m.topic.contains(['+', '#']) {
                report(at("mqtt.topic"), "give a topic without wildcards".into());
            }
        }
        if !(100..=60_000).contains(&o.confirm_ms) {
            report(at("confirm_ms"), "must be 100 to 60000".into());
        }
        if !(1..=20).contains(&o.attempts) {
            report(at("attempts"), "must be 1 to 20".into());
        }
    }
}

pub(super) fn validate_linkage(
    linkage: &[LinkageConfig],
    outputs: &[OutputConfig],
    rules: &[RuleConfig],
    report: &mut dyn FnMut(String, String),
) {
    for (i, l) in linkage.iter().enumerate() {
        let at = |key: &str| format!("linkage[{i}].{key}");
        if l.outputs.is_empty() && l.output_kinds.is_empty() {
            report(
                format!("linkage[{i}]"),
                "name the outputs it operates: `outputs = [...]` or `output_kinds = [...]`".into(),
            );
        }
        for (j, rule) in l.rules.iter().enumerate() {
            if !rules.iter().any(|r| &r.id == rule) {
                report(
                    format!("linkage[{i}].rules[{j}]"),
                    format!("no rule `{rule}`"),
                );
            }
        }
        if l.alarm_kinds.is_empty() {
            report(at("alarm_kinds"), "name at least one alarm kind".into());
        }
        let mut kinds: BTreeSet<OutputKind> = l.output_kinds.iter().copied().collect();
        for (j, name) in l.outputs.iter().enumerate() {
            match outputs.iter().find(|o| &o.id == name) {
                Some(o) => {
                    kinds.insert(o.kind);
                }
                None => {
                    let known: Vec<&str> = outputs.iter().map(|o| o.id.as_str()).collect();
                    report(
                        format!("linkage[{i}].outputs[{j}]"),
                        format!(
                            "no output `{name}` (known: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
        }
        if l.release == Release::Clear {
            if let Some(kind) = kinds.iter().find(|k| k.manual_release_only()) {
                report(
                    at("release"),
                    format!(
                        "a {} is never released automatically: someone must find the cause first; use `release = \"manual\"`",
                        kind.as_str().replace('_', " ")
                    ),
                );
            }
        }
        if kinds.contains(&OutputKind::PowerTrip) && !l.allow_power_trip {
            report(
                at("allow_power_trip"),
                "this linkage trips power: set `allow_power_trip = true` if the site's fire design asks for it (GB 50116 §9.1.6: electrical fire monitoring should not cut power automatically)"
                    .into(),
            );
        }
    }
}

/// What is valid but deserves a second look.
pub(super) fn linkage_warnings(linkage: &[LinkageConfig], outputs: &[OutputConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for l in linkage {
        let trips = l.output_kinds.contains(&OutputKind::PowerTrip)
            || l.outputs.iter().any(|name| {
                outputs
                    .iter()
                    .any(|o| &o.id == name && o.kind == OutputKind::PowerTrip)
            });
        if trips && l.allow_power_trip {
            out.push(format!(
                "linkage `{}` cuts power automatically. GB 50116 §9.1.6: electrical fire monitoring should alarm, not trip; a trip can stop fire pumps, lifts, emergency lights and ventilation. Keep it only where the fire design requires it",
                l.name
            ));
        }
    }
    for o in outputs {
        if o.mqtt.is_some() {
            out.push(format!(
                "output `{}` is switched over MQTT and cannot be read back: parkguard reports it sent, never confirmed",
                o.id
            ));
        }
    }
    out
}
