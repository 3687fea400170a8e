//! The latest value of every quantity of every device, and when each device was last heard:
//! what the web UI's device list shows.
//!
//! Owns: that table, written by the dispatcher for every message and read by the web. Must not
//! touch: anything downstream; writing is one short lock per message and never waits on IO.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::model::{Quality, Reading, Value};

/// One quantity's latest reading. Kept compact (names and units shared with the decoder,
/// no JSON values): a gateway holds one per quantity of each of up to 10,000 devices.
#[derive(Debug, Clone, Serialize)]
pub struct LatestValue {
    /// A number, `true`/`false`, or text, as the device sent it; `null` for a number that is
    /// not finite.
    #[serde(serialize_with = "value_as_json")]
    pub value: Value,
    #[serde(serialize_with = "optional_text")]
    pub unit: Option<Arc<str>>,
    #[serde(serialize_with = "quality_name")]
    pub quality: Quality,
    pub at_ms: i64,
}

fn value_as_json<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Value::Float(v) if v.is_finite() => s.serialize_f64(*v),
        Value::Float(_) => s.serialize_none(),
        Value::Int(v) => s.serialize_i64(*v),
        Value::Bool(v) => s.serialize_bool(*v),
        Value::Text(t) => s.serialize_str(t),
    }
}

fn optional_text<S: Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => s.serialize_str(t),
        None => s.serialize_none(),
    }
}

fn quality_name<S: Serializer>(quality: &Quality, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(quality.as_str())
}

/// A device's latest readings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceLatest {
    /// When the newest reading of the device was taken (device time where it sends one).
    pub last_seen_ms: Option<i64>,
    /// By quantity, in name order (an object in JSON).
    #[serde(serialize_with = "as_object")]
    pub values: Vec<(Arc<str>, LatestValue)>,
}

fn as_object<S: Serializer>(values: &[(Arc<str>, LatestValue)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(values.len()))?;
    for (quantity, value) in values {
        map.serialize_entry(&**quantity, value)?;
    }
    map.end()
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
            let latest = LatestValue {
                value: r.value.clone(),
                unit: r.unit.clone(),
                quality: r.quality,
                at_ms,
            };
            match device
                .values
                .binary_search_by(|(q, _)| (**q).cmp(&*r.quantity))
            {
                Ok(k) if device.values[k].1.at_ms <= at_ms => device.values[k].1 = latest,
                Ok(_) => {}
                Err(k) => {
                    device.values.insert(k, (Arc::clone(&r.quantity), latest));
                    // Quantities are added a few times per device, ever: no room kept spare.
                    device.values.shrink_to_fit();
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
