//! Real servers for integration tests: mosquitto, influxd (InfluxDB 1.x) and victoria-metrics,
//! each a child process on a free port with its own temporary folder, probed until ready and
//! killed on drop. A missing binary fails the test with the command that installs it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod browser;
pub mod jsonl;
pub mod proxy;
pub mod publisher;
pub mod push_receiver;
pub mod pymodbus;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port free at the moment of asking. It is released before anyone binds it, so another
/// process can take it in between: servers started with it here check that the port they
/// listen on is their own and start again on another one if it was taken (`start_server`).
/// Prefer binding port 0 and asking the listener for its port where the server is in the test.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A port of the test's own: bound but not listening, so that a connection to it is refused
/// and no other process can take it while the socket is held. `socket.listen(..)` later makes
/// a server of it on the same port.
pub fn reserved_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind a port");
    let port = socket.local_addr().expect("address").port();
    (port, socket)
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

/// Polls `condition` until it holds; panics naming `what` was awaited if `timeout` passes
/// first. For conditions outside an async runtime (processes, files, ports).
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wait_until` inside a tokio test: polls the async `condition` on tokio's clock (so it
/// also works under `tokio::time::pause`).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `ready` until it holds or `READY_TIMEOUT` passes.
pub fn wait_for(what: &str, ready: impl FnMut() -> bool) {
    wait_until(&format!("{what} ready"), READY_TIMEOUT, ready);
}

/// Async variant of `wait_for` for conditions checked inside a tokio test.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_async(what, timeout, ready).await;
}

/// Waits until nothing listens on `port` any more and it can be bound again, e.g. before a
/// server is started again on the port it had (its clients know only that one).
pub fn wait_port_free(port: u16) {
    wait_until(&format!("port {port} free again"), READY_TIMEOUT, || {
        !port_open(port) && TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
}

/// Whether process `pid` holds a socket listening on TCP `port` (Linux: /proc/net/tcp and the
/// process's file descriptors), so that a readiness probe answered by some other process that
/// took the port is not mistaken for the server's.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
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

/// Attempts at starting a server on a fresh port when the one it was given was taken.
const PORT_ATTEMPTS: usize = 5;

/// Starts `program` with the arguments `configure(port, dir)` makes (it writes any
/// configuration file into `dir`) on a free port, ready once `probe` holds and the child itself
/// listens on the port. If the port was taken before the server could bind it (another
/// process got it in between: the server exits saying so), it starts again on another one.
fn start_server(
    name: &'static str,
    program: PathBuf,
    probe: fn(&Server) -> bool,
    mut configure: impl FnMut(u16, &Path) -> Vec<String>,
) -> Server {
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server {
        port: 0,
        dir,
        child: None,
        program,
        args: Vec::new(),
        probe,
        name,
    };
    for _ in 0..PORT_ATTEMPTS {
        server.port = free_port();
        server.args = configure(server.port, server.dir.path());
        match server.try_spawn() {
            Ok(()) => return server,
            Err(log) if port_taken(&log) => continue,
            Err(log) => panic!("{name} exited while starting:\n{log}"),
        }
    }
    panic!(
        "{name}: no free port in {PORT_ATTEMPTS} attempts:\n{}",
        server.log()
    );
}

/// Starts a child that binds the port it is given, on a free port: ready once the child
/// itself listens there. A child that exits first (another process took the port between
/// `free_port` and its bind) is started again on another port.
pub fn spawn_listening(what: &str, mut spawn: impl FnMut(u16) -> Child) -> (Child, u16) {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let mut child = spawn(port);
        let pid = child.id();
        let mut exited = false;
        wait_for(what, || {
            exited = !matches!(child.try_wait(), Ok(None));
            exited || listens_on(pid, port)
        });
        if !exited {
            return (child, port);
        }
    }
    panic!("{what}: exited at every start, {PORT_ATTEMPTS} ports tried (see its log)");
}

/// SIGKILL to the process group of `child` (started with `process_group(0)`), so that its own
/// children go with it.
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

/// Whether a server's log says it could not bind its port.
fn port_taken(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("port not available")
}

impl Server {
    /// Starts the child; `Err(log)` if it exits before it is ready.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("create log");
        // A group of its own, so that `stop` also ends what the server started: chromedriver's
        // Chromium and its renderers outlived the driver otherwise, and piled up run after run.
        let child = Command::new(&self.program)
            .args(&self.args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let pid = child.id();
        self.child = Some(child);
        let probe = self.probe;
        let mut exited = false;
        wait_for(self.name, || {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | Some(Err(_)) | None => {
                    exited = true;
                    return true;
                }
                Some(Ok(None)) => {}
            }
            listens_on(pid, self.port) && probe(self)
        });
        if exited {
            self.child = None;
            return Err(self.log());
        }
        Ok(())
    }

    /// Starts the child on the port it had: waits until the port is free again, and retries
    /// while the port is still held (a socket of the previous process lingering).
    fn spawn(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            wait_port_free(self.port);
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if port_taken(&log) => continue,
                Err(log) => panic!("{} exited while starting:\n{log}", self.name),
            }
        }
        panic!(
            "{}: port {} stayed taken:\n{}",
            self.name,
            self.port,
            self.log()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
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

    /// Starts the server again after `stop` or `terminate`, on the same port (once it is free).
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

/// mosquitto with a configuration made by `listeners(port, dir)` (persistence is added). It
/// may be called again with another port if the first one was taken.
pub fn mosquitto_with(mut listeners: impl FnMut(u16, &Path) -> String) -> Server {
    let program = require_binary("mosquitto", "mosquitto mosquitto-clients");
    start_server(
        "mosquitto",
        program,
        |s| port_open(s.port),
        |port, dir| {
            let conf = format!(
                "{}\npersistence true\npersistence_location {}/\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                listeners(port, dir),
                dir.display()
            );
            let conf_path = dir.join("mosquitto.conf");
            std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
            vec!["-c".into(), conf_path.display().to_string()]
        },
    )
}

/// InfluxDB 1.x with its HTTP API on a free port.
pub fn influxd() -> Server {
    let program = require_binary("influxd", "influxdb");
    start_server(
        "influxd",
        program,
        |s| http_ok(&format!("{}/ping", s.url())),
        |port, dir| {
            let rpc_port = free_port();
            let d = dir.display();
            let conf = format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n"
            );
            let conf_path = dir.join("influxdb.conf");
            std::fs::write(&conf_path, conf).expect("write influxdb.conf");
            vec!["-config".into(), conf_path.display().to_string()]
        },
    )
}

/// VictoriaMetrics, which serves the InfluxDB v2 write API.
pub fn victoria_metrics() -> Server {
    let program = require_binary("victoria-metrics", "victoria-metrics");
    start_server(
        "victoria-metrics",
        program,
        |s| http_ok(&format!("{}/health", s.url())),
        |port, dir| {
            vec![
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}/data", dir.display()),
                "-search.latencyOffset=0s".into(),
                "-search.disableCache".into(),
                "-loggerLevel=ERROR".into(),
            ]
        },
    )
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
    // chromedriver does not answer HTTP/1.0, which `http_ok` speaks; an open port is enough,
    // as it listens only once it is ready.
    start_server(
        "chromedriver",
        program,
        |s| port_open(s.port),
        |port, _| vec![format!("--port={port}")],
    )
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

/// Logs in to a running gateway's API at `base`; returns (the `Cookie` header value of the
/// session, its CSRF token), after checking the cookie is HttpOnly and SameSite=Strict.
pub async fn api_log_in(base: &str, name: &str, password: &str) -> (String, String) {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .await
        .expect("login");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "log in as {name}"
    );
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().expect("cookie pair").to_string();
    let body: serde_json::Value = response.json().await.expect("json");
    let csrf = body["csrf"].as_str().expect("csrf token").to_string();
    (session, csrf)
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

/// The test-only crash hook's variable (src/crashpoint.rs).
pub const CRASH_ENV: &str = "PARKGUARD_TEST_CRASH_AT";

/// `parkguard run -c site` as a program, logging to `log` (appended), armed at crash point
/// `crash` (`<point>:<n>`) when given.
pub fn spawn_daemon(site: &Path, log: &Path, crash: Option<&str>) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_parkguard"));
    command
        .args(["run", "-c"])
        .arg(site)
        .env("RUST_LOG", "info,rumqttd=off")
        .env_remove(CRASH_ENV)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some(point) = crash {
        command.env(CRASH_ENV, point);
    }
    Daemon(command.spawn().expect("start parkguard"))
}

/// A daemon run as a program, killed when dropped: a failing test must not leave it running
/// (holding its ports, its store, and whatever file descriptors it inherited).
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The independent CTWing/OneNET stand-in (tests/interop/iot_platform.py) on a port of its
/// own, with `args` (its credentials and options), as a JSON-lines child.
pub fn iot_platform(args: &[&str]) -> jsonl::JsonLines {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/iot_platform.py");
    let python = std::env::var("PARKGUARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(&python);
    command
        .arg(script)
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    jsonl::JsonLines::start(command, &format!("the IoT platform stand-in ({python})"))
}
