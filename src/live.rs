//! The latest value of every quantity of every device, and when each device was last heard:
//! what the web UI's device list shows.
//!
//! Owns: that table, written by the dispatcher for every message and read by the web. Must not
//! touch: anything downstream; writing is one short lock per message and never waits on IO.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use crate::model::{Quality, Reading, Value};

/// One quantity's latest reading.
#[derive(Debug, Clone, Serialize)]
pub struct LatestValue {
    /// A number, `true`/`false`, or text, as the device sent it.
    pub value: serde_json::Value,
    pub unit: Option<String>,
    pub quality: &'static str,
    pub at_ms: i64,
}

/// A device's latest readings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceLatest {
    /// When the newest reading of the device was taken (device time where it sends one).
    pub last_seen_ms: Option<i64>,
    pub values: BTreeMap<String, LatestValue>,
}

#[derive(Default)]
pub struct LatestValues {
    devices: Mutex<HashMap<String, DeviceLatest>>,
}

impl LatestValues {
    pub fn update(&self, readings: &[Reading]) {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for r in readings {
            let at_ms = r.timestamp_ns / 1_000_000;
            let device = match devices.get_mut(&r.tags.device) {
                Some(d) => d,
                None => devices.entry(r.tags.device.clone()).or_default(),
            };
            if device.last_seen_ms.is_none_or(|seen| at_ms >= seen) {
                device.last_seen_ms = Some(at_ms);
            }
            if r.quality != Quality::Good && r.quality != Quality::Invalid {
                // A failed poll says nothing new about the value; the device's status shows it.
                continue;
            }
            let value = match &r.value {
                Value::Float(v) => serde_json::Number::from_f64(*v)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
                Value::Int(v) => serde_json::Value::from(*v),
                Value::Bool(v) => serde_json::Value::Bool(*v),
                Value::Text(t) => serde_json::Value::String(t.to_string()),
            };
            let latest = LatestValue {
                value,
                unit: r.unit.as_deref().map(str::to_string),
                quality: r.quality.as_str(),
                at_ms,
            };
            match device.values.get_mut(&*r.quantity) {
                Some(slot) if slot.at_ms <= at_ms => *slot = latest,
                Some(_) => {}
                None => {
                    device.values.insert(r.quantity.to_string(), latest);
                }
            }
        }
    }

    pub fn all(&self) -> HashMap<String, DeviceLatest> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn seen(&self, id: &str) -> bool {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.get(id).is_some_and(|d| d.last_seen_ms.is_some())
    }
}
