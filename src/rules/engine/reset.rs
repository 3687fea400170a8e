//! Resets that reach the device, and what linkage did for an alarm.
//!
//! A latched detector (arc fault, many electrical-fire detectors, GB 14287) holds its alarm bit
//! until the host resets it, so the gateway's Reset, which waits for the condition to go,
//! would be refused for ever. For a device whose profile has `[reset]`, an operator's Reset
//! of such an alarm becomes a request: `ResetRequested` is journaled (linkage writes the
//! device's reset register on seeing it), the reset completes, in the operator's name, when
//! the device's readings show the alarm gone, and fails (`ResetFailed`) if they still show it
//! when the profile's wait runs out.

use super::*;

/// A reset written (or about to be) to a device that still held its alarm.
pub(super) struct PendingReset {
    operator: Operator,
    until: Ms,
}

/// At most this many linkage notes are kept per alarm for its view (the journal has all).
const NOTES_KEPT: usize = 8;

impl RuleEngine {
    pub(super) fn device_resettable(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        inst.alarm.latched && self.devices[inst.device].shape.reset_wait.is_some()
    }

    pub(super) fn request_device_reset(
        &mut self,
        i: usize,
        operator: &Operator,
        now: Ms,
        out: &mut Vec<AlarmEvent>,
    ) {
        let inst = &self.instances[i];
        let wait = self.devices[inst.device].shape.reset_wait.unwrap_or(10_000);
        self.pending_resets.insert(
            i,
            PendingReset {
                operator: operator.clone(),
                until: now + wait,
            },
        );
        let mut event = self.event(
            i,
            Action::ResetRequested,
            now,
            Some(operator.clone()),
            false,
        );
        event.message = format!(
            "{}: the device still holds the alarm; its reset is sent, and the alarm resets once the device drops it (waiting {} s)",
            event.message.split(':').next().unwrap_or_default(),
            wait / 1000
        );
        out.push(event);
    }

    /// Pending resets whose device has dropped the alarm complete now.
    pub(super) fn complete_device_resets(&mut self, now: Ms, out: &mut Vec<AlarmEvent>) {
        if self.pending_resets.is_empty() {
            return;
        }
        let dropped: Vec<usize> = self
            .pending_resets
            .keys()
            .copied()
            .filter(|&i| !self.instances[i].alarm.condition)
            .collect();
        for i in dropped {
            let Some(pending) = self.pending_resets.remove(&i) else {
                continue;
            };
            // An error means it was reset meanwhile by other means: nothing left to do.
            let by = pending.operator.name.clone();
            if let Ok(action) = self.instances[i].alarm.command(&Command::Reset, &by, now) {
                self.emit(i, action, now, Some(pending.operator), out);
                self.reschedule(i);
            }
        }
    }

    /// Resets the device did not act on within its wait fail.
    pub(super) fn expire_device_resets(&mut self, now: Ms, out: &mut Vec<AlarmEvent>) {
        if self.pending_resets.is_empty() {
            return;
        }
        let expired: Vec<usize> = self
            .pending_resets
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in expired {
            let Some(pending) = self.pending_resets.remove(&i) else {
                continue;
            };
            let mut event = self.event(i, Action::ResetFailed, now, Some(pending.operator), false);
            event.message = format!(
                "{}: the device still reports the alarm after its reset; the alarm stays (is the hazard still there, or did the reset not reach the device?)",
                event.message.split(':').next().unwrap_or_default()
            );
            out.push(event);
        }
    }

    pub(super) fn next_reset_deadline(&self) -> Option<Ms> {
        self.pending_resets.values().map(|p| p.until).min()
    }

    /// Journals what linkage did for alarm `key` (`Action::Linkage`), and keeps it for the
    /// alarm's view. False when there is no such alarm.
    pub fn annotate(
        &mut self,
        key: &str,
        message: &str,
        operator: Option<Operator>,
        now: Ms,
        out: &mut Vec<AlarmEvent>,
    ) -> bool {
        let Some(i) = self.instance_of(key) else {
            return false;
        };
        let mut event = self.event(i, Action::Linkage, now, operator, false);
        event.message = message.to_string();
        out.push(event);
        if !self.instances[i].alarm.is_normal() {
            let notes = self.linkage_notes.entry(i).or_default();
            if notes.len() == NOTES_KEPT {
                notes.remove(0);
            }
            notes.push(message.to_string());
        }
        true
    }

    /// What linkage did for alarm instance `i`, for its view.
    pub(super) fn notes_of(&self, i: usize) -> Vec<String> {
        if self.instances[i].alarm.is_normal() {
            return Vec::new();
        }
        self.linkage_notes.get(&i).cloned().unwrap_or_default()
    }

    /// Forgets the notes of alarms back to normal.
    pub(super) fn forget_notes(&mut self) {
        if self.linkage_notes.is_empty() {
            return;
        }
        let instances = &self.instances;
        self.linkage_notes
            .retain(|&i, _| !instances[i].alarm.is_normal());
    }
}
