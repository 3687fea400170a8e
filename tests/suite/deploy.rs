//! The files under deploy/ that this machine can check: the systemd unit (systemd-analyze
//! verify and its offline security score), mosquitto's configuration run in a real mosquitto
//! (TLS and passwords: anonymous refused, ACLs hold), the compose file and Grafana provisioning
//! parsed (every mounted file exists, the datasources the dashboards use are provisioned), the
//! Dockerfile's stages and sources, the dashboards' InfluxQL queries run against a real influxd
//! holding what parkguard writes, the Flux variant's structure, and the stack's site file
//! validated. (No container engine runs here, so the image and the stack are not started.)

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// YAML as JSON, parsed by PyYAML in the test virtual environment.
fn yaml(path: &Path) -> Value {
    let out = Command::new(support::pymodbus::python_with_pymodbus())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = read(&deploy().join("systemd/parkguard.service"));
    let dir = tempfile::TempDir::new().expect("dir");
    // verify wants the binary to exist: point the unit at the one just built.
    let local = unit.replace("/usr/local/bin/parkguard", env!("CARGO_BIN_EXE_parkguard"));
    let path = dir.path().join("parkguard.service");
    std::fs::write(&path, &local).expect("unit");
    let analyze = require_binary("systemd-analyze", "systemd");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    // The offline security review: exposure 2.5 or better (0 = locked down, 10 = exposed), and
    // no key it does not know.
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=25"])
        .arg(&path)
        .output()
        .expect("security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exposure above 2.5:\n{stdout}{stderr}"
    );
    assert!(!stderr.contains("Unknown"), "{stderr}");
    // Measured 2.1 with systemd 252; the bound leaves a little room.
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for parkguard.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    eprintln!("systemd-analyze security --offline=yes: exposure {exposure}");
    assert!(exposure <= 2.5, "exposure {exposure} above 2.5:\n{stdout}");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "parkguard"),
        ("Restart", "on-failure"),
        // An invalid site file (exit 2) is not restarted every 5 s forever.
        ("RestartPreventExitStatus", "2"),
        (
            "ExecStartPre",
            "/usr/local/bin/parkguard check /etc/parkguard/site.toml",
        ),
        ("User", "parkguard"),
        (
            "ExecReload",
            "/usr/local/bin/parkguard reload -c /etc/parkguard/site.toml",
        ),
    ] {
        assert_eq!(unit_value(&unit, key), [value], "{key}");
    }
    // Secrets come as credentials, never in the environment (`systemctl show` prints it to
    // every local user), not even as a commented example.
    for line in unit.lines() {
        let setting = line.trim_start_matches(['#', ' ']);
        assert!(
            !setting.starts_with("Environment=")
                && !setting.starts_with("EnvironmentFile=")
                && !setting.starts_with("PassEnvironment="),
            "{line}"
        );
    }
    let credentials = unit_value(&unit, "LoadCredential");
    assert!(!credentials.is_empty(), "no LoadCredential=");
    for credential in credentials {
        let (name, path) = credential.split_once(':').expect("NAME:PATH");
        assert_eq!(path, format!("/etc/parkguard/credentials/{name}"));
    }
    assert!(unit.contains("deploy/README.md"));
    let stop: u64 = unit_value(&unit, "TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    let grace = parkguard::config::GatewayConfig::default().shutdown_grace_s;
    assert!(
        stop > grace + 10,
        "stop timeout {stop} s vs grace {grace} s"
    );
}

#[test]
fn mosquitto_configuration_requires_tls_and_passwords_and_applies_its_acl() {
    let certs = tempfile::TempDir::new().expect("dir");
    make_certificates(certs.path());
    let c = certs.path();
    let passwd = c.join("passwd");
    for (i, (user, password)) in [("parkguard", "gw-secret"), ("smoke-1", "dev-secret")]
        .iter()
        .enumerate()
    {
        let mut args = vec!["-b"];
        if i == 0 {
            args.insert(0, "-c");
        }
        let status = Command::new("mosquitto_passwd")
            .args(&args)
            .arg(&passwd)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd");
        assert!(status.success());
    }
    let conf = read(&deploy().join("mosquitto/mosquitto.conf"));
    let acl = deploy().join("mosquitto/acl");
    let mosquitto = mosquitto_with(|port, _| {
        conf.lines()
            // The test's own persistence settings replace the packaged paths.
            .filter(|l| !l.starts_with("persistence") && !l.starts_with("log_dest"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
            .replace("/mosquitto/config/passwd", &passwd.display().to_string())
            .replace("/mosquitto/config/acl", &acl.display().to_string())
            .replace(
                "/mosquitto/config/certs/ca.crt",
                &c.join("ca.pem").display().to_string(),
            )
            .replace(
                "/mosquitto/config/certs/server.crt",
                &c.join("server.pem").display().to_string(),
            )
            .replace(
                "/mosquitto/config/certs/server.key",
                &c.join("server.key").display().to_string(),
            )
    });
    let port = mosquitto.port.to_string();
    let ca = c.join("ca.pem").display().to_string();
    let tls = ["-h", "localhost", "-p", &port, "--cafile", &ca];
    let publish = |extra: &[&str], topic: &str| {
        Command::new("mosquitto_pub")
            .args(tls)
            .args(extra)
            .args(["-q", "1", "-t", topic, "-m", "{\"event\":\"alarm\"}"])
            .output()
            .expect("mosquitto_pub")
    };
    // No anonymous clients, no wrong passwords, no plain TCP.
    assert!(!publish(&[], "park/p/smoke/smoke-1/up").status.success());
    assert!(
        !publish(&["-u", "smoke-1", "-P", "wrong"], "park/p/smoke/smoke-1/up")
            .status
            .success()
    );
    let plain = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "smoke-1",
            "-P",
            "dev-secret",
        ])
        .args(["-t", "park/p/smoke/smoke-1/up", "-m", "x"])
        .output()
        .expect("mosquitto_pub");
    assert!(!plain.status.success(), "plain TCP accepted");

    // parkguard reads what a device publishes on its own topic, and not what it publishes
    // as another device.
    // Two messages: the device's own, then whatever comes next, which is its own second one
    // unless the one it published as another device got through in between.
    // Line-buffered (stdbuf): its debug lines reach the pipe as they are printed, not at exit.
    let mut sub = Command::new(require_binary("stdbuf", "coreutils"))
        .args(["-oL", "mosquitto_sub"])
        .args(tls)
        .args([
            "-u",
            "parkguard",
            "-P",
            "gw-secret",
            "-t",
            "park/#",
            "-v",
            "-C",
            "2",
            "-W",
            "20",
            // Debug lines: "Subscribed (mid: 1)" once the broker confirmed the subscription.
            "-d",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(sub.stdout.take().expect("stdout")).lines();
    assert!(
        lines
            .by_ref()
            .any(|l| l.expect("line").starts_with("Subscribed")),
        "mosquitto_sub ended before its subscription was confirmed"
    );
    let own = publish(
        &["-u", "smoke-1", "-P", "dev-secret"],
        "park/p/smoke/smoke-1/up",
    );
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    publish(
        &["-u", "smoke-1", "-P", "dev-secret"],
        "park/p/smoke/smoke-2/up",
    );
    publish(
        &["-u", "smoke-1", "-P", "dev-secret"],
        "park/p/smoke/smoke-1/up",
    );
    let seen: Vec<String> = lines
        .map(|l| l.expect("line"))
        .filter(|l| l.starts_with("park/"))
        .collect();
    let _ = sub.wait();
    assert_eq!(
        seen,
        vec![
            "park/p/smoke/smoke-1/up {\"event\":\"alarm\"}".to_string(),
            "park/p/smoke/smoke-1/up {\"event\":\"alarm\"}".to_string()
        ],
        "the device's own messages, and not what it published as another (the ACL)"
    );
}

#[test]
fn compose_file_mounts_what_exists_and_grafana_gets_the_dashboards_datasources() {
    let compose = yaml(&deploy().join("compose.yaml"));
    let services: BTreeSet<&str> = compose["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["grafana", "influxdb", "mosquitto", "parkguard"])
    );
    // Files the operator creates (deploy/README.md) are not in the repository.
    let created_by_operator = ["./mosquitto/passwd"];
    for (name, service) in compose["services"].as_object().expect("services") {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = volume
                .as_str()
                .expect("volume")
                .split(':')
                .next()
                .expect("host");
            if host.starts_with("./") && !created_by_operator.contains(&host) {
                assert!(deploy().join(host).exists(), "{name}: {host} missing");
            }
        }
    }
    let build = &compose["services"]["parkguard"]["build"];
    let dockerfile = deploy()
        .join(build["context"].as_str().expect("context"))
        .join(build["dockerfile"].as_str().expect("dockerfile"));
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    let grace = compose["services"]["parkguard"]["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    assert!(grace.trim_end_matches('s').parse::<u64>().expect("s") > 20);

    let datasources = yaml(&deploy().join("grafana/provisioning/datasources/influxdb.yaml"));
    let uids: BTreeSet<&str> = datasources["datasources"]
        .as_array()
        .expect("datasources")
        .iter()
        .filter_map(|d| d["uid"].as_str())
        .collect();
    let providers = yaml(&deploy().join("grafana/provisioning/dashboards/parkguard.yaml"));
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards/parkguard"
    );
    for language in ["influxql", "flux"] {
        let dashboard = dashboard(language);
        for panel in dashboard["panels"].as_array().expect("panels") {
            let uid = panel["datasource"]["uid"].as_str().expect("uid");
            assert!(
                uids.contains(uid),
                "{language}: datasource {uid} not provisioned"
            );
        }
    }
}

#[test]
fn dockerfile_builds_in_stages_from_files_that_exist() {
    let text = read(&deploy().join("Dockerfile"));
    let known = [
        "FROM",
        "WORKDIR",
        "COPY",
        "RUN",
        "USER",
        "VOLUME",
        "EXPOSE",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ENV",
        "ARG",
        "LABEL",
        "HEALTHCHECK",
    ];
    let mut instructions = Vec::new();
    let mut continued = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !continued {
            let word = trimmed.split_whitespace().next().expect("word");
            assert!(known.contains(&word), "unknown instruction: {line}");
            instructions.push(trimmed.to_string());
        }
        continued = trimmed.ends_with('\\');
    }
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("FROM"))
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(froms[0].ends_with("AS build"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for copy in instructions
        .iter()
        .filter(|i| i.starts_with("COPY") && !i.contains("--from"))
    {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root.join(source).exists(), "COPY source {source} missing");
        }
    }
    // The dependency-caching step stubs every bench target Cargo.toml declares.
    let manifest = read(&root.join("Cargo.toml"));
    let declared: BTreeSet<String> = manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|b| {
            b.lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
        })
        .collect();
    let stubbed: BTreeSet<String> = text
        .split("for b in ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("bench stub loop")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(declared, stubbed, "bench stubs in the Dockerfile");
}

fn dashboard(language: &str) -> Value {
    let path = deploy().join(format!("grafana/dashboards/parkguard-{language}.json"));
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Measurements and fields the shipped profiles and the alarm points produce.
fn written_by_parkguard() -> BTreeSet<(String, String)> {
    let config = parkguard::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/sites/demo-park.toml"),
    )
    .expect("demo site");
    let mut out = BTreeSet::new();
    for profile in config.profiles.values() {
        for quantity in profile_quantities(profile) {
            out.insert((profile.measurement().to_string(), quantity));
        }
    }
    for field in [
        "action",
        "state",
        "message",
        "annunciated",
        "journal_seq",
        "value",
        "value_text",
        "threshold",
        "operator",
        "comment",
    ] {
        out.insert(("alarm".to_string(), field.to_string()));
    }
    out
}

fn profile_quantities(profile: &parkguard::config::Profile) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(payload) = &profile.payload {
        out.extend(payload.fields.iter().map(|f| f.quantity.clone()));
    }
    if let Some(modbus) = &profile.modbus {
        out.extend(modbus.registers.iter().map(|r| r.quantity.clone()));
    }
    out
}

#[tokio::test]
async fn dashboards_query_what_parkguard_writes_in_both_languages() {
    let sql = dashboard("influxql");
    let flux = dashboard("flux");
    let titles = |d: &Value| -> Vec<String> {
        d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .map(|p| p["title"].as_str().expect("title").to_string())
            .collect()
    };
    assert_eq!(
        titles(&sql),
        titles(&flux),
        "the variants show the same panels"
    );

    // Every measurement and field a query names is one parkguard writes.
    let written = written_by_parkguard();
    let measurements: BTreeSet<&str> = written.iter().map(|(m, _)| m.as_str()).collect();
    let quoted = quoted_identifiers;
    for panel in sql["panels"].as_array().expect("panels") {
        let query = panel["targets"][0]["query"].as_str().expect("query");
        let from = query
            .split("FROM \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("FROM");
        assert!(measurements.contains(from), "{from} is not written");
        let select = query.split(" FROM ").next().expect("select");
        for field in quoted(select) {
            let tag = ["severity", "rule", "device"].contains(&field.as_str());
            assert!(
                tag || written.contains(&(from.to_string(), field.clone())),
                "{from}.{field} is not written"
            );
        }
    }

    // The InfluxQL variant runs against a real influxd holding one point of each series.
    let influx = influxd();
    create_database(&influx, "parkguard").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let lines = format!(
        "electrical,park=p,device=m1 leakage=35.5,ua=230.1,ub=229.8,uc=231.2,ia=12.5,ib=11,ic=13 {now}\n\
         electrical_fire,park=p,device=d1 leak=120,t1=41.5,t2=40,t3=39,t4=38 {now}\n\
         gas,park=p,device=g1 lel=12.5 {now}\n\
         smoke,park=p,device=s1 event=\"alarm\" {now}\n\
         alarm,park=p,device=s1,rule=R13,severity=critical,kind=alarm action=\"raised\",state=\"unacknowledged\",message=\"Smoke alarm\",value_text=\"alarm\",journal_seq=1i {now}\n"
    );
    let written = reqwest::Client::new()
        .post(format!("{}/write?db=parkguard", influx.url()))
        .body(lines)
        .send()
        .await
        .expect("write");
    assert!(written.status().is_success());
    let expand = |q: &str| {
        q.replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "1m")
            .replace("$park", ".*")
            .replace("$device", ".*")
    };
    for panel in sql["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        let query = expand(panel["targets"][0]["query"].as_str().expect("query"));
        let answer = influxql(&influx, "parkguard", &query).await;
        let result = &answer["results"][0];
        assert!(result.get("error").is_none(), "{title}: {query}\n{answer}");
        assert!(
            result["series"].as_array().is_some_and(|s| !s.is_empty()),
            "{title}: no data from {query}\n{answer}"
        );
    }
    for variable in sql["templating"]["list"].as_array().expect("variables") {
        let query = expand(variable["query"].as_str().expect("query"));
        let answer = influxql(&influx, "parkguard", &query).await;
        assert!(
            answer["results"][0]["series"][0]["values"]
                .as_array()
                .is_some_and(|v| !v.is_empty()),
            "{query}: {answer}"
        );
    }

    // Flux has no engine here (influxd 1.6): the structure every panel query needs.
    for panel in flux["panels"].as_array().expect("panels") {
        let query = panel["targets"][0]["query"].as_str().expect("query");
        assert!(query.starts_with("from(bucket: \"${bucket}\")"), "{query}");
        assert!(query.contains("range(start: v.timeRangeStart, stop: v.timeRangeStop)"));
        for (open, close) in [('(', ')'), ('[', ']'), ('{', '}')] {
            assert_eq!(
                query.matches(open).count(),
                query.matches(close).count(),
                "{query}"
            );
        }
        let measurement = query
            .split("r._measurement == \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("measurement");
        assert!(measurements.contains(measurement), "{measurement}");
        for field in query.split("r._field == \"").skip(1) {
            let field = field.split('"').next().expect("field");
            assert!(
                written_contains(measurement, field),
                "{measurement}.{field}"
            );
        }
    }
    let bucket = flux["templating"]["list"][0].clone();
    assert_eq!(bucket["name"], "bucket");
}

fn written_contains(measurement: &str, field: &str) -> bool {
    written_by_parkguard().contains(&(measurement.to_string(), field.to_string()))
}

/// The field or tag each item of an InfluxQL select list reads: its first double-quoted
/// identifier (`max("t1") AS "peak"` gives `t1`).
fn quoted_identifiers(select: &str) -> BTreeSet<String> {
    select
        .split(',')
        .filter_map(|item| item.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_stacks_site_file_validates() {
    let (dir, _) = site("");
    let site = dir.path().join("stack.toml");
    std::fs::write(&site, read(&deploy().join("parkguard/site.toml"))).expect("site");
    std::fs::create_dir_all(dir.path().join("certs")).expect("certs");
    std::fs::write(dir.path().join("certs/ca.crt"), "test").expect("ca");
    for file in ["web.crt", "web.key"] {
        std::fs::write(dir.path().join("certs").join(file), "test").expect("web cert");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check"])
        .arg(&site)
        .env("PARKGUARD_MQTT_PASSWORD", "x")
        .env("PARKGUARD_INFLUX_TOKEN", "y")
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stack serves the UI over TLS with /metrics closed: `check` has nothing to warn of
    // about the web side.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("plain HTTP"), "{said}");
    assert!(!said.contains("/metrics"), "{said}");
}

/// The mosquitto service's mounts in compose.yaml: (source, mount point, read-only).
fn mosquitto_mounts() -> Vec<(String, String, bool)> {
    let compose = yaml(&deploy().join("compose.yaml"));
    compose["services"]["mosquitto"]["volumes"]
        .as_array()
        .expect("mosquitto volumes")
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v
                .as_str()
                .expect("short volume syntax")
                .split(':')
                .collect();
            assert!((2..=3).contains(&parts.len()), "{parts:?}");
            (
                parts[0].to_string(),
                parts[1].to_string(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

/// The files and folders mosquitto.conf names: (option, path).
fn mosquitto_conf_paths(conf: &str) -> Vec<(String, String)> {
    let options = [
        "password_file",
        "acl_file",
        "cafile",
        "certfile",
        "keyfile",
        "persistence_location",
    ];
    conf.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| options.contains(key))
        .map(|(key, value)| (key.to_string(), value.trim().to_string()))
        .collect()
}

/// The eclipse-mosquitto image (docker/2.0 in github.com/eclipse/mosquitto): mosquitto reads
/// `-c /mosquitto/config/mosquitto.conf`, and its volume for persistence is /mosquitto/data,
/// which the image creates for its `mosquitto` user (uid and gid 1883) and its entrypoint
/// chowns to that user at every start. No other path is the mosquitto user's.
const IMAGE_CONFIG: &str = "/mosquitto/config/mosquitto.conf";
const IMAGE_DATA: &str = "/mosquitto/data";
const IMAGE_UID: u32 = 1883;

#[test]
fn compose_mounts_for_mosquitto_are_the_paths_its_configuration_names() {
    let conf = read(&deploy().join("mosquitto/mosquitto.conf"));
    let named = mosquitto_conf_paths(&conf);
    let mounts = mosquitto_mounts();
    assert_eq!(named.len(), 6, "{named:?}");
    // Every path the configuration names is a mount or lies in a mounted folder.
    for (option, path) in &named {
        let path = path.trim_end_matches('/');
        assert!(
            mounts
                .iter()
                .any(|(_, m, _)| path == m || path.starts_with(&format!("{m}/"))),
            "{option} {path} is not mounted by compose.yaml: {mounts:?}"
        );
    }
    // Every mount is the image's configuration file or a path the configuration names.
    for (source, mount, read_only) in &mounts {
        let used = mount == IMAGE_CONFIG
            || named.iter().any(|(_, p)| {
                let p = p.trim_end_matches('/');
                p == mount || p.starts_with(&format!("{mount}/"))
            });
        assert!(
            used,
            "{source}:{mount} is named by nothing in mosquitto.conf"
        );
        if mount == IMAGE_CONFIG {
            assert!(*read_only && source == "./mosquitto/mosquitto.conf");
        }
    }
    // Persistence goes to the image's data volume, a named volume the broker's user owns, and
    // not to a folder of the image (which a fresh volume would make root's).
    let persistence = named
        .iter()
        .find(|(o, _)| o == "persistence_location")
        .map(|(_, p)| p.trim_end_matches('/'))
        .expect("persistence_location");
    assert_eq!(persistence, IMAGE_DATA);
    let (source, _, read_only) = mounts
        .iter()
        .find(|(_, m, _)| m == IMAGE_DATA)
        .expect("data volume");
    assert!(!source.starts_with('.') && !source.starts_with('/') && !read_only);
    let compose = yaml(&deploy().join("compose.yaml"));
    assert!(
        compose["volumes"].get(source.as_str()).is_some(),
        "{source} is not a named volume"
    );
    assert!(conf.lines().any(|l| l == "persistence true"));
}

/// What deploy/README.md tells the operator to do to the files the broker reads, as
/// (path under deploy/, owner's uid and gid, mode); the test checks the README says so.
const MOSQUITTO_FILE_MODES: [(&str, u32, u32, &str); 3] = [
    (
        "mosquitto/passwd",
        IMAGE_UID,
        0o600,
        "sudo install -m 0600 -o 1883 -g 1883 /dev/null mosquitto/passwd",
    ),
    ("mosquitto/acl", IMAGE_UID, 0o640, "sudo chown 1883:1883 mosquitto/acl\n   sudo chmod 0640 mosquitto/acl"),
    ("mosquitto/certs/server.key", IMAGE_UID, 0o600, "sudo chown 1883:1883 mosquitto/certs/server.key\n   sudo chmod 0600 mosquitto/certs/server.key"),
];

/// A mosquitto run as the image runs it: as `uid`, from a folder laid out like the
/// container's file system; stopped with SIGTERM (as `docker compose stop` does) on drop.
struct Broker {
    child: Option<std::process::Child>,
    port: u16,
    log: PathBuf,
}

impl Broker {
    fn start(conf: &Path, uid: u32, port: u16, log: PathBuf) -> Result<Broker, String> {
        let mosquitto = require_binary("mosquitto", "mosquitto mosquitto-clients");
        // Started again on the port it had: the previous one must have let go of it.
        wait_port_free(port);
        let file = std::fs::File::create(&log).expect("log");
        let uid_s = uid.to_string();
        let mut command = Command::new(require_binary("setpriv", "util-linux"));
        command
            .args([
                &format!("--reuid={uid_s}"),
                &format!("--regid={uid_s}"),
                "--clear-groups",
            ])
            .arg(&mosquitto)
            .arg("-c")
            .arg(conf)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let mut child = command.spawn().expect("mosquitto");
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(format!("{status}: {}", read(&log)));
            }
            // Listening, itself (setpriv runs mosquitto in its own process).
            if listens_on(child.id(), port) {
                return Ok(Broker {
                    child: Some(child),
                    port,
                    log,
                });
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen: {}",
                read(&log)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn owner_and_mode(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.mode() & 0o7777)
}

#[test]
fn mosquitto_runs_as_the_image_runs_it_and_keeps_retained_and_queued_messages_across_a_restart() {
    let readme = read(&deploy().join("README.md"));
    for (_, _, _, said) in MOSQUITTO_FILE_MODES {
        assert!(
            readme.contains(said),
            "deploy/README.md does not say:\n{said}"
        );
    }
    // The image's user where the test can become it (as root); else the test's own user,
    // which then stands for it.
    let root = tempfile::TempDir::new().expect("dir");
    let probe = root.path().join("probe");
    std::fs::write(&probe, "").expect("probe");
    let me = owner_and_mode(&probe).0;
    let uid = if me == 0 { IMAGE_UID } else { me };
    if me != 0 {
        eprintln!("not root: mosquitto runs as uid {me} instead of the image's {IMAGE_UID}");
    }
    chmod(root.path(), 0o755);
    // The container's file system under `root`, mounted as compose.yaml mounts it.
    let inside = |path: &str| root.path().join(path.trim_start_matches('/'));
    let certs = tempfile::TempDir::new().expect("certs");
    make_certificates(certs.path());
    let port = free_port();
    let conf = read(&deploy().join("mosquitto/mosquitto.conf"));
    let prefix = format!("{}/", inside("/mosquitto").display());
    let local_conf = conf
        .replace("/mosquitto/", &prefix)
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"));
    let mut passwd = None;
    for (source, mount, _) in mosquitto_mounts() {
        let target = inside(&mount);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        for dir in target
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(root.path()))
        {
            chmod(dir, 0o755);
        }
        match source.as_str() {
            "./mosquitto/mosquitto.conf" => std::fs::write(&target, &local_conf).expect("conf"),
            "./mosquitto/acl" => {
                std::fs::copy(deploy().join("mosquitto/acl"), &target).expect("acl");
            }
            "./mosquitto/certs" => {
                std::fs::create_dir(&target).expect("certs");
                chmod(&target, 0o755);
                for (from, to) in [
                    ("ca.pem", "ca.crt"),
                    ("server.pem", "server.crt"),
                    ("server.key", "server.key"),
                ] {
                    std::fs::copy(certs.path().join(from), target.join(to)).expect("cert");
                    chmod(&target.join(to), 0o644);
                }
            }
            "./mosquitto/passwd" => {
                std::fs::write(&target, "").expect("passwd");
                passwd = Some(target);
            }
            // The named volume: Docker fills a new one from the image's folder at its mount
            // point, which for /mosquitto/data the image makes its mosquitto user's (as the
            // entrypoint does again at every start); a path the image lacks starts root's.
            "mosquitto-data" => {
                std::fs::create_dir(&target).expect("data");
                if mount == IMAGE_DATA {
                    chown(&target, uid);
                }
                chmod(&target, 0o755);
            }
            other => panic!("the test does not know the mount {other}: add it"),
        }
    }
    let passwd = passwd.expect("a password file is mounted");
    let conf_path = inside(IMAGE_CONFIG);
    let log = root.path().join("mosquitto.log");

    // The owners and modes deploy/README.md gives (the password file made empty that way).
    for (path, owner, mode, _) in MOSQUITTO_FILE_MODES {
        let path = match path {
            "mosquitto/passwd" => passwd.clone(),
            "mosquitto/acl" => inside("/mosquitto/config/acl"),
            "mosquitto/certs/server.key" => inside("/mosquitto/config/certs/server.key"),
            other => panic!("{other}"),
        };
        chown(&path, if owner == IMAGE_UID { uid } else { owner });
        chmod(&path, mode);
    }
    // Users added by mosquitto_passwd as root (`docker compose run`): it rewrites the file in
    // place, which keeps its owner and mode.
    for (user, password) in [("parkguard", "gw-secret"), ("smoke-1", "dev-secret")] {
        let out = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwd)
            .args([user, password])
            .output()
            .expect("mosquitto_passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(owner_and_mode(&passwd), (uid, 0o600));

    // The same file root's, as `touch && chmod 0600` leaves it: the broker's user cannot read
    // it, and the broker does not start. This is what the owners are for.
    if uid != me {
        chown(&passwd, 0);
        let refused = Broker::start(&conf_path, uid, port, root.path().join("refused.log"));
        let err = refused
            .err()
            .expect("started with a password file it cannot read");
        assert!(err.contains("pwfile"), "{err}");
        chown(&passwd, uid);
    }

    let ca = inside("/mosquitto/config/certs/ca.crt")
        .display()
        .to_string();
    let client = |program: &str, broker: &Broker, user: &str, password: &str, args: &[&str]| {
        let out = Command::new(program)
            .args([
                "-h",
                "localhost",
                "-p",
                &broker.port.to_string(),
                "--cafile",
                &ca,
            ])
            .args(["-u", user, "-P", password])
            .args(args)
            .output()
            .expect(program);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let mut broker = Broker::start(&conf_path, uid, port, log.clone()).expect("mosquitto");
    // parkguard's persistent session (clean session off), subscribed at QoS 1, then away.
    let (ok, _, err) = client(
        "mosquitto_sub",
        &broker,
        "parkguard",
        "gw-secret",
        &[
            "-i",
            "parkguard-park-gw1",
            "-c",
            "-q",
            "1",
            "-t",
            "park/#",
            "-E",
        ],
    );
    assert!(
        ok,
        "parkguard's login from the password file: {err}\n{}",
        read(&broker.log)
    );
    let topic = "park/p/smoke/smoke-1/up";
    let (ok, _, err) = client(
        "mosquitto_pub",
        &broker,
        "smoke-1",
        "dev-secret",
        &["-q", "1", "-r", "-t", topic, "-m", "retained-alarm"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = client(
        "mosquitto_pub",
        &broker,
        "smoke-1",
        "dev-secret",
        &["-q", "1", "-t", topic, "-m", "queued-alarm"],
    );
    assert!(ok, "{err}");
    // The broker stops as `docker compose stop` stops it and saves to the data volume.
    broker.stop();
    let db = inside(IMAGE_DATA).join("mosquitto.db");
    assert!(db.is_file(), "nothing persisted: {}", read(&log));
    assert_eq!(owner_and_mode(&db).0, uid);

    let broker = Broker::start(&conf_path, uid, port, root.path().join("restarted.log"))
        .expect("restarted mosquitto");
    // The session's queue survived: parkguard gets what arrived while it was away.
    let (_, queued, err) = client(
        "mosquitto_sub",
        &broker,
        "parkguard",
        "gw-secret",
        &[
            "-i",
            "parkguard-park-gw1",
            "-c",
            "-q",
            "1",
            "-t",
            "park/#",
            "-v",
            "-W",
            "3",
        ],
    );
    assert!(
        queued.contains(&format!("{topic} queued-alarm")),
        "queue lost: {queued}{err}\n{}",
        read(&broker.log)
    );
    // And so did the retained message, for a new subscriber.
    let (ok, retained, err) = client(
        "mosquitto_sub",
        &broker,
        "parkguard",
        "gw-secret",
        &["-t", topic, "-C", "1", "-W", "3"],
    );
    assert!(
        ok && retained.trim() == "retained-alarm",
        "retained message lost: {retained}{err}"
    );
    // A wrong password is still refused after the restart.
    let (ok, _, _) = client(
        "mosquitto_sub",
        &broker,
        "parkguard",
        "wrong",
        &["-t", topic, "-C", "1", "-W", "2"],
    );
    assert!(!ok);
    eprintln!(
        "mosquitto as uid {uid}: password file, ACL and key read; {} bytes persisted in the data volume and read back after a restart",
        std::fs::metadata(&db).expect("db").len()
    );
}

/// Whether Docker's .dockerignore `patterns` exclude `path` (relative to the context, with
/// `/`): each pattern is matched against the path and every folder above it (excluding a
/// folder excludes what is in it); `*` and `?` stay within one name, `**` spans any number of
/// folders; `!` re-includes; the last pattern that matches decides.
fn dockerignored(patterns: &[String], path: &str) -> bool {
    fn name_matches(pattern: &[u8], name: &[u8]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                name_matches(&pattern[1..], name)
                    || (!name.is_empty() && name_matches(pattern, &name[1..]))
            }
            (Some(b'?'), Some(_)) => name_matches(&pattern[1..], &name[1..]),
            (Some(p), Some(n)) if p == n => name_matches(&pattern[1..], &name[1..]),
            _ => false,
        }
    }
    fn matches(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                matches(&pattern[1..], path) || (!path.is_empty() && matches(pattern, &path[1..]))
            }
            (Some(p), Some(n)) => {
                name_matches(p.as_bytes(), n.as_bytes()) && matches(&pattern[1..], &path[1..])
            }
            _ => false,
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern.as_str()),
        };
        let pattern: Vec<&str> = pattern
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if (1..=parts.len()).any(|n| matches(&pattern, &parts[..n])) {
            excluded = !negated;
        }
    }
    excluded
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn dockerignore_keeps_build_output_stores_and_secrets_out_and_the_sources_in() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let patterns: Vec<String> = read(&root.join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    // The matcher itself, on Docker's documented examples.
    let example = |p: &[&str], path| {
        dockerignored(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), path)
    };
    assert!(example(&["*.md", "!README.md"], "CHANGES.md"));
    assert!(!example(&["*.md", "!README.md"], "README.md"));
    assert!(
        !example(&["*.md"], "docs/a.md"),
        "without **/ a pattern is for the root"
    );
    assert!(example(&["**/*.go"], "a/b/c.go") && example(&["**/*.go"], "c.go"));
    assert!(example(&["temp?"], "temp1") && example(&["*/temp*"], "x/temporary/y"));

    for excluded in [
        "target",
        "target/release/parkguard",
        ".git",
        ".git/HEAD",
        "parkguard.db",
        "firmware-config/sites/parkguard.db-wal",
        "var/parkguard.db-shm",
        "tests/artifacts/screenshot.png",
        "parkguard-demo/site.toml",
        "deploy/.env",
        "deploy/mosquitto/passwd",
        "deploy/mosquitto/certs/server.key",
        "deploy/parkguard/certs/web.key",
        "tests/fixtures/client.key",
        "ca.pem",
    ] {
        assert!(
            dockerignored(&patterns, excluded),
            "{excluded} is sent to the build"
        );
    }
    // Every source the Dockerfile copies, and every file in it, reaches the build.
    let dockerfile = read(&deploy().join("Dockerfile"));
    let mut sources = Vec::new();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        sources.extend(parts[1..parts.len() - 1].iter().map(|s| s.to_string()));
    }
    assert!(sources.contains(&"src".to_string()) && sources.contains(&"Cargo.lock".to_string()));
    let mut files = Vec::new();
    for source in &sources {
        assert!(
            !dockerignored(&patterns, source),
            "COPY {source} is excluded"
        );
        let path = root.join(source);
        if path.is_dir() {
            files_under(&path, &mut files);
        } else {
            files.push(path);
        }
    }
    for file in files {
        let relative = file.strip_prefix(root).expect("in the repository");
        let relative = relative.to_str().expect("utf-8");
        assert!(
            !dockerignored(&patterns, relative),
            "{relative} is excluded but copied"
        );
    }
}

#[test]
fn the_image_runs_unprivileged_with_its_state_folder_its_own() {
    let text = read(&deploy().join("Dockerfile"));
    let runtime = text.split("\nFROM ").nth(2).expect("runtime stage");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let uid: u32 = uid.parse().expect("numeric uid");
    let gid: u32 = gid.parse().expect("numeric gid");
    assert!(uid != 0 && gid != 0);
    assert!(runtime.contains(&format!("groupadd --system --gid {gid} parkguard")));
    assert!(runtime.contains(&format!("useradd --system --uid {uid} --gid parkguard")));
    let volume = runtime
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME [\""))
        .and_then(|v| v.strip_suffix("\"]"))
        .expect("VOLUME");
    assert!(
        runtime.contains(&format!(
            "install -d -o parkguard -g parkguard -m 0750 {volume}"
        )),
        "the state folder {volume} is not the user's"
    );
    let workdir = runtime
        .lines()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("WORKDIR");
    assert_eq!(workdir, volume);
    // The stack's store is in that volume, and the README gives the key to that uid.
    let site = read(&deploy().join("parkguard/site.toml"));
    assert!(site.contains(&format!("store = \"{volume}/parkguard.db\"")));
    let compose = yaml(&deploy().join("compose.yaml"));
    let volumes = compose["services"]["parkguard"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(volumes.iter().any(|v| v
        .as_str()
        .is_some_and(|v| v.ends_with(&format!(":{volume}")))));
    let readme = read(&deploy().join("README.md"));
    assert!(readme.contains(&format!("sudo chown {uid}:{gid} parkguard/certs/web.key")));
}

/// The site file as deploy/README.md's systemd steps make it: the stack's, its secrets named
/// as credentials instead of environment variables.
const SYSTEMD_SECRETS: [(&str, &str); 2] = [
    (
        "{ env = \"PARKGUARD_MQTT_PASSWORD\" }",
        "{ credential = \"mqtt-password\" }",
    ),
    (
        "{ env = \"PARKGUARD_INFLUX_TOKEN\" }",
        "{ credential = \"influx-token\" }",
    ),
];

#[test]
fn the_site_file_under_systemd_reads_its_secrets_from_the_credentials_the_unit_loads() {
    let readme = read(&deploy().join("README.md"));
    let mut site_text = read(&deploy().join("parkguard/site.toml"));
    for (env, credential) in SYSTEMD_SECRETS {
        assert!(site_text.contains(env), "{env}");
        assert!(
            readme.contains(&format!("-e 's/{env}/{credential}/'")),
            "deploy/README.md does not turn {env} into {credential}"
        );
        site_text = site_text.replace(env, credential);
    }
    assert!(
        !site_text.contains("env = "),
        "a secret left in the environment"
    );
    // Each credential the site names is one the unit loads, from root's folder of them.
    let unit = read(&deploy().join("systemd/parkguard.service"));
    let loaded: BTreeSet<&str> = unit_value(&unit, "LoadCredential")
        .into_iter()
        .map(|l| l.split_once(':').expect("NAME:PATH").0)
        .collect();
    let named: BTreeSet<&str> = site_text
        .split("credential = \"")
        .skip(1)
        .map(|r| r.split('"').next().expect("name"))
        .collect();
    assert_eq!(
        loaded, named,
        "LoadCredential= lines vs the site's credentials"
    );

    let (dir, _) = site("");
    let site_path = dir.path().join("site.toml");
    std::fs::write(&site_path, &site_text).expect("site");
    std::fs::create_dir_all(dir.path().join("certs")).expect("certs");
    for file in ["ca.crt", "web.crt", "web.key"] {
        std::fs::write(dir.path().join("certs").join(file), "test").expect("cert");
    }
    let check = |credentials: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parkguard"));
        command
            .arg("check")
            .arg(&site_path)
            .env_remove("PARKGUARD_MQTT_PASSWORD")
            .env_remove("PARKGUARD_INFLUX_TOKEN")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = credentials {
            command.env("CREDENTIALS_DIRECTORY", dir);
        }
        command.output().expect("check")
    };
    // What systemd makes of the unit's LoadCredential= lines.
    let credentials = tempfile::TempDir::new().expect("credentials");
    for name in &loaded {
        std::fs::write(credentials.path().join(name), "secret\n").expect("credential");
    }
    let out = check(Some(credentials.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without them (the unit's lines removed) the check says what is missing.
    let out = check(None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("LoadCredential=mqtt-password"),
        "{said}"
    );
}
