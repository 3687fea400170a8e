//! Outbox throughput (issue 5): how fast the ingest path commits readings to the SQLite outbox,
//! and how fast a backlog of 1,000,000 readings drains into a real VictoriaMetrics (target:
//! 200,000 readings/s on this machine) while new readings keep arriving.
//! Runs with `cargo bench --bench outbox` (needs Debian's victoria-metrics); a no-op under
//! `cargo test`.
//!
//! Readings are three-phase meter messages of 12 quantities with the full site tags, as
//! MQTT ingest would hand them over.
//!
//! Prints one line per figure with its target and PASS/FAIL and exits non-zero on a FAIL. The
//! drain target is the issue's; the others were set from figures measured on the 2-core
//! machine while other builds ran on it, with a margin (single-message commit to its
//! acknowledgement p99 10.9 ms, commit 726,000 readings/s; the oldest waiting reading after the
//! backlog within `batch_age_ms`, 1 s).

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::ingest::Ingested;
use parkguard::metrics::Metrics;
use parkguard::model::{now_ns, Quality, Reading, ReadingBatch, Tags, Value};
use parkguard::sinks::drain::{self, Closing};
use parkguard::sinks::outbox_writer::{spawn_writer, Outbox};
use parkguard::status::StatusReporter;
use parkguard::store::Store;

const BACKLOG: u64 = 1_000_000;
const DEVICES: usize = 500;
const QUANTITIES: [&str; 12] = [
    "ua", "ub", "uc", "ia", "ib", "ic", "p_total", "leakage", "t1", "t2", "t3", "t4",
];
/// Readings per second arriving while the backlog drains.
const LIVE_RATE: u64 = 20_000;
const TARGET_DRAIN_PER_S: f64 = 200_000.0;
const TARGET_COMMIT_PER_S: f64 = 500_000.0;
const TARGET_SINGLE_COMMIT_P99_MS: f64 = 25.0;
/// `batch_age_ms` (1 s) plus the sink's round trip and the gauges' 1 s refresh.
const TARGET_OLDEST_MS: f64 = 3_000.0;

#[allow(dead_code)]
mod support;

fn main() {
    support::run_checked(run);
}

struct Messages {
    tags: Vec<Arc<Tags>>,
    names: Vec<Arc<str>>,
    measurement: Arc<str>,
    next: usize,
}

impl Messages {
    fn new() -> Self {
        Messages {
            tags: (0..DEVICES)
                .map(|d| {
                    Arc::new(Tags {
                        park: "xinghe".into(),
                        enterprise: format!("e{}", d / 25),
                        location: format!("box{}", d / 5),
                        device: format!("meter-{d:04}"),
                        kind: "meter".into(),
                        profile: "acrel_adw300_3p".into(),
                        extra: Vec::new(),
                    })
                })
                .collect(),
            names: QUANTITIES.iter().map(|q| Arc::from(*q)).collect(),
            measurement: Arc::from("electrical"),
            next: 0,
        }
    }

    fn next(&mut self) -> ReadingBatch {
        let i = self.next;
        self.next += 1;
        let tags = &self.tags[i % DEVICES];
        // Distinct timestamps, so that every reading is its own sample in the database.
        let ts = now_ns() - 3_600_000_000_000 + i as i64 * 1_000;
        self.names
            .iter()
            .enumerate()
            .map(|(q, name)| Reading {
                tags: Arc::clone(tags),
                measurement: Arc::clone(&self.measurement),
                quantity: Arc::clone(name),
                value: Value::Float(220.0 + (i % 97) as f64 * 0.1 + q as f64),
                unit: None,
                timestamp_ns: ts,
                quality: Quality::Good,
            })
            .collect()
    }
}

async fn run() -> bool {
    let mut targets = support::Targets::new("outbox");
    let dir = tempfile::TempDir::new().expect("temp dir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut vm = Command::new("victoria-metrics")
        .args([
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            &format!("-storageDataPath={}/vm", dir.path().display()),
            "-loggerLevel=ERROR",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (apt-get install victoria-metrics)");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let profiles =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/profiles");
    std::fs::write(dir.path().join("token"), "t").expect("token");
    let site = format!(
        "[gateway]\nprofiles_dir = \"{}\"\nrule_files = []\n\
         [[influx]]\nname = \"vm\"\nurl = \"{url}\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\n\
         token = {{ file = \"token\" }}\nbatch_points = 10000\n",
        profiles.display()
    );
    let path = dir.path().join("site.toml");
    std::fs::write(&path, site).expect("site");
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));

    let store_path = dir.path().join("outbox.db");
    let mut store = Store::open(&store_path).expect("store");
    store.outbox_set_sinks(&["vm".into()]).expect("sinks");
    drop(store);
    let metrics = Metrics::new();
    let (status, _gateway_input) = StatusReporter::new(&config);
    let outbox = Outbox::new(4 << 30, 0, vec!["vm".into()], status, Arc::clone(&metrics));
    let (tx, rx) = tokio::sync::mpsc::channel::<Ingested>(4096);
    let writer = spawn_writer(
        Store::open(&store_path).expect("store"),
        rx,
        Arc::clone(&outbox),
        Some(parkguard::sinks::outbox_writer::HistorySettings {
            keep: Duration::from_secs(24 * 3600),
            max_bytes: 256 << 20,
            write_every: Duration::from_secs(60),
            fine: parkguard::store::history::FineQuantities::all(),
        }),
        parkguard::health::Supervisor::new().guard("outbox writer"),
    )
    .expect("writer");

    // 1. Commit latency of single messages (what an MQTT message waits for its PUBACK when
    //    messages come one at a time): from handing it over to its acknowledgement. (Waiting
    //    for a commit without an acknowledgement to send would wait for the writer's 1 s
    //    grouping instead.)
    let mut messages = Messages::new();
    let mut latencies = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let (done, acked) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        tx.send(Ingested {
            readings: Some(messages.next()),
            ack: Some(parkguard::ingest::Ack::new(move || {
                let _ = done.send(());
            })),
            ..Ingested::default()
        })
        .await
        .expect("writer");
        acked.await.expect("acknowledged");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    targets.report(
        "single-message commit latency",
        format!(
            "p50 {:?}, max {:?}",
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        ),
    );
    targets.at_most(
        "single-message commit latency p99",
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3,
        TARGET_SINGLE_COMMIT_P99_MS,
        "ms",
    );
    let already = metrics.outbox_points_committed.load(Ordering::Relaxed);

    // 2. Commit throughput: a million readings as fast as they come, nothing draining.
    let started = Instant::now();
    let mut produced = 0;
    while produced < BACKLOG {
        let batch = messages.next();
        produced += batch.len() as u64;
        tx.send(Ingested::readings(batch)).await.expect("writer");
    }
    while metrics.outbox_points_committed.load(Ordering::Relaxed) < BACKLOG + already {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let commit_s = started.elapsed().as_secs_f64();
    targets.report(
        "commit run",
        format!(
            "{BACKLOG} readings in {commit_s:.2} s, {} transactions, outbox {:.1} MiB",
            metrics.outbox_commits.load(Ordering::Relaxed),
            outbox.bytes() as f64 / 1048576.0
        ),
    );
    targets.at_least(
        "commit throughput, nothing draining",
        BACKLOG as f64 / commit_s,
        TARGET_COMMIT_PER_S,
        "readings/s",
    );

    // 3. Drain the backlog while live readings keep arriving.
    let closing = Arc::new(Closing::default());
    let sink = metrics.sink("vm");
    let drain_task = drain::spawn(
        &config,
        0,
        Arc::clone(&outbox),
        Store::open(&store_path).expect("store"),
        Arc::clone(&closing),
    )
    .expect("drain");
    let started = Instant::now();
    let live = tokio::spawn({
        let tx = tx.clone();
        async move {
            let mut sent = 0u64;
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * LIVE_RATE as f64) as u64;
                while sent < due {
                    let batch = messages.next();
                    sent += batch.len() as u64;
                    if tx.send(Ingested::readings(batch)).await.is_err() {
                        return sent;
                    }
                }
            }
        }
    });
    while sink.points_written.load(Ordering::Relaxed) < BACKLOG + already {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = started.elapsed().as_secs_f64();
    let live_committed =
        metrics.outbox_points_committed.load(Ordering::Relaxed) - BACKLOG - already;
    targets.at_least(
        "drain of the backlog into victoria-metrics",
        (BACKLOG + already) as f64 / drain_s,
        TARGET_DRAIN_PER_S,
        "readings/s",
    );
    // Reported: commits group up to 1 s of readings, so over a drain of a second or two this
    // lags the 20,000/s sent by up to a second's worth; what matters is checked below, that the
    // live readings go out without waiting once the backlog is gone.
    targets.report(
        "live readings committed while it drains",
        format!(
            "{live_committed} ({:.0}/s)",
            live_committed as f64 / drain_s
        ),
    );
    // Caught up: the live readings go out as they come, waiting at most about `batch_age_ms`.
    // (The backlog gauges are refreshed once a second; let them catch up first.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watch = Instant::now();
    let (mut max_depth, mut max_age_ms) = (0u64, 0i64);
    while watch.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_depth = max_depth.max(sink.depth_points.load(Ordering::Relaxed));
        let oldest = sink.oldest_created_ms.load(Ordering::Relaxed) as i64;
        if oldest > 0 {
            max_age_ms = max_age_ms.max(now_ns() / 1_000_000 - oldest);
        }
    }
    targets.report(
        "after the backlog, over 5 s of live readings, most readings waiting",
        max_depth,
    );
    targets.at_most(
        "after the backlog, oldest waiting reading",
        max_age_ms as f64,
        TARGET_OLDEST_MS,
        "ms",
    );
    live.abort();
    drop(tx);
    closing.begin(Duration::from_secs(10));
    let _ = drain_task.await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;

    // VictoriaMetrics' own count of what it ingested.
    let _ = client
        .get(format!("{url}/internal/force_flush"))
        .send()
        .await;
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("vm metrics")
        .text()
        .await
        .unwrap_or_default();
    let rows: f64 = text
        .lines()
        .filter(|l| l.starts_with("vm_rows_inserted_total{type=\"influx\"}"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    let written = sink.points_written.load(Ordering::Relaxed);
    targets.check(
        "samples victoria-metrics ingested",
        format!("{rows:.0}"),
        format!(">= the {written} parkguard wrote"),
        rows >= written as f64,
    );
    let _ = vm.kill();
    let _ = vm.wait();
    targets.finish()
}
