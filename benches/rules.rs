//! Rule evaluation throughput and latency (issue 4's target: 200,000 readings/s on one core
//! with 50,000 active rule instances; p99 from a reading entering the rules to its alarm event
//! leaving them). Runs with `cargo bench --bench rules`; a no-op under `cargo test`.
//!
//! 2,100 three-phase meters (adw300_json, rated 100 A) with the shipped default rule set;
//! every message is the meter's 12 quantities; values wander so that alarms are raised and
//! cleared throughout.

use std::sync::Arc;
use std::time::Instant;

use parkguard::config::Config;
use parkguard::model::{Quality, Reading, Tags, Value};
use parkguard::rules::engine::RuleEngine;

const DEVICES: usize = 2100;
const MESSAGES: usize = 252_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
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
    let mut engine = RuleEngine::new(&config, &parkguard::status::device(&config), 0);
    println!("rule instances: {}", engine.instance_count());

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
    let message = |m: usize| -> Vec<Reading> {
        let d = m % DEVICES;
        // Leakage ramps 0..590 mA over a minute: crosses every R1 level up and down.
        let phase = ((m / DEVICES) % 60) * 10;
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
                // Stamped as received: each device reports once a second.
                timestamp_ns: (m / DEVICES) as i64 * 1_000_000_000,
                quality: Quality::Good,
            })
            .collect()
    };
    let batches: Vec<Vec<Reading>> = (0..MESSAGES).map(message).collect();
    let mut out = Vec::new();
    let mut latencies = Vec::with_capacity(MESSAGES);
    let mut transitions = 0usize;
    let started = Instant::now();
    for (m, batch) in batches.iter().enumerate() {
        // Simulated clock: each device reports once a second.
        let now = (m / DEVICES) as i64 * 1000;
        let t = Instant::now();
        engine.tick(now, &mut out);
        engine.on_readings(batch, now, &mut out);
        latencies.push(t.elapsed());
        transitions += out.len();
        out.clear();
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let readings = MESSAGES * quantities.len();
    println!(
        "{readings} readings in {:.3} s: {:.0} readings/s; {transitions} transitions",
        elapsed.as_secs_f64(),
        readings as f64 / elapsed.as_secs_f64()
    );
    println!(
        "per message (12 readings, evaluation to events out): p50 {:?}, p99 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
}
