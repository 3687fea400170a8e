//! Alarm semantics that never hide a live fire or gas alarm, through the real daemon
//! (mosquitto, the web API with tokens, a webhook receiver):
//!
//! - a smoke detector's `silenced` and `heartbeat` do not end its fire alarm: the board shows it
//!   silenced, reset and shelving are refused (409, with the reason), `alarm_clear` ends it;
//! - the detector is acknowledged on its downlink topic once its alarm is journaled, and again
//!   for each retransmission;
//! - only active alarms are shelved; device-wide commands are for technicians;
//! - an alarm still active when shelving or out-of-service ends is annunciated again: pushed,
//!   journaled and to be acknowledged anew;
//! - messages the broker replays after the gateway was down are judged by the device's time:
//!   what held for its on-delay meanwhile is raised late with when it began, what came and went
//!   is journaled, what was shorter than the on-delay is nothing;
//! - span gas during a gas detector's calibration is shown, not pushed, and annunciated when
//!   calibration ends with the gas still there;
//! - an alarm that comes and goes more than three times in its window is flagged as chattering.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

struct Site {
    _mosquitto: Server,
    port: u16,
    _dir: tempfile::TempDir,
    gateway: Gateway,
    url: String,
    operator: String,
    technician: String,
    /// Every notice the webhook received: (event, alarm key).
    pushes: Arc<Mutex<Vec<(String, String)>>>,
}

async fn start() -> Site {
    start_with("").await
}

/// The site of `start` with `extra` (devices, a Modbus bus) appended.
async fn start_with(extra: &str) -> Site {
    let mosquitto = mosquitto();
    let pushes = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let hook_port = listener.local_addr().expect("address").port();
    let received = Arc::clone(&pushes);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = Arc::clone(&received);
            async move {
                let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut all = received.lock().expect("pushes");
                for n in doc["notices"].as_array().into_iter().flatten() {
                    all.push((
                        n["event"].as_str().unwrap_or("").to_string(),
                        n["alarm"]["key"].as_str().unwrap_or("").to_string(),
                    ));
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let operator = parkguard::web::random_token();
    let technician = parkguard::web::random_token();
    let text = format!(
        r#"{header}
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"

[[rule_overrides]]
rule = "R1"
on_delay_s = 0
off_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {port}
client_id = "pg-alarm-safety-{port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"

[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
[[alerts.routes]]
name = "operators"
channels = ["hook"]

[web]
listen = "127.0.0.1:0"
[[web.tokens]]
name = "duty-desk"
role = "operator"
token_sha256 = "{op}"
[[web.tokens]]
name = "electrician"
role = "technician"
token_sha256 = "{tech}"
{extra}
"#,
        header = site_header("l", ""),
        port = mosquitto.port,
        op = parkguard::web::token_sha256_hex(&operator),
        tech = parkguard::web::token_sha256_hex(&technician),
    );
    let (dir, path) = site(&text);
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    let url = web_url(&gateway);
    Site {
        port: mosquitto.port,
        _mosquitto: mosquitto,
        _dir: dir,
        gateway,
        url,
        operator,
        technician,
        pushes,
    }
}

impl Site {
    fn smoke(&self, event: &str) {
        let payload = format!(r#"{{"dev":"s1","ts":{},"event":"{event}"}}"#, now_s());
        mosquitto_pub(self.port, "park/p/smoke/s1/up", &[payload.as_bytes()]);
    }

    async fn command(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/commands", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("command");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn alarm(&self, key: &str) -> Option<Value> {
        let all: Value = reqwest::Client::new()
            .get(format!("{}/api/alarms", self.url))
            .bearer_auth(&self.operator)
            .send()
            .await
            .expect("alarms")
            .json()
            .await
            .expect("alarms JSON");
        all.as_array()?.iter().find(|a| a["key"] == key).cloned()
    }

    async fn wait_alarm(&self, key: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(a) = self.alarm(key).await {
                if ready(&a) {
                    return a;
                }
            }
            if Instant::now() >= deadline {
                let all: Value = reqwest::Client::new()
                    .get(format!("{}/api/alarms", self.url))
                    .bearer_auth(&self.operator)
                    .send()
                    .await
                    .expect("alarms")
                    .json()
                    .await
                    .expect("alarms JSON");
                let rules_view: Vec<String> = self
                    .gateway
                    .rules
                    .alarms()
                    .await
                    .iter()
                    .map(|a| format!("{} {:?}", a.key, a.state))
                    .collect();
                eprintln!("rules' own view: {rules_view:?}");
                let m = &self.gateway.metrics;
                panic!(
                    "{what}: {key} not so; every alarm: {all}; received {} decoded {} evaluated {} errors {:?}",
                    m.messages_received.load(std::sync::atomic::Ordering::Relaxed),
                    m.readings_decoded.load(std::sync::atomic::Ordering::Relaxed),
                    m.readings_evaluated.load(std::sync::atomic::Ordering::Relaxed),
                    parkguard::decode::payload::DecodeErrorKind::ALL
                        .iter()
                        .map(|k| (k.as_str(), m.decode_errors(*k)))
                        .filter(|(_, n)| *n > 0)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pushes_of(&self, event: &str, key: &str) -> usize {
        self.pushes
            .lock()
            .expect("pushes")
            .iter()
            .filter(|(e, k)| e == event && k == key)
            .count()
    }

    /// Waits until at least `count` `event` pushes of `key` have arrived.
    async fn wait_push(&self, event: &str, key: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.pushes_of(event, key) < count {
            assert!(
                Instant::now() < deadline,
                "no `{event}` push for {key}: {:?}",
                self.pushes.lock().expect("pushes")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const SMOKE: &str = "R13/s1/event";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_smoke_alarm_stays_active_and_is_neither_reset_nor_shelved() {
    let site = start().await;
    site.smoke("alarm");
    site.wait_alarm(SMOKE, "the fire alarm", |a| a["state"] == "unacknowledged")
        .await;
    site.smoke("silenced");
    site.smoke("heartbeat");
    let alarm = site
        .wait_alarm(SMOKE, "silenced on the board", |a| a["silenced"] == true)
        .await;
    assert_eq!(alarm["state"], "unacknowledged", "still a live alarm");

    let (status, answer) = site
        .command(&site.operator, json!({"id": SMOKE, "command": "reset"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer.to_string().contains("not been judged"), "{answer}");
    let (status, answer) = site
        .command(
            &site.operator,
            json!({"id": SMOKE, "command": "confirm_fire"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = site
        .command(&site.operator, json!({"id": SMOKE, "command": "reset"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer.to_string().contains("condition is still present"),
        "{answer}"
    );
    let (status, answer) = site
        .command(
            &site.operator,
            json!({"id": SMOKE, "command": "shelve", "minutes": 60, "reason": "noisy"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer.to_string().contains("cannot be shelved"), "{answer}");

    site.smoke("alarm_clear");
    site.wait_alarm(SMOKE, "condition gone, latched", |a| {
        a["state"] == "unacknowledged" && a["latched"] == true
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = site
            .command(&site.operator, json!({"id": SMOKE, "command": "reset"}))
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reset after alarm_clear: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_is_acknowledged_on_its_downlink_once_its_alarm_is_journaled() {
    let site = start().await;
    let program = require_binary("mosquitto_sub", "mosquitto-clients");
    // Line-buffered (stdbuf): its debug lines reach the pipe as they are printed, not at exit.
    let mut sub = Command::new(require_binary("stdbuf", "coreutils"))
        .arg("-oL")
        .arg(program)
        .args(["-h", "127.0.0.1", "-p", &site.port.to_string()])
        .args([
            "-t",
            "park/p/smoke/s1/down",
            "-q",
            "1",
            "-C",
            "2",
            "-W",
            "20",
            // Debug lines: "Subscribed (mid: 1)" once the broker confirmed the subscription.
            "-d",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // Subscribed before the alarm: the broker's SUBACK, then the first acknowledgement proves
    // the subscription itself.
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let mut lines = tokio::task::spawn_blocking(move || {
        for line in lines.by_ref() {
            if line.expect("line").starts_with("Subscribed") {
                return lines;
            }
        }
        panic!("mosquitto_sub ended before its subscription was confirmed");
    })
    .await
    .expect("read");
    // The next message's payload among mosquitto_sub's debug lines (the JSON ones).
    fn next_payload(
        lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>,
    ) -> Option<String> {
        lines.map(|l| l.expect("line")).find(|l| l.starts_with('{'))
    }
    let sent = Instant::now();
    site.smoke("alarm");
    let first = tokio::task::spawn_blocking(move || {
        let first = next_payload(&mut lines);
        (first, lines)
    })
    .await
    .expect("read");
    let (first, mut lines) = first;
    let first = first.expect("an acknowledgement");
    let took = sent.elapsed();
    let ack: Value = serde_json::from_str(&first).expect("JSON acknowledgement");
    assert_eq!(ack["cmd"], "ack");
    assert_eq!(ack["dev"], "s1");
    assert_eq!(ack["event"], "alarm");
    eprintln!("alarm to device acknowledgement: {took:?}");
    // By then the journal holds the raise.
    let journal: Value = reqwest::Client::new()
        .get(format!("{}/api/journal?search=R13", site.url))
        .bearer_auth(&site.operator)
        .send()
        .await
        .expect("journal")
        .json()
        .await
        .expect("journal JSON");
    assert!(
        journal.to_string().contains("raised"),
        "the raise is journaled: {journal}"
    );
    // A retransmission (the detector did not hear the first) is acknowledged again.
    site.smoke("alarm");
    let second = tokio::task::spawn_blocking(move || next_payload(&mut lines))
        .await
        .expect("read")
        .expect("a second acknowledgement");
    assert!(second.contains("\"ack\""), "{second}");
    let _ = sub.wait();
    site.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_active_alarms_are_shelved_and_device_commands_are_for_technicians() {
    let site = start().await;
    let topic = "park/p/meter/m1/up";
    mosquitto_pub(site.port, topic, &[meter(350.0).as_bytes()]);
    let key = site
        .wait_alarm("R1/m1/leakage", "the leakage alarm", |a| {
            a["state"] == "unacknowledged"
        })
        .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    mosquitto_pub(site.port, topic, &[meter(20.0).as_bytes()]);
    site.wait_alarm(&key, "returned", |a| {
        a["state"] == "returned_unacknowledged"
    })
    .await;
    let (status, answer) = site
        .command(
            &site.operator,
            json!({"id": key, "command": "shelve", "minutes": 60, "reason": "muting ahead"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer.to_string().contains("only an active alarm"),
        "{answer}"
    );

    let device_ack = json!({"target": "device", "id": "m1", "command": "acknowledge"});
    let (status, _) = site.command(&site.operator, device_ack.clone()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a whole device is a technician's"
    );
    let (status, answer) = site.command(&site.technician, device_ack).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    site.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_still_active_when_shelving_or_out_of_service_ends_is_annunciated_again() {
    let site = start().await;
    mosquitto_pub(site.port, "park/p/meter/m1/up", &[meter(350.0).as_bytes()]);
    let key = "R1/m1/leakage";
    site.wait_alarm(key, "the leakage alarm", |a| a["state"] == "unacknowledged")
        .await;
    let (status, answer) = site
        .command(&site.operator, json!({"id": key, "command": "acknowledge"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Shelved for three seconds: when it ends, the alarm (still at 350 mA) comes back.
    let (status, answer) = site
        .command(
            &site.operator,
            json!({"id": key, "command": "shelve", "minutes": 0.05, "reason": "electrician on the way"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    site.wait_push("reannunciated", key, 1).await;
    let alarm = site
        .wait_alarm(key, "to be acknowledged anew", |a| {
            a["state"] == "unacknowledged"
        })
        .await;
    assert!(alarm["shelved_until_ms"].is_null());

    // Out of service for three seconds (a technician's command): the same when it ends.
    let (status, answer) = site
        .command(
            &site.technician,
            json!({"id": key, "command": "remove_from_service", "minutes": 0.05}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pushes_before = site.pushes_of("reannunciated", key);
    site.wait_push("reannunciated", key, pushes_before + 1)
        .await;
    site.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detectors_own_alarm_reaches_the_board_even_below_the_gateways_threshold() {
    use parkguard::decode::registers::Area;
    use parkguard::sim::modbus::SimulatedBus;
    let bus = SimulatedBus::new([1, 2]);
    let detector = bus.unit(1).expect("unit 1");
    // 210 mA: under the gateway's 300 mA, over the detector's own 200 mA set-point; its
    // status says leak alarm (bit 0).
    detector.set_words(Area::Holding, 0, &[210]);
    detector.set_words(Area::Holding, 8, &[0x0001]);
    let gas = bus.unit(2).expect("unit 2");
    // 8 %LEL as the float the detector also reports (CDAB), but its own status is level 2.
    gas.set_words(Area::Holding, 3, &[2]);
    gas.set_words(Area::Holding, 8, &[0x0000, 0x4100]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.serve_tcp(listener));
    let text = format!(
        "{header}[[devices]]\nid = \"d1\"\nlocation = \"l\"\nprofile = \"arcm_combo_detector\"\n\
         [[devices]]\nid = \"g1\"\nlocation = \"l\"\nprofile = \"gas_detector_lel\"\n\
         [[modbus]]\nname = \"rs485-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 500\n\
         [[modbus.units]]\ndevice = \"d1\"\nunit_id = 1\n[[modbus.units]]\ndevice = \"g1\"\nunit_id = 2\n",
        header = site_header("l", ""),
    );
    let (_dir, path) = site(&text);
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = gateway.rules.alarms().await;
        let leak = alarms.iter().find(|a| a.key == "R1/d1/leak");
        let lel = alarms.iter().find(|a| a.key == "R11/g1/lel");
        if let (Some(leak), Some(lel)) = (leak, lel) {
            assert_eq!(leak.severity, Some(parkguard::config::Severity::High));
            assert_eq!(lel.severity, Some(parkguard::config::Severity::Critical));
            assert!(lel.latched);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the detectors' own alarms on the board: {alarms:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.shutdown().await;
}

/// Residual current readings of an `adw300_json` meter at `ts_ms` (its own clock).
fn meter_at(leakage: f64, ts_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"ts":{ts_ms},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"leakage":{leakage},"t":[35.5,36.0,34.25,41.0]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_replayed_after_an_outage_are_judged_by_the_devices_time() {
    let mosquitto = mosquitto();
    let operator = parkguard::web::random_token();
    // The shipped R1: alarm at 300 mA held 10 s, cleared 30 s below 270 mA.
    let text = format!(
        r#"{header}
[[devices]]
id = "held"
location = "l"
profile = "adw300_json"
[[devices]]
id = "came-and-went"
location = "l"
profile = "adw300_json"
[[devices]]
id = "blip"
location = "l"
profile = "adw300_json"

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {port}
client_id = "pg-replay-{port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"

[web]
listen = "127.0.0.1:0"
[[web.tokens]]
name = "duty-desk"
role = "operator"
token_sha256 = "{op}"
"#,
        header = site_header("l", ""),
        port = mosquitto.port,
        op = parkguard::web::token_sha256_hex(&operator),
    );
    let (_dir, path) = site(&text);
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    gateway.shutdown().await;

    // While the gateway is away, the meters report (QoS 1: the broker keeps them for its
    // session), each message stamped by the meter's clock.
    let t0 = now_s() * 1000 - 130_000;
    let mut queued = Vec::new();
    for k in 0..12 {
        let ts = t0 + k * 10_000;
        queued.push(("held", meter_at(350.0, ts)));
        let came_and_went = if k < 6 { 350.0 } else { 50.0 };
        queued.push(("came-and-went", meter_at(came_and_went, ts)));
    }
    queued.push(("blip", meter_at(350.0, t0)));
    queued.push(("blip", meter_at(350.0, t0 + 5_000)));
    for k in 1..12 {
        queued.push(("blip", meter_at(50.0, t0 + k * 10_000)));
    }
    for (device, payload) in &queued {
        mosquitto_pub(
            mosquitto.port,
            &format!("park/p/meter/{device}/up"),
            &[payload],
        );
    }

    let back = Instant::now();
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("restart");
    let url = web_url(&gateway);
    let client = reqwest::Client::new();
    let journal = |search: &'static str| {
        let client = client.clone();
        let url = url.clone();
        let operator = operator.clone();
        async move {
            let page: Value = client
                .get(format!("{url}/api/journal?search={search}"))
                .bearer_auth(&operator)
                .send()
                .await
                .expect("journal")
                .json()
                .await
                .expect("journal JSON");
            page.as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["rule"] == "R1")
                .collect::<Vec<Value>>()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (held, came_and_went) = loop {
        let held = journal("held").await;
        let came_and_went = journal("came-and-went").await;
        if (!held.is_empty() && came_and_went.len() >= 2) || Instant::now() >= deadline {
            break (held, came_and_went);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let learned_after = back.elapsed();

    // Held 110 s at 350 mA meanwhile: raised as soon as the replay shows it, not an on-delay
    // of the gateway's clock later, marked late with when it began.
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["action"], "raised");
    assert_eq!(held[0]["began_ms"].as_i64(), Some(t0), "{held:?}");
    assert!(
        held[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("reported late"),
        "{held:?}"
    );
    assert!(
        learned_after < Duration::from_secs(10),
        "took {learned_after:?}"
    );
    // 350 mA for 50 s, then 50 mA for 60 s: raised and returned, both journaled (newest first).
    let actions: Vec<(&str, Option<i64>)> = came_and_went
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or(""), e["began_ms"].as_i64()))
        .collect();
    assert_eq!(
        actions,
        vec![("cleared", Some(t0 + 60_000)), ("raised", Some(t0)),],
        "{came_and_went:?}"
    );
    // 5 s over the threshold is shorter than the on-delay: nothing, replayed or not.
    assert!(journal("blip").await.is_empty());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_gas_during_calibration_is_shown_not_pushed_and_annunciated_if_still_there_after() {
    use parkguard::decode::registers::Area;
    use parkguard::sim::modbus::SimulatedBus;
    let bus = SimulatedBus::new([1]);
    let detector = bus.unit(1).expect("unit 1");
    // Calibration (status 5) with 60 %LEL of span gas (CDAB float at 8).
    detector.set_words(Area::Holding, 3, &[5]);
    detector.set_words(Area::Holding, 8, &[0x0000, 0x4270]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.serve_tcp(listener));
    let site = start_with(&format!(
        "[[devices]]\nid = \"g1\"\nlocation = \"l\"\nprofile = \"gas_detector_lel\"\n\
         [[modbus]]\nname = \"rs485-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
         timeout_ms = 500\n[[modbus.units]]\ndevice = \"g1\"\nunit_id = 1\n"
    ))
    .await;
    let key = "R11/g1/lel";
    site.wait_alarm(key, "span gas shown in calibration", |a| {
        a["maintenance"] == "calibration" && a["severity"] == "critical"
    })
    .await;
    // The subject: 2 s in which no push may come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        site.pushes
            .lock()
            .expect("pushes")
            .iter()
            .all(|(_, k)| k != key),
        "nothing pushed during calibration: {:?}",
        site.pushes.lock().expect("pushes")
    );
    // Calibration ends, the gas is still there: a real alarm now, pushed.
    detector.set_words(Area::Holding, 3, &[0]);
    site.wait_push("reannunciated", key, 1).await;
    let alarm = site
        .wait_alarm(key, "out of calibration", |a| a["maintenance"].is_null())
        .await;
    assert_eq!(alarm["state"], "unacknowledged");
    site.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_comes_and_goes_four_times_in_its_window_is_flagged_chattering() {
    let site = start().await;
    // R1 without delays here: each 350 mA message raises, each 100 mA one clears.
    let topic = "park/p/meter/m1/up";
    for _ in 0..4 {
        mosquitto_pub(site.port, topic, &[meter(350.0).as_bytes()]);
        mosquitto_pub(site.port, topic, &[meter(100.0).as_bytes()]);
    }
    let alarm = site
        .wait_alarm("R1/m1/leakage", "flagged as chattering", |a| {
            a["chattering"] == true
        })
        .await;
    assert_eq!(alarm["rule"], "R1");
    // The board is live; the journal follows once the store writer committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let journal: Value = reqwest::Client::new()
            .get(format!("{}/api/journal?search=m1", site.url))
            .bearer_auth(&site.operator)
            .send()
            .await
            .expect("journal")
            .json()
            .await
            .expect("journal JSON");
        let of = |action: &str| {
            journal
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["action"] == action)
                .count()
        };
        if of("raised") == 4 {
            assert_eq!(of("chatter_flagged"), 1, "{journal}");
            break;
        }
        assert!(Instant::now() < deadline, "{journal}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.gateway.shutdown().await;
}
