//! What a transition says: the `AlarmEvent` of an instance's action, with the message the
//! journal and the pushes carry (a fire's verdict in words, a false alarm's cause as its value),
//! and the note of a transition reported late.

use super::*;

impl AlarmEvent {
    pub(super) fn mark_late(&mut self, began: Ms, at: Ms) {
        self.late_began_ms = Some(began);
        let ago = (at - began).max(0) / 1000;
        self.message.push_str(&format!(
            " [reported late: its condition began {ago} s before the gateway received it]"
        ));
    }
}

impl RuleEngine {
    pub(super) fn event(
        &self,
        i: usize,
        action: Action,
        at: Ms,
        operator: Option<Operator>,
        annunciated: bool,
    ) -> AlarmEvent {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        let level = inst.alarm.level;
        let threshold =
            level.and_then(|l| inst.binding.settings.ats.get(usize::from(l.index)).copied());
        // A false alarm's journal entry keeps its reason as its value, so that false alarms
        // can be counted by cause.
        let value = match (action, &inst.alarm.fire) {
            (Action::FalseAlarm, Some(FireVerdict::FalseAlarm { reason, .. })) => {
                Some(Observed::Text(reason.as_str().to_string()))
            }
            _ => inst.value.clone(),
        };
        let subject = if inst.binding.source.is_empty() {
            rule.name.to_string()
        } else {
            format!("{} {}", rule.name, inst.binding.source)
        };
        let unit = inst.unit.as_deref().unwrap_or("");
        let message = match (action, &value, threshold, &inst.alarm.fire) {
            (
                Action::FireConfirmed,
                _,
                _,
                Some(FireVerdict::Confirmed {
                    automatic: true, ..
                }),
            ) if self.fire_confirm_timeout == 0 => {
                format!("{subject}: a fire, confirmed as raised ([fire] confirm_timeout_s = 0)")
            }
            (
                Action::FireConfirmed,
                _,
                _,
                Some(FireVerdict::Confirmed {
                    automatic: true, ..
                }),
            ) => format!(
                "{subject}: treated as a confirmed fire, nobody confirmed or dismissed it within {} s",
                self.fire_confirm_timeout / 1000
            ),
            (Action::FireConfirmed, _, _, Some(FireVerdict::Confirmed { by, .. })) => {
                format!("{subject}: fire confirmed by {by}")
            }
            (Action::FalseAlarm, _, _, Some(FireVerdict::FalseAlarm { by, reason, .. })) => {
                format!(
                    "{subject}: false alarm ({}), judged by {by}",
                    reason.as_str().replace('_', " ")
                )
            }
            (Action::Raised | Action::Escalated | Action::DeEscalated, Some(v), Some(t), _) => {
                format!("{subject} {v}{unit} (threshold {t}{unit})")
            }
            (_, Some(v), _, _) => {
                format!("{subject}: {} ({v})", action.as_str().replace('_', " "))
            }
            _ => format!("{subject}: {}", action.as_str().replace('_', " ")),
        };
        AlarmEvent {
            key: Arc::from(self.key_of(inst)),
            rule: Arc::clone(&rule.id),
            rule_name: Arc::clone(&rule.name),
            tags: Arc::clone(&self.devices[inst.device].tags),
            source: Arc::clone(&inst.binding.source),
            action,
            at_ms: at,
            state: inst.alarm.state(),
            severity: level.map(|l| l.severity).unwrap_or_default(),
            kind: level.map(|l| l.kind).unwrap_or_default(),
            value,
            unit: inst.unit.clone(),
            threshold,
            message,
            operator,
            annunciated,
            alarm: inst.alarm.clone(),
            filters: self.filters[inst.filters()]
                .iter()
                .map(|f| f.active)
                .collect(),
            late_began_ms: None,
        }
    }
}
