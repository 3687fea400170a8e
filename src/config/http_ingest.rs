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
    /// `[http_ingest.ctwing_api]`: the CTWing application's API credentials, with which
    /// parkguard sends commands to the endpoint's devices (CreateCommand). Only on a `ctwing`
    /// endpoint; without it the endpoint only receives.
    #[serde(default)]
    pub ctwing_api: Option<CtwingApiConfig>,
    /// `[http_ingest.onenet_api]`: the OneNET Studio product's API credentials, with which
    /// parkguard calls the endpoint's devices' services (`thingmodel/call-service`). Only on
    /// an `onenet` endpoint; without it the endpoint only receives.
    #[serde(default)]
    pub onenet_api: Option<OnenetApiConfig>,
}

/// The public CTWing API gateway.
pub const CTWING_API_URL: &str = "https://ag-api.ctwing.cn";
/// The public OneNET Studio application API.
pub const ONENET_API_URL: &str = "https://iot-api.heclouds.com";

/// `[http_ingest.ctwing_api]`: CTWing (AEP) application credentials for commands to devices
/// (`POST /aep_device_command/command`, CreateCommand version 20190712225145). Each request is
/// signed with the application's secret (HMAC-SHA1 over `application`, `timestamp`, the
/// product's `MasterKey` and the body) and answered with a `code`, 0 for success. Find the
/// values in the CTWing console: the application's App Key and App Secret, the product's ID
/// and Master-APIkey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtwingApiConfig {
    /// The application's App Key (sent as the `application` header).
    pub app_key: String,
    /// The application's App Secret, which signs every request: `{ env = "VAR" }`,
    /// `{ file = "path" }` or `{ credential = "NAME" }`.
    pub app_secret: Secret,
    /// The product's Master-APIkey (the `MasterKey` header, signed too).
    pub master_key: Secret,
    /// The product's ID (an integer, `productId` of the command).
    pub product_id: u64,
    /// The API gateway, without a trailing `/`; change it only for a private deployment or a
    /// test stand-in.
    #[serde(default = "default_ctwing_api_url")]
    pub api_url: String,
    /// The command's `operator` (shown in the CTWing console's command log).
    #[serde(default = "default_operator")]
    pub operator: String,
    /// Seconds (0 to 864000) the platform keeps a command for a sleeping NB-IoT device before
    /// it expires; 0 sends it at once or not at all.
    #[serde(default = "default_command_ttl_s")]
    pub ttl_s: u32,
    /// Seconds (1 to 60) each request may take; a request that takes longer, a connection
    /// error or an HTTP 5xx is tried again (three tries in all, with jittered backoff).
    #[serde(default = "default_api_timeout_s")]
    pub timeout_s: u64,
}

/// `[http_ingest.onenet_api]`: OneNET Studio product credentials for commands to devices
/// (`POST /thingmodel/call-service` with `{product_id, device_name, identifier, params}`).
/// Each request carries an `authorization` token signed with the product's access key
/// (HMAC-SHA1 over `et`, `method`, `res = products/{product_id}` and `version`, valid for an
/// hour) and is answered with a `code`, 0 for success.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnenetApiConfig {
    /// The product's ID as the console shows it (`product_id` of the calls).
    pub product_id: String,
    /// The product's access key (Base64, as the console hands it out), which signs the
    /// token: `{ env = "VAR" }`, `{ file = "path" }` or `{ credential = "NAME" }`.
    pub access_key: Secret,
    /// The application API, without a trailing `/`; change it only for a private
    /// deployment or a test stand-in.
    #[serde(default = "default_onenet_api_url")]
    pub api_url: String,
    /// Seconds (1 to 60) each request may take; a request that takes longer, a connection
    /// error or an HTTP 5xx is tried again (three tries in all, with jittered backoff).
    #[serde(default = "default_api_timeout_s")]
    pub timeout_s: u64,
}

fn default_ctwing_api_url() -> String {
    CTWING_API_URL.into()
}
fn default_onenet_api_url() -> String {
    ONENET_API_URL.into()
}
fn default_operator() -> String {
    "parkguard".into()
}
fn default_command_ttl_s() -> u32 {
    7200
}
fn default_api_timeout_s() -> u64 {
    10
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
            Some(p) => {
                let hex_ack = p
                    .ack
                    .as_ref()
                    .and_then(|a| a.command.as_ref())
                    .is_some_and(|c| c.hex.is_some());
                if hex_ack && e.onenet_api.is_some() {
                    report(
                        format!("http_ingest[{i}].onenet_api"),
                        format!(
                            "profile `{}` acknowledges with `hex` bytes, which OneNET Studio does not take: give its `[ack] command` a `service`",
                            e.profile
                        ),
                    );
                }
            }
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
        validate_api(i, e, report);
    }
}

/// The platform API credentials: the endpoint's own platform, a plain http(s) URL, sane limits.
fn validate_api(i: usize, e: &HttpIngestConfig, report: &mut dyn FnMut(String, String)) {
    let check = |key: &str, url: &str, timeout_s: u64, report: &mut dyn FnMut(String, String)| {
        if let Some(problem) = api_url_problem(url) {
            report(format!("http_ingest[{i}].{key}.api_url"), problem);
        }
        if timeout_s == 0 || timeout_s > 60 {
            report(
                format!("http_ingest[{i}].{key}.timeout_s"),
                "must be between 1 and 60".into(),
            );
        }
    };
    if let Some(api) = &e.ctwing_api {
        check("ctwing_api", &api.api_url, api.timeout_s, report);
        if e.platform != IngestPlatform::Ctwing {
            report(
                format!("http_ingest[{i}].ctwing_api"),
                "only a `ctwing` endpoint takes CTWing credentials; use `onenet_api`".into(),
            );
        }
        if api.app_key.trim().is_empty() {
            report(
                format!("http_ingest[{i}].ctwing_api.app_key"),
                "must not be empty".into(),
            );
        }
        if api.operator.trim().is_empty() {
            report(
                format!("http_ingest[{i}].ctwing_api.operator"),
                "must not be empty: CTWing requires an operator".into(),
            );
        }
        if api.ttl_s > 864_000 {
            report(
                format!("http_ingest[{i}].ctwing_api.ttl_s"),
                "must be at most 864000 (10 days), CTWing's limit".into(),
            );
        }
    }
    if let Some(api) = &e.onenet_api {
        check("onenet_api", &api.api_url, api.timeout_s, report);
        if e.platform != IngestPlatform::Onenet {
            report(
                format!("http_ingest[{i}].onenet_api"),
                "only an `onenet` endpoint takes OneNET credentials; use `ctwing_api`".into(),
            );
        }
        if api.product_id.trim().is_empty() {
            report(
                format!("http_ingest[{i}].onenet_api.product_id"),
                "must not be empty".into(),
            );
        }
    }
}

/// Why `url` cannot be a platform API's base URL, if it cannot.
fn api_url_problem(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        None => Some("must start with `https://` (or `http://` for a local stand-in)".into()),
        Some(host) if host.is_empty() || host.starts_with('/') => {
            Some("must name a host, e.g. `https://ag-api.ctwing.cn`".into())
        }
        Some(_) if url.ends_with('/') || url.contains('?') || url.contains('#') => {
            Some("no trailing `/`, query or fragment: the API's paths are appended".into())
        }
        Some(_) => None,
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
    use super::{api_url_problem, path_problem};

    #[test]
    fn api_credentials_belong_to_their_own_platform() {
        let endpoint = |text: &str| -> super::HttpIngestConfig {
            toml::from_str(&format!(
                "name = \"e\"\npath = \"/ingest/e\"\ntoken = {{ env = \"T\" }}\nprofile = \"p\"\n{text}"
            ))
            .expect("endpoint")
        };
        let problems = |e: &super::HttpIngestConfig| {
            let mut found = Vec::new();
            super::validate_api(0, e, &mut |path, _| found.push(path));
            found
        };
        let ctwing_api = "[ctwing_api]\napp_key = \"k\"\napp_secret = { env = \"S\" }\n\
                          master_key = { env = \"M\" }\nproduct_id = 1\n";
        let onenet_api = "[onenet_api]\nproduct_id = \"p\"\naccess_key = { env = \"K\" }\n";
        let ok = endpoint(&format!("platform = \"ctwing\"\n{ctwing_api}"));
        assert_eq!(ok.ctwing_api.as_ref().map(|a| a.ttl_s), Some(7200));
        assert!(problems(&ok).is_empty());
        let ok = endpoint(&format!("platform = \"onenet\"\n{onenet_api}"));
        assert!(problems(&ok).is_empty());
        let crossed = endpoint(&format!("platform = \"onenet\"\n{ctwing_api}"));
        assert_eq!(problems(&crossed), ["http_ingest[0].ctwing_api"]);
        let crossed = endpoint(&format!("platform = \"ctwing\"\n{onenet_api}"));
        assert_eq!(problems(&crossed), ["http_ingest[0].onenet_api"]);
        let bad = endpoint(&format!(
            "platform = \"ctwing\"\n{ctwing_api}api_url = \"ag-api.ctwing.cn/\"\ntimeout_s = 0\nttl_s = 900000\n"
        ));
        assert_eq!(
            problems(&bad),
            [
                "http_ingest[0].ctwing_api.api_url",
                "http_ingest[0].ctwing_api.timeout_s",
                "http_ingest[0].ctwing_api.ttl_s"
            ]
        );
    }

    #[test]
    fn api_urls_are_plain_bases() {
        assert_eq!(api_url_problem("https://ag-api.ctwing.cn"), None);
        assert_eq!(api_url_problem("http://127.0.0.1:8080"), None);
        for bad in [
            "ag-api.ctwing.cn",
            "https://",
            "https:///x",
            "https://a/",
            "https://a?x=1",
            "ftp://a",
        ] {
            assert!(api_url_problem(bad).is_some(), "{bad}");
        }
    }

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
