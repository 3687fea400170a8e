//! `[web]`: the operators' web UI and API, its logins, tokens and limits.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

impl WebConfig {
    /// The operator number GB/T 26875 records carry for user `name`: the user's place in
    /// `[[web.users]]`, from 1; 0 for anyone else (API tokens, the gateway itself).
    pub fn operator_number(&self, name: &str) -> u8 {
        self.users
            .iter()
            .position(|u| u.name == name)
            .map_or(0, |i| (i + 1).min(255) as u8)
    }
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
    /// What the user may do: `viewer`, `operator`, `technician` or `admin`, each role allowed
    /// all that the roles before it are.
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
    /// What the token may do, as a user's `role`: give a machine client the least it needs
    /// (`viewer` for a dashboard or Prometheus).
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits (tokens are long random strings, so a fast hash
    /// suffices and the token itself is never stored).
    pub token_sha256: String,
}

pub(super) fn validate_web(
    web: &WebConfig,
    base_dir: &Path,
    report: &mut dyn FnMut(String, String),
) {
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
        // The journal's name for the gateway itself (automatic confirmations, expiries).
        if u.name == "system" {
            report(
                format!("web.users[{i}].name"),
                "`system` is the gateway's own name in the journal; choose another".into(),
            );
        }
        if !names.insert(u.name.as_str()) {
            report(
                format!("web.users[{i}].name"),
                format!("`{}` is declared twice", u.name),
            );
        }
        if let Err(err) = argon2::password_hash::phc::PasswordHash::new(&u.password_hash) {
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
