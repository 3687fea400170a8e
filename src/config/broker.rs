//! `[broker]`: the MQTT broker run inside the daemon (rumqttd), its logins, topic rules and TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// PEM certificate chain, relative to this file's folder. With `tls_key`, clients speak
    /// MQTT over TLS on `listen` (port 8883 by convention) instead of plain MQTT.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1), relative to this file's folder.
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
    /// Topic filters a login may publish to (a last will included), `{user}` standing for
    /// its name. Empty: no login may publish.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters a login may subscribe within: each filter it asks for must lie inside
    /// one of them. Empty: no login may subscribe.
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

pub(super) fn validate_embedded_broker(
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
