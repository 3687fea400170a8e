//! Alarm pushes: every channel's format and signature as a real HTTP receiver (axum, in the
//! test) gets them, against golden files; e-mail through a real SMTP server (aiosmtpd with
//! STARTTLS); MQTT retained alarm state through mosquitto; the receiver down for two minutes
//! of paused time with a restart in between (each push exactly once per route, in order);
//! escalation at the acknowledgement deadline, not after an acknowledgement, and gas level 2
//! to the fire department at once; a flood batched into digests; give-up raising G3.
//!
//! The paused-time tests drive the real rule engine and store as the daemon's rules task does
//! (readings in, transitions journaled and routed in one transaction) with the delivery
//! service on Tokio's clock, so `tokio::time::pause` moves every deadline. Their
//! `tokio::time::sleep`s are the test's timeline on that paused clock (they take no real
//! time), not waits for something to happen.
//!
//! Golden files: `PARKGUARD_BLESS=1 cargo test --test suite alerts::` rewrites them.

use crate::support;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use parkguard::alerts::channels;
use parkguard::alerts::delivery::{tokio_clock, AlertService, Clock};
use parkguard::alerts::Router;
use parkguard::config::Config;
use parkguard::model::{Quality, Reading, ReadingBatch, Tags, Value};
use parkguard::rules::alarm::{Command, Operator};
use parkguard::rules::engine::{RuleEngine, Target};
use parkguard::status::StatusReporter;
use parkguard::store::Store;
use serde_json::{json, Value as Json};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::sync::mpsc;

/// 2026-11-25 10:00:00 UTC, 18:00 in the park.
const START_MS: i64 = 1_795_600_800_000;
const WEBHOOK_SECRET: &str = "webhook-shared-secret";
const DINGTALK_SECRET: &str = "SECdingtalk-signing-secret";
const FEISHU_SECRET: &str = "feishu-signing-secret";

// ---- the receiver ------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Received>>>, Refusals);

/// An answer a robot gives instead of accepting: (HTTP status, body).
type Refusal = (u16, Json);

/// Refusals still to give, by path, in order.
#[derive(Clone, Default)]
struct Refusals(Arc<Mutex<HashMap<String, VecDeque<Refusal>>>>);

impl Inbox {
    fn refuse(&self, path: &str, answers: impl IntoIterator<Item = (u16, Json)>) {
        (self.1)
            .0
            .lock()
            .expect("refusals")
            .entry(path.to_string())
            .or_default()
            .extend(answers);
    }
}

impl Inbox {
    fn all(&self) -> Vec<Received> {
        self.0.lock().expect("inbox").clone()
    }
    fn at(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn receive(
    State(inbox): State<Inbox>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_string();
    inbox.0.lock().expect("inbox").push(Received {
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    });
    let refusal = (inbox.1)
        .0
        .lock()
        .expect("refusals")
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    if let Some((status, answer)) = refusal {
        let status = axum::http::StatusCode::from_u16(status).expect("status");
        return (status, axum::Json(answer)).into_response();
    }
    match path.as_str() {
        "/wecom" | "/dingtalk" => axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        "/feishu" => axum::Json(json!({"code": 0, "msg": "success", "data": {}})).into_response(),
        _ => "ok".into_response(),
    }
}

/// An HTTP receiver on the reserved `socket`; dropping the returned sender stops it.
async fn receiver(socket: tokio::net::TcpSocket, inbox: Inbox) -> tokio::sync::oneshot::Sender<()> {
    let app = axum::Router::new().fallback(receive).with_state(inbox);
    let listener = socket.listen(1024).expect("listen");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

// ---- signatures, checked independently of parkguard's own code ---------------------------

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn header(r: &Received, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_string()
}

/// The generic webhook: HMAC-SHA256 over `timestamp.body`, timestamp fresh (no replay).
fn verify_webhook(r: &Received, now_ms: i64) {
    let ts = header(r, "x-parkguard-timestamp");
    let ts_s: i64 = ts.parse().expect("timestamp");
    assert!(
        (now_ms / 1000 - ts_s).abs() <= 300,
        "stale timestamp {ts_s} (now {})",
        now_ms / 1000
    );
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(&r.body);
    let expected: String = hmac_sha256(WEBHOOK_SECRET.as_bytes(), &message)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        header(r, "x-parkguard-signature"),
        format!("sha256={expected}")
    );
    // A forged body fails the same check.
    let mut forged = format!("{ts}.").into_bytes();
    forged.extend_from_slice(&r.body[1..]);
    assert_ne!(
        hmac_sha256(WEBHOOK_SECRET.as_bytes(), &forged),
        hmac_sha256(WEBHOOK_SECRET.as_bytes(), &message)
    );
}

fn query_value(query: &str, key: &str) -> String {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("query has no {key}: {query}"))
}

/// DingTalk: `timestamp` (ms) and `sign` = base64(HMAC(secret, "timestamp\nsecret")).
fn verify_dingtalk(r: &Received) {
    assert_eq!(query_value(&r.query, "access_token"), "dt-token");
    let ts = query_value(&r.query, "timestamp");
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        DINGTALK_SECRET.as_bytes(),
        format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
    ));
    assert_eq!(query_value(&r.query, "sign"), expected);
}

/// Feishu: `timestamp` (s) and `sign` = base64(HMAC keyed by "timestamp\nsecret" over "").
fn verify_feishu(doc: &mut Json) {
    let ts = doc["timestamp"].as_str().expect("timestamp").to_string();
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        format!("{ts}\n{FEISHU_SECRET}").as_bytes(),
        b"",
    ));
    assert_eq!(doc["sign"], json!(expected));
    let o = doc.as_object_mut().expect("object");
    o.remove("timestamp");
    o.remove("sign");
}

/// Compares with `tests/golden/alerts/<name>`; `PARKGUARD_BLESS=1` writes the file instead.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/alerts")
        .join(name);
    if std::env::var_os("PARKGUARD_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PARKGUARD_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "differs from {} (PARKGUARD_BLESS=1 rewrites it)",
        path.display()
    );
}

// ---- a park driven as the daemon's rules task drives it ----------------------------------

const DEVICES: &str = r#"
[[devices]]
id = "smoke-1"
location = "l"
profile = "nb_smoke"
name = "1号车间烟感"
[[devices]]
id = "gas-1"
location = "l"
profile = "gas_detector_lel"
name = "厨房燃气"
[[devices]]
id = "gas-2"
location = "l"
profile = "gas_detector_lel"
[[devices]]
id = "gas-3"
location = "l"
profile = "gas_detector_lel"
"#;

fn park_site(alerts: &str) -> (TempDir, PathBuf) {
    let header = support::site_header("l", "").replace(
        "[[enterprises]]\nid = \"e\"\npark = \"p\"\n",
        "[[enterprises]]\nid = \"e\"\npark = \"p\"\nname = \"星河五金\"\n\
         contact = { name = \"李经理\", mobile = \"13800000001\", email = \"li@e.example\" }\n",
    );
    support::site(&format!("{header}{DEVICES}\n{alerts}"))
}

struct Park {
    config: Config,
    engine: RuleEngine,
    store: Store,
    router: Arc<Router>,
    service: Option<AlertService>,
    gateway_input: mpsc::UnboundedReceiver<ReadingBatch>,
    clock: Clock,
}

impl Park {
    fn open(path: &Path, clock: Clock) -> Park {
        let config = Config::load(path).expect("valid site");
        let store_path = config.resolve_path(&config.site.gateway.store);
        let store = Store::open(&store_path).expect("store");
        let mut engine = RuleEngine::new(&config, &parkguard::status::device(&config), clock());
        let persisted = store.load_alarms().expect("alarms");
        let retired = engine.restore(persisted, clock());
        assert!(retired.is_empty());
        let router = Arc::new(Router::from_config(&config).expect("routes"));
        let (status, gateway_input) = StatusReporter::new(&config);
        let service = AlertService::spawn(
            Arc::clone(&router),
            channels::build(&config).expect("channels"),
            Store::open(&store_path).expect("store"),
            Arc::clone(&clock),
            Some(status),
            parkguard::metrics::Metrics::new(),
        );
        Park {
            config,
            engine,
            store,
            router,
            service: Some(service),
            gateway_input,
            clock,
        }
    }

    fn record(&mut self, events: Vec<parkguard::model::alarm::AlarmEvent>) {
        if events.is_empty() {
            return;
        }
        let queued = self
            .store
            .record_and_route(&events, None, Some(&*self.router))
            .expect("record");
        if queued > 0 {
            if let Some(service) = &self.service {
                service.wake.notify_one();
            }
        }
    }

    fn feed(&mut self, device: &str, quantity: &str, value: Value) {
        let d = self
            .config
            .site
            .devices
            .iter()
            .find(|d| d.id == device)
            .expect("device");
        let now = (self.clock)();
        let reading = Reading {
            tags: Arc::new(Tags {
                park: "p".into(),
                enterprise: "e".into(),
                location: "l".into(),
                device: device.into(),
                kind: String::new(),
                profile: d.profile.clone(),
                extra: Vec::new(),
            }),
            measurement: Arc::from("m"),
            quantity: Arc::from(quantity),
            value,
            unit: None,
            timestamp_ns: now * 1_000_000,
            quality: Quality::Good,
        };
        let mut events = Vec::new();
        self.engine.on_readings(&[reading], now, &mut events);
        self.engine.tick(now, &mut events);
        self.record(events);
    }

    /// The clock's effects: delays running out, and the gateway's own condition (G3).
    fn tick(&mut self) {
        let mut events = Vec::new();
        let now = (self.clock)();
        while let Ok(batch) = self.gateway_input.try_recv() {
            self.engine.on_readings(&batch, now, &mut events);
        }
        self.engine.tick(now, &mut events);
        self.record(events);
    }

    fn command(&mut self, key: &str, command: Command) {
        let mut events = Vec::new();
        let operator = Operator {
            name: "olga".into(),
            comment: Some("on my way".into()),
        };
        let now = (self.clock)();
        self.engine
            .command(
                &Target::Alarm(key.into()),
                &command,
                &operator,
                now,
                &mut events,
            )
            .expect("command");
        self.record(events);
    }

    fn key_of(&self, rule: &str, device: &str) -> String {
        self.engine
            .alarms()
            .into_iter()
            .find(|a| a.rule == rule && a.device == device)
            .unwrap_or_else(|| panic!("no active {rule} alarm of {device}"))
            .key
    }

    /// Stops delivering for the rest of the test: pushes stay queued.
    async fn hold_deliveries(&mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }

    /// Stops the delivery service (pending pushes stay queued).
    async fn stop(mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }
}

/// Waits (on Tokio's clock, paused or not) until `ready`, polling every 100 ms, at most
/// `limit`.
async fn until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn events_of(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .flat_map(|r| {
            let doc = r.json();
            doc["notices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|n| {
                    (
                        n["event"].as_str().unwrap_or_default().to_string(),
                        n["alarm"]["key"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect()
}

/// Webhooks at `base`/ops and `base`/fire; the operators' route (high and critical, plus
/// `operators_extra` lines) and the fire department's (smoke and gas at critical).
fn operators_and_fire_department(base: &str, operators_extra: &str) -> String {
    format!(
        r#"
[alerts]
[[alerts.channels]]
name = "ops-hook"
type = "webhook"
url = "{base}/ops"
[[alerts.channels]]
name = "fire-hook"
type = "webhook"
url = "{base}/fire"
[[alerts.routes]]
name = "operators"
severities = ["high", "critical"]
channels = ["ops-hook"]
{operators_extra}
[[alerts.routes]]
name = "fire-department"
rules = ["R13", "R11"]
severities = ["critical"]
channels = ["fire-hook"]
"#
    )
}

#[tokio::test(start_paused = true)]
async fn an_escalation_reaches_a_route_only_with_what_that_route_selects() {
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    // The fire department's route selects smoke and gas at critical: an unacknowledged high
    // gas alarm of the duty room is not escalated to it.
    let (_dir, path) = park_site(&operators_and_fire_department(
        &base,
        "ack_deadline_s = 300\nescalate_to = \"fire-department\"\n",
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    park.feed("gas-1", "lel", Value::Float(30.0));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    until("raised at the operators", Duration::from_secs(5), || {
        events_of(&inbox.at("/ops")).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(400)).await;
    park.tick();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        inbox.at("/fire").is_empty(),
        "a high gas alarm escalated to the fire department: {:?}",
        events_of(&inbox.at("/fire"))
    );
    // A smoke alarm (critical, R13) is the fire department's at once.
    smoke_alarm(&mut park, "smoke-1");
    until(
        "the smoke alarm at the fire department",
        Duration::from_secs(5),
        || !inbox.at("/fire").is_empty(),
    )
    .await;
    park.stop().await;
}

fn smoke_alarm(park: &mut Park, device: &str) {
    park.feed(device, "event", Value::Text(Arc::from("alarm")));
}

/// Robots answer HTTP 200 when they refuse a message and say so in the body, as their
/// documentation describes: WeCom and DingTalk `{"errcode": <non-zero>, "errmsg": ...}`
/// (45009: over the rate limit; 310000: bad signature), Feishu `{"code": <non-zero>, "msg":
/// ...}`. A refusal is a failed delivery: retried, its reason recorded, delivered once
/// accepted; an answer without a result code is a failure too.
#[tokio::test(start_paused = true)]
async fn a_robots_refusal_in_its_answer_body_is_a_failure_and_is_retried() {
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    inbox.refuse(
        "/wecom",
        [
            (
                200,
                json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
            ),
            (
                200,
                json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
            ),
        ],
    );
    inbox.refuse(
        "/dingtalk",
        [(200, json!({"errcode": 310000, "errmsg": "sign not match"}))],
    );
    inbox.refuse(
        "/feishu",
        [
            (200, json!({"code": 9499, "msg": "Bad Request", "data": {}})),
            (200, json!("<html>gateway timeout</html>")),
        ],
    );
    let _receiver = receiver(socket, inbox.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    let (_dir, path) = park_site(&format!(
        r#"
[[alerts.channels]]
name = "wecom"
type = "wecom"
url = "{base}/wecom?key=wc-key"
[[alerts.channels]]
name = "dingtalk"
type = "dingtalk"
url = "{base}/dingtalk?access_token=dt-token"
[[alerts.channels]]
name = "feishu"
type = "feishu"
url = "{base}/feishu"
[[alerts.routes]]
name = "park-operators"
channels = ["wecom", "dingtalk", "feishu"]
"#
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    smoke_alarm(&mut park, "smoke-1");
    let key = park.key_of("R13", "smoke-1");
    until("a refusal recorded", Duration::from_secs(30), || {
        park.store
            .alert_deliveries(&key, 10)
            .expect("deliveries")
            .iter()
            .any(|d| d.last_error.as_deref().is_some_and(|e| e.contains("45009")))
    })
    .await;
    let refused = park.store.alert_deliveries(&key, 10).expect("deliveries");
    assert!(
        refused
            .iter()
            .filter(|d| d.channel == "wecom")
            .all(|d| d.status == "pending"),
        "a refused push is not delivered: {refused:?}"
    );
    until(
        "all delivered after the refusals",
        Duration::from_secs(600),
        || {
            let all = park.store.alert_deliveries(&key, 10).expect("deliveries");
            all.len() == 3 && all.iter().all(|d| d.status == "delivered")
        },
    )
    .await;
    let delivered = park.store.alert_deliveries(&key, 10).expect("deliveries");
    let attempts = |channel: &str| {
        delivered
            .iter()
            .find(|d| d.channel == channel)
            .map(|d| d.attempts)
            .unwrap_or_default()
    };
    assert_eq!(
        (attempts("wecom"), attempts("dingtalk"), attempts("feishu")),
        (3, 2, 3),
        "{delivered:?}"
    );
    // Each robot got exactly the attempts recorded: no delivery counted without a request.
    assert_eq!(inbox.at("/wecom").len(), 3);
    assert_eq!(inbox.at("/dingtalk").len(), 2);
    assert_eq!(inbox.at("/feishu").len(), 3);
    park.stop().await;
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_http_channel_format_matches_its_golden_file_and_signature() {
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    let (_dir, path) = park_site(&format!(
        r#"
[alerts]
web_url = "https://gw.example:8443/"
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "{base}/hook"
secret = {{ file = "webhook.secret" }}
[[alerts.channels]]
name = "wecom"
type = "wecom"
url = "{base}/wecom?key=wc-key"
[[alerts.channels]]
name = "dingtalk"
type = "dingtalk"
url = "{base}/dingtalk?access_token=dt-token"
secret = {{ file = "dingtalk.secret" }}
[[alerts.channels]]
name = "feishu"
type = "feishu"
url = "{base}/feishu"
secret = {{ file = "feishu.secret" }}
[[alerts.routes]]
name = "park-operators"
channels = ["hook", "wecom", "dingtalk", "feishu"]
recipients = [{{ name = "值班员王工", role = "park_operator", mobile = "13900000002" }}]
enterprise_contact = true
[[alerts.routes]]
name = "operators-en"
severities = ["critical"]
language = "en"
channels = ["hook"]
"#
    ));
    // Secrets from files next to the site file, not the process environment: the tests of
    // this binary run in parallel, and `set_var` would race with their reads.
    let site_dir = path.parent().expect("site folder");
    for (file, secret) in [
        ("webhook.secret", WEBHOOK_SECRET),
        ("dingtalk.secret", DINGTALK_SECRET),
        ("feishu.secret", FEISHU_SECRET),
    ] {
        std::fs::write(site_dir.join(file), secret).expect("write secret");
    }
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    smoke_alarm(&mut park, "smoke-1");
    until("five pushes", Duration::from_secs(30), || {
        inbox.all().len() >= 5
    })
    .await;

    let hooks = inbox.at("/hook");
    assert_eq!(hooks.len(), 2, "one per route on the webhook");
    for r in &hooks {
        verify_webhook(r, clock());
    }
    let zh = hooks
        .iter()
        .find(|r| r.json()["notices"][0]["route"] == "park-operators")
        .expect("zh");
    let en = hooks
        .iter()
        .find(|r| r.json()["notices"][0]["route"] == "operators-en")
        .expect("en");
    golden(
        "webhook.json",
        &serde_json::to_string_pretty(&zh.json()).expect("json"),
    );
    golden(
        "webhook-en.json",
        &serde_json::to_string_pretty(&en.json()).expect("json"),
    );
    assert_eq!(header(zh, "content-type"), "application/json");

    let wecom = inbox.at("/wecom");
    assert_eq!(wecom.len(), 1);
    assert_eq!(query_value(&wecom[0].query, "key"), "wc-key");
    golden(
        "wecom.json",
        &serde_json::to_string_pretty(&wecom[0].json()).expect("json"),
    );

    let dingtalk = inbox.at("/dingtalk");
    assert_eq!(dingtalk.len(), 1);
    verify_dingtalk(&dingtalk[0]);
    golden(
        "dingtalk.json",
        &serde_json::to_string_pretty(&dingtalk[0].json()).expect("json"),
    );

    let feishu = inbox.at("/feishu");
    assert_eq!(feishu.len(), 1);
    let mut doc = feishu[0].json();
    verify_feishu(&mut doc);
    golden(
        "feishu.json",
        &serde_json::to_string_pretty(&doc).expect("json"),
    );

    // The delivery status the web UI shows.
    let key = park.key_of("R13", "smoke-1");
    let statuses = park.store.alert_deliveries(&key, 100).expect("deliveries");
    assert_eq!(statuses.len(), 5);
    until("all recorded as delivered", Duration::from_secs(5), || {
        park.store
            .alert_deliveries(&key, 100)
            .expect("deliveries")
            .iter()
            .all(|d| d.status == "delivered")
    })
    .await;
    park.stop().await;
}

#[tokio::test(start_paused = true)]
async fn receiver_down_two_minutes_with_a_restart_delivers_each_push_once_in_order() {
    // Reserved and not listening: refused until the receiver comes back on it.
    let (port, socket) = support::reserved_port();
    let base = format!("http://127.0.0.1:{port}");
    let (_dir, path) = park_site(&operators_and_fire_department(&base, ""));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    // The receiver is down: alarms happen and are acknowledged meanwhile.
    smoke_alarm(&mut park, "smoke-1");
    tokio::time::sleep(Duration::from_secs(20)).await;
    park.feed("gas-1", "lel", Value::Float(62.0));
    tokio::time::sleep(Duration::from_secs(4)).await;
    park.feed("gas-1", "lel", Value::Float(63.0));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let smoke = park.key_of("R13", "smoke-1");
    park.command(&smoke, Command::Acknowledge);
    tokio::time::sleep(Duration::from_secs(20)).await;

    // The gateway restarts during the outage.
    park.stop().await;
    let mut park = Park::open(&path, Arc::clone(&clock));
    tokio::time::sleep(Duration::from_secs(10)).await;
    park.feed("gas-2", "lel", Value::Float(30.0));
    tokio::time::sleep(Duration::from_secs(4)).await;
    park.tick();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued: Vec<_> = ["operators", "fire-department"]
        .iter()
        .map(|route| {
            let mut rows: Vec<_> = park
                .store
                .alert_deliveries(&smoke, 1000)
                .expect("rows")
                .into_iter()
                .chain(
                    park.store
                        .alert_deliveries(&park.key_of("R11", "gas-1"), 1000)
                        .expect("rows"),
                )
                .chain(
                    park.store
                        .alert_deliveries(&park.key_of("R11", "gas-2"), 1000)
                        .expect("rows"),
                )
                .filter(|d| d.route == *route)
                .collect();
            rows.sort_by_key(|d| d.id);
            rows
        })
        .collect();
    for rows in &queued {
        assert!(rows.iter().all(|d| d.status == "pending"), "{rows:?}");
        // The head of each route's lane is being retried; the rest wait behind it, in order.
        assert!(rows[0].attempts > 1, "{rows:?}");
    }
    let started = tokio::time::Instant::now();
    assert!(clock() - START_MS < 120_000);
    tokio::time::sleep_until(
        started + Duration::from_millis((START_MS + 120_000 - clock()) as u64),
    )
    .await;

    // Two minutes after the first alarm the receiver is back.
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let expected_ops = queued[0].len();
    let expected_fire = queued[1].len();
    assert!(
        expected_ops >= 4,
        "smoke raised+ack, gas raised, gas-2 raised: {expected_ops}"
    );
    assert!(
        expected_fire >= 3,
        "smoke raised+ack, gas raised: {expected_fire}"
    );
    until("every push", Duration::from_secs(300), || {
        inbox.at("/ops").len() >= expected_ops && inbox.at("/fire").len() >= expected_fire
    })
    .await;
    // Nothing more comes: no repeats.
    tokio::time::sleep(Duration::from_secs(600)).await;
    for (path, rows) in [("/ops", &queued[0]), ("/fire", &queued[1])] {
        let got = inbox.at(path);
        let ids: Vec<String> = got
            .iter()
            .map(|r| header(r, "x-parkguard-delivery"))
            .collect();
        let want: Vec<String> = rows.iter().map(|d| format!("d{}", d.id)).collect();
        assert_eq!(ids, want, "{path}: each push once, in queue order");
        let events: Vec<String> = events_of(&got).into_iter().map(|(e, _)| e).collect();
        let want_events: Vec<String> = rows.iter().map(|d| d.event.clone()).collect();
        assert_eq!(events, want_events);
    }
    let fire_events = events_of(&inbox.at("/fire"));
    assert!(fire_events.contains(&("raised".into(), smoke.clone())));
    assert!(fire_events.contains(&("acknowledged".into(), smoke.clone())));
    park.stop().await;
}

#[tokio::test(start_paused = true)]
async fn escalation_at_the_deadline_not_after_acknowledgement_and_gas_level_2_at_once() {
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    // The duty room escalates to the park's manager, an escalation-only route that takes
    // everything (its pushes land on the same receiver as the fire department's here).
    let (_dir, path) = park_site(&operators_and_fire_department(
        &base,
        "ack_deadline_s = 300\nescalate_to = \"manager\"\nremind_every_s = 120\n\
         [[alerts.routes]]\nname = \"manager\"\nescalation_only = true\nchannels = [\"fire-hook\"]\n",
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    park.feed("gas-1", "lel", Value::Float(30.0));
    park.feed("gas-2", "lel", Value::Float(31.0));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    let raised_at = tokio::time::Instant::now();
    let gas1 = park.key_of("R11", "gas-1");
    let gas2 = park.key_of("R11", "gas-2");
    until(
        "both raised at the operators",
        Duration::from_secs(5),
        || events_of(&inbox.at("/ops")).len() == 2,
    )
    .await;
    assert!(
        inbox.at("/fire").is_empty(),
        "a high gas alarm is not the fire department's"
    );

    tokio::time::sleep(Duration::from_secs(100)).await;
    park.command(&gas2, Command::Acknowledge);

    // One second before the deadline: nothing has escalated.
    tokio::time::sleep_until(raised_at + Duration::from_secs(299)).await;
    assert!(
        inbox.at("/fire").is_empty(),
        "escalated before the deadline"
    );
    // One second after: the unacknowledged one has, the acknowledged one has not.
    tokio::time::sleep_until(raised_at + Duration::from_secs(301)).await;
    until("the escalation", Duration::from_millis(500), || {
        !inbox.at("/fire").is_empty()
    })
    .await;
    let fire = events_of(&inbox.at("/fire"));
    assert_eq!(fire, vec![("unacknowledged".to_string(), gas1.clone())]);
    let doc = inbox.at("/fire")[0].json();
    assert_eq!(doc["notices"][0]["escalated_from"], "operators");
    assert_eq!(doc["notices"][0]["unacknowledged_for_s"], 300);
    // The operators were reminded of the standing alarm (every 120 s): at 120 and 240 s.
    let reminders: Vec<_> = events_of(&inbox.at("/ops"))
        .into_iter()
        .filter(|(e, _)| e == "reminder")
        .collect();
    assert_eq!(reminders, vec![("reminder".into(), gas1.clone()); 2]);

    // Gas level 2 reaches the fire department at once (after the rule's 3 s on-delay).
    park.feed("gas-3", "lel", Value::Float(55.0));
    let exceeded = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    until(
        "gas level 2 at the fire department",
        Duration::from_secs(1),
        || events_of(&inbox.at("/fire")).len() == 2,
    )
    .await;
    assert!(exceeded.elapsed() < Duration::from_secs(4));
    let gas3 = park.key_of("R11", "gas-3");
    assert_eq!(
        events_of(&inbox.at("/fire"))[1],
        ("raised".to_string(), gas3.clone())
    );
    assert_eq!(
        inbox.at("/fire")[1].json()["notices"][0]["alarm"]["severity"],
        "critical"
    );

    // Its acknowledgement goes to everyone who got it.
    park.command(&gas3, Command::Acknowledge);
    until(
        "the acknowledgement pushed to both",
        Duration::from_secs(5),
        || {
            events_of(&inbox.at("/fire")).contains(&("acknowledged".into(), gas3.clone()))
                && events_of(&inbox.at("/ops")).contains(&("acknowledged".into(), gas3.clone()))
        },
    )
    .await;
    park.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_beyond_the_rate_limit_arrives_as_digests_and_nothing_is_dropped() {
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let (_dir, path) = park_site(&format!(
        r#"
[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
[[alerts.routes]]
name = "everything"
channels = ["hook"]
rate_limit = {{ max = 2, per_s = 60 }}
"#
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    smoke_alarm(&mut park, "smoke-1");
    until("the first push", Duration::from_secs(5), || {
        inbox.all().len() == 1
    })
    .await;
    // High, not critical: critical pushes are never digested (they go alone, at once).
    for device in ["gas-1", "gas-2", "gas-3"] {
        park.feed(device, "lel", Value::Float(30.0));
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    let key = park.key_of("R13", "smoke-1");
    park.command(&key, Command::Acknowledge);
    until("every push", Duration::from_secs(200), || {
        park.store.alert_pending().expect("pending") == 0
    })
    .await;
    let sends = inbox.all();
    assert_eq!(sends.len(), 2, "one single push and one digest");
    let digest = sends[1].json();
    assert_eq!(digest["digest"], true);
    let in_digest = digest["notices"].as_array().map_or(0, Vec::len);
    assert!(
        in_digest >= 4,
        "three gas alarms and an acknowledgement: {in_digest}"
    );
    // The window is full: what comes next waits for it to open again, and then arrives (a
    // false alarm is not urgent; a confirmed fire would go ahead of the window).
    park.command(
        &key,
        Command::FalseAlarm {
            reason: parkguard::model::alarm::FalseAlarmReason::Test,
        },
    );
    park.feed("smoke-1", "event", Value::Text(Arc::from("alarm_clear")));
    park.command(&key, Command::Reset);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(inbox.all().len(), 2, "sent although the window is full");
    until("the next window", Duration::from_secs(120), || {
        park.store.alert_pending().expect("pending") == 0
    })
    .await;
    assert!(inbox.all().len() >= 3);
    assert_eq!(
        events_of(&inbox.all()).len(),
        1 + in_digest + 3,
        "nothing dropped: false alarm, condition cleared and reset came after the digest"
    );
    park.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pushes_given_up_after_the_routes_limit_raise_gateway_fault_g3() {
    // Held and never listening: every push to it is refused.
    let (port, _socket) = support::reserved_port();
    let (_dir, path) = park_site(&format!(
        r#"
[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
[[alerts.routes]]
name = "ops"
kinds = ["alarm"]
channels = ["hook"]
give_up_after_s = 60
"#
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    smoke_alarm(&mut park, "smoke-1");
    let key = park.key_of("R13", "smoke-1");
    tokio::time::sleep(Duration::from_secs(130)).await;
    let rows = park.store.alert_deliveries(&key, 10).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "failed");
    assert!(rows[0].attempts >= 3, "retried before giving up");
    assert!(rows[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("127.0.0.1")));
    park.tick();
    let faults: Vec<_> = park
        .engine
        .alarms()
        .into_iter()
        .filter(|a| a.rule == "G3")
        .collect();
    assert_eq!(faults.len(), 1, "gateway fault G3 raised");
    park.stop().await;
}

#[tokio::test]
async fn email_goes_out_over_starttls_to_each_recipient() {
    let dir = TempDir::new().expect("dir");
    support::make_certificates(dir.path());
    let out = dir.path().join("mail");
    std::fs::create_dir_all(&out).expect("mail dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/smtp_server.py");
    let (mut smtp, port) = support::spawn_listening("aiosmtpd", |port| {
        let log = std::fs::File::create(dir.path().join("smtp.log")).expect("log");
        std::process::Command::new(support::pymodbus::python_with_pymodbus())
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start aiosmtpd")
    });
    let ca = dir.path().join("ca.pem");
    let (_site_dir, path) = park_site(&format!(
        r#"
[alerts]
web_url = "https://gw.example:8443"
[[alerts.channels]]
name = "mail"
type = "email"
smtp_host = "localhost"
smtp_port = {port}
ca = "{ca}"
from = "parkguard <alarm@park.example>"
[[alerts.routes]]
name = "maintenance"
channels = ["mail"]
recipients = [{{ name = "Wang", email = "wang@park.example" }}, {{ name = "no mail" }}]
enterprise_contact = true
language = "en"
"#,
        ca = ca.display()
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, clock);
    smoke_alarm(&mut park, "smoke-1");
    until("two e-mails", Duration::from_secs(30), || {
        std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
            >= 2
    })
    .await;
    let mut mails: Vec<Json> = (1..=2)
        .map(|i| {
            serde_json::from_str(
                &std::fs::read_to_string(out.join(format!("{i}.json"))).expect("mail"),
            )
            .expect("json")
        })
        .collect();
    mails.sort_by_key(|m| m["to"].as_str().unwrap_or_default().to_string());
    let tos: Vec<&str> = mails
        .iter()
        .map(|m| m["to"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(tos, ["li@e.example", "wang@park.example"]);
    for m in &mails {
        assert_eq!(m["tls"], true, "STARTTLS before the message");
        assert_eq!(m["mail_from"], "alarm@park.example");
    }
    golden(
        "email.txt",
        &format!(
            "Subject: {}\n\n{}",
            mails[1]["subject"].as_str().unwrap_or_default(),
            mails[1]["body"]
                .as_str()
                .unwrap_or_default()
                .replace("\r\n", "\n")
        ),
    );
    park.stop().await;
    let _ = smtp.kill();
    let _ = smtp.wait();
}

#[tokio::test]
async fn mqtt_channel_keeps_each_active_alarm_retained_and_removes_it_when_over() {
    let mosquitto = support::mosquitto();
    let (_dir, path) = park_site(&format!(
        r#"
[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {port}
client_id = "pg-alerts-{port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[alerts]
[[alerts.channels]]
name = "broker"
type = "mqtt"
mqtt = "park"
topic_prefix = "parkguard/alarms"
[[alerts.routes]]
name = "state"
channels = ["broker"]
"#,
        port = mosquitto.port
    ));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, clock);
    smoke_alarm(&mut park, "smoke-1");
    let key = park.key_of("R13", "smoke-1");
    until("delivered", Duration::from_secs(15), || {
        park.store
            .alert_deliveries(&key, 10)
            .expect("rows")
            .iter()
            .all(|d| d.status == "delivered")
    })
    .await;
    // A client subscribing late sees the active alarm.
    let retained = |wait_s: &str| {
        std::process::Command::new("mosquitto_sub")
            .args([
                "-p",
                &mosquitto.port.to_string(),
                "-t",
                "parkguard/alarms/#",
                "-v",
                "-C",
                "1",
                "-W",
                wait_s,
            ])
            .output()
            .expect("mosquitto_sub")
    };
    let seen = retained("5");
    let text = String::from_utf8_lossy(&seen.stdout).to_string();
    let (topic, payload) = text.trim().split_once(' ').expect("topic and payload");
    assert_eq!(topic, "parkguard/alarms/smoke-1/R13/event");
    let doc: Json = serde_json::from_str(payload).expect("json");
    assert_eq!(doc["alarm"]["state"], "unacknowledged");
    assert_eq!(doc["alarm"]["severity"], "critical");
    assert_eq!(doc["schema"], "parkguard.alert.v1");

    park.command(&key, Command::Acknowledge);
    park.command(&key, Command::ConfirmFire);
    park.feed("smoke-1", "event", Value::Text(Arc::from("alarm_clear")));
    park.command(&key, Command::Reset);
    until("the clear delivered", Duration::from_secs(15), || {
        let rows = park.store.alert_deliveries(&key, 10).expect("rows");
        rows.len() >= 3 && rows.iter().all(|d| d.status == "delivered")
    })
    .await;
    let after = retained("2");
    assert!(
        String::from_utf8_lossy(&after.stdout).trim().is_empty(),
        "the retained alarm was removed: {}",
        String::from_utf8_lossy(&after.stdout)
    );
    park.stop().await;
}

#[tokio::test]
async fn the_daemon_pushes_a_smoke_alarm_from_mosquitto_and_its_acknowledgement_and_shows_both() {
    let mosquitto = support::mosquitto();
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let token = parkguard::web::random_token();
    let (_dir, path) = park_site(&format!(
        r#"
[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt}
client_id = "pg-alerts-daemon-{mqtt}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[web]
listen = "127.0.0.1:0"
[[web.tokens]]
name = "duty-desk"
role = "operator"
token_sha256 = "{token_hash}"
[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
[[alerts.routes]]
name = "operators"
channels = ["hook"]
"#,
        mqtt = mosquitto.port,
        token_hash = parkguard::web::token_sha256_hex(&token),
    ));
    let config = Config::load(&path).expect("valid site");
    let gateway = parkguard::pipeline::Gateway::start(config)
        .await
        .expect("start");
    support::wait_subscribed(&gateway, "park", 1).await;
    let payload = format!(
        r#"{{"dev":"smoke-1","ts":{},"event":"alarm"}}"#,
        support::now_s()
    );
    support::mosquitto_pub(
        mosquitto.port,
        "park/p/smoke/smoke-1/up",
        &[payload.as_bytes()],
    );
    until("the pushed alarm", Duration::from_secs(10), || {
        !inbox.at("/hook").is_empty()
    })
    .await;
    let key = "R13/smoke-1/event";
    assert_eq!(
        events_of(&inbox.at("/hook")),
        vec![("raised".into(), key.into())]
    );

    let base = support::web_url(&gateway);
    let http = reqwest::Client::new();
    let ack = http
        .post(format!("{base}/api/commands"))
        .bearer_auth(&token)
        .json(&json!({"id": key, "command": "acknowledge", "comment": "on my way"}))
        .send()
        .await
        .expect("acknowledge");
    assert!(ack.status().is_success(), "{}", ack.status());
    until(
        "the pushed acknowledgement",
        Duration::from_secs(10),
        || inbox.at("/hook").len() == 2,
    )
    .await;
    let doc = inbox.at("/hook")[1].json();
    assert_eq!(doc["notices"][0]["event"], "acknowledged");
    assert_eq!(doc["notices"][0]["operator"], "duty-desk");
    assert_eq!(doc["notices"][0]["comment"], "on my way");

    // The web UI's delivery status of the alarm.
    let mut shown = Json::Null;
    for _ in 0..50 {
        shown = http
            .get(format!("{base}/api/alarms/deliveries"))
            .query(&[("key", key)])
            .bearer_auth(&token)
            .send()
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("json");
        if shown
            .as_array()
            .is_some_and(|a| a.iter().all(|d| d["status"] == "delivered"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = shown.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{shown}");
    assert_eq!(rows[0]["event"], "acknowledged");
    assert_eq!(rows[1]["event"], "raised");
    assert!(rows
        .iter()
        .all(|d| d["status"] == "delivered" && d["route"] == "operators"));
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"parkguard_alerts_finished_total{result="delivered"} 2"#),
        "{metrics}"
    );
    gateway.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lanes_queue_gives_critical_pushes_first_read_along_an_index() {
    let (_dir, path) = park_site(
        r#"
[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
[[alerts.routes]]
name = "everything"
channels = ["hook"]
"#,
    );
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));
    park.hold_deliveries().await;
    // Three gas level 1 alarms (high) queue first, then a smoke alarm (critical), then the
    // smoke detector's clear (not urgent: it keeps its place behind the raise).
    for device in ["gas-1", "gas-2", "gas-3"] {
        park.feed(device, "lel", Value::Float(30.0));
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    smoke_alarm(&mut park, "smoke-1");
    park.feed("smoke-1", "event", Value::Text(Arc::from("alarm_clear")));
    let lanes = park.store.alert_lanes().expect("lanes");
    assert_eq!(lanes.len(), 1);
    let head = park.store.alert_lane_head(&lanes[0], 10).expect("head");
    let order: Vec<(String, String)> = head
        .iter()
        .map(|q| (q.notice.event.clone(), q.notice.alarm.rule.clone()))
        .collect();
    let pair = |e: &str, r: &str| (e.to_string(), r.to_string());
    assert_eq!(
        order,
        vec![
            pair("raised", "R13"),
            pair("raised", "R11"),
            pair("raised", "R11"),
            pair("raised", "R11"),
            pair("condition_cleared", "R13"),
        ]
    );
    // However long the queue, the head is read along an index, not sorted.
    let plan: Vec<String> = {
        let mut stmt = park
            .store
            .connection()
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                parkguard::store::alerts::LANE_HEAD_QUERY
            ))
            .expect("plan");
        stmt.query_map(rusqlite::params!["r", "c", "", 10], |r| {
            r.get::<_, String>(3)
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("plan rows")
    };
    assert!(
        plan.iter().any(|p| p.contains("alert_delivery_urgent")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    park.stop().await;
}

/// The fire department's route takes confirmed fires only: an operator's confirmation goes
/// out at once, a fire nobody judged goes out when its confirmation time has passed, and a
/// false alarm never reaches it (the duty room, which had the fire, hears of the verdict).
#[tokio::test(start_paused = true)]
async fn a_confirmed_only_route_gets_confirmed_fires_at_once_and_unjudged_ones_after_the_timeout() {
    use parkguard::model::alarm::FalseAlarmReason;
    let (port, socket) = support::reserved_port();
    let inbox = Inbox::default();
    let _receiver = receiver(socket, inbox.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    let alerts = operators_and_fire_department(&base, "").replace(
        "channels = [\"fire-hook\"]\n",
        "channels = [\"fire-hook\"]\nconfirmed_only = true\n",
    );
    let (_dir, path) = park_site(&format!("[fire]\nconfirm_timeout_s = 120\n{alerts}"));
    let clock = tokio_clock(START_MS);
    let mut park = Park::open(&path, Arc::clone(&clock));

    // A smoke alarm: the duty room at once, the fire department only once confirmed.
    smoke_alarm(&mut park, "smoke-1");
    let smoke = park.key_of("R13", "smoke-1");
    until(
        "the smoke alarm at the duty room",
        Duration::from_secs(5),
        || events_of(&inbox.at("/ops")).contains(&("raised".into(), smoke.clone())),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    park.tick();
    assert!(
        inbox.at("/fire").is_empty(),
        "an unconfirmed fire reached the fire department: {:?}",
        events_of(&inbox.at("/fire"))
    );
    park.command(&smoke, Command::ConfirmFire);
    let confirmed = tokio::time::Instant::now();
    until(
        "the confirmed fire at the fire department",
        Duration::from_secs(1),
        || events_of(&inbox.at("/fire")) == vec![("fire_confirmed".to_string(), smoke.clone())],
    )
    .await;
    assert!(confirmed.elapsed() < Duration::from_secs(1));
    let notice = &inbox.at("/fire")[0].json()["notices"][0];
    assert_eq!(notice["operator"], "olga");
    assert_eq!(notice["alarm"]["severity"], "critical");
    until(
        "the duty room told of the confirmation",
        Duration::from_secs(5),
        || events_of(&inbox.at("/ops")).contains(&("fire_confirmed".into(), smoke.clone())),
    )
    .await;

    // Gas level 2 that nobody judges: forwarded when its 120 s have passed, not before.
    park.feed("gas-3", "lel", Value::Float(55.0));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    let gas3 = park.key_of("R11", "gas-3");
    let raised = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(119)).await;
    park.tick();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !events_of(&inbox.at("/fire"))
            .iter()
            .any(|(_, k)| *k == gas3),
        "forwarded before its confirmation time"
    );
    tokio::time::sleep_until(raised + Duration::from_secs(121)).await;
    park.tick();
    until(
        "the unjudged fire at the fire department",
        Duration::from_secs(2),
        || events_of(&inbox.at("/fire")).contains(&("fire_confirmed".into(), gas3.clone())),
    )
    .await;
    let last = inbox.at("/fire").last().map(|r| r.json()).expect("push");
    assert_eq!(last["notices"][0]["operator"], "system");

    // A false alarm: the duty room hears of it, the fire department never of that fire.
    park.feed("gas-2", "lel", Value::Float(52.0));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    park.tick();
    let gas2 = park.key_of("R11", "gas-2");
    park.command(
        &gas2,
        Command::FalseAlarm {
            reason: FalseAlarmReason::Other,
        },
    );
    until(
        "the false alarm at the duty room",
        Duration::from_secs(5),
        || events_of(&inbox.at("/ops")).contains(&("false_alarm".into(), gas2.clone())),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(200)).await;
    park.tick();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !events_of(&inbox.at("/fire"))
            .iter()
            .any(|(_, k)| *k == gas2),
        "a false alarm reached the fire department: {:?}",
        events_of(&inbox.at("/fire"))
    );
    park.stop().await;
}
