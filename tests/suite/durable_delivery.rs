//! Durable delivery with real mosquitto and InfluxDB: nothing a broker acknowledged to a
//! publisher is lost when InfluxDB is down, when the daemon is killed, or when the broker
//! restarts; a full outbox evicts the oldest telemetry and keeps every alarm event; a batch
//! InfluxDB refuses becomes a dead letter alone and can be sent again; the retry classes.
//!
//! Messages carry their own timestamps (unique per message), so a message delivered twice
//! writes the same point twice and counting points counts messages.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use parkguard::rules::alarm::AlarmState;
use support::proxy::{Answer, InfluxProxy};
use support::publisher::{publish_acked, publish_acked_window};
use support::*;

const DEVICES: usize = 4;

/// The streams of these tests take both cores; run one at a time, their timeouts mean
/// something then.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Readings in each message of `message`.
const READINGS_PER_MESSAGE: u64 = 12;

/// mosquitto as a gateway's broker should be set up: an unlimited queue for the gateway's
/// persistent session while it is away.
fn broker() -> Server {
    mosquitto_with(|port, _| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    })
}

fn site_text(mqtt_port: u16, influx_url: &str, gateway_extra: &str) -> String {
    let mut devices = String::new();
    for d in 0..DEVICES {
        devices.push_str(&format!(
            "[[devices]]\nid = \"m{d}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n"
        ));
    }
    format!(
        "{header}{devices}\
         [[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"pg-durable\"\n\
         [[mqtt.subscriptions]]\ntopic = \"t/{{device}}\"\nprofile = \"adw300_json\"\n\
         [[influx]]\nname = \"i\"\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"pg\"\n\
         batch_age_ms = 100\nrequest_timeout_s = 2\n\
         [[rule_overrides]]\nrule = \"R1\"\non_delay_s = 0\noff_delay_s = 0\n",
        header = site_header(
            "l",
            &format!("shutdown_grace_s = 5\nstore = \"state/parkguard.db\"\n{gateway_extra}")
        ),
    )
}

/// Message `i` of a stream: device `m{i % DEVICES}`, timestamp `base_ms + i`.
fn message(i: usize, base_ms: i64, leakage: f64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"ts":{},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":{leakage},"t":[35.5,36.0,34.25,41.0]}}"#,
        base_ms + i as i64
    );
    (format!("t/m{}", i % DEVICES), payload.into_bytes())
}

fn now_ms() -> i64 {
    parkguard::model::now_ns() / 1_000_000
}

async fn count(influx: &Server, query: &str) -> u64 {
    let answer = influxql(influx, "pg", query).await;
    rows(&answer)
        .first()
        .and_then(|r| r.get("count"))
        .and_then(|c| c.as_u64())
        .unwrap_or(0)
}

async fn wait_for_count(influx: &Server, query: &str, expected: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = 0;
    while tokio::time::Instant::now() < deadline {
        last = count(influx, query).await;
        if last == expected {
            // And no more than that, a little later: this pause is the check (duplicates or
            // extra points would arrive in it), not a wait for something.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(count(influx, query).await, expected, "{query}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("`{query}` is {last}, not {expected}, after {timeout:?}");
}

async fn start(path: &Path) -> Gateway {
    let gateway = Gateway::start(Config::load(path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    gateway
}

async fn wait_committed(gateway: &Gateway, readings: u64) {
    let metrics = Arc::clone(&gateway.metrics);
    eventually("every reading committed", Duration::from_secs(60), || {
        let metrics = Arc::clone(&metrics);
        async move { metrics.outbox_points_committed.load(Ordering::Relaxed) >= readings }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_during_20000_messages_then_every_reading_arrives_alarms_first() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut influx = influxd();
    create_database(&influx, "pg").await;
    let proxy = InfluxProxy::start(&influx.url()).await;
    let broker = broker();
    let (_dir, path) = site(&site_text(broker.port, &proxy.url, ""));
    let gateway = start(&path).await;

    influx.stop();
    let base = now_ms() - 60_000;
    let total = 20_000;
    // The last hundred messages of m1 carry a leakage alarm, raised during the outage.
    let messages = (0..total)
        .map(|i| {
            let alarm = i >= total - 400 && i % DEVICES == 1;
            message(i, base, if alarm { 800.0 } else { 20.0 })
        })
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    publish_acked(broker.port, messages, Arc::clone(&acked)).await;
    assert_eq!(acked.load(Ordering::Relaxed), total);
    wait_committed(&gateway, total as u64 * READINGS_PER_MESSAGE).await;
    let rules = gateway.rules.clone();
    eventually("the leakage alarm raised", Duration::from_secs(10), || {
        let rules = rules.clone();
        async move {
            rules
                .alarms()
                .await
                .iter()
                .any(|a| a.key.starts_with("R1/m1"))
        }
    })
    .await;
    let sent_before = proxy.requests().len();
    assert!(
        proxy.requests().iter().all(|r| r.status >= 500),
        "nothing can have been written while InfluxDB was down"
    );

    influx.start();
    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        total as u64,
        Duration::from_secs(90),
    )
    .await;
    for d in 0..DEVICES {
        let per_device = format!("SELECT COUNT(leakage) FROM electrical WHERE device = 'm{d}'");
        assert_eq!(count(&influx, &per_device).await, (total / DEVICES) as u64);
    }
    assert!(
        count(
            &influx,
            "SELECT COUNT(action) FROM alarm WHERE \"rule\" = 'R1'"
        )
        .await
            >= 1
    );

    let written: Vec<_> = proxy.requests()[sent_before..]
        .iter()
        .filter(|r| r.status / 100 == 2)
        .cloned()
        .collect();
    let first_telemetry = written
        .iter()
        .position(|r| r.has("electrical"))
        .expect("telemetry written");
    let last_alarm = written
        .iter()
        .rposition(|r| r.has("alarm"))
        .expect("alarm points written");
    assert!(
        last_alarm < first_telemetry,
        "alarm points must be sent before the telemetry backlog (alarm request {last_alarm}, first telemetry request {first_telemetry})"
    );
    let report = gateway.shutdown().await;
    assert_eq!(report.points_left(), 0);
}

fn spawn_daemon(site: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["run", "-c"])
        .arg(site)
        .env("RUST_LOG", "info,parkguard::ingest::mqtt=debug,rumqttd=off")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start parkguard")
}

async fn wait_for_log(log: &Path, text: &str, occurrences: usize) {
    eventually(
        &format!("`{text}` logged {occurrences} time(s)"),
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches(text)
                .count()
                >= occurrences
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_with_sigkill_mid_stream_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let influx = influxd();
    create_database(&influx, "pg").await;
    let broker = broker();
    let (dir, path) = site(&site_text(broker.port, &influx.url(), ""));
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&path, &log);
    wait_for_log(&log, "MQTT subscriptions confirmed", 1).await;

    let total = 20_000;
    let base = now_ms() - 60_000;
    let messages = (0..total).map(|i| message(i, base, 20.0)).collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_acked(broker.port, messages, Arc::clone(&acked)));
    eventually(
        "a third of the stream published",
        Duration::from_secs(60),
        || async { acked.load(Ordering::Relaxed) >= total / 3 },
    )
    .await;
    daemon.kill().expect("SIGKILL");
    let _ = daemon.wait();
    let published_while_down = acked.load(Ordering::Relaxed);
    // The subject: the daemon stays down for a while as the stream goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon = spawn_daemon(&path, &log);
    publisher.await.expect("publisher");
    assert!(
        published_while_down < total,
        "the kill must land mid-stream"
    );

    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        total as u64,
        Duration::from_secs(90),
    )
    .await;
    let _ = Command::new("kill")
        .args(["-INT", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().expect("daemon exit");
    assert!(status.success(), "clean exit on SIGINT: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restarted_mid_stream_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let influx = influxd();
    create_database(&influx, "pg").await;
    let mut broker = broker();
    let (_dir, path) = site(&site_text(broker.port, &influx.url(), ""));
    let gateway = start(&path).await;

    let total = 20_000;
    let base = now_ms() - 60_000;
    let messages = (0..total).map(|i| message(i, base, 20.0)).collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_acked(broker.port, messages, Arc::clone(&acked)));
    eventually(
        "a third of the stream published",
        Duration::from_secs(60),
        || async { acked.load(Ordering::Relaxed) >= total / 3 },
    )
    .await;
    // SIGTERM: mosquitto saves its persistence file, with the gateway's session and queue.
    broker.terminate();
    // The subject: the broker stays down for a while (`start` then waits for its port to be
    // free and binds it again).
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.start();
    publisher.await.expect("publisher");
    assert_eq!(acked.load(Ordering::Relaxed), total);

    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        total as u64,
        Duration::from_secs(90),
    )
    .await;
    assert!(gateway.metrics.mqtt("m").connects.load(Ordering::Relaxed) >= 2);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_evicts_the_oldest_telemetry_and_keeps_every_alarm_event() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut influx = influxd();
    create_database(&influx, "pg").await;
    let broker = broker();
    // About 30 KB: a few hundred single-message commits.
    let (_dir, path) = site(&site_text(
        broker.port,
        &influx.url(),
        "outbox_max_mb = 0.03",
    ));
    let gateway = start(&path).await;
    influx.stop();

    let total = 3_000;
    let base = now_ms() - 60_000;
    // m1's leakage goes up and down every 40 messages: an alarm raised and cleared each time.
    // Every message is m1's, on one topic: MQTT keeps the order of one topic only, and the
    // check below reads "oldest" as the publishing order.
    let messages = (0..total)
        .map(|i| {
            let high = (i / 40) % 2 == 1;
            let (_, payload) = message(i, base, if high { 800.0 } else { 20.0 });
            ("t/m1".to_string(), payload)
        })
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    // One message in flight at a time: each arrives on its own and is its own outbox commit,
    // so that the 30 KB bound is a few hundred messages (a window of them would be committed,
    // and compressed, together and fit).
    publish_acked_window(broker.port, messages, Arc::clone(&acked), 1).await;
    let metrics = Arc::clone(&gateway.metrics);
    eventually("every message handled", Duration::from_secs(30), || {
        let metrics = Arc::clone(&metrics);
        async move {
            metrics.outbox_commits.load(Ordering::Relaxed) > 0
                && metrics.readings_evaluated.load(Ordering::Relaxed)
                    >= total as u64 * READINGS_PER_MESSAGE
        }
    })
    .await;
    // Evictions are counted in the commit that makes room: final once every message is
    // committed (or dropped as a batch too big even after eviction).
    eventually(
        "every message committed or dropped",
        Duration::from_secs(30),
        || {
            let metrics = Arc::clone(&metrics);
            async move {
                metrics.outbox_points_committed.load(Ordering::Relaxed)
                    + metrics.outbox_points_dropped.load(Ordering::Relaxed)
                    >= total as u64 * READINGS_PER_MESSAGE
            }
        },
    )
    .await;
    let evicted = metrics.outbox_points_evicted.load(Ordering::Relaxed);
    assert!(evicted > 0, "the outbox must have overflowed");
    assert_eq!(
        evicted % READINGS_PER_MESSAGE,
        0,
        "whole messages are evicted"
    );
    let alarms = gateway.rules.alarms().await;
    assert!(
        alarms.iter().any(|a| a.key.starts_with("G1/")),
        "the eviction alarm is raised: {:?}",
        alarms.iter().map(|a| &a.key).collect::<Vec<_>>()
    );

    influx.start();
    let kept = total as u64 - evicted / READINGS_PER_MESSAGE;
    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        kept,
        Duration::from_secs(60),
    )
    .await;
    // Oldest first: what is left is the newest messages, from the oldest one kept on, less
    // any batch that did not fit even after eviction (dropped, and counted as such).
    let answer = influxql(&influx, "pg", "SELECT ua FROM electrical").await;
    let times: BTreeSet<i64> = rows(&answer)
        .iter()
        .filter_map(|r| r["time"].as_i64())
        .map(|ns| ns / 1_000_000 - base)
        .collect();
    let dropped = gateway
        .metrics
        .outbox_points_dropped
        .load(Ordering::Relaxed)
        / READINGS_PER_MESSAGE;
    let oldest_kept = *times.first().expect("something kept");
    let holes: Vec<i64> = (oldest_kept..total as i64)
        .filter(|i| !times.contains(i))
        .collect();
    assert_eq!(
        times.len() as u64,
        kept,
        "kept {kept} messages, found {}",
        times.len()
    );
    // A dropped batch leaves a hole unless the broker delivered that message twice (the other
    // copy is kept): at most as many holes as messages dropped, none otherwise.
    assert!(
        holes.len() as u64 <= dropped,
        "every message after the oldest one kept is there, but for the {dropped} dropped: holes {:?}",
        &holes[..holes.len().min(10)]
    );

    // Every alarm transition is in InfluxDB, the eviction alarm's included.
    let transitions = Arc::clone(&metrics);
    eventually("every alarm point written", Duration::from_secs(30), || {
        let transitions = Arc::clone(&transitions);
        let influx = &influx;
        async move {
            count(influx, "SELECT COUNT(action) FROM alarm").await
                == transitions.alarm_transitions.load(Ordering::Relaxed)
        }
    })
    .await;
    assert!(
        count(
            &influx,
            "SELECT COUNT(action) FROM alarm WHERE \"rule\" = 'R1'"
        )
        .await
            >= 70
    );
    assert!(
        count(
            &influx,
            "SELECT COUNT(action) FROM alarm WHERE \"rule\" = 'G1'"
        )
        .await
            >= 1
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_influxdb_refuses_becomes_a_dead_letter_alone_and_can_be_sent_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let influx = influxd();
    create_database(&influx, "pg").await;
    let broker = broker();
    let (dir, path) = site(&site_text(broker.port, &influx.url(), ""));
    // A month ago (another shard), `ua` was written as an integer: a float there conflicts.
    let old_ms = now_ms() - 30 * 24 * 3600 * 1000;
    let write = reqwest::Client::new()
        .post(format!("{}/write?db=pg&precision=ms", influx.url()))
        .body(format!("electrical,device=m0 ua=1i {old_ms}"))
        .send()
        .await
        .expect("write");
    assert!(write.status().is_success());
    let gateway = start(&path).await;

    let base = now_ms() - 10_000;
    let mut batches = Vec::new();
    for i in 0..10 {
        batches.push(message(i * DEVICES, base, 20.0));
        if i == 4 {
            batches.push(message(0, old_ms + 1000, 20.0));
        }
    }
    let acked = Arc::new(AtomicUsize::new(0));
    for m in batches {
        // Apart, so that each message is its own outbox batch (the spacing is the point:
        // batches close after `batch_age_ms` = 100 ms).
        publish_acked(broker.port, vec![m], Arc::clone(&acked)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let recent = format!(
        "SELECT COUNT(ua) FROM electrical WHERE time > {}ms",
        base - 1
    );
    wait_for_count(&influx, &recent, 10, Duration::from_secs(30)).await;
    let store_path = dir.path().join("state/parkguard.db");
    let store = parkguard::store::Store::open(&store_path).expect("store");
    let dead = store.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].status, 400);
    assert!(
        dead[0].message.contains("field type conflict"),
        "{}",
        dead[0].message
    );
    assert_eq!(dead[0].points, READINGS_PER_MESSAGE);
    let sink = gateway.metrics.sink("i");
    assert_eq!(
        sink.points_dead_lettered.load(Ordering::Relaxed),
        READINGS_PER_MESSAGE
    );

    let status = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["outbox", "status", "--store"])
        .arg(&store_path)
        .output()
        .expect("outbox status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("dead letters: 1") && text.contains("HTTP 400"),
        "{text}"
    );

    // The operator fixes the cause (here: the old integer data goes) and sends it again.
    let answer = influxql(&influx, "pg", "DROP MEASUREMENT electrical").await;
    assert!(answer["results"][0].get("error").is_none(), "{answer}");
    let retry = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["outbox", "retry-dead", "--store"])
        .arg(&store_path)
        .output()
        .expect("retry-dead");
    assert!(retry.status.success());
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 dead letter(s) put back"));
    // The drain task finds it on its next look at the outbox (at most 5 s idle).
    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(store.dead_letters().expect("dead letters").is_empty());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_classes_throttling_too_large_and_refused_credentials() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let influx = influxd();
    create_database(&influx, "pg").await;
    let proxy = InfluxProxy::start(&influx.url()).await;
    let broker = broker();
    let (_dir, path) = site(&site_text(broker.port, &proxy.url, ""));
    let gateway = start(&path).await;
    let base = now_ms() - 60_000;
    let acked = Arc::new(AtomicUsize::new(0));

    // 413 for any request of more than 3 lines: halves until they fit, all of it arrives.
    proxy.answer_with(Some(Box::new(|body: &str| {
        (body.lines().count() > 3).then(|| Answer::new(413, "request too large"))
    })));
    let messages: Vec<_> = (0..40).map(|i| message(i, base, 20.0)).collect();
    publish_acked(broker.port, messages, Arc::clone(&acked)).await;
    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        40,
        Duration::from_secs(30),
    )
    .await;
    assert!(proxy.requests().iter().any(|r| r.status == 413));
    assert!(proxy
        .requests()
        .iter()
        .filter(|r| r.status / 100 == 2)
        .all(|r| r.measurements.len() <= 3));

    // 429 with `Retry-After: 2` (seconds), then 503 with `Retry-After` as an HTTP date 3 s
    // ahead: nothing is sent again before the time has passed, then all of it arrives.
    let throttles: [(u16, Box<dyn Fn() -> String + Send + Sync>); 2] = [
        (429, Box::new(|| "2".to_string())),
        (
            503,
            Box::new(|| httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3))),
        ),
    ];
    let mut expected = 40;
    for (status, retry_after) in throttles {
        let answered = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&answered);
        proxy.answer_with(Some(Box::new(move |_: &str| {
            (counter.fetch_add(1, Ordering::Relaxed) == 0).then(|| {
                Answer::new(status, "slow down").with_header("retry-after", &retry_after())
            })
        })));
        let before = proxy.requests().len();
        publish_acked(
            broker.port,
            vec![message(expected, base, 20.0)],
            Arc::clone(&acked),
        )
        .await;
        expected += 1;
        wait_for_count(
            &influx,
            "SELECT COUNT(ua) FROM electrical",
            expected as u64,
            Duration::from_secs(30),
        )
        .await;
        let requests = proxy.requests();
        let refused = requests[before..]
            .iter()
            .position(|r| r.status == status)
            .map(|k| before + k)
            .unwrap_or_else(|| panic!("no {status} answered: {requests:?}"));
        let next = requests
            .get(refused + 1)
            .unwrap_or_else(|| panic!("no request after the {status}"));
        let waited = next.at - requests[refused].at;
        // The HTTP date has whole seconds: 3 s ahead is at least 2 s ahead.
        assert!(
            waited >= Duration::from_secs(2),
            "{status}: sent again after {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "{status}: {waited:?}");
    }

    // 401: the data is kept, the gateway fault G2 is raised, and both recover once it works.
    proxy.answer_with(Some(Box::new(|_: &str| {
        Some(Answer::new(401, "unauthorized"))
    })));
    let messages: Vec<_> = (41..60).map(|i| message(i, base, 20.0)).collect();
    publish_acked(broker.port, messages, Arc::clone(&acked)).await;
    let rules = gateway.rules.clone();
    eventually("G2 raised", Duration::from_secs(20), || {
        let rules = rules.clone();
        async move {
            rules.alarms().await.iter().any(|a| {
                a.key == "G2/parkguard/auth_refused_i" && a.state == AlarmState::Unacknowledged
            })
        }
    })
    .await;
    proxy.answer_with(None);
    wait_for_count(
        &influx,
        "SELECT COUNT(ua) FROM electrical",
        60,
        Duration::from_secs(30),
    )
    .await;
    eventually("G2 cleared", Duration::from_secs(20), || {
        let rules = rules.clone();
        async move {
            rules.alarms().await.iter().any(|a| {
                a.key == "G2/parkguard/auth_refused_i"
                    && a.state == AlarmState::ReturnedUnacknowledged
            })
        }
    })
    .await;
    gateway.shutdown().await;
}
