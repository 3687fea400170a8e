//! `parkguard sim` as a program: every shipped scenario file validates against the shipped
//! profiles; a scenario plays over Modbus TCP, RTU on a socat pair and MQTT (values ramp, an
//! alarm is retransmitted until it is acknowledged on the down topic); the load mode publishes
//! at the rate asked for.

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parkguard::sim::scenario::Scenario;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::*;

fn profiles_dir() -> String {
    format!("{}/firmware-config/profiles", env!("CARGO_MANIFEST_DIR"))
}

fn shipped_profiles() -> std::collections::BTreeMap<String, parkguard::config::Profile> {
    std::fs::read_dir(profiles_dir())
        .expect("profiles")
        .flatten()
        .map(|e| {
            let path = e.path();
            let text = std::fs::read_to_string(&path).expect("read");
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("stem")
                .to_string();
            (stem, toml::from_str(&text).expect("profile parses"))
        })
        .collect()
}

#[test]
fn every_shipped_scenario_validates() {
    let profiles = shipped_profiles();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("scenarios").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("read");
        let scenario =
            Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        let problems = scenario.problems(&profiles);
        assert!(
            problems.is_empty(),
            "{}: {problems:?}",
            entry.path().display()
        );
        count += 1;
    }
    assert!(
        count >= 7,
        "the seven hazards of the issue each have a scenario"
    );
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_plays_over_modbus_tcp_rtu_and_mqtt_with_retransmission_until_acknowledged() {
    let mosquitto = mosquitto();
    let pty = pty_pair();
    let dir = tempfile::TempDir::new().expect("temp dir");
    let scenario = dir.path().join("test.toml");
    std::fs::write(
        &scenario,
        r#"name = "test"
[[devices]]
id = "gas-01"
profile = "gas_detector_lel"
unit = 3
values = { concentration_raw = 20, decimals = 1, unit_code = "%LEL", status = "normal", al1_set = 25, al2_set = 50, fault_code = "none", sensor_life_days = 1800, lel = 2.0 }
[[devices]]
id = "869975031200001"
profile = "nb_smoke"
topic = "park/xinghe/smoke/{device}/up"
every_s = 30
retransmit_s = 1
values = { event = "heartbeat", battery_pct = 88 }
[[steps]]
at_s = 0.5
device = "gas-01"
ramp = { quantity = "lel", to = 40.0, over_s = 1 }
[[steps]]
at_s = 0.5
device = "gas-01"
set = { status = "low_alarm" }
[[steps]]
at_s = 0.5
device = "869975031200001"
set = { event = "alarm", smoke_pct = 14.5 }
"#,
    )
    .expect("scenario");

    // Watch the smoke detector's topic before the simulator starts.
    let mut options = MqttOptions::new("sim-test-watcher", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (watcher, mut events) = AsyncClient::new(options, 100);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    let subscribed = std::sync::Arc::new(tokio::sync::Notify::new());
    let suback = std::sync::Arc::clone(&subscribed);
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send((
                        Instant::now(),
                        String::from_utf8_lossy(&p.payload).to_string(),
                    ));
                }
                Event::Incoming(Packet::SubAck(_)) => suback.notify_one(),
                _ => {}
            }
        }
    });
    watcher
        .subscribe("park/xinghe/smoke/+/up", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
        .await
        .expect("the watcher's subscription confirmed by the broker");

    let modbus_port = free_port();
    let sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(["sim", "--scenario"])
            .arg(&scenario)
            .args(["--profiles-dir", &profiles_dir()])
            .args(["--modbus-listen", &format!("127.0.0.1:{modbus_port}")])
            .args(["--rtu-serial", &pty.device_end, "--baud", "9600"])
            .args(["--mqtt", &format!("127.0.0.1:{}", mosquitto.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    // The simulator's own listener (not another process that took the free port meanwhile).
    let sim_pid = sim.0.id();
    wait_for("the simulator's Modbus port", || {
        listens_on(sim_pid, modbus_port)
    });

    // Modbus TCP: the P5 map as a profile test reads it, the float word-swapped as specified,
    // once the scenario's ramp (from 0.5 s, over 1 s) has reached 40 %LEL.
    let profile_test = || {
        parkguard(
            [
                "modbus",
                "profile-test",
                "--tcp",
                &format!("127.0.0.1:{modbus_port}"),
                "--unit",
                "3",
                "--profile",
                "gas_detector_lel",
                "--profiles-dir",
                &profiles_dir(),
            ]
            .map(String::from)
            .to_vec(),
        )
    };
    let at_40 = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("lel ") && l.contains(" 40 "))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = profile_test().await;
    while !at_40(&out) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = profile_test().await;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("lel ") && l.contains(" 40 ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("status ") && l.contains("low_alarm")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("al1_set ") && l.contains(" 25 ")),
        "{stdout}"
    );

    // The same unit over RTU on the serial line.
    let out = parkguard(
        [
            "modbus",
            "read",
            "--serial",
            &pty.gateway_end,
            "--unit",
            "3",
            "8",
            "2",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let f32_row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("f32"))
        .expect("f32 row");
    assert_eq!(
        f32_row.split_whitespace().nth(2),
        Some("40"),
        "CDAB column: {stdout}"
    );

    // MQTT: the alarm comes again every second until acknowledged on the down topic.
    let mut alarms = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alarms.len() < 3 {
        let (at, payload) = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("three alarm messages")
            .expect("watcher");
        if payload.contains(r#""event":"alarm""#) {
            let message: serde_json::Value = serde_json::from_str(&payload).expect("json");
            assert_eq!(message["dev"], "869975031200001");
            assert_eq!(message["smoke_pct"], 14.5);
            alarms.push(at);
        }
    }
    let gap = alarms[2].duration_since(alarms[1]);
    assert!(
        gap >= Duration::from_millis(700),
        "retransmitted every second, not {gap:?}"
    );
    watcher
        .publish(
            "park/xinghe/smoke/869975031200001/down",
            QoS::AtLeastOnce,
            false,
            r#"{"ack":"alarm"}"#,
        )
        .await
        .expect("acknowledge");
    // A retransmission already under way when the acknowledgement went out may still come:
    // half a second for it, then the quiet window that is the subject.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match rx.recv().await {
                Some((_, payload)) if payload.contains(r#""event":"alarm""#) => return payload,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "an alarm was sent after the acknowledgement: {quiet:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mode_publishes_at_the_rate_asked_for() {
    let mosquitto = mosquitto();
    // What the broker delivers is counted, not what the simulator says it sent.
    let mut options = MqttOptions::new("load-counter", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe("park/+/meter/+/up", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("SUBACK in time")
            .expect("counter connection");
        if matches!(event, Event::Incoming(Packet::SubAck(_))) {
            break;
        }
    }
    let counter = tokio::spawn(async move {
        let mut received = 0u64;
        let mut devices = std::collections::BTreeSet::new();
        // Until the broker has been quiet for a second after the load.
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(3), events.poll()).await
        {
            if let Event::Incoming(Packet::Publish(p)) = event {
                received += 1;
                devices.insert(p.topic.clone());
            }
        }
        (received, devices.len())
    });
    let out = parkguard(
        [
            "sim",
            "--load",
            "400",
            "--devices",
            "20",
            "--duration-s",
            "2",
            "--mqtt",
            &format!("127.0.0.1:{}", mosquitto.port),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let messages: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("message count");
    assert!((700..=820).contains(&messages), "{stdout}");
    let (received, topics) = counter.await.expect("counter");
    assert_eq!(
        received, messages,
        "the broker delivered what was sent: {stdout}"
    );
    assert_eq!(topics, 20, "one topic per simulated meter");
}
