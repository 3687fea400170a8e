//! The files under deploy/ that this machine can check: the systemd unit (systemd-analyze
//! verify and its offline security score), mosquitto's configuration run in a real mosquitto
//! (TLS and passwords: anonymous refused, ACLs hold), the compose file and Grafana provisioning
//! parsed (every mounted file exists, the datasources the dashboards use are provisioned), the
//! Dockerfile's stages and sources, the dashboards' InfluxQL queries run against a real influxd
//! holding what parkguard writes, the Flux variant's structure, and the stack's site file
//! validated. (No container engine runs here, so the image and the stack are not started.)

mod support;

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
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "parkguard"),
        ("Restart", "on-failure"),
        ("User", "parkguard"),
        (
            "ExecReload",
            "/usr/local/bin/parkguard reload -c /etc/parkguard/site.toml",
        ),
    ] {
        assert_eq!(unit_value(&unit, key), [value], "{key}");
    }
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
            .replace("/etc/mosquitto/passwd", &passwd.display().to_string())
            .replace("/etc/mosquitto/acl", &acl.display().to_string())
            .replace(
                "/etc/mosquitto/certs/ca.crt",
                &c.join("ca.pem").display().to_string(),
            )
            .replace(
                "/etc/mosquitto/certs/server.crt",
                &c.join("server.pem").display().to_string(),
            )
            .replace(
                "/etc/mosquitto/certs/server.key",
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
    let sub = Command::new("mosquitto_sub")
        .args(tls)
        .args([
            "-u",
            "parkguard",
            "-P",
            "gw-secret",
            "-t",
            "park/#",
            "-v",
            "-W",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(std::time::Duration::from_millis(700));
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
    let out = sub.wait_with_output().expect("sub output");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("park/p/smoke/smoke-1/up"), "{seen}");
    assert!(
        !seen.contains("smoke-2"),
        "the ACL let a device publish as another: {seen}"
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
    // Files the operator creates (see the compose file's header) are not in the repository.
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
