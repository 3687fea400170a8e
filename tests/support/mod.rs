//! Real servers for integration tests: mosquitto, influxd (InfluxDB 1.x) and victoria-metrics,
//! each a child process on a free port with its own temporary folder, probed until ready and
//! killed on drop. A missing binary fails the test with the command that installs it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod browser;
pub mod proxy;
pub mod publisher;
pub mod push_receiver;
pub mod pymodbus;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn require_binary(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("`{name}` is not installed: run `apt-get install -y {package}` (or ./scripts/test, which installs it)");
}

/// Polls `ready` until it holds or `READY_TIMEOUT` passes.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} was not ready within {READY_TIMEOUT:?}");
}

/// Async variant of `wait_for` for conditions checked inside a tokio test.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {timeout:?}");
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn http_ok(url: &str) -> bool {
    // A tiny blocking HTTP/1.0 GET, so that readiness probes need no runtime.
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let Some(port) = parsed.port() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", parsed.path());
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

pub struct Server {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    probe: fn(&Server) -> bool,
    name: &'static str,
}

impl Server {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("create log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let probe = self.probe;
        wait_for(self.name, || probe(self));
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same port and data folder.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server with SIGTERM, so that it saves its state (mosquitto's persistence).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the server again after `stop` or `terminate`.
    pub fn start(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// mosquitto with a plain listener and persistence.
pub fn mosquitto() -> Server {
    mosquitto_with(|port, _dir| format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
}

/// mosquitto with a configuration made by `listeners(port, dir)` (persistence is added).
pub fn mosquitto_with(listeners: impl FnOnce(u16, &Path) -> String) -> Server {
    let program = require_binary("mosquitto", "mosquitto mosquitto-clients");
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let conf = format!(
        "{}\npersistence true\npersistence_location {}/\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n",
        listeners(port, dir.path()),
        dir.path().display()
    );
    let conf_path = dir.path().join("mosquitto.conf");
    std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
    let mut server = Server {
        port,
        args: vec!["-c".into(), conf_path.display().to_string()],
        dir,
        child: None,
        program,
        probe: |s| port_open(s.port),
        name: "mosquitto",
    };
    server.spawn();
    server
}

/// InfluxDB 1.x with its HTTP API on a free port.
pub fn influxd() -> Server {
    let program = require_binary("influxd", "influxdb");
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let rpc_port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
         [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
         [monitor]\n  store-enabled = false\n\
         [continuous_queries]\n  enabled = false\n"
    );
    let conf_path = dir.path().join("influxdb.conf");
    std::fs::write(&conf_path, conf).expect("write influxdb.conf");
    let mut server = Server {
        port,
        args: vec!["-config".into(), conf_path.display().to_string()],
        dir,
        child: None,
        program,
        probe: |s| http_ok(&format!("{}/ping", s.url())),
        name: "influxd",
    };
    server.spawn();
    server
}

/// VictoriaMetrics, which serves the InfluxDB v2 write API.
pub fn victoria_metrics() -> Server {
    let program = require_binary("victoria-metrics", "victoria-metrics");
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut server = Server {
        port,
        args: vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}/data", dir.path().display()),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ],
        dir,
        child: None,
        program,
        probe: |s| http_ok(&format!("{}/health", s.url())),
        name: "victoria-metrics",
    };
    server.spawn();
    server
}

/// InfluxQL against an influxd; returns the JSON answer.
pub async fn influxql(server: &Server, db: &str, query: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{}/query", server.url()))
        .query(&[("db", db), ("q", query), ("epoch", "ns")])
        .send()
        .await
        .expect("influx query");
    response.json().await.expect("influx JSON")
}

pub async fn create_database(server: &Server, db: &str) {
    let answer = influxql(server, db, &format!("CREATE DATABASE \"{db}\"")).await;
    assert!(answer["results"][0].get("error").is_none(), "{answer}");
}

/// Rows of the first series of an InfluxQL answer, as column-name -> value maps.
pub fn rows(answer: &serde_json::Value) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut out = Vec::new();
    let Some(series) = answer["results"][0]["series"].as_array() else {
        return out;
    };
    for s in series {
        let columns: Vec<String> = s["columns"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for values in s["values"].as_array().into_iter().flatten() {
            let mut row = serde_json::Map::new();
            for (c, v) in columns.iter().zip(values.as_array().into_iter().flatten()) {
                row.insert(c.clone(), v.clone());
            }
            out.push(row);
        }
    }
    out
}

/// Publishes each message with mosquitto_pub (a client parkguard did not write), QoS 1.
pub fn mosquitto_pub(port: u16, topic: &str, messages: &[&[u8]]) {
    mosquitto_pub_args(port, topic, messages, &[]);
}

pub fn mosquitto_pub_args(port: u16, topic: &str, messages: &[&[u8]], extra: &[&str]) {
    let program = require_binary("mosquitto_pub", "mosquitto-clients");
    for message in messages {
        let status = Command::new(&program)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-s",
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(message)?;
                child.wait()
            })
            .expect("run mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed for {topic}");
    }
}

/// Writes a site file into a fresh folder next to copies of the shipped profiles (`profiles/`)
/// and rule sets (`rules/`); returns (folder, site path).
pub fn site(site_toml: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/profiles");
    for entry in std::fs::read_dir(shipped).expect("shipped profiles") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), profiles.join(entry.file_name())).expect("copy profile");
    }
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/rules");
    for entry in std::fs::read_dir(shipped).expect("shipped rules") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), rules.join(entry.file_name())).expect("copy rules");
    }
    let path = dir.path().join("site.toml");
    std::fs::write(&path, site_toml).expect("write site");
    (dir, path)
}

/// Nanoseconds since the epoch, rounded to whole seconds (payload timestamps are in seconds).
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Waits until MQTT connection `name` of a running gateway is connected and the broker has
/// confirmed at least `subacks` subscriptions since start.
pub async fn wait_subscribed(gateway: &parkguard::pipeline::Gateway, name: &str, subacks: u64) {
    use std::sync::atomic::Ordering;
    let m = gateway.metrics.mqtt(name);
    eventually(
        &format!("{name}: {subacks} subscription(s) confirmed"),
        Duration::from_secs(40),
        || {
            let m = std::sync::Arc::clone(&m);
            async move {
                m.subacks.load(Ordering::Relaxed) >= subacks && m.connected.load(Ordering::Relaxed)
            }
        },
    )
    .await;
}

/// A pair of connected pseudo-terminals made by socat: what one end writes, the other reads,
/// like the two sides of an RS-485 bus. socat is killed on drop.
pub struct PtyPair {
    pub gateway_end: String,
    pub device_end: String,
    _dir: TempDir,
    child: Child,
}

pub fn pty_pair() -> PtyPair {
    let program = require_binary("socat", "socat");
    let dir = TempDir::new().expect("temp dir");
    let a = dir.path().join("gateway");
    let b = dir.path().join("device");
    let child = Command::new(program)
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn socat");
    wait_for("socat pty links", || a.exists() && b.exists());
    PtyPair {
        gateway_end: a.display().to_string(),
        device_end: b.display().to_string(),
        _dir: dir,
        child,
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The top of a test site file: `[gateway]` reading profiles and rules from the folder `site`
/// makes (plus `gateway_extra` lines), one park `p`, one enterprise `e`, one `location`.
pub fn site_header(location: &str, gateway_extra: &str) -> String {
    format!(
        "[gateway]\nprofiles_dir = \"profiles\"\n{gateway_extra}\n\
         [[parks]]\nid = \"p\"\n[[enterprises]]\nid = \"e\"\npark = \"p\"\n\
         [[locations]]\nid = \"{location}\"\nenterprise = \"e\"\n"
    )
}

/// chromedriver (Debian's chromium-driver) on a free port; drives Debian's chromium.
pub fn chromedriver() -> Server {
    let program = require_binary("chromedriver", "chromium chromium-driver");
    require_binary("chromium", "chromium");
    let port = free_port();
    let mut server = Server {
        port,
        dir: TempDir::new().expect("temp dir"),
        child: None,
        program,
        args: vec![format!("--port={port}")],
        // chromedriver does not answer HTTP/1.0, which `http_ok` speaks; an open port is
        // enough, as it listens only once it is ready.
        probe: |s| port_open(s.port),
        name: "chromedriver",
    };
    server.spawn();
    server
}

/// The `[web]` section of a test site: listening on a free port, with one user per role of
/// `users` (name, role, password).
pub fn web_section(users: &[(&str, &str, &str)]) -> String {
    let mut text = "[web]\nlisten = \"127.0.0.1:0\"\n".to_string();
    for (name, role, password) in users {
        let hash = parkguard::web::hash_password(password).expect("hash");
        text.push_str(&format!(
            "[[web.users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    text
}

/// The base URL of a running gateway's web UI.
pub fn web_url(gateway: &parkguard::pipeline::Gateway) -> String {
    let web = gateway.web.as_ref().expect("the site has a [web] section");
    format!("http://{}", web.address)
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (apt-get install -y openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate.
pub fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=parkguard test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend(ec);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for name in ["server", "client"] {
        let mut req = vec!["req", "-subj"];
        let subject = format!("/CN={name}");
        req.push(&subject);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        req.extend(["-keyout", &key, "-out", &csr]);
        req.extend(ec);
        openssl(dir, &req);
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ],
        );
    }
}

/// An `adw300_json` meter message with `leakage` mA and the current time (ms).
pub fn meter(leakage: f64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!(
        r#"{{"ts":{now_ms},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":{leakage},"t":[35.5,36.0,34.25,41.0]}}"#
    )
}

/// Runs the `parkguard` binary with `args` off the async threads; its output.
pub async fn parkguard(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(&args)
            .output()
            .expect("run parkguard")
    })
    .await
    .expect("join")
}
