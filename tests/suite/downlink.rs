//! Commands to devices through the carrier platforms' APIs (`[http_ingest.ctwing_api]`,
//! `[http_ingest.onenet_api]`), sent by parkguard's client to the independent platform
//! stand-in tests/interop/iot_platform.py, which verifies every request itself (CTWing's
//! HMAC-SHA1 signature over MasterKey and body, OneNET Studio's `authorization` token):
//!
//! - a CTWing thing-model command and a transparent (hex) one, and a OneNET Studio
//!   `call-service`, are taken: the stand-in finds them valid, with the body expected;
//! - the platform answering a business error is counted `rejected`, not passed as sent;
//! - a platform that does not answer is tried three times and counted `unreachable`;
//! - a wrong app secret (CTWing) and a wrong access key (OneNET) are refused by the stand-in
//!   for their signature and counted `auth_failed`;
//! - through the real daemon: a smoke alarm pushed by CTWing and a gas alarm pushed by OneNET
//!   Studio are acknowledged with their profiles' `[ack] command` (`alarm_ack`) through the
//!   platform's API once recorded; a normal report is not acknowledged.

use crate::support;

use std::time::Duration;

use parkguard::config::Config;
use parkguard::ingest::http::command::{CommandError, DeviceCommand};
use parkguard::ingest::platform::PlatformApi;
use parkguard::metrics::{CommandResult, Metrics, PrometheusText};
use parkguard::pipeline::Gateway;
use serde_json::{json, Map, Value};
use support::jsonl::JsonLines;
use support::*;

const APP_KEY: &str = "pgAppKey0001";
const APP_SECRET: &str = "pgSecret0001";
const MASTER_KEY: &str = "5c1d7e0a9b2f4a6c8d0e1f2a3b4c5d6e";
const ONENET_PID: &str = "pgPid0001";
const ACCESS_KEY: &str = "cGFya2d1YXJkLW9uZW5ldC10ZXN0LWFjY2Vzcy1rZXk=";
/// Another valid Base64 key, which the stand-in does not know.
const WRONG_ACCESS_KEY: &str = "d3Jvbmctb25lbmV0LXRlc3QtYWNjZXNzLWtleSEhIQ==";
/// The OneNET push token the stand-in signs with (the `onenet` endpoints' `token`).
const ONENET_PUSH_TOKEN: &str = "pgPushToken0001-of-the-test";
const SMOKE: &str = "15000001860000000000001";
const GAS: &str = "gas-studio-1";

fn platform() -> JsonLines {
    iot_platform(&[
        "--ctwing-app-key",
        APP_KEY,
        "--ctwing-secret",
        APP_SECRET,
        "--ctwing-master-key",
        MASTER_KEY,
        "--onenet-token",
        ONENET_PUSH_TOKEN,
        "--onenet-product-id",
        ONENET_PID,
        "--onenet-access-key",
        ACCESS_KEY,
        // `answer hang` holds a request this long: beyond the client's 1 s limit.
        "--hang-s",
        "3",
    ])
}

/// A site whose endpoints carry API credentials pointing at the stand-in on `port`; the
/// endpoints `ctwing`, `ctwing-wrong` (a wrong app secret), `onenet`, `onenet-wrong`.
fn config(port: u16) -> (Config, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("dir");
    let file = |name: &str, value: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, value).expect("secret");
        path.display().to_string()
    };
    let token = file("token", "a-push-token-of-the-test");
    let onenet_token = file("onenet_token", ONENET_PUSH_TOKEN);
    let secret = file("secret", APP_SECRET);
    let wrong_secret = file("wrong", "pgSecret0002");
    let master = file("master", MASTER_KEY);
    let key = file("key", ACCESS_KEY);
    let wrong_key = file("wrong_key", WRONG_ACCESS_KEY);
    let api = format!("http://127.0.0.1:{port}");
    let text = format!(
        r#"{header}
[[devices]]
id = "{SMOKE}"
location = "l"
profile = "ctwing_nb_smoke"

[[devices]]
id = "{GAS}"
location = "l"
profile = "onenet_nb_gas"

[[http_ingest]]
name = "ctwing"
platform = "ctwing"
path = "/ingest/ctwing"
token = {{ file = "{token}" }}
profile = "ctwing_nb_smoke"
[http_ingest.ctwing_api]
app_key = "{APP_KEY}"
app_secret = {{ file = "{secret}" }}
master_key = {{ file = "{master}" }}
product_id = 15000001
api_url = "{api}"
timeout_s = 1

[[http_ingest]]
name = "ctwing-wrong"
platform = "ctwing"
path = "/ingest/ctwing-wrong"
token = {{ file = "{token}" }}
profile = "ctwing_nb_smoke"
[http_ingest.ctwing_api]
app_key = "{APP_KEY}"
app_secret = {{ file = "{wrong_secret}" }}
master_key = {{ file = "{master}" }}
product_id = 15000001
api_url = "{api}"

[[http_ingest]]
name = "onenet"
platform = "onenet"
path = "/ingest/onenet"
token = {{ file = "{onenet_token}" }}
profile = "onenet_nb_gas"
[http_ingest.onenet_api]
product_id = "{ONENET_PID}"
access_key = {{ file = "{key}" }}
api_url = "{api}"
timeout_s = 1

[[http_ingest]]
name = "onenet-wrong"
platform = "onenet"
path = "/ingest/onenet-wrong"
token = {{ file = "{onenet_token}" }}
profile = "onenet_nb_gas"
[http_ingest.onenet_api]
product_id = "{ONENET_PID}"
access_key = {{ file = "{wrong_key}" }}
api_url = "{api}"

{web}"#,
        header = site_header("l", ""),
        web = web_section(&[]),
    );
    let (dir, path) = site(&text);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    drop(secrets);
    (config, dir)
}

fn client(config: &Config, metrics: &Metrics, endpoint: &str) -> PlatformApi {
    let e = config
        .site
        .http_ingest
        .iter()
        .find(|e| e.name == endpoint)
        .expect("endpoint");
    PlatformApi::for_endpoint(e, metrics)
        .expect("API credentials")
        .with_retry_pause(Duration::from_millis(50))
}

fn silence() -> DeviceCommand {
    let mut params = Map::new();
    params.insert("silence".into(), json!(1));
    DeviceCommand::Service {
        identifier: "alarm_silence".into(),
        params,
    }
}

/// The stand-in's `command` events, from the `skip`th on.
fn commands(platform: &JsonLines, skip: usize) -> Vec<Value> {
    platform
        .events()
        .into_iter()
        .filter(|e| e["event"] == "command")
        .skip(skip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_platforms_signed_and_failures_are_counted() {
    let mut platform = platform();
    let (config, _dir) = config(platform.port);
    let metrics = Metrics::for_config(&config);
    let counted =
        |endpoint: &str, result: CommandResult| metrics.platform_commands(endpoint).get(result);

    // CTWing thing-model command: signed, the body as CreateCommand wants it.
    let ctwing = client(&config, &metrics, "ctwing");
    let id = ctwing.send(SMOKE, &silence()).await.expect("taken");
    assert_eq!(id.as_deref(), Some("1001"));
    let seen = wait_commands(&platform, 1).await;
    let event = &seen[0];
    assert_eq!(event["platform"], "ctwing");
    assert_eq!(event["valid"], true, "{event:#}");
    assert_eq!(event["headers"]["application"], APP_KEY);
    assert_eq!(event["headers"]["version"], "20190712225145");
    assert_eq!(
        event["body"],
        json!({"content": {"serviceIdentifier": "alarm_silence", "params": {"silence": 1}},
               "deviceId": SMOKE, "operator": "parkguard", "productId": 15000001,
               "ttl": 7200, "level": 1})
    );

    // A transparent product's bytes, as hex.
    ctwing
        .send(SMOKE, &DeviceCommand::Bytes(vec![0xA5, 0x01, 0x0F]))
        .await
        .expect("taken");
    let event = &wait_commands(&platform, 2).await[1];
    assert_eq!(event["valid"], true, "{event:#}");
    assert_eq!(
        event["body"]["content"],
        json!({"dataType": 2, "payload": "A5010F"})
    );
    assert_eq!(counted("ctwing", CommandResult::Sent), 2);

    // OneNET Studio call-service with a valid token.
    let onenet = client(&config, &metrics, "onenet");
    onenet.send(GAS, &silence()).await.expect("taken");
    let event = &wait_commands(&platform, 3).await[2];
    assert_eq!(event["platform"], "onenet");
    assert_eq!(event["path"], "/thingmodel/call-service");
    assert_eq!(event["valid"], true, "{event:#}");
    assert_eq!(
        event["body"],
        json!({"product_id": ONENET_PID, "device_name": GAS,
               "identifier": "alarm_silence", "params": {"silence": 1}})
    );
    let auth = event["headers"]["authorization"].as_str().expect("token");
    assert!(
        auth.starts_with("version=2022-05-01&res=products%2FpgPid0001&et="),
        "{auth}"
    );
    assert_eq!(counted("onenet", CommandResult::Sent), 1);
    // Raw bytes are no Studio command: refused before anything is sent.
    let err = onenet.send(GAS, &DeviceCommand::Bytes(vec![1])).await;
    assert!(matches!(err, Err(CommandError::NotSent(_))), "{err:?}");
    assert_eq!(counted("onenet", CommandResult::NotSent), 1);
    assert_eq!(commands(&platform, 3).len(), 0);

    // The platforms answering a business error: refused, counted, not retried.
    platform.command(json!({"cmd": "answer", "platform": "ctwing", "mode": "error"}));
    platform.command(json!({"cmd": "answer", "platform": "onenet", "mode": "error"}));
    let err = ctwing.send(SMOKE, &silence()).await;
    assert!(
        matches!(err, Err(CommandError::Rejected { code: -1, .. })),
        "{err:?}"
    );
    let err = onenet.send(GAS, &silence()).await;
    assert!(
        matches!(err, Err(CommandError::Rejected { code: 2001, .. })),
        "{err:?}"
    );
    assert_eq!(counted("ctwing", CommandResult::Rejected), 1);
    assert_eq!(counted("onenet", CommandResult::Rejected), 1);
    wait_commands(&platform, 5).await;

    // A platform that does not answer: three tries within the 1 s limit each, then given up.
    platform.command(json!({"cmd": "answer", "platform": "ctwing", "mode": "hang"}));
    let started = std::time::Instant::now();
    let err = ctwing.send(SMOKE, &silence()).await;
    assert!(matches!(err, Err(CommandError::Unreachable(_))), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counted("ctwing", CommandResult::Unreachable), 1);
    assert_eq!(
        metrics
            .platform_commands("ctwing")
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let hung = wait_commands(&platform, 8).await.split_off(5);
    assert_eq!(hung.len(), 3, "{hung:#?}");
    assert!(hung.iter().all(|e| e["valid"] == true), "{hung:#?}");
    platform.command(json!({"cmd": "answer", "platform": "ctwing", "mode": "ok"}));
    platform.command(json!({"cmd": "answer", "platform": "onenet", "mode": "ok"}));

    // Wrong secrets: the stand-in refuses the signature, and the failure is counted.
    let wrong = client(&config, &metrics, "ctwing-wrong");
    let err = wrong.send(SMOKE, &silence()).await;
    assert!(
        matches!(err, Err(CommandError::AuthFailed { status: 401, .. })),
        "{err:?}"
    );
    let event = &wait_commands(&platform, 9).await[8];
    assert_eq!(event["valid"], false);
    assert_eq!(event["reason"], "bad_signature", "{event:#}");
    assert_eq!(counted("ctwing-wrong", CommandResult::AuthFailed), 1);
    let wrong = client(&config, &metrics, "onenet-wrong");
    let err = wrong.send(GAS, &silence()).await;
    assert!(
        matches!(err, Err(CommandError::AuthFailed { code: 10403, .. })),
        "{err:?}"
    );
    let event = &wait_commands(&platform, 10).await[9];
    assert_eq!(event["reason"], "bad_signature", "{event:#}");
    assert_eq!(counted("onenet-wrong", CommandResult::AuthFailed), 1);
    // Give a stray retry time to show: auth failures and business errors are not retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        commands(&platform, 0).len(),
        10,
        "{:#?}",
        commands(&platform, 0)
    );

    // All of it on /metrics, by endpoint and result.
    let mut text = PrometheusText::new();
    metrics.render(&mut text);
    let text = text.finish();
    for line in [
        "parkguard_platform_commands_total{endpoint=\"ctwing\",result=\"sent\"} 2",
        "parkguard_platform_commands_total{endpoint=\"ctwing\",result=\"unreachable\"} 1",
        "parkguard_platform_commands_total{endpoint=\"onenet\",result=\"rejected\"} 1",
        "parkguard_platform_commands_total{endpoint=\"ctwing-wrong\",result=\"auth_failed\"} 1",
        "parkguard_platform_command_retries_total{endpoint=\"ctwing\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    platform.stop();
}

/// Has the stand-in push `command` to the gateway, which must answer 200.
fn push(platform: &mut JsonLines, command: Value) {
    let pushed = |platform: &JsonLines| -> Vec<Value> {
        platform
            .events()
            .into_iter()
            .filter(|e| e["event"] == "pushed")
            .collect()
    };
    let before = pushed(platform).len();
    platform.command(command.clone());
    let after = pushed(platform);
    assert_eq!(after.len(), before + 1, "{command}");
    assert_eq!(after[before]["status"], 200, "{:#}", after[before]);
}

/// Waits for the stand-in's `command` events to number `n`, and returns them.
async fn wait_commands(platform: &JsonLines, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let seen = commands(platform, 0);
        if seen.len() >= n {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} commands expected: {:#?}", commands(platform, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_of_platform_devices_are_acknowledged_through_the_platform() {
    let mut platform = platform();
    let (config, _dir) = config(platform.port);
    let gateway = Gateway::start(config).await.expect("start");
    let base = web_url(&gateway);
    // A normal report: recorded, nothing to acknowledge.
    push(
        &mut platform,
        json!({"cmd": "push", "platform": "ctwing",
        "url": format!("{base}/ingest/ctwing"), "token": "a-push-token-of-the-test",
        "message": {"messageType": "dataReport", "deviceId": SMOKE, "productId": "15000001",
                    "payload": {"event": "normal", "smoke_pct": 2.0}}}),
    );
    // The alarm: acknowledged with the profile's command, signed and verified.
    push(
        &mut platform,
        json!({"cmd": "push", "platform": "ctwing",
        "url": format!("{base}/ingest/ctwing"), "token": "a-push-token-of-the-test",
        "message": {"messageType": "eventReport", "deviceId": SMOKE, "eventType": 1,
                    "eventContent": {"event": "alarm", "smoke_pct": 41.0}}}),
    );
    let seen = wait_commands(&platform, 1).await;
    let ack = &seen[0];
    assert_eq!(ack["platform"], "ctwing");
    assert_eq!(ack["valid"], true, "{ack:#}");
    assert_eq!(ack["body"]["deviceId"], SMOKE);
    assert_eq!(ack["body"]["content"]["serviceIdentifier"], "alarm_ack");
    assert_eq!(ack["body"]["content"]["params"]["event"], "alarm");
    assert!(ack["body"]["content"]["params"]["ts"].is_i64(), "{ack:#}");

    // OneNET Studio: the detector's own high alarm, acknowledged by a service call.
    push(
        &mut platform,
        json!({"cmd": "push", "platform": "onenet", "style": "studio",
        "url": format!("{base}/ingest/onenet"),
        "msg": {"deviceName": GAS, "productId": ONENET_PID, "messageType": "notify",
                "notifyType": "property",
                "data": {"id": "7", "params": {
                    "lel": {"value": 30.0, "time": now_s() * 1000},
                    "state": {"value": "high_alarm", "time": now_s() * 1000}}}}}),
    );
    let seen = wait_commands(&platform, 2).await;
    let ack = &seen[1];
    assert_eq!(ack["platform"], "onenet");
    assert_eq!(ack["valid"], true, "{ack:#}");
    assert_eq!(ack["body"]["device_name"], GAS);
    assert_eq!(ack["body"]["identifier"], "alarm_ack");
    assert_eq!(ack["body"]["params"]["state"], "high_alarm");

    // Nothing else was sent: the normal report asked for nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        commands(&platform, 0).len(),
        2,
        "{:#?}",
        commands(&platform, 0)
    );
    let metrics = &gateway.metrics;
    assert_eq!(
        metrics.platform_commands("ctwing").get(CommandResult::Sent),
        1
    );
    assert_eq!(
        metrics.platform_commands("onenet").get(CommandResult::Sent),
        1
    );
    gateway.shutdown().await;
    platform.stop();
}
