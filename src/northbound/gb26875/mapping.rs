//! What the centre is told of an alarm transition, pure: component states, analog values and
//! operation records, each with its priority (fires ahead of states, states ahead of analog
//! values), addressed as `[[northbound.components]]` says or by the defaults.
//!
//! A component's state word is its device's: every standing alarm of the device adds its
//! bit, and the word is sent when it changes. A fire level's alarm is a fire (火警), once
//! confirmed (or when raised, with `send_fires = "at_once"`); its verdict, reset and silence
//! follow as operation records. Other alarms are supervisory (监管), faults are faults (故障),
//! an alarm out of service disables the component (屏蔽). Pre-alarms, tests and events add
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

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
    /// A device's state word or value replaces an older one of the same key that has not
    /// been sent yet (and is not a fire's): the centre needs the present state, and a centre
    /// away for a day does not get a day of a chattering device's states.
    pub supersedes: Option<String>,
}

/// What the centre was last given of a device: each alarm's part of its state word, and the
/// word.
#[derive(Default)]
struct DeviceState {
    parts: BTreeMap<String, u16>,
    sent: Option<u16>,
}

fn state_words(word: u16) -> String {
    let names = [
        (state::FIRE, "fire"),
        (state::FAULT, "fault"),
        (state::DISABLED, "disabled"),
        (state::SUPERVISORY, "supervisory"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| word & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "normal".into()
    } else {
        set.join("+")
    }
}

/// The component addresses and settings of one link.
pub struct Mapper {
    send_fires: SendFires,
    utc_offset_minutes: i32,
    enterprises: Vec<String>,
    components: HashMap<String, Component>,
    web: Option<crate::config::WebConfig>,
    /// The state of each device as the centre was last told, by device.
    states: Mutex<HashMap<String, DeviceState>>,
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
            states: Mutex::new(HashMap::new()),
        }
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    pub fn operator_number(&self, name: &str) -> u8 {
        self.web.as_ref().map_or(0, |w| w.operator_number(name))
    }

    /// What to send for `e`, in order: the device's state word when it changed (fires
    /// first), the operation record of a fire's verdict, reset or silence, and the value.
    pub fn messages(&self, e: &AlarmEvent) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let Some(component) = self.components.get(&e.tags.device) else {
            return out; // the gateway itself, flood states, outputs' notes
        };
        if !self.enterprises.is_empty() && !self.enterprises.contains(&e.tags.enterprise) {
            return out;
        }
        let at = time_tag(e.at_ms, self.utc_offset_minutes);
        if let Some((word, fire)) = self.update_state(e) {
            out.push(Outgoing {
                priority: if fire {
                    Priority::Fire
                } else {
                    Priority::Status
                },
                unit: unit::component_state(component, word, at),
                what: format!("state {} ({})", e.tags.device, state_words(word)),
                supersedes: Some(format!("state/{}", e.tags.device)),
            });
        }
        if e.alarm.fire.is_some() {
            let operation = match e.action {
                Action::FireConfirmed => Some((operation::CONFIRM, "fire confirmed")),
                Action::FalseAlarm => Some((operation::ALARM_CLEARED, "false alarm")),
                Action::Reset => Some((operation::RESET, "reset")),
                Action::Silenced => Some((operation::SILENCE, "silenced")),
                _ => None,
            };
            if let Some((bits, what)) = operation {
                let operator = e
                    .operator
                    .as_ref()
                    .map_or(0, |o| self.operator_number(&o.name));
                out.push(Outgoing {
                    priority: Priority::Fire,
                    unit: unit::operation_record(component, bits, operator, at),
                    what: format!("{what} {}", e.key),
                    supersedes: None,
                });
            }
        }
        let raised = matches!(
            e.action,
            Action::Raised | Action::Escalated | Action::Reannunciated
        );
        if raised || e.action == Action::Cleared {
            if let Some((analog_type, value)) = self.analog(e) {
                out.push(Outgoing {
                    priority: Priority::Analog,
                    unit: unit::analog_value(component, analog_type, value, at),
                    what: format!("value {}", e.key),
                    supersedes: Some(format!("value/{}/{analog_type}", e.tags.device)),
                });
            }
        }
        out
    }

    /// What one alarm adds to its device's state word. A fire counts once confirmed (or at
    /// once with `send_fires = "at_once"`), never as a false alarm; other alarms are
    /// supervisory and faults are faults while active and annunciated; an alarm out of
    /// service disables the component. Pre-alarms, tests and events add nothing.
    fn bits_of(&self, e: &AlarmEvent) -> u16 {
        let a = &e.alarm;
        if a.out_of_service {
            return state::DISABLED;
        }
        if !a.active || !a.annunciated() || e.action == Action::Retired {
            return 0;
        }
        if let Some(fire) = &a.fire {
            return match (fire, self.send_fires) {
                (FireVerdict::Confirmed { .. }, _) => state::FIRE,
                (FireVerdict::Pending { .. }, SendFires::AtOnce) => state::FIRE,
                _ => 0,
            };
        }
        match a.level.map(|l| l.kind) {
            Some(AlarmKind::Fault) => state::FAULT,
            Some(AlarmKind::Alarm | AlarmKind::Supervisory) => state::SUPERVISORY,
            _ => 0,
        }
    }

    /// Records the alarm's part of its device's state; the device's new word, and whether a
    /// fire appears or goes with it, when the word changed.
    fn update_state(&self, e: &AlarmEvent) -> Option<(u16, bool)> {
        let bits = self.bits_of(e);
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let device = states.entry(e.tags.device.clone()).or_default();
        if bits == 0 {
            device.parts.remove(&*e.key);
        } else {
            device.parts.insert(e.key.to_string(), bits);
        }
        let word = device.parts.values().fold(state::RUNNING, |w, b| w | b);
        let before = device.sent.replace(word).unwrap_or(state::RUNNING);
        (before != word).then_some((word, (before | word) & state::FIRE != 0))
    }

    /// The alarms standing at start: their part of their devices' words, as the centre was
    /// last told (or will be, from the queue). Nothing is sent.
    pub fn seed(&self, standing: &[AlarmEvent]) {
        for e in standing {
            if self.components.contains_key(&e.tags.device) {
                self.update_state(e);
            }
        }
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
