//! Rule set files (`firmware-config/rules/*.toml`) and per-site overrides: the serde shapes and
//! their checks. What the rules mean at run time is the rules module's.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::model::alarm::{AlarmKind, Severity};

/// A rule set file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetFile {
    /// What the rule set is for; notes for whoever maintains it, not used by the gateway.
    #[serde(default)]
    pub description: Option<String>,
    /// The rules of this file. An `id` used twice, in this file or an earlier one, is an
    /// error; a rule with the id of a built-in gateway rule (`G1`, ...) replaces that rule.
    pub rules: Vec<RuleConfig>,
}

/// `[[rules]]`: one condition watched on every device it binds to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Stable id, e.g. `R1`; alarm keys and the journal use it, so do not reuse an id for a
    /// different meaning.
    pub id: String,
    /// Name shown to operators, in English and (optionally) Chinese.
    pub name: String,
    /// Chinese name, used instead of `name` in `zh` pushes and in the web UI's Chinese view.
    #[serde(default)]
    pub name_zh: Option<String>,
    /// Bind only to devices of these kinds (`meter`, `detector`, `gas`, `smoke`, ...).
    /// Empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Bind only to devices with these profiles. Empty: every profile.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// What is watched: `type` and its inputs.
    pub condition: ConditionConfig,
    /// Hysteresis on clearing, in the value's unit: a high alarm at 300 with deadband 30 clears
    /// below 270.
    #[serde(default)]
    pub deadband: f64,
    /// Seconds the condition must hold before the alarm is raised (filters inrush spikes).
    #[serde(default)]
    pub on_delay_s: f64,
    /// Seconds the condition must be gone before the alarm clears.
    #[serde(default)]
    pub off_delay_s: f64,
    /// Every level latches: the alarm stays active after the value returns, until an
    /// operator resets it (复位).
    #[serde(default)]
    pub latched: bool,
    /// During an alarm flood in the park, new non-critical alarms of this rule are not
    /// annunciated (still journaled and stored).
    #[serde(default)]
    pub flood_suppressible: bool,
    /// Multiply every level's `at` by this device parameter (`[[devices]] params`), e.g.
    /// `rated_current_a` so that `at = 0.8` means 0.8 In. Devices without it are not bound.
    #[serde(default)]
    pub per: Option<String>,
    /// A fire or explosion hazard (smoke, combustible gas, arc fault): its alarms are never
    /// shelved by operators, and its `alarm` levels are fires that operators confirm or mark
    /// false (see the levels' `fire`).
    #[serde(default)]
    pub fire: bool,
    /// Operators may shelve its alarms (never while an alarm is at a critical level; a
    /// shelved alarm that escalates to critical comes back at once). Default: yes. `fire`
    /// rules are never shelvable, whatever this says.
    #[serde(default)]
    pub shelvable: Option<bool>,
    /// `[[rules.levels]]`, lowest first.
    pub levels: Vec<LevelConfig>,
}

/// The watched input of a rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionConfig {
    /// Value at or above a level's `at`. One alarm per matching quantity.
    High {
        /// Quantities watched, each its own alarm; a trailing `*` matches a prefix (`leak_*`).
        quantities: Vec<String>,
    },
    /// Value at or below a level's `at`.
    Low {
        /// Quantities watched, each its own alarm; a trailing `*` matches a prefix.
        quantities: Vec<String>,
    },
    /// Rise per minute over `window_s`, at or above a level's `at`. The rise is measured
    /// from the oldest of the samples kept within the window (one per eighth of it), so over
    /// between 7/8 of the window and all of it; none before half a window of samples.
    Rate {
        /// Quantities watched, each its own alarm; a trailing `*` matches a prefix.
        quantities: Vec<String>,
        /// Seconds over which the rise is measured, at least 1; `at` is still per minute.
        #[serde(default = "default_rate_window")]
        window_s: f64,
    },
    /// The highest of the quantities (e.g. T1..T4), at or above a level's `at`.
    Max {
        /// Quantities compared, one alarm for all of them; a trailing `*` matches a prefix.
        quantities: Vec<String>,
    },
    /// Phase unbalance in percent: largest deviation from the mean over the mean, computed
    /// only while the mean is at least `min_mean` (no load, no unbalance).
    Unbalance {
        /// The phases, e.g. `["ia", "ib", "ic"]`; a device with fewer than two is not bound.
        quantities: Vec<String>,
        /// Mean, in the phases' unit (A for currents), below which the unbalance counts as 0.
        #[serde(default)]
        min_mean: f64,
    },
    /// 1 while some phase is below `below` and every other phase above `others_above`,
    /// else 0.
    PhaseLoss {
        /// The phases, e.g. `["ua", "ub", "uc"]`; a device with fewer than two is not bound.
        quantities: Vec<String>,
        /// A phase below this value (in the phases' unit, V) counts as lost, if every other
        /// phase is above `others_above`.
        below: f64,
        /// The value every other phase must be above for a loss: with all phases low, the
        /// supply is off, which is not a phase loss.
        others_above: f64,
    },
    /// A device's own flag (status bit) is set. One alarm per matching quantity.
    Flag {
        /// Flags watched, each its own alarm; a trailing `*` matches a prefix.
        quantities: Vec<String>,
    },
    /// A device's text state (enumeration, event) is one of a level's `states`. With
    /// `clear_states`, the condition ends only on one of those (for event streams whose
    /// other messages, e.g. heartbeats, say nothing about the condition): a fire or gas
    /// alarm must name its explicit clear here, since a heartbeat, a test or a silenced
    /// sounder is not one (`parkguard check` warns otherwise). `silence_states` (消音) mark
    /// the active alarm as silenced on the board without ending it.
    State {
        /// Text quantities watched, each its own alarm; a trailing `*` matches a prefix.
        quantities: Vec<String>,
        /// States that end the condition, e.g. `["alarm_clear"]`. Empty: any state that
        /// raises no level ends it.
        #[serde(default)]
        clear_states: Vec<String>,
        /// States that mark the active alarm silenced (sounder muted) without ending it.
        #[serde(default)]
        silence_states: Vec<String>,
    },
    /// The quantity's reading is marked invalid by the decoder (sensor open/short sentinel).
    Invalid {
        /// Quantities watched, each its own alarm; a trailing `*` matches a prefix.
        quantities: Vec<String>,
    },
    /// The device's readings arrive with quality comm_error (Modbus offline).
    CommLoss,
    /// No reading from the device for `intervals` × its expected interval + `grace_s`,
    /// counted from start for a device never seen. The interval is the device's fastest
    /// Modbus poll class or its profile's `heartbeat_s`; devices with neither are not bound.
    Silence {
        /// Expected intervals without any reading before the device counts as silent.
        #[serde(default = "default_silence_intervals")]
        intervals: f64,
        /// Seconds added to that, for devices whose reports drift (e.g. 600).
        #[serde(default)]
        grace_s: f64,
    },
}

/// States that say nothing about a fire or gas condition: a rule that clears on one of them
/// could end a live alarm on a heartbeat.
const NOT_A_CLEAR: [&str; 8] = [
    "heartbeat",
    "silenced",
    "silence",
    "test",
    "online",
    "status",
    "report",
    "normal_report",
];

impl RuleConfig {
    /// Why this rule's alarms could end without an explicit clear, if they could: a state
    /// rule with an alarm level of high or critical severity whose condition ends on any
    /// other state (no `clear_states`) or on a state that is not a clear.
    pub fn risky_clear(&self) -> Option<String> {
        let ConditionConfig::State { clear_states, .. } = &self.condition else {
            return None;
        };
        let serious = self
            .levels
            .iter()
            .any(|l| l.kind == AlarmKind::Alarm && l.severity >= Severity::High);
        if !serious {
            return None;
        }
        if clear_states.is_empty() {
            return Some(format!(
                "rule {}: any state outside its levels ends its alarm (a heartbeat would end a live alarm); name the device's explicit clear in `clear_states`",
                self.id
            ));
        }
        let risky: Vec<&str> = clear_states
            .iter()
            .map(String::as_str)
            .filter(|s| NOT_A_CLEAR.contains(s))
            .collect();
        (!risky.is_empty()).then(|| {
            format!(
                "rule {}: `clear_states` has {} which say nothing about the condition (a silenced sounder or a heartbeat is not a clear; use `silence_states` for 消音)",
                self.id,
                risky.join(", ")
            )
        })
    }
}

fn default_rate_window() -> f64 {
    60.0
}
fn default_silence_intervals() -> f64 {
    2.0
}

impl ConditionConfig {
    pub fn quantities(&self) -> &[String] {
        match self {
            ConditionConfig::High { quantities }
            | ConditionConfig::Low { quantities }
            | ConditionConfig::Rate { quantities, .. }
            | ConditionConfig::Max { quantities }
            | ConditionConfig::Unbalance { quantities, .. }
            | ConditionConfig::PhaseLoss { quantities, .. }
            | ConditionConfig::Flag { quantities }
            | ConditionConfig::State { quantities, .. }
            | ConditionConfig::Invalid { quantities } => quantities,
            ConditionConfig::CommLoss | ConditionConfig::Silence { .. } => &[],
        }
    }
}

/// `[[rules.levels]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// How urgent this level is: routes select by it, and overrides' `at` and profiles'
    /// `device_alarms` name the level by it.
    pub severity: Severity,
    /// What this level means: `alarm`, `pre_alarm`, `fault`, `supervisory`, `test`, or
    /// `event` (journaled and stored, never pushed, needs no acknowledgement).
    #[serde(default)]
    pub kind: AlarmKind,
    /// Threshold for numeric conditions (high, low, rate, max, unbalance, phase_loss).
    #[serde(default)]
    pub at: Option<f64>,
    /// States that raise this level, for `state` conditions.
    #[serde(default)]
    pub states: Vec<String>,
    /// Overrides the rule's `on_delay_s` for this level (e.g. 10 s for a critical overcurrent
    /// whose warning waits 60 s).
    #[serde(default)]
    pub on_delay_s: Option<f64>,
    /// Overrides the rule's `off_delay_s` for this level.
    #[serde(default)]
    pub off_delay_s: Option<f64>,
    /// This level latches even if the rule does not (e.g. gas level 2).
    #[serde(default)]
    pub latched: Option<bool>,
    /// This level is a fire (火警) that operators confirm or mark false, and that routes
    /// with `confirmed_only` and fire-monitoring centres receive once confirmed. Default: the
    /// `alarm` levels of a `fire` rule. Set `false` on a level that is a warning for the duty
    /// room (gas level 1). A fire level must latch.
    #[serde(default)]
    pub fire: Option<bool>,
}

impl LevelConfig {
    /// A fire level (see `fire`) of `rule`.
    pub fn is_fire(&self, rule: &RuleConfig) -> bool {
        self.fire
            .unwrap_or(rule.fire && self.kind == AlarmKind::Alarm)
    }
}

/// `[[rule_overrides]]` in a site file: changes one rule for a scope. The most specific scope
/// wins per setting: device, then location, enterprise, park, then the whole site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    /// The rule's `id`.
    pub rule: String,
    /// Applies to the devices of the park with this `id`. Give at most one of `park`,
    /// `enterprise`, `location`, `device`; none means the whole site.
    #[serde(default)]
    pub park: Option<String>,
    /// Applies to the devices of the enterprise with this `id`.
    #[serde(default)]
    pub enterprise: Option<String>,
    /// Applies to the devices at the location with this `id`.
    #[serde(default)]
    pub location: Option<String>,
    /// Applies to the device with this `id` only.
    #[serde(default)]
    pub device: Option<String>,
    /// `false` switches the rule off in this scope.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replaces the rule's `deadband`, in the rule's own units (like `at`).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Replaces the rule's `on_delay_s`; a level with its own `on_delay_s` keeps that.
    #[serde(default)]
    pub on_delay_s: Option<f64>,
    /// Replaces the rule's `off_delay_s`; a level with its own `off_delay_s` keeps that.
    #[serde(default)]
    pub off_delay_s: Option<f64>,
    /// New thresholds by severity, e.g. `at = { low = 150, high = 250 }`, in the rule's own
    /// units: for a rule scaled by a device parameter (`per`), multiples of it (R7:
    /// `high = 1.1` is 1.1 times the rated current). `deadband` likewise.
    #[serde(default)]
    pub at: BTreeMap<Severity, f64>,
}

impl RuleOverride {
    /// 0 = site, 1 = park, 2 = enterprise, 3 = location, 4 = device.
    pub fn specificity(&self) -> u8 {
        if self.device.is_some() {
            4
        } else if self.location.is_some() {
            3
        } else if self.enterprise.is_some() {
            2
        } else if self.park.is_some() {
            1
        } else {
            0
        }
    }
}

impl RuleConfig {
    /// Problems as (key path inside the rule, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut report =
            |path: &str, message: &str| problems.push((path.to_string(), message.to_string()));
        if self.levels.is_empty() {
            report("levels", "give at least one level");
        }
        let numeric = !matches!(
            self.condition,
            ConditionConfig::Flag { .. }
                | ConditionConfig::State { .. }
                | ConditionConfig::Invalid { .. }
                | ConditionConfig::CommLoss
                | ConditionConfig::Silence { .. }
        );
        let needs_quantities = !matches!(
            self.condition,
            ConditionConfig::CommLoss | ConditionConfig::Silence { .. }
        );
        if needs_quantities && self.condition.quantities().is_empty() {
            report("condition.quantities", "give at least one quantity");
        }
        if let ConditionConfig::Unbalance { quantities, .. }
        | ConditionConfig::PhaseLoss { quantities, .. } = &self.condition
        {
            if quantities.len() < 2 {
                report(
                    "condition.quantities",
                    "give the phases, e.g. [\"ia\", \"ib\", \"ic\"]",
                );
            }
        }
        if let ConditionConfig::Rate { window_s, .. } = &self.condition {
            if window_s.is_nan() || *window_s < 1.0 {
                report("condition.window_s", "must be at least 1 second");
            }
        }
        for (i, level) in self.levels.iter().enumerate() {
            match (&self.condition, numeric) {
                (ConditionConfig::State { .. }, _) if level.states.is_empty() => report(
                    &format!("levels[{i}].states"),
                    "a state condition needs the states that raise this level",
                ),
                (_, true) if level.at.is_none_or(|a| !a.is_finite()) => report(
                    &format!("levels[{i}].at"),
                    "a numeric condition needs a finite threshold `at`",
                ),
                _ => {}
            }
            // A fire that clears by itself could end, and be forgotten, before anyone judged
            // it; latched, it stays until judged and reset.
            if level.is_fire(self) && !level.latched.unwrap_or(self.latched) {
                report(
                    &format!("levels[{i}]"),
                    "a fire level must latch (`latched = true` on the rule or the level), or say `fire = false`",
                );
            }
            for (name, delay) in [
                ("on_delay_s", level.on_delay_s),
                ("off_delay_s", level.off_delay_s),
            ] {
                if delay.is_some_and(|d| !(0.0..=86_400.0).contains(&d)) {
                    report(&format!("levels[{i}].{name}"), "must be 0 to 86400 seconds");
                }
            }
        }
        if numeric {
            let ats: Vec<f64> = self.levels.iter().filter_map(|l| l.at).collect();
            let descending = matches!(self.condition, ConditionConfig::Low { .. });
            let ordered = ats
                .windows(2)
                .all(|w| if descending { w[1] < w[0] } else { w[1] > w[0] });
            if !ordered {
                report(
                    "levels",
                    if descending {
                        "levels of a low condition go from the mildest down: each `at` below the one before"
                    } else {
                        "levels go from the mildest up: each `at` above the one before"
                    },
                );
            }
        }
        for (name, value) in [
            ("deadband", self.deadband),
            ("on_delay_s", self.on_delay_s),
            ("off_delay_s", self.off_delay_s),
        ] {
            if !(0.0..=86_400.0).contains(&value) {
                report(name, "must be 0 or more (delays at most 86400 s)");
            }
        }
        problems
    }
}

/// `[[rule_overrides]]`: each names a rule of the rule files and at most one known scope.
pub(super) fn validate_rule_overrides(
    overrides: &[RuleOverride],
    rules: &[RuleConfig],
    ids: &super::site::SiteIds,
    report: &mut dyn FnMut(String, String),
) {
    for (i, o) in overrides.iter().enumerate() {
        if !rules.iter().any(|r| r.id == o.rule) {
            report(
                format!("rule_overrides[{i}].rule"),
                format!("no rule with id `{}` in the rule files", o.rule),
            );
        }
        let scopes = [
            ("park", &o.park, &ids.parks),
            ("enterprise", &o.enterprise, &ids.enterprises),
            ("location", &o.location, &ids.locations),
            ("device", &o.device, &ids.devices),
        ];
        if scopes.iter().filter(|(_, id, _)| id.is_some()).count() > 1 {
            report(
                format!("rule_overrides[{i}]"),
                "give at most one of park, enterprise, location, device".into(),
            );
        }
        for (name, id, known) in scopes {
            if let Some(id) = id {
                if !known.contains(id.as_str()) {
                    report(
                        format!("rule_overrides[{i}].{name}"),
                        format!("no {name} with id `{id}`"),
                    );
                }
            }
        }
    }
}
