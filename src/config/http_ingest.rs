//! `[[http_ingest]]`: endpoints on the web server that take the pushes of carrier IoT platforms
//! (China Telecom CTWing/AEP, China Mobile OneNET), where NB-IoT and 4G detectors report.
//!
//! Owns: the section's schema and its checks. Must not touch: the endpoints themselves
//! (`ingest::http` parses and verifies, the web server serves).

use serde::Deserialize;

use super::site::unique_ids;
use super::{References, Secret};

/// Which platform pushes to an endpoint, and so its envelope and verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestPlatform {
    /// China Telecom CTWing (AEP) subscription pushes (`dataReport`, `eventReport`,
    /// `deviceOnlineOfflineReport`). CTWing does not sign its pushes: the subscription URL
    /// carries parkguard's own secret, `https://HOST/PATH?token=SECRET`, compared in constant
    /// time.
    Ctwing,
    /// China Mobile OneNET HTTP push, both the NB-IoT suite's envelope
    /// (`{"msg": …, "msg_signature": …, "nonce": …}`) and OneNET Studio's
    /// (`{"msg": "…", "signature": …, "nonce": …, "time": …, "id": …}`), each signed with
    /// Base64(MD5(token + nonce + msg)); the URL verification handshake (`GET
    /// PATH?msg=…&nonce=…&signature=…`) is answered on the same path.
    Onenet,
}

/// The fewest characters an endpoint's token may have. The token is all that keeps strangers
/// from raising and clearing alarms through an endpoint that takes no login; OneNET takes
/// tokens of 3 to 32 characters, so 16 fits both platforms.
pub const MIN_TOKEN_CHARS: usize = 16;

impl IngestPlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestPlatform::Ctwing => "ctwing",
            IngestPlatform::Onenet => "onenet",
        }
    }
}

/// `[[http_ingest]]`: one push endpoint of a carrier IoT platform, served on the `[web]` server
/// (which it requires). The platform must reach it over HTTPS: give `[web]` a certificate or
/// put a reverse proxy in front.
///
/// Devices are the site's `[[devices]]`: a push names its device by the platform's device id
/// (CTWing `deviceId`, OneNET NB-IoT `dev_id`, OneNET Studio `deviceName`) and usually by its
/// IMEI; a `[[devices]]` entry whose `id` is either one and whose `profile` is the endpoint's
/// matches (the platform's device id is looked up first). An endpoint takes only its own
/// devices: its token writes nothing for the site's other devices. A push for no such device
/// is refused with 404 and counted
/// (`parkguard_http_ingest_requests_total{result="unknown_device"}` and
/// `parkguard_decode_errors_total{reason="unknown_device"}`).
///
/// Each device message becomes one flat JSON document that the profile's `[payload]` mapping
/// decodes: the thing-model properties, data points (by `ds_id`) or event fields as
/// `{identifier: value}`, plus `device_id`, `imei`, `ts` (milliseconds since the epoch: map it
/// with `timestamp = { pointer = "/ts", unit = "ms" }`), `message_type` and, for online and
/// offline reports, `online` (a boolean). A OneNET Studio event also gives `event`, the
/// event's identifier, for `state` rules. The data points of one device in one NB-IoT push
/// are one document, dated by the latest `at`. CTWing's transparent `APPdata` (Base64 of the
/// device's own bytes) is passed on as the text `APPdata`, which `[payload.bytes]` reads.
///
/// A push is answered 200 only once its readings are committed to the outbox, so a push lost
/// in a crash is sent again by the platform; 503 when that takes longer than
/// `commit_timeout_s`, 413 over `max_body_bytes`, 400 for a body that is not the platform's
/// envelope, 403 for a wrong token or signature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestConfig {
    /// Name of the endpoint, used in logs and as the `endpoint` label of its metrics.
    pub name: String,
    /// `ctwing` or `onenet`.
    pub platform: IngestPlatform,
    /// The URL path served, e.g. `/ingest/ctwing`; the platform's subscription points at
    /// `https://HOST:PORT/ingest/ctwing` (plus `?token=SECRET` for CTWing). It must not be
    /// under `/api/` or `/assets/`, nor one of the web UI's own paths.
    pub path: String,
    /// The endpoint's secret, never written here: `{ env = "VAR" }`, `{ file = "path" }` or
    /// `{ credential = "NAME" }`. For CTWing the value of `?token=` in the subscription URL;
    /// for OneNET the push configuration's Token, with which the platform signs its pushes.
    /// At least 16 characters, random (`openssl rand -hex 16`): it is the endpoint's only
    /// protection.
    pub token: Secret,
    /// The device profile whose `[payload]` mapping decodes the devices' documents. The
    /// endpoint's devices are the `[[devices]]` declared with this profile.
    pub profile: String,
    /// Largest request body accepted, in bytes (1024 to 1048576); a push announcing a larger
    /// `Content-Length` is refused with 413 without being read, and one sent in chunks is
    /// read up to this size and refused there.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds (1 to 60) a push may wait for its commit to the outbox; beyond that it is
    /// answered 503 and the platform sends it again.
    #[serde(default = "default_commit_timeout_s")]
    pub commit_timeout_s: u64,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_commit_timeout_s() -> u64 {
    10
}

/// Paths of the web UI itself, which an endpoint may not take.
const RESERVED_PATHS: [&str; 5] = ["/", "/healthz", "/readyz", "/metrics", "/api"];

/// `[[http_ingest]]`: unique names and paths, a `[web]` server to serve them, a plain path, a
/// profile with a payload mapping, sane limits.
pub(super) fn validate_http_ingest(
    endpoints: &[HttpIngestConfig],
    has_web: bool,
    refs: &References<'_>,
    report: &mut dyn FnMut(String, String),
) {
    unique_ids(endpoints.iter().map(|e| &e.name), "http_ingest", report);
    let mut paths = std::collections::BTreeSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        if !has_web {
            report(
                format!("http_ingest[{i}]"),
                "needs a `[web]` section: the endpoint is served by the web server".into(),
            );
        }
        if let Some(problem) = path_problem(&e.path) {
            report(format!("http_ingest[{i}].path"), problem);
        } else if !paths.insert(e.path.as_str()) {
            report(
                format!("http_ingest[{i}].path"),
                format!("`{}` is already served by another endpoint", e.path),
            );
        }
        match refs.profiles.get(&e.profile) {
            None => report(
                format!("http_ingest[{i}].profile"),
                refs.dangling_profile(&e.profile),
            ),
            Some(p) if p.payload.is_none() => report(
                format!("http_ingest[{i}].profile"),
                format!(
                    "profile `{}` has no `[payload]` mapping to decode pushes with",
                    e.profile
                ),
            ),
            Some(_) => {}
        }
        if e.max_body_bytes < 1024 {
            report(
                format!("http_ingest[{i}].max_body_bytes"),
                "must be at least 1024: a single push is about that large".into(),
            );
        }
        if e.max_body_bytes > 1 << 20 {
            report(
                format!("http_ingest[{i}].max_body_bytes"),
                "must be at most 1048576: a push is a few kilobytes, and every connection may hold this much".into(),
            );
        }
        if e.commit_timeout_s == 0 || e.commit_timeout_s > 60 {
            report(
                format!("http_ingest[{i}].commit_timeout_s"),
                "must be between 1 and 60".into(),
            );
        }
    }
}

/// Why `path` cannot be an endpoint's path, if it cannot.
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Some("must start with `/` and name a path, e.g. `/ingest/ctwing`".into());
    }
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if !plain || path.contains("//") || path.ends_with('/') || path.contains("/.") {
        return Some(
            "only letters, digits, `-`, `_`, `.` and single `/` between segments; no trailing `/`"
                .into(),
        );
    }
    let taken = RESERVED_PATHS.contains(&path)
        || path.starts_with("/api/")
        || path.starts_with("/assets/")
        || path == "/assets";
    taken.then(|| format!("`{path}` belongs to the web UI; use e.g. `/ingest/NAME`"))
}

#[cfg(test)]
mod tests {
    use super::path_problem;

    #[test]
    fn endpoint_paths_are_plain_and_stay_off_the_web_uis_own() {
        assert_eq!(path_problem("/ingest/ctwing"), None);
        assert_eq!(path_problem("/push/onenet-1"), None);
        for bad in [
            "ingest",
            "/",
            "/api/x",
            "/assets/a.js",
            "/metrics",
            "/in/:id",
            "/in/*rest",
            "/in//x",
            "/in/",
            "/in/../x",
            "/in?x=1",
        ] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
    }
}
