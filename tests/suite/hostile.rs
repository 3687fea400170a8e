//! Hostile load against the release-like daemon (`parkguard run` as its own process), as an
//! attacker on the park network would try it, each with the figure it must hold:
//!
//! - 60 wrong logins sent at once from one address: at most 5 passwords are checked, the rest
//!   answered 429 (or 503 while both check slots are taken); the daemon's peak RSS stays under
//!   200 MB;
//! - a name under attack from many addresses: its owner still logs in from a clean address;
//! - 5,000 idle connections from 200 addresses: every one closed within 15 s, while Modbus
//!   polling misses no cycle;
//! - the embedded broker beyond loopback: refused as configuration without logins; with them,
//!   an anonymous client cannot connect, and a client that reuses the daemon's client id (with a
//!   valid device login) neither kicks ingest nor loses a message;
//! - secrets (robot keys in a URL path or query, signing secrets, device passwords) appear in no
//!   log line, no byte of the store and no API answer;
//! - a journal rewritten as a whole passes its hash chain but not its anchors;
//! - event streams end with their session (within 6 s of logout) and are capped per session;
//!   `/metrics` needs its token when one is configured.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// The daemon as its own process, killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(site: &Path) -> Daemon {
        let log = site.with_file_name("daemon.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(["run", "-c"])
            .arg(site)
            .env("RUST_LOG", "info,rumqttd=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start parkguard");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "`{text}` never logged:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port of the web UI, which listens on port 0 (the system's choice, never taken by
    /// anyone else in between): read from its "Web UI listening." line.
    fn web_port(&self) -> u16 {
        self.wait_log("Web UI listening.");
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("Web UI listening."))
            .expect("the line");
        line.split("url=http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line}"))
    }

    /// Peak resident memory so far, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a metric's samples (all labels) in a `/metrics` answer.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The daemon's `/metrics` answer on `port`.
async fn metrics_of(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn login(client: &reqwest::Client, port: u16, name: &str, password: &str) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn web_site(web_port: u16, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let hash = parkguard::web::hash_password("the-right-password").expect("hash");
    site(&format!(
        "{header}{extra}\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n\
         [[web.users]]\nname = \"admin\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n",
        header = site_header("l", ""),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_logins_at_once_check_five_passwords_and_a_name_attack_locks_nobody_out() {
    let (_dir, path) = web_site(0, "");
    let daemon = Daemon::start(&path);
    let port = daemon.web_port();

    // 60 wrong passwords for admin at once from one address.
    let one = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    let answers =
        futures_util::future::join_all((0..60).map(|_| login(&one, port, "admin", "guess"))).await;
    let checked = answers.iter().filter(|s| **s == 401).count();
    // Refused: limited (429), check slots busy (503), or the connection closed at once by the
    // per-address connection cap (32).
    let refused = answers
        .iter()
        .filter(|s| matches!(**s, 429 | 503 | 0))
        .count();
    assert!(checked <= 5, "passwords checked: {checked} ({answers:?})");
    assert_eq!(checked + refused, 60, "{answers:?}");
    let rss = daemon.peak_rss();
    assert!(rss < 200 << 20, "peak RSS {} MB", rss >> 20);
    // The attacker's address is limited for admin, even with the right password...
    assert_eq!(login(&one, port, "admin", "the-right-password").await, 429);

    // ... and from 7 more addresses: admin has failed 12 times, a name under attack.
    let attackers: Vec<reqwest::Client> = (2..9)
        .map(|n| client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))))
        .collect();
    for attacker in &attackers {
        let status = login(attacker, port, "admin", "guess").await;
        assert!(matches!(status, 401 | 503), "{status}");
    }
    // Its owner, from a clean address, still gets in, after the name's delay (2 s by now;
    // never more than 8 s).
    let clean = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)));
    let started = Instant::now();
    assert_eq!(
        login(&clean, port, "admin", "the-right-password").await,
        200
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // Nothing a user typed into the name field is logged unless it is a user's name.
    assert_eq!(login(&clean, port, "hunter2-typed-as-name", "x").await, 401);
    // The subject: a moment for a log line that must not come.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!daemon.log().contains("hunter2-typed-as-name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_are_closed_within_15_s_and_modbus_misses_no_cycle() {
    use parkguard::sim::modbus::SimulatedBus;
    // Client and daemon each hold up to 5,000 sockets.
    parkguard::web::conn::raise_fd_limit();
    let bus = SimulatedBus::new([1]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let modbus_port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.serve_tcp(listener));
    let (_dir, path) = web_site(
        0,
        &format!(
            "[[devices]]\nid = \"d1\"\nlocation = \"l\"\nprofile = \"arcm_combo_detector\"\n\
             [[modbus]]\nname = \"bus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{modbus_port}\"\n\
             timeout_ms = 500\n[[modbus.units]]\ndevice = \"d1\"\nunit_id = 1\n"
        ),
    );
    let daemon = Daemon::start(&path);
    let port = daemon.web_port();
    let metrics = || metrics_of(port);
    eventually(
        "the first Modbus polls",
        Duration::from_secs(10),
        || async {
            metric(
                &metrics().await,
                "parkguard_modbus_polls_total{connection=\"bus\",result=\"ok\"}",
            ) > 0.0
        },
    )
    .await;
    let before = metrics().await;
    let measured_from = Instant::now();
    let polls_before = metric(
        &before,
        "parkguard_modbus_polls_total{connection=\"bus\",result=\"ok\"}",
    );
    assert!(polls_before > 0.0, "polling runs: {before}");

    // 25 connections from each of 200 addresses, none of which ever sends a byte.
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut sockets = Vec::new();
    for n in 0..200u8 {
        for _ in 0..25 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 3, 0, n)), 0))
                .expect("bind");
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
            {
                sockets.push(stream);
            }
        }
    }
    let opened = Instant::now();
    assert!(sockets.len() >= 4_900, "connected {}", sockets.len());
    // Each is closed by the daemon: at once past a cap, else after 10 s without a first byte.
    let closed = futures_util::future::join_all(sockets.into_iter().map(|mut stream| async move {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let ended = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut byte)).await;
        matches!(ended, Ok(Ok(0)) | Ok(Err(_)))
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} connections still open 15 s later");
    assert!(opened.elapsed() < Duration::from_secs(16));

    let after = metrics().await;
    let seconds = measured_from.elapsed().as_secs_f64();
    assert_eq!(
        metric(&after, "parkguard_modbus_missed_cycles_total"),
        metric(&before, "parkguard_modbus_missed_cycles_total"),
        "no poll cycle missed"
    );
    assert_eq!(
        metric(
            &after,
            "parkguard_modbus_polls_total{connection=\"bus\",result=\"failed\"}"
        ),
        metric(
            &before,
            "parkguard_modbus_polls_total{connection=\"bus\",result=\"failed\"}"
        ),
        "no poll failed (no 'Too many open files')"
    );
    let polls_after = metric(
        &after,
        "parkguard_modbus_polls_total{connection=\"bus\",result=\"ok\"}",
    );
    // One cycle a second (the fast class), give or take the first and the last.
    assert!(
        polls_after - polls_before >= seconds.floor() - 2.0,
        "polls went on: {polls_before} -> {polls_after} in {seconds:.1} s"
    );
    assert!(!daemon.log().contains("Too many open files"));
}

/// A broker users file with `s1`'s password and its hash.
const DEVICE_PASSWORD: &str = "d3v1ce-pa55word-0123456789abcdef";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_anonymous_embedded_broker_beyond_loopback_is_a_configuration_error() {
    let port = free_port();
    let (_dir, path) = site(&format!(
        "{header}[broker.embedded]\nlisten = \"0.0.0.0:{port}\"\n",
        header = site_header("l", ""),
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check"])
        .arg(&path)
        .output()
        .expect("check");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("users_file"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_takes_only_logins_nobody_takes_ingests_id_and_secrets_stay_inside() {
    let broker_port = free_port();
    let web_port = free_port();
    let token = parkguard::web::random_token();
    let secrets = [
        "path-secret-Feishu-5f0c8d2e",
        "query-secret-DingTalk-91ab77c3",
        "SECsigning-secret-0d9e11f2",
        DEVICE_PASSWORD,
    ];
    let (dir, path) = site(&format!(
        r#"{header}
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"

[broker.embedded]
listen = "0.0.0.0:{broker_port}"
users_file = "broker-users.txt"
acl = {{ publish = ["park/+/smoke/{{user}}/up"], subscribe = ["park/+/smoke/{{user}}/down"] }}

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {broker_port}
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"

[alerts]
[[alerts.channels]]
name = "feishu"
type = "feishu"
url = "http://127.0.0.1:1/open-apis/bot/v2/hook/{s0}"
[[alerts.channels]]
name = "dingtalk"
type = "dingtalk"
url = "http://127.0.0.1:1/robot/send?access_token={s1}"
secret = {{ file = "dingtalk.secret" }}
[[alerts.routes]]
name = "everyone"
channels = ["feishu", "dingtalk"]

[web]
listen = "127.0.0.1:{web_port}"
[[web.tokens]]
name = "viewer"
role = "viewer"
token_sha256 = "{token_hash}"
"#,
        header = site_header("l", ""),
        s0 = secrets[0],
        s1 = secrets[1],
        token_hash = parkguard::web::token_sha256_hex(&token),
    ));
    std::fs::write(dir.path().join("dingtalk.secret"), secrets[2]).expect("secret");
    std::fs::write(
        dir.path().join("broker-users.txt"),
        format!(
            "# devices\ns1:{}\ns2:{}\n",
            sha256_hex(DEVICE_PASSWORD),
            sha256_hex("another-device-password")
        ),
    )
    .expect("users");
    let daemon = Daemon::start(&path);
    daemon.wait_log("MQTT subscriptions confirmed");
    let pub_to = |topic: &str, extra: &[&str], payload: &[u8]| -> bool {
        let program = require_binary("mosquitto_pub", "mosquitto-clients");
        Command::new(program)
            .args(["-h", "127.0.0.1", "-p", &broker_port.to_string(), "-q", "1"])
            .args(["-t", topic, "-s"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(payload)?;
                child.wait()
            })
            .is_ok_and(|s| s.success())
    };
    let pub_as = |extra: &[&str], payload: &[u8]| pub_to("park/p/smoke/s1/up", extra, payload);
    let heartbeat = |n: u32| {
        format!(
            r#"{{"dev":"s1","ts":{},"event":"heartbeat","seq":{n}}}"#,
            now_s()
        )
    };
    assert!(
        !pub_as(&[], heartbeat(0).as_bytes()),
        "an anonymous client is refused"
    );
    assert!(
        !pub_as(&["-u", "s1", "-P", "wrong"], heartbeat(0).as_bytes()),
        "a wrong password is refused"
    );

    // Meanwhile someone with a valid device login claims ingest's client id every 0.2 s.
    let daemon_id = "parkguard-park".to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thief = {
        let stop = std::sync::Arc::clone(&stop);
        let program = require_binary("mosquitto_sub", "mosquitto-clients");
        std::thread::spawn(move || {
            let mut tries = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new(&program)
                    .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
                    .args(["-i", &daemon_id, "-u", "s1", "-P", DEVICE_PASSWORD])
                    .args(["-t", "park/p/smoke/s1/down", "-W", "1", "-C", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                tries += 1;
                // The subject: the attacker keeps trying, a few times a second.
                std::thread::sleep(Duration::from_millis(200));
            }
            tries
        })
    };
    let metrics = || metrics_of(web_port);
    // A device's login may publish only its own uplink and read only its own downlink.
    let received_at_start = metric(&metrics().await, "parkguard_mqtt_messages_received_total");
    let forged = r#"{"dev":"s2","event":"alarm"}"#;
    assert!(
        !pub_to(
            "park/p/smoke/s2/up",
            &["-u", "s1", "-P", DEVICE_PASSWORD],
            forged.as_bytes()
        ),
        "s1 cannot raise s2's alarm"
    );
    let eavesdrop = Command::new(require_binary("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
        .args([
            "-u",
            "s1",
            "-P",
            DEVICE_PASSWORD,
            "-t",
            "#",
            "-W",
            "3",
            "-C",
            "1",
        ])
        .output()
        .expect("mosquitto_sub");
    assert!(
        !eavesdrop.status.success() && eavesdrop.stdout.is_empty(),
        "s1 cannot read everything"
    );
    assert_eq!(
        metric(&metrics().await, "parkguard_mqtt_messages_received_total"),
        received_at_start
    );
    let connects_before = metric(&metrics().await, "parkguard_mqtt_connects_total");
    let received_before = metric(&metrics().await, "parkguard_mqtt_messages_received_total");
    for n in 1..=25 {
        assert!(pub_as(
            &["-u", "s1", "-P", DEVICE_PASSWORD],
            heartbeat(n).as_bytes()
        ));
        // The subject: a device's stream spread over 5 s while the attacker tries.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A smoke alarm, whose pushes fail (nobody listens on port 1) and leave errors behind.
    let alarm = format!(r#"{{"dev":"s1","ts":{},"event":"alarm"}}"#, now_s());
    assert!(pub_as(
        &["-u", "s1", "-P", DEVICE_PASSWORD],
        alarm.as_bytes()
    ));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tries = thief.join().expect("thief");
    assert!(tries >= 3, "the thief tried {tries} times");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = metrics().await;
        if metric(&now, "parkguard_mqtt_messages_received_total") >= received_before + 26.0 {
            assert_eq!(
                metric(&now, "parkguard_mqtt_connects_total"),
                connects_before,
                "ingest was never kicked off"
            );
            break;
        }
        assert!(Instant::now() < deadline, "messages lost: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Let both channels fail a few times, then look everywhere for the secrets.
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{web_port}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("api")
                .text()
                .await
                .expect("api text")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let deliveries = loop {
        let answer = get("/api/alarms/deliveries?key=R13/s1/event".into()).await;
        let rows: Value = serde_json::from_str(&answer).unwrap_or_default();
        let failed = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| !r["last_error"].is_null())
            .count();
        if failed >= 2 {
            break answer;
        }
        assert!(Instant::now() < deadline, "no failed push yet: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        deliveries.contains("127.0.0.1:1"),
        "errors name the host: {deliveries}"
    );
    let mut answers = vec![deliveries];
    for path in ["/api/alarms", "/api/journal", "/metrics", "/api/devices"] {
        answers.push(get(path.to_string()).await);
    }
    drop(daemon);
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let mut store = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if regular
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("parkguard.db")
        {
            store.extend(std::fs::read(entry.path()).expect("store"));
        }
    }
    let store = String::from_utf8_lossy(&store);
    for secret in secrets {
        assert!(!log.contains(secret), "log holds {secret}");
        assert!(!store.contains(secret), "store holds {secret}");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "API answer holds {secret}: {answer}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_rewritten_as_a_whole_is_found_out_by_its_anchors() {
    use parkguard::config::Config;
    use parkguard::pipeline::Gateway;
    let mosquitto = mosquitto();
    let (dir, path) = site(&format!(
        "{header}[[devices]]\nid = \"s1\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n",
        header = site_header("l", "journal_anchor_interval_s = 1"),
        port = mosquitto.port,
    ));
    // A platform that records the anchors published over MQTT.
    let recorder = Command::new(require_binary("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string()])
        .args(["-t", "parkguard/parkguard/journal", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("recorder");
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    for event in ["alarm", "alarm_clear"] {
        let payload = format!(r#"{{"dev":"s1","ts":{},"event":"{event}"}}"#, now_s());
        mosquitto_pub(mosquitto.port, "park/p/smoke/s1/up", &[payload.as_bytes()]);
    }
    let anchors = dir.path().join("parkguard.db.anchors");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&anchors).is_ok_and(|t| t.contains("\"seq\":2")) {
        assert!(Instant::now() < deadline, "no anchor of both entries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.shutdown().await;
    let published = recorder.wait_with_output().expect("recorder");
    let published = String::from_utf8_lossy(&published.stdout);
    assert!(
        published.contains("\"hash\""),
        "anchor on MQTT: {published}"
    );

    let store = dir.path().join("parkguard.db");
    let verify = |with_anchor: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parkguard"));
        command.args(["journal", "verify", "--store"]).arg(&store);
        if with_anchor {
            command.arg("--anchor").arg(&anchors);
        }
        let out = command.output().expect("verify");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert_eq!(verify(true).0, Some(0), "{}", verify(true).1);

    // Someone who can write the database replaces the whole chain with a valid one of their
    // own: two entries saying the detector was only tested.
    {
        let config = Config::load(&path).expect("site");
        let mut engine = parkguard::rules::engine::RuleEngine::new(
            &config,
            &parkguard::status::device(&config),
            1_000,
        );
        let tags = std::sync::Arc::new(parkguard::model::Tags {
            park: "p".into(),
            enterprise: "e".into(),
            location: "l".into(),
            device: "s1".into(),
            kind: String::new(),
            profile: "nb_smoke".into(),
            extra: Vec::new(),
        });
        let mut events = Vec::new();
        for (t, event) in [(2_000, "test"), (3_000, "alarm")] {
            let reading = parkguard::model::Reading {
                tags: std::sync::Arc::clone(&tags),
                measurement: std::sync::Arc::from("smoke"),
                quantity: std::sync::Arc::from("event"),
                value: parkguard::model::Value::Text(std::sync::Arc::from(event)),
                unit: None,
                timestamp_ns: t * 1_000_000,
                quality: parkguard::model::Quality::Good,
            };
            engine.on_readings(&[reading], t, &mut events);
        }
        let mut db = parkguard::store::Store::open(&store).expect("store");
        db.connection()
            .execute_batch("DELETE FROM journal; DELETE FROM journal_head;")
            .expect("wipe");
        db.record(&events[..2], None).expect("forged chain");
    }
    let (code, said) = verify(false);
    assert_eq!(code, Some(0), "the forged chain is valid in itself: {said}");
    let (code, said) = verify(true);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("rewritten"), "{said}");

    // One entry edited in place breaks the chain itself: exit 1 without any anchor.
    parkguard::store::Store::open(&store)
        .expect("store")
        .connection()
        .execute(
            "UPDATE journal SET message = 'only a test' WHERE seq = 2",
            [],
        )
        .expect("edit");
    let (code, said) = verify(false);
    assert_eq!(code, Some(1), "an edited entry: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_with_their_session_are_capped_and_metrics_need_the_token() {
    use parkguard::config::Config;
    use parkguard::pipeline::Gateway;
    let metrics_token = parkguard::web::random_token();
    let hash = parkguard::web::hash_password("the-right-password").expect("hash");
    let (_dir, path) = site(&format!(
        "{header}[web]\nlisten = \"127.0.0.1:0\"\nmetrics_token_sha256 = \"{}\"\n\
         [[web.users]]\nname = \"olga\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n",
        parkguard::web::token_sha256_hex(&metrics_token),
        header = site_header("l", ""),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("start");
    let url = web_url(&gateway);
    let client = reqwest::Client::new();
    // /metrics: refused without the token, served with it.
    let anonymous = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(anonymous.status().as_u16(), 401);
    let scraped = client
        .get(format!("{url}/metrics"))
        .bearer_auth(&metrics_token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(scraped.status().as_u16(), 200);

    let login = client
        .post(format!("{url}/api/login"))
        .json(&json!({"name": "olga", "password": "the-right-password"}))
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    let login: Value = login.json().await.expect("login JSON");
    let csrf = login["csrf"].as_str().expect("csrf").to_string();
    // Four streams per session; the fifth is refused.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let stream = client
            .get(format!("{url}/api/events"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("events");
        assert_eq!(stream.status().as_u16(), 200);
        streams.push(stream);
    }
    let fifth = client
        .get(format!("{url}/api/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(fifth.status().as_u16(), 429);
    // Logging out ends every stream of the session within a few seconds.
    let out = client
        .post(format!("{url}/api/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status().as_u16(), 204);
    let logged_out = Instant::now();
    for mut stream in streams {
        let ended = tokio::time::timeout(Duration::from_secs(6), async {
            while let Ok(Some(_)) = stream.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "a stream outlived its session");
    }
    assert!(logged_out.elapsed() < Duration::from_secs(6));
    gateway.shutdown().await;
}
