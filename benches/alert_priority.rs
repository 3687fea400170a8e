//! Priority pushes (issue 16): 1,000 low-severity alarms (smoke detectors' low batteries) are
//! queued for two routes first. The operators' receiver fails every request (HTTP 503); the
//! fire department's receiver works but its route is rate-limited to 2 pushes a minute, so
//! the low pushes wait there too. Then 100 smoke detectors raise fire alarms, 100 ms apart.
//! Each fire alarm must reach the fire department's receiver ahead of the queue, never held by
//! the rate limit or the failing receiver: target p99 under 1 s from publish to receipt.
//! Prints one line per figure with its target and PASS/FAIL, exits non-zero on a FAIL.
//! Runs with `cargo bench --bench alert_priority` (needs Debian's mosquitto); a no-op under
//! `cargo test`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};

// The shared background load is not used here.
#[allow(dead_code)]
mod support;
use support::*;

const DETECTORS: usize = 1_000;
const FIRES: usize = 100;
const FIRE_SPACING: Duration = Duration::from_millis(100);
const TARGET_P99: Duration = Duration::from_secs(1);

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
    for d in 0..DETECTORS {
        text.push_str(&format!(
            "[[devices]]\nid = \"smoke-{d:04}\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n"
        ));
    }
    text.push_str(&format!(
        "[[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
         [alerts]\n\
         [[alerts.channels]]\nname = \"operators-hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/operators\"\n\
         [[alerts.channels]]\nname = \"fire-hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/fire\"\n\
         [[alerts.routes]]\nname = \"operators\"\nchannels = [\"operators-hook\"]\n\
         [[alerts.routes]]\nname = \"fire-department\"\nchannels = [\"fire-hook\"]\n\
         rate_limit = {{ max = 2, per_s = 60 }}\n"
    ));
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("site");
    path
}

#[derive(Default)]
struct Receipts {
    /// Device -> when its fire alarm's push arrived.
    fires: HashMap<String, Instant>,
    /// Low-severity notices the fire department had received when each fire arrived.
    lows: usize,
    lows_before_first_fire: Option<usize>,
    operator_requests: usize,
}

async fn run() -> bool {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_mosquitto, mqtt_port) = support::mosquitto(dir.path(), "set_tcp_nodelay true\n");
    let receipts = Arc::new(Mutex::new(Receipts::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let hook_port = listener.local_addr().expect("address").port();
    let fire = Arc::clone(&receipts);
    let operators = Arc::clone(&receipts);
    let app = axum::Router::new()
        .route(
            "/fire",
            axum::routing::post(move |body: axum::body::Bytes| {
                let receipts = Arc::clone(&fire);
                async move {
                    let now = Instant::now();
                    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut r = receipts.lock().expect("receipts");
                    for n in doc["notices"].as_array().into_iter().flatten() {
                        if n["alarm"]["severity"] == "critical" && n["event"] == "raised" {
                            if r.lows_before_first_fire.is_none() {
                                r.lows_before_first_fire = Some(r.lows);
                            }
                            let device = n["alarm"]["device"].as_str().unwrap_or("").to_string();
                            r.fires.entry(device).or_insert(now);
                        } else if n["alarm"]["severity"] == "low" {
                            r.lows += 1;
                        }
                    }
                    "ok"
                }
            }),
        )
        .route(
            "/operators",
            axum::routing::post(move || {
                let receipts = Arc::clone(&operators);
                async move {
                    receipts.lock().expect("receipts").operator_requests += 1;
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let path = site(dir.path(), mqtt_port, hook_port);
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let _daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut options = MqttOptions::new("bench-priority", "127.0.0.1", mqtt_port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    for d in 0..DETECTORS {
        let device = format!("smoke-{d:04}");
        let payload = format!(
            r#"{{"dev":"{device}","ts":{},"event":"low_battery","battery_state":"low"}}"#,
            now_s()
        );
        client
            .publish(
                format!("park/p/smoke/{device}/up"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("low battery");
    }
    // The low pushes are queued on both lanes (and failing on one) before the fires.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut published: HashMap<String, Instant> = HashMap::new();
    for d in 0..FIRES {
        let device = format!("smoke-{d:04}");
        let payload = format!(r#"{{"dev":"{device}","ts":{},"event":"alarm"}}"#, now_s());
        published.insert(device.clone(), Instant::now());
        client
            .publish(
                format!("park/p/smoke/{device}/up"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("fire");
        tokio::time::sleep(FIRE_SPACING).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let r = receipts.lock().expect("receipts");
    let mut latencies: Vec<Duration> = published
        .iter()
        .filter_map(|(device, sent)| {
            r.fires
                .get(device)
                .map(|at| at.saturating_duration_since(*sent))
        })
        .collect();
    latencies.sort();
    let missing = FIRES - latencies.len();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(Duration::MAX)
    };
    let p99 = pick(0.99);
    let mut targets = Targets::new("alert_priority");
    targets.report(
        "queue before the fires",
        format!(
            "{DETECTORS} low pushes per route; operators' receiver failed {} requests; the fire department had {} low notices when the first fire arrived, {} in all",
            r.operator_requests,
            r.lows_before_first_fire.unwrap_or(0),
            r.lows
        ),
    );
    targets.check(
        "fire alarms missing at the fire department",
        format!("{missing} of {FIRES}"),
        "0",
        missing == 0,
    );
    targets.report(
        "fire alarm publish to fire-department receiver",
        format!(
            "p50 {:.1} ms, max {:.1} ms",
            pick(0.5).as_secs_f64() * 1e3,
            pick(1.0).as_secs_f64() * 1e3
        ),
    );
    targets.check(
        "fire alarm publish to fire-department receiver p99",
        format!("{:.1} ms", p99.as_secs_f64() * 1e3),
        format!("< {} ms", TARGET_P99.as_millis()),
        p99 < TARGET_P99,
    );
    targets.finish()
}
