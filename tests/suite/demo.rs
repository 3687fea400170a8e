//! `parkguard demo`, the README's first command, as a user runs it: the binary started with no
//! external services; it prints the URL and a login; in real headless Chromium the board shows
//! active alarms within 60 seconds (the smoke alarm, the residual-current ramp, the gas leak);
//! the smoke alarm is retained on the fire department's MQTT topic; with `--influx-url` the
//! readings and alarm points reach a real InfluxDB; SIGINT stops it
//! cleanly with exit code 0.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::browser::{browser, log_in, wait_script_for};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_alarms_in_the_browser_within_a_minute_and_stops_on_sigint() {
    let influx = influxd();
    create_database(&influx, "demo").await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let web_port = free_port();
    let mqtt_port = free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .args(["--listen", &format!("127.0.0.1:{web_port}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--influx-url", &influx.url(), "--influx-db", "demo"])
        .env("RUST_LOG", "info,rumqttd=off")
        .env_remove("PARKGUARD_DEMO_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let started = Instant::now();
    // Drain the log as it comes, so that a full pipe never stalls the demo.
    let stderr = demo.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });

    // The printed banner: URL and a login with a random password.
    let stdout = demo.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    let mut password = None;
    while url.is_none() || password.is_none() {
        let line = lines
            .next()
            .expect("the demo printed its banner")
            .expect("read stdout");
        if let Some(rest) = line.trim().strip_prefix("Web UI:") {
            url = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("Login:") {
            let login = rest.trim();
            assert!(login.starts_with("operator / "), "{login}");
            password = login
                .trim_start_matches("operator / ")
                .split_whitespace()
                .next()
                .map(str::to_string);
        }
    }
    let url = url.expect("url");
    assert_eq!(url, format!("http://127.0.0.1:{web_port}/"));
    let password = password.expect("password");

    let driver = chromedriver();
    let client = browser(&driver).await;
    log_in(&client, &url, "operator", &password).await;
    // Alarms within the first minute of the demo: the scripted smoke alarm, residual current
    // and gas leak (among others).
    let left = Duration::from_secs(60).saturating_sub(started.elapsed());
    wait_script_for(
        &client,
        "smoke, residual-current and gas alarms on the board",
        "const keys = [...document.querySelectorAll('#board tbody tr')].map(r => r.dataset.key); \
         return keys.some(k => k.startsWith('R13/')) && keys.some(k => k.startsWith('R1/meter-03')) \
           && keys.some(k => k.startsWith('R11/gas-04'))",
        left,
    )
    .await;
    let critical = client
        .execute(
            "return document.querySelectorAll('#board tbody tr.unacknowledged.sev-critical').length",
            vec![],
        )
        .await
        .expect("count");
    assert!(
        critical.as_u64().unwrap_or(0) >= 1,
        "a critical alarm is shown"
    );
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-board.png"),
        png,
    )
    .expect("save screenshot");
    client.close().await.expect("close the browser");

    // The same readings and alarm transitions in InfluxDB.
    eventually(
        "meter readings and alarm points in InfluxDB",
        Duration::from_secs(15),
        || {
            let influx = &influx;
            async move {
                let meters =
                    rows(&influxql(influx, "demo", "SELECT count(leakage) FROM electrical").await);
                let alarms = rows(
                    &influxql(
                        influx,
                        "demo",
                        "SELECT count(state) FROM alarm WHERE rule = 'R13'",
                    )
                    .await,
                );
                let count = |r: &Vec<serde_json::Map<String, serde_json::Value>>| {
                    r.first()
                        .and_then(|row| row.get("count"))
                        .and_then(|c| c.as_u64())
                        .unwrap_or(0)
                };
                count(&meters) > 0 && count(&alarms) > 0
            }
        },
    )
    .await;

    // The gas leak's enterprise: its level 2 closed the workshop's gas valve (confirmed by the
    // limit switch) and runs the exhaust fan.
    let base = url.trim_end_matches('/').to_string();
    let (session, _) = api_log_in(&base, "operator", &password).await;
    let api = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    eventually(
        "the demo's gas valve closed and its fan running, both confirmed",
        Duration::from_secs(60),
        || {
            let (api, base, session) = (&api, &base, &session);
            async move {
                let Ok(answer) = api
                    .get(format!("{base}/api/outputs"))
                    .header("cookie", session.as_str())
                    .send()
                    .await
                else {
                    return false;
                };
                let outputs: serde_json::Value = answer.json().await.unwrap_or_default();
                let confirmed = |id: &str| {
                    outputs.as_array().is_some_and(|all| {
                        all.iter()
                            .any(|o| o["id"] == id && o["confirmed"] == serde_json::json!(true))
                    })
                };
                confirmed("e04-gas-valve") && confirmed("e04-exhaust-fan")
            }
        },
    )
    .await;

    // The smoke fire alarm was pushed to the fire department's topic at once, retained, so a
    // client subscribing now sees it.
    let fire = Command::new("mosquitto_sub")
        .args([
            "-p",
            &mqtt_port.to_string(),
            "-t",
            "parkguard/fire/#",
            "-v",
            "-W",
            "3",
        ])
        .output()
        .expect("mosquitto_sub");
    let fire = String::from_utf8_lossy(&fire.stdout);
    assert!(
        fire.lines()
            .any(|l| l.contains("/R13/") && l.contains("\"severity\":\"critical\"")),
        "no smoke alarm on the fire department's topic:\n{fire}"
    );

    // SIGINT: a clean stop.
    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = log.join().expect("log reader");
    assert!(exit.success(), "exit {exit:?}\n{stderr}");
    assert!(stderr.contains("parkguard stopped."), "{stderr}");
    assert!(!stderr.contains(" ERROR "), "{stderr}");
}
