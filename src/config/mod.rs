//! The daemon's configuration: one TOML site file plus the device profiles it refers to.
//!
//! Owns: the configuration schema (these structs and their doc comments are the operator's
//! reference), loading, secret resolution and cross-reference validation. Must not touch:
//! connections, tasks or any runtime state; a `Config` is inert data.
//!
//! Every problem is reported as `file:line:column: key.path: message`, all at once.

pub mod alerts;
pub mod devices;
mod locate;
pub mod rules;
pub mod topic;

pub use rules::{
    AlarmKind, ConditionConfig, LevelConfig, RuleConfig, RuleOverride, RuleSetFile, Severity,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use locate::{PathMap, Problem, SourceFile};

use crate::config::topic::TopicTemplate;
use crate::decode::payload::PayloadMapping;
use crate::decode::registers::ModbusProfile;

/// A site file: the gateway, its site hierarchy, devices, MQTT connections and InfluxDB sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// This gateway.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Parks this gateway watches (top of the site hierarchy).
    #[serde(default)]
    pub parks: Vec<ParkConfig>,
    /// Enterprises (tenants) inside a park.
    #[serde(default)]
    pub enterprises: Vec<EnterpriseConfig>,
    /// Locations (building, floor, distribution box) inside an enterprise.
    #[serde(default)]
    pub locations: Vec<LocationConfig>,
    /// Devices, each at one location and decoded with one profile.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// An MQTT broker run inside the daemon.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// MQTT connections to subscribe on.
    #[serde(default)]
    pub mqtt: Vec<MqttConfig>,
    /// Modbus endpoints to poll.
    #[serde(default)]
    pub modbus: Vec<ModbusConfig>,
    /// InfluxDB servers to write readings to.
    #[serde(default)]
    pub influx: Vec<InfluxSinkConfig>,
    /// Changes to rules for this site or part of it (thresholds, delays, off).
    #[serde(default)]
    pub rule_overrides: Vec<RuleOverride>,
    /// The operators' web UI and HTTP API (alarm board, devices, history, `/metrics`). Absent:
    /// no HTTP server is started.
    #[serde(default)]
    pub web: Option<WebConfig>,
    /// Alarm pushes: channels, routes, escalation. Absent: alarms are not pushed.
    #[serde(default)]
    pub alerts: Option<alerts::AlertsConfig>,
}

/// `[web]`: the operators' web UI and API, served by the daemon itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port to listen on. The default accepts only local connections; use
    /// `0.0.0.0:8080` (ideally with `tls_cert`/`tls_key`) to serve the park's network.
    #[serde(default = "default_web_listen")]
    pub listen: String,
    /// PEM certificate chain for HTTPS, relative to this file's folder. With `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (PKCS#8, PKCS#1 or SEC1), relative to this file's folder.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Hours a login lasts without activity before the user must log in again.
    #[serde(default = "default_session_idle_hours")]
    pub session_idle_hours: f64,
    /// People who log in to the web UI. `parkguard user add NAME --role ROLE` prints an entry
    /// with the password's argon2 hash.
    #[serde(default)]
    pub users: Vec<WebUserConfig>,
    /// API tokens for machine clients (SCADA, scripts), sent as `Authorization: Bearer TOKEN`.
    /// `parkguard token new NAME --role ROLE` prints a token and its entry.
    #[serde(default)]
    pub tokens: Vec<WebTokenConfig>,
    /// Open web connections at most (browsers, API clients, event streams). Further ones are
    /// closed at once. It is lowered to fit the open-files limit less 512 descriptors kept for
    /// MQTT, Modbus, InfluxDB and the store, so that web clients never starve those.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open web connections at most from one client address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// SHA-256 (hex) of a bearer token that `/metrics` then requires (Prometheus'
    /// `authorization: { credentials: ... }`); an API token or a login works too. Absent:
    /// `/metrics` is open to whoever reaches the port. `parkguard token new` prints one.
    #[serde(default)]
    pub metrics_token_sha256: Option<String>,
}

fn default_max_connections() -> usize {
    256
}
fn default_max_connections_per_address() -> usize {
    32
}

fn default_web_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_session_idle_hours() -> f64 {
    12.0
}

/// What a user or token may do. Each role can do everything the roles before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees alarms, devices, history and the journal.
    Viewer,
    /// Also acknowledges, shelves, unshelves and resets alarms.
    Operator,
    /// Also suppresses alarms for maintenance windows and takes them out of and back into
    /// service; commissions devices.
    Technician,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Technician => "technician",
            Role::Admin => "admin",
        }
    }
}

/// `[[web.users]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUserConfig {
    /// Login name; it is also the operator name written into the alarm journal.
    pub name: String,
    pub role: Role,
    /// The password's argon2 hash in PHC form (`$argon2id$v=19$...`), never the password.
    pub password_hash: String,
}

/// `[[web.tokens]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebTokenConfig {
    /// Who uses the token; the operator name in the journal for its commands.
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits (tokens are long random strings, so a fast hash
    /// suffices and the token itself is never stored).
    pub token_sha256: String,
}

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

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// `[modbus.serial]`: line settings of an RS-485 port, for `transport = "rtu"`. They must
/// match every unit on the bus; `parkguard modbus scan` finds them when they are unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Bits per second: 1200 to 115200; most meters ship at 9600.
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
    #[serde(default = "default_offline_retry_s")]
    pub offline_retry_s: u64,
    /// `[[modbus.units]]`
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

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Name of this gateway, used in logs and as the default MQTT client id prefix.
    #[serde(default = "default_gateway_name")]
    pub name: String,
    /// Folder holding the device profiles (`<profile id>.toml`), relative to this file's folder.
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: PathBuf,
    /// On SIGINT/SIGTERM, how long the sinks may still write what is in the outbox before the
    /// daemon exits. Nothing is lost either way: the rest stays in the outbox and is sent at
    /// the next start.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    /// Rule set files, relative to this file's folder; rules are bound to devices by kind,
    /// profile and quantity. Default: `default.toml` in the `rules` folder beside
    /// `profiles_dir`. An empty list runs no rules.
    #[serde(default)]
    pub rule_files: Option<Vec<PathBuf>>,
    /// The SQLite store (alarm states, alarm journal), relative to this file's folder. Put it
    /// on persistent storage: `/var/lib/parkguard/parkguard.db` under systemd.
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// Largest size of the outbox (readings and alarm events not yet written to every InfluxDB
    /// sink), in MiB. When it is full the oldest telemetry is deleted first (counted, and the
    /// gateway fault G1 is raised); alarm events are kept while any telemetry is left.
    #[serde(default = "default_outbox_max_mb")]
    pub outbox_max_mb: f64,
    /// Hours of local history kept in the store for the web UI's charts (10-second buckets
    /// for the last hour, 1-minute buckets before that); 0 keeps none.
    #[serde(default = "default_history_hours")]
    pub history_hours: f64,
    /// Largest size of the local history in the store, in MiB (256 by default). Checked every
    /// five minutes; when it is larger, the oldest history is deleted, whatever
    /// `history_hours` says. History grows by about 170 KB per device and hour in 10-second
    /// buckets: 100 devices keep their 24 hours, 1,000 about 4 hours, 10,000 about 10 minutes.
    #[serde(default = "default_history_max_mb")]
    pub history_max_mb: f64,
    /// Seconds between writes of the local history. Each write touches the store's pages
    /// once, so fewer, larger writes spare a gateway's flash; charts lag by up to this much
    /// and a crash loses at most this much of them (never telemetry nor alarms, which are
    /// committed before they are acknowledged).
    #[serde(default = "default_history_write_s")]
    pub history_write_s: u64,
    /// Devices not declared in `[[devices]]` whose messages are still accepted (subscriptions
    /// with `unknown_devices = "accept"`), across all connections. Beyond this many, messages
    /// of further unknown ids are counted as `unknown_over_cap` and dropped, so that a flood of
    /// made-up ids cannot grow memory, history or the store.
    #[serde(default = "default_max_unknown_devices")]
    pub max_unknown_devices: usize,
    /// A device timestamp more than this many seconds ahead of the gateway's clock is counted
    /// as `bad_timestamp` and the receive time is used instead.
    #[serde(default = "default_max_clock_ahead_s")]
    pub max_clock_ahead_s: u64,
    /// The gateway's clock stepping (NTP, an operator) by more than this many seconds raises
    /// gateway fault G9.
    #[serde(default = "default_clock_jump_s")]
    pub clock_jump_s: u64,
    /// Rules time their delays by the device's own timestamp where its profile maps one, so
    /// that messages the broker replays after an outage are judged as they happened: a
    /// condition that held for its on-delay meanwhile is raised (marked late, with when it
    /// began) and one that came and went is journaled. Timestamps older than this many seconds
    /// are not believed and the message is judged at its arrival.
    #[serde(default = "default_replay_window_s")]
    pub replay_window_s: u64,
    /// The journal's head (newest sequence number and hash) is written outside the database
    /// at most this often when it moved: appended to `journal_anchor_file`, published on every
    /// MQTT connection to `parkguard/<gateway name>/journal` and written to InfluxDB as a
    /// `journal_anchor` point. `parkguard journal verify --anchor FILE` then finds a journal
    /// rewritten as a whole, which its hash chain alone cannot. 0 turns anchoring off.
    #[serde(default = "default_journal_anchor_interval_s")]
    pub journal_anchor_interval_s: u64,
    /// Where anchors are appended (one JSON line each), relative to this file's folder; ship
    /// it off the gateway (log collector, rsync) so that it is out of an intruder's reach.
    /// Default: the store's path with `.anchors` added.
    #[serde(default)]
    pub journal_anchor_file: Option<PathBuf>,
    /// Retained topic on every MQTT connection's broker where the gateway says `online`, with
    /// its last will saying `offline`, so that a central platform sees a dead gateway.
    /// `{gateway}` is replaced by `name`; an empty string turns it off.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// Overall bound on a shutdown (SIGINT/SIGTERM) beyond `shutdown_grace_s`; past it the
    /// daemon exits at once. A second signal exits at once too.
    #[serde(default = "default_shutdown_deadline_s")]
    pub shutdown_deadline_s: u64,
}

fn default_max_unknown_devices() -> usize {
    1000
}
fn default_max_clock_ahead_s() -> u64 {
    300
}
fn default_clock_jump_s() -> u64 {
    60
}
fn default_journal_anchor_interval_s() -> u64 {
    60
}
fn default_replay_window_s() -> u64 {
    24 * 3600
}
fn default_status_topic() -> String {
    "parkguard/{gateway}/status".to_string()
}
fn default_shutdown_deadline_s() -> u64 {
    30
}

fn default_outbox_max_mb() -> f64 {
    1024.0
}
fn default_history_write_s() -> u64 {
    60
}
fn default_history_hours() -> f64 {
    24.0
}
fn default_history_max_mb() -> f64 {
    256.0
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            name: default_gateway_name(),
            profiles_dir: default_profiles_dir(),
            shutdown_grace_s: default_shutdown_grace_s(),
            rule_files: None,
            store: default_store(),
            outbox_max_mb: default_outbox_max_mb(),
            history_hours: default_history_hours(),
            history_max_mb: default_history_max_mb(),
            history_write_s: default_history_write_s(),
            max_unknown_devices: default_max_unknown_devices(),
            max_clock_ahead_s: default_max_clock_ahead_s(),
            clock_jump_s: default_clock_jump_s(),
            replay_window_s: default_replay_window_s(),
            journal_anchor_interval_s: default_journal_anchor_interval_s(),
            journal_anchor_file: None,
            status_topic: default_status_topic(),
            shutdown_deadline_s: default_shutdown_deadline_s(),
        }
    }
}

impl GatewayConfig {
    /// The anchor file, relative to the site file's folder: as configured, else beside the
    /// store.
    pub fn journal_anchor_file(&self) -> PathBuf {
        self.journal_anchor_file.clone().unwrap_or_else(|| {
            let mut name = self.store.clone().into_os_string();
            name.push(".anchors");
            PathBuf::from(name)
        })
    }

    pub fn rule_files(&self) -> Vec<PathBuf> {
        self.rule_files.clone().unwrap_or_else(|| {
            let beside_profiles = self.profiles_dir.parent().unwrap_or(Path::new(""));
            vec![beside_profiles.join("rules/default.toml")]
        })
    }
}
fn default_store() -> PathBuf {
    PathBuf::from("parkguard.db")
}

fn default_gateway_name() -> String {
    "parkguard".into()
}
fn default_profiles_dir() -> PathBuf {
    PathBuf::from("../profiles")
}
fn default_shutdown_grace_s() -> u64 {
    10
}

/// `[[parks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkConfig {
    /// Identifier, written as the `park` tag. Any UTF-8 text.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[enterprises]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    /// Identifier, written as the `enterprise` tag.
    pub id: String,
    /// The `id` of the park it belongs to.
    pub park: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The enterprise's safety contact, told by alert routes with `enterprise_contact = true`:
    /// `{ name = "...", mobile = "...", email = "..." }`.
    #[serde(default)]
    pub contact: Option<alerts::ContactConfig>,
}

/// `[[locations]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Identifier, written as the `location` tag, e.g. `3号楼配电箱`.
    pub id: String,
    /// The `id` of the enterprise it belongs to.
    pub enterprise: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Identifier, written as the `device` tag. For MQTT devices it must equal the `{device}`
    /// topic level (for example the IMEI of an NB-IoT smoke detector).
    pub id: String,
    /// The `id` of the location it is installed at.
    pub location: String,
    /// Device profile (file stem in `profiles_dir`) that decodes its data.
    pub profile: String,
    /// Device kind (`meter`, `detector`, `gas`, `smoke`, ...); defaults to the profile's kind.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Numbers rules can scale their thresholds by (a rule's `per`), e.g.
    /// `params = { rated_current_a = 63 }` for the overcurrent rule.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
}

/// `[broker]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// When present, the daemon runs its own MQTT broker (for sites without one). Point an
    /// `[[mqtt]]` connection at its `listen` address to ingest from it.
    #[serde(default)]
    pub embedded: Option<EmbeddedBrokerConfig>,
}

/// `[broker.embedded]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Address and port to accept MQTT 3.1.1 clients on. Use `0.0.0.0:1883` to accept sensors
    /// from the network; the default only accepts local clients.
    #[serde(default = "default_broker_listen")]
    pub listen: SocketAddr,
    /// Largest accepted PUBLISH payload in bytes.
    #[serde(default = "default_broker_max_payload")]
    pub max_payload_bytes: usize,
    /// Most clients connected at once.
    #[serde(default = "default_broker_max_connections")]
    pub max_connections: usize,
    /// Who may connect: a file (relative to this file's folder) with one `name:sha256` line per
    /// device or shared login, the SHA-256 in hex of a random password (`openssl rand -hex 16`,
    /// then `printf %s PASSWORD | sha256sum`); `#` starts a comment. Required when `listen` is
    /// beyond this machine: an anonymous broker on the park's network lets anyone raise or
    /// hide alarms. The daemon's own connection uses a login made at start that no client can
    /// take, and the client ids of the daemon's connections are refused to everyone else.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain and key (relative to this file's folder): clients then speak
    /// MQTT over TLS on `listen` (port 8883 by convention).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// What the logins of `users_file` may do, as MQTT topic filters where `{user}` is the
    /// login's name (a device's id, say): `publish` what they may send (`park/+/smoke/{user}/up`),
    /// `subscribe` what they may read (`park/+/smoke/{user}/down`). A client that publishes or
    /// subscribes outside them is disconnected. Absent: any login may use any topic.
    #[serde(default)]
    pub acl: Option<BrokerAcl>,
}

/// `[broker.embedded.acl]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BrokerAcl {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

fn default_broker_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_broker_max_payload() -> usize {
    256 * 1024
}
fn default_broker_max_connections() -> usize {
    10_000
}

/// MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// `[[mqtt]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Name of the connection, used in logs and metrics.
    pub name: String,
    /// Broker host name or address.
    pub host: String,
    /// Broker port; 1883 by default, 8883 when `[mqtt.tls]` is set.
    #[serde(default)]
    pub port: Option<u16>,
    /// Client identifier; must be unique on the broker and stable across restarts, or the
    /// persistent session (and the messages queued in it) is lost.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `"5"` (default) or `"3.1.1"` for brokers without MQTT 5. Both are safe against
    /// oversized messages (see `max_packet_bytes`); MQTT 5 also announces `max_unacked` to the
    /// broker as receive maximum.
    /// Absent: MQTT 5, or 3.1.1 towards the embedded broker (which speaks 3.1.1).
    #[serde(default)]
    pub protocol: Option<MqttProtocol>,
    /// Keep-alive interval in seconds; a dead connection is noticed after about 1.5 times this.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// Largest MQTT message read whole from the broker, in bytes. A larger one (up to MQTT's
    /// own 256 MB) never breaks the session: it is read in small chunks and discarded, its
    /// first kilobyte kept as a bad message, counted as `too_large` and acknowledged, on
    /// MQTT 3.1.1 and 5 alike. Memory for it stays at this size plus about 200 KiB. Set the
    /// broker's `message_size_limit` too, so that such messages are refused at the source.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// QoS of the subscriptions: 0, 1 (default) or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Keep the session on the broker across reconnects (clean session off / session expiry),
    /// so QoS 1 messages published while the daemon is away are delivered when it returns.
    #[serde(default = "default_true")]
    pub persistent_session: bool,
    /// QoS 1/2 messages received but not yet committed to the outbox (each is acknowledged to
    /// the broker only once committed). At this bound the connection stops reading, and the
    /// broker holds further messages. MQTT 5 announces it to the broker as receive maximum;
    /// with MQTT 3.1.1 the broker's own in-flight limit applies too (mosquitto:
    /// `max_inflight_messages`, 20 by default).
    #[serde(default = "default_max_unacked")]
    pub max_unacked: u16,
    /// Seconds to wait for the TCP/TLS connection and the broker's CONNACK.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    #[serde(default)]
    pub username: Option<String>,
    /// Password, from an environment variable or a file: `{ env = "VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS to the broker; absent means plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// Topics to subscribe to and how to decode them.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
}

fn default_keepalive_s() -> u64 {
    30
}
fn default_max_packet_bytes() -> usize {
    1024 * 1024
}
fn default_qos() -> u8 {
    1
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout_s() -> u64 {
    10
}
fn default_max_unacked() -> u16 {
    1000
}

impl MqttConfig {
    /// The protocol spoken: as configured, else MQTT 5, except towards the embedded broker
    /// (`embedded`, its listen address), which speaks 3.1.1.
    pub fn protocol(&self, embedded: Option<std::net::SocketAddr>) -> MqttProtocol {
        if let Some(protocol) = self.protocol {
            return protocol;
        }
        if embedded.is_some_and(|listen| self.targets(listen)) {
            MqttProtocol::V311
        } else {
            MqttProtocol::V5
        }
    }

    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }

    /// Whether this connection goes to a broker listening on `listen` on this machine (the
    /// embedded one).
    pub fn targets(&self, listen: std::net::SocketAddr) -> bool {
        let local = matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1");
        listen.port() == self.port() && (local || self.host == listen.ip().to_string())
    }
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca: PathBuf,
    /// PEM client certificate, for brokers that require one (set `client_key` too).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// What to do with messages from a device that is not declared in `[[devices]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevices {
    /// Keep them, tagged with what the topic says (counted as `unknown_device` too, so that
    /// undeclared sensors are noticed and added to the site file).
    #[default]
    Accept,
    /// Drop them and count them as `unknown_device`.
    Reject,
}

/// `[[mqtt.subscriptions]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Topic template. Each level is literal text, `{name}` (any one level, which becomes the
    /// tag `name`; `park`, `enterprise`, `location`, `device` and `kind` fill the site
    /// hierarchy), `+` (any one level, not kept) or a final `#`.
    /// Example: `park/{park}/smoke/{device}/up`.
    pub topic: String,
    /// Profile whose `[payload]` mapping decodes these messages.
    pub profile: String,
    /// Larger payloads are counted as `too_large` and dropped without being parsed.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// `accept` (default) or `reject` messages from devices missing from `[[devices]]`.
    #[serde(default)]
    pub unknown_devices: UnknownDevices,
}

fn default_max_payload_bytes() -> usize {
    64 * 1024
}

/// InfluxDB write API flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// InfluxDB 1.x `/write` (database, retention policy, user and password).
    V1,
    /// InfluxDB 2.x/3.x and compatible servers: `/api/v2/write` (org, bucket, token).
    V2,
}

/// `[[influx]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSinkConfig {
    /// Name of the sink, used in logs and metrics.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `v1` or `v2`.
    pub api: InfluxApi,
    /// v1: database to write to.
    #[serde(default)]
    pub database: Option<String>,
    /// v1: retention policy; the database's default when absent.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user name, when authentication is on.
    #[serde(default)]
    pub username: Option<String>,
    /// v1: password, `{ env = "VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// v2: organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: API token, `{ env = "VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// PEM CA certificate for an `https://` server with a private CA.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// A write request carries at most this many points (readings)...
    #[serde(default = "default_batch_points")]
    pub batch_points: usize,
    /// ...and is sent when it is full or its oldest reading has waited this many milliseconds.
    /// Alarm events never wait.
    #[serde(default = "default_batch_age_ms")]
    pub batch_age_ms: u64,
    /// Compress request bodies with gzip.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Seconds one write request may take before it counts as failed and is retried.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u64,
}

fn default_batch_points() -> usize {
    5000
}
fn default_batch_age_ms() -> u64 {
    1000
}
fn default_request_timeout_s() -> u64 {
    10
}

/// A secret taken from the environment or a file, never written into the site file itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (trailing newline removed), relative to the site file's folder.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=NAME:/path` in the unit): read from
    /// `$CREDENTIALS_DIRECTORY/NAME`, which only the service can read, unlike `Environment=`,
    /// which `systemctl show` prints to every local user.
    #[serde(default)]
    pub credential: Option<String>,
}

impl Secret {
    /// Reads the secret now. `base` is the site file's folder.
    pub fn resolve(&self, base: &Path) -> Result<String, String> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|err| format!("cannot read secret file {}: {err}", path.display()))
        };
        match (&self.env, &self.file, &self.credential) {
            (Some(var), None, None) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            (None, Some(file), None) => read(base.join(file)),
            (None, None, Some(name)) => {
                if name.is_empty() || name.contains('/') || name == ".." {
                    return Err(format!("credential `{name}` is not a credential name"));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "credential `{name}`: CREDENTIALS_DIRECTORY is not set (the unit needs `LoadCredential={name}:/path/to/file`)"
                    )
                })?;
                read(PathBuf::from(dir).join(name))
            }
            _ => Err("give exactly one of `env`, `file` or `credential`".into()),
        }
    }
}

/// A device profile file: `<profiles_dir>/<id>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Device kind of devices with this profile: `meter`, `detector`, `gas`, `smoke`, ...
    pub kind: String,
    /// InfluxDB measurement for its readings; defaults to `kind`.
    #[serde(default)]
    pub measurement: Option<String>,
    /// How to decode MQTT JSON payloads of this device.
    #[serde(default)]
    pub payload: Option<PayloadMapping>,
    /// Register map, for devices polled over Modbus.
    #[serde(default)]
    pub modbus: Option<ModbusProfile>,
    /// Seconds between a device's unprompted messages (heartbeats), for offline detection of
    /// devices that publish rather than being polled.
    #[serde(default)]
    pub heartbeat_s: Option<f64>,
    /// How the gateway acknowledges the device's alarm messages on its downlink, for MQTT
    /// devices that retransmit an alarm until acknowledged.
    #[serde(default)]
    pub ack: Option<DeviceAckConfig>,
    /// Device states in which its readings are not real (a gas detector warming up or being
    /// calibrated with span gas, a self-test): while one holds, the device's alarms are
    /// suppressed by design (evaluated, journaled and shown, not pushed), and they end by
    /// themselves when the state does; an alarm still active then is annunciated again.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceState>,
    /// The device's own alarm decisions (a red lamp at its own set-point): each raises the
    /// named level of a gateway rule's alarm on this device, like the rule's threshold does.
    /// Whichever comes first raises the alarm; it clears when both have cleared.
    #[serde(default)]
    pub device_alarms: Vec<DeviceAlarm>,
}

/// One `[[device_alarms]]` entry of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAlarm {
    /// The device's flag (a status bit), or its text state when `states` is given.
    pub quantity: String,
    /// For text quantities: the states that mean this alarm. Empty: the quantity is a flag.
    #[serde(default)]
    pub states: Vec<String>,
    /// The gateway rule whose alarm the device's decision raises, e.g. `R1`.
    pub rule: String,
    /// Which of the rule's levels, by its severity.
    pub severity: Severity,
    /// For rules with one alarm per quantity: the quantity whose alarm it is (`leakage`).
    /// Absent: every alarm of the rule on the device.
    #[serde(default)]
    pub source: Option<String>,
}

/// One quantity of `[[maintenance]]`: a text state among `states`, or a flag that is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceState {
    pub quantity: String,
    /// For text quantities: the states that mean maintenance. Empty: the quantity is a flag.
    #[serde(default)]
    pub states: Vec<String>,
}

/// `[ack]` of a profile: once a message whose `quantity` is one of `states` is durably
/// recorded (its alarm transition journaled), the gateway publishes `payload` to `topic`
/// (QoS 1) on the MQTT connection the message came from, so that the device stops
/// retransmitting. In `topic` and `payload`, `{name}` is a level the subscription's topic
/// template captured (`{park}`, `{device}`, ...), `{event}` the state and `{ts}` the
/// gateway's time in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAckConfig {
    pub quantity: String,
    pub states: Vec<String>,
    pub topic: String,
    pub payload: String,
}

impl Profile {
    pub fn measurement(&self) -> &str {
        self.measurement.as_deref().unwrap_or(&self.kind)
    }
}

/// A loaded, validated configuration with resolved paths and secrets.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Folder of the site file; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub site: SiteFile,
    pub profiles: BTreeMap<String, Profile>,
    /// Secrets by the key path that named them, e.g. `mqtt[0].password`.
    pub secrets: BTreeMap<String, String>,
    /// Rules of every rule file, in file order.
    pub rules: Vec<RuleConfig>,
}

impl Config {
    /// What is valid but likely wrong: `parkguard check` prints it and the daemon logs it.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.rules.iter().filter_map(|r| r.risky_clear()).collect();
        for (id, profile) in &self.profiles {
            for a in &profile.device_alarms {
                let bound = self
                    .rules
                    .iter()
                    .any(|r| r.id == a.rule && r.levels.iter().any(|l| l.severity == a.severity));
                if !bound {
                    out.push(format!(
                        "profile {id}: device alarm `{}` names rule {} at {}, which the rule set does not have; the device's decision is ignored",
                        a.quantity,
                        a.rule,
                        a.severity.as_str()
                    ));
                }
            }
        }
        if let Some(web) = &self.site.web {
            let beyond_loopback = web
                .listen
                .parse::<SocketAddr>()
                .map_or(true, |a| !a.ip().is_loopback());
            if beyond_loopback && web.tls_cert.is_none() {
                out.push(format!(
                    "web.listen = \"{}\" serves plain HTTP beyond this machine: passwords and session cookies cross the park network readable; set web.tls_cert and web.tls_key",
                    web.listen
                ));
            }
            if beyond_loopback && web.metrics_token_sha256.is_none() {
                out.push(format!(
                    "web.listen = \"{}\": /metrics (alarm and session counts) is open to anyone on the network; set web.metrics_token_sha256",
                    web.listen
                ));
            }
        }
        out
    }

    /// Loads and validates a site file and the profiles it uses. Every problem found is
    /// returned, not just the first.
    pub fn load(file: &Path) -> Result<Config, Vec<Problem>> {
        let source = SourceFile::read(file).map_err(|p| vec![p])?;
        let (site, mut problems, paths) = source.deserialize_partial::<SiteFile>();
        let Some(site) = site else {
            return Err(problems);
        };
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let profiles_dir = base_dir.join(&site.gateway.profiles_dir);
        let profiles = load_profiles(&profiles_dir, &source, &mut problems);
        let rules = load_rules(
            &base_dir,
            &site.gateway.rule_files(),
            &source,
            &mut problems,
        );
        let mut config = Config {
            file: file.to_path_buf(),
            base_dir,
            site,
            profiles,
            secrets: BTreeMap::new(),
            rules,
        };
        config.validate(&source, &paths, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(problems)
        }
    }

    /// A secret resolved at load time, by the key path that declared it.
    pub fn secret(&self, path: &str) -> Option<&str> {
        self.secrets.get(path).map(String::as_str)
    }

    /// A profile validation has already checked to exist; an error only if the config was
    /// built without `load`.
    pub fn profile(&self, id: &str) -> anyhow::Result<&Profile> {
        self.profiles
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no profile `{id}`"))
    }

    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn validate(&mut self, source: &SourceFile, paths: &PathMap, problems: &mut Vec<Problem>) {
        let site = &self.site;
        let mut report = |path: String, message: String| {
            let path = paths.original(&path);
            problems.push(source.locate(&path, message))
        };

        let parks = unique_ids(site.parks.iter().map(|p| &p.id), "parks", &mut report);
        let enterprises = unique_ids(
            site.enterprises.iter().map(|e| &e.id),
            "enterprises",
            &mut report,
        );
        let locations = unique_ids(
            site.locations.iter().map(|l| &l.id),
            "locations",
            &mut report,
        );
        unique_ids(site.devices.iter().map(|d| &d.id), "devices", &mut report);

        for (i, e) in site.enterprises.iter().enumerate() {
            if !parks.contains(e.park.as_str()) {
                report(
                    format!("enterprises[{i}].park"),
                    format!("no park with id `{}`", e.park),
                );
            }
        }
        for (i, l) in site.locations.iter().enumerate() {
            if !enterprises.contains(l.enterprise.as_str()) {
                report(
                    format!("locations[{i}].enterprise"),
                    format!("no enterprise with id `{}`", l.enterprise),
                );
            }
        }
        let profile_names = self.profiles.keys().map(String::as_str).collect::<Vec<_>>();
        let dangling_profile = |name: &str| {
            format!(
                "no profile `{name}` in {} (known: {})",
                self.site.gateway.profiles_dir.display(),
                if profile_names.is_empty() {
                    "none".to_string()
                } else {
                    profile_names.join(", ")
                }
            )
        };
        let gateway = &site.gateway;
        if !(gateway.outbox_max_mb.is_finite() && gateway.outbox_max_mb > 0.0) {
            report(
                "gateway.outbox_max_mb".into(),
                "must be a size in MiB above 0".into(),
            );
        }
        if !(gateway.history_hours.is_finite() && gateway.history_hours >= 0.0) {
            report(
                "gateway.history_hours".into(),
                "must be a number of hours, 0 or more".into(),
            );
        }
        if !(gateway.history_max_mb.is_finite() && gateway.history_max_mb > 0.0) {
            report(
                "gateway.history_max_mb".into(),
                "must be a size in MiB above 0".into(),
            );
        }
        for (i, m) in site.mqtt.iter().enumerate() {
            if m.max_unacked == 0 {
                report(
                    format!("mqtt[{i}].max_unacked"),
                    "must be at least 1".into(),
                );
            }
        }
        for (i, d) in site.devices.iter().enumerate() {
            if !locations.contains(d.location.as_str()) {
                report(
                    format!("devices[{i}].location"),
                    format!("no location with id `{}`", d.location),
                );
            }
            if !self.profiles.contains_key(&d.profile) {
                report(
                    format!("devices[{i}].profile"),
                    dangling_profile(&d.profile),
                );
            }
            if d.id == site.gateway.name {
                report(
                    format!("devices[{i}].id"),
                    format!("`{}` is the gateway's own name (gateway.name), which its self-monitoring alarms use as their device", d.id),
                );
            }
        }

        let mut secrets = BTreeMap::new();
        let mut resolve =
            |path: String, secret: &Option<Secret>, report: &mut dyn FnMut(String, String)| {
                if let Some(secret) = secret {
                    match secret.resolve(&self.base_dir) {
                        Ok(value) => {
                            secrets.insert(path, value);
                        }
                        Err(message) => report(path, message),
                    }
                }
            };

        unique_ids(site.mqtt.iter().map(|m| &m.name), "mqtt", &mut report);
        for (i, m) in site.mqtt.iter().enumerate() {
            if m.qos > 2 {
                report(format!("mqtt[{i}].qos"), "must be 0, 1 or 2".into());
            }
            if m.keepalive_s < 5 {
                report(
                    format!("mqtt[{i}].keepalive_s"),
                    "must be at least 5 seconds".into(),
                );
            }
            if m.password.is_some() && m.username.is_none() {
                report(
                    format!("mqtt[{i}].password"),
                    "a password needs a `username`".into(),
                );
            }
            resolve(format!("mqtt[{i}].password"), &m.password, &mut report);
            if let Some(tls) = &m.tls {
                for (key, path) in [
                    ("ca", Some(&tls.ca)),
                    ("client_cert", tls.client_cert.as_ref()),
                    ("client_key", tls.client_key.as_ref()),
                ] {
                    if let Some(path) = path {
                        let full = self.base_dir.join(path);
                        if !full.is_file() {
                            report(
                                format!("mqtt[{i}].tls.{key}"),
                                format!("no such file: {}", full.display()),
                            );
                        }
                    }
                }
                if tls.client_cert.is_some() != tls.client_key.is_some() {
                    report(
                        format!("mqtt[{i}].tls"),
                        "`client_cert` and `client_key` go together".into(),
                    );
                }
            }
            if m.subscriptions.is_empty() {
                report(
                    format!("mqtt[{i}]"),
                    "no `[[mqtt.subscriptions]]`: nothing would be read".into(),
                );
            }
            for (j, s) in m.subscriptions.iter().enumerate() {
                if let Err(message) = TopicTemplate::parse(&s.topic) {
                    report(format!("mqtt[{i}].subscriptions[{j}].topic"), message);
                }
                match self.profiles.get(&s.profile) {
                    None => report(
                        format!("mqtt[{i}].subscriptions[{j}].profile"),
                        dangling_profile(&s.profile),
                    ),
                    Some(p) if p.payload.is_none() => report(
                        format!("mqtt[{i}].subscriptions[{j}].profile"),
                        format!(
                            "profile `{}` has no `[payload]` mapping for MQTT",
                            s.profile
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }

        let device_profiles: BTreeMap<&str, &str> = site
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.profile.as_str()))
            .collect();
        unique_ids(site.modbus.iter().map(|m| &m.name), "modbus", &mut report);
        for (i, m) in site.modbus.iter().enumerate() {
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
                    Some(profile) if self.profiles.get(*profile).is_some_and(|p| p.modbus.is_none()) => report(
                        format!("modbus[{i}].units[{j}].device"),
                        format!("device `{}` has profile `{profile}`, which has no [modbus] register map", u.device),
                    ),
                    Some(_) => {}
                }
            }
        }

        if let Some(web) = &site.web {
            validate_web(web, &self.base_dir, &mut report);
        }
        if let Some(broker) = &site.broker.embedded {
            validate_embedded_broker(broker, &self.base_dir, &mut report);
        }
        if let Some(alerts) = &site.alerts {
            let mqtt_names = site.mqtt.iter().map(|m| m.name.as_str()).collect();
            alerts::validate(alerts, &mqtt_names, &self.base_dir, &mut report);
            for (i, c) in alerts.channels.iter().enumerate() {
                resolve(
                    format!("alerts.channels[{i}].secret"),
                    &c.secret,
                    &mut report,
                );
                resolve(
                    format!("alerts.channels[{i}].password"),
                    &c.password,
                    &mut report,
                );
            }
        }

        let devices: BTreeSet<&str> = site.devices.iter().map(|d| d.id.as_str()).collect();
        for (i, o) in site.rule_overrides.iter().enumerate() {
            if !self.rules.iter().any(|r| r.id == o.rule) {
                report(
                    format!("rule_overrides[{i}].rule"),
                    format!("no rule with id `{}` in the rule files", o.rule),
                );
            }
            let scopes = [
                ("park", &o.park, &parks),
                ("enterprise", &o.enterprise, &enterprises),
                ("location", &o.location, &locations),
                ("device", &o.device, &devices),
            ];
            if scopes.iter().filter(|(_, id, _)| id.is_some()).count() > 1 {
                report(
                    format!("rule_overrides[{i}]"),
                    "give at most one of park, enterprise, location, device".into(),
                );
            }
            for (name, id, known) in scopes {
                if let Some(id) = id {
                    if !known.contains(id.as_str()) {
                        report(
                            format!("rule_overrides[{i}].{name}"),
                            format!("no {name} with id `{id}`"),
                        );
                    }
                }
            }
        }
        for (i, d) in site.devices.iter().enumerate() {
            if d.params.values().any(|v| !v.is_finite()) {
                report(
                    format!("devices[{i}].params"),
                    "parameters must be finite numbers".into(),
                );
            }
        }

        unique_ids(site.influx.iter().map(|s| &s.name), "influx", &mut report);
        for (i, s) in site.influx.iter().enumerate() {
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                report(
                    format!("influx[{i}].url"),
                    "must start with http:// or https://".into(),
                );
            }
            let needs = |key: &str, present: bool, report: &mut dyn FnMut(String, String)| {
                if !present {
                    report(
                        format!("influx[{i}]"),
                        format!(
                            "api = \"{}\" needs `{key}`",
                            if s.api == InfluxApi::V1 { "v1" } else { "v2" }
                        ),
                    );
                }
            };
            match s.api {
                InfluxApi::V1 => needs("database", s.database.is_some(), &mut report),
                InfluxApi::V2 => {
                    needs("org", s.org.is_some(), &mut report);
                    needs("bucket", s.bucket.is_some(), &mut report);
                    needs("token", s.token.is_some(), &mut report);
                }
            }
            if s.batch_points == 0 {
                report(
                    format!("influx[{i}].batch_points"),
                    "must be at least 1".into(),
                );
            }
            resolve(format!("influx[{i}].password"), &s.password, &mut report);
            resolve(format!("influx[{i}].token"), &s.token, &mut report);
        }
        self.secrets = secrets;
    }
}

/// Reports duplicate ids and returns the set of ids.
fn unique_ids<'a>(
    ids: impl Iterator<Item = &'a String>,
    section: &str,
    report: &mut dyn FnMut(String, String),
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id.as_str()) {
            report(format!("{section}[{i}]"), format!("duplicate id `{id}`"));
        }
    }
    seen
}

/// Loads every `*.toml` in the profiles folder; problems inside a profile are located in its
/// own file.
fn load_rules(
    base_dir: &Path,
    files: &[PathBuf],
    site: &SourceFile,
    problems: &mut Vec<Problem>,
) -> Vec<RuleConfig> {
    let mut rules: Vec<RuleConfig> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let path = base_dir.join(file);
        let source = match SourceFile::read(&path) {
            Ok(source) => source,
            Err(_) => {
                problems.push(site.locate(
                    &format!("gateway.rule_files[{i}]"),
                    format!("cannot read rule file {}", path.display()),
                ));
                continue;
            }
        };
        match source.deserialize::<RuleSetFile>() {
            Ok(set) => {
                for (j, rule) in set.rules.into_iter().enumerate() {
                    for (key, message) in rule.problems() {
                        problems.push(source.locate(&format!("rules[{j}].{key}"), message));
                    }
                    if rules.iter().any(|r| r.id == rule.id) {
                        problems.push(source.locate(
                            &format!("rules[{j}].id"),
                            format!("rule id `{}` is already used", rule.id),
                        ));
                    }
                    rules.push(rule);
                }
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    let builtin = SourceFile {
        path: PathBuf::from("<built-in>/rules/gateway.toml"),
        text: GATEWAY_RULES.to_string(),
    };
    match builtin.deserialize::<RuleSetFile>() {
        Ok(set) => rules.extend(
            set.rules
                .into_iter()
                .filter(|g| !rules.iter().any(|r| r.id == g.id))
                .collect::<Vec<_>>(),
        ),
        Err(mut found) => problems.append(&mut found),
    }
    rules
}

/// Rules about the gateway itself, always loaded (a site rule with the same id replaces one).
const GATEWAY_RULES: &str = include_str!("../../firmware-config/rules/gateway.toml");

fn load_profiles(
    dir: &Path,
    site: &SourceFile,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Profile> {
    let mut profiles = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problems.push(site.locate(
                "gateway.profiles_dir",
                format!("cannot read profiles folder {}: {err}", dir.display()),
            ));
            return profiles;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let source = match SourceFile::read(&path) {
            Ok(source) => source,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        match source.deserialize::<Profile>() {
            Ok(profile) => {
                if let Some(payload) = &profile.payload {
                    for (path, message) in payload.problems() {
                        problems.push(source.locate(&format!("payload.{path}"), message));
                    }
                }
                if let Some(modbus) = &profile.modbus {
                    for (path, message) in modbus.problems() {
                        problems.push(source.locate(&format!("modbus.{path}"), message));
                    }
                }
                if let Some(ack) = &profile.ack {
                    let decoded = profile
                        .payload
                        .as_ref()
                        .is_some_and(|p| p.fields.iter().any(|f| f.quantity == ack.quantity));
                    if !decoded {
                        problems.push(source.locate(
                            "ack.quantity",
                            format!(
                                "`{}` is not a quantity of this profile's payload mapping",
                                ack.quantity
                            ),
                        ));
                    }
                    if ack.states.is_empty() {
                        problems.push(source.locate(
                            "ack.states",
                            "name the states whose messages are acknowledged".to_string(),
                        ));
                    }
                }
                profiles.insert(id, profile);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    profiles
}

fn validate_embedded_broker(
    broker: &EmbeddedBrokerConfig,
    base_dir: &Path,
    report: &mut dyn FnMut(String, String),
) {
    if !broker.listen.ip().is_loopback() && broker.users_file.is_none() {
        report(
            "broker.embedded.listen".into(),
            format!(
                "{} accepts clients beyond this machine without a login: anyone on the park's network could raise or hide alarms; give users_file (and tls_cert/tls_key)",
                broker.listen
            ),
        );
    }
    if broker.tls_cert.is_some() != broker.tls_key.is_some() {
        report(
            "broker.embedded".into(),
            "`tls_cert` and `tls_key` go together".into(),
        );
    }
    if broker.acl.is_some() && broker.users_file.is_none() {
        report(
            "broker.embedded.acl".into(),
            "an ACL needs logins: give users_file".into(),
        );
    }
    for (key, path) in [
        ("users_file", &broker.users_file),
        ("tls_cert", &broker.tls_cert),
        ("tls_key", &broker.tls_key),
    ] {
        if let Some(path) = path {
            let full = base_dir.join(path);
            if !full.is_file() {
                report(
                    format!("broker.embedded.{key}"),
                    format!("no such file: {}", full.display()),
                );
            }
        }
    }
    if let Some(path) = &broker.users_file {
        if let Ok(text) = std::fs::read_to_string(base_dir.join(path)) {
            if let Err(problem) = parse_broker_users(&text) {
                report("broker.embedded.users_file".into(), problem);
            }
        }
    }
}

/// The embedded broker's users file: `name:sha256-hex` per line, `#` comments.
pub fn parse_broker_users(text: &str) -> Result<HashMap<String, [u8; 32]>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected `name:sha256`", n + 1));
        };
        let hash = hash.trim();
        let mut digest = [0u8; 32];
        let valid = hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && (0..32).all(|i| {
                u8::from_str_radix(&hash[2 * i..2 * i + 2], 16)
                    .map(|b| digest[i] = b)
                    .is_ok()
            });
        if !valid {
            return Err(format!(
                "line {}: `{}`'s hash is not 64 hex digits",
                n + 1,
                name.trim()
            ));
        }
        users.insert(name.trim().to_string(), digest);
    }
    Ok(users)
}

fn validate_web(web: &WebConfig, base_dir: &Path, report: &mut dyn FnMut(String, String)) {
    if web.listen.parse::<SocketAddr>().is_err() {
        report(
            "web.listen".into(),
            "give `address:port`, e.g. `127.0.0.1:8080`".into(),
        );
    }
    if web.tls_cert.is_some() != web.tls_key.is_some() {
        report("web".into(), "`tls_cert` and `tls_key` go together".into());
    }
    for (key, path) in [("tls_cert", &web.tls_cert), ("tls_key", &web.tls_key)] {
        if let Some(path) = path {
            let full = base_dir.join(path);
            if !full.is_file() {
                report(
                    format!("web.{key}"),
                    format!("no such file: {}", full.display()),
                );
            }
        }
    }
    if !(web.session_idle_hours.is_finite() && web.session_idle_hours > 0.0) {
        report(
            "web.session_idle_hours".into(),
            "must be a number of hours above 0".into(),
        );
    }
    let mut names = BTreeSet::new();
    for (i, u) in web.users.iter().enumerate() {
        if u.name.trim().is_empty() {
            report(format!("web.users[{i}].name"), "must not be empty".into());
        }
        if !names.insert(u.name.as_str()) {
            report(
                format!("web.users[{i}].name"),
                format!("`{}` is declared twice", u.name),
            );
        }
        if let Err(err) = argon2::PasswordHash::new(&u.password_hash) {
            report(
                format!("web.users[{i}].password_hash"),
                format!(
                    "not an argon2 hash in PHC form ({err}); make one with `parkguard user add`"
                ),
            );
        }
    }
    for (i, t) in web.tokens.iter().enumerate() {
        if t.token_sha256.len() != 64 || !t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            report(
                format!("web.tokens[{i}].token_sha256"),
                "must be 64 hex digits; make one with `parkguard token new`".into(),
            );
        }
    }
    if let Some(hash) = &web.metrics_token_sha256 {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            report(
                "web.metrics_token_sha256".into(),
                "must be 64 hex digits; make one with `parkguard token new prometheus --role viewer`"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_frame_gap_is_three_and_a_half_characters_with_a_floor_above_19200_baud() {
        let line = |baud, parity, stop_bits| SerialConfig {
            baud,
            parity,
            data_bits: 8,
            stop_bits,
        };
        // 9600 8N1: 10 bits a character, 3.5 characters = 3.646 ms.
        assert_eq!(
            line(9600, Parity::None, 1).frame_gap(),
            Duration::from_micros(3645)
        );
        // 9600 8E1: 11 bits.
        assert_eq!(
            line(9600, Parity::Even, 1).frame_gap(),
            Duration::from_micros(4010)
        );
        assert_eq!(
            line(115_200, Parity::None, 1).frame_gap(),
            Duration::from_micros(1750)
        );
    }
}
