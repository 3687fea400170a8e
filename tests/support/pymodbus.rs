//! A Modbus TCP server built on pymodbus (PyPI; ./scripts/test installs it into a virtual
//! environment and names its Python in PARKGUARD_TEST_PYTHON), serving typed values that
//! pymodbus itself encodes: an implementation parkguard did not write.

use std::process::{Child, Command, Stdio};

use super::{free_port, wait_for};

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
    let port = free_port();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pymodbus_server.py");
    let log = std::fs::File::create(dir.join("pymodbus.log")).expect("log");
    let child = Command::new(python_with_pymodbus())
        .arg(script)
        .arg(&spec_path)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the pymodbus server");
    let server = PyServer(child);
    wait_for("pymodbus server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}
