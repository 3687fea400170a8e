//! Alarm pushes under load (issue 6): with 5,000 telemetry messages per second flowing
//! through a real mosquitto into the release daemon, 1,000 smoke detectors each publish a fire
//! alarm (one every 20 ms); each alarm must reach a webhook receiver (axum, here) once.
//! Reports the publish-to-receiver latency (p50, p99, max); the target is p99 <= 50 ms.
//! Prints one line per figure with its target and PASS/FAIL and exits non-zero on a FAIL:
//! every alarm pushed exactly once, p99 <= 50 ms, and the daemon's resident memory at most
//! 96 MiB (measured 47 MiB: set with a margin).
//! Runs with `cargo bench --bench alerts` (needs Debian's mosquitto); a no-op under
//! `cargo test`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};

mod support;
use support::*;

const MESSAGES_PER_S: u64 = 5_000;
const TARGET_P99_MS: f64 = 50.0;
const TARGET_PEAK_RSS_MIB: f64 = 96.0;
const LOAD_DEVICES: usize = 500;
const SMOKE_DEVICES: usize = 1_000;
const ALARM_SPACING: Duration = Duration::from_millis(20);

fn main() {
    support::run_checked(run);
}

fn site(dir: &Path, mqtt_port: u16, hook_port: u16) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    let mut text = format!(
        "[gateway]\nprofiles_dir = \"{}\"\nrule_files = [\"{}\"]\nstore = \"{}\"\n\
         [[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n\
         [[locations]]\nid = \"l\"\nenterprise = \"e\"\n",
        root.join("profiles").display(),
        root.join("rules/default.toml").display(),
        dir.join("store.db").display(),
    );
    for d in 0..LOAD_DEVICES {
        text.push_str(&format!(
            "[[devices]]\nid = \"meter-{d:03}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n"
        ));
    }
    for d in 0..SMOKE_DEVICES {
        text.push_str(&format!(
            "[[devices]]\nid = \"smoke-{d:04}\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n"
        ));
    }
    text.push_str(&format!(
        "[[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
         [alerts]\n\
         [[alerts.channels]]\nname = \"fire-hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/fire\"\n\
         [[alerts.routes]]\nname = \"fire-department\"\nrules = [\"R13\"]\nchannels = [\"fire-hook\"]\n\
         rate_limit = {{ max = 100000, per_s = 1 }}\n"
    ));
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("site");
    path
}

/// Per device: when the push arrived, how often, and the transition's time (ms since epoch)
/// against the wall clock at arrival: the part of the latency after the rules.
type Receipts = Arc<Mutex<HashMap<String, (Instant, usize, i64)>>>;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn receive(
    axum::extract::State(receipts): axum::extract::State<Receipts>,
    body: axum::body::Bytes,
) -> &'static str {
    let now = Instant::now();
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
        let mut all = receipts.lock().expect("receipts");
        for notice in doc["notices"].as_array().into_iter().flatten() {
            if notice["event"] == "raised" {
                let device = notice["alarm"]["device"].as_str().unwrap_or("").to_string();
                let after_rules = wall_ms() - notice["at_ms"].as_i64().unwrap_or_default();
                all.entry(device).or_insert((now, 0, after_rules)).1 += 1;
            }
        }
    }
    "ok"
}

async fn run() -> bool {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (mosquitto, mqtt_port) = support::mosquitto(dir.path(), "set_tcp_nodelay true\n");

    let receipts: Receipts = Arc::new(Mutex::new(HashMap::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let hook_port = listener.local_addr().expect("address").port();
    let app = axum::Router::new()
        .route("/fire", axum::routing::post(receive))
        .with_state(Arc::clone(&receipts));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let path = site(dir.path(), mqtt_port, hook_port);
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon"),
    );
    let pid = daemon.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Background load: 5,000 meter messages per second.
    let load = MeterLoad::start(mqtt_port, MESSAGES_PER_S as f64, LOAD_DEVICES);

    let mut options = MqttOptions::new("bench-smoke", "127.0.0.1", mqtt_port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (alarms, mut alarm_loop) = AsyncClient::new(options, 1000);
    tokio::spawn(async move { while alarm_loop.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut published: HashMap<String, Instant> = HashMap::new();
    let mut peak_kib = 0;
    for d in 0..SMOKE_DEVICES {
        let device = format!("smoke-{d:04}");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let payload = format!(r#"{{"dev":"{device}","ts":{ts},"event":"alarm"}}"#);
        published.insert(device.clone(), Instant::now());
        alarms
            .publish(
                format!("park/p/smoke/{device}/up"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish alarm");
        tokio::time::sleep(ALARM_SPACING).await;
        if d % 50 == 0 {
            peak_kib = peak_kib.max(resident_kib(pid));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (load_sent, load_for) = load.stop().await;

    let got = receipts.lock().expect("receipts").clone();
    let mut latencies = Vec::new();
    let mut missing = 0;
    let mut repeated = 0;
    let mut after_rules: Vec<i64> = Vec::new();
    for (device, sent_at) in &published {
        match got.get(device) {
            Some((at, count, from_rules)) => {
                latencies.push(at.saturating_duration_since(*sent_at));
                after_rules.push(*from_rules);
                repeated += count - 1;
            }
            None => missing += 1,
        }
    }
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3)
    };
    let mut targets = Targets::new("alerts");
    targets.report(
        "load through mosquitto",
        format!(
            "{:.0} messages/s for {:.1} s",
            load_sent as f64 / load_for.as_secs_f64(),
            load_for.as_secs_f64()
        ),
    );
    targets.check(
        "smoke alarms not pushed",
        format!("{missing} of {}", published.len()),
        "0",
        missing == 0,
    );
    targets.check(
        "smoke alarms pushed more than once",
        repeated,
        "0",
        repeated == 0,
    );
    targets.report(
        "publish-to-webhook latency",
        format!("p50 {:.1} ms, max {:.1} ms", pick(0.5), pick(1.0)),
    );
    targets.at_most(
        "publish-to-webhook latency p99",
        pick(0.99),
        TARGET_P99_MS,
        "ms",
    );
    after_rules.sort();
    if !after_rules.is_empty() {
        targets.report(
            "of which after the rules' transition",
            format!(
                "p50 {} ms, p99 {} ms",
                after_rules[after_rules.len() / 2],
                after_rules[(after_rules.len() - 1) * 99 / 100]
            ),
        );
    }
    targets.at_most(
        "daemon resident memory peak",
        peak_kib as f64 / 1024.0,
        TARGET_PEAK_RSS_MIB,
        "MiB",
    );
    drop(daemon);
    drop(mosquitto);
    targets.finish()
}
