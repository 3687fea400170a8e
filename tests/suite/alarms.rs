//! Alarms end to end with real mosquitto, influxd and the Modbus simulator: transitions land in
//! InfluxDB's `alarm` measurement at the times the rule set implies; a detector's CT-open bit is
//! a fault; a 12-loop monitor's loop states are a fault (CT open) and its own alarm (overload,
//! below the gateway's threshold); a silent device goes offline; a latched gas alarm is acknowledged and reset through
//! the library API; alarm state survives a restart without a second raise.

use crate::support;

use std::time::Duration;

use parkguard::config::Config;
use parkguard::decode::registers::Area;
use parkguard::pipeline::Gateway;
use parkguard::rules::alarm::{AlarmState, Command, Operator};
use parkguard::rules::engine::Target;
use parkguard::sim::modbus::SimulatedBus;
use serde_json::Value as Json;
use support::*;

/// The default rules with shorter delays (so the test takes seconds, not minutes), plus a
/// test rule T17: offline after 2 heartbeats of the test meter profile (1 s) and no grace.
fn site_text(mqtt_port: u16, influx_url: &str, modbus_port: u16) -> String {
    format!(
        r#"{header}[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"
[[devices]]
id = "m2"
location = "l"
profile = "fast_meter"
[[devices]]
id = "d1"
location = "l"
profile = "arcm_combo_detector"
[[devices]]
id = "g1"
location = "l"
profile = "gas_detector_lel"
[[devices]]
id = "r1"
location = "l"
profile = "acrel_aim_r100"

[[rule_overrides]]
rule = "R1"
on_delay_s = 2
off_delay_s = 3
[[rule_overrides]]
rule = "R11"
on_delay_s = 1
off_delay_s = 1
[[rule_overrides]]
rule = "R14c"
on_delay_s = 1

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-alarms-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
[[mqtt.subscriptions]]
topic = "park/{{park}}/fast/{{device}}/up"
profile = "fast_meter"

[[modbus]]
name = "bus"
transport = "tcp"
address = "127.0.0.1:{modbus_port}"
timeout_ms = 300
[[modbus.units]]
device = "d1"
unit_id = 1
[[modbus.units]]
device = "g1"
unit_id = 2
[[modbus.units]]
device = "r1"
unit_id = 3

[[influx]]
name = "i"
url = "{influx_url}"
api = "v1"
database = "pg"
batch_age_ms = 100
"#,
        header = site_header(
            "l",
            r#"rule_files = ["rules/default.toml", "rules/test.toml"]"#
        ),
    )
}

fn prepare(dir: &std::path::Path) {
    let profiles = dir.join("profiles");
    let meter = std::fs::read_to_string(profiles.join("adw300_json.toml")).expect("profile");
    std::fs::write(
        profiles.join("fast_meter.toml"),
        meter.replace("heartbeat_s = 60", "heartbeat_s = 1"),
    )
    .expect("fast_meter");
    std::fs::write(
        dir.join("rules/test.toml"),
        "[[rules]]\nid = \"T17\"\nname = \"Fast offline\"\nprofiles = [\"fast_meter\"]\n\
         condition = { type = \"silence\", intervals = 2, grace_s = 0 }\n\
         levels = [{ severity = \"medium\", kind = \"fault\" }]\n",
    )
    .expect("test rules");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// When the first message of a `hold` went out: between `before` (just before mosquitto_pub
/// was started, which takes a process spawn) and `after` (the broker acknowledged it).
#[derive(Clone, Copy)]
struct Sent {
    before: i64,
    after: i64,
}

/// Publishes `leakage` once a second for `seconds` (holding the value that long is the
/// subject: the rules' delays are measured against it); returns when the first one went out.
async fn hold(port: u16, leakage: f64, seconds: u32) -> Sent {
    let mut first = None;
    for _ in 0..seconds {
        let before = now_ms();
        mosquitto_pub(port, "park/p/meter/m1/up", &[meter(leakage).as_bytes()]);
        first.get_or_insert(Sent {
            before,
            after: now_ms(),
        });
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    first.expect("at least one message")
}

async fn alarm_rows(influx: &Server, filter: &str) -> Vec<serde_json::Map<String, Json>> {
    rows(
        &influxql(
            influx,
            "pg",
            &format!("SELECT * FROM alarm WHERE {filter} ORDER BY time"),
        )
        .await,
    )
}

fn time_ms(row: &serde_json::Map<String, Json>) -> i64 {
    // `influxql` asks for epoch nanoseconds.
    row["time"].as_i64().expect("epoch time") / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_reach_influxdb_at_the_times_the_rules_imply_and_survive_a_restart() {
    let broker = mosquitto();
    let influx = influxd();
    create_database(&influx, "pg").await;
    let bus = SimulatedBus::new([1, 2, 3]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let modbus_port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.clone().serve_tcp(listener));
    let (dir, path) = site(&site_text(broker.port, &influx.url(), modbus_port));
    prepare(dir.path());
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 2).await;

    // 1. Residual current 100 -> 250 -> 350 -> 600 -> 100 mA, each held 4 s (R1 with on-delay
    //    2 s, off-delay 3 s, deadband 30 mA).
    hold(broker.port, 100.0, 2).await;
    let t250 = hold(broker.port, 250.0, 4).await;
    let t350 = hold(broker.port, 350.0, 4).await;
    let t600 = hold(broker.port, 600.0, 4).await;
    let t100 = hold(broker.port, 100.0, 6).await;
    eventually(
        "four R1 transitions in InfluxDB",
        Duration::from_secs(10),
        || async { alarm_rows(&influx, "rule = 'R1'").await.len() >= 4 },
    )
    .await;
    let r1 = alarm_rows(&influx, "rule = 'R1'").await;
    let got: Vec<(String, String, String)> = r1
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_string(),
                r["severity"].as_str().unwrap_or_default().to_string(),
                r["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = |a: &str, s: &str, k: &str| (a.to_string(), s.to_string(), k.to_string());
    assert_eq!(
        got,
        vec![
            expect("raised", "low", "pre_alarm"),
            expect("escalated", "high", "alarm"),
            expect("escalated", "critical", "alarm"),
            expect("cleared", "critical", "alarm"),
        ],
        "{r1:#?}"
    );
    // Each transition comes its delay after the value that caused it was published (plus
    // delivery, under half a second here), measured from both sides of the publish: from
    // before mosquitto_pub's process was spawned and from the broker's acknowledgement.
    for (row, published, delay) in [
        (&r1[0], t250, 2000),
        (&r1[1], t350, 2000),
        (&r1[2], t600, 2000),
        (&r1[3], t100, 3000),
    ] {
        let at = time_ms(row);
        assert!(
            at >= published.before + delay - 100 && at <= published.after + delay + 700,
            "{} at {} ms after the publish began ({} ms after it was acknowledged), not its \
             rule's delay {delay} ms: {row:?}",
            row["action"],
            at - published.before,
            at - published.after,
        );
    }
    assert_eq!(r1[2]["threshold"].as_f64(), Some(500.0));
    assert_eq!(r1[0]["device"], "m1");
    assert_eq!(r1[0]["park"], "p");

    // 2. The detector's CT-open bit (status bit 8): a fault, not an alarm.
    bus.unit(1)
        .expect("unit 1")
        .set_words(Area::Holding, 8, &[1 << 8]);
    // 3. Gas at 60 %LEL (CDAB float at 8): level 2, latched.
    bus.unit(2)
        .expect("unit 2")
        .set_words(Area::Holding, 8, &[0x0000, 0x4270]);
    // 3b. The 12-loop monitor: loop 1's CT open (state 10) and loop 3 over the monitor's own
    //     set-point (state 11) while its current reads 0 mA.
    bus.unit(3)
        .expect("unit 3")
        .set_words(Area::Holding, 0x000B, &[0b11_00_10]);
    // 4. The fast meter reports once and goes silent: offline after 2 x 1 s.
    mosquitto_pub(broker.port, "park/p/fast/m2/up", &[meter(10.0).as_bytes()]);
    eventually(
        "fault, gas and offline alarms",
        Duration::from_secs(20),
        || async {
            let rows = alarm_rows(&influx, "rule = 'R14' OR rule = 'R11' OR rule = 'T17'").await;
            ["R14", "R11"]
                .iter()
                .all(|rule| rows.iter().any(|r| r["rule"] == *rule))
                && rows.iter().any(|r| r["value_text"] == "silent")
        },
    )
    .await;
    let ct = alarm_rows(&influx, "rule = 'R14'").await;
    assert_eq!(ct[0]["kind"], "fault");
    assert_eq!(ct[0]["source"], "ct_open");
    eventually(
        "the monitor's loop fault and its own alarm",
        Duration::from_secs(20),
        || async {
            let rows = alarm_rows(&influx, "device = 'r1'").await;
            rows.iter().any(|r| r["rule"] == "R14c") && rows.iter().any(|r| r["rule"] == "R1")
        },
    )
    .await;
    let loops = alarm_rows(&influx, "device = 'r1'").await;
    let summary: Vec<(String, String, String, String)> = loops
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (text("rule"), text("source"), text("kind"), text("severity"))
        })
        .collect();
    let row = |rule: &str, source: &str, kind: &str, severity: &str| {
        (rule.into(), source.into(), kind.into(), severity.into())
    };
    assert!(
        summary.contains(&row("R14c", "loop1_state", "fault", "medium")),
        "{summary:?}"
    );
    assert!(
        summary.contains(&row("R1", "leak_3", "alarm", "high")),
        "{summary:?}"
    );
    assert!(
        !summary
            .iter()
            .any(|r| r.0 == "R14c" && r.1 == "loop3_state"),
        "overload is an alarm, not a fault: {summary:?}"
    );
    // Never seen since start: offline 2 s after start; it reports, the fault clears; then it
    // falls silent and is offline again 2 s after its last message.
    let offline: Vec<(String, String)> = alarm_rows(&influx, "rule = 'T17'")
        .await
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().into(),
                r["value_text"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let pair = |a: &str, v: &str| (a.to_string(), v.to_string());
    assert_eq!(
        offline,
        vec![
            pair("raised", "never_seen"),
            pair("cleared", "seen"),
            pair("raised", "silent")
        ]
    );

    let gas = "R11/g1/lel".to_string();
    let wang = Operator {
        name: "wang".into(),
        comment: Some("ventilated, valve closed".into()),
    };
    eventually("gas alarm critical", Duration::from_secs(10), || async {
        gateway
            .rules
            .alarm(&gas)
            .await
            .is_some_and(|a| a.severity == Some(parkguard::config::Severity::Critical))
    })
    .await;
    gateway
        .rules
        .command(
            Target::Alarm(gas.clone()),
            Command::ConfirmFire,
            wang.clone(),
        )
        .await
        .expect("confirm the fire");
    let refused = gateway
        .rules
        .command(Target::Alarm(gas.clone()), Command::Reset, wang.clone())
        .await;
    assert!(
        refused.is_err(),
        "reset while the gas is still there: {refused:?}"
    );
    gateway
        .rules
        .command(
            Target::Alarm(gas.clone()),
            Command::Acknowledge,
            wang.clone(),
        )
        .await
        .expect("acknowledge");
    bus.unit(2)
        .expect("unit 2")
        .set_words(Area::Holding, 8, &[0, 0]);
    eventually(
        "gas condition gone, latch holds",
        Duration::from_secs(10),
        || async {
            let a = gateway.rules.alarm(&gas).await;
            a.is_some_and(|a| {
                a.state == AlarmState::Acknowledged
                    && a.latched
                    && a.value == Some(parkguard::model::alarm::Observed::Number(0.0))
            })
        },
    )
    .await;
    // Refused until the off-delay has passed, then accepted.
    eventually(
        "reset accepted once the gas is gone",
        Duration::from_secs(10),
        || async {
            gateway
                .rules
                .command(Target::Alarm(gas.clone()), Command::Reset, wang.clone())
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(
        gateway.rules.alarm(&gas).await.map(|a| a.state),
        Some(AlarmState::Normal)
    );
    eventually(
        "reset in InfluxDB with operator",
        Duration::from_secs(10),
        || async {
            alarm_rows(&influx, "rule = 'R11' AND action = 'reset'")
                .await
                .first()
                .is_some_and(|r| {
                    r["operator"] == "wang" && r["comment"] == "ventilated, valve closed"
                })
        },
    )
    .await;

    // 5. Restart with an active, unacknowledged alarm.
    hold(broker.port, 350.0, 4).await;
    eventually("R1 raised again", Duration::from_secs(10), || async {
        alarm_rows(
            &influx,
            "rule = 'R1' AND device = 'm1' AND action = 'raised'",
        )
        .await
        .len()
            == 2
    })
    .await;
    gateway.shutdown().await;
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("restart");
    // The session is persistent: the broker kept the subscriptions, so there is no SUBACK to
    // wait for, only the connection.
    let mqtt = gateway.metrics.mqtt("park");
    eventually("reconnected", Duration::from_secs(20), || {
        let mqtt = std::sync::Arc::clone(&mqtt);
        async move { mqtt.connected.load(std::sync::atomic::Ordering::Relaxed) }
    })
    .await;
    let key = "R1/m1/leakage";
    let restored = gateway.rules.alarm(key).await.expect("alarm");
    assert_eq!(
        restored.state,
        AlarmState::Unacknowledged,
        "still active after the restart"
    );
    hold(broker.port, 350.0, 4).await;
    assert_eq!(
        alarm_rows(
            &influx,
            "rule = 'R1' AND device = 'm1' AND action = 'raised'"
        )
        .await
        .len(),
        2,
        "not raised a second time"
    );
    hold(broker.port, 100.0, 5).await;
    eventually(
        "cleared once after the restart",
        Duration::from_secs(10),
        || async {
            alarm_rows(
                &influx,
                "rule = 'R1' AND device = 'm1' AND action = 'cleared'",
            )
            .await
            .len()
                == 2
        },
    )
    .await;
    assert_eq!(
        gateway.rules.alarm(key).await.map(|a| a.state),
        Some(AlarmState::ReturnedUnacknowledged)
    );
    gateway.shutdown().await;

    // The journal holds every transition and command and verifies.
    let store = parkguard::store::Store::open(&dir.path().join("parkguard.db")).expect("store");
    let verification = store.verify_journal().expect("verify");
    assert_eq!(verification.problem, None);
    assert!(verification.entries >= 10, "{verification:?}");
    let commands = store.journal(Some("R11/g1"), 100).expect("journal");
    assert!(commands
        .iter()
        .any(|e| e.action == "acknowledged" && e.operator.as_deref() == Some("wang")));
}
