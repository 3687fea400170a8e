//! Operating the daemon as a program: `parkguard status` over the control socket (connections,
//! devices, active alarms); `parkguard reload` refusing an invalid site file with its errors
//! while the daemon keeps running, then applying a valid one (a new device, a rule set without
//! the smoke rule): alarm states survive and the removed rule's alarm is retired with a journal
//! entry; SIGHUP reloads too; JSON log lines; SIGTERM stops it with exit code 0.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn parkguard_cmd(args: &[&str], site: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(args)
        .arg("-c")
        .arg(site)
        .output()
        .expect("run parkguard")
}

fn status(site: &Path) -> Option<Value> {
    let out = parkguard_cmd(&["status", "--json"], site);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
}

fn wait_status(site: &Path, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = status(site) {
            if ready(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            status(site)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn site_text(mqtt_port: u16, rule_file: &str, devices: &[&str]) -> String {
    let mut text = format!(
        "{}[[devices]]\nid = \"smoke-1\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n",
        site_header("l", &format!("rule_files = [\"{rule_file}\"]"))
    );
    for d in devices {
        text.push_str(&format!(
            "[[devices]]\nid = \"{d}\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[rule_overrides]]
rule = "R1"
on_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-ops-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
"#
    ));
    text
}

fn keys(s: &Value) -> Vec<String> {
    s["alarms"]["unacknowledged_critical"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

#[test]
fn status_reload_and_sighup_keep_alarms_and_retire_removed_rules() {
    let mosquitto = mosquitto();
    let (dir, site) = support::site(&site_text(mosquitto.port, "rules/default.toml", &["m1"]));
    // A rule set without the smoke rule, for the reload.
    let rules = std::fs::read_to_string(dir.path().join("rules/default.toml")).expect("rules");
    let start = rules.find("[[rules]]\nid = \"R13\"").expect("R13");
    let end = start + 9 + rules[start + 9..].find("[[rules]]").expect("next rule");
    std::fs::write(
        dir.path().join("rules/no-smoke.toml"),
        format!("{}{}", &rules[..start], &rules[end..]),
    )
    .expect("write rules");

    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["--log-json", "run", "-c"])
        .arg(&site)
        .env("RUST_LOG", "info,rumqttc=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon");

    let s = wait_status(&site, "the MQTT connection", |s| {
        s["mqtt"][0]["connected"] == true
    });
    assert_eq!(s["devices"]["configured"], 2);
    assert_eq!(s["reloads"], 0);
    // Subscriptions are made right after the connection: wait for the broker's confirmation.
    let log_path = dir.path().join("daemon.log");
    wait_until(
        "the daemon's MQTT subscriptions confirmed",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("MQTT subscriptions confirmed"))
        },
    );
    mosquitto_pub(
        mosquitto.port,
        "park/p/meter/m1/up",
        &[meter(650.0).as_bytes()],
    );
    let smoke = format!(r#"{{"dev":"smoke-1","ts":{},"event":"alarm"}}"#, now_s());
    mosquitto_pub(
        mosquitto.port,
        "park/p/smoke/smoke-1/up",
        &[smoke.as_bytes()],
    );
    let s = wait_status(&site, "both critical alarms", |s| keys(s).len() == 2);
    let before = keys(&s);
    assert!(before.iter().any(|k| k.starts_with("R1/m1")), "{before:?}");
    assert!(
        before.iter().any(|k| k.starts_with("R13/smoke-1")),
        "{before:?}"
    );
    // The human-readable form.
    let text = parkguard_cmd(&["status"], &site);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("mqtt park: connected"), "{text}");
    assert!(
        text.contains("CRITICAL unacknowledged: R13/smoke-1"),
        "{text}"
    );

    // An invalid file is refused with its errors; the daemon keeps running as it was.
    let good = std::fs::read_to_string(&site).expect("site");
    std::fs::write(&site, format!("{good}\n[[devices]]\nid = 5\n")).expect("break site");
    let out = parkguard_cmd(&["reload"], &site);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("site.toml:38:6: devices[2].id: invalid type"),
        "the error is located: {stderr}"
    );
    assert!(stderr.contains("reload refused"), "{stderr}");
    let s = wait_status(&site, "the unchanged daemon", |s| s["reloads"] == 0);
    assert_eq!(keys(&s), before);

    // A valid file: a new device and a rule set without the smoke rule.
    std::fs::write(
        &site,
        site_text(mosquitto.port, "rules/no-smoke.toml", &["m1", "m2"]),
    )
    .expect("site");
    let out = parkguard_cmd(&["reload"], &site);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = wait_status(&site, "the reloaded daemon", |s| {
        s["reloads"] == 1 && s["mqtt"][0]["connected"] == true
    });
    assert_eq!(s["devices"]["configured"], 3);
    let after = keys(&s);
    assert_eq!(
        after,
        before
            .iter()
            .filter(|k| k.starts_with("R1/"))
            .cloned()
            .collect::<Vec<_>>(),
        "the R1 alarm survives, the smoke rule's is gone"
    );
    let journal = parkguard_cmd(&["journal", "show", "--search", "R13"], &site);
    let journal = String::from_utf8_lossy(&journal.stdout);
    assert!(journal.contains("retired"), "{journal}");
    // Times read as local dates, not epoch milliseconds: `  12 2026-12-02 14:03:07 +08:00 ...`.
    for line in journal.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let date = fields.get(1).copied().unwrap_or_default();
        assert!(
            date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
            "a date in {line}"
        );
        assert_eq!(fields.get(3).copied(), Some("+08:00"), "{line}");
    }

    // SIGHUP reloads as well.
    std::fs::write(
        &site,
        site_text(mosquitto.port, "rules/no-smoke.toml", &["m1", "m2", "m3"]),
    )
    .expect("site");
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let s = wait_status(&site, "the SIGHUP reload", |s| s["reloads"] == 2);
    assert_eq!(s["devices"]["configured"], 4);
    assert_eq!(keys(&s), after);

    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = daemon.try_wait().expect("wait") {
            break code;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(code.success(), "{code:?}");
    assert!(!Path::new(&format!(
        "{}.sock",
        dir.path().join("parkguard.db").display()
    ))
    .exists());

    // Every log line is a JSON object with a level and a message.
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).expect("log");
    let mut lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(log.contains("Reloaded."), "{log}");
    assert!(lines > 5);
}
