//! Manual control of outputs over the web, against a daemon whose gas valve is a coil of the
//! in-crate Modbus simulator on a real TCP port: every role sees the outputs, only technicians
//! switch them, with the CSRF token, a reason and the output's id as the confirmation; the
//! coil is really written, the read-back confirms it, and the journal names the technician and
//! the reason. In real headless Chromium a technician closes the valve through the confirmation
//! dialog and the row turns `closed`; an operator sees the list without buttons. A gas
//! detector's alarm closes the valve through an interlock: the alarm's details say what
//! linkage did, and the valve cannot be released while the alarm is present.

use crate::support;

use std::time::Duration;

use parkguard::config::Config;
use parkguard::decode::registers::Area;
use parkguard::pipeline::Gateway;
use parkguard::sim::modbus::SimulatedBus;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::browser::{browser, click, log_in, wait_script};
use support::*;

const VALVE: &str = "valve-1";
const UNIT: u8 = 9;
/// The gas detector's unit on the same simulated bus, when the site has one.
const DETECTOR: u8 = 2;

struct Site {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    bus: SimulatedBus,
    base: String,
    simulator: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Site {
    /// The site with the valve; `interlock`: also a gas detector (unit 2) whose alarm closes
    /// it.
    async fn start(interlock: bool) -> Site {
        let bus = SimulatedBus::new([UNIT, DETECTOR]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let simulator = tokio::spawn(bus.clone().serve_tcp(listener));
        let detector = if interlock {
            format!(
                r#"
[[devices]]
id = "g1"
location = "l"
profile = "gas_detector_lel"

[[modbus.units]]
device = "g1"
unit_id = {DETECTOR}

[[linkage]]
name = "gas leak shuts the valve"
rules = ["R11"]
severity = "high"
outputs = ["{VALVE}"]
"#
            )
        } else {
            "units = []\n".to_string()
        };
        let text = format!(
            r#"{header}
[[modbus]]
name = "bus-1"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout_ms = 500
{detector}
[[outputs]]
id = "{VALVE}"
kind = "gas_valve"
location = "l"
name = "B2厨房燃气紧急切断阀"
modbus = {{ connection = "bus-1", unit_id = {UNIT}, area = "coil", address = 0 }}

{web}"#,
            header = site_header("l", ""),
            web = web_section(&[
                ("olga", "operator", "operator-pass"),
                ("tina", "technician", "technician-pass"),
            ]),
        );
        let (dir, path) = site(&text);
        let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
        let gateway = Gateway::start(config).await.expect("start");
        let base = web_url(&gateway);
        Site {
            _dir: dir,
            gateway,
            bus,
            base,
            simulator,
        }
    }

    fn coil(&self) -> Option<u16> {
        self.bus.unit(UNIT).expect("unit 9").word(Area::Coil, 0)
    }

    async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.simulator.abort();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The valve as `/api/outputs` shows it to the session `cookie`.
async fn valve(base: &str, cookie: &str) -> Value {
    let response = client()
        .get(format!("{base}/api/outputs"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("outputs");
    assert_eq!(response.status(), StatusCode::OK);
    let list: Vec<Value> = response.json().await.expect("json");
    list.into_iter()
        .find(|o| o["id"] == VALVE)
        .expect("the valve is listed")
}

/// POSTs `body` to `/api/outputs/{VALVE}/{what}` as the session, with its CSRF token when
/// given; returns the status and the answer.
async fn switch(
    base: &str,
    what: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = client()
        .post(format!("{base}/api/outputs/{VALVE}/{what}"))
        .header("cookie", cookie)
        .json(&body);
    if let Some(token) = csrf {
        request = request.header("x-csrf-token", token);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_technician_switches_an_output_with_a_reason_and_the_confirmation() {
    let site = Site::start(false).await;
    let base = site.base.clone();
    let (operator, operator_csrf) = api_log_in(&base, "olga", "operator-pass").await;
    let (technician, csrf) = api_log_in(&base, "tina", "technician-pass").await;

    // At start the valve is read back (coil 0 = 0: open); nothing is written.
    eventually(
        "the valve read back at start",
        Duration::from_secs(10),
        || {
            let (base, operator) = (base.clone(), operator.clone());
            async move { valve(&base, &operator).await["state"] == "open" }
        },
    )
    .await;
    let shown = valve(&base, &operator).await;
    assert_eq!(shown["kind"], "gas_valve");
    assert_eq!(shown["name"], "B2厨房燃气紧急切断阀");
    assert_eq!(shown["location"], "l");
    assert_eq!(shown["manual_release_only"], true);
    assert_eq!(site.coil(), None, "nothing written at start");

    let good = json!({ "reason": "燃气泄漏巡检，先关阀", "confirm": VALVE });
    // An operator sees the outputs but may not switch them.
    let (status, answer) = switch(
        &base,
        "operate",
        &operator,
        Some(&operator_csrf),
        good.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // A technician without the CSRF token is refused.
    let (status, answer) = switch(&base, "operate", &technician, None, good.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("CSRF")));
    // The confirmation must name this output.
    for body in [
        json!({ "reason": "x", "confirm": "valve-2" }),
        json!({ "reason": "x" }),
    ] {
        let (status, answer) = switch(&base, "operate", &technician, Some(&csrf), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("confirm") && e.contains(VALVE)),
            "{answer}"
        );
    }
    // A reason is required.
    let (status, answer) = switch(
        &base,
        "operate",
        &technician,
        Some(&csrf),
        json!({ "reason": " ", "confirm": VALVE }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]
        .as_str()
        .is_some_and(|e| e.contains("reason")));
    // An unknown output is a 404.
    let response = client()
        .post(format!("{base}/api/outputs/valve-9/operate"))
        .header("cookie", &technician)
        .header("x-csrf-token", &csrf)
        .json(&json!({ "reason": "x", "confirm": "valve-9" }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(site.coil(), None, "nothing refused was written");

    // With a reason and the confirmation: accepted, then written and confirmed.
    let (status, answer) = switch(&base, "operate", &technician, Some(&csrf), good).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({ "accepted": true }));
    eventually(
        "the valve confirmed closed",
        Duration::from_secs(10),
        || {
            let (base, operator) = (base.clone(), operator.clone());
            async move {
                let v = valve(&base, &operator).await;
                v["confirmed"] == true && v["state"] == "closed" && v["pending"] == false
            }
        },
    )
    .await;
    assert_eq!(
        site.coil(),
        Some(1),
        "the coil was written on the simulator"
    );
    let shown = valve(&base, &operator).await;
    assert_eq!(shown["commanded"], true);
    assert!(shown["confirmed_at_ms"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(shown["holders"], json!(["manual:tina"]));
    assert_eq!(shown["failing"], Value::Null);

    // The journal, on the output's key: the technician and the reason, then the confirmation.
    let key = format!("output/{VALVE}");
    eventually(
        "the journal names the technician, the reason and the confirmation",
        Duration::from_secs(10),
        || {
            let (base, operator, key) = (base.clone(), operator.clone(), key.clone());
            async move {
                let entries: Vec<Value> = client()
                    .get(format!("{base}/api/journal"))
                    .query(&[("search", key.as_str())])
                    .header("cookie", &operator)
                    .send()
                    .await
                    .expect("journal")
                    .json()
                    .await
                    .expect("json");
                let ours = |e: &&Value| e["key"] == key.as_str() && e["action"] == "linkage";
                let by_hand = entries.iter().filter(ours).any(|e| {
                    e["operator"] == "tina"
                        && e["comment"] == "燃气泄漏巡检，先关阀"
                        && e["message"].as_str().is_some_and(|m| m.contains("by hand"))
                });
                let confirmed = entries.iter().filter(ours).any(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("closed") && m.contains("confirmed"))
                });
                by_hand && confirmed
            }
        },
    )
    .await;

    // Released by hand (nothing but the technician holds it): the coil is cleared.
    let (status, answer) = switch(
        &base,
        "release",
        &technician,
        Some(&csrf),
        json!({ "reason": "泄漏已排除", "confirm": VALVE }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    eventually("the valve confirmed open", Duration::from_secs(10), || {
        let (base, operator) = (base.clone(), operator.clone());
        async move {
            let v = valve(&base, &operator).await;
            v["confirmed"] == false && v["state"] == "open"
        }
    })
    .await;
    assert_eq!(site.coil(), Some(0));
    site.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technician_closes_the_valve_through_the_confirmation_dialog() {
    let site = Site::start(false).await;
    let url = site.base.clone();
    let driver = chromedriver();
    let client = browser(&driver).await;

    // An operator sees the valve's state but no buttons.
    log_in(&client, &url, "olga", "operator-pass").await;
    click(&client, "[data-tab=outputs]").await;
    wait_script(
        &client,
        "the valve listed for the operator",
        &format!(
            "const r = document.querySelector('#outputs tr[data-output=\"{VALVE}\"]'); \
             return !!r && r.querySelector('.state').dataset.state === 'open' \
               && r.querySelectorAll('button').length === 0"
        ),
    )
    .await;
    click(&client, "#logout").await;

    log_in(&client, &url, "tina", "technician-pass").await;
    click(&client, "[data-tab=outputs]").await;
    let row = format!("#outputs tr[data-output=\"{VALVE}\"]");
    wait_script(
        &client,
        "the valve listed open with a close button",
        &format!(
            "const r = document.querySelector('{row}'); \
             return !!r && r.querySelector('.state').dataset.state === 'open' \
               && r.querySelector('.state').textContent === '已打开' && !!r.querySelector('button.operate')"
        ),
    )
    .await;
    click(&client, &format!("{row} button.operate")).await;
    // The confirmation names the output and what is done to it.
    wait_script(
        &client,
        "the confirmation dialog naming the valve",
        &format!(
            "return document.getElementById('output-dialog').open \
               && document.getElementById('output-dialog-output').textContent.includes('{VALVE}') \
               && document.getElementById('output-dialog-ok').textContent.includes('B2厨房燃气紧急切断阀')"
        ),
    )
    .await;
    // Without a reason nothing is sent.
    click(&client, "#output-dialog-ok").await;
    wait_script(
        &client,
        "the reason asked for",
        "return document.getElementById('output-dialog').open \
           && document.getElementById('output-dialog-error').textContent !== ''",
    )
    .await;
    assert_eq!(site.coil(), None);
    client
        .find(fantoccini::Locator::Css("#output-reason"))
        .await
        .expect("reason field")
        .send_keys("演练：手动关阀")
        .await
        .expect("type reason");
    click(&client, "#output-dialog-ok").await;
    wait_script(
        &client,
        "the valve shown closed",
        &format!(
            "const r = document.querySelector('{row}'); \
             return !document.getElementById('output-dialog').open && !!r \
               && r.querySelector('.state').dataset.state === 'closed' \
               && r.querySelector('.state').textContent === '已关闭' \
               && r.querySelector('.holders').textContent.includes('tina')"
        ),
    )
    .await;
    assert_eq!(
        site.coil(),
        Some(1),
        "the coil was written on the simulator"
    );
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-outputs.png"),
        png,
    )
    .expect("save screenshot");
    client.close().await.expect("close the browser");
    site.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gas_alarm_closes_the_valve_and_its_details_say_what_linkage_did() {
    let site = Site::start(true).await;
    let base = site.base.clone();
    let (operator, _) = api_log_in(&base, "olga", "operator-pass").await;
    let (technician, csrf) = api_log_in(&base, "tina", "technician-pass").await;
    // The detector's own status is level 2 (alarm), with 8 %LEL as its float (CDAB).
    let detector = site.bus.unit(DETECTOR).expect("detector unit");
    detector.set_words(Area::Holding, 8, &[0x0000, 0x4100]);
    detector.set_words(Area::Holding, 3, &[2]);

    let key = "R11/g1/lel";
    eventually(
        "the alarm's linkage line says the valve closed, confirmed",
        Duration::from_secs(20),
        || {
            let (base, operator) = (base.clone(), operator.clone());
            async move {
                let alarms: Vec<Value> = client()
                    .get(format!("{base}/api/alarms"))
                    .header("cookie", &operator)
                    .send()
                    .await
                    .expect("alarms")
                    .json()
                    .await
                    .expect("json");
                alarms.iter().any(|a| {
                    a["key"] == key
                        && a["linkage"].as_array().is_some_and(|lines| {
                            lines.iter().any(|l| {
                                l.as_str().is_some_and(|l| {
                                    l.contains("B2厨房燃气紧急切断阀 closed")
                                        && l.contains("confirmed")
                                })
                            })
                        })
                })
            }
        },
    )
    .await;
    assert_eq!(site.coil(), Some(1), "the interlock wrote the coil");
    let shown = valve(&base, &operator).await;
    assert_eq!(shown["state"], "closed");
    assert_eq!(shown["holders"], json!([key]));

    // Not released while the alarm that closed it is present.
    let (status, answer) = switch(
        &base,
        "release",
        &technician,
        Some(&csrf),
        json!({ "reason": "想恢复供气", "confirm": VALVE }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains(key) && e.contains("still present")),
        "{answer}"
    );
    assert_eq!(site.coil(), Some(1), "the refused release wrote nothing");

    // The operator's board: the alarm's details list what linkage did.
    let driver = chromedriver();
    let client = browser(&driver).await;
    log_in(&client, &base, "olga", "operator-pass").await;
    let row = format!("#board tbody tr[data-key=\"{key}\"]");
    click(&client, &format!("{row} button.pushes")).await;
    wait_script(
        &client,
        "what linkage did, under the alarm",
        "const lines = [...document.querySelectorAll('#board tr.pushes-row ul.linkage li')]; \
         return lines.some(l => l.textContent.includes('B2厨房燃气紧急切断阀 closed') \
           && l.textContent.includes('confirmed')) \
           && document.querySelector('#board tr.pushes-row h4').textContent === '联动动作'",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-alarm-linkage.png"),
        png,
    )
    .expect("save screenshot");
    client.close().await.expect("close the browser");
    site.shutdown().await;
}
