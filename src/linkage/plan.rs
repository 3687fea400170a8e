//! Which outputs an alarm transition operates or releases: the interlocks of `[[linkage]]`
//! resolved against the site, and who holds each output. Pure: no IO, no clock.
//!
//! An output is held by the alarms that operated it (and by technicians who operated it by
//! hand). It is released automatically only when every holder has let go and each of them
//! allows it (`release = "clear"`, never for gas valves and power trips); otherwise a person
//! releases it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::linkage::{LinkageScope, Release};
use crate::config::{Config, LinkageConfig, OutputKind};
use crate::model::alarm::{Action, AlarmEvent, AlarmKind};

/// An output's place in the site, for scopes.
#[derive(Debug, Clone)]
pub struct Place {
    pub park: String,
    pub enterprise: String,
    pub location: String,
}

/// The interlocks of a site, resolved.
pub struct Interlocks {
    pub(super) outputs: Vec<(String, OutputKind, Place)>,
    links: Vec<LinkageConfig>,
}

/// What an alarm transition asks of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Operate the output (close the valve) on behalf of alarm `key`, by linkage `link`.
    Operate {
        output: usize,
        key: String,
        link: String,
    },
    /// Release it: its last holder let go (`key`).
    Release { output: usize, key: String },
}

/// Why an output is held: by which interlock, and whether it may release by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub link: String,
    pub release: Release,
}

/// Holders of one output, by alarm key (or `manual:<name>` for a technician).
pub type Holders = BTreeMap<String, Hold>;

impl Interlocks {
    pub fn from_config(config: &Config) -> Self {
        let site = &config.site;
        let place_of = |location: &str| {
            let enterprise = site
                .locations
                .iter()
                .find(|l| l.id == location)
                .map(|l| l.enterprise.clone())
                .unwrap_or_default();
            let park = site
                .enterprises
                .iter()
                .find(|e| e.id == enterprise)
                .map(|e| e.park.clone())
                .unwrap_or_default();
            Place {
                park,
                enterprise,
                location: location.to_string(),
            }
        };
        Interlocks {
            outputs: site
                .outputs
                .iter()
                .map(|o| (o.id.clone(), o.kind, place_of(&o.location)))
                .collect(),
            links: site.linkage.clone(),
        }
    }

    pub fn output_index(&self, id: &str) -> Option<usize> {
        self.outputs.iter().position(|(name, _, _)| name == id)
    }

    /// What one journaled transition asks of the outputs. `holders` (one per output) is
    /// updated: a new holder on operate, one fewer on a clear.
    pub fn on_event(&self, e: &AlarmEvent, holders: &mut [Holders]) -> Vec<Intent> {
        let mut out = Vec::new();
        let key = e.key.to_string();
        let acting = matches!(
            e.action,
            Action::Raised | Action::Escalated | Action::Reannunciated
        ) && e.alarm.condition
            && e.alarm.annunciated();
        if acting {
            for link in &self.links {
                if !self.selects(link, e) {
                    continue;
                }
                for output in self.targets(link, e) {
                    let held = &mut holders[output];
                    if held.contains_key(&key) {
                        continue;
                    }
                    held.insert(
                        key.clone(),
                        Hold {
                            link: link.name.clone(),
                            release: self.release_of(link, output),
                        },
                    );
                    out.push(Intent::Operate {
                        output,
                        key: key.clone(),
                        link: link.name.clone(),
                    });
                }
            }
        }
        let let_go = !e.alarm.condition
            && matches!(
                e.action,
                Action::ConditionCleared | Action::Cleared | Action::Reset | Action::Retired
            );
        if let_go {
            for (output, held) in holders.iter_mut().enumerate() {
                let Some(hold) = held.get(&key) else {
                    continue;
                };
                if hold.release != Release::Clear {
                    continue;
                }
                held.remove(&key);
                if held.is_empty() {
                    out.push(Intent::Release {
                        output,
                        key: key.clone(),
                    });
                }
            }
        }
        out
    }

    /// Gas valves and power trips are released by people whatever the linkage says (the
    /// configuration check refuses `clear` for them; this holds if that check is bypassed).
    fn release_of(&self, link: &LinkageConfig, output: usize) -> Release {
        if self.outputs[output].1.manual_release_only() {
            Release::Manual
        } else {
            link.release
        }
    }

    fn selects(&self, link: &LinkageConfig, e: &AlarmEvent) -> bool {
        e.severity >= link.severity
            && link.alarm_kinds.contains(&e.kind)
            && e.kind != AlarmKind::Event
            && (link.rules.is_empty() || link.rules.iter().any(|r| **r == *e.rule))
            && (link.device_kinds.is_empty() || link.device_kinds.contains(&e.tags.kind))
    }

    fn targets(&self, link: &LinkageConfig, e: &AlarmEvent) -> Vec<usize> {
        let in_scope = |place: &Place| match link.scope {
            LinkageScope::Location => place.location == e.tags.location,
            LinkageScope::Enterprise => place.enterprise == e.tags.enterprise,
            LinkageScope::Park => place.park == e.tags.park,
        };
        self.outputs
            .iter()
            .enumerate()
            .filter(|(_, (id, kind, place))| {
                (link.outputs.contains(id) || link.output_kinds.contains(kind))
                    && (kind != &OutputKind::PowerTrip || link.allow_power_trip)
                    && in_scope(place)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Severity;
    use crate::model::alarm::{Alarm, AlarmState, Level};
    use crate::model::Tags;

    fn site() -> Config {
        let dir = std::env::temp_dir().join(format!(
            "pg-linkage-plan-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/profiles");
        std::fs::write(
            dir.join("site.toml"),
            r#"
[gateway]
profiles_dir = "PROFILES_DIR"
rule_files = []
[[parks]]
id = "p"
[[enterprises]]
id = "e1"
park = "p"
[[enterprises]]
id = "e2"
park = "p"
[[locations]]
id = "kitchen"
enterprise = "e1"
[[locations]]
id = "store"
enterprise = "e1"
[[locations]]
id = "other"
enterprise = "e2"
[[modbus]]
name = "bus"
transport = "tcp"
address = "127.0.0.1:1502"
units = []
[[outputs]]
id = "valve"
kind = "gas_valve"
location = "kitchen"
modbus = { connection = "bus", unit_id = 9, area = "coil", address = 0 }
[[outputs]]
id = "fan"
kind = "fan"
location = "kitchen"
modbus = { connection = "bus", unit_id = 9, area = "coil", address = 1 }
[[outputs]]
id = "sounder-kitchen"
kind = "sounder"
location = "kitchen"
modbus = { connection = "bus", unit_id = 9, area = "coil", address = 2 }
[[outputs]]
id = "sounder-store"
kind = "sounder"
location = "store"
modbus = { connection = "bus", unit_id = 9, area = "coil", address = 3 }
[[outputs]]
id = "sounder-other"
kind = "sounder"
location = "other"
modbus = { connection = "bus", unit_id = 9, area = "coil", address = 4 }
[[linkage]]
name = "gas closes the valve and starts the fan"
device_kinds = ["gas"]
severity = "critical"
outputs = ["valve", "fan"]
release = "manual"
[[linkage]]
name = "fan runs from the first gas level"
device_kinds = ["gas"]
severity = "high"
outputs = ["fan"]
release = "clear"
[[linkage]]
name = "gas sounds the location's sounder"
device_kinds = ["gas"]
severity = "critical"
output_kinds = ["sounder"]
release = "clear"
"#
            .replace("PROFILES_DIR", profiles),
        )
        .ok();
        match Config::load(&dir.join("site.toml")) {
            Ok(c) => c,
            Err(problems) => panic!("{problems:?}"),
        }
    }

    fn event(action: Action, severity: Severity, condition: bool, location: &str) -> AlarmEvent {
        let alarm = Alarm {
            condition,
            active: condition,
            acknowledged: false,
            level: Some(Level {
                index: 0,
                severity,
                kind: AlarmKind::Alarm,
                latched: false,
            }),
            ..Alarm::default()
        };
        AlarmEvent {
            key: Arc::from("R11/gas-1"),
            rule: Arc::from("R11"),
            rule_name: Arc::from("gas"),
            tags: Arc::new(Tags {
                park: "p".into(),
                enterprise: "e1".into(),
                location: location.into(),
                device: "gas-1".into(),
                kind: "gas".into(),
                ..Tags::default()
            }),
            source: Arc::from(""),
            action,
            at_ms: 0,
            state: AlarmState::Unacknowledged,
            severity,
            kind: AlarmKind::Alarm,
            value: None,
            unit: None,
            threshold: None,
            message: String::new(),
            operator: None,
            annunciated: true,
            alarm,
            filters: vec![],
            late_began_ms: None,
        }
    }

    fn operated(intents: &[Intent], interlocks: &Interlocks) -> Vec<String> {
        let mut names: Vec<String> = intents
            .iter()
            .filter_map(|i| match i {
                Intent::Operate { output, .. } => Some(interlocks.outputs[*output].0.clone()),
                Intent::Release { .. } => None,
            })
            .collect();
        names.sort();
        names
    }

    fn released(intents: &[Intent], interlocks: &Interlocks) -> Vec<String> {
        intents
            .iter()
            .filter_map(|i| match i {
                Intent::Release { output, .. } => Some(interlocks.outputs[*output].0.clone()),
                Intent::Operate { .. } => None,
            })
            .collect()
    }

    #[test]
    fn gas_level_two_closes_the_valve_starts_the_fan_and_sounds_only_its_location() {
        let config = site();
        let interlocks = Interlocks::from_config(&config);
        let mut holders = vec![Holders::new(); interlocks.outputs.len()];
        let intents = interlocks.on_event(
            &event(Action::Raised, Severity::Critical, true, "kitchen"),
            &mut holders,
        );
        assert_eq!(
            operated(&intents, &interlocks),
            vec!["fan", "sounder-kitchen", "valve"],
            "the fan once, though two linkages name it"
        );
    }

    #[test]
    fn level_one_runs_the_fan_and_escalation_closes_the_valve() {
        let config = site();
        let interlocks = Interlocks::from_config(&config);
        let mut holders = vec![Holders::new(); interlocks.outputs.len()];
        let first = interlocks.on_event(
            &event(Action::Raised, Severity::High, true, "kitchen"),
            &mut holders,
        );
        assert_eq!(operated(&first, &interlocks), vec!["fan"]);
        let second = interlocks.on_event(
            &event(Action::Escalated, Severity::Critical, true, "kitchen"),
            &mut holders,
        );
        assert_eq!(
            operated(&second, &interlocks),
            vec!["sounder-kitchen", "valve"],
            "the fan is already held by this alarm"
        );
    }

    #[test]
    fn clearing_stops_fan_and_sounder_but_never_opens_the_valve() {
        let config = site();
        let interlocks = Interlocks::from_config(&config);
        let mut holders = vec![Holders::new(); interlocks.outputs.len()];
        interlocks.on_event(
            &event(Action::Raised, Severity::Critical, true, "kitchen"),
            &mut holders,
        );
        let cleared = interlocks.on_event(
            &event(
                Action::ConditionCleared,
                Severity::Critical,
                false,
                "kitchen",
            ),
            &mut holders,
        );
        let mut names = released(&cleared, &interlocks);
        names.sort();
        assert_eq!(
            names,
            vec!["sounder-kitchen"],
            "the sounder stops; the fan is also held by the manual-release linkage; the valve always is"
        );
        let valve = interlocks.output_index("valve").unwrap_or(usize::MAX);
        assert_eq!(holders[valve].len(), 1, "the valve stays held");
        let sounder = interlocks
            .output_index("sounder-kitchen")
            .unwrap_or(usize::MAX);
        assert!(holders[sounder].is_empty());
    }

    #[test]
    fn a_fan_held_only_by_a_clear_linkage_stops_when_the_gas_clears() {
        let config = site();
        let interlocks = Interlocks::from_config(&config);
        let mut holders = vec![Holders::new(); interlocks.outputs.len()];
        interlocks.on_event(
            &event(Action::Raised, Severity::High, true, "kitchen"),
            &mut holders,
        );
        let cleared = interlocks.on_event(
            &event(Action::ConditionCleared, Severity::High, false, "kitchen"),
            &mut holders,
        );
        assert_eq!(released(&cleared, &interlocks), vec!["fan"]);
    }

    #[test]
    fn a_suppressed_or_faulted_alarm_operates_nothing() {
        let config = site();
        let interlocks = Interlocks::from_config(&config);
        let mut holders = vec![Holders::new(); interlocks.outputs.len()];
        let mut calibrating = event(Action::Raised, Severity::Critical, true, "kitchen");
        calibrating.alarm.maintenance = Some("calibration".into());
        assert!(interlocks.on_event(&calibrating, &mut holders).is_empty());
        let mut fault = event(Action::Raised, Severity::Critical, true, "kitchen");
        fault.kind = AlarmKind::Fault;
        assert!(interlocks.on_event(&fault, &mut holders).is_empty());
        let elsewhere = event(Action::Raised, Severity::Critical, true, "other");
        assert!(
            operated(&interlocks.on_event(&elsewhere, &mut holders), &interlocks)
                .iter()
                .all(|o| o == "sounder-other"),
            "an alarm in the other enterprise sounds only its own location"
        );
    }
}
