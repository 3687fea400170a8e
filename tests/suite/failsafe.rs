//! Fail-safety against a real mosquitto: no message, broker outage or dead task may silently
//! stop the alarm path.
//!
//! - 2 MB and 20 MB payloads on a persistent QoS 1 session, on MQTT 3.1.1 and 5: counted as
//!   `too_large`, acknowledged, no reconnect, and a smoke alarm published after them is raised
//!   within 1 s.
//! - The broker stopped: gateway fault G4 is raised within 45 s and its condition clears once
//!   the broker is back.
//! - A panic injected into the rules task ends the daemon with a non-zero exit within 2 s, and
//!   the next start raises G10.
//! - A stalled rules loop stops the systemd watchdog pings (a stand-in `NOTIFY_SOCKET`).
//! - A flood of distinct unknown device ids is capped and a smoke alarm in it still arrives.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::decode::payload::DecodeErrorKind;
use parkguard::pipeline::Gateway;
use parkguard::rules::alarm::{Action, AlarmState};
use support::*;

fn site_text(mqtt_port: u16, protocol: &str, client_id: &str, gateway_extra: &str) -> String {
    format!(
        r#"{header}
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"

[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
protocol = "{protocol}"
client_id = "{client_id}"
keepalive_s = 5
connect_timeout_s = 2
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
"#,
        header = site_header("l", gateway_extra)
    )
}

fn smoke_alarm(device: &str) -> Vec<u8> {
    format!(
        r#"{{"dev":"{device}","ts":{},"event":"alarm","smoke_pct":12.5,"battery_pct":78}}"#,
        now_s()
    )
    .into_bytes()
}

/// Publishes a smoke alarm and returns how long until the gateway raised it, less the time
/// mosquitto_pub itself took (its process spawn, connection and the broker's PUBACK are not
/// the gateway's latency).
async fn smoke_alarm_latency(gateway: &Gateway, port: u16, device: &str) -> Duration {
    let mut transitions = gateway.rules.subscribe();
    let key = format!("R13/{device}");
    let sent = Instant::now();
    let payload = smoke_alarm(device);
    let topic = format!("park/p/smoke/{device}/up");
    tokio::task::spawn_blocking(move || mosquitto_pub(port, &topic, &[&payload]))
        .await
        .expect("publish");
    let publishing = sent.elapsed();
    let raised = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match transitions.recv().await {
                Ok(t) if t.alarm.key.starts_with(&key) && t.action == Action::Raised => break,
                Ok(_) => {}
                Err(err) => panic!("transitions: {err}"),
            }
        }
    })
    .await;
    assert!(
        raised.is_ok(),
        "the smoke alarm of {device} was never raised"
    );
    sent.elapsed().saturating_sub(publishing)
}

async fn oversized_messages_then_smoke_alarm(protocol: &str) {
    let mosquitto = mosquitto();
    let client_id = format!("pg-big-{}-{}", protocol.replace('.', ""), mosquitto.port);
    let (_dir, site) = site(&site_text(mosquitto.port, protocol, &client_id, ""));
    let config = Config::load(&site).expect("site");
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    let conn = gateway.metrics.mqtt("park");
    let connects_before = conn.connects.load(Ordering::Relaxed);

    let port = mosquitto.port;
    tokio::task::spawn_blocking(move || {
        for size in [2 * 1024 * 1024, 20 * 1024 * 1024] {
            let mut big = b"{\"dev\":\"s1\",\"event\":\"heartbeat\",\"junk\":\"".to_vec();
            big.resize(size, b'x');
            mosquitto_pub(port, "park/p/smoke/s1/up", &[&big]);
        }
    })
    .await
    .expect("publish the large messages");
    let latency = smoke_alarm_latency(&gateway, mosquitto.port, "s1").await;
    assert!(
        latency < Duration::from_secs(1),
        "{protocol}: smoke alarm after the large messages took {latency:?}"
    );
    assert_eq!(
        gateway.metrics.decode_errors(DecodeErrorKind::TooLarge),
        2,
        "{protocol}: both large messages counted as too_large"
    );
    assert_eq!(
        conn.connects.load(Ordering::Relaxed),
        connects_before,
        "{protocol}: the session was never broken"
    );
    assert_eq!(conn.connection_errors.load(Ordering::Relaxed), 0);
    assert!(
        retained(mosquitto.port, "parkguard/parkguard/status").contains("\"online\""),
        "the retained status says online"
    );
    gateway.shutdown().await;
    assert!(
        retained(mosquitto.port, "parkguard/parkguard/status").contains("\"offline\""),
        "the retained status says offline after a shutdown"
    );

    // Acknowledged: a new session under the same client id gets nothing again. Published
    // while the gateway is away, a sentinel queued behind anything redelivered shows when
    // the session's backlog has been read.
    mosquitto_pub(
        mosquitto.port,
        "park/p/smoke/s1/up",
        &[&format!(r#"{{"dev":"s1","ts":{},"event":"heartbeat"}}"#, now_s()).into_bytes()],
    );
    let config = Config::load(&site).expect("site");
    let gateway = Gateway::start(config).await.expect("restart");
    eventually("the sentinel", Duration::from_secs(20), || {
        let m = std::sync::Arc::clone(&gateway.metrics);
        async move { m.readings_decoded.load(Ordering::Relaxed) > 0 }
    })
    .await;
    assert_eq!(
        gateway.metrics.decode_errors(DecodeErrorKind::TooLarge),
        0,
        "{protocol}: the broker redelivered an oversized message: it was not acknowledged"
    );
    gateway.shutdown().await;
}

/// The retained message on `topic`, read with mosquitto_sub.
fn retained(port: u16, topic: &str) -> String {
    let program = require_binary("mosquitto_sub", "mosquitto-clients");
    let out = Command::new(program)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .expect("mosquitto_sub");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_on_mqtt_3_1_1_are_counted_and_the_stream_goes_on() {
    oversized_messages_then_smoke_alarm("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_on_mqtt_5_are_counted_and_the_stream_goes_on() {
    oversized_messages_then_smoke_alarm("5").await;
}

fn g4_state(alarms: &[parkguard::rules::engine::AlarmView]) -> Option<AlarmState> {
    alarms
        .iter()
        .find(|a| a.rule == "G4" && a.source.ends_with("mqtt_down_park"))
        .map(|a| a.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_raises_a_gateway_fault_within_45_s_and_it_clears_on_return() {
    let mut mosquitto = mosquitto();
    let client_id = format!("pg-loss-{}", mosquitto.port);
    let (_dir, site) = site(&site_text(mosquitto.port, "5", &client_id, ""));
    let gateway = Gateway::start(Config::load(&site).expect("site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    // Up long enough to count as stable (10 s): no fault before the loss. The wait is the
    // subject; it is not for something that could be awaited.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(g4_state(&gateway.rules.alarms().await), None);

    mosquitto.stop();
    let lost = Instant::now();
    let deadline = lost + Duration::from_secs(45);
    loop {
        if g4_state(&gateway.rules.alarms().await) == Some(AlarmState::Unacknowledged) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "G4 not raised within 45 s of the broker's loss"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let raised_after = lost.elapsed();
    assert!(
        raised_after >= Duration::from_secs(29),
        "G4 has a 30 s on-delay, raised after {raised_after:?}"
    );
    eprintln!("broker loss to gateway fault: {raised_after:?}");

    mosquitto.start();
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        if g4_state(&gateway.rules.alarms().await) == Some(AlarmState::ReturnedUnacknowledged) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "G4's condition did not clear after the broker returned: {:?}",
            g4_state(&gateway.rules.alarms().await)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_rules_task_ends_the_daemon_within_2_s_and_the_restart_raises_g10() {
    let mosquitto = mosquitto();
    let client_id = format!("pg-panic-{}", mosquitto.port);
    let (dir, site) = site(&site_text(mosquitto.port, "5", &client_id, ""));
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["run", "-c"])
        .arg(&site)
        .env("PARKGUARD_TEST_FAULT", "rules_panic:s1")
        .env("RUST_LOG", "info,rumqttc=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon");
    let log_path = dir.path().join("daemon.log");
    wait_for("the daemon's subscriptions", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("MQTT subscriptions confirmed"))
    });
    let port = mosquitto.port;
    let payload = smoke_alarm("s1");
    mosquitto_pub(port, "park/p/smoke/s1/up", &[&payload]);
    // From the broker's acknowledgement: mosquitto_pub's process spawn is not the daemon's.
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the daemon kept running after its rules task panicked"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(3), "exit code of a task failure");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("A task of the gateway failed") && log.contains("test fault injected"),
        "the cause is logged at ERROR: {log}"
    );

    // The next start (the service manager's restart) raises G10 from the note left behind.
    let gateway = Gateway::start(Config::load(&site).expect("site"))
        .await
        .expect("restart");
    eventually("G10 raised", Duration::from_secs(10), || {
        let rules = gateway.rules.clone();
        async move { rules.alarms().await.iter().any(|a| a.rule == "G10") }
    })
    .await;
    gateway.shutdown().await;
}

#[test]
fn watchdog_pings_stop_when_the_rules_loop_stalls() {
    let mosquitto = mosquitto();
    let client_id = format!("pg-wd-{}", mosquitto.port);
    let (dir, site) = site(&site_text(mosquitto.port, "5", &client_id, ""));
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    // As systemd does: the watchdog settings name the daemon's own PID (the shell's, kept
    // by exec).
    let mut daemon = Command::new("/bin/sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_parkguard"))
        .arg(&site)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "3000000")
        .env("PARKGUARD_TEST_FAULT", "rules_stall:s1")
        .env("RUST_LOG", "info,rumqttc=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon");

    // Every datagram with the time it came.
    let mut seen: Vec<(Instant, String)> = Vec::new();
    let read_for = |seen: &mut Vec<(Instant, String)>, span: Duration| {
        let until = Instant::now() + span;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    };
    let log_path = dir.path().join("daemon.log");
    wait_for("the daemon's subscriptions", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("MQTT subscriptions confirmed"))
    });
    read_for(&mut seen, Duration::from_secs(4));
    assert!(
        seen.iter().any(|(_, m)| m.contains("READY=1")),
        "the daemon reports ready: {seen:?}"
    );
    let healthy_pings = seen
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count();
    assert!(
        healthy_pings >= 3,
        "pings every second while healthy: {seen:?}"
    );

    mosquitto_pub(mosquitto.port, "park/p/smoke/s1/up", &[&smoke_alarm("s1")]);
    let stalled_at = Instant::now();
    seen.clear();
    read_for(&mut seen, Duration::from_secs(20));
    let late_pings: Vec<_> = seen
        .iter()
        .filter(|(at, m)| {
            m.contains("WATCHDOG=1") && at.duration_since(stalled_at) > Duration::from_secs(13)
        })
        .collect();
    assert!(
        late_pings.is_empty(),
        "pings went on {} s after the rules loop stalled: {late_pings:?}",
        late_pings
            .last()
            .map_or(0, |(at, _)| at.duration_since(stalled_at).as_secs())
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).expect("log");
    assert!(log.contains("Loops have stopped turning"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_ids_is_capped_and_a_smoke_alarm_still_arrives() {
    // As a gateway's broker should be set up: an unlimited queue for its subscriber. With
    // mosquitto's default of 1000 queued messages, a gateway slower than the publisher loses
    // messages in the broker and "every flood message counted" never comes (it did not, run
    // alone on an idle machine).
    let mosquitto = mosquitto_with(|port, _| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    });
    let client_id = format!("pg-flood-{}", mosquitto.port);
    let (_dir, site) = site(&site_text(
        mosquitto.port,
        "5",
        &client_id,
        "max_unknown_devices = 100",
    ));
    let gateway = Gateway::start(Config::load(&site).expect("site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let messages: Vec<(String, Vec<u8>)> = (0..5000)
        .map(|i| {
            (
                format!("park/p/meter/ghost-{i}/up"),
                format!(r#"{{"ts":{},"leakage":12}}"#, now_s() * 1000).into_bytes(),
            )
        })
        .collect();
    // One message in flight at a time: the flood lasts while the smoke alarm goes through.
    let flood = tokio::spawn(publisher::publish_acked_window(
        mosquitto.port,
        messages,
        std::sync::Arc::clone(&acked),
        1,
    ));
    eventually("half the flood published", Duration::from_secs(60), || {
        let acked = std::sync::Arc::clone(&acked);
        async move { acked.load(Ordering::Relaxed) >= 2500 }
    })
    .await;
    let latency = smoke_alarm_latency(&gateway, mosquitto.port, "s1").await;
    let published_by_then = acked.load(Ordering::Relaxed);
    flood.await.expect("flood");
    assert!(
        published_by_then < 5000,
        "the smoke alarm was raised while the flood went on ({published_by_then} of 5000 published)"
    );
    eventually(
        "every flood message counted",
        Duration::from_secs(60),
        || {
            let m = std::sync::Arc::clone(&gateway.metrics);
            async move { m.messages_received.load(Ordering::Relaxed) >= 5001 }
        },
    )
    .await;
    assert_eq!(
        gateway
            .metrics
            .decode_errors(DecodeErrorKind::UnknownOverCap),
        4900,
        "ids beyond the cap of 100 are counted and dropped"
    );
    let known: usize = gateway.latest.all().len();
    assert!(
        known <= 2 + 100 + 1,
        "the device table holds the declared, the capped unknown and the gateway: {known}"
    );
    eprintln!("smoke alarm during the flood: {latency:?}");
    gateway.shutdown().await;
}
