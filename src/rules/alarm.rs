//! The alarm state machine of ISA-18.2 / IEC 62682, pure, one instance per alarm: the
//! transitions of an `Alarm` under its condition and operators' commands (`Command`, with their
//! limits). The data itself (`Alarm`, its states and actions) is the shared vocabulary of
//! `model::alarm`, re-exported here; this module decides the acknowledgement, latch, shelving,
//! suppression and out-of-service state of one alarm and nothing else (not the thresholds, not
//! the clock, not where transitions go).
//!
//! States: normal, unacknowledged (active), acknowledged (active), returned-to-normal
//! unacknowledged. Orthogonal to them: shelved (operator, time-limited, with a reason),
//! suppressed by design (maintenance window), out of service. A latched alarm stays active
//! after its condition clears until an operator resets it (复位). An escalation to a higher
//! level is a new annunciation and needs a new acknowledgement.

use serde::{Deserialize, Serialize};

use crate::model::alarm::AlarmKind;
pub use crate::model::alarm::{
    Action, Alarm, AlarmState, FalseAlarmReason, FireVerdict, Level, Operator,
};
use crate::model::Ms;

/// An operator's command on one alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Acknowledge,
    /// Hides the alarm until `until_ms` (at most `MAX_SHELVE_MS` ahead); a reason is required.
    Shelve {
        until_ms: Ms,
        reason: String,
    },
    Unshelve,
    /// Clears a latched alarm whose condition is gone.
    Reset,
    /// Maintenance window: the alarm is evaluated and journaled but not annunciated.
    Suppress {
        until_ms: Ms,
    },
    /// Out of service until `until_ms` (at most `MAX_SUPPRESS_MS` ahead; 24 hours when
    /// absent): a sensor taken out of service comes back by itself.
    RemoveFromService {
        #[serde(default)]
        until_ms: Option<Ms>,
    },
    /// Ends suppression and out-of-service.
    ReturnToService,
    /// A fire alarm is a real fire (确认火警): forwarded at once to routes and centres that
    /// take confirmed fires. Also after an automatic confirmation or a false-alarm verdict
    /// (someone looked again).
    ConfirmFire,
    /// A fire alarm is a false alarm (误报): `other` needs a comment saying what it was.
    FalseAlarm {
        reason: FalseAlarmReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("nothing to acknowledge: the alarm is normal or already acknowledged")]
    NothingToAcknowledge,
    #[error("the alarm is not latched; it clears by itself when its value returns")]
    NotLatched,
    #[error("the condition is still present; reset is possible once the value has returned")]
    ConditionPresent,
    #[error("shelving needs a reason")]
    ReasonRequired,
    #[error("only an active alarm can be shelved; a device that may alarm later cannot be muted in advance")]
    NotActive,
    #[error("this alarm cannot be shelved: a critical, fire or gas alarm is never hidden from the board (acknowledge it instead)")]
    NotShelvable,
    #[error("out of service must end in the future and within 30 days")]
    BadServiceTime,
    #[error("shelving must end in the future and within 24 hours")]
    BadShelveTime,
    #[error("a maintenance window must end in the future and within 30 days")]
    BadSuppressTime,
    #[error("the alarm is not shelved")]
    NotShelved,
    #[error("the alarm is in service and not suppressed")]
    InService,
    #[error("no alarm `{0}`")]
    UnknownAlarm(String),
    #[error("operator name is required")]
    OperatorRequired,
    #[error("this alarm is not a fire alarm: only fire alarms are confirmed or marked false")]
    NotFire,
    #[error("the fire is already confirmed by an operator")]
    AlreadyConfirmed,
    #[error("the alarm is already marked a false alarm")]
    AlreadyFalseAlarm,
    #[error("a false alarm for another reason needs a comment saying what it was")]
    CommentRequired,
    #[error("this fire has not been judged: confirm it or mark it a false alarm before the reset")]
    FireVerdictRequired,
}

pub const MAX_SHELVE_MS: Ms = 24 * 3600 * 1000;
pub const MAX_SUPPRESS_MS: Ms = 30 * 24 * 3600 * 1000;

/// Out of service without an end given lasts this long.
pub const DEFAULT_OUT_OF_SERVICE_MS: Ms = 24 * 3600 * 1000;

impl Alarm {
    /// The device entered (`Some(state)`) or left (`None`) a maintenance state.
    pub fn set_maintenance(&mut self, state: Option<&str>, now: Ms) -> Option<Action> {
        let entering = state.is_some() && self.maintenance.is_none();
        let leaving = state.is_none() && self.maintenance.is_some();
        self.maintenance = state.map(str::to_string);
        if !(entering || leaving) {
            return None;
        }
        self.changed_at = now;
        Some(if entering {
            Action::Suppressed
        } else {
            Action::Unsuppressed
        })
    }

    /// The condition's new level (`None`: the condition is gone), from the level filters.
    pub fn on_condition(&mut self, level: Option<Level>, now: Ms) -> Option<Action> {
        let before = self.level.filter(|_| self.condition);
        match (before, level) {
            (None, None) => None,
            (Some(old), Some(new)) if old.index == new.index => None,
            (None, Some(new)) => {
                let fresh = !self.active;
                self.condition = true;
                self.active = true;
                self.changed_at = now;
                if fresh {
                    // Events need no operator response: they are acknowledged as they happen.
                    self.acknowledged = new.kind == AlarmKind::Event;
                    self.latched = new.latched;
                    self.level = Some(new);
                    self.raised_at = Some(now);
                    return Some(Action::Raised);
                }
                // A latched alarm whose condition comes back: annunciated again at its level
                // or above. Below the level it latched at, the alarm keeps its highest level
                // until reset (a gas level 2 that fell and rose to a pre-alarm is still a
                // level 2 alarm) and nothing new is annunciated.
                let held = self.level.filter(|l| l.index > new.index);
                self.latched |= new.latched;
                match held {
                    Some(_) => None,
                    None => {
                        self.level = Some(new);
                        self.acknowledged = new.kind == AlarmKind::Event;
                        self.silenced = false;
                        Some(Action::Escalated)
                    }
                }
            }
            (Some(old), Some(new)) => {
                self.latched |= new.latched;
                self.changed_at = now;
                if new.index > old.index {
                    self.level = Some(new);
                    self.acknowledged = new.kind == AlarmKind::Event;
                    Some(Action::Escalated)
                } else if self.latched {
                    // A latched alarm holds its highest level until reset.
                    None
                } else {
                    self.level = Some(new);
                    Some(Action::DeEscalated)
                }
            }
            (Some(_), None) => {
                self.condition = false;
                self.changed_at = now;
                if self.latched {
                    Some(Action::ConditionCleared)
                } else {
                    self.active = false;
                    self.silenced = false;
                    Some(Action::Cleared)
                }
            }
        }
    }

    /// `by` is the operator, recorded in a fire verdict.
    pub fn command(
        &mut self,
        command: &Command,
        by: &str,
        now: Ms,
    ) -> Result<Action, CommandError> {
        self.changed_at = now;
        match command {
            Command::Acknowledge => {
                if self.acknowledged {
                    return Err(CommandError::NothingToAcknowledge);
                }
                self.acknowledged = true;
                Ok(Action::Acknowledged)
            }
            Command::Shelve { until_ms, reason } => {
                if !self.active {
                    return Err(CommandError::NotActive);
                }
                if reason.trim().is_empty() {
                    return Err(CommandError::ReasonRequired);
                }
                if *until_ms <= now || *until_ms - now > MAX_SHELVE_MS {
                    return Err(CommandError::BadShelveTime);
                }
                self.shelved_until = Some(*until_ms);
                self.shelve_reason = Some(reason.clone());
                Ok(Action::Shelved)
            }
            Command::Unshelve => {
                if self.shelved_until.take().is_none() {
                    return Err(CommandError::NotShelved);
                }
                self.shelve_reason = None;
                Ok(Action::Unshelved)
            }
            Command::Reset => {
                if !self.latched {
                    return Err(CommandError::NotLatched);
                }
                // A reset would end the fire before anyone judged it, and it would never
                // be forwarded.
                if matches!(self.fire, Some(FireVerdict::Pending { .. })) {
                    return Err(CommandError::FireVerdictRequired);
                }
                if self.condition {
                    return Err(CommandError::ConditionPresent);
                }
                self.latched = false;
                self.active = false;
                self.acknowledged = true;
                self.silenced = false;
                Ok(Action::Reset)
            }
            Command::Suppress { until_ms } => {
                if *until_ms <= now || *until_ms - now > MAX_SUPPRESS_MS {
                    return Err(CommandError::BadSuppressTime);
                }
                self.suppressed_until = Some(*until_ms);
                Ok(Action::Suppressed)
            }
            Command::RemoveFromService { until_ms } => {
                let until = until_ms.unwrap_or(now + DEFAULT_OUT_OF_SERVICE_MS);
                if until <= now || until - now > MAX_SUPPRESS_MS {
                    return Err(CommandError::BadServiceTime);
                }
                self.out_of_service = true;
                self.out_of_service_until = Some(until);
                Ok(Action::RemovedFromService)
            }
            Command::ReturnToService => {
                if !self.out_of_service && self.suppressed_until.is_none() {
                    return Err(CommandError::InService);
                }
                self.out_of_service = false;
                self.out_of_service_until = None;
                self.suppressed_until = None;
                Ok(Action::ReturnedToService)
            }
            Command::ConfirmFire => match &self.fire {
                None => Err(CommandError::NotFire),
                Some(FireVerdict::Confirmed {
                    automatic: false, ..
                }) => Err(CommandError::AlreadyConfirmed),
                Some(_) => {
                    self.fire = Some(FireVerdict::Confirmed {
                        at_ms: now,
                        by: by.to_string(),
                        automatic: false,
                    });
                    Ok(Action::FireConfirmed)
                }
            },
            Command::FalseAlarm { reason } => match &self.fire {
                None => Err(CommandError::NotFire),
                Some(FireVerdict::FalseAlarm { .. }) => Err(CommandError::AlreadyFalseAlarm),
                Some(_) => {
                    self.fire = Some(FireVerdict::FalseAlarm {
                        at_ms: now,
                        by: by.to_string(),
                        reason: *reason,
                    });
                    Ok(Action::FalseAlarm)
                }
            },
        }
    }

    /// A fire level was reached while annunciated: the alarm waits for an operator's verdict
    /// until `timeout` has passed. A confirmation stands and a pending verdict keeps its
    /// countdown (an escalation within the same fire does not ask again), but a false alarm
    /// does not: the detector alarming again may be the real fire.
    pub fn await_fire_verdict(&mut self, now: Ms, timeout: Ms) {
        if matches!(self.fire, None | Some(FireVerdict::FalseAlarm { .. })) {
            self.fire = Some(FireVerdict::Pending {
                since_ms: now,
                due_ms: now + timeout,
            });
        }
    }

    /// Nobody judged the fire in time: it is treated as confirmed.
    pub fn confirm_fire_if_due(&mut self, now: Ms) -> Option<Action> {
        match self.fire {
            Some(FireVerdict::Pending { due_ms, .. }) if due_ms <= now => {
                self.fire = Some(FireVerdict::Confirmed {
                    at_ms: now,
                    by: "system".into(),
                    automatic: true,
                });
                self.changed_at = now;
                Some(Action::FireConfirmed)
            }
            _ => None,
        }
    }

    /// Ends shelving and maintenance windows whose time has come.
    pub fn tick(&mut self, now: Ms) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.shelved_until.is_some_and(|t| t <= now) {
            self.shelved_until = None;
            self.shelve_reason = None;
            self.changed_at = now;
            actions.push(Action::Unshelved);
        }
        if self.suppressed_until.is_some_and(|t| t <= now) {
            self.suppressed_until = None;
            self.changed_at = now;
            actions.push(Action::Unsuppressed);
        }
        if self.out_of_service_until.is_some_and(|t| t <= now) {
            self.out_of_service = false;
            self.out_of_service_until = None;
            self.changed_at = now;
            actions.push(Action::ReturnedToService);
        }
        actions
    }

    /// Silenced by the device (消音): shown on the board; the alarm stays as it is.
    pub fn silence(&mut self, now: Ms) -> Option<Action> {
        if !self.active || self.silenced {
            return None;
        }
        self.silenced = true;
        self.changed_at = now;
        Some(Action::Silenced)
    }

    /// After shelving, suppression or out-of-service ended: an alarm still active is
    /// annunciated again and needs a new acknowledgement.
    pub fn reannunciate(&mut self, now: Ms) -> Option<Action> {
        if !self.active
            || !self.annunciated()
            || self.level.map(|l| l.kind) == Some(AlarmKind::Event)
        {
            return None;
        }
        self.acknowledged = false;
        self.changed_at = now;
        Some(Action::Reannunciated)
    }

    /// The next time `tick` has something to do.
    pub fn deadline(&self) -> Option<Ms> {
        [
            self.shelved_until,
            self.suppressed_until,
            self.out_of_service_until,
            match self.fire {
                Some(FireVerdict::Pending { due_ms, .. }) => Some(due_ms),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alarm::Severity;

    fn level(index: u8, severity: Severity, latched: bool) -> Option<Level> {
        Some(Level {
            index,
            severity,
            kind: AlarmKind::Alarm,
            latched,
        })
    }

    #[test]
    fn raise_ack_clear_goes_unacknowledged_acknowledged_normal() {
        let mut a = Alarm::default();
        assert_eq!(a.state(), AlarmState::Normal);
        assert_eq!(
            a.on_condition(level(0, Severity::High, false), 1),
            Some(Action::Raised)
        );
        assert_eq!(a.state(), AlarmState::Unacknowledged);
        assert_eq!(
            a.command(&Command::Acknowledge, "op", 2),
            Ok(Action::Acknowledged)
        );
        assert_eq!(a.state(), AlarmState::Acknowledged);
        assert_eq!(a.on_condition(None, 3), Some(Action::Cleared));
        assert_eq!(a.state(), AlarmState::Normal);
    }

    #[test]
    fn clear_before_ack_returns_unacknowledged_and_ack_makes_it_normal() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::High, false), 1);
        assert_eq!(a.on_condition(None, 2), Some(Action::Cleared));
        assert_eq!(a.state(), AlarmState::ReturnedUnacknowledged);
        assert_eq!(
            a.command(&Command::Acknowledge, "op", 3),
            Ok(Action::Acknowledged)
        );
        assert_eq!(a.state(), AlarmState::Normal);
        assert_eq!(
            a.command(&Command::Acknowledge, "op", 4),
            Err(CommandError::NothingToAcknowledge)
        );
    }

    #[test]
    fn escalation_needs_a_new_acknowledgement_and_de_escalation_does_not() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::Low, false), 1);
        a.command(&Command::Acknowledge, "op", 2).expect("ack");
        assert_eq!(
            a.on_condition(level(2, Severity::Critical, false), 3),
            Some(Action::Escalated)
        );
        assert_eq!(a.state(), AlarmState::Unacknowledged);
        a.command(&Command::Acknowledge, "op", 4).expect("ack");
        assert_eq!(
            a.on_condition(level(1, Severity::High, false), 5),
            Some(Action::DeEscalated)
        );
        assert_eq!(a.state(), AlarmState::Acknowledged);
        assert_eq!(
            a.on_condition(level(1, Severity::High, false), 6),
            None,
            "same level: nothing"
        );
    }

    #[test]
    fn latched_alarm_stays_active_until_reset_after_the_value_returned() {
        let mut a = Alarm::default();
        a.on_condition(level(2, Severity::Critical, true), 1);
        assert_eq!(
            a.command(&Command::Reset, "op", 2),
            Err(CommandError::ConditionPresent)
        );
        assert_eq!(
            a.on_condition(level(1, Severity::High, false), 3),
            None,
            "holds the latched level"
        );
        assert_eq!(a.level.map(|l| l.index), Some(2));
        assert_eq!(a.on_condition(None, 4), Some(Action::ConditionCleared));
        assert!(a.active);
        a.command(&Command::Acknowledge, "op", 5).expect("ack");
        assert_eq!(a.state(), AlarmState::Acknowledged, "still active: latched");
        assert_eq!(a.command(&Command::Reset, "op", 6), Ok(Action::Reset));
        assert_eq!(a.state(), AlarmState::Normal);
        assert!(!a.latched);
    }

    #[test]
    fn latched_alarm_keeps_its_highest_level_when_the_condition_returns_lower() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::Low, false), 1);
        a.on_condition(level(2, Severity::Critical, true), 2);
        assert_eq!(a.on_condition(None, 3), Some(Action::ConditionCleared));
        // The gas rises again, only to a pre-alarm.
        assert_eq!(a.on_condition(level(0, Severity::Low, false), 4), None);
        assert_eq!(a.level.map(|l| l.severity), Some(Severity::Critical));
        assert!(a.condition);
        assert_eq!(
            a.command(&Command::Reset, "op", 5),
            Err(CommandError::ConditionPresent)
        );
        // And a lower level while the latched one is present does not lower it either.
        a.on_condition(level(2, Severity::Critical, true), 6);
        assert_eq!(a.on_condition(level(1, Severity::High, false), 7), None);
        assert_eq!(a.level.map(|l| l.index), Some(2));
    }

    #[test]
    fn reset_of_an_unlatched_alarm_is_refused() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::High, false), 1);
        assert_eq!(
            a.command(&Command::Reset, "op", 2),
            Err(CommandError::NotLatched)
        );
    }

    #[test]
    fn latched_alarm_whose_condition_returns_before_reset_is_annunciated_again() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::Critical, true), 1);
        a.on_condition(None, 2);
        a.command(&Command::Acknowledge, "op", 3).expect("ack");
        assert_eq!(
            a.on_condition(level(0, Severity::Critical, true), 4),
            Some(Action::Escalated)
        );
        assert_eq!(a.state(), AlarmState::Unacknowledged);
    }

    #[test]
    fn shelving_needs_a_reason_and_a_limited_time_and_ends_by_itself() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::High, false), 0);
        let shelve = |until_ms, reason: &str| Command::Shelve {
            until_ms,
            reason: reason.into(),
        };
        assert_eq!(
            a.command(&shelve(1000, " "), "op", 0),
            Err(CommandError::ReasonRequired)
        );
        assert_eq!(
            a.command(&shelve(0, "x"), "op", 0),
            Err(CommandError::BadShelveTime)
        );
        assert_eq!(
            a.command(&shelve(MAX_SHELVE_MS + 1, "x"), "op", 0),
            Err(CommandError::BadShelveTime)
        );
        assert_eq!(
            a.command(&shelve(60_000, "sensor being replaced"), "op", 0),
            Ok(Action::Shelved)
        );
        assert!(!a.annunciated());
        assert_eq!(a.deadline(), Some(60_000));
        assert!(a.tick(59_999).is_empty());
        assert_eq!(a.tick(60_000), vec![Action::Unshelved]);
        assert!(a.annunciated());
        assert_eq!(
            a.state(),
            AlarmState::Unacknowledged,
            "shelving does not acknowledge"
        );
        assert_eq!(
            a.command(&Command::Unshelve, "op", 1),
            Err(CommandError::NotShelved)
        );
    }

    #[test]
    fn operator_can_unshelve_early() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::High, false), 0);
        a.command(
            &Command::Shelve {
                until_ms: 10_000,
                reason: "r".into(),
            },
            "op",
            0,
        )
        .expect("shelve");
        assert_eq!(
            a.command(&Command::Unshelve, "op", 5),
            Ok(Action::Unshelved)
        );
        assert!(a.annunciated());
    }

    #[test]
    fn suppression_window_and_out_of_service_end_with_return_to_service() {
        let mut a = Alarm::default();
        assert_eq!(
            a.command(&Command::ReturnToService, "op", 0),
            Err(CommandError::InService)
        );
        assert_eq!(
            a.command(&Command::Suppress { until_ms: 0 }, "op", 0),
            Err(CommandError::BadSuppressTime)
        );
        assert_eq!(
            a.command(
                &Command::Suppress {
                    until_ms: 3_600_000
                },
                "op",
                0
            ),
            Ok(Action::Suppressed)
        );
        assert_eq!(
            a.on_condition(level(0, Severity::High, false), 10),
            Some(Action::Raised)
        );
        assert!(
            !a.annunciated(),
            "raised during maintenance: evaluated, not annunciated"
        );
        assert_eq!(a.tick(3_600_000), vec![Action::Unsuppressed]);
        assert!(a.annunciated());
        let remove = Command::RemoveFromService {
            until_ms: Some(3_700_000),
        };
        assert_eq!(
            a.command(&remove, "op", 3_600_001),
            Ok(Action::RemovedFromService)
        );
        assert!(!a.annunciated());
        assert_eq!(
            a.command(&Command::ReturnToService, "op", 3_600_002),
            Ok(Action::ReturnedToService)
        );
        assert!(a.annunciated());
    }

    #[test]
    fn out_of_service_ends_by_itself_and_an_active_alarm_is_annunciated_again() {
        let mut a = Alarm::default();
        a.on_condition(level(0, Severity::High, false), 1);
        a.command(&Command::Acknowledge, "op", 2).expect("ack");
        let remove = Command::RemoveFromService { until_ms: None };
        a.command(&remove, "op", 3).expect("out of service");
        assert_eq!(a.deadline(), Some(3 + DEFAULT_OUT_OF_SERVICE_MS));
        assert_eq!(
            a.tick(3 + DEFAULT_OUT_OF_SERVICE_MS),
            vec![Action::ReturnedToService]
        );
        assert_eq!(
            a.reannunciate(3 + DEFAULT_OUT_OF_SERVICE_MS),
            Some(Action::Reannunciated)
        );
        assert_eq!(
            a.state(),
            AlarmState::Unacknowledged,
            "to be acknowledged anew"
        );
        let far = Command::RemoveFromService {
            until_ms: Some(10 + MAX_SUPPRESS_MS + 1),
        };
        assert_eq!(a.command(&far, "op", 10), Err(CommandError::BadServiceTime));
    }

    #[test]
    fn only_active_alarms_can_be_shelved() {
        let mut a = Alarm::default();
        let shelve = Command::Shelve {
            until_ms: 1000,
            reason: "maintenance".into(),
        };
        assert_eq!(a.command(&shelve, "op", 1), Err(CommandError::NotActive));
        a.on_condition(level(0, Severity::High, false), 2);
        assert_eq!(a.command(&shelve, "op", 3), Ok(Action::Shelved));
    }

    #[test]
    fn silencing_marks_the_alarm_and_does_not_end_it() {
        let mut a = Alarm::default();
        assert_eq!(a.silence(1), None, "nothing to silence");
        a.on_condition(level(0, Severity::Critical, true), 2);
        assert_eq!(a.silence(3), Some(Action::Silenced));
        assert!(a.active && a.condition && a.silenced);
        assert_eq!(a.silence(4), None, "once");
        assert_eq!(
            a.command(&Command::Reset, "op", 5),
            Err(CommandError::ConditionPresent)
        );
    }

    #[test]
    fn events_are_acknowledged_as_they_happen() {
        let mut a = Alarm::default();
        let event = Some(Level {
            index: 0,
            severity: Severity::Low,
            kind: AlarmKind::Event,
            latched: false,
        });
        a.on_condition(event, 1);
        assert_eq!(a.state(), AlarmState::Acknowledged);
        a.on_condition(None, 2);
        assert_eq!(a.state(), AlarmState::Normal);
    }
}
