//! Promises of the documentation checked through the running daemon (`Gateway::start`, as the
//! binary runs it) with a real mosquitto:
//!
//! - `missing_field`, `bad_timestamp` and `out_of_range` decode errors counted on `/metrics`
//!   while the rest of each message reaches InfluxDB;
//! - the store keeps the last 1000 rejected messages (`BAD_MESSAGES_KEPT`), the newest;
//! - MQTT 5: messages published while the daemon is away arrive after its restart (persistent
//!   session); while its commits are held (an external SQLite lock on its store) the broker,
//!   told `max_unacked = N` as receive maximum, has sent exactly N (mosquitto's own log of
//!   PUBLISH and PUBACK packets) and none is acknowledged; with MQTT 3.1.1 the broker sends 20
//!   and the daemon still takes only N;
//! - a full disk (a 2 MiB tmpfs holding the store): nothing is acknowledged that was not
//!   committed, gateway fault G8 is raised, and both recover once there is room;
//! - shelved, suppressed, out-of-service and flood-suppressed alarms push nothing and do not
//!   escalate, while the others do;
//! - roles on the API: viewer reads only, operator shelves but may not suppress or sign off,
//!   technician and admin may.

use crate::support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::decode::payload::DecodeErrorKind;
use parkguard::pipeline::Gateway;
use parkguard::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

/// mosquitto that logs every packet (`log_type all`), so that the test can count what the
/// broker sent and what the daemon acknowledged.
fn logging_mosquitto() -> Server {
    mosquitto_with(|port, _| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_type all\n")
    })
}

/// From mosquitto's log: (PUBLISH packets sent to `client`, PUBACKs received from it, the
/// most messages that were ever in flight to it at once).
fn broker_view(log: &str, client: &str) -> (usize, usize, usize) {
    let sent_prefix = format!("Sending PUBLISH to {client} (");
    let ack_prefix = format!("Received PUBACK from {client} (Mid: ");
    let (mut sent, mut acked, mut max) = (0, 0, 0);
    let mut in_flight = BTreeSet::new();
    for line in log.lines() {
        if let Some(rest) = line.split_once(&sent_prefix).map(|(_, r)| r) {
            // (d0, q1, r0, m12, 'topic', ...
            if let Some(mid) = rest
                .split(", ")
                .find_map(|p| p.strip_prefix('m').and_then(|m| m.parse::<u32>().ok()))
            {
                sent += 1;
                in_flight.insert(mid);
                max = max.max(in_flight.len());
            }
        } else if let Some(rest) = line.split_once(&ack_prefix).map(|(_, r)| r) {
            if let Some(mid) = rest.split(',').next().and_then(|m| m.parse::<u32>().ok()) {
                acked += 1;
                in_flight.remove(&mid);
            }
        }
    }
    (sent, acked, max)
}

/// Publishes each line of `lines` as one QoS 1 message (`mosquitto_pub -l`, one process).
fn publish_lines(port: u16, topic: &str, lines: &[String]) {
    let mut child = Command::new(require_binary("mosquitto_pub", "mosquitto-clients"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-l",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn meters(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!("[[devices]]\nid = \"m{i}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n")
        })
        .collect()
}

fn meter_subscription(name: &str, port: u16, client_id: &str, extra: &str) -> String {
    format!(
        "[[mqtt]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\n{extra}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n"
    )
}

fn now_ms() -> i64 {
    parkguard::model::now_ns() / 1_000_000
}

// ---- decode errors ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_errors_are_counted_by_reason_on_metrics_and_the_rest_of_each_message_arrives() {
    let broker = mosquitto();
    let influx = influxd();
    create_database(&influx, "pg").await;
    let (_dir, path) = site(&format!(
        "{header}{devices}{mqtt}\n[[influx]]\nname = \"influx1\"\nurl = \"{url}\"\napi = \"v1\"\n\
         database = \"pg\"\nbatch_age_ms = 100\n[web]\nlisten = \"127.0.0.1:0\"\n",
        header = site_header("l", ""),
        devices = meters(4),
        mqtt = meter_subscription("m", broker.port, "pg-promises-decode", ""),
        url = influx.url(),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let base = web_url(&gateway);
    let ts = now_ms();
    let full = |ua: f64, ts: &str, p_total: &str| {
        format!(
            r#"{{"ts":{ts},"ua":{ua},"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":{p_total},"leakage":20,"t":[35.5,36.0,34.25,41.0]}}"#
        )
    };
    // m1 whole; m2 without `ub`; m3 with a timestamp that is no number; m4 with a p_total
    // beyond i64 (the field is an integer).
    let m1 = full(221.0, &ts.to_string(), "8350");
    let m2 = full(222.0, &ts.to_string(), "8350").replace(r#""ub":229.8,"#, "");
    let m3 = full(223.0, r#""yesterday""#, "8350");
    let m4 = full(224.0, &ts.to_string(), "18446744073709551615");
    for (device, message) in [("m1", &m1), ("m2", &m2), ("m3", &m3), ("m4", &m4)] {
        mosquitto_pub(
            broker.port,
            &format!("park/p/meter/{device}/up"),
            &[message.as_bytes()],
        );
    }
    eventually(
        "all four devices in InfluxDB",
        Duration::from_secs(15),
        || async { rows(&influxql(&influx, "pg", "SELECT ua FROM electrical").await).len() == 4 },
    )
    .await;
    let text = metrics_text(&base).await;
    for (reason, count) in [
        ("missing_field", 1),
        ("bad_timestamp", 1),
        ("out_of_range", 1),
        ("bad_json", 0),
        ("wrong_type", 0),
    ] {
        let line = format!("parkguard_decode_errors_total{{reason=\"{reason}\"}} {count}");
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    let by_device = rows(
        &influxql(
            &influx,
            "pg",
            "SELECT ua, ub, p_total FROM electrical GROUP BY device",
        )
        .await,
    );
    assert_eq!(by_device.len(), 4, "{by_device:?}");
    let uas: BTreeSet<i64> = by_device
        .iter()
        .map(|r| r["ua"].as_f64().expect("ua") as i64)
        .collect();
    assert_eq!(uas, BTreeSet::from([221, 222, 223, 224]));
    for r in &by_device {
        let ua = r["ua"].as_f64().expect("ua") as i64;
        assert_eq!(r["ub"].is_null(), ua == 222, "only m2 lacks ub: {r:?}");
        assert_eq!(
            r["p_total"].is_null(),
            ua == 224,
            "only m4 lacks p_total: {r:?}"
        );
    }
    // The bad timestamp is replaced by the receive time, not dropped.
    let m3_time = by_device
        .iter()
        .find(|r| r["ua"].as_f64() == Some(223.0))
        .and_then(|r| r["time"].as_i64())
        .expect("m3's time");
    assert!((m3_time / 1_000_000 - ts).abs() < 30_000, "{m3_time}");
    gateway.shutdown().await;
}

// ---- the bound on kept bad messages --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_the_newest_thousand_rejected_messages() {
    let broker = mosquitto();
    let (dir, path) = site(&format!(
        "{header}{devices}{mqtt}",
        header = site_header("l", "store = \"pg.db\""),
        devices = meters(1),
        mqtt = meter_subscription("m", broker.port, "pg-promises-bad", ""),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    const SENT: usize = 1025;
    let lines: Vec<String> = (0..SENT).map(|i| format!("not json {i}")).collect();
    publish_lines(broker.port, "park/p/meter/m1/up", &lines);
    let store = Store::open(&dir.path().join("pg.db")).expect("store");
    eventually("the last one recorded", Duration::from_secs(20), || async {
        store
            .bad_messages(1)
            .ok()
            .and_then(|b| b.first().map(|m| m.payload == b"not json 1024"))
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        gateway.metrics.decode_errors(DecodeErrorKind::BadJson),
        SENT as u64
    );
    let kept = store.bad_messages(5000).expect("bad messages");
    assert_eq!(kept.len(), 1000, "the bound");
    let payloads: Vec<String> = kept
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (SENT - 1000..SENT)
        .rev()
        .map(|i| format!("not json {i}"))
        .collect();
    assert_eq!(payloads, expected, "the newest 1000, newest first");
    assert!(kept.iter().all(|m| m.reason == "bad_json"));
    gateway.shutdown().await;
}

// ---- MQTT 5: persistent session and max_unacked --------------------------------------------

/// Holds SQLite's write lock on the store at `path` from another process (Python's sqlite3,
/// `BEGIN EXCLUSIVE`) until dropped: the daemon's commits fail with SQLITE_BUSY meanwhile.
struct StoreLock(Child);

impl StoreLock {
    fn take(path: &Path) -> StoreLock {
        let python = std::env::var("PARKGUARD_TEST_PYTHON").expect(
            "PARKGUARD_TEST_PYTHON must name a Python 3 (./scripts/test sets it to target/test-venv)",
        );
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                      c.execute('BEGIN EXCLUSIVE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n\
                      c.execute('ROLLBACK')\n";
        let mut child = Command::new(python)
            .args(["-c", script])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "locked");
        StoreLock(child)
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn meter_lines(n: usize, leakage: f64) -> Vec<String> {
    (0..n).map(|_| meter(leakage)).collect()
}

async fn until_count(what: &str, counter: &std::sync::atomic::AtomicU64, at_least: u64) {
    eventually(what, Duration::from_secs(20), || async {
        counter.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_session_keeps_messages_for_a_restart_and_the_broker_sends_max_unacked_while_commits_wait(
) {
    const N: usize = 4;
    let broker = logging_mosquitto();
    let client = "pg-promises-v5";
    // A sink that never answers: telemetry is written to the outbox, so each commit writes.
    // A port of the test's own that nothing listens on: InfluxDB is away all along.
    let (dead_port, _held) = reserved_port();
    let (dir, path) = site(&format!(
        "{header}{devices}{mqtt}\n[[influx]]\nname = \"nowhere\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         api = \"v1\"\ndatabase = \"pg\"\n",
        header = site_header("l", "store = \"pg.db\"\nshutdown_grace_s = 0"),
        devices = meters(1),
        mqtt = meter_subscription(
            "m",
            broker.port,
            client,
            &format!("protocol = \"5\"\nmax_unacked = {N}")
        ),
        dead = dead_port,
    ));
    let topic = "park/p/meter/m1/up";
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    gateway.shutdown().await;

    // Published while the daemon is away: the broker keeps them in the daemon's session.
    publish_lines(broker.port, topic, &meter_lines(10, 20.0));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("restart");
    until_count(
        "the ten kept messages after the restart",
        &gateway.metrics.messages_received,
        10,
    )
    .await;
    eventually("ten acknowledged", Duration::from_secs(10), || async {
        broker_view(&broker.log(), client).1 == 10
    })
    .await;
    assert_eq!(
        gateway.metrics.messages_received.load(Ordering::Relaxed),
        10
    );

    // Commits held: the daemon reads N messages and acknowledges none; the broker, told N as
    // the receive maximum, has sent exactly N. (Once acknowledgements flow again, mosquitto
    // 2.0.11 sends more than the receive maximum: in this test up to 23 in flight for N = 4,
    // and the same with mosquitto_sub as the client. A broker matter; the daemon still reads
    // at most N at a time, as the MQTT 3.1.1 test below shows with a broker sending 20.)
    let mark = broker.log().len();
    let live = || broker.log()[mark..].to_string();
    let lock = StoreLock::take(&dir.path().join("pg.db"));
    let failures_before = gateway
        .metrics
        .outbox_commit_failures
        .load(Ordering::Relaxed);
    publish_lines(broker.port, topic, &meter_lines(30, 20.0));
    until_count(
        "a failed commit",
        &gateway.metrics.outbox_commit_failures,
        failures_before + 1,
    )
    .await;
    let (sent, acked, max) = broker_view(&live(), client);
    assert_eq!((sent, acked, max), (N, 0, N), "broker log:\n{}", live());
    assert_eq!(
        gateway.metrics.messages_received.load(Ordering::Relaxed),
        10 + N as u64
    );
    drop(lock);
    eventually(
        "all thirty acknowledged",
        Duration::from_secs(20),
        || async { broker_view(&live(), client).1 == 30 },
    )
    .await;
    assert_eq!(broker_view(&live(), client).0, 30);
    assert_eq!(
        gateway.metrics.messages_received.load(Ordering::Relaxed),
        40
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mqtt_3_1_1_the_daemon_reads_only_max_unacked_while_the_broker_sends_more() {
    const N: usize = 3;
    let broker = logging_mosquitto();
    let client = "pg-promises-v311";
    // A port of the test's own that nothing listens on: InfluxDB is away all along.
    let (dead_port, _held) = reserved_port();
    let (dir, path) = site(&format!(
        "{header}{devices}{mqtt}\n[[influx]]\nname = \"nowhere\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         api = \"v1\"\ndatabase = \"pg\"\n",
        header = site_header("l", "store = \"pg.db\"\nshutdown_grace_s = 0"),
        devices = meters(1),
        mqtt = meter_subscription(
            "m",
            broker.port,
            client,
            &format!("protocol = \"3.1.1\"\nmax_unacked = {N}")
        ),
        dead = dead_port,
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let lock = StoreLock::take(&dir.path().join("pg.db"));
    publish_lines(broker.port, "park/p/meter/m1/up", &meter_lines(30, 20.0));
    // MQTT 3.1.1 has no receive maximum: mosquitto sends up to its max_inflight_messages (20).
    eventually(
        "the broker's 20 in flight",
        Duration::from_secs(10),
        || async { broker_view(&broker.log(), client).0 == 20 },
    )
    .await;
    until_count(
        "a failed commit",
        &gateway.metrics.outbox_commit_failures,
        1,
    )
    .await;
    assert_eq!(
        gateway.metrics.messages_received.load(Ordering::Relaxed),
        N as u64,
        "the daemon took only max_unacked of them"
    );
    assert_eq!(broker_view(&broker.log(), client).1, 0, "none acknowledged");
    drop(lock);
    eventually(
        "all thirty acknowledged",
        Duration::from_secs(20),
        || async { broker_view(&broker.log(), client).1 == 30 },
    )
    .await;
    assert_eq!(
        gateway.metrics.messages_received.load(Ordering::Relaxed),
        30
    );
    gateway.shutdown().await;
}

// ---- a full disk ----------------------------------------------------------------------------

/// A tmpfs of `size` mounted at `dir` (the tests run as root); unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root with CAP_SYS_ADMIN: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn active_g8(gateway: &Gateway) -> bool {
    gateway.rules.alarms().await.iter().any(|a| {
        a.rule == "G8"
            && matches!(
                a.state,
                parkguard::model::alarm::AlarmState::Unacknowledged
                    | parkguard::model::alarm::AlarmState::Acknowledged
            )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_uncommitted_raises_g8_and_recovers() {
    let broker = logging_mosquitto();
    let client = "pg-promises-full";
    // A port of the test's own that nothing listens on: InfluxDB is away all along.
    let (dead_port, _held) = reserved_port();
    let (dir, path) = site(&format!(
        "{header}{devices}{mqtt}\n[[influx]]\nname = \"nowhere\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         api = \"v1\"\ndatabase = \"pg\"\n",
        header = site_header("l", "store = \"mnt/pg.db\"\nshutdown_grace_s = 0"),
        devices = meters(1),
        mqtt = meter_subscription("m", broker.port, client, ""),
        dead = dead_port,
    ));
    let disk = Tmpfs::mount(&dir.path().join("mnt"), "2m");
    let topic = "park/p/meter/m1/up";
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    publish_lines(broker.port, topic, &meter_lines(1, 20.0));
    eventually(
        "the first message acknowledged",
        Duration::from_secs(10),
        || async { broker_view(&broker.log(), client).1 == 1 },
    )
    .await;
    assert!(!active_g8(&gateway).await);

    let filler = disk.fill();
    let failures_before = gateway
        .metrics
        .outbox_commit_failures
        .load(Ordering::Relaxed);
    publish_lines(broker.port, topic, &meter_lines(5, 20.0));
    until_count(
        "failed commits",
        &gateway.metrics.outbox_commit_failures,
        failures_before + 2,
    )
    .await;
    eventually("gateway fault G8", Duration::from_secs(10), || {
        active_g8(&gateway)
    })
    .await;
    assert!(gateway.metrics.outbox_store_failing.load(Ordering::Relaxed));
    let (sent, acked, _) = broker_view(&broker.log(), client);
    assert_eq!((sent, acked), (6, 1), "nothing uncommitted acknowledged");

    std::fs::remove_file(&filler).expect("make room");
    eventually(
        "the five acknowledged once committed",
        Duration::from_secs(20),
        || async { broker_view(&broker.log(), client).1 == 6 },
    )
    .await;
    eventually("G8 over", Duration::from_secs(10), || async {
        !active_g8(&gateway).await
    })
    .await;
    assert!(!gateway.metrics.outbox_store_failing.load(Ordering::Relaxed));
    gateway.shutdown().await;
    let store = Store::open(&dir.path().join("mnt/pg.db")).expect("store");
    let g8: Vec<String> = store
        .journal(Some("G8"), 20)
        .expect("journal")
        .into_iter()
        .filter(|e| e.rule == "G8")
        .map(|e| e.action)
        .collect();
    assert!(
        !g8.is_empty(),
        "G8's transitions journaled once there was room"
    );
    drop(store);
    drop(disk);
}

// ---- what is not annunciated is not pushed ---------------------------------------------------

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn command(&self, token: &str, body: Value) -> StatusCode {
        self.http
            .post(format!("{}/api/commands", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("command")
            .status()
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> StatusCode {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("post")
            .status()
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The events queued for the alarm `key` (what `/api/alarms/deliveries` shows).
    async fn deliveries(&self, token: &str, key: &str) -> Vec<String> {
        let (status, rows) = self
            .get(
                token,
                &format!("/api/alarms/deliveries?key={}", urlencode(key)),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| r["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Tokens for each role: (viewer, operator, technician, admin), and their `[[web.tokens]]`.
fn role_tokens() -> ([String; 4], String) {
    let tokens = [(); 4].map(|_| parkguard::web::random_token());
    let text = ["viewer", "operator", "technician", "admin"]
        .iter()
        .zip(&tokens)
        .map(|(role, token)| {
            format!(
                "[[web.tokens]]\nname = \"{role}-desk\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
                parkguard::web::token_sha256_hex(token)
            )
        })
        .collect();
    (tokens, text)
}

/// Webhooks `/ops` (high and critical, escalating to `/boss` after 2 s unacknowledged) and
/// `/boss` (escalations only).
fn escalating_alerts(base: &str) -> String {
    format!(
        r#"[alerts]
[[alerts.channels]]
name = "ops-hook"
type = "webhook"
url = "{base}/ops"
[[alerts.channels]]
name = "boss-hook"
type = "webhook"
url = "{base}/boss"
[[alerts.routes]]
name = "ops"
severities = ["high", "critical"]
channels = ["ops-hook"]
ack_deadline_s = 2
escalate_to = "boss"
[[alerts.routes]]
name = "boss"
escalation_only = true
channels = ["boss-hook"]
"#
    )
}

fn leakage(port: u16, device: &str, ma: f64) {
    mosquitto_pub(
        port,
        &format!("park/p/meter/{device}/up"),
        &[meter(ma).as_bytes()],
    );
}

fn events(pushed: &[push_receiver::Pushed]) -> Vec<(String, String)> {
    pushed.iter().flat_map(|p| p.events()).collect()
}

fn pair(event: &str, key: &str) -> (String, String) {
    (event.to_string(), key.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelved_suppressed_and_out_of_service_alarms_push_nothing_and_do_not_escalate() {
    let broker = mosquitto();
    let (hooks, inbox, _stop) = push_receiver::start().await;
    let ([_, operator, technician, _], tokens) = role_tokens();
    let (_dir, path) = site(&format!(
        "{header}{devices}[[rule_overrides]]\nrule = \"R1\"\non_delay_s = 0\n{mqtt}\n\
         [web]\nlisten = \"127.0.0.1:0\"\n{tokens}\n{alerts}",
        header = site_header("l", ""),
        devices = meters(4),
        mqtt = meter_subscription("m", broker.port, "pg-promises-quiet", ""),
        alerts = escalating_alerts(&hooks),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let api = Api {
        base: web_url(&gateway),
        http: reqwest::Client::new(),
    };
    // Maintenance ahead: m2 suppressed, m3 out of service (device commands: technicians).
    for (device, command) in [("m2", "suppress"), ("m3", "remove_from_service")] {
        let status = api
            .command(
                &technician,
                json!({"target": "device", "id": device, "command": command, "minutes": 30, "reason": "works"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{command} {device}");
    }
    let key = |d: &str| format!("R1/{d}/leakage");
    leakage(broker.port, "m1", 400.0);
    eventually("m1 raised and pushed", Duration::from_secs(10), || async {
        events(&inbox.at("/ops")).contains(&pair("raised", &key("m1")))
    })
    .await;
    let status = api
        .command(
            &operator,
            json!({"id": key("m1"), "command": "shelve", "minutes": 60, "reason": "known fault"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "shelve");
    for d in ["m2", "m3", "m4"] {
        leakage(broker.port, d, 400.0);
    }
    // m4, neither shelved nor in maintenance, is pushed and escalates after its 2 s.
    eventually(
        "m4 escalated to the boss",
        Duration::from_secs(15),
        || async { events(&inbox.at("/boss")).contains(&pair("unacknowledged", &key("m4"))) },
    )
    .await;
    let alarms = gateway.rules.alarms().await;
    let view = |d: &str| {
        alarms
            .iter()
            .find(|a| a.key == key(d))
            .unwrap_or_else(|| panic!("{d}'s alarm is not in the engine: {alarms:?}"))
    };
    assert!(view("m1").shelved_until_ms.is_some());
    assert!(view("m2").suppressed_until_ms.is_some());
    assert!(view("m3").out_of_service);
    assert_eq!(
        events(&inbox.at("/ops")),
        vec![
            pair("raised", &key("m1")),
            pair("shelved", &key("m1")),
            pair("raised", &key("m4"))
        ]
    );
    assert_eq!(
        events(&inbox.at("/boss")),
        vec![pair("unacknowledged", &key("m4"))]
    );
    // Nothing is even queued for them (m1: its raise and its shelving only).
    assert_eq!(
        api.deliveries(&operator, &key("m2")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        api.deliveries(&operator, &key("m3")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        api.deliveries(&operator, &key("m1")).await,
        vec!["shelved", "raised"]
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_flood_a_suppressible_alarm_pushes_nothing_while_critical_ones_still_push() {
    let broker = mosquitto();
    let (hooks, inbox, _stop) = push_receiver::start().await;
    let ([_, operator, _, _], tokens) = role_tokens();
    let (_dir, path) = site(&format!(
        "{header}{devices}[[rule_overrides]]\nrule = \"R1\"\non_delay_s = 0\n{mqtt}\n\
         [web]\nlisten = \"127.0.0.1:0\"\n{tokens}\n{alerts}",
        header = site_header("l", ""),
        devices = meters(13),
        mqtt = meter_subscription("m", broker.port, "pg-promises-flood", ""),
        alerts = escalating_alerts(&hooks),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let api = Api {
        base: web_url(&gateway),
        http: reqwest::Client::new(),
    };
    // Eleven new alarms within minutes: a flood in park p.
    for i in 1..=11 {
        leakage(broker.port, &format!("m{i}"), 400.0);
    }
    eventually("eleven alarms pushed", Duration::from_secs(10), || async {
        inbox.at("/ops").len() >= 11
    })
    .await;
    // m12's temperature rises 20 °C in 40 s: R3 (rise rate, flood_suppressible, high).
    // The rate is measured over at least half of R3's 60 s window, by the device's clock.
    let t0 = now_ms() - 40_000;
    let hot = |ts: i64, t: f64| {
        format!(
            r#"{{"ts":{ts},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":20,"t":[{t},{t},{t},{t}]}}"#
        )
    };
    mosquitto_pub(
        broker.port,
        "park/p/meter/m12/up",
        &[hot(t0, 30.0).as_bytes(), hot(t0 + 40_000, 50.0).as_bytes()],
    );
    eventually("R3 raised on m12", Duration::from_secs(10), || async {
        gateway
            .rules
            .alarms()
            .await
            .iter()
            .any(|a| a.rule == "R3" && a.device == "m12")
    })
    .await;
    // A critical alarm during the flood is pushed and escalates.
    leakage(broker.port, "m13", 600.0);
    eventually(
        "m13 escalated to the boss",
        Duration::from_secs(15),
        || async { events(&inbox.at("/boss")).contains(&pair("unacknowledged", "R1/m13/leakage")) },
    )
    .await;
    let r3 = gateway
        .rules
        .alarms()
        .await
        .into_iter()
        .find(|a| a.rule == "R3" && a.device == "m12")
        .expect("R3");
    let everything = events(&inbox.all());
    assert!(
        everything.iter().all(|(_, key)| !key.starts_with("R3/")),
        "{everything:?}"
    );
    assert!(events(&inbox.at("/ops")).contains(&pair("raised", "R1/m13/leakage")));
    assert_eq!(
        api.deliveries(&operator, &r3.key).await,
        Vec::<String>::new()
    );
    gateway.shutdown().await;
}

// ---- roles -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_reads_operator_shelves_technician_and_admin_suppress_and_sign_off() {
    let broker = mosquitto();
    let ([viewer, operator, technician, admin], tokens) = role_tokens();
    let (_dir, path) = site(&format!(
        "{header}{devices}[[rule_overrides]]\nrule = \"R1\"\non_delay_s = 0\n{mqtt}\n\
         [web]\nlisten = \"127.0.0.1:0\"\n{tokens}",
        header = site_header("l", ""),
        devices = meters(2),
        mqtt = meter_subscription("m", broker.port, "pg-promises-roles", ""),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let api = Api {
        base: web_url(&gateway),
        http: reqwest::Client::new(),
    };
    leakage(broker.port, "m1", 400.0);
    let key = "R1/m1/leakage";
    eventually("m1's alarm", Duration::from_secs(10), || async {
        api.get(&viewer, "/api/alarms").await.1[0]["key"] == key
    })
    .await;
    let device_command = |device: &str, command: &str| json!({"target": "device", "id": device, "command": command, "minutes": 30, "reason": "works"});
    let signoff = |device: &str| json!({"device": device, "firmware": "1.2", "notes": "ok"});
    let read = json!({"device": "m1", "area": "holding", "address": 0, "count": 1});

    // Viewer: reads everything, commands nothing.
    for path in [
        "/api/alarms",
        "/api/journal",
        "/api/devices",
        "/api/session",
    ] {
        assert_eq!(api.get(&viewer, path).await.0, StatusCode::OK, "{path}");
    }
    let ack = json!({"id": key, "command": "acknowledge"});
    let shelve = json!({"id": key, "command": "shelve", "minutes": 10, "reason": "r"});
    assert_eq!(
        api.command(&viewer, ack.clone()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.command(&viewer, shelve.clone()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post(&viewer, "/api/devices/signoff", signoff("m1"))
            .await,
        StatusCode::FORBIDDEN
    );

    // Operator: shelves and unshelves; no maintenance, no commissioning.
    assert_eq!(api.command(&operator, shelve).await, StatusCode::OK);
    assert_eq!(
        api.command(&operator, json!({"id": key, "command": "unshelve"}))
            .await,
        StatusCode::OK
    );
    for command in ["suppress", "remove_from_service", "return_to_service"] {
        assert_eq!(
            api.command(&operator, device_command("m1", command)).await,
            StatusCode::FORBIDDEN,
            "operator {command}"
        );
    }
    assert_eq!(
        api.command(
            &operator,
            json!({"id": key, "command": "suppress", "minutes": 30})
        )
        .await,
        StatusCode::FORBIDDEN,
        "operator suppressing one alarm"
    );
    assert_eq!(
        api.post(&operator, "/api/devices/signoff", signoff("m1"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post(&operator, "/api/commissioning/read", read.clone())
            .await,
        StatusCode::FORBIDDEN
    );

    // Admin: what an operator may (acknowledge) and what a technician may.
    assert_eq!(api.command(&admin, ack).await, StatusCode::OK);
    for command in ["suppress", "remove_from_service", "return_to_service"] {
        assert_eq!(
            api.command(&admin, device_command("m2", command)).await,
            StatusCode::OK,
            "admin {command}"
        );
    }
    assert_eq!(
        api.post(&admin, "/api/devices/signoff", signoff("m2"))
            .await,
        StatusCode::OK
    );

    // Technician: maintenance windows, service, sign-off; the commissioning read is allowed
    // (the device is an MQTT meter, so the read itself is refused, but not for the role).
    for command in ["suppress", "remove_from_service", "return_to_service"] {
        assert_eq!(
            api.command(&technician, device_command("m1", command))
                .await,
            StatusCode::OK,
            "technician {command}"
        );
    }
    assert_eq!(
        api.post(&technician, "/api/devices/signoff", signoff("m1"))
            .await,
        StatusCode::OK
    );
    let commissioning = api.post(&technician, "/api/commissioning/read", read).await;
    assert!(
        commissioning != StatusCode::FORBIDDEN && commissioning != StatusCode::UNAUTHORIZED,
        "{commissioning}"
    );

    let (_, devices) = api.get(&viewer, "/api/devices").await;
    let signed: BTreeSet<String> = devices
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| !d["signoff"].is_null())
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        signed,
        BTreeSet::from(["m1".to_string(), "m2".to_string()]),
        "{devices}"
    );
    // Each command's name in the journal (written by the store's thread after the command
    // has answered, so waited for).
    let journal_actors = || async {
        let (_, journal) = api.get(&viewer, "/api/journal?search=m1").await;
        journal
            .as_array()
            .expect("journal")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_string(),
                    e["operator"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect::<BTreeSet<(String, String)>>()
    };
    let expected: BTreeSet<(String, String)> = [
        ("acknowledged", "admin-desk"),
        ("shelved", "operator-desk"),
        ("suppressed", "technician-desk"),
    ]
    .into_iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    eventually(
        "the commands journaled by name",
        Duration::from_secs(10),
        || async { journal_actors().await.is_superset(&expected) },
    )
    .await;
    gateway.shutdown().await;
}
