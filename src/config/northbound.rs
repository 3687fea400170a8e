//! `[[northbound]]`: links that forward fires and the facilities' state to an urban fire
//! remote-monitoring centre (城市消防远程监控中心), with their checks. Today one type,
//! `gb26875`: parkguard acts as the centre's user information transmission device (用户信息传输
//! 装置) over the GB/T 26875.3 protocol.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::site::unique_ids;
use super::DeviceConfig;

/// The protocol of a northbound link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NorthboundType {
    /// GB/T 26875.3-2011 over TCP: parkguard is the user information transmission device.
    Gb26875,
}

/// When a fire goes to the centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFires {
    /// Once confirmed on the board, or when nobody judged it within `fire.confirm_timeout_s`
    /// (the premises confirm; the centre forwards what it gets to 119). A false alarm is then
    /// reported as an operation record "alarm cleared" and never as a fire.
    #[default]
    Confirmed,
    /// When it is raised (the centre confirms by phone): the verdict follows as an operation
    /// record ("confirm", or "alarm cleared" for a false alarm).
    AtOnce,
}

/// `[[northbound]]`: one monitoring centre.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NorthboundConfig {
    /// Name, shown on the web UI and in logs and metrics; gateway fault G12 names it.
    pub name: String,
    /// `gb26875`.
    #[serde(rename = "type")]
    pub kind: NorthboundType,
    /// The centre's receiving server, `host:port`, as the centre gives it at registration.
    pub centre: String,
    /// The centre's address (6 bytes, the frames' destination), as a decimal number.
    #[serde(default)]
    pub centre_address: u64,
    /// This gateway's address as a transmission device (6 bytes, the frames' source), as the
    /// centre assigned it at registration, as a decimal number.
    pub device_address: u64,
    /// The user version byte of the protocol version (the main version is always 1).
    #[serde(default)]
    pub user_version: u8,
    /// Seconds to wait for the centre's confirmation of a frame before it is sent again
    /// (the standard: at most 10).
    #[serde(default = "default_answer_timeout_s")]
    pub answer_timeout_s: f64,
    /// Sends of one frame (the first and the repeats) before its transmission counts as
    /// failed: gateway fault G12 is raised at once, the connection is opened again, and the
    /// frame stays first in the queue (the standard: 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// `confirmed` (default) or `at_once`: when a fire is sent.
    #[serde(default)]
    pub send_fires: SendFires,
    /// Seconds between reports of the gateway's own run state, which also show the centre
    /// the link is alive; 0: none (states and fires are sent as they change either way).
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// Offset of the local time written into the frames' time tags from UTC, in minutes
    /// (China: 480).
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// Only devices of these enterprises (ids) are reported; empty: every device.
    #[serde(default)]
    pub enterprises: Vec<String>,
    /// How devices are addressed towards the centre. Devices not listed get defaults by
    /// kind: smoke detectors system type 1 (fire alarm system), component type 42 (point
    /// photoelectric smoke detector); gas detectors system type 1, component type 11 (point
    /// combustible-gas detector); other devices system type 0 (general), component type 17
    /// (residual-current electrical fire detector); system address 1; component address
    /// the device's position in `[[devices]]`, counting from 1; description its name.
    #[serde(default)]
    pub components: Vec<ComponentConfig>,
}

/// `[[northbound.components]]`: one device's address towards the centre.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The device (`[[devices]] id`).
    pub device: String,
    /// System type (0 general, 1 fire alarm system, 10 linkage controller, 128-255
    /// user-defined, ...).
    #[serde(default)]
    pub system_type: Option<u8>,
    /// System address, 0-255.
    #[serde(default)]
    pub system_address: Option<u8>,
    /// Component type (11 point gas detector, 17 residual-current and 18 temperature
    /// electrical fire detectors, 42 point photoelectric smoke detector, ...).
    #[serde(default)]
    pub component_type: Option<u8>,
    /// Component address, 0 to 4294967295.
    #[serde(default)]
    pub component_address: Option<u32>,
    /// What the centre shows for it: at most 31 bytes in GB18030 (15 Chinese characters).
    #[serde(default)]
    pub description: Option<String>,
}

fn default_answer_timeout_s() -> f64 {
    10.0
}

fn default_attempts() -> u32 {
    3
}

fn default_heartbeat_s() -> u64 {
    60
}

fn default_utc_offset_minutes() -> i32 {
    480
}

/// Where a device is towards the centre: its system and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentAddress {
    pub system_type: u8,
    pub system_address: u8,
    pub component_type: u8,
    pub component_address: u32,
}

impl NorthboundConfig {
    /// The address of the device at `position` (from 0) in `[[devices]]`, of `kind`:
    /// `[[northbound.components]]` where it says, the defaults by kind otherwise.
    pub fn component_address(
        &self,
        position: usize,
        device: &DeviceConfig,
        kind: &str,
    ) -> ComponentAddress {
        let (system_type, component_type) = match kind {
            "smoke" => (1, 42),
            "gas" => (1, 11),
            _ => (0, 17),
        };
        let given = self.components.iter().find(|c| c.device == device.id);
        ComponentAddress {
            system_type: given.and_then(|g| g.system_type).unwrap_or(system_type),
            system_address: given.and_then(|g| g.system_address).unwrap_or(1),
            component_type: given
                .and_then(|g| g.component_type)
                .unwrap_or(component_type),
            component_address: given
                .and_then(|g| g.component_address)
                .unwrap_or(position as u32 + 1),
        }
    }
}

/// The largest 6-byte address.
pub const MAX_ADDRESS: u64 = (1 << 48) - 1;

/// The bytes of `text` in GB18030, the standard's character set.
pub fn gb18030(text: &str) -> Vec<u8> {
    let (bytes, _, _) = encoding_rs::GB18030.encode(text);
    bytes.into_owned()
}

pub(super) fn validate_northbound(
    northbound: &[NorthboundConfig],
    devices: &[DeviceConfig],
    kind_of: &dyn Fn(&DeviceConfig) -> String,
    enterprises: &BTreeSet<&str>,
    report: &mut dyn FnMut(String, String),
) {
    unique_ids(northbound.iter().map(|n| &n.name), "northbound", report);
    for (i, n) in northbound.iter().enumerate() {
        let at = |key: &str| format!("northbound[{i}].{key}");
        match n.centre.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => report(at("centre"), format!("`{}` is not host:port", n.centre)),
        }
        for (key, address) in [
            ("centre_address", n.centre_address),
            ("device_address", n.device_address),
        ] {
            if address > MAX_ADDRESS {
                report(at(key), format!("{address} does not fit in 6 bytes"));
            }
        }
        if !(n.answer_timeout_s >= 0.5 && n.answer_timeout_s <= 60.0) {
            report(at("answer_timeout_s"), "must be 0.5 to 60".into());
        }
        if !(1..=10).contains(&n.attempts) {
            report(at("attempts"), "must be 1 to 10".into());
        }
        if n.utc_offset_minutes.abs() > 14 * 60 {
            report(at("utc_offset_minutes"), "must be within ±840".into());
        }
        for e in &n.enterprises {
            if !enterprises.contains(e.as_str()) {
                report(at("enterprises"), format!("no enterprise `{e}`"));
            }
        }
        // Two devices at one address: the centre would show one's fire at the other's place.
        let mut addresses = std::collections::BTreeMap::new();
        for (position, d) in devices.iter().enumerate() {
            let a = n.component_address(position, d, &kind_of(d));
            let place = (a.system_type, a.system_address, a.component_address);
            if let Some(other) = addresses.insert(place, d.id.as_str()) {
                report(
                    at("components"),
                    format!(
                        "devices `{other}` and `{}` have the same address (system type {}, system address {}, component address {}); give each its own `component_address`",
                        d.id, place.0, place.1, place.2
                    ),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (c, component) in n.components.iter().enumerate() {
            let at = |key: &str| format!("northbound[{i}].components[{c}].{key}");
            if !devices.iter().any(|d| d.id == component.device) {
                report(at("device"), format!("no device `{}`", component.device));
            }
            if !seen.insert(component.device.as_str()) {
                report(
                    at("device"),
                    format!("`{}` is listed twice", component.device),
                );
            }
            if let Some(d) = &component.description {
                let bytes = gb18030(d).len();
                if bytes > 31 {
                    report(
                        at("description"),
                        format!("{bytes} bytes in GB18030; at most 31 (15 Chinese characters)"),
                    );
                }
            }
        }
    }
}
