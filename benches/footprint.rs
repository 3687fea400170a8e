//! What a device costs the gateway (issue 25): the release daemon with 100, 1,000 and then
//! 10,000 declared ADW300 meters (default rules), fed through a real mosquitto at 1 message per device
//! per second (12 readings each), writing to a real VictoriaMetrics. Per size it prints, with
//! its target and PASS/FAIL: bytes written to disk per reading (from `/proc/<pid>/io`,
//! checkpoints included), resident memory idle and under load, CPU per 1,000 readings, the
//! store's size after the run and the start-up time. Exits non-zero on a FAIL.
//!
//! `PARKGUARD_FOOTPRINT_DEVICES` (default `100,1000,10000`) and `PARKGUARD_FOOTPRINT_SECONDS`
//! (default 300, the load's length per size) change the run. Runs with
//! `cargo bench --bench footprint` (needs Debian's mosquitto and victoria-metrics).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod support;
use support::*;

const TARGET_BYTES_PER_READING: f64 = 20.0;
/// Resident memory idle and under load, in MB, by declared devices.
fn rss_targets(devices: usize) -> (f64, f64) {
    if devices >= 10_000 {
        (100.0, 150.0)
    } else {
        (60.0, 100.0)
    }
}

fn main() {
    support::run_checked(run);
}

fn site(
    dir: &Path,
    devices: usize,
    mqtt_port: u16,
    vm_port: u16,
    web_port: u16,
) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    let mut text = format!(
        "[gateway]\nprofiles_dir = \"{}\"\nrule_files = [\"{}\"]\nstore = \"{}\"\n{}\n\
         [[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n\
         [[locations]]\nid = \"l\"\nenterprise = \"e\"\n\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n\
         [[influx]]\nname = \"vm\"\nurl = \"http://127.0.0.1:{vm_port}\"\napi = \"v1\"\ndatabase = \"pg\"\n\
         [web]\nlisten = \"127.0.0.1:{web_port}\"\n",
        root.join("profiles").display(),
        root.join("rules/default.toml").display(),
        dir.join("store.db").display(),
        // Extra [gateway] lines, for experiments.
        std::env::var("PARKGUARD_FOOTPRINT_GATEWAY").unwrap_or_default(),
    );
    for d in 0..devices {
        text.push_str(&format!(
            "[[devices]]\nid = \"meter-{d:03}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\nparams = {{ rated_current_a = 63 }}\n"
        ));
    }
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("site");
    path
}

/// Bytes the process caused to be written to storage so far.
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time the process used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the stat line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn store_bytes(dir: &Path) -> u64 {
    ["store.db", "store.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

async fn readings_decoded(web_port: u16) -> f64 {
    let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{web_port}/metrics")).await else {
        return 0.0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("parkguard_readings_decoded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn one_size(devices: usize, seconds: u64) -> bool {
    let dir = tempfile::TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let (_mosquitto, mqtt_port) = support::mosquitto(dir.path(), "max_inflight_messages 1000\n");
    let vm_port = free_port();
    let _vm = Killed(
        Command::new("/usr/bin/victoria-metrics")
            .args([
                format!("-httpListenAddr=127.0.0.1:{vm_port}"),
                format!("-storageDataPath={}/vm", dir.path().display()),
                "-loggerLevel=ERROR".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (apt-get install victoria-metrics)"),
    );
    wait_port(vm_port);
    let web_port = free_port();
    let path = site(dir.path(), devices, mqtt_port, vm_port, web_port);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let started = Instant::now();
    // `PARKGUARD_FOOTPRINT_WRAP="heaptrack -o /tmp/heap"` runs the daemon under a profiler.
    let wrap = std::env::var("PARKGUARD_FOOTPRINT_WRAP").unwrap_or_default();
    let mut command = match wrap.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_parkguard"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_parkguard")),
    };
    let daemon = Killed(
        command
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon"),
    );
    let pid = daemon.0.id();
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("MQTT subscriptions confirmed")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the daemon did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = resident_kib(pid) as f64 / 1024.0;

    let written_before = write_bytes(pid);
    let cpu_before = cpu_seconds(pid);
    let readings_before = readings_decoded(web_port).await;
    let load = MeterLoad::start(mqtt_port, devices as f64, devices);
    let mut rss_peak: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(resident_kib(pid) as f64 / 1024.0);
    }
    let (sent, _) = load.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readings = readings_decoded(web_port).await - readings_before;
    let written = write_bytes(pid).saturating_sub(written_before) as f64;
    let cpu = cpu_seconds(pid) - cpu_before;
    let store_mb = store_bytes(dir.path()) as f64 / 1e6;
    drop(daemon);

    let per_reading = written / readings.max(1.0);
    let (idle_target, load_target) = rss_targets(devices);
    println!(
        "footprint {devices}: {sent} messages sent in {seconds} s, {readings:.0} readings decoded, {:.1} MB written",
        written / 1e6
    );
    let mut ok = true;
    let mut report = |name: &str, value: String, pass: Option<bool>, target: &str| {
        let verdict = match pass {
            Some(true) => " PASS",
            Some(false) => " FAIL",
            None => "",
        };
        println!("footprint {devices}: {name}: {value} (target {target}){verdict}");
        ok &= pass.unwrap_or(true);
    };
    report(
        "written to disk per reading",
        format!(
            "{per_reading:.1} B ({:.2} GB/day at this rate)",
            written / seconds as f64 * 86_400.0 / 1e9
        ),
        // Below 1,000 meters the figure is set by the commits' fixed cost (a commit as soon as
        // a sender waits for its acknowledgement), not by the readings: reported.
        (devices >= 1000).then_some(per_reading <= TARGET_BYTES_PER_READING),
        &if devices >= 1000 {
            format!("<= {TARGET_BYTES_PER_READING} B")
        } else {
            "reported below 1,000 devices".to_string()
        },
    );
    report(
        "resident memory idle",
        format!("{rss_idle:.1} MB"),
        Some(rss_idle <= idle_target),
        &format!("<= {idle_target} MB"),
    );
    report(
        "resident memory under load (peak)",
        format!("{rss_peak:.1} MB"),
        Some(rss_peak <= load_target),
        &format!("<= {load_target} MB"),
    );
    report(
        "CPU per 1,000 readings",
        format!("{:.2} ms", cpu * 1e3 / (readings.max(1.0) / 1e3)),
        None,
        "reported",
    );
    report(
        "store size after the run",
        format!("{store_mb:.1} MB"),
        None,
        "reported",
    );
    report(
        "start-up (to subscriptions confirmed)",
        format!("{:.2} s", startup.as_secs_f64()),
        None,
        "reported",
    );
    ok
}

async fn run() -> bool {
    let sizes: Vec<usize> = std::env::var("PARKGUARD_FOOTPRINT_DEVICES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds = std::env::var("PARKGUARD_FOOTPRINT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut ok = true;
    for devices in sizes {
        ok &= one_size(devices, seconds).await;
    }
    ok
}
