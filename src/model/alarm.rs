//! The alarm vocabulary every stage speaks: severities and kinds, the ISA-18.2 state of one
//! alarm, what happened to it (an `AlarmEvent`), who did it, and what survives a restart.
//! Data only: the transitions are the rules' (`rules::alarm` implements the state machine on
//! `Alarm`, `rules::engine` makes the events).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Ms, Tags};

/// How urgent an alarm level is. Routes pick alarms by it (`[[alerts.routes]] severities`):
/// in the shipped rules and example sites, critical goes to the fire department, high to the
/// park's duty room, medium to maintenance, and low only to the board.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A warning for the board: pre-alarms, tests, events, a low battery.
    #[default]
    Low,
    /// Something for maintenance: faults (sensor open, comm loss, silent device), tamper.
    Medium,
    /// An alarm the park's duty room must respond to (residual current, overvoltage, ...).
    High,
    /// A fire or explosion risk: pushed ahead of everything, never held by a rate limit or a
    /// flood, never shelved while at this level.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What an alarm means (ISA-18.2 / GB vocabulary: 报警, 预警, 故障, 监管).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A hazard that needs an operator's response (报警/火警).
    #[default]
    Alarm,
    /// An early warning (预警).
    PreAlarm,
    /// Equipment that cannot watch what it should: sensor open/short, comm loss (故障).
    Fault,
    /// The monitoring system itself or its supervision: tamper, battery (监管).
    Supervisory,
    /// A device test, recorded but not a hazard.
    Test,
    /// Advisory only: journaled and stored, needs no acknowledgement (not an ISA alarm).
    Event,
}

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Alarm => "alarm",
            AlarmKind::PreAlarm => "pre_alarm",
            AlarmKind::Fault => "fault",
            AlarmKind::Supervisory => "supervisory",
            AlarmKind::Test => "test",
            AlarmKind::Event => "event",
        }
    }
}

/// The ISA-18.2 state an operator sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Normal,
    Unacknowledged,
    Acknowledged,
    ReturnedUnacknowledged,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::Unacknowledged => "unacknowledged",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::ReturnedUnacknowledged => "returned_unacknowledged",
        }
    }
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Raised,
    Escalated,
    DeEscalated,
    /// The condition is gone; a latched alarm stays active until reset.
    ConditionCleared,
    Cleared,
    Acknowledged,
    Shelved,
    Unshelved,
    Suppressed,
    Unsuppressed,
    RemovedFromService,
    ReturnedToService,
    Reset,
    ChatterFlagged,
    /// A chattering alarm has been calm for a while: no longer flagged.
    ChatterCleared,
    /// Its rule no longer exists (configuration changed).
    Retired,
    /// The device silenced its sounder (消音): the alarm stays active.
    Silenced,
    /// Shelving, suppression or out-of-service ended while the alarm is still active: it is
    /// shown, pushed and escalated again, and needs a new acknowledgement.
    Reannunciated,
    /// An operator reset a latched alarm the device still holds: the device's reset was sent,
    /// and the reset completes once the device drops the alarm.
    ResetRequested,
    /// The device still held the alarm when the wait after its reset ran out.
    ResetFailed,
    /// Linkage acted for the alarm (a valve closed, a fan started, a device reset written),
    /// or an output was operated by hand: the message says what, and whether it was
    /// confirmed. Journaled; pushes nobody (a failed action raises its own fault).
    Linkage,
    /// A fire alarm was confirmed as a real fire (确认火警): by an operator, or by the
    /// gateway when nobody answered within the confirmation time.
    FireConfirmed,
    /// An operator judged a fire alarm a false alarm (误报), with a reason.
    FalseAlarm,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Raised => "raised",
            Action::Escalated => "escalated",
            Action::DeEscalated => "de_escalated",
            Action::ConditionCleared => "condition_cleared",
            Action::Cleared => "cleared",
            Action::Acknowledged => "acknowledged",
            Action::Shelved => "shelved",
            Action::Unshelved => "unshelved",
            Action::Suppressed => "suppressed",
            Action::Unsuppressed => "unsuppressed",
            Action::RemovedFromService => "removed_from_service",
            Action::ReturnedToService => "returned_to_service",
            Action::Reset => "reset",
            Action::ChatterFlagged => "chatter_flagged",
            Action::ChatterCleared => "chatter_cleared",
            Action::Retired => "retired",
            Action::Silenced => "silenced",
            Action::Reannunciated => "reannunciated",
            Action::ResetRequested => "reset_requested",
            Action::ResetFailed => "reset_failed",
            Action::Linkage => "linkage",
            Action::FireConfirmed => "fire_confirmed",
            Action::FalseAlarm => "false_alarm",
        }
    }
}

/// The level an active condition is at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Index into the rule's levels, mildest first.
    pub index: u8,
    pub severity: Severity,
    pub kind: AlarmKind,
    pub latched: bool,
}

/// Who did it and why, carried by every command into the journal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    #[serde(default)]
    pub comment: Option<String>,
}

impl Operator {
    pub fn system() -> Self {
        Operator {
            name: "system".into(),
            comment: None,
        }
    }
}

/// Why an operator judged a fire alarm false (误报原因): a short fixed list, so that false
/// alarms can be counted by cause per enterprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FalseAlarmReason {
    /// Cooking fumes (油烟).
    Cooking,
    /// Steam or humidity (水汽).
    Steam,
    /// Dust, insects or dirt in the detector (灰尘).
    Dust,
    /// Someone smoking (吸烟).
    Smoking,
    /// Welding, cutting or other hot work (动火作业).
    HotWork,
    /// A test nobody announced (测试).
    Test,
    /// A faulty detector (设备故障).
    DeviceFault,
    /// Anything else: the comment says what (其他).
    Other,
}

impl FalseAlarmReason {
    pub const ALL: [FalseAlarmReason; 8] = [
        FalseAlarmReason::Cooking,
        FalseAlarmReason::Steam,
        FalseAlarmReason::Dust,
        FalseAlarmReason::Smoking,
        FalseAlarmReason::HotWork,
        FalseAlarmReason::Test,
        FalseAlarmReason::DeviceFault,
        FalseAlarmReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FalseAlarmReason::Cooking => "cooking",
            FalseAlarmReason::Steam => "steam",
            FalseAlarmReason::Dust => "dust",
            FalseAlarmReason::Smoking => "smoking",
            FalseAlarmReason::HotWork => "hot_work",
            FalseAlarmReason::Test => "test",
            FalseAlarmReason::DeviceFault => "device_fault",
            FalseAlarmReason::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<FalseAlarmReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Where a fire alarm stands between the detector and the fire department (火警确认).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum FireVerdict {
    /// Nobody has judged it yet; at `due_ms` it is treated as confirmed.
    Pending { since_ms: Ms, due_ms: Ms },
    /// A real fire: confirmed by `by`, or `automatic` because nobody answered in time.
    Confirmed {
        at_ms: Ms,
        by: String,
        automatic: bool,
    },
    /// Not a fire, for this reason.
    FalseAlarm {
        at_ms: Ms,
        by: String,
        reason: FalseAlarmReason,
    },
}

impl FireVerdict {
    /// Confirmed, by a person or by the time running out: forwarded to routes and centres that
    /// take confirmed fires only.
    pub fn confirmed(&self) -> bool {
        matches!(self, FireVerdict::Confirmed { .. })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FireVerdict::Pending { .. } => "pending",
            FireVerdict::Confirmed { .. } => "confirmed",
            FireVerdict::FalseAlarm { .. } => "false_alarm",
        }
    }
}

/// One alarm's lifecycle state. Serialized into the store as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The condition is present now.
    pub condition: bool,
    /// Active: the condition is present, or it latched and has not been reset.
    pub active: bool,
    pub acknowledged: bool,
    /// The current level while active; the last one after it returned.
    pub level: Option<Level>,
    /// The latch is engaged (a latched level was reached).
    pub latched: bool,
    pub raised_at: Option<Ms>,
    pub changed_at: Ms,
    pub shelved_until: Option<Ms>,
    pub shelve_reason: Option<String>,
    pub suppressed_until: Option<Ms>,
    pub out_of_service: bool,
    /// When out of service ends by itself.
    #[serde(default)]
    pub out_of_service_until: Option<Ms>,
    pub chattering: bool,
    /// The device silenced its sounder (消音) while the alarm is active.
    #[serde(default)]
    pub silenced: bool,
    /// Suppressed by design: the device is in a maintenance state (calibration, warm-up,
    /// self-test), named here. Ends with that state.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// A fire alarm's confirmation (only for levels that are fires); kept until the alarm is
    /// back to normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire: Option<FireVerdict>,
}

impl Default for Alarm {
    /// Normal: inactive and nothing left to acknowledge.
    fn default() -> Self {
        Alarm {
            condition: false,
            active: false,
            acknowledged: true,
            level: None,
            latched: false,
            raised_at: None,
            changed_at: 0,
            shelved_until: None,
            shelve_reason: None,
            suppressed_until: None,
            out_of_service: false,
            out_of_service_until: None,
            chattering: false,
            silenced: false,
            maintenance: None,
            fire: None,
        }
    }
}

impl Alarm {
    pub fn state(&self) -> AlarmState {
        match (self.active, self.acknowledged) {
            (true, false) => AlarmState::Unacknowledged,
            (true, true) => AlarmState::Acknowledged,
            (false, false) => AlarmState::ReturnedUnacknowledged,
            (false, true) => AlarmState::Normal,
        }
    }

    pub fn is_normal(&self) -> bool {
        self.state() == AlarmState::Normal
            && self.shelved_until.is_none()
            && self.suppressed_until.is_none()
            && !self.out_of_service
            && self.maintenance.is_none()
    }

    /// Shown and pushed to people: not shelved, suppressed or out of service.
    pub fn annunciated(&self) -> bool {
        self.shelved_until.is_none()
            && self.suppressed_until.is_none()
            && !self.out_of_service
            && self.maintenance.is_none()
    }
}

/// The value that caused a transition, for the journal and the alarm point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Observed {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Number(n) => write!(f, "{}", (n * 1000.0).round() / 1000.0),
            Observed::Text(t) => f.write_str(t),
        }
    }
}

/// One transition of one alarm: what the journal, the store, InfluxDB and the pushes get.
#[derive(Debug, Clone)]
pub struct AlarmEvent {
    /// `rule/device` or `rule/device/quantity`; `flood/<park>` for a park's flood state.
    pub key: Arc<str>,
    pub rule: Arc<str>,
    pub rule_name: Arc<str>,
    pub tags: Arc<Tags>,
    /// The quantity watched, or empty for whole-device rules.
    pub source: Arc<str>,
    pub action: Action,
    pub at_ms: Ms,
    pub state: AlarmState,
    pub severity: Severity,
    pub kind: AlarmKind,
    pub value: Option<Observed>,
    pub unit: Option<Arc<str>>,
    pub threshold: Option<f64>,
    pub message: String,
    pub operator: Option<Operator>,
    /// Shown and pushed to people (not shelved, suppressed, out of service or held back by a
    /// flood).
    pub annunciated: bool,
    /// The alarm after the transition, to persist.
    pub alarm: Alarm,
    /// Level filter states after the transition, to persist with the alarm.
    pub filters: Vec<bool>,
    /// Reported late: the transition comes from messages that reached the gateway well after
    /// they were sent (replayed after an outage), and its condition began at this device time.
    pub late_began_ms: Option<Ms>,
}

impl AlarmEvent {
    /// A journal entry that belongs to no alarm (an output operated by hand, an output that
    /// reads back otherwise than commanded after a restart): key `output/<id>`, rule
    /// `linkage`, kind `event`, so that it is journaled and stored but pushes nobody.
    pub fn output_note(
        output: &str,
        tags: Arc<Tags>,
        message: String,
        operator: Option<Operator>,
        at_ms: Ms,
    ) -> AlarmEvent {
        AlarmEvent {
            key: Arc::from(format!("output/{output}")),
            rule: Arc::from("linkage"),
            rule_name: Arc::from("Linkage"),
            tags,
            source: Arc::from(""),
            action: Action::Linkage,
            at_ms,
            state: AlarmState::Normal,
            severity: Severity::Low,
            kind: AlarmKind::Event,
            value: None,
            unit: None,
            threshold: None,
            message,
            operator,
            annunciated: false,
            alarm: Alarm::default(),
            filters: Vec::new(),
            late_began_ms: None,
        }
    }
}

/// What survives a restart for one alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedAlarm {
    pub alarm: Alarm,
    pub filters: Vec<bool>,
}
