//! What the end-to-end benchmarks share: free ports, child processes killed on drop, a
//! mosquitto of their own, the meter message, resident memory of a process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn meter(leakage: f64) -> Vec<u8> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!(
        r#"{{"ts":{now_ms},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":{leakage},"t":[35.5,36.0,34.25,41.0]}}"#
    )
    .into_bytes()
}

pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// mosquitto on a free port with `extra` configuration lines; returns it and the port.
pub fn mosquitto(dir: &Path, extra: &str) -> (Killed, u16) {
    let mqtt_port = free_port();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n{extra}"
        ),
    )
    .expect("mosquitto conf");
    let mosquitto = Killed(
        Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)"),
    );
    wait_port(mqtt_port);
    (mosquitto, mqtt_port)
}

/// Meter messages published at a steady rate (QoS 0) to `park/p/meter/meter-NNN/up`, cycling
/// over `devices` meters, until `stop`.
pub struct MeterLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Duration)>,
}

impl MeterLoad {
    pub fn start(mqtt_port: u16, messages_per_s: f64, devices: usize) -> MeterLoad {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let mut options = MqttOptions::new("bench-load", "127.0.0.1", mqtt_port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (load, mut load_loop) = AsyncClient::new(options, 10_000);
        tokio::spawn(async move { while load_loop.poll().await.is_ok() {} });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            let started = Instant::now();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * messages_per_s) as u64;
                while sent < due {
                    let device = sent as usize % devices;
                    let topic = format!("park/p/meter/meter-{device:03}/up");
                    let _ = load
                        .publish(topic, QoS::AtMostOnce, false, meter(20.0))
                        .await;
                    sent += 1;
                }
            }
            (sent, started.elapsed())
        });
        MeterLoad { stop, task }
    }

    /// Stops; the messages sent and for how long.
    pub async fn stop(self) -> (u64, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("load task")
    }
}

/// Runs a benchmark that checks its targets, on two worker threads, under `cargo bench`
/// only (a no-op under `cargo test`); exits non-zero when `run` reports a missed target.
#[allow(dead_code)] // used by the benches with targets, not by every bench binary
pub fn run_checked<F: std::future::Future<Output = bool>>(run: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let ok = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
    if !ok {
        std::process::exit(1);
    }
}

/// A benchmark's figures against their targets. Each figure is printed as one line,
/// `BENCH: FIGURE: VALUE (target TARGET) PASS|FAIL`, or `(reported)` when it has no target;
/// `finish` prints the verdict line and says whether every target was met.
pub struct Targets {
    bench: &'static str,
    missed: Vec<String>,
    met: usize,
}

#[allow(dead_code)] // not every bench uses every kind of figure
impl Targets {
    pub fn new(bench: &'static str) -> Targets {
        Targets {
            bench,
            missed: Vec::new(),
            met: 0,
        }
    }

    /// A figure with a target; `pass` is whether `value` meets it.
    pub fn check(
        &mut self,
        figure: &str,
        value: impl std::fmt::Display,
        target: impl std::fmt::Display,
        pass: bool,
    ) -> bool {
        println!(
            "{}: {figure}: {value} (target {target}) {}",
            self.bench,
            if pass { "PASS" } else { "FAIL" }
        );
        if pass {
            self.met += 1;
        } else {
            self.missed.push(figure.to_string());
        }
        pass
    }

    /// `value` (in `unit`) must be at most `target`.
    pub fn at_most(&mut self, figure: &str, value: f64, target: f64, unit: &str) -> bool {
        self.check(
            figure,
            format!("{} {unit}", round(value)),
            format!("<= {} {unit}", round(target)),
            value <= target,
        )
    }

    /// `value` (in `unit`) must be at least `target`.
    pub fn at_least(&mut self, figure: &str, value: f64, target: f64, unit: &str) -> bool {
        self.check(
            figure,
            format!("{} {unit}", round(value)),
            format!(">= {} {unit}", round(target)),
            value >= target,
        )
    }

    /// A figure printed for the record, with no target.
    pub fn report(&mut self, figure: &str, value: impl std::fmt::Display) {
        println!("{}: {figure}: {value} (reported)", self.bench);
    }

    /// Prints the verdict; true when every target was met.
    pub fn finish(self) -> bool {
        if self.missed.is_empty() {
            println!("{}: all {} targets met: PASS", self.bench, self.met);
            true
        } else {
            println!(
                "{}: {} of {} targets missed ({}): FAIL",
                self.bench,
                self.missed.len(),
                self.missed.len() + self.met,
                self.missed.join(", ")
            );
            false
        }
    }

    /// `finish`, then exits non-zero when a target was missed (for benches that do not run
    /// under `run_checked`).
    pub fn finish_or_exit(self) {
        if !self.finish() {
            std::process::exit(1);
        }
    }
}

/// A figure with three significant digits at most, without trailing zeros after the point.
fn round(value: f64) -> String {
    let digits = if value == 0.0 || !value.is_finite() {
        0
    } else {
        (2 - value.abs().log10().floor() as i32).max(0) as usize
    };
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}
