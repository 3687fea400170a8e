//! A flood of distinct unknown device ids (issue 15): 200,000 meter messages, each from a
//! device id never seen before, published at full speed through a real mosquitto into the
//! release daemon (unknown devices accepted, the default), with a smoke detector's fire alarm
//! published in the middle. The alarm must reach a webhook receiver within 1 s of its publish,
//! resident memory must stay under 100 MB and the store must grow by less than 10 MB.
//! Prints one line per figure with its target and PASS/FAIL, and exits non-zero on a FAIL.
//! Runs with `cargo bench --bench flood` (needs Debian's mosquitto); a no-op under `cargo test`.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};

// The shared background load is not used here.
#[allow(dead_code)]
mod support;
use support::*;

const FLOOD: usize = 200_000;
const TARGET_ALARM: Duration = Duration::from_secs(1);
const TARGET_RSS_MB: f64 = 100.0;
const TARGET_STORE_MB: f64 = 10.0;

fn main() {
    support::run_checked(run);
}

fn site(dir: &Path, mqtt_port: u16, hook_port: u16) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    let text = format!(
        "[gateway]\nprofiles_dir = \"{}\"\nrule_files = [\"{}\"]\nstore = \"{}\"\n\
         [[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n\
         [[locations]]\nid = \"l\"\nenterprise = \"e\"\n\
         [[devices]]\nid = \"smoke-1\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
         [alerts]\n\
         [[alerts.channels]]\nname = \"fire-hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/fire\"\n\
         [[alerts.routes]]\nname = \"fire-department\"\nrules = [\"R13\"]\nchannels = [\"fire-hook\"]\n",
        root.join("profiles").display(),
        root.join("rules/default.toml").display(),
        dir.join("store.db").display(),
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("site");
    path
}

fn store_bytes(dir: &Path) -> u64 {
    ["store.db", "store.db-wal", "store.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

async fn run() -> bool {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_mosquitto, mqtt_port) = support::mosquitto(
        dir.path(),
        "set_tcp_nodelay true\nmax_inflight_messages 1000\n",
    );
    let pushed: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let hook_port = listener.local_addr().expect("address").port();
    let received = Arc::clone(&pushed);
    let app = axum::Router::new().route(
        "/fire",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = Arc::clone(&received);
            async move {
                if String::from_utf8_lossy(&body).contains("\"raised\"") {
                    received
                        .lock()
                        .expect("receipt")
                        .get_or_insert_with(Instant::now);
                }
                "ok"
            }
        }),
    );
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
    let store_before = store_bytes(dir.path());
    let rss_before = resident_kib(pid);

    let mut options = MqttOptions::new("bench-flood", "127.0.0.1", mqtt_port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(resident_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let mut alarm_sent = None;
    for i in 0..FLOOD {
        if i == FLOOD / 2 {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let payload = format!(r#"{{"dev":"smoke-1","ts":{ts},"event":"alarm"}}"#);
            alarm_sent = Some(Instant::now());
            client
                .publish("park/p/smoke/smoke-1/up", QoS::AtLeastOnce, false, payload)
                .await
                .expect("alarm");
        }
        let payload = meter((i % 300) as f64);
        client
            .publish(
                format!("park/p/meter/ghost-{i:06}/up"),
                QoS::AtMostOnce,
                false,
                payload,
            )
            .await
            .expect("flood");
    }
    let flood_for = started.elapsed();
    // Let the daemon take what the broker still holds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    sampler.abort();
    let alarm_latency = match (alarm_sent, *pushed.lock().expect("receipt")) {
        (Some(sent), Some(at)) => Some(at.saturating_duration_since(sent)),
        _ => None,
    };
    let peak_mb = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    let store_mb = (store_bytes(dir.path()).saturating_sub(store_before)) as f64 / 1e6;
    println!(
        "flood: {FLOOD} messages of distinct unknown ids published in {:.1} s ({:.0}/s), RSS before {:.1} MB",
        flood_for.as_secs_f64(),
        FLOOD as f64 / flood_for.as_secs_f64(),
        rss_before as f64 / 1024.0
    );
    let mut targets = Targets::new("flood");
    let mut report = |name: &str, value: String, pass: bool, target: String| {
        targets.check(name, value, target, pass);
    };
    report(
        "smoke alarm publish to webhook during the flood",
        alarm_latency.map_or("never".into(), |l| {
            format!("{:.1} ms", l.as_secs_f64() * 1e3)
        }),
        alarm_latency.is_some_and(|l| l < TARGET_ALARM),
        format!("< {} ms", TARGET_ALARM.as_millis()),
    );
    report(
        "peak resident memory",
        format!("{peak_mb:.1} MB"),
        peak_mb < TARGET_RSS_MB,
        format!("< {TARGET_RSS_MB} MB"),
    );
    report(
        "store growth",
        format!("{store_mb:.2} MB"),
        store_mb < TARGET_STORE_MB,
        format!("< {TARGET_STORE_MB} MB"),
    );
    drop(daemon);
    targets.finish()
}
