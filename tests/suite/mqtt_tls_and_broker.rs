//! MQTT over TLS with client certificates and password authentication against a real
//! mosquitto, in both MQTT 3.1.1 and MQTT 5; the embedded broker; and the daemon binary's
//! clean shutdown on SIGTERM.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_and_password_in_mqtt_311_and_5() {
    let certs = tempfile::TempDir::new().expect("temp");
    make_certificates(certs.path());
    let c = certs.path().display().to_string();
    let passwd = certs.path().join("passwd");
    let status = Command::new(require_binary("mosquitto_passwd", "mosquitto"))
        .args([
            "-c",
            "-b",
            &passwd.display().to_string(),
            "gateway",
            "s3cret pass",
        ])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success());
    let broker = mosquitto_with(|port, _| {
        format!(
            "listener {port} 127.0.0.1\ncafile {c}/ca.pem\ncertfile {c}/server.pem\nkeyfile {c}/server.key\n\
             require_certificate true\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        )
    });
    let influx = influxd();
    create_database(&influx, "pg").await;

    let site_text = format!(
        r#"
[gateway]
profiles_dir = "profiles"

[[parks]]
id = "p"

[[enterprises]]
id = "e"
park = "p"

[[locations]]
id = "l"
enterprise = "e"

[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"

[[devices]]
id = "s2"
location = "l"
profile = "nb_smoke"

[[mqtt]]
name = "v311"
host = "localhost"
port = {port}
protocol = "3.1.1"
username = "gateway"
password = {{ file = "mqtt.pass" }}
tls = {{ ca = "{c}/ca.pem", client_cert = "{c}/client.pem", client_key = "{c}/client.key" }}
[[mqtt.subscriptions]]
topic = "a/{{device}}/up"
profile = "nb_smoke"

[[mqtt]]
name = "v5"
host = "127.0.0.1"
port = {port}
protocol = "5"
username = "gateway"
password = {{ file = "mqtt.pass" }}
tls = {{ ca = "{c}/ca.pem", client_cert = "{c}/client.pem", client_key = "{c}/client.key" }}
[[mqtt.subscriptions]]
topic = "b/{{device}}/up"
profile = "nb_smoke"

[[influx]]
name = "i"
url = "{influx}"
api = "v1"
database = "pg"
batch_age_ms = 100
"#,
        port = broker.port,
        influx = influx.url()
    );
    let (dir, path) = site(&site_text);
    std::fs::write(dir.path().join("mqtt.pass"), "s3cret pass\n").expect("password file");
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    for name in ["v311", "v5"] {
        wait_subscribed(&gateway, name, 1).await;
    }
    let tls_args = [
        "--cafile",
        &format!("{c}/ca.pem"),
        "--cert",
        &format!("{c}/client.pem"),
        "--key",
        &format!("{c}/client.key"),
        "-u",
        "gateway",
        "-P",
        "s3cret pass",
    ];
    let ts = now_s();
    let msg = format!(r#"{{"ts":{ts},"event":"heartbeat"}}"#);
    mosquitto_pub_args(broker.port, "a/s1/up", &[msg.as_bytes()], &tls_args);
    mosquitto_pub_args(broker.port, "b/s2/up", &[msg.as_bytes()], &tls_args);
    eventually("both devices' rows", Duration::from_secs(20), || async {
        rows(&influxql(&influx, "pg", "SELECT * FROM smoke").await).len() >= 2
    })
    .await;
    let devices: Vec<String> =
        rows(&influxql(&influx, "pg", "SELECT * FROM smoke ORDER BY time").await)
            .iter()
            .map(|r| r["device"].as_str().unwrap_or("").to_string())
            .collect();
    assert!(
        devices.contains(&"s1".to_string()) && devices.contains(&"s2".to_string()),
        "{devices:?}"
    );
    assert_eq!(
        gateway
            .metrics
            .mqtt("v311")
            .connection_errors
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        gateway
            .metrics
            .mqtt("v5")
            .connection_errors
            .load(Ordering::Relaxed),
        0
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_mqtt_password_is_retried_with_backoff_not_fatal() {
    let passwd_dir = tempfile::TempDir::new().expect("temp");
    let passwd = passwd_dir.path().join("passwd");
    Command::new(require_binary("mosquitto_passwd", "mosquitto"))
        .args([
            "-c",
            "-b",
            &passwd.display().to_string(),
            "gateway",
            "right",
        ])
        .status()
        .expect("mosquitto_passwd");
    let broker = mosquitto_with(|port, _| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        )
    });
    let site_text = format!(
        "[gateway]\nprofiles_dir = \"profiles\"\n[[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"gateway\"\npassword = {{ file = \"pw\" }}\n[[mqtt.subscriptions]]\ntopic = \"x/{{device}}\"\nprofile = \"nb_smoke\"\n",
        broker.port
    );
    let (dir, path) = site(&site_text);
    std::fs::write(dir.path().join("pw"), "wrong").expect("pw");
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    let m = gateway.metrics.mqtt("m");
    eventually("two refused attempts", Duration::from_secs(20), || {
        let m = Arc::clone(&m);
        async move { m.connection_errors.load(Ordering::Relaxed) >= 2 }
    })
    .await;
    // Backoff starts at 250-500 ms and doubles: far fewer attempts than a tight loop would make.
    // The subject: the attempts counted in these 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = m.connection_errors.load(Ordering::Relaxed);
    assert!(
        attempts <= 6,
        "{attempts} attempts in about 2.5 s: reconnects are not backing off"
    );
    assert!(!m.connected.load(Ordering::Relaxed));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_accepts_sensors_and_the_daemon_ingests_from_it() {
    let influx = influxd();
    create_database(&influx, "pg").await;
    // The embedded broker binds the port from the site file: a port another process took
    // between `free_port` and the bind is a start error, and the test starts on another one.
    let mut attempt = 0;
    let (port, config, gateway, _dir) = loop {
        attempt += 1;
        let port = free_port();
        let site_text = format!(
            "[gateway]\nprofiles_dir = \"profiles\"\n[broker.embedded]\nlisten = \"127.0.0.1:{port}\"\n\
             [[mqtt]]\nname = \"embedded\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
             [[influx]]\nname = \"i\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\n",
            influx.url()
        );
        let (dir, path) = site(&site_text);
        let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
        match Gateway::start(config.clone()).await {
            Ok(gateway) => break (port, config, gateway, dir),
            Err(e) if attempt < 5 && format!("{e:#}").contains("in use") => continue,
            Err(e) => panic!("start: {e:#}"),
        }
    };
    wait_subscribed(&gateway, "embedded", 1).await;
    let msg = format!(r#"{{"ts":{},"event":"alarm","smoke_pct":35.0}}"#, now_s());
    mosquitto_pub(port, "park/星河/smoke/8699/up", &[msg.as_bytes()]);
    eventually(
        "row from the embedded broker",
        Duration::from_secs(20),
        || async { !rows(&influxql(&influx, "pg", "SELECT * FROM smoke").await).is_empty() },
    )
    .await;
    let row = &rows(&influxql(&influx, "pg", "SELECT * FROM smoke").await)[0];
    assert_eq!(
        row["park"], "星河",
        "undeclared devices are accepted with their topic's tags"
    );
    assert_eq!(row["device"], "8699");
    assert_eq!(row["smoke_pct"].as_f64(), Some(35.0));

    // A second gateway on the same port is a startup error, not a silent broker.
    let err = Gateway::start(config)
        .await
        .err()
        .expect("port in use must fail");
    assert!(format!("{err:#}").contains(&port.to_string()), "{err:#}");
    gateway.shutdown().await;
}

#[test]
fn daemon_writes_pending_batch_on_sigterm_and_exits_zero() {
    let broker = mosquitto();
    let influx = influxd();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(create_database(&influx, "pg"));
    // Batches of 3 and an age of a minute: only shutdown can write the 4th and 5th readings.
    let site_text = format!(
        "[gateway]\nprofiles_dir = \"profiles\"\nshutdown_grace_s = 10\n\
         [[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[mqtt.subscriptions]]\ntopic = \"s/{{device}}\"\nprofile = \"nb_smoke\"\n\
         [[influx]]\nname = \"i\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_points = 3\nbatch_age_ms = 60000\n",
        broker.port,
        influx.url()
    );
    let (_dir, path) = site(&site_text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["run", "-c", &path.display().to_string()])
        .env("RUST_LOG", "info,parkguard::pipeline=trace")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let log = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        })
    };
    let count = |needle: &str| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    wait_for("daemon connected", || count("MQTT connected") >= 1);
    // Subscription confirmed once a message published now is dispatched; retry until it is.
    let ts = now_s();
    let msg = |i: i64| format!(r#"{{"ts":{},"event":"heartbeat"}}"#, ts - 10 + i);
    let mut sent = 0;
    while count("Dispatched") == 0 {
        assert!(sent < 100, "no message was ever dispatched");
        mosquitto_pub(broker.port, "s/d1", &[msg(0).as_bytes()]);
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 1..5 {
        mosquitto_pub(broker.port, "s/d1", &[msg(i).as_bytes()]);
    }
    wait_for("all messages dispatched", || {
        count("Dispatched") >= sent + 4
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("daemon exits");
    reader.join().expect("reader");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        log.lock().expect("log").join("\n")
    );
    let points = runtime
        .block_on(async { rows(&influxql(&influx, "pg", "SELECT count(event) FROM smoke").await) });
    // Messages 1..4 have distinct timestamps; the probes share message 0's timestamp.
    assert_eq!(points[0]["count"], 5, "{points:?}");
    let log = log.lock().expect("log").join("\n");
    assert!(
        log.contains("parkguard stopped") && log.contains("points_left_in_outbox=0"),
        "{log}"
    );
}
