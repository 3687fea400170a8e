//! End to end with real servers: readings published by mosquitto_pub arrive in InfluxDB 1.x
//! (checked with InfluxQL) and, through the v2 API, in VictoriaMetrics (checked through its
//! export API); bad input is counted and leaves the messages around it intact.

use crate::support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parkguard::config::devices::DeviceDirectory;
use parkguard::config::Config;
use parkguard::decode::payload::DecodeErrorKind;
use parkguard::ingest::mqtt::MqttIngest;
use parkguard::metrics::Metrics;
use parkguard::pipeline::Gateway;
use support::*;

const SMOKE: &str = "869975031234567";

fn site_toml(mqtt_port: u16, sink: &str) -> String {
    format!(
        r#"
[gateway]
name = "test-gw"
profiles_dir = "profiles"
shutdown_grace_s = 5
# Telemetry only: the smoke alarm in these messages would add alarm points to the counts.
rule_files = []

[[parks]]
id = "xinghe"

[[enterprises]]
id = "hongda"
park = "xinghe"

[[locations]]
id = "二楼车间"
enterprise = "hongda"

[[locations]]
id = "3号楼配电箱"
enterprise = "hongda"

[[devices]]
id = "{SMOKE}"
location = "二楼车间"
profile = "nb_smoke"

[[devices]]
id = "adw300-0001"
location = "3号楼配电箱"
profile = "adw300_json"

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-test-{mqtt_port}"

[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
max_payload_bytes = 2048

[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
unknown_devices = "reject"

# A shared topic: the device is named in the payload only.
[[mqtt.subscriptions]]
topic = "park/{{park}}/smokebus/up"
profile = "nb_smoke"

{sink}
"#
    )
}

fn meter_payload(ts_ms: i64) -> String {
    format!(
        r#"{{"ts":{ts_ms},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":120,"t":[35.5,36.0,34.25,41.0]}}"#
    )
}

async fn start(site: &str) -> (tempfile::TempDir, Gateway) {
    let (dir, path) = support::site(site);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("gateway starts");
    wait_subscribed(&gateway, "park", 2).await;
    (dir, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_readings_reach_influxdb_v1_and_bad_input_is_counted_not_fatal() {
    let broker = mosquitto();
    let influx = influxd();
    create_database(&influx, "pg").await;
    let sink = format!(
        "[[influx]]\nname = \"influx1\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\n",
        influx.url()
    );
    let (_dir, gateway) = start(&site_toml(broker.port, &sink)).await;

    let t0 = now_s();
    let smoke_topic = format!("park/xinghe/smoke/{SMOKE}/up");
    let good = |ts: i64, pct: f64| {
        format!(
            r#"{{"dev":"{SMOKE}","ts":{ts},"seq":{ts},"event":"heartbeat","smoke_pct":{pct},"battery_pct":78}}"#
        )
    };
    let huge = format!(
        r#"{{"dev":"{SMOKE}","ts":{t0},"event":"{}"}}"#,
        "x".repeat(4096)
    );
    let wrong_type = format!(
        r#"{{"dev":"{SMOKE}","ts":{},"event":"alarm","smoke_pct":"high"}}"#,
        t0 - 2
    );
    let nan = format!(r#"{{"dev":"{SMOKE}","ts":{t0},"event":"alarm","smoke_pct":NaN}}"#);
    let messages: Vec<String> = vec![
        good(t0 - 3, 1.5),
        "{this is not json".into(),
        wrong_type,
        nan,
        huge,
        good(t0 - 1, 2.5),
    ];
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_bytes()).collect();
    mosquitto_pub(broker.port, &smoke_topic, &refs);
    let meter = meter_payload(t0 * 1000 + 250);
    mosquitto_pub(
        broker.port,
        "park/xinghe/meter/adw300-0001/up",
        &[meter.as_bytes()],
    );
    mosquitto_pub(
        broker.port,
        "park/xinghe/meter/undeclared-9/up",
        &[meter.as_bytes()],
    );

    eventually(
        "smoke and meter rows in InfluxDB",
        Duration::from_secs(20),
        || async {
            let smoke = rows(&influxql(&influx, "pg", "SELECT * FROM smoke").await).len();
            let meter = rows(&influxql(&influx, "pg", "SELECT * FROM electrical").await).len();
            smoke >= 3 && meter >= 1
        },
    )
    .await;

    let smoke = rows(&influxql(&influx, "pg", "SELECT * FROM smoke ORDER BY time").await);
    assert_eq!(
        smoke.len(),
        3,
        "two good messages and the one with a mistyped field: {smoke:#?}"
    );
    for row in &smoke {
        assert_eq!(row["device"], SMOKE);
        assert_eq!(row["park"], "xinghe");
        assert_eq!(row["enterprise"], "hongda");
        assert_eq!(row["location"], "二楼车间");
        assert_eq!(row["kind"], "smoke");
        assert_eq!(row["profile"], "nb_smoke");
    }
    let ns = |s: i64| serde_json::json!(s * 1_000_000_000);
    assert_eq!(smoke[0]["time"], ns(t0 - 3));
    assert_eq!(smoke[0]["smoke_pct"], 1.5);
    assert_eq!(smoke[0]["battery_pct"], 78);
    assert_eq!(smoke[0]["event"], "heartbeat");
    assert_eq!(smoke[1]["time"], ns(t0 - 2));
    assert_eq!(
        smoke[1]["event"], "alarm",
        "the well-typed fields of a message are kept"
    );
    assert!(
        smoke[1]["smoke_pct"].is_null(),
        "the mistyped field is not written"
    );
    assert_eq!(smoke[2]["time"], ns(t0 - 1));
    assert_eq!(smoke[2]["smoke_pct"], 2.5);

    let meter = rows(&influxql(&influx, "pg", "SELECT * FROM electrical").await);
    assert_eq!(
        meter.len(),
        1,
        "the undeclared meter is rejected: {meter:#?}"
    );
    let m = &meter[0];
    assert_eq!(m["location"], "3号楼配电箱");
    assert_eq!(m["device"], "adw300-0001");
    assert_eq!(
        m["time"],
        serde_json::json!(t0 * 1_000_000_000 + 250_000_000)
    );
    for (field, value) in [
        ("ua", serde_json::json!(230.1)),
        ("ic", serde_json::json!(13.25)),
        ("p_total", serde_json::json!(8350)),
        ("leakage", serde_json::json!(120)),
        ("t3", serde_json::json!(34.25)),
        ("t4", serde_json::json!(41.0)),
    ] {
        // InfluxDB's JSON prints the float 41.0 as 41; types are checked with SHOW FIELD KEYS.
        assert_eq!(m[field].as_f64(), value.as_f64(), "{field}");
    }
    let fields = influxql(&influx, "pg", "SHOW FIELD KEYS FROM electrical").await;
    let types: Vec<(String, String)> = rows(&fields)
        .iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap_or("").into(),
                r["fieldType"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        types.contains(&("p_total".into(), "integer".into())),
        "{types:?}"
    );
    assert!(types.contains(&("ua".into(), "float".into())), "{types:?}");
    assert_eq!(types.len(), 12, "{types:?}");

    let metrics = &gateway.metrics;
    assert_eq!(
        metrics.decode_errors(DecodeErrorKind::BadJson),
        2,
        "not-JSON and NaN"
    );
    assert_eq!(metrics.decode_errors(DecodeErrorKind::WrongType), 1);
    assert_eq!(metrics.decode_errors(DecodeErrorKind::TooLarge), 1);
    assert_eq!(metrics.decode_errors(DecodeErrorKind::UnknownDevice), 1);
    assert_eq!(metrics.messages_received.load(Ordering::Relaxed), 8);

    let metrics = Arc::clone(&gateway.metrics);
    let report = gateway.shutdown().await;
    assert_eq!(report.points_left(), 0);
    assert_eq!(report.sinks.len(), 1);
    assert_eq!(report.sinks[0].name, "influx1");
    let written = metrics
        .sink("influx1")
        .points_written
        .load(Ordering::Relaxed);
    // Smoke: 4 fields from each good message, 1 from the mistyped one; meter: 12.
    assert_eq!(written, 4 + 1 + 4 + 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_write_api_delivers_to_victoria_metrics() {
    let broker = mosquitto();
    let vm = victoria_metrics();
    let sink = format!(
        "[[influx]]\nname = \"vm\"\nurl = \"{}\"\napi = \"v2\"\norg = \"park\"\nbucket = \"telemetry\"\ntoken = {{ file = \"token\" }}\nbatch_age_ms = 100\n",
        vm.url()
    );
    let (dir, path) = site(&site_toml(broker.port, &sink));
    std::fs::write(dir.path().join("token"), "secret-token\n").expect("token file");
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(
        config.site.influx[0]
            .token
            .as_ref()
            .and_then(parkguard::config::Secret::value),
        Some("secret-token")
    );
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 2).await;

    let ts_ms = now_s() * 1000 - 5000;
    let meter = meter_payload(ts_ms);
    mosquitto_pub(
        broker.port,
        "park/xinghe/meter/adw300-0001/up",
        &[meter.as_bytes()],
    );

    let client = reqwest::Client::new();
    let export = |client: reqwest::Client, url: String| async move {
        let _ = client
            .get(format!("{url}/internal/force_flush"))
            .send()
            .await;
        client
            .get(format!("{url}/api/v1/export"))
            .query(&[("match[]", "{__name__=~\"electrical_.*\"}")])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body")
    };
    eventually(
        "12 series in VictoriaMetrics",
        Duration::from_secs(30),
        || {
            let (client, url) = (client.clone(), vm.url());
            async move { export(client, url).await.lines().count() >= 12 }
        },
    )
    .await;
    let text = export(client.clone(), vm.url()).await;
    let series: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect();
    assert_eq!(series.len(), 12, "{text}");
    let ua = series
        .iter()
        .find(|s| s["metric"]["__name__"] == "electrical_ua")
        .expect("electrical_ua series");
    assert_eq!(ua["metric"]["location"], "3号楼配电箱");
    assert_eq!(ua["metric"]["park"], "xinghe");
    assert_eq!(ua["values"][0], 230.1);
    assert_eq!(ua["timestamps"][0], ts_ms);
    let metrics = Arc::clone(&gateway.metrics);
    let report = gateway.shutdown().await;
    assert_eq!(report.points_left(), 0);
    assert_eq!(
        metrics.sink("vm").points_written.load(Ordering::Relaxed),
        12
    );
}

/// Topics outside every template cannot be produced through mosquitto (it only delivers what
/// was subscribed), but do arrive from persistent sessions after a configuration change.
#[test]
fn unknown_topic_and_missing_device_are_counted() {
    let (_dir, path) = site(&site_toml(1, ""));
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let metrics = Metrics::new();
    let devices = Arc::new(DeviceDirectory::from_config(&config));
    let mut ingest = MqttIngest::new(&config, 0, devices, Arc::clone(&metrics)).expect("ingest");
    assert!(ingest.handle_message(b"old/topic", b"{}").is_none());
    assert_eq!(metrics.decode_errors(DecodeErrorKind::UnknownTopic), 1);
    let ok = format!(r#"{{"ts":{},"event":"test"}}"#, now_s());
    let batch = ingest
        .handle_message(
            format!("park/xinghe/smoke/{SMOKE}/up").as_bytes(),
            ok.as_bytes(),
        )
        .expect("readings");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].tags.location, "二楼车间");
    assert_eq!(metrics.decode_errors(DecodeErrorKind::NoDevice), 0);

    // On a topic without a {device} level the payload must name the device.
    let nameless = format!(r#"{{"ts":{},"event":"test"}}"#, now_s());
    assert!(ingest
        .handle_message(b"park/xinghe/smokebus/up", nameless.as_bytes())
        .is_none());
    assert_eq!(metrics.decode_errors(DecodeErrorKind::NoDevice), 1);
    let named = format!(r#"{{"dev":"{SMOKE}","ts":{},"event":"test"}}"#, now_s());
    let batch = ingest
        .handle_message(b"park/xinghe/smokebus/up", named.as_bytes())
        .expect("readings of the device the payload names");
    assert_eq!(batch[0].tags.device, SMOKE);
    assert_eq!(metrics.decode_errors(DecodeErrorKind::NoDevice), 1);
    // A meter topic naming an undeclared meter, with unknown devices rejected.
    let meter = meter_payload(now_s() * 1000);
    assert!(ingest
        .handle_message(b"park/xinghe/meter/adw300-9999/up", meter.as_bytes())
        .is_none());
    assert_eq!(metrics.decode_errors(DecodeErrorKind::UnknownDevice), 1);
    assert_eq!(metrics.decode_errors(DecodeErrorKind::NoDevice), 1);
}
