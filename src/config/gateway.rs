//! `[gateway]`: this gateway's name, store, profiles and rule files, and the limits that keep
//! it safe under bad input and on small flash.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// `[gateway]`: sizes and durations in range.
pub(super) fn validate_gateway(gateway: &GatewayConfig, report: &mut dyn FnMut(String, String)) {
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
}
