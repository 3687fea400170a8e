//! Floods and chatter: a park whose alarms come faster than operators can read is in flood
//! (non-critical, flood-suppressible alarms are journaled but not annunciated), and an alarm that
//! comes and goes too often is flagged chattering with a doubled deadband.

use super::*;

impl RuleEngine {
    /// Ends the floods of parks whose window has thinned out.
    pub(super) fn end_floods(&mut self, now: Ms, out: &mut Vec<AlarmEvent>) {
        let ended: Vec<String> = self
            .floods
            .iter_mut()
            .filter_map(|(park, flood)| {
                while flood
                    .raises
                    .front()
                    .is_some_and(|t| now - t > FLOOD_WINDOW_MS)
                {
                    flood.raises.pop_front();
                }
                (flood.active && flood.raises.len() < FLOOD_END).then(|| {
                    flood.active = false;
                    park.clone()
                })
            })
            .collect();
        for park in ended {
            out.push(self.flood_event(&park, false, now));
        }
    }

    /// Counts a new alarm in its park's flood window; the event that starts a flood.
    pub(super) fn count_raise_in_flood(&mut self, park: &str, at: Ms) -> Option<AlarmEvent> {
        let flood = self.floods.entry(park.to_string()).or_default();
        flood.raises.push_back(at);
        while flood
            .raises
            .front()
            .is_some_and(|t| at - t > FLOOD_WINDOW_MS)
        {
            flood.raises.pop_front();
        }
        if !flood.active && flood.raises.len() > FLOOD_START {
            flood.active = true;
            return Some(self.flood_event(park, true, at));
        }
        None
    }

    /// Counts an activation of instance `i` in its chatter window; the event that flags it.
    pub(super) fn count_activation(&mut self, i: usize, at: Ms) -> Option<AlarmEvent> {
        let inst = &mut self.instances[i];
        let window = chatter_window(
            &inst.binding.settings.on_delays,
            &inst.binding.settings.off_delays,
        );
        let activations = inst.activations.get_or_insert_default();
        activations.push_back(at);
        while activations.front().is_some_and(|t| at - t > window) {
            activations.pop_front();
        }
        if !inst.alarm.chattering && activations.len() > CHATTER_ACTIVATIONS {
            // Flagged as a bad actor; its deadband doubles (docs/domain.md, section 3).
            inst.alarm.chattering = true;
            return Some(self.event(i, Action::ChatterFlagged, at, None, false));
        }
        None
    }

    pub(super) fn flood_event(&self, park: &str, started: bool, at: Ms) -> AlarmEvent {
        let tags = Tags {
            park: park.to_string(),
            ..Tags::default()
        };
        AlarmEvent {
            key: Arc::from(format!("flood/{park}")),
            rule: Arc::clone(&self.flood_rule),
            rule_name: Arc::from("Alarm flood"),
            tags: Arc::new(tags),
            source: Arc::from(""),
            action: if started {
                Action::Raised
            } else {
                Action::Cleared
            },
            at_ms: at,
            state: if started {
                AlarmState::Acknowledged
            } else {
                AlarmState::Normal
            },
            severity: Severity::Medium,
            kind: AlarmKind::Supervisory,
            value: None,
            unit: None,
            threshold: Some(FLOOD_START as f64),
            message: if started {
                format!("alarm flood in park {park}: more than {FLOOD_START} new alarms in 10 minutes; non-critical alarms of flood-suppressible rules are held back")
            } else {
                format!("alarm flood in park {park} ended")
            },
            operator: Some(Operator::system()),
            annunciated: true,
            alarm: Alarm::default(),
            filters: Vec::new(),
            late_began_ms: None,
        }
    }

    /// Parks in flood now.
    pub fn floods(&self) -> Vec<String> {
        self.floods
            .iter()
            .filter(|(_, f)| f.active)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The chatter window of a rule bound with these delays.
pub(super) fn chatter_window(on_delays: &[Ms], off_delays: &[Ms]) -> Ms {
    let cycle = on_delays.first().copied().unwrap_or(0) + off_delays.first().copied().unwrap_or(0);
    CHATTER_WINDOW_MS.max(cycle.saturating_mul(CHATTER_ACTIVATIONS as Ms + 1))
}
