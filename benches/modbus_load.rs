//! Load benchmark (issue target): 1000 simulated Modbus TCP devices with the P1 profile
//! (acrel_adw300_3p), polled every second by one gateway, sustained; reports CPU time, memory,
//! missed cycles, and requests per cycle against the planner's count.
//!
//! `cargo bench --bench modbus_load` (PARKGUARD_BENCH_DEVICES, default 1000;
//! PARKGUARD_BENCH_SECS, default 300). The simulators run in a child process so that the
//! figures are the gateway's alone. Under `cargo test` it does nothing.
//!
//! Prints one line per figure with its target and PASS/FAIL and exits non-zero on a FAIL:
//! requests within 2 % of the planner's count, no failed polls, no missed cycles; CPU at most
//! 15 % of one core and resident memory at most 96 MiB at 1,000 devices (measured: 3.6 % and
//! 40 MiB over 300 s with the LTO build, 7.4 % and 59 MiB over 20 s without LTO; the targets
//! leave room for that and a busier machine). With fewer devices the CPU and memory targets
//! still apply, with more they scale.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::decode::registers::Area;
use parkguard::pipeline::Gateway;
use parkguard::sim::modbus::SimulatedBus;

#[allow(dead_code)]
mod support;

/// Requests may differ from the planner's count by this share (cycles cut by the window).
const TARGET_REQUEST_TOLERANCE: f64 = 0.02;
/// Share of one core, and resident MiB, per 1,000 devices (at least the 1,000-device figure).
const TARGET_CPU_PERCENT_PER_1000: f64 = 15.0;
const TARGET_RSS_MIB_PER_1000: f64 = 96.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system CPU seconds, resident MiB) of this process, from /proc.
fn usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of /proc/pid/stat (utime, stime), counted after the name: 11 and 12.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

fn simulators(devices: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut ports = Vec::new();
        for _ in 0..devices {
            let bus = SimulatedBus::new([1]);
            let unit = bus.unit(1).expect("unit");
            unit.set_words(
                Area::Holding,
                20,
                &[2301, 2298, 2310, 0, 0, 0, 1250, 1100, 1325],
            );
            unit.set_words(Area::Holding, 110, &[120, 355, 362, 348, 371]);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            ports.push(listener.local_addr().expect("addr").port().to_string());
            tokio::spawn(bus.serve_tcp(listener));
        }
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", ports.join(","));
        let _ = out.flush();
        // Until the parent closes our stdin.
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    });
}

fn main() {
    if std::env::var("PARKGUARD_BENCH_ROLE").as_deref() == Ok("simulators") {
        simulators(env_number("PARKGUARD_BENCH_DEVICES", 1000) as usize);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let devices = env_number("PARKGUARD_BENCH_DEVICES", 1000) as usize;
    let seconds = env_number("PARKGUARD_BENCH_SECS", 300);
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("PARKGUARD_BENCH_ROLE", "simulators")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start simulators");
    let mut ports = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ports)
        .expect("ports");
    let ports: Vec<&str> = ports.trim().split(',').collect();
    assert_eq!(ports.len(), devices);

    let dir = tempfile::TempDir::new().expect("temp");
    let mut site = format!(
        "[gateway]\nprofiles_dir = \"{}/firmware-config/profiles\"\n[[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n[[locations]]\nid = \"l\"\nenterprise = \"e\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    for (i, port) in ports.iter().enumerate() {
        site.push_str(&format!(
            "[[devices]]\nid = \"m{i}\"\nlocation = \"l\"\nprofile = \"acrel_adw300_3p\"\n\
             [[modbus]]\nname = \"m{i}\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 1000\n\
             [[modbus.units]]\ndevice = \"m{i}\"\nunit_id = 1\n"
        ));
    }
    let path = dir.path().join("site.toml");
    std::fs::write(&path, site).expect("site");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut ok = false;
    runtime.block_on(async {
        let config = Config::load(&path).expect("config");
        let gateway = Gateway::start(config).await.expect("start");
        // Let every connection open and the first cycle run before measuring.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let names: Vec<String> = (0..devices).map(|i| format!("m{i}")).collect();
        let total = |f: &dyn Fn(&parkguard::metrics::ModbusMetrics) -> u64| -> u64 {
            names.iter().map(|n| f(&gateway.metrics.modbus(n))).sum()
        };
        let requests0 = total(&|m| m.requests.load(Ordering::Relaxed));
        let polls0 = total(&|m| m.polls_ok.load(Ordering::Relaxed));
        let missed0 = total(&|m| m.missed_cycles.load(Ordering::Relaxed));
        let micros0 = total(&|m| m.poll_micros_total.load(Ordering::Relaxed));
        let (cpu0, _) = usage();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (cpu1, rss) = usage();
        let requests = total(&|m| m.requests.load(Ordering::Relaxed)) - requests0;
        let polls = total(&|m| m.polls_ok.load(Ordering::Relaxed)) - polls0;
        let missed = total(&|m| m.missed_cycles.load(Ordering::Relaxed)) - missed0;
        let failed = total(&|m| m.polls_failed.load(Ordering::Relaxed));
        let micros = total(&|m| m.poll_micros_total.load(Ordering::Relaxed)) - micros0;
        // P1's plan: two fast reads each second, one slow read each minute.
        let expected_requests = devices as f64 * (2.0 * elapsed + elapsed / 60.0);
        let per_1000 = (devices as f64 / 1000.0).max(1.0);
        let cpu_percent = (cpu1 - cpu0) / elapsed * 100.0;
        let mut targets = support::Targets::new("modbus_load");
        targets.report(
            "run",
            format!("{devices} P1 devices over Modbus TCP, {elapsed:.0} s measured"),
        );
        let rate = requests as f64 / elapsed;
        let planned = expected_requests / elapsed;
        targets.check(
            "requests",
            format!("{requests} ({rate:.0}/s)"),
            format!(
                "the planner's {planned:.0}/s within {:.0} %",
                TARGET_REQUEST_TOLERANCE * 100.0
            ),
            (rate - planned).abs() <= planned * TARGET_REQUEST_TOLERANCE,
        );
        targets.check(
            "polls failed",
            format!("{failed} of {}", polls + failed),
            "0",
            failed == 0,
        );
        targets.check("missed cycles", missed, "0", missed == 0);
        targets.report(
            "mean poll time",
            format!("{:.2} ms", micros as f64 / 1000.0 / polls.max(1) as f64),
        );
        targets.at_most(
            "gateway CPU, share of one core",
            cpu_percent,
            TARGET_CPU_PERCENT_PER_1000 * per_1000,
            "%",
        );
        targets.at_most(
            "gateway resident memory",
            rss,
            TARGET_RSS_MIB_PER_1000 * per_1000,
            "MiB",
        );
        ok = targets.finish();
        gateway.shutdown().await;
    });
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    if !ok {
        std::process::exit(1);
    }
}
