//! Rule evaluation throughput and latency (issue 4's target: 200,000 readings/s on one core
//! with 50,000 active rule instances; from a reading entering the rules to its alarm event
//! leaving them). Runs with `cargo bench --bench rules`; a no-op under `cargo test`.
//!
//! 2,100 three-phase meters (adw300_json, rated 100 A) with the shipped default rule set;
//! every message is the meter's 12 quantities; values wander so that alarms are raised and
//! cleared throughout. Everything goes through the rules task as the daemon runs it
//! (`rules_task::spawn`, with its store writer thread committing the transitions to SQLite):
//! messages enter its input channel, transitions leave through `RulesHandle::subscribe` (what
//! the web board watches).
//!
//! 1. Throughput: 252,000 messages (3,024,000 readings, 120 s of the devices' time: one ramp
//!    up and back) sent as fast as the channel takes them, until the task has evaluated the
//!    last one.
//! 2. Latency: one more ramp up (126,000 messages) paced at the target rate, 200,000 readings/s;
//!    each transition's latency is from the send of its device's message to its arrival at
//!    the subscriber.
//!
//! Prints one line per figure with its target and PASS/FAIL; exits non-zero on a FAIL.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::metrics::Metrics;
use parkguard::model::{Quality, Reading, Tags, Value};
use parkguard::rules::engine::RuleEngine;
use parkguard::rules_task::{self, RulesInput, RulesLiveness};

#[allow(dead_code)]
mod support;

const DEVICES: usize = 2100;
const MESSAGES: usize = 252_000;
/// One ramp of the leakage (60 device seconds) over every device.
const PACED_MESSAGES: usize = DEVICES * 60;
const TARGET_READINGS_PER_S: f64 = 200_000.0;
const TARGET_INSTANCES: usize = 50_000;
/// Set from the measured figure (p99 0.76 ms at the target rate) with a margin.
const TARGET_P99_MS: f64 = 5.0;
/// The channel between ingest and the rules, as the daemon sizes it.
const INPUT_CAPACITY: usize = 4096;

fn main() {
    support::run_checked(run);
}

async fn run() -> bool {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    for sub in ["profiles", "rules"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        for entry in std::fs::read_dir(root.join(sub)).expect("read") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name()))
                .expect("copy");
        }
    }
    let mut site = String::from("[gateway]\nprofiles_dir = \"profiles\"\n[[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n[[locations]]\nid = \"l\"\nenterprise = \"e\"\n");
    for d in 0..DEVICES {
        site.push_str(&format!("[[devices]]\nid = \"m{d}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\nparams = {{ rated_current_a = 100 }}\n"));
    }
    let path = dir.path().join("site.toml");
    std::fs::write(&path, site).expect("site");
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let start_ms = rules_task::now_ms();
    let engine = RuleEngine::new(&config, &parkguard::status::device(&config), start_ms);
    let instances = engine.instance_count();
    let store = parkguard::store::Store::open(&dir.path().join("store.db")).expect("store");
    store.sync_every_commit().expect("sync");
    let metrics = Metrics::new();
    let (input, input_rx) = tokio::sync::mpsc::channel::<RulesInput>(INPUT_CAPACITY);
    let (_gateway_input, gateway_rx) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = parkguard::health::Supervisor::new();
    let (handle, task) = rules_task::spawn(
        engine,
        store,
        input_rx,
        gateway_rx,
        None,
        rules_task::Forwarding::default(),
        Arc::clone(&metrics),
        RulesLiveness {
            heartbeat: parkguard::health::Liveness::new()
                .register("rules loop", Duration::from_secs(30)),
            writer_guard: supervisor.guard("alarm store writer"),
        },
        None,
        None,
        None,
    )
    .expect("rules task");

    let quantities = [
        "ua", "ub", "uc", "ia", "ib", "ic", "p_total", "leakage", "t1", "t2", "t3", "t4",
    ];
    let tags: Vec<Arc<Tags>> = (0..DEVICES)
        .map(|d| {
            Arc::new(Tags {
                park: "p".into(),
                enterprise: "e".into(),
                location: "l".into(),
                device: format!("m{d}"),
                kind: "meter".into(),
                profile: "adw300_json".into(),
                extra: Vec::new(),
            })
        })
        .collect();
    let names: Vec<Arc<str>> = quantities.iter().map(|q| Arc::from(*q)).collect();
    let measurement: Arc<str> = Arc::from("electrical");
    let message = |m: usize| -> parkguard::model::ReadingBatch {
        let d = m % DEVICES;
        // Leakage ramps 0..590 mA over a minute, then stays at 0 for a minute (longer than
        // R1's 30 s off-delay): every R1 level is raised, then all clear.
        let second = (m / DEVICES) % 120;
        let phase = if second < 60 { second * 10 } else { 0 };
        let values = [
            230.0,
            231.0,
            229.0,
            60.0,
            70.0,
            65.0,
            8000.0,
            phase as f64,
            40.0,
            41.0,
            39.0,
            42.0,
        ];
        names
            .iter()
            .zip(values)
            .map(|(q, v)| Reading {
                tags: Arc::clone(&tags[d]),
                measurement: Arc::clone(&measurement),
                quantity: Arc::clone(q),
                value: Value::Float(v),
                unit: None,
                // Each device reports once a second of its own clock, from the start.
                timestamp_ns: (start_ms + (m / DEVICES) as i64 * 1000) * 1_000_000,
                quality: Quality::Good,
            })
            .collect()
    };

    // Transitions as they leave the rules: (device, when), for the latency phase.
    let mut transitions = handle.subscribe();
    let transitions_seen = Arc::new(Mutex::new(Vec::<(usize, Instant)>::new()));
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = tokio::spawn({
        let seen = Arc::clone(&transitions_seen);
        let lagged = Arc::clone(&lagged);
        async move {
            loop {
                match transitions.recv().await {
                    Ok(t) => {
                        let at = Instant::now();
                        if let Some(d) = t
                            .alarm
                            .device
                            .strip_prefix('m')
                            .and_then(|d| d.parse().ok())
                        {
                            seen.lock().expect("seen").push((d, at));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let evaluated = |metrics: &Metrics| metrics.readings_evaluated.load(Ordering::Relaxed);

    // 1. Throughput.
    let batches: Vec<_> = (0..MESSAGES).map(&message).collect();
    let readings = (MESSAGES * quantities.len()) as u64;
    let transitions_before = metrics.alarm_transitions.load(Ordering::Relaxed);
    let started = Instant::now();
    for batch in batches {
        input
            .send(RulesInput {
                readings: batch,
                device_ack: None,
            })
            .await
            .expect("rules task");
    }
    while evaluated(&metrics) < readings {
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed();
    let throughput_transitions =
        metrics.alarm_transitions.load(Ordering::Relaxed) - transitions_before;
    let rate = readings as f64 / elapsed.as_secs_f64();

    // 2. Latency at the target rate.
    transitions_seen.lock().expect("seen").clear();
    let lagged_before = lagged.load(Ordering::Relaxed);
    let paced: Vec<_> = (MESSAGES..MESSAGES + PACED_MESSAGES)
        .map(&message)
        .collect();
    let messages_per_s = TARGET_READINGS_PER_S / quantities.len() as f64;
    let mut sends: Vec<Vec<Instant>> = vec![Vec::new(); DEVICES];
    let paced_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut paced = paced.into_iter().enumerate().peekable();
    while paced.peek().is_some() {
        tick.tick().await;
        let due = (paced_started.elapsed().as_secs_f64() * messages_per_s) as usize;
        while let Some((i, batch)) = paced.next_if(|(i, _)| *i < due) {
            sends[(MESSAGES + i) % DEVICES].push(Instant::now());
            input
                .send(RulesInput {
                    readings: batch,
                    device_ack: None,
                })
                .await
                .expect("rules task");
        }
    }
    let total = readings + (PACED_MESSAGES * quantities.len()) as u64;
    while evaluated(&metrics) < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let paced_for = paced_started.elapsed();
    // Let the last transitions reach the subscriber.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = std::mem::take(&mut *transitions_seen.lock().expect("seen"));
    let mut latencies: Vec<Duration> = seen
        .iter()
        .filter_map(|(d, at)| {
            // The latest message of the device sent before the transition arrived.
            sends[*d]
                .iter()
                .rev()
                .find(|s| **s <= *at)
                .map(|s| at.duration_since(*s))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3)
    };

    drop(input);
    let _ = task.await;
    watcher.abort();

    let mut targets = support::Targets::new("rules");
    targets.at_least(
        "rule instances (2,100 meters, default rules)",
        instances as f64,
        TARGET_INSTANCES as f64,
        "instances",
    );
    targets.report(
        "throughput run",
        format!(
            "{readings} readings in {:.3} s, {throughput_transitions} transitions",
            elapsed.as_secs_f64()
        ),
    );
    targets.at_least(
        "readings evaluated through the rules task",
        rate,
        TARGET_READINGS_PER_S,
        "readings/s",
    );
    targets.report(
        "paced run",
        format!(
            "{} readings in {:.2} s ({:.0} readings/s), {} transitions, {} lagged",
            PACED_MESSAGES * quantities.len(),
            paced_for.as_secs_f64(),
            (PACED_MESSAGES * quantities.len()) as f64 / paced_for.as_secs_f64(),
            latencies.len(),
            lagged.load(Ordering::Relaxed) - lagged_before
        ),
    );
    targets.check(
        "transitions observed in the paced run",
        latencies.len(),
        "> 0",
        !latencies.is_empty(),
    );
    targets.report(
        "reading in to transition out at 200,000 readings/s, p50",
        format!("{:.3} ms", pick(0.5)),
    );
    targets.at_most(
        "reading in to transition out at 200,000 readings/s, p99",
        pick(0.99),
        TARGET_P99_MS,
        "ms",
    );
    targets.report(
        "reading in to transition out at 200,000 readings/s, max",
        format!("{:.3} ms", pick(1.0)),
    );
    targets.finish()
}
