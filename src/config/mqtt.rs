//! `[[mqtt]]`: the broker connections ingest subscribes on, their TLS and subscriptions.

use std::path::PathBuf;

use serde::Deserialize;

use super::site::unique_ids;
use super::topic::TopicTemplate;
use super::{References, Secret};

/// MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    /// MQTT 3.1.1, for brokers that do not speak MQTT 5 (and the embedded broker).
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5, which also announces `max_unacked` to the broker as its receive maximum.
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
    /// User name to log in to the broker with. Towards the embedded broker with a
    /// `users_file`, the daemon's own login is used instead.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`, never written here: `{ env = "VAR" }`, `{ file = "path" }` or
    /// `{ credential = "NAME" }` (a systemd credential, read from `$CREDENTIALS_DIRECTORY/NAME`).
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
pub(super) fn default_true() -> bool {
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

/// `[[mqtt]]`: unique names, QoS and keep-alive in range, TLS files present, every
/// subscription with a valid topic template and a profile that has a payload mapping.
pub(super) fn validate_mqtt(
    mqtt: &[MqttConfig],
    refs: &References,
    report: &mut dyn FnMut(String, String),
) {
    unique_ids(mqtt.iter().map(|m| &m.name), "mqtt", report);
    for (i, m) in mqtt.iter().enumerate() {
        if m.max_unacked == 0 {
            report(
                format!("mqtt[{i}].max_unacked"),
                "must be at least 1".into(),
            );
        }
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
        if let Some(tls) = &m.tls {
            for (key, path) in [
                ("ca", Some(&tls.ca)),
                ("client_cert", tls.client_cert.as_ref()),
                ("client_key", tls.client_key.as_ref()),
            ] {
                if let Some(path) = path {
                    let full = refs.base_dir.join(path);
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
            match refs.profiles.get(&s.profile) {
                None => report(
                    format!("mqtt[{i}].subscriptions[{j}].profile"),
                    refs.dangling_profile(&s.profile),
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
}
