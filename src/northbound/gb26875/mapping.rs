//! What the centre is told of an alarm transition, pure: component states, analog values and
//! operation records, each with its priority (fires ahead of states, states ahead of analog
//! values), addressed as `[[northbound.components]]` says or by the defaults.
//!
//! A fire level's alarm is a fire (火警) for the centre, sent once confirmed (or when it is
//! raised, with `send_fires = "at_once"`); its verdict and reset follow as operation records.
//! Other alarms are supervisory states (监管), faults are faults (故障), an alarm out of service
//! is disabled (屏蔽). Pre-alarms, tests and events are not sent.

use std::collections::HashMap;

use super::frame::time_tag;
use super::unit::{self, analog, operation, state, Component};
use crate::config::northbound::{gb18030, NorthboundConfig, SendFires};
use crate::config::{AlarmKind, Config};
use crate::model::alarm::{Action, AlarmEvent, FireVerdict, Observed};

/// Send order: lower first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A fire and what follows it (verdict, reset): first, always.
    Fire = 0,
    /// Faults, supervisory and disabled states, the device's own state, duty-check answers.
    Status = 1,
    Analog = 2,
}

/// One application data unit to send, with what it is for the logs and the web UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub priority: Priority,
    pub unit: Vec<u8>,
    pub what: String,
}

/// The component addresses and settings of one link.
pub struct Mapper {
    send_fires: SendFires,
    utc_offset_minutes: i32,
    enterprises: Vec<String>,
    components: HashMap<String, Component>,
    web: Option<crate::config::WebConfig>,
}

/// `text` in GB18030, cut at a character boundary to at most 31 bytes.
fn description(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in text.chars() {
        let bytes = gb18030(c.encode_utf8(&mut [0u8; 4]));
        if out.len() + bytes.len() > 31 {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    out
}

impl Mapper {
    pub fn new(config: &Config, link: &NorthboundConfig) -> Mapper {
        let directory = crate::config::devices::DeviceDirectory::from_config(config);
        let mut components = HashMap::new();
        for (position, d) in config.site.devices.iter().enumerate() {
            let kind = directory
                .get(&d.id)
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            let (system_type, component_type) = match kind.as_str() {
                "smoke" => (1, 42),
                "gas" => (1, 11),
                _ => (0, 17),
            };
            let given = link.components.iter().find(|c| c.device == d.id);
            let name = d.name.as_deref().unwrap_or(&d.id);
            components.insert(
                d.id.clone(),
                Component {
                    system_type: given.and_then(|g| g.system_type).unwrap_or(system_type),
                    system_address: given.and_then(|g| g.system_address).unwrap_or(1),
                    component_type: given
                        .and_then(|g| g.component_type)
                        .unwrap_or(component_type),
                    component_address: given
                        .and_then(|g| g.component_address)
                        .unwrap_or(position as u32 + 1),
                    description: description(
                        given.and_then(|g| g.description.as_deref()).unwrap_or(name),
                    ),
                },
            );
        }
        Mapper {
            send_fires: link.send_fires,
            utc_offset_minutes: link.utc_offset_minutes,
            enterprises: link.enterprises.clone(),
            components,
            web: config.site.web.clone(),
        }
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    pub fn operator_number(&self, name: &str) -> u8 {
        self.web.as_ref().map_or(0, |w| w.operator_number(name))
    }

    /// What to send for `e`, in order.
    pub fn messages(&self, e: &AlarmEvent) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let Some(component) = self.components.get(&e.tags.device) else {
            return out; // the gateway itself, flood states, outputs' notes
        };
        if !self.enterprises.is_empty() && !self.enterprises.contains(&e.tags.enterprise) {
            return out;
        }
        if matches!(
            e.kind,
            AlarmKind::Event | AlarmKind::Test | AlarmKind::PreAlarm
        ) {
            return out;
        }
        let at = time_tag(e.at_ms, self.utc_offset_minutes);
        let operator = e
            .operator
            .as_ref()
            .map_or(0, |o| self.operator_number(&o.name));
        let state_of = |bits: u16, priority: Priority, what: &str, out: &mut Vec<Outgoing>| {
            out.push(Outgoing {
                priority,
                unit: unit::component_state(component, bits | state::RUNNING, at),
                what: format!("{what} {}", e.key),
            });
        };
        let record = |bits: u8, what: &str, out: &mut Vec<Outgoing>| {
            out.push(Outgoing {
                priority: Priority::Fire,
                unit: unit::operation_record(component, bits, operator, at),
                what: format!("{what} {}", e.key),
            });
        };
        let raised = matches!(
            e.action,
            Action::Raised | Action::Escalated | Action::Reannunciated
        );
        if let Some(fire) = &e.alarm.fire {
            match (e.action, fire, self.send_fires) {
                (_, FireVerdict::Confirmed { .. }, SendFires::Confirmed) if raised => {
                    state_of(state::FIRE, Priority::Fire, "fire", &mut out);
                }
                (_, _, SendFires::AtOnce) if raised => {
                    state_of(state::FIRE, Priority::Fire, "fire", &mut out);
                }
                (Action::FireConfirmed, _, mode) => {
                    if mode == SendFires::Confirmed {
                        state_of(state::FIRE, Priority::Fire, "fire", &mut out);
                    }
                    record(operation::CONFIRM, "fire confirmed", &mut out);
                }
                (Action::FalseAlarm, _, _) => {
                    record(operation::ALARM_CLEARED, "false alarm", &mut out);
                    state_of(0, Priority::Fire, "no fire", &mut out);
                }
                (Action::Reset, _, _) => {
                    record(operation::RESET, "reset", &mut out);
                    state_of(0, Priority::Fire, "no fire", &mut out);
                }
                (Action::Cleared, _, _) => state_of(0, Priority::Fire, "no fire", &mut out),
                (Action::Silenced, _, _) => record(operation::SILENCE, "silenced", &mut out),
                _ => {}
            }
        } else {
            let bits = match e.kind {
                AlarmKind::Fault => state::FAULT,
                _ => state::SUPERVISORY,
            };
            match e.action {
                _ if raised => state_of(bits, Priority::Status, "state", &mut out),
                Action::RemovedFromService => {
                    state_of(state::DISABLED, Priority::Status, "disabled", &mut out)
                }
                Action::Cleared | Action::Reset | Action::ReturnedToService => {
                    state_of(0, Priority::Status, "normal", &mut out)
                }
                _ => {}
            }
        }
        if raised || e.action == Action::Cleared {
            if let Some(value) = self.analog(e) {
                out.push(Outgoing {
                    priority: Priority::Analog,
                    unit: unit::analog_value(component, value.0, value.1, at),
                    what: format!("value {}", e.key),
                });
            }
        }
        out
    }

    /// The event's value as an analog type and a count of its unit step, when the standard
    /// has a type for its unit.
    fn analog(&self, e: &AlarmEvent) -> Option<(u8, i16)> {
        let Some(Observed::Number(v)) = e.value else {
            return None;
        };
        let kind = match e.unit.as_deref()? {
            "%LEL" | "%lel" => analog::GAS_CONCENTRATION,
            "°C" | "℃" | "C" => analog::TEMPERATURE,
            "V" => analog::VOLTAGE,
            "A" => analog::CURRENT,
            _ => return None,
        };
        let steps = (v * 10.0).round();
        (steps.is_finite() && steps.abs() <= f64::from(i16::MAX)).then_some((kind, steps as i16))
    }
}
