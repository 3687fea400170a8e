//! `[[modbus]]`: the Modbus endpoints to poll (TCP, RTU on a serial line, RTU over TCP), their
//! serial settings and units.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::site::unique_ids;
use super::{DeviceConfig, References};

/// How a Modbus endpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModbusTransport {
    /// Modbus TCP (MBAP framing).
    Tcp,
    /// Modbus RTU frames (with CRC) over a TCP connection: a serial server or 4G DTU in
    /// transparent mode, carrying a whole RS-485 bus.
    RtuOverTcp,
    /// Modbus RTU on a local serial port (an RS-485 adapter), set up by `[modbus.serial]`.
    Rtu,
}

impl ModbusTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            ModbusTransport::Tcp => "tcp",
            ModbusTransport::RtuOverTcp => "rtu_over_tcp",
            ModbusTransport::Rtu => "rtu",
        }
    }
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (the factory setting of many meters).
    #[default]
    None,
    /// An even parity bit after the data bits (the Modbus standard's default).
    Even,
    /// An odd parity bit after the data bits.
    Odd,
}

/// `[modbus.serial]`: line settings of an RS-485 port, for `transport = "rtu"`. They must
/// match every unit on the bus; `parkguard modbus scan` finds them when they are unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Bits per second, 300 to 921600; most meters ship at 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `none`, `even` or `odd`. The Modbus standard asks for even; many Chinese meters
    /// default to none.
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8; RTU framing needs 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2. The standard uses 2 stop bits when there is no parity; devices accept 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
        }
    }
}

impl SerialConfig {
    /// The silence that ends an RTU frame: 3.5 characters, and at least 1.75 ms above
    /// 19200 baud (Modbus over serial line, 2.5.1.1).
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19_200 {
            return Duration::from_micros(1750);
        }
        let bits_per_char = 1
            + u64::from(self.data_bits)
            + u64::from(self.parity != Parity::None)
            + u64::from(self.stop_bits);
        Duration::from_micros(bits_per_char * 3_500_000 / u64::from(self.baud.max(1)))
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// Everything needed to open a Modbus connection: the part of `[[modbus]]` that the
/// commissioning tools also take from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusLink {
    pub transport: ModbusTransport,
    /// `host:port` for TCP transports, the serial device path for `rtu`.
    pub address: String,
    pub serial: SerialConfig,
}

impl ModbusLink {
    pub fn tcp(address: impl Into<String>) -> Self {
        ModbusLink {
            transport: ModbusTransport::Tcp,
            address: address.into(),
            serial: SerialConfig::default(),
        }
    }
}

/// `[[modbus]]`: one connection, carrying one or more units (slave ids). Requests on one
/// connection are strictly one at a time, as on the RS-485 bus behind a serial server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Name of the connection, used in logs and metrics.
    pub name: String,
    /// `tcp`, `rtu_over_tcp` or `rtu`.
    pub transport: ModbusTransport,
    /// `host:port` of the device or serial server (e.g. `192.168.10.21:502`), or for `rtu`
    /// the serial device (e.g. `/dev/ttyUSB0`, better a stable `/dev/serial/by-id/...` path).
    pub address: String,
    /// Line settings for `transport = "rtu"` (default 9600 baud, 8 data bits, no parity,
    /// 1 stop bit).
    #[serde(default)]
    pub serial: Option<SerialConfig>,
    /// Milliseconds one request (or opening the connection) may take before it counts as
    /// failed.
    #[serde(default = "default_modbus_timeout_ms")]
    pub timeout_ms: u64,
    /// Milliseconds of quiet between two requests on this connection, for slow devices and
    /// serial servers that need it. On `rtu` the 3.5-character frame gap is always kept in
    /// addition.
    #[serde(default)]
    pub request_pause_ms: u64,
    /// Consecutive failed polls after which a unit is offline: its readings turn to quality
    /// `comm_error` and it is retried only every `offline_retry_s`, so a dead unit never
    /// holds up the others on the bus.
    #[serde(default = "default_offline_after")]
    pub offline_after_failures: u32,
    /// Seconds between polls of an offline unit (each costs the bus up to `timeout_ms`); the
    /// first answer brings it back online and to its poll classes' cadence.
    #[serde(default = "default_offline_retry_s")]
    pub offline_retry_s: u64,
    /// The devices polled over this connection, each by its Modbus unit id.
    pub units: Vec<ModbusUnitConfig>,
}

impl ModbusConfig {
    pub fn link(&self) -> ModbusLink {
        ModbusLink {
            transport: self.transport,
            address: self.address.clone(),
            serial: self.serial.unwrap_or_default(),
        }
    }
}

fn default_modbus_timeout_ms() -> u64 {
    1000
}
fn default_offline_after() -> u32 {
    3
}
fn default_offline_retry_s() -> u64 {
    30
}

/// `[[modbus.units]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusUnitConfig {
    /// The `id` of a `[[devices]]` entry; its profile must have a `[modbus]` register map.
    pub device: String,
    /// Modbus unit id (slave address) 1-247; 255 or 1 for most Modbus TCP devices.
    pub unit_id: u8,
}

/// `[[modbus]]`: unique names, addresses and serial settings that fit the transport, timeouts
/// in range, every unit a known device whose profile has a register map.
pub(super) fn validate_modbus(
    modbus: &[ModbusConfig],
    devices: &[DeviceConfig],
    refs: &References,
    report: &mut dyn FnMut(String, String),
) {
    let device_profiles: BTreeMap<&str, &str> = devices
        .iter()
        .map(|d| (d.id.as_str(), d.profile.as_str()))
        .collect();
    unique_ids(modbus.iter().map(|m| &m.name), "modbus", report);
    for (i, m) in modbus.iter().enumerate() {
        if m.transport == ModbusTransport::Rtu {
            if m.address.trim().is_empty() {
                report(
                    format!("modbus[{i}].address"),
                    "give the serial device, e.g. `/dev/ttyUSB0`".into(),
                );
            }
            let serial = m.serial.unwrap_or_default();
            if !(300..=921_600).contains(&serial.baud) {
                report(
                    format!("modbus[{i}].serial.baud"),
                    "must be 300 to 921600".into(),
                );
            }
            if !(7..=8).contains(&serial.data_bits) {
                report(
                    format!("modbus[{i}].serial.data_bits"),
                    "must be 7 or 8".into(),
                );
            }
            if !(1..=2).contains(&serial.stop_bits) {
                report(
                    format!("modbus[{i}].serial.stop_bits"),
                    "must be 1 or 2".into(),
                );
            }
        } else {
            if m.address.parse::<SocketAddr>().is_err() && !m.address.contains(':') {
                report(
                    format!("modbus[{i}].address"),
                    "give `host:port`, e.g. `192.168.10.21:502`".into(),
                );
            }
            if m.serial.is_some() {
                report(
                    format!("modbus[{i}].serial"),
                    "serial settings apply only to `transport = \"rtu\"`".into(),
                );
            }
        }
        if m.timeout_ms < 10 {
            report(
                format!("modbus[{i}].timeout_ms"),
                "must be at least 10 ms".into(),
            );
        }
        if m.offline_after_failures == 0 {
            report(
                format!("modbus[{i}].offline_after_failures"),
                "must be at least 1".into(),
            );
        }
        for (j, u) in m.units.iter().enumerate() {
            if !(1..=247).contains(&u.unit_id) && u.unit_id != 255 {
                report(
                    format!("modbus[{i}].units[{j}].unit_id"),
                    "must be 1 to 247 (or 255)".into(),
                );
            }
            match device_profiles.get(u.device.as_str()) {
                None => report(
                    format!("modbus[{i}].units[{j}].device"),
                    format!("no device with id `{}`", u.device),
                ),
                Some(profile) if refs.profiles.get(*profile).is_some_and(|p| p.modbus.is_none()) => report(
                    format!("modbus[{i}].units[{j}].device"),
                    format!("device `{}` has profile `{profile}`, which has no [modbus] register map", u.device),
                ),
                Some(_) => {}
            }
        }
    }
}
