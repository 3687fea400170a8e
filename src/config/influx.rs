//! `[[influx]]`: the InfluxDB servers (1.x, 2.x and compatible) the outbox drains to.

use std::path::PathBuf;

use serde::Deserialize;

use super::mqtt::default_true;
use super::site::unique_ids;
use super::Secret;

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
    /// v1: password for `username`, never written here: `{ env = "VAR" }`, `{ file = "path" }`
    /// or `{ credential = "NAME" }` (a systemd credential, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`). Without `username` it is not sent.
    #[serde(default)]
    pub password: Option<Secret>,
    /// v2: organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: API token with write access to `bucket`, never written here: `{ env = "VAR" }`,
    /// `{ file = "path" }` or `{ credential = "NAME" }` (a systemd credential, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`).
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

/// `[[influx]]`: unique names, an http(s) URL, what the API version needs.
pub(super) fn validate_influx(influx: &[InfluxSinkConfig], report: &mut dyn FnMut(String, String)) {
    unique_ids(influx.iter().map(|s| &s.name), "influx", report);
    for (i, s) in influx.iter().enumerate() {
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
            InfluxApi::V1 => needs("database", s.database.is_some(), report),
            InfluxApi::V2 => {
                needs("org", s.org.is_some(), report);
                needs("bucket", s.bucket.is_some(), report);
                needs("token", s.token.is_some(), report);
            }
        }
        if s.batch_points == 0 {
            report(
                format!("influx[{i}].batch_points"),
                "must be at least 1".into(),
            );
        }
    }
}
