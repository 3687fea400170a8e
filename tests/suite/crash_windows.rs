//! Crash windows shown to be hit: the real daemon (`parkguard run`) is made to abort at a named
//! point by the test-only crash hook (`PARKGUARD_TEST_CRASH_AT`, src/crashpoint.rs), which
//! logs `crash point <point> reached (test hook)` first, then restarted without it.
//!
//! - Between the outbox commit and the MQTT acknowledgements: every message's reading reaches
//!   InfluxDB, and the messages stored twice (the broker's redeliveries) are exactly the
//!   committed-but-unacknowledged tail: the crash group all of them, nothing acknowledged.
//! - Between the journal's transaction (with its pushes) and the wake-up of delivery: the push
//!   is in the store, not yet sent, and is delivered after the restart, once.
//! - Between a receiver's 2xx and the record of the delivery: that push, and only that one,
//!   comes again, with the same delivery id.
//!
//! The outbox test keeps every committed batch in the store with a second sink that never
//! answers (a batch is deleted only once every sink has it), so the store itself says what was
//! committed before the crash and what came again after it.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value as Json;
use support::publisher::publish_acked;
use support::*;

const SIGABRT: i32 = 6;

// ---- the daemon ---------------------------------------------------------------------------

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

async fn wait_for_log(log: &Path, text: &str, occurrences: usize) {
    eventually(
        &format!("`{text}` logged {occurrences} time(s)"),
        Duration::from_secs(30),
        || async { log_text(log).matches(text).count() >= occurrences },
    )
    .await;
}

/// Waits for the armed daemon to abort, and checks from its log that it was the crash point
/// that ended it (and that it was reached once).
async fn wait_crashed(daemon: &mut Daemon, log: &Path, point: &str) {
    let daemon = &mut daemon.0;
    let armed = format!("{CRASH_ENV} is set");
    assert!(
        log_text(log).contains(&armed),
        "the daemon did not say it was armed (`{armed}`): is {} built from this tree? log:\n{}",
        env!("CARGO_BIN_EXE_parkguard"),
        log_text(log)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not reach crash point {point} within 30 s; log:\n{}",
            log_text(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the daemon must end by the hook's abort, not {status}; log:\n{}",
        log_text(log)
    );
    let line = format!("crash point {point} reached (test hook)");
    let text = log_text(log);
    assert_eq!(text.matches(&line).count(), 1, "log:\n{text}");
    let hit = text.lines().find(|l| l.contains(&line)).unwrap_or_default();
    assert!(hit.contains("ERROR"), "logged at ERROR: {hit}");
}

/// SIGINT, then a clean exit.
async fn stop(mut daemon: Daemon) {
    let _ = Command::new("kill")
        .args(["-INT", &daemon.0.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || daemon.0.wait())
        .await
        .expect("join")
        .expect("daemon exit");
    assert!(status.success(), "clean exit on SIGINT: {status}");
}

/// The store, read-only (the daemon may be writing it: WAL).
fn read_store(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the store")
}

// ---- 1: outbox commit -> MQTT acknowledgements ---------------------------------------------

const MESSAGES: usize = 400;
const METERS: usize = 4;
/// Messages published before waiting for them to be stored.
const WAVE: usize = 50;

/// Message `i`: meter `m{i % METERS}`, its id `i` as the reading `p_total`, time `base + i` ms.
fn meter_message(i: usize, base_ms: i64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"ts":{},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":{i},"leakage":2,"t":[35.5,36.0,34.25,41.0]}}"#,
        base_ms + i as i64
    );
    (format!("t/m{}", i % METERS), payload.into_bytes())
}

/// The message ids of each telemetry batch in the outbox, in commit order.
fn outbox_ids(store: &Path) -> Vec<Vec<usize>> {
    let conn = read_store(store);
    let mut stmt = conn
        .prepare("SELECT body FROM outbox WHERE class = 1 ORDER BY id")
        .expect("outbox query");
    let bodies: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .expect("outbox rows")
        .collect::<Result<_, _>>()
        .expect("outbox bodies");
    bodies
        .iter()
        .map(|gz| {
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_string(&mut text)
                .expect("gzip line protocol");
            text.lines()
                .filter(|l| l.starts_with("electrical,"))
                .map(|l| {
                    let at = l.find("p_total=").expect("p_total in every line") + 8;
                    let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().expect("id")
                })
                .collect::<Vec<usize>>()
        })
        .filter(|ids| !ids.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_outbox_commit_and_acks_stores_every_message_and_redelivers_the_unacked() {
    let influx = influxd();
    create_database(&influx, "pg").await;
    let broker = mosquitto_with(|port, _| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    });
    // Nothing listens here: batches stay in the outbox for this sink.
    let (held, _held_socket) = reserved_port();
    let mut devices = String::new();
    for d in 0..METERS {
        devices.push_str(&format!(
            "[[devices]]\nid = \"m{d}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n"
        ));
    }
    let (dir, site_path) = site(&format!(
        "{header}{devices}\
         [[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {mqtt}\nclient_id = \"pg-crash-outbox\"\n\
         [[mqtt.subscriptions]]\ntopic = \"t/{{device}}\"\nprofile = \"adw300_json\"\n\
         [[influx]]\nname = \"i\"\nurl = \"{influx}\"\napi = \"v1\"\ndatabase = \"pg\"\n\
         batch_age_ms = 100\nrequest_timeout_s = 2\n\
         [[influx]]\nname = \"held\"\nurl = \"http://127.0.0.1:{held}\"\napi = \"v1\"\ndatabase = \"pg\"\n\
         request_timeout_s = 2\n",
        header = site_header("l", "shutdown_grace_s = 5\nstore = \"state/parkguard.db\"\n"),
        mqtt = broker.port,
        influx = influx.url(),
    ));
    let store = dir.path().join("state/parkguard.db");
    let log = dir.path().join("daemon.log");
    let point = "outbox_committed_before_ack";

    let mut daemon = spawn_daemon(&site_path, &log, Some(&format!("{point}:3")));
    wait_for_log(&log, "MQTT subscriptions confirmed", 1).await;
    // In waves, each one stored before the next is sent, so that the third commit with
    // messages comes within the first three waves however the writer groups them; the waves
    // after the crash wait in the broker (persistent session).
    let base = parkguard::model::now_ns() / 1_000_000 - 60_000;
    let mut crashed = false;
    for wave in 0..MESSAGES / WAVE {
        let ids = wave * WAVE..(wave + 1) * WAVE;
        let messages = ids.clone().map(|i| meter_message(i, base)).collect();
        publish_acked(broker.port, messages, Arc::new(AtomicUsize::new(0))).await;
        if crashed {
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if daemon.0.try_wait().expect("try_wait").is_some() {
                crashed = true;
                break;
            }
            let stored: BTreeSet<usize> = outbox_ids(&store).into_iter().flatten().collect();
            if ids.clone().all(|i| stored.contains(&i)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wave {wave} neither stored nor crashed within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_crashed(&mut daemon, &log, point).await;

    // What the crash left: the committed batches, the last one the group whose commit
    // reached the crash point (its acknowledgements were never sent).
    let before = outbox_ids(&store);
    assert_eq!(before.len(), 3, "three commits with messages: {before:?}");
    let committed: Vec<usize> = before.iter().flatten().copied().collect();
    let crash_group: BTreeSet<usize> = before.last().expect("a batch").iter().copied().collect();
    assert_eq!(
        committed,
        (0..committed.len()).collect::<Vec<_>>(),
        "committed once each, in order"
    );

    let daemon = spawn_daemon(&site_path, &log, None);
    eventually(
        "every message in the outbox after the restart",
        Duration::from_secs(30),
        || async {
            let stored: BTreeSet<usize> = outbox_ids(&store).into_iter().flatten().collect();
            stored.len() == MESSAGES
        },
    )
    .await;
    let mut times: BTreeMap<usize, usize> = BTreeMap::new();
    for id in outbox_ids(&store).into_iter().flatten() {
        *times.entry(id).or_default() += 1;
    }
    let twice: BTreeSet<usize> = times
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        times.values().all(|n| *n <= 2),
        "no message stored more than twice: {times:?}"
    );
    // Only messages committed before the crash came again, the whole crash group among them
    // (committed, never acknowledged), and the ones that came again are the newest committed
    // ones: acknowledgements go out in commit order, so what the broker had not heard of when
    // the process died is the tail (the crash group, and at most acknowledgements still in
    // the MQTT client's queue).
    assert!(
        twice.is_superset(&crash_group),
        "every message of the crash group {crash_group:?} must be redelivered; redelivered: {twice:?}"
    );
    let tail: BTreeSet<usize> = committed[committed.len() - twice.len()..]
        .iter()
        .copied()
        .collect();
    assert_eq!(
        twice, tail,
        "the redelivered messages are the committed tail; committed {committed:?}"
    );
    eprintln!(
        "committed before the crash: {} messages in {} batches, crash group {}, redelivered {}",
        committed.len(),
        before.len(),
        crash_group.len(),
        twice.len()
    );

    // None lost: every id reaches InfluxDB (the duplicates overwrite their own points).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        let answer = influxql(&influx, "pg", "SELECT p_total FROM electrical").await;
        let ids: BTreeSet<usize> = rows(&answer)
            .iter()
            .filter_map(|r| r.get("p_total").and_then(Json::as_u64))
            .map(|id| id as usize)
            .collect();
        if ids.len() == MESSAGES || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        last,
        (0..MESSAGES).collect(),
        "every id in InfluxDB within 30 s"
    );
    stop(daemon).await;
}

// ---- the push receiver --------------------------------------------------------------------

/// Every push received: (X-Parkguard-Delivery, document).
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(String, Json)>>>);

impl Inbox {
    fn all(&self) -> Vec<(String, Json)> {
        self.0.lock().expect("inbox").clone()
    }

    /// How many times each delivery id came.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (id, _) in self.all() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    /// The journal entries named by the received notices, once per receipt.
    fn journal_seqs(&self) -> Vec<i64> {
        self.all()
            .iter()
            .flat_map(|(_, doc)| doc["notices"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n["journal_seq"].as_i64())
            .collect()
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> &'static str {
    let id = headers
        .get("x-parkguard-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let doc = serde_json::from_slice(&body).expect("JSON push");
    inbox.0.lock().expect("inbox").push((id, doc));
    "ok"
}

async fn receiver(inbox: Inbox) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind the receiver");
    let port = listener.local_addr().expect("address").port();
    let app = axum::Router::new().fallback(receive).with_state(inbox);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// Smoke detectors `smoke-1..3` over mosquitto, smoke alarms (R13) pushed to a webhook.
fn smoke_site(mqtt_port: u16, hook_port: u16, client_id: &str) -> (tempfile::TempDir, PathBuf) {
    let mut devices = String::new();
    for d in 1..=3 {
        devices.push_str(&format!(
            "[[devices]]\nid = \"smoke-{d}\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n"
        ));
    }
    site(&format!(
        "{header}{devices}\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"{client_id}\"\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
         [alerts]\n\
         [[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
         [[alerts.routes]]\nname = \"operators\"\nrules = [\"R13\"]\nchannels = [\"hook\"]\n",
        header = site_header("l", "shutdown_grace_s = 5\nstore = \"state/parkguard.db\"\n"),
    ))
}

async fn smoke_alarm(mqtt_port: u16, device: &str) {
    let payload = format!(r#"{{"dev":"{device}","ts":{},"event":"alarm"}}"#, now_s());
    let topic = format!("park/p/smoke/{device}/up");
    tokio::task::spawn_blocking(move || mosquitto_pub(mqtt_port, &topic, &[payload.as_bytes()]))
        .await
        .expect("mosquitto_pub");
}

/// One row of the push queue.
#[derive(Debug, Clone, PartialEq)]
struct Push {
    delivery: String,
    alarm: String,
    status: String,
    journal_seq: Option<i64>,
}

fn pushes(store: &Path) -> Vec<Push> {
    let conn = read_store(store);
    let mut stmt = conn
        .prepare(
            "SELECT id, alarm_key, status, json_extract(notice, '$.journal_seq')
             FROM alert_delivery ORDER BY id",
        )
        .expect("push query");
    stmt.query_map([], |r| {
        Ok(Push {
            delivery: format!("d{}", r.get::<_, i64>(0)?),
            alarm: r.get(1)?,
            status: r.get(2)?,
            journal_seq: r.get(3)?,
        })
    })
    .expect("push rows")
    .collect::<Result<_, _>>()
    .expect("pushes")
}

/// `parkguard journal show`: (seq, alarm key, action) of every entry.
async fn journal(site: &Path) -> Vec<(i64, String, String)> {
    let out = parkguard(vec![
        "journal".into(),
        "show".into(),
        "-c".into(),
        site.display().to_string(),
        "--limit".into(),
        "1000".into(),
    ])
    .await;
    assert!(out.status.success(), "journal show: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let seq = words.first()?.parse().ok()?;
            let key = words
                .iter()
                .find(|w| w.starts_with('R') && w.contains('/'))?;
            let at = words.iter().position(|w| w == key)?;
            Some((seq, key.to_string(), words.get(at + 1)?.to_string()))
        })
        .collect()
}

/// Each journal entry that planned a push has exactly one, delivered, and the receiver got
/// each delivery id once, except those in `repeated`, which came exactly twice.
async fn assert_each_entry_pushed_once(
    site: &Path,
    store: &Path,
    inbox: &Inbox,
    alarms: &[&str],
    repeated: &[&str],
) {
    let entries = journal(site).await;
    let queued = pushes(store);
    for alarm in alarms {
        let raised: Vec<i64> = entries
            .iter()
            .filter(|(_, key, action)| key == alarm && action == "raised")
            .map(|(seq, _, _)| *seq)
            .collect();
        assert_eq!(raised.len(), 1, "one raise of {alarm}: {entries:?}");
        let planned: Vec<&Push> = queued
            .iter()
            .filter(|p| p.journal_seq == Some(raised[0]))
            .collect();
        assert_eq!(
            planned.len(),
            1,
            "journal entry {} ({alarm} raised) has exactly one push: {queued:?}",
            raised[0]
        );
    }
    let seqs: BTreeSet<i64> = entries.iter().map(|(seq, _, _)| *seq).collect();
    let counts = inbox.counts();
    let mut received_seqs = inbox.journal_seqs();
    for push in &queued {
        assert_eq!(push.status, "delivered", "{push:?}");
        let seq = push
            .journal_seq
            .expect("a transition's push names its entry");
        assert!(seqs.contains(&seq), "{push:?} names a journal entry");
        let times = if repeated.contains(&push.delivery.as_str()) {
            2
        } else {
            1
        };
        assert_eq!(
            counts.get(&push.delivery).copied().unwrap_or(0),
            times,
            "{} received {times} time(s); received: {counts:?}",
            push.delivery
        );
        for _ in 0..times {
            let pos = received_seqs
                .iter()
                .position(|s| *s == seq)
                .unwrap_or_else(|| panic!("journal entry {seq} pushed {times} time(s)"));
            received_seqs.remove(pos);
        }
    }
    assert!(
        received_seqs.is_empty(),
        "pushes received for no queued delivery: {received_seqs:?}"
    );
    assert_eq!(counts.len(), queued.len(), "{counts:?} vs {queued:?}");
}

async fn wait_all_delivered(store: &Path, count: usize) {
    eventually(
        &format!("{count} pushes recorded as delivered"),
        Duration::from_secs(20),
        || async {
            let queued = pushes(store);
            queued.len() == count && queued.iter().all(|p| p.status == "delivered")
        },
    )
    .await;
}

// ---- 2: journal + pushes committed -> delivery woken ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_journal_commit_and_the_wake_up_delivers_the_push_after_restart() {
    let broker = mosquitto();
    let inbox = Inbox::default();
    let hook = receiver(inbox.clone()).await;
    let (dir, site_path) = smoke_site(broker.port, hook, "pg-crash-journal");
    let store = dir.path().join("state/parkguard.db");
    let log = dir.path().join("daemon.log");
    let point = "journal_committed_before_wake";

    let mut daemon = spawn_daemon(&site_path, &log, Some(&format!("{point}:1")));
    wait_for_log(&log, "MQTT subscriptions confirmed", 1).await;
    smoke_alarm(broker.port, "smoke-1").await;
    wait_crashed(&mut daemon, &log, point).await;

    // The transaction is in: the entry and its push; nothing was sent.
    let entries = journal(&site_path).await;
    let raised = entries
        .iter()
        .find(|(_, key, action)| key == "R13/smoke-1/event" && action == "raised")
        .unwrap_or_else(|| panic!("the raise is journaled: {entries:?}"))
        .0;
    let queued = pushes(&store);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].journal_seq, Some(raised));
    assert_eq!(queued[0].status, "pending");
    assert!(inbox.all().is_empty(), "nothing sent before the crash");

    let daemon = spawn_daemon(&site_path, &log, None);
    eventually(
        "the push of the journaled raise after the restart",
        Duration::from_secs(20),
        || async { inbox.journal_seqs().contains(&raised) },
    )
    .await;
    wait_for_log(&log, "MQTT connected.", 2).await;
    // A transition after the restart, through the whole path again.
    smoke_alarm(broker.port, "smoke-2").await;
    wait_all_delivered(&store, 2).await;
    assert_each_entry_pushed_once(
        &site_path,
        &store,
        &inbox,
        &["R13/smoke-1/event", "R13/smoke-2/event"],
        &[],
    )
    .await;
    stop(daemon).await;
}

/// A push is queued in its journal entry's transaction: when the push cannot be written (a
/// trigger of the test refuses every row of the push queue), the entry is not written either,
/// and once pushes can be written again each new entry comes with its push. Planning the push
/// in a transaction of its own after the journal's would leave an entry without its push here,
/// the window a crash would otherwise have to hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_cannot_be_queued_takes_its_journal_entry_with_it() {
    let broker = mosquitto();
    let inbox = Inbox::default();
    let hook = receiver(inbox.clone()).await;
    let (dir, site_path) = smoke_site(broker.port, hook, "pg-atomic-journal");
    let store = dir.path().join("state/parkguard.db");
    let log = dir.path().join("daemon.log");
    let daemon = spawn_daemon(&site_path, &log, None);
    wait_for_log(&log, "MQTT subscriptions confirmed", 1).await;

    let writer = Connection::open(&store).expect("open the store to write");
    writer
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    writer
        .execute_batch(
            "CREATE TRIGGER refuse_pushes BEFORE INSERT ON alert_delivery
             BEGIN SELECT RAISE(ABORT, 'push queue refused by the test'); END;",
        )
        .expect("install the trigger");
    smoke_alarm(broker.port, "smoke-1").await;
    // Every attempt of the store writer fails on the refused push, then it gives up.
    wait_for_log(&log, "Alarm transitions could not be stored.", 1).await;
    let entries = journal(&site_path).await;
    assert!(
        !entries.iter().any(|(_, key, _)| key == "R13/smoke-1/event"),
        "no journal entry without its push: {entries:?}"
    );
    assert!(pushes(&store).is_empty(), "{:?}", pushes(&store));
    assert!(inbox.all().is_empty(), "nothing sent");

    writer
        .execute_batch("DROP TRIGGER refuse_pushes;")
        .expect("drop the trigger");
    drop(writer);
    smoke_alarm(broker.port, "smoke-2").await;
    wait_all_delivered(&store, 1).await;
    assert_each_entry_pushed_once(&site_path, &store, &inbox, &["R13/smoke-2/event"], &[]).await;
    stop(daemon).await;
}

// ---- 3: receiver's 2xx -> delivery recorded ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_a_2xx_and_its_record_repeats_that_push_alone_with_its_delivery_id() {
    let broker = mosquitto();
    let inbox = Inbox::default();
    let hook = receiver(inbox.clone()).await;
    let (dir, site_path) = smoke_site(broker.port, hook, "pg-crash-push");
    let store = dir.path().join("state/parkguard.db");
    let log = dir.path().join("daemon.log");
    let point = "push_delivered_before_record";

    let mut daemon = spawn_daemon(&site_path, &log, Some(&format!("{point}:2")));
    wait_for_log(&log, "MQTT subscriptions confirmed", 1).await;
    smoke_alarm(broker.port, "smoke-1").await;
    wait_all_delivered(&store, 1).await;
    smoke_alarm(broker.port, "smoke-2").await;
    wait_crashed(&mut daemon, &log, point).await;

    // The receiver has the second push; the store does not know it was delivered.
    let received: Vec<String> = inbox.all().into_iter().map(|(id, _)| id).collect();
    let queued = pushes(&store);
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_eq!(queued[0].status, "delivered");
    assert_eq!(queued[1].status, "pending", "{queued:?}");
    assert_eq!(
        received,
        vec![queued[0].delivery.clone(), queued[1].delivery.clone()]
    );
    let unrecorded = queued[1].delivery.clone();

    let daemon = spawn_daemon(&site_path, &log, None);
    eventually(
        "the unrecorded push again after the restart",
        Duration::from_secs(20),
        || async { inbox.counts().get(&unrecorded) == Some(&2) },
    )
    .await;
    let docs: Vec<Json> = inbox
        .all()
        .into_iter()
        .filter(|(id, _)| *id == unrecorded)
        .map(|(_, doc)| doc)
        .collect();
    assert_eq!(docs[0]["id"], docs[1]["id"]);
    assert_eq!(
        docs[0]["notices"], docs[1]["notices"],
        "the same push again"
    );
    wait_for_log(&log, "MQTT connected.", 2).await;
    smoke_alarm(broker.port, "smoke-3").await;
    wait_all_delivered(&store, 3).await;
    assert_each_entry_pushed_once(
        &site_path,
        &store,
        &inbox,
        &[
            "R13/smoke-1/event",
            "R13/smoke-2/event",
            "R13/smoke-3/event",
        ],
        &[&unrecorded],
    )
    .await;
    stop(daemon).await;
}
