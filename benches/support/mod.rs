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
