//! HTTP ingest from the carrier IoT platforms through the real daemon, pushed by the
//! independent platform stand-in tests/interop/iot_platform.py (written from CTWing's and
//! OneNET's published descriptions, not from parkguard's code), which builds and signs each
//! envelope itself:
//!
//! - CTWing thing-model data, event and online reports (with the subscription URL's `?token=`),
//!   OneNET NB-IoT data points (object and array, the device found by its IMEI) and OneNET
//!   Studio property pushes become readings in the local history, and a smoke detector's alarm
//!   (CTWing) and a gas detector's own high alarm (OneNET Studio) raise their rules' alarms;
//! - OneNET's URL verification is answered with its `msg`;
//! - a wrong or missing token, a forged signature, a changed body, a malformed body, a body
//!   over `max_body_bytes` and a push for an undeclared device are refused with 403, 403, 403,
//!   400, 413 and 404, and counted on /metrics by endpoint and result;
//! - a push during which the daemon crashes after the outbox commit and before its
//!   acknowledgement (the test-only crash hook, src/crashpoint.rs) is not answered 200, so the
//!   platform sends it again, and the resend is recorded after the restart.

use crate::support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value};
use support::jsonl::JsonLines;
use support::*;

const CTWING_TOKEN: &str = "ct-subscription-secret-42";
const ONENET_TOKEN: &str = "pgPushToken0001-of-the-test";
/// The CTWing smoke detector, declared by its CTWing deviceId.
const SMOKE: &str = "15000001860000000000001";
/// The CTWing smoke detector on a transparent product (its own bytes in `APPdata`).
const SMOKE_BYTES: &str = "15000002860000000000003";
/// The OneNET NB-IoT gas detector, declared by its IMEI (its `dev_id` is not declared).
const GAS_NBIOT_IMEI: &str = "860000000000002";
const GAS_NBIOT_DEV_ID: u64 = 2016617;
/// The OneNET Studio gas detector, declared by its deviceName.
const GAS_STUDIO: &str = "gas-studio-1";

/// The platform stand-in as a child process (`support::jsonl`), acting as the push side.
struct Platform(JsonLines);

impl Platform {
    fn start() -> Platform {
        Platform(iot_platform(&[
            "--ctwing-app-key",
            "pgAppKey0001",
            "--ctwing-secret",
            "pgSecret0001",
            "--ctwing-master-key",
            "5c1d7e0a9b2f4a6c8d0e1f2a3b4c5d6e",
            "--onenet-token",
            ONENET_TOKEN,
            "--onenet-product-id",
            "pgPid0001",
            "--onenet-access-key",
            "cGFya2d1YXJkLW9uZW5ldC10ZXN0LWFjY2Vzcy1rZXk=",
        ]))
    }

    /// Runs a push-side command and returns the event it printed (`pushed`, `url_verified`).
    fn send(&mut self, command: Value) -> Value {
        let answers = |events: Vec<Value>| {
            events
                .into_iter()
                .filter(|e| e["event"] == "pushed" || e["event"] == "url_verified")
                .collect::<Vec<_>>()
        };
        let before = answers(self.0.events()).len();
        self.0.command(command.clone());
        let after = answers(self.0.events());
        assert!(after.len() > before, "{command} printed no answer");
        after[before].clone()
    }

    /// Sends a push and asserts the gateway's answer status.
    fn expect(&mut self, status: u64, command: Value) -> Value {
        let event = self.send(command.clone());
        assert_eq!(event["status"], status, "{command}\n-> {event:#}");
        event
    }
}

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value).expect("secret");
    path.display().to_string()
}

fn now_ms() -> i64 {
    now_s() * 1000
}

struct Site {
    gateway: Gateway,
    base: String,
    viewer: String,
    ctwing_url: String,
    onenet_url: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn start() -> Site {
    let secrets = tempfile::tempdir().expect("dir");
    let ctwing_token = secret_file(secrets.path(), "ctwing", CTWING_TOKEN);
    let onenet_token = secret_file(secrets.path(), "onenet", ONENET_TOKEN);
    let viewer = parkguard::web::random_token();
    let text = format!(
        r#"{header}
[[devices]]
id = "{SMOKE}"
location = "l"
profile = "ctwing_nb_smoke"
name = "二楼烟感"

[[devices]]
id = "{SMOKE_BYTES}"
location = "l"
profile = "ctwing_nb_smoke_bytes"
name = "仓库烟感"

[[devices]]
id = "{GAS_NBIOT_IMEI}"
location = "l"
profile = "onenet_nb_gas"
name = "厨房燃气"

[[devices]]
id = "{GAS_STUDIO}"
location = "l"
profile = "onenet_nb_gas"
name = "锅炉房燃气"

[[http_ingest]]
name = "ctwing"
platform = "ctwing"
path = "/ingest/ctwing"
token = {{ file = "{ctwing_token}" }}
profile = "ctwing_nb_smoke"
max_body_bytes = 4096

[[http_ingest]]
name = "ctwing-bytes"
platform = "ctwing"
path = "/ingest/ctwing-bytes"
token = {{ file = "{ctwing_token}" }}
profile = "ctwing_nb_smoke_bytes"

[[http_ingest]]
name = "onenet"
platform = "onenet"
path = "/ingest/onenet"
token = {{ file = "{onenet_token}" }}
profile = "onenet_nb_gas"
max_body_bytes = 4096

{web}
[[web.tokens]]
name = "dashboard"
role = "viewer"
token_sha256 = "{viewer_hash}"
"#,
        header = site_header("l", "history_write_s = 1\nshutdown_grace_s = 1"),
        web = web_section(&[]),
        viewer_hash = parkguard::web::token_sha256_hex(&viewer),
    );
    let (dir, path) = site(&text);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    let base = web_url(&gateway);
    Site {
        ctwing_url: format!("{base}/ingest/ctwing"),
        onenet_url: format!("{base}/ingest/onenet"),
        base,
        viewer,
        gateway,
        _dirs: (dir, secrets),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

impl Site {
    async fn get(&self, path: &str) -> Value {
        let response = client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.viewer)
            .send()
            .await
            .expect(path);
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
        response.json().await.expect("json")
    }

    /// The local history of a quantity (the last hour), once `ready` holds for its points.
    async fn history(
        &self,
        device: &str,
        quantity: &str,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let path = format!("/api/history?device={device}&quantity={quantity}&hours=1");
        // Buckets are written once their 10 s period has ended.
        for _ in 0..300 {
            let points = self
                .get(&path)
                .await
                .as_array()
                .cloned()
                .unwrap_or_default();
            if ready(&points) {
                return points;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "history of {device} {quantity}: {:#}",
            self.get(&path).await
        );
    }

    /// A device's latest value of a quantity, as `/api/devices` shows it.
    async fn latest(&self, device: &str, quantity: &str) -> Value {
        let devices = self.get("/api/devices").await;
        devices
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == device))
            .map(|d| d["values"][quantity]["value"].clone())
            .unwrap_or(Value::Null)
    }

    /// The active alarm with this key, once it is there.
    async fn alarm(&self, key: &str) -> Value {
        for _ in 0..100 {
            let alarms = self.get("/api/alarms").await;
            if let Some(alarm) = alarms
                .as_array()
                .and_then(|a| a.iter().find(|a| a["key"] == key))
            {
                return alarm.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no alarm {key}: {:#}", self.get("/api/alarms").await);
    }

    /// `parkguard_http_ingest_requests_total{endpoint, result}` now.
    async fn counted(&self, endpoint: &str, result: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        sample(
            &text,
            "parkguard_http_ingest_requests_total",
            &[("endpoint", endpoint), ("result", result)],
        )
    }
}

/// The value of the sample of `family` with these labels (among others) in exposition text.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {family} {labels:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_of_each_kind_become_readings_and_raise_alarms() {
    let mut platform = Platform::start();
    let site = start().await;

    // CTWing: a thing-model data report, then the detector's alarm as an event report, and an
    // online report.
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "ctwing", "url": site.ctwing_url, "token": CTWING_TOKEN,
               "message": {"messageType": "dataReport", "deviceId": SMOKE,
                           "IMEI": "860000000000001", "productId": "15000001",
                           "payload": {"event": "normal", "smoke_pct": 3.5, "battery_pct": 87}}}),
    );
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "ctwing", "url": site.ctwing_url, "token": CTWING_TOKEN,
               "message": {"messageType": "eventReport", "deviceId": SMOKE,
                           "IMEI": "860000000000001", "eventType": 1,
                           "eventContent": {"event": "alarm", "smoke_pct": 41.0}}}),
    );
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "ctwing", "url": site.ctwing_url, "token": CTWING_TOKEN,
               "message": {"messageType": "deviceOnlineOfflineReport", "deviceId": SMOKE,
                           "eventType": 1}}),
    );

    // CTWing, a transparent product: the detector's own bytes (alarm, 87 %, 41.0 % smoke,
    // 23.5 °C, -95 dBm), which the profile reads at byte offsets.
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "ctwing", "url": format!("{}-bytes", site.ctwing_url),
               "token": CTWING_TOKEN,
               "message": {"messageType": "dataReport", "deviceId": SMOKE_BYTES,
                           "IMEI": "860000000000003", "bytes_hex": "0157019A00EBFFA1"}}),
    );

    // OneNET: the URL verification handshake, then NB-IoT pushes (an object, an array with
    // two data points and an offline message) and a Studio property push.
    let verified =
        platform.send(json!({"cmd": "verify_url", "platform": "onenet", "url": site.onenet_url}));
    assert_eq!(verified["ok"], true, "{verified:#}");
    let point = |ds: &str, value: Value| {
        json!({"type": 1, "dev_id": GAS_NBIOT_DEV_ID, "ds_id": ds, "at": now_ms(),
               "value": value, "imei": GAS_NBIOT_IMEI})
    };
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "onenet", "style": "nbiot", "url": site.onenet_url,
               "msg": point("lel", json!(4.5))}),
    );
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "onenet", "style": "nbiot", "url": site.onenet_url,
               "msg": [point("lel", json!(6.5)), point("battery_pct", json!(77)),
                       {"type": 2, "dev_id": GAS_NBIOT_DEV_ID, "status": 0, "login_type": 10,
                        "at": now_ms(), "imei": GAS_NBIOT_IMEI}]}),
    );
    platform.expect(
        200,
        json!({"cmd": "push", "platform": "onenet", "style": "studio", "url": site.onenet_url,
               "msg": {"deviceName": GAS_STUDIO, "productId": "pgPid0001",
                       "messageType": "notify", "notifyType": "property",
                       "data": {"id": "42", "params": {
                           "lel": {"value": 12.0, "time": now_ms()},
                           "state": {"value": "high_alarm", "time": now_ms()}}}}}),
    );

    // Readings: the latest values, with the values pushed, and the gas detector's two lel
    // data points in the local history (lel is watched by a rule: 10 s buckets).
    assert_eq!(site.latest(SMOKE, "smoke_pct").await, 41.0);
    assert_eq!(site.latest(SMOKE, "battery_pct").await, 87);
    assert_eq!(site.latest(SMOKE, "online").await, true);
    assert_eq!(site.latest(SMOKE_BYTES, "event").await, "alarm");
    assert_eq!(site.latest(SMOKE_BYTES, "battery_pct").await, 87);
    assert_eq!(site.latest(SMOKE_BYTES, "smoke_pct").await, 41.0);
    assert_eq!(site.latest(SMOKE_BYTES, "temp_c").await, 23.5);
    assert_eq!(site.latest(SMOKE_BYTES, "rsrp_dbm").await, -95);
    assert_eq!(site.latest(GAS_NBIOT_IMEI, "lel").await, 6.5);
    assert_eq!(site.latest(GAS_NBIOT_IMEI, "battery_pct").await, 77);
    assert_eq!(site.latest(GAS_NBIOT_IMEI, "online").await, false);
    assert_eq!(site.latest(GAS_STUDIO, "lel").await, 12.0);
    assert_eq!(site.latest(GAS_STUDIO, "status").await, "high_alarm");
    let count = |points: &[Value]| points.iter().filter_map(|p| p["n"].as_u64()).sum::<u64>();
    let gas = site.history(GAS_NBIOT_IMEI, "lel", |p| count(p) >= 2).await;
    let max = gas
        .iter()
        .filter_map(|p| p["max"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!((count(&gas), max), (2, 6.5), "{gas:?}");
    site.history(GAS_STUDIO, "lel", |p| count(p) >= 1).await;

    // Alarms: the smoke detector's alarm state (R13) and the gas detector's own high alarm
    // (its profile's device alarm on R11).
    let fire = site.alarm(&format!("R13/{SMOKE}/event")).await;
    assert_eq!(fire["state"], "unacknowledged", "{fire:#}");
    assert_eq!(fire["severity"], "critical", "{fire:#}");
    let fire = site.alarm(&format!("R13/{SMOKE_BYTES}/event")).await;
    assert_eq!(fire["state"], "unacknowledged", "{fire:#}");
    let gas_alarm = site.alarm(&format!("R11/{GAS_STUDIO}/lel")).await;
    assert_eq!(gas_alarm["severity"], "critical", "{gas_alarm:#}");

    assert_eq!(site.counted("ctwing", "accepted").await, 3.0);
    assert_eq!(site.counted("ctwing-bytes", "accepted").await, 1.0);
    assert_eq!(site.counted("onenet", "accepted").await, 3.0);
    assert_eq!(site.counted("onenet", "verified").await, 1.0);
    for result in [
        "bad_token",
        "bad_signature",
        "malformed",
        "too_large",
        "unknown_device",
    ] {
        assert_eq!(site.counted("ctwing", result).await, 0.0, "{result}");
        assert_eq!(site.counted("onenet", result).await, 0.0, "{result}");
    }
    site.gateway.shutdown().await;
    platform.0.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_with_their_status_and_counted() {
    let mut platform = Platform::start();
    let site = start().await;
    let smoke_report = json!({"messageType": "dataReport", "deviceId": SMOKE,
                              "payload": {"event": "normal", "smoke_pct": 1.0}});
    let ctwing = |token: Value, message: &Value| {
        json!({"cmd": "push", "platform": "ctwing", "url": site.ctwing_url, "token": token,
               "message": message})
    };

    // CTWing: the subscription URL's token.
    platform.expect(403, ctwing(json!("a-guess"), &smoke_report));
    platform.expect(403, ctwing(Value::Null, &smoke_report));
    let ctwing_with_token = format!("{}?token={CTWING_TOKEN}", site.ctwing_url);
    let raw = |url: &str, body: String| {
        json!({"cmd": "raw", "url": url, "method": "POST",
               "headers": {"Content-Type": "application/json"}, "body": body})
    };
    platform.expect(400, raw(&ctwing_with_token, "{\"messageType\":".into()));
    platform.expect(400, raw(&ctwing_with_token, "[1,2,3]".into()));
    let oversized = format!(
        r#"{{"messageType":"dataReport","deviceId":"{SMOKE}","payload":{{"note":"{}"}}}}"#,
        "x".repeat(5000)
    );
    platform.expect(413, raw(&ctwing_with_token, oversized));
    let stranger = json!({"messageType": "dataReport", "deviceId": "not-declared-1",
                          "IMEI": "869999999999999", "payload": {"smoke_pct": 1.0}});
    let refused = platform.expect(404, ctwing(json!(CTWING_TOKEN), &stranger));
    assert!(
        refused["body"]
            .as_str()
            .is_some_and(|b| b.contains("not-declared-1")),
        "{refused:#}"
    );
    // A device of the site that is not the endpoint's (declared with another profile): the
    // endpoint's token writes nothing for it.
    let not_its_own = json!({"messageType": "dataReport", "deviceId": GAS_STUDIO,
                             "payload": {"smoke_pct": 99.0}});
    platform.expect(404, ctwing(json!(CTWING_TOKEN), &not_its_own));
    platform.expect(200, ctwing(json!(CTWING_TOKEN), &smoke_report));

    // OneNET: signatures over the pushes and the URL verification.
    let gas_point = json!({"type": 1, "dev_id": GAS_NBIOT_DEV_ID, "ds_id": "lel",
                           "at": now_ms(), "value": 3.0, "imei": GAS_NBIOT_IMEI});
    let onenet = |style: &str, msg: &Value, tamper: Value| {
        json!({"cmd": "push", "platform": "onenet", "style": style, "url": site.onenet_url,
               "msg": msg, "tamper": tamper})
    };
    platform.expect(403, onenet("nbiot", &gas_point, json!("signature")));
    platform.expect(403, onenet("nbiot", &gas_point, json!("body")));
    let studio = json!({"deviceName": GAS_STUDIO, "messageType": "notify",
                        "notifyType": "property",
                        "data": {"params": {"lel": {"value": 2.0, "time": now_ms()}}}});
    platform.expect(403, onenet("studio", &studio, json!("signature")));
    platform.expect(403, onenet("studio", &studio, json!("body")));
    let forged = platform.send(json!({"cmd": "verify_url", "platform": "onenet",
                                      "url": site.onenet_url, "tamper": "signature"}));
    assert_eq!(forged["status"], 403, "{forged:#}");
    assert_eq!(forged["ok"], false);
    platform.expect(400, raw(&site.onenet_url, "{\"msg\":".into()));
    platform.expect(400, raw(&site.onenet_url, r#"{"nonce":"abcdefgh"}"#.into()));
    let big = json!({"type": 1, "dev_id": GAS_NBIOT_DEV_ID, "ds_id": "note", "at": now_ms(),
                     "value": "y".repeat(5000), "imei": GAS_NBIOT_IMEI});
    platform.expect(413, onenet("nbiot", &big, Value::Null));
    let stranger = json!({"deviceName": "gas-not-declared", "messageType": "notify",
                          "notifyType": "property",
                          "data": {"params": {"lel": {"value": 2.0, "time": now_ms()}}}});
    platform.expect(404, onenet("studio", &stranger, Value::Null));
    platform.expect(200, onenet("nbiot", &gas_point, Value::Null));

    for (endpoint, result, count) in [
        ("ctwing", "bad_token", 2.0),
        ("ctwing", "malformed", 2.0),
        ("ctwing", "too_large", 1.0),
        ("ctwing", "unknown_device", 2.0),
        ("ctwing", "accepted", 1.0),
        ("onenet", "bad_signature", 5.0),
        ("onenet", "malformed", 2.0),
        ("onenet", "too_large", 1.0),
        ("onenet", "unknown_device", 1.0),
        ("onenet", "accepted", 1.0),
        ("onenet", "verified", 0.0),
    ] {
        assert_eq!(
            site.counted(endpoint, result).await,
            count,
            "{endpoint} {result}"
        );
    }
    let metrics = client()
        .get(format!("{}/metrics", site.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(
            &metrics,
            "parkguard_decode_errors_total",
            &[("reason", "unknown_device")]
        ),
        3.0
    );
    // Nothing refused was recorded: only the accepted readings.
    assert_eq!(site.latest(SMOKE, "smoke_pct").await, 1.0);
    let count = |points: &[Value]| points.iter().filter_map(|p| p["n"].as_u64()).sum::<u64>();
    let gas = site.history(GAS_NBIOT_IMEI, "lel", |p| count(p) >= 1).await;
    assert_eq!(count(&gas), 1, "{gas:?}");
    assert_eq!(site.latest(GAS_STUDIO, "lel").await, Value::Null);
    site.gateway.shutdown().await;
    platform.0.stop();
}

// ---- a crash between the receipt of a push and its acknowledgement --------------------------

const SIGABRT: i32 = 6;

/// `parkguard run -c site`, logging to `log` (appended), armed at `crash` when given; returns
/// once its web server answers.
async fn spawn_serving_daemon(site: &Path, log: &Path, port: u16, crash: Option<&str>) -> Daemon {
    let daemon = spawn_daemon(site, log, crash);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    eventually("the daemon's web server", Duration::from_secs(30), || {
        let healthz = healthz.clone();
        async move {
            client()
                .get(&healthz)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cut_off_by_a_crash_before_its_acknowledgement_is_not_answered_200_and_its_resend_is_recorded(
) {
    let mut platform = Platform::start();
    let secrets = tempfile::tempdir().expect("dir");
    let onenet_token = secret_file(secrets.path(), "onenet", ONENET_TOKEN);
    let viewer = parkguard::web::random_token();
    let port = free_port();
    let text = format!(
        r#"{header}
[[devices]]
id = "{GAS_NBIOT_IMEI}"
location = "l"
profile = "onenet_nb_gas"

[[http_ingest]]
name = "onenet"
platform = "onenet"
path = "/ingest/onenet"
token = {{ file = "{onenet_token}" }}
profile = "onenet_nb_gas"

[web]
listen = "127.0.0.1:{port}"
[[web.tokens]]
name = "dashboard"
role = "viewer"
token_sha256 = "{viewer_hash}"
"#,
        header = site_header(
            "l",
            "store = \"pg.db\"\nhistory_write_s = 1\nshutdown_grace_s = 1"
        ),
        viewer_hash = parkguard::web::token_sha256_hex(&viewer),
    );
    let (dir, path) = site(&text);
    let log = dir.path().join("daemon.log");
    let url = format!("http://127.0.0.1:{port}/ingest/onenet");
    let push = json!({"cmd": "push", "platform": "onenet", "style": "nbiot", "url": url,
                      "msg": {"type": 1, "dev_id": GAS_NBIOT_DEV_ID, "ds_id": "lel",
                              "at": now_ms(), "value": 33.0, "imei": GAS_NBIOT_IMEI}});

    // Armed: the daemon aborts once the outbox writer has committed the push, before the
    // acknowledgement that would have let the handler answer 200.
    let point = "outbox_committed_before_ack";
    let mut daemon = spawn_serving_daemon(&path, &log, port, Some(&format!("{point}:1"))).await;
    let cut_off = platform.send(push.clone());
    assert_ne!(
        cut_off["status"], 200,
        "answered before the acknowledgement: {cut_off:#}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no crash");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.signal(), Some(SIGABRT), "{status}; log:\n{text}");
    assert!(
        text.contains(&format!("crash point {point} reached (test hook)")),
        "log:\n{text}"
    );

    // The platform sends it again (CTWing and OneNET retry what was not answered 200): after
    // the restart it is taken, and recorded.
    wait_port_free(port);
    let daemon = spawn_serving_daemon(&path, &log, port, None).await;
    platform.expect(200, push);
    let history =
        format!("http://127.0.0.1:{port}/api/history?device={GAS_NBIOT_IMEI}&quantity=lel&hours=1");
    let mut points = Vec::new();
    for _ in 0..300 {
        points = client()
            .get(&history)
            .bearer_auth(&viewer)
            .send()
            .await
            .expect("history")
            .json::<Value>()
            .await
            .expect("json")
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !points.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["max"], 33.0, "{points:?}");
    let _ = Command::new("kill")
        .args(["-INT", &daemon.0.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let mut daemon = daemon;
        daemon.0.wait()
    })
    .await
    .expect("join")
    .expect("exit");
    assert!(status.success(), "clean exit on SIGINT: {status}");
    platform.0.stop();
}
