//! The vocabulary every stage speaks: readings, their values and quality, the site tags that
//! place a device in its park, undecodable messages and the acknowledgements devices wait for,
//! time in milliseconds and the clock, and (in [`alarm`]) alarms, their states and events.
//!
//! Owns: plain data types, and reading the wall clock. Must not touch: tokio, IO, configuration
//! parsing, or any other module of this crate, so that each stage can be tested on its own with
//! these types.

pub mod alarm;

use std::fmt;
use std::sync::Arc;

/// Milliseconds since the Unix epoch: the rules' injected clock, the journal's and the store's
/// times.
pub type Ms = i64;

/// Nanoseconds since the Unix epoch, UTC. InfluxDB's native precision, so no conversion at the sink.
pub type TimestampNs = i64;

/// Readings of one message or poll, shared by every downstream consumer without copying.
pub type ReadingBatch = Arc<[Reading]>;

/// One measured quantity of one device at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Where the reading belongs: shared by all readings of one message, hence the `Arc`.
    pub tags: Arc<Tags>,
    /// InfluxDB measurement the reading is written to (the device kind by default).
    pub measurement: Arc<str>,
    /// Name of the quantity, e.g. `leakage_ma`, `t1`, `smoke_pct`; becomes the field key.
    pub quantity: Arc<str>,
    pub value: Value,
    /// Engineering unit, for display only; the field key carries the meaning in storage.
    pub unit: Option<Arc<str>>,
    pub timestamp_ns: TimestampNs,
    pub quality: Quality,
}

/// A reading's value. Integers stay integers so that counters and status words are exact.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Text(Arc<str>),
}

impl Value {
    /// The value as a number for threshold rules; text has none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            Value::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => f.write_str(v),
        }
    }
}

/// How far a reading can be trusted. Only `Good` values feed thresholds; the others feed faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Good,
    /// The device could not be reached (Modbus timeout, exception, offline).
    CommError,
    /// The last value is older than the device's reporting deadline.
    Stale,
    /// The device answered, but the value is impossible or a sensor-open sentinel.
    Invalid,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::CommError => "comm_error",
            Quality::Stale => "stale",
            Quality::Invalid => "invalid",
        }
    }
}

/// Where a device sits in the site hierarchy (park -> enterprise -> location -> device), plus
/// any extra tags taken from topic levels. Every field becomes an InfluxDB tag when non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Tags {
    pub park: String,
    pub enterprise: String,
    pub location: String,
    pub device: String,
    /// Device kind, e.g. `meter`, `smoke`, `gas`, `detector`.
    pub kind: String,
    /// Device profile (model and firmware) the reading was decoded with.
    pub profile: String,
    /// Further tags, sorted by key, e.g. named topic levels that are not part of the hierarchy.
    pub extra: Vec<(String, String)>,
}

impl Tags {
    /// Calls `f` for every tag in key order (the order InfluxDB recommends for writes), empty
    /// values left out, without allocating: this runs once per line written.
    pub fn for_each_pair<'a>(&'a self, mut f: impl FnMut(&'a str, &'a str)) {
        // Already in key order; `extra` is kept sorted by whoever builds the tags.
        let fixed = [
            ("device", self.device.as_str()),
            ("enterprise", self.enterprise.as_str()),
            ("kind", self.kind.as_str()),
            ("location", self.location.as_str()),
            ("park", self.park.as_str()),
            ("profile", self.profile.as_str()),
        ];
        let mut extra = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .peekable();
        for (key, value) in fixed {
            while let Some(&(ek, ev)) = extra.peek() {
                if ek >= key {
                    break;
                }
                if !ev.is_empty() {
                    f(ek, ev);
                }
                extra.next();
            }
            if !value.is_empty() {
                f(key, value);
            }
        }
        for (ek, ev) in extra {
            if !ev.is_empty() {
                f(ek, ev);
            }
        }
    }

    /// All tags as key/value pairs in key order, empty values left out.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = Vec::with_capacity(6 + self.extra.len());
        self.for_each_pair(|k, v| pairs.push((k, v)));
        pairs
    }
}

/// Current wall-clock time in nanoseconds. Lives here so stages that must not read the clock
/// themselves (decode, rules) can be handed a time by their callers.
pub fn now_ns() -> TimestampNs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Wall-clock milliseconds since the Unix epoch: the rule engine's and the journal's clock in
/// the daemon.
pub fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

/// A wall-clock date and time (no zone: the offset is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl CivilTime {
    /// The time at `offset_minutes` from UTC.
    pub fn at(at_ms: i64, offset_minutes: i32) -> CivilTime {
        let secs = at_ms.div_euclid(1000) + i64::from(offset_minutes) * 60;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        CivilTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// Milliseconds since the epoch of this time at `offset_minutes` from UTC; `None` for a
    /// date that does not exist.
    pub fn to_ms(self, offset_minutes: i32) -> Option<i64> {
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0) => 29,
            2 => 28,
            _ => return None,
        };
        if self.day == 0 || self.day > days_in_month || self.hour > 23 || self.minute > 59 {
            return None;
        }
        if self.second > 59 {
            return None;
        }
        // Days from civil (the inverse of `at`).
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = self.year - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(offset_minutes) * 60;
        Some(secs * 1000)
    }
}

/// `YYYY-MM-DD HH:MM:SS` at `offset_minutes` from UTC, with the offset.
pub fn local_time(at_ms: i64, offset_minutes: i32) -> String {
    let t = CivilTime::at(at_ms, offset_minutes);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let off = offset_minutes.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}:{:02}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_round_trips_and_refuses_dates_that_do_not_exist() {
        // 2026-12-02 15:04:05 +08:00
        let at = 1_796_195_045_000;
        let t = CivilTime::at(at, 480);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2026, 12, 2, 15, 4, 5)
        );
        assert_eq!(t.to_ms(480), Some(at));
        for ms in [0, 951_782_400_000, 4_107_542_399_000, -86_400_000] {
            assert_eq!(CivilTime::at(ms, -300).to_ms(-300), Some(ms), "{ms}");
        }
        let feb29 = |year| CivilTime {
            year,
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert!(feb29(2028).to_ms(0).is_some());
        assert!(feb29(2026).to_ms(0).is_none());
        assert!(feb29(2100).to_ms(0).is_none());
    }

    #[test]
    fn tag_pairs_merge_extra_tags_in_key_order_and_skip_empty_values() {
        let tags = Tags {
            park: "p".into(),
            device: "d".into(),
            extra: vec![
                ("a".into(), "1".into()),
                ("floor".into(), "".into()),
                ("line".into(), "2".into()),
                ("zone".into(), "3".into()),
            ],
            ..Tags::default()
        };
        let keys: Vec<&str> = tags.pairs().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "device", "line", "park", "zone"]);
    }
}

/// A message that could not be decoded, kept (its first bytes) for the technician.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BadMessage {
    pub at_ms: i64,
    /// Where it came from: `mqtt/<connection>/<topic>`.
    pub source: String,
    /// The decode error's reason (`bad_json`, `too_large`, ...).
    pub reason: String,
    pub detail: String,
    /// The payload's first bytes.
    #[serde(with = "lossy_text")]
    pub payload: Vec<u8>,
}

mod lossy_text {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(bytes))
    }
}

/// An acknowledgement a device waits for on its downlink (a detector retransmits its alarm
/// until it gets one): what to publish on which MQTT connection, or which command to send
/// through a carrier platform's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAck {
    /// A QoS 1 publish on an `[[mqtt]]` connection.
    Mqtt {
        connection: String,
        topic: String,
        payload: Vec<u8>,
    },
    /// A command through an `[[http_ingest]]` endpoint's platform API, to the platform's
    /// device id (CTWing `deviceId`, OneNET Studio `deviceName`).
    Platform {
        endpoint: String,
        device_id: String,
        command: DeviceCommand,
    },
}

impl DeviceAck {
    /// Where it goes, for logs: the topic, or `endpoint/device`.
    pub fn target(&self) -> String {
        match self {
            DeviceAck::Mqtt { topic, .. } => topic.clone(),
            DeviceAck::Platform {
                endpoint,
                device_id,
                ..
            } => format!("{endpoint}/{device_id}"),
        }
    }
}

/// What a command through a carrier platform's API asks of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// A thing-model service call: CTWing `{serviceIdentifier, params}`, OneNET
    /// `call-service` with `identifier` and `params`.
    Service {
        identifier: String,
        params: serde_json::Map<String, serde_json::Value>,
    },
    /// The device's own bytes, for a CTWing transparent product (`dataType` 2, hex).
    Bytes(Vec<u8>),
}
