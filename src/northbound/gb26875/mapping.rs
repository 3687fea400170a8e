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

use serde::{Deserialize, Serialize};

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
    /// An operator's answer to the centre's duty check: after fires (the standard puts fires
    /// ahead of duty-check answers), before states.
    Answer = 1,
    /// Faults, supervisory and disabled states, the device's own state.
    Status = 2,
    Analog = 3,
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
/// word. Kept with the queue (in the journal's transaction), so that a transaction that is
/// rolled back forgets it too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    pub parts: BTreeMap<String, u16>,
    pub sent: Option<u16>,
}

impl DeviceState {
    pub fn word(&self) -> u16 {
        self.parts.values().fold(state::RUNNING, |w, b| w | b)
    }

    /// The centre was told of a fire of this device, and not yet of its end.
    pub fn fire_sent(&self) -> bool {
        self.sent.is_some_and(|w| w & state::FIRE != 0)
    }
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
    /// Each device's enterprise.
    enterprise_of: HashMap<String, String>,
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
        let mut enterprise_of = HashMap::new();
        for (position, d) in config.site.devices.iter().enumerate() {
            let kind = directory
                .get(&d.id)
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            if let Some(tags) = directory.get(&d.id) {
                enterprise_of.insert(d.id.clone(), tags.enterprise.clone());
            }
            let address = link.component_address(position, d, &kind);
            let given = link.components.iter().find(|c| c.device == d.id);
            let name = d.name.as_deref().unwrap_or(&d.id);
            components.insert(
                d.id.clone(),
                Component {
                    system_type: address.system_type,
                    system_address: address.system_address,
                    component_type: address.component_type,
                    component_address: address.component_address,
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
            enterprise_of,
            web: config.site.web.clone(),
        }
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    pub fn operator_number(&self, name: &str) -> u8 {
        self.web.as_ref().map_or(0, |w| w.operator_number(name))
    }

    /// The component of a device this link reports, when it does (its enterprise is
    /// among the link's, and it is a configured device).
    pub fn component_of(&self, device: &str, enterprise: &str) -> Option<&Component> {
        if !self.enterprises.is_empty() && !self.enterprises.iter().any(|e| e == enterprise) {
            return None;
        }
        self.components.get(device)
    }

    /// What to send for `e`, in order: the device's state word when it changed (fires
    /// first), the operation record of a fire's verdict, reset or silence, and the value.
    /// `device` is what the centre was last given of the device, updated here.
    /// `other_fire_on_system`: another component of the same system has a fire standing at
    /// the centre. Operation records name only a system (type 4 has no component), so those
    /// that could end another component's fire at the centre are not sent: "alarm cleared"
    /// and "silence" only when the centre had this fire, "reset" only when no other fire of
    /// the system stands.
    pub fn messages(
        &self,
        e: &AlarmEvent,
        device: &mut DeviceState,
        other_fire_on_system: bool,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let Some(component) = self.component_of(&e.tags.device, &e.tags.enterprise) else {
            return out; // the gateway itself, flood states, outputs' notes, other enterprises
        };
        let at = time_tag(e.at_ms, self.utc_offset_minutes);
        let fire_was_sent = device.fire_sent();
        let bits = self.bits_of(e);
        if bits == 0 {
            device.parts.remove(&*e.key);
        } else {
            device.parts.insert(e.key.to_string(), bits);
        }
        out.extend(self.snapshot(&e.tags.device, component, device, at));
        if e.alarm.fire.is_some() {
            let operation = match e.action {
                Action::FireConfirmed => Some((operation::CONFIRM, "fire confirmed")),
                Action::FalseAlarm if fire_was_sent => {
                    Some((operation::ALARM_CLEARED, "false alarm"))
                }
                Action::Reset if fire_was_sent && !other_fire_on_system => {
                    Some((operation::RESET, "reset"))
                }
                Action::Silenced if fire_was_sent => Some((operation::SILENCE, "silenced")),
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
    /// once with `send_fires = "at_once"`; until then it is supervisory), never as a false
    /// alarm; other alarms are
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
            // A fire being judged is something going on (gas at level 2), not yet a fire.
            return match (fire, self.send_fires) {
                (FireVerdict::Confirmed { .. }, _) => state::FIRE,
                (FireVerdict::Pending { .. }, SendFires::AtOnce) => state::FIRE,
                (FireVerdict::Pending { .. }, SendFires::Confirmed) => state::SUPERVISORY,
                (FireVerdict::FalseAlarm { .. }, _) => 0,
            };
        }
        match a.level.map(|l| l.kind) {
            Some(AlarmKind::Fault) => state::FAULT,
            Some(AlarmKind::Alarm | AlarmKind::Supervisory) => state::SUPERVISORY,
            _ => 0,
        }
    }

    /// The device's word, when it differs from what the centre was last given (which it
    /// then becomes): sent as a fire when a fire appears or goes with it.
    pub fn snapshot(
        &self,
        device_id: &str,
        component: &Component,
        device: &mut DeviceState,
        at: super::frame::TimeTag,
    ) -> Option<Outgoing> {
        let word = device.word();
        let before = device.sent.replace(word).unwrap_or(state::RUNNING);
        (before != word).then(|| Outgoing {
            priority: if (before | word) & state::FIRE != 0 {
                Priority::Fire
            } else {
                Priority::Status
            },
            unit: unit::component_state(component, word, at),
            what: format!("state {device_id} ({})", state_words(word)),
            supersedes: Some(format!("state/{device_id}")),
        })
    }

    /// Each device's parts of its word from the alarms standing now, by device.
    pub fn parts_of(&self, standing: &[AlarmEvent]) -> BTreeMap<String, BTreeMap<String, u16>> {
        let mut out: BTreeMap<String, BTreeMap<String, u16>> = BTreeMap::new();
        for e in standing {
            if self
                .component_of(&e.tags.device, &e.tags.enterprise)
                .is_none()
            {
                continue;
            }
            let bits = self.bits_of(e);
            if bits != 0 {
                out.entry(e.tags.device.clone())
                    .or_default()
                    .insert(e.key.to_string(), bits);
            }
        }
        out
    }

    /// Every device this link reports and its component, ordered by address: what the
    /// centre needs at registration (`parkguard check --components`).
    pub fn components(&self) -> Vec<(&str, &Component)> {
        let mut out: Vec<(&str, &Component)> = self
            .components
            .iter()
            .filter(|(device, _)| {
                self.enterprise_of
                    .get(*device)
                    .is_some_and(|e| self.enterprises.is_empty() || self.enterprises.contains(e))
            })
            .map(|(device, c)| (device.as_str(), c))
            .collect();
        out.sort_by_key(|(_, c)| (c.system_type, c.system_address, c.component_address));
        out
    }

    pub fn enterprise_of(&self, device: &str) -> Option<String> {
        self.enterprise_of.get(device).cloned()
    }

    /// Whether two devices' components are of the same system (type and address).
    pub fn same_system(&self, a: &str, b: &str) -> bool {
        match (self.components.get(a), self.components.get(b)) {
            (Some(x), Some(y)) => {
                (x.system_type, x.system_address) == (y.system_type, y.system_address)
            }
            _ => false,
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
