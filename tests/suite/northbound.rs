//! The fire department's link through the real daemon (mosquitto, the web UI in Chromium) to
//! the independent GB/T 26875.3 receiving centre (tests/interop/gb26875_centre.py, written from
//! the standard without parkguard's code):
//!
//! - a smoke alarm confirmed on the board reaches the centre as a component fire state within
//!   1 s and is confirmed by it; a false alarm is reported as such (alarm cleared), never as a
//!   fire;
//! - the centre going away loses nothing: gateway fault G12 is raised at once, and when the
//!   centre is back the fire goes first, then the states;
//! - a denied frame is sent again with its serial, a dropped connection is reopened and the
//!   unconfirmed frame resent; the centre's clock sync is confirmed and its offset shown;
//! - a duty check answered in time on the board reaches the centre; one nobody answers is
//!   missed.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value};
use support::browser::{browser, log_in, wait_script};
use support::jsonl::JsonLines;
use support::*;

const DEVICE_ADDRESS: u64 = 112_233_445_566;
const CENTRE_ADDRESS: u64 = 1;
const SMOKE: &str = "R13/s1/event";

/// The test centre as a child process (`support::jsonl`).
struct Centre(JsonLines);

impl Centre {
    /// Listens on `port` (0: any free one).
    fn start(port: u16) -> Centre {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/gb26875_centre.py"
        );
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--address", &CENTRE_ADDRESS.to_string()])
            .args(["--device", &DEVICE_ADDRESS.to_string()]);
        Centre(JsonLines::start(command, "the test centre (python3)"))
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    fn events(&self) -> Vec<Value> {
        self.0.events()
    }

    /// Send-data frames from the gateway, in arrival order.
    fn data_frames(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "frame" && e["command"] == 2)
            .collect()
    }

    fn wait_event(&self, what: &str, timeout: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        self.0.wait(what, timeout, ready)
    }

    fn command(&mut self, command: Value) {
        self.0.command(command)
    }

    fn problems(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "problem" || e["event"] == "bad_frame")
            .collect()
    }

    fn stop(self) {
        self.0.stop()
    }
}

/// The first object of a frame's unit.
fn object(frame: &Value) -> &Value {
    &frame["unit"]["objects"][0]
}

fn unit_type(frame: &Value) -> u64 {
    frame["unit"]["type"].as_u64().unwrap_or(0)
}

fn is_fire(frame: &Value) -> bool {
    unit_type(frame) == 2
        && object(frame)["state_bits"]
            .as_array()
            .is_some_and(|b| b.contains(&json!("fire")))
}

fn has_operation(frame: &Value, bit: &str) -> bool {
    unit_type(frame) == 4
        && object(frame)["operation_bits"]
            .as_array()
            .is_some_and(|b| b.contains(&json!(bit)))
}

struct Site {
    mosquitto: Server,
    _dir: tempfile::TempDir,
    gateway: Gateway,
    url: String,
}

async fn start(centre_port: u16, northbound_extra: &str, confirm_timeout_s: u64) -> Site {
    let mosquitto = mosquitto();
    let port = mosquitto.port;
    let text = format!(
        r#"{header}
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
name = "A栋2层烟感"
[[devices]]
id = "s2"
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
client_id = "pg-northbound-{port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"

[fire]
confirm_timeout_s = {confirm_timeout_s}

[[northbound]]
name = "city"
type = "gb26875"
centre = "127.0.0.1:{centre_port}"
centre_address = {CENTRE_ADDRESS}
device_address = {DEVICE_ADDRESS}
answer_timeout_s = 1
heartbeat_s = 3600
{northbound_extra}
[[northbound.components]]
device = "s1"
component_address = 3

{web}"#,
        header = site_header("l", ""),
        web = web_section(&[
            ("olga", "operator", "operator-pass"),
            ("vera", "viewer", "viewer-pass")
        ]),
    );
    let (dir, path) = site(&text);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    let url = web_url(&gateway);
    Site {
        mosquitto,
        _dir: dir,
        gateway,
        url,
    }
}

impl Site {
    fn smoke(&self, device: &str, event: &str) {
        let payload = format!(r#"{{"dev":"{device}","ts":{},"event":"{event}"}}"#, now_s());
        mosquitto_pub(
            self.mosquitto.port,
            &format!("park/p/smoke/{device}/up"),
            &[payload.as_bytes()],
        );
    }

    fn leak(&self, ma: f64) {
        mosquitto_pub(
            self.mosquitto.port,
            "park/p/meter/m1/up",
            &[meter(ma).as_bytes()],
        );
    }

    async fn session(&self) -> (reqwest::Client, String, String) {
        let (cookie, csrf) = api_log_in(&self.url, "olga", "operator-pass").await;
        (reqwest::Client::new(), cookie, csrf)
    }

    async fn post(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let (client, cookie, csrf) = self.session().await;
        let response = client
            .post(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (client, cookie, _) = self.session().await;
        client
            .get(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn link(&self) -> Value {
        self.get("/api/northbound").await[0].clone()
    }

    async fn wait_alarm(&self, key: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.get("/api/alarms").await;
            if let Some(a) = all
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == key && ready(a))
            {
                return a.clone();
            }
            assert!(Instant::now() < deadline, "alarm {key}: {all:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_link(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let link = self.link().await;
            if ready(&link) {
                return link;
            }
            assert!(Instant::now() < deadline, "{what}: {link:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the gateway's fault G12 (centre link) is active.
    async fn g12_active(&self) -> bool {
        self.get("/api/alarms")
            .await
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["rule"] == "G12" && a["condition"] == true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_alarm_confirmed_on_the_board_reaches_the_centre_as_a_fire_within_a_second() {
    let centre = Centre::start(0);
    let site = start(centre.port(), "", 120).await;
    site.wait_link("connected", |l| l["connected"] == true)
        .await;
    let driver = chromedriver();
    let client = browser(&driver).await;
    log_in(&client, &site.url, "olga", "operator-pass").await;

    site.smoke("s1", "alarm");
    wait_script(
        &client,
        "the fire with its countdown on the board",
        "const r = document.querySelector('#board tbody tr[data-key=\"R13/s1/event\"]');
         return !!r && !!r.querySelector('.fire.pending .fire-countdown') && !!r.querySelector('button.confirm-fire')",
    )
    .await;
    let countdown = client
        .find(Locator::Css(
            "tr[data-key=\"R13/s1/event\"] .fire-countdown",
        ))
        .await
        .expect("countdown")
        .text()
        .await
        .expect("text");
    assert!(
        countdown.starts_with("1:5") || countdown.starts_with("2:00"),
        "about 120 s left: {countdown}"
    );
    // Unconfirmed, the centre has been told nothing about the fire.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !centre.data_frames().iter().any(is_fire),
        "an unconfirmed fire was sent: {:#?}",
        centre.data_frames()
    );
    let reset_shown = client
        .execute(
            "return !!document.querySelector('tr[data-key=\"R13/s1/event\"] button.reset')",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(reset_shown, json!(false), "no reset before the verdict");

    client
        .find(Locator::Css(
            "tr[data-key=\"R13/s1/event\"] button.confirm-fire",
        ))
        .await
        .expect("confirm button")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#dialog[open] #dialog-comment"))
        .await
        .expect("dialog")
        .send_keys("现场确认有烟")
        .await
        .expect("type");
    let clicked = Instant::now();
    client
        .find(Locator::Css("#dialog-ok"))
        .await
        .expect("ok")
        .click()
        .await
        .expect("click ok");
    let fire = centre.wait_event("the fire at the centre", Duration::from_secs(5), |e| {
        e["event"] == "frame" && is_fire(e)
    });
    let took = clicked.elapsed();
    eprintln!("confirm clicked -> fire frame at the centre: {took:?}");
    assert!(took < Duration::from_secs(1), "the fire took {took:?}");
    let o = object(&fire);
    assert_eq!(o["system_type"], 1, "fire alarm system");
    assert_eq!(
        o["component_type"], 42,
        "point photoelectric smoke detector"
    );
    assert_eq!(o["component_address"], 3);
    assert_eq!(o["description"], "A栋2层烟感");
    assert!(o["state_bits"]
        .as_array()
        .expect("bits")
        .contains(&json!("running")));
    assert_eq!(fire["source"], DEVICE_ADDRESS);
    assert_eq!(fire["destination"], CENTRE_ADDRESS);
    // The centre confirmed it, and the gateway took the confirmation (nothing left queued).
    let serial = fire["serial"].clone();
    centre.wait_event("the centre's confirmation", Duration::from_secs(5), |e| {
        e["event"] == "sent" && e["what"] == "confirm" && e["serial"] == serial
    });
    site.wait_link("the queue emptied", |l| {
        l["queued"] == 0 && l["last_confirmed_ms"].is_i64()
    })
    .await;
    // The confirmation follows as an operation record with the operator's number (olga is
    // the first web user).
    let record = centre.wait_event("the confirm record", Duration::from_secs(5), |e| {
        e["event"] == "frame" && has_operation(e, "confirm")
    });
    assert_eq!(object(&record)["operator"], 1);
    wait_script(
        &client,
        "the board shows the confirmed fire",
        "return !!document.querySelector('tr[data-key=\"R13/s1/event\"] .fire.confirmed')",
    )
    .await;

    // A second detector: judged a false alarm on the board (cooking). The centre, which was
    // told only that something is going on there (supervisory), is told it is over, and never
    // of a fire.
    site.smoke("s2", "alarm");
    wait_script(
        &client,
        "the second fire on the board",
        "return !!document.querySelector('tr[data-key=\"R13/s2/event\"] button.false-alarm')",
    )
    .await;
    client
        .find(Locator::Css(
            "tr[data-key=\"R13/s2/event\"] button.false-alarm",
        ))
        .await
        .expect("false alarm button")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#dialog[open] #dialog-cause"))
        .await
        .expect("cause list")
        .select_by_value("cooking")
        .await
        .expect("select");
    client
        .find(Locator::Css("#dialog-ok"))
        .await
        .expect("ok")
        .click()
        .await
        .expect("click ok");
    let s2_state = |bits: &'static str| {
        move |e: &Value| {
            e["event"] == "frame"
                && unit_type(e) == 2
                && object(e)["component_address"] == 2
                && object(e)["state_bits"] == json!(bits.split(',').collect::<Vec<_>>())
        }
    };
    centre.wait_event(
        "s2 supervisory while judged",
        Duration::from_secs(5),
        s2_state("running,supervisory"),
    );
    centre.wait_event(
        "s2 normal after the false alarm",
        Duration::from_secs(5),
        s2_state("running"),
    );
    // "Alarm cleared" names the whole system: not sent for a fire the centre never had.
    assert!(
        !centre
            .data_frames()
            .iter()
            .any(|f| has_operation(f, "alarm_cleared")),
        "{:#?}",
        centre.data_frames()
    );
    let fires: Vec<Value> = centre.data_frames().into_iter().filter(is_fire).collect();
    assert_eq!(fires.len(), 1, "only the confirmed fire: {fires:#?}");
    wait_script(
        &client,
        "the board shows the false alarm and its cause",
        "const f = document.querySelector('tr[data-key=\"R13/s2/event\"] .fire.false-alarm');
         return !!f && f.textContent.indexOf('油烟') >= 0",
    )
    .await;
    // Counted for the enterprise: two fires, one false.
    let tally = site.get("/api/fire/tally").await;
    let e = &tally["enterprises"][0];
    assert_eq!(
        (
            e["enterprise"].clone(),
            e["fires"].clone(),
            e["false_alarms"].clone()
        ),
        (json!("e"), json!(2), json!(1)),
        "{tally:#}"
    );
    assert_eq!(e["false_alarm_reasons"]["cooking"], 1);
    assert_eq!(e["confirmed_by_operator"], 1);
    assert!(
        centre.problems().is_empty(),
        "the centre found problems: {:#?}",
        centre.problems()
    );
    site.gateway.shutdown().await;
    centre.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centre_away_and_back_loses_nothing_and_gets_the_fire_first() {
    let centre = Centre::start(0);
    let port = centre.port();
    let site = start(port, "", 120).await;
    site.wait_link("connected", |l| l["connected"] == true)
        .await;
    centre.stop();
    // The gateway notices at its next frame or connection: a leakage alarm (a supervisory
    // state for the centre) goes nowhere; G12 is raised at once.
    site.leak(650.0);
    site.wait_alarm("R1/m1/leakage", |_| true).await;
    let raised = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !site.g12_active().await {
        assert!(Instant::now() < deadline, "G12 not raised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Within the attempts (3 x 1 s) and a reconnect.
    assert!(
        raised.elapsed() < Duration::from_secs(6),
        "{:?}",
        raised.elapsed()
    );
    // A fire confirmed while the centre is away.
    site.smoke("s1", "alarm");
    site.wait_alarm(SMOKE, |_| true).await;
    let (status, answer) = site
        .post(
            "/api/commands",
            json!({"id": SMOKE, "command": "confirm_fire"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    site.wait_link("queued while away", |l| l["queued"].as_u64() >= Some(3))
        .await;

    // Back on the same port: the fire first, then the rest; every frame confirmed.
    let centre = Centre::start(port);
    let fire = centre.wait_event("the fire", Duration::from_secs(20), |e| {
        e["event"] == "frame" && is_fire(e)
    });
    site.wait_link("everything confirmed", |l| l["queued"] == 0)
        .await;
    let frames = centre.data_frames();
    let first = frames.first().expect("frames");
    assert_eq!(
        first["serial"], fire["serial"],
        "the fire first: {frames:#?}"
    );
    assert!(
        frames.iter().any(|f| unit_type(f) == 2
            && object(f)["state_bits"]
                .as_array()
                .is_some_and(|b| b.contains(&json!("supervisory")))),
        "the leakage state arrived too: {frames:#?}"
    );
    assert!(frames.iter().any(|f| has_operation(f, "confirm")));
    let deadline = Instant::now() + Duration::from_secs(15);
    while site.g12_active().await {
        assert!(Instant::now() < deadline, "G12 did not clear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fires = frames.iter().filter(|f| is_fire(f)).count();
    assert_eq!(fires, 1, "the fire once, not repeated: {frames:#?}");
    site.gateway.shutdown().await;
    centre.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_frame_is_sent_again_a_dropped_link_reopened_and_the_clock_sync_confirmed() {
    let mut centre = Centre::start(0);
    let site = start(centre.port(), "", 120).await;
    site.wait_link("connected", |l| l["connected"] == true)
        .await;
    centre.wait_event("the heartbeat", Duration::from_secs(5), |e| {
        e["event"] == "frame" && unit_type(e) == 21
    });

    // Denied once: the same serial comes again and is confirmed.
    centre.command(json!({"cmd": "deny", "count": 1}));
    site.leak(650.0);
    let denied = centre.wait_event("the denial", Duration::from_secs(10), |e| {
        e["event"] == "sent" && e["what"] == "deny"
    });
    let serial = denied["serial"].clone();
    centre.wait_event("the same frame again", Duration::from_secs(5), |e| {
        e["event"] == "frame" && e["serial"] == serial && e["duplicate"] == true
    });
    centre.wait_event("its confirmation", Duration::from_secs(5), |e| {
        e["event"] == "sent" && e["what"] == "confirm" && e["serial"] == serial
    });

    // Unanswered, then the connection dropped: the gateway reconnects and sends it again.
    centre.command(json!({"cmd": "ignore", "count": 1}));
    site.leak(20.0);
    let ignored = centre.wait_event("the ignored frame", Duration::from_secs(10), |e| {
        e["event"] == "ignored"
    });
    centre.command(json!({"cmd": "drop"}));
    let serial = ignored["serial"].clone();
    centre.wait_event(
        "the ignored frame confirmed after the reconnect",
        Duration::from_secs(15),
        |e| e["event"] == "sent" && e["what"] == "confirm" && e["serial"] == serial,
    );
    site.wait_link("nothing queued", |l| l["queued"] == 0).await;

    // Clock sync: confirmed; the offset is shown, not applied.
    centre.command(json!({"cmd": "clock_sync", "time": "2030-01-01T08:00:00"}));
    centre.wait_event("the clock sync confirmed", Duration::from_secs(5), |e| {
        e["event"] == "answer" && e["to"] == "clock_sync" && e["command"] == 3
    });
    let link = site
        .wait_link("the clock offset", |l| l["clock_offset_ms"].is_i64())
        .await;
    assert!(link["clock_offset_ms"].as_i64().expect("offset") > 86_400_000);
    assert!(
        centre.problems().is_empty(),
        "the centre found problems: {:#?}",
        centre.problems()
    );
    site.gateway.shutdown().await;
    centre.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_check_answered_on_the_board_reaches_the_centre_and_one_nobody_answers_is_missed() {
    let mut centre = Centre::start(0);
    let site = start(centre.port(), "", 120).await;
    site.wait_link("connected", |l| l["connected"] == true)
        .await;
    let driver = chromedriver();
    let client = browser(&driver).await;
    log_in(&client, &site.url, "olga", "operator-pass").await;

    // Answered in time: the banner with its countdown, the answer button, the centre's record.
    centre.command(json!({"cmd": "duty_check", "timeout_minutes": 1}));
    wait_script(
        &client,
        "the duty-check banner",
        "return !!document.querySelector('.duty-check button.duty-answer')",
    )
    .await;
    support::browser::click(&client, ".duty-check button.duty-answer").await;
    let answered = centre.wait_event("the answer at the centre", Duration::from_secs(5), |e| {
        e["event"] == "duty_check_answered"
    });
    assert_eq!(answered["within_timeout"], true, "{answered:#}");
    assert_eq!(answered["operator"], 1);
    wait_script(
        &client,
        "the banner gone",
        "return !document.querySelector('.duty-check')",
    )
    .await;

    // Nobody answers the next one: missed after its minute, and a late answer is refused.
    centre.command(json!({"cmd": "duty_check", "timeout_minutes": 1}));
    site.wait_link("the second duty check waits", |l| {
        l["duty_check"].is_object()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let link = site
        .wait_link("missed", |l| l["duty_checks_missed"] == 1)
        .await;
    assert_eq!(link["duty_checks_answered"], 1);
    let (status, answer) = site
        .post("/api/northbound/city/duty-check", json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{answer}");
    centre.wait_event(
        "the centre saw it unanswered",
        Duration::from_secs(10),
        |e| e["event"] == "duty_check_unanswered",
    );
    // A viewer cannot answer.
    let (cookie, csrf) = api_log_in(&site.url, "vera", "viewer-pass").await;
    let refused = reqwest::Client::new()
        .post(format!("{}/api/northbound/city/duty-check", site.url))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    site.gateway.shutdown().await;
    centre.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_nobody_judged_goes_to_the_centre_and_a_later_false_alarm_clears_it_there() {
    let centre = Centre::start(0);
    let site = start(centre.port(), "", 2).await;
    site.wait_link("connected", |l| l["connected"] == true)
        .await;
    site.smoke("s1", "alarm");
    // Nobody answers within the 2 s: forwarded as a fire, with a confirm record by the
    // gateway (operator 0).
    let fire = centre.wait_event("the unjudged fire", Duration::from_secs(10), |e| {
        e["event"] == "frame" && is_fire(e)
    });
    assert_eq!(object(&fire)["component_address"], 3);
    let record = centre.wait_event(
        "the automatic confirm record",
        Duration::from_secs(5),
        |e| e["event"] == "frame" && has_operation(e, "confirm"),
    );
    assert_eq!(object(&record)["operator"], 0);
    // Someone looks after all: steam. The centre had the fire: it is cleared there.
    let (status, answer) = site
        .post(
            "/api/commands",
            json!({"id": SMOKE, "command": "false_alarm", "reason": "steam"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    let cleared = centre.wait_event("alarm cleared", Duration::from_secs(5), |e| {
        e["event"] == "frame" && has_operation(e, "alarm_cleared")
    });
    assert_eq!(object(&cleared)["operator"], 1);
    centre.wait_event("the word without the fire", Duration::from_secs(5), |e| {
        e["event"] == "frame"
            && unit_type(e) == 2
            && object(e)["component_address"] == 3
            && object(e)["state_bits"] == json!(["running"])
    });
    // The detector alarms again: a false-alarm verdict does not stand for a new fire.
    site.smoke("s1", "alarm_clear");
    site.smoke("s1", "alarm");
    let again = site
        .wait_alarm(SMOKE, |a| a["fire"]["verdict"] != "false_alarm")
        .await;
    assert!(again["fire"].is_object(), "{again:#}");
    centre.wait_event("the new fire forwarded", Duration::from_secs(10), |e| {
        e["event"] == "frame" && is_fire(e) && e["serial"] != fire["serial"]
    });
    site.gateway.shutdown().await;
    centre.stop();
}
