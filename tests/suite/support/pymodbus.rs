//! A Modbus TCP server built on pymodbus (PyPI; ./scripts/test installs it into a virtual
//! environment and names its Python in PARKGUARD_TEST_PYTHON), serving typed values that
//! pymodbus itself encodes: an implementation parkguard did not write. Also pymodbus with its
//! RTU framer over TCP, and on a pseudo-terminal behind a relay that answers only at the
//! unit's line settings.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{spawn_listening, READY_TIMEOUT};

pub struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn python_with_pymodbus() -> String {
    std::env::var("PARKGUARD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("PARKGUARD_TEST_PYTHON is not set: run ./scripts/test, which makes a virtual environment with pymodbus")
    })
}

pub fn start_pymodbus(spec: &serde_json::Value, dir: &std::path::Path) -> (PyServer, u16) {
    let spec_path = dir.join("pymodbus-spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pymodbus_server.py");
    let (child, port) = spawn_listening("pymodbus server", |port| {
        let log = std::fs::File::create(dir.join("pymodbus.log")).expect("log");
        Command::new(python_with_pymodbus())
            .arg(&script)
            .arg(&spec_path)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the pymodbus server")
    });
    (PyServer(child), port)
}

fn rtu_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pymodbus_rtu.py")
}

/// Starts `pymodbus_rtu.py` serving `spec` in `mode` (its arguments); the child, its first
/// line of output (what it reports once it serves) and the lines after it, as they come.
fn start_rtu_script(
    spec: &serde_json::Value,
    dir: &std::path::Path,
    mode: &[&str],
) -> (PyServer, String, Arc<Mutex<Vec<String>>>) {
    use std::io::BufRead;
    let spec_path = dir.join("pymodbus-rtu-spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let log = std::fs::File::create(dir.join("pymodbus-rtu.log")).expect("log");
    let mut child = Command::new(python_with_pymodbus())
        .arg(rtu_script())
        .arg(&spec_path)
        .args(mode)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start pymodbus_rtu.py");
    let stdout = child.stdout.take().expect("stdout");
    let server = PyServer(child);
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let rest = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&rest);
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(first)) = reader.next() {
            let _ = first_tx.send(first);
        }
        for line in reader.map_while(Result::ok) {
            lines.lock().expect("lines").push(line);
        }
    });
    let first = first_rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "pymodbus_rtu.py {mode:?} did not start within {READY_TIMEOUT:?}: see {}",
            dir.join("pymodbus-rtu.log").display()
        )
    });
    (server, first, rest)
}

/// pymodbus's TCP server with its RTU framer (a serial server in transparent mode), on a port
/// it bound itself; its port.
pub fn start_pymodbus_rtu_over_tcp(
    spec: &serde_json::Value,
    dir: &std::path::Path,
) -> (PyServer, u16) {
    let (server, first, _) = start_rtu_script(spec, dir, &["rtu-over-tcp"]);
    let port = first
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pymodbus_rtu.py said {first:?}"));
    (server, port)
}

/// One request frame parkguard put on the line, as the relay saw it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When it arrived (seconds, the relay's monotonic clock).
    pub t: f64,
    pub unit: u8,
    /// The settings parkguard's end of the line had, e.g. `19200 8E1`.
    pub line: String,
    /// Whether the unit heard it (the settings matched the unit's).
    pub heard: bool,
}

/// pymodbus's serial server (RTU framer) behind a relay that answers only at the unit's line
/// settings (see tests/interop/pymodbus_rtu.py); parkguard opens `gateway_end`.
pub struct RtuLine {
    pub gateway_end: String,
    frames: Arc<Mutex<Vec<String>>>,
    _server: PyServer,
}

impl RtuLine {
    /// Every request frame so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .expect("frames")
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("relay line {line:?}: {e}"));
                Frame {
                    t: v["t"].as_f64().expect("t"),
                    unit: v["unit"].as_u64().expect("unit") as u8,
                    line: v["line"].as_str().expect("line").to_string(),
                    heard: v["heard"].as_bool().expect("heard"),
                }
            })
            .collect()
    }
}

/// A line whose units (`spec`) are set to `settings`, e.g. `"19200 8E1"`.
pub fn start_pymodbus_serial(
    spec: &serde_json::Value,
    dir: &std::path::Path,
    settings: &str,
) -> RtuLine {
    let (baud, frame) = settings.split_once(' ').expect("BAUD 8PS");
    let parity = &frame[1..2];
    let stop = &frame[2..3];
    let (server, first, frames) = start_rtu_script(spec, dir, &["serial", baud, parity, stop]);
    let gateway_end = first
        .strip_prefix("gateway-end ")
        .unwrap_or_else(|| panic!("pymodbus_rtu.py said {first:?}"))
        .to_string();
    RtuLine {
        gateway_end,
        frames,
        _server: server,
    }
}
