//! Views: read-only snapshots of the alarms for the API, the board and the tests.

use super::*;

/// A read-only view of one alarm, for the API and the board.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    pub key: String,
    pub rule: String,
    pub rule_name: String,
    /// The rule's Chinese name, when the rule set gives one.
    pub rule_name_zh: Option<String>,
    pub park: String,
    pub enterprise: String,
    pub location: String,
    pub device: String,
    pub source: String,
    pub state: AlarmState,
    /// The condition is present now (a latched alarm can be active without it).
    pub condition: bool,
    pub severity: Option<Severity>,
    pub kind: Option<AlarmKind>,
    pub value: Option<Observed>,
    pub threshold: Option<f64>,
    pub latched: bool,
    /// The rule watches for the device going silent (comm loss, missed heartbeats).
    pub comm_loss: bool,
    pub shelved_until_ms: Option<Ms>,
    pub shelve_reason: Option<String>,
    pub suppressed_until_ms: Option<Ms>,
    pub out_of_service: bool,
    pub out_of_service_until_ms: Option<Ms>,
    /// Suppressed by design: the device's maintenance state (calibration, warm-up, ...).
    pub maintenance: Option<String>,
    pub chattering: bool,
    /// The device silenced its sounder (消音); the alarm is still active.
    pub silenced: bool,
    /// Operators may shelve it (rules without a critical level, unless configured).
    pub shelvable: bool,
    pub raised_at_ms: Option<Ms>,
    pub changed_at_ms: Ms,
    /// What linkage did for it, oldest first: "Gas valve B2 closed 14:03:07, confirmed".
    pub linkage: Vec<String>,
    /// An operator's reset was sent to the device, which still holds the alarm.
    pub reset_pending: bool,
    /// A fire's confirmation: `{"verdict": "pending", "since_ms", "due_ms"}` (the board counts
    /// down to `due_ms`), `{"verdict": "confirmed", "at_ms", "by", "automatic"}` or
    /// `{"verdict": "false_alarm", "at_ms", "by", "reason"}`. Absent for other alarms.
    pub fire: Option<crate::model::alarm::FireVerdict>,
}

impl RuleEngine {
    /// Every alarm that is not normal (active, unacknowledged, shelved, suppressed or out of
    /// service), most severe first, then newest first.
    pub fn alarms(&self) -> Vec<AlarmView> {
        let mut views: Vec<AlarmView> = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, inst)| !inst.alarm.is_normal())
            .map(|(i, _)| self.view(i))
            .collect();
        views.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.changed_at_ms.cmp(&a.changed_at_ms))
        });
        views
    }

    /// Active alarms whose condition is present, as `Raised` events that are not journaled:
    /// what linkage must have acted on, after a restart.
    pub fn standing(&self, now: Ms) -> Vec<AlarmEvent> {
        (0..self.instances.len())
            .filter(|&i| {
                let a = &self.instances[i].alarm;
                a.active && a.condition
            })
            .map(|i| self.event(i, Action::Raised, now, None, true))
            .collect()
    }

    /// Every alarm that is not normal, as `Raised` events that are not journaled: what the
    /// fire-monitoring centres' device states are made of, after a restart.
    pub fn not_normal(&self, now: Ms) -> Vec<AlarmEvent> {
        (0..self.instances.len())
            .filter(|&i| !self.instances[i].alarm.is_normal())
            .map(|i| self.event(i, Action::Raised, now, None, true))
            .collect()
    }

    pub fn alarm(&self, key: &str) -> Option<AlarmView> {
        self.instance_of(key).map(|i| self.view(i))
    }

    pub(super) fn view(&self, i: usize) -> AlarmView {
        let inst = &self.instances[i];
        let tags = &self.devices[inst.device].tags;
        let rule = &self.rules[inst.binding.settings.rule];
        let a = &inst.alarm;
        AlarmView {
            key: self.key_of(inst),
            rule: rule.id.to_string(),
            rule_name: rule.name.to_string(),
            rule_name_zh: rule.name_zh.as_deref().map(str::to_string),
            park: tags.park.clone(),
            enterprise: tags.enterprise.clone(),
            location: tags.location.clone(),
            device: tags.device.clone(),
            source: inst.binding.source.to_string(),
            state: a.state(),
            condition: a.condition,
            severity: a.level.map(|l| l.severity),
            kind: a.level.map(|l| l.kind),
            value: inst.value.clone(),
            threshold: a
                .level
                .and_then(|l| inst.binding.settings.ats.get(usize::from(l.index)).copied()),
            latched: a.latched,
            comm_loss: matches!(
                inst.binding.evaluation,
                Evaluation::CommLoss | Evaluation::Silence { .. }
            ),
            shelved_until_ms: a.shelved_until,
            shelve_reason: a.shelve_reason.clone(),
            suppressed_until_ms: a.suppressed_until,
            out_of_service: a.out_of_service,
            out_of_service_until_ms: a.out_of_service_until,
            maintenance: a.maintenance.clone(),
            chattering: a.chattering,
            silenced: a.silenced,
            shelvable: rule.shelvable,
            raised_at_ms: a.raised_at,
            changed_at_ms: a.changed_at,
            linkage: self.notes_of(i),
            reset_pending: self.pending_resets.contains_key(&i),
            fire: a.fire.clone(),
        }
    }
}
