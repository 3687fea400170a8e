//! The live board's source: follows the rules' transitions, keeps the current set of alarms
//! that are not normal and each device's status, and fans both out to every server-sent-events
//! client as pre-serialized events.
//!
//! Owns: that snapshot. Must not touch: alarm state itself (the rules task owns it) or the
//! store; it only reads the rules' feed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::AlarmKind;
use crate::live::LatestValues;
use crate::rules::alarm::AlarmState;
use crate::rules::engine::AlarmView;
use crate::rules_task::{AlarmEventView, RulesHandle};

/// Events a slow SSE client may fall behind by before it is told to reload.
const EVENT_BACKLOG: usize = 4096;

/// A device's condition as the device list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Nothing heard from it since the daemon started, and no alarm.
    Unknown,
    Ok,
    /// An alarm or pre-alarm is active.
    Alarm,
    /// A fault (sensor open, CT open, device self-reported fault) is active.
    Fault,
    /// It stopped answering or reporting (comm loss, missed heartbeats).
    Offline,
    /// Its alarms are suppressed, shelved or out of service (maintenance).
    Suppressed,
}

/// The status of a device given its alarms that are not normal (pure).
pub fn device_status<'a>(alarms: impl Iterator<Item = &'a AlarmView>, seen: bool) -> DeviceStatus {
    let mut status = if seen {
        DeviceStatus::Ok
    } else {
        DeviceStatus::Unknown
    };
    let rank = |s: DeviceStatus| match s {
        DeviceStatus::Unknown | DeviceStatus::Ok => 0,
        DeviceStatus::Suppressed => 1,
        DeviceStatus::Alarm => 2,
        DeviceStatus::Fault => 3,
        DeviceStatus::Offline => 4,
    };
    for a in alarms {
        let hidden = a.shelved_until_ms.is_some()
            || a.suppressed_until_ms.is_some()
            || a.out_of_service
            || a.maintenance.is_some();
        let active = matches!(
            a.state,
            AlarmState::Unacknowledged | AlarmState::Acknowledged
        );
        let this = if hidden {
            DeviceStatus::Suppressed
        } else if !active {
            continue;
        } else if a.comm_loss {
            DeviceStatus::Offline
        } else if a.kind == Some(AlarmKind::Fault) {
            DeviceStatus::Fault
        } else if matches!(a.kind, Some(AlarmKind::Event | AlarmKind::Test) | None) {
            continue;
        } else {
            DeviceStatus::Alarm
        };
        if rank(this) > rank(status) {
            status = this;
        }
    }
    status
}

fn is_normal(a: &AlarmView) -> bool {
    a.state == AlarmState::Normal
        && a.shelved_until_ms.is_none()
        && a.suppressed_until_ms.is_none()
        && !a.out_of_service
        && a.maintenance.is_none()
}

/// One server-sent event, serialized once for every client.
#[derive(Debug)]
pub struct WebEvent {
    /// `alarm`, `device` or `resync`.
    pub name: &'static str,
    pub data: String,
}

#[derive(Serialize)]
struct DeviceEvent<'a> {
    device: &'a str,
    status: DeviceStatus,
}

pub struct Hub {
    alarms: RwLock<HashMap<String, AlarmView>>,
    statuses: RwLock<HashMap<String, DeviceStatus>>,
    events: broadcast::Sender<Arc<WebEvent>>,
    latest: Arc<LatestValues>,
}

impl Hub {
    /// Starts following the rules. The task ends with `cancel` or when the rules stop.
    pub fn start(
        rules: RulesHandle,
        latest: Arc<LatestValues>,
        cancel: CancellationToken,
    ) -> (Arc<Hub>, JoinHandle<()>) {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let hub = Arc::new(Hub {
            alarms: RwLock::new(HashMap::new()),
            statuses: RwLock::new(HashMap::new()),
            events,
            latest,
        });
        let follower = Arc::clone(&hub);
        let task = tokio::spawn(async move {
            // Subscribe before reading the list, so that nothing falls between the two.
            let mut feed = rules.subscribe();
            follower.reseed(rules.alarms().await);
            loop {
                let next = tokio::select! {
                    next = feed.recv() => next,
                    _ = cancel.cancelled() => break,
                };
                match next {
                    Ok(transition) => follower.apply(&transition),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "The live board fell behind the rules; re-reading.");
                        follower.reseed(rules.alarms().await);
                        follower.send("resync", "{}".to_string());
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        (hub, task)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WebEvent>> {
        self.events.subscribe()
    }

    pub fn clients(&self) -> usize {
        self.events.receiver_count()
    }

    /// Alarms that are not normal, most severe and newest first.
    pub fn alarms(&self) -> Vec<AlarmView> {
        let mut list: Vec<AlarmView> = self.read_alarms().values().cloned().collect();
        list.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.changed_at_ms.cmp(&a.changed_at_ms))
                .then(a.key.cmp(&b.key))
        });
        list
    }

    fn read_alarms(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, AlarmView>> {
        self.alarms.read().unwrap_or_else(|e| e.into_inner())
    }

    fn compute_status(&self, device: &str) -> DeviceStatus {
        let alarms = self.read_alarms();
        device_status(
            alarms.values().filter(|a| a.device == device),
            self.latest.seen(device),
        )
    }

    fn reseed(&self, alarms: Vec<AlarmView>) {
        let map = alarms.into_iter().map(|a| (a.key.clone(), a)).collect();
        *self.alarms.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.statuses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn apply(&self, transition: &AlarmEventView) {
        let alarm = &transition.alarm;
        {
            let mut alarms = self.alarms.write().unwrap_or_else(|e| e.into_inner());
            if is_normal(alarm) {
                alarms.remove(&alarm.key);
            } else {
                alarms.insert(alarm.key.clone(), alarm.clone());
            }
        }
        if let Ok(data) = serde_json::to_string(transition) {
            self.send("alarm", data);
        }
        let status = self.compute_status(&alarm.device);
        let changed = self
            .statuses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alarm.device.clone(), status)
            != Some(status);
        if changed {
            let event = DeviceEvent {
                device: &alarm.device,
                status,
            };
            if let Ok(data) = serde_json::to_string(&event) {
                self.send("device", data);
            }
        }
    }

    fn send(&self, name: &'static str, data: String) {
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Arc::new(WebEvent { name, data }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    fn view(kind: AlarmKind, state: AlarmState) -> AlarmView {
        AlarmView {
            key: "R1/d".into(),
            rule: "R1".into(),
            rule_name: "r".into(),
            rule_name_zh: None,
            park: "p".into(),
            enterprise: "e".into(),
            location: "l".into(),
            device: "d".into(),
            source: String::new(),
            state,
            condition: true,
            severity: Some(Severity::High),
            kind: Some(kind),
            value: None,
            threshold: None,
            latched: false,
            comm_loss: false,
            shelved_until_ms: None,
            shelve_reason: None,
            suppressed_until_ms: None,
            out_of_service: false,
            out_of_service_until_ms: None,
            maintenance: None,
            chattering: false,
            silenced: false,
            shelvable: true,
            raised_at_ms: None,
            changed_at_ms: 0,
            linkage: Vec::new(),
            reset_pending: false,
            fire: None,
        }
    }

    #[test]
    fn active_fault_outranks_an_active_alarm() {
        let alarms = [
            view(AlarmKind::Alarm, AlarmState::Unacknowledged),
            view(AlarmKind::Fault, AlarmState::Acknowledged),
        ];
        assert_eq!(device_status(alarms.iter(), true), DeviceStatus::Fault);
    }

    #[test]
    fn comm_loss_makes_a_device_offline() {
        let mut a = view(AlarmKind::Fault, AlarmState::Unacknowledged);
        a.comm_loss = true;
        assert_eq!(device_status([a].iter(), true), DeviceStatus::Offline);
    }

    #[test]
    fn returned_unacknowledged_alarm_leaves_the_device_ok() {
        let a = view(AlarmKind::Alarm, AlarmState::ReturnedUnacknowledged);
        assert_eq!(device_status([a].iter(), true), DeviceStatus::Ok);
    }

    #[test]
    fn suppressed_alarm_marks_the_device_suppressed() {
        let mut a = view(AlarmKind::Alarm, AlarmState::Unacknowledged);
        a.suppressed_until_ms = Some(1);
        assert_eq!(device_status([a].iter(), true), DeviceStatus::Suppressed);
    }

    #[test]
    fn device_never_heard_from_is_unknown() {
        assert_eq!(device_status([].iter(), false), DeviceStatus::Unknown);
    }
}
