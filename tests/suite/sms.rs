//! SMS and voice pushes through the real daemon (mosquitto, a smoke detector) to the
//! independent receiver tests/interop/sms_receiver.py, which verifies Aliyun's RPC signature
//! and Tencent Cloud's TC3-HMAC-SHA256 from the providers' published rules (and checks its own
//! code against their known-answer examples in --self-test):
//!
//! - a smoke alarm reaches the duty room by Aliyun SMS and Tencent SMS, one message per
//!   recipient's mobile, with validly signed requests carrying the template's variables;
//! - a night call (Aliyun voice) is made for the raise and not for the acknowledgement;
//! - the fire department's SMS route (`confirmed_only`) texts only once the fire is confirmed;
//! - a provider's refusal in a 200 answer (a rate limit) is a failure, retried until taken.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value};
use support::jsonl::JsonLines;
use support::*;

const ALIYUN_ID: &str = "LTAI5tTestKeyId";
const ALIYUN_SECRET: &str = "aliyun-test-secret";
const TENCENT_ID: &str = "AKIDtestSecretId";
const TENCENT_KEY: &str = "tencent-test-key";
const SMOKE: &str = "R13/s1/event";

/// The receiver as a child process (`support::jsonl`).
struct Receiver(JsonLines);

impl Receiver {
    fn start() -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/sms_receiver.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--aliyun-id", ALIYUN_ID, "--aliyun-secret", ALIYUN_SECRET])
            .args(["--tencent-id", TENCENT_ID, "--tencent-key", TENCENT_KEY])
            .args(["--max-skew-s", "60"]);
        Receiver(JsonLines::start(command, "the SMS receiver (python3)"))
    }

    fn requests(&self) -> Vec<Value> {
        self.0
            .events()
            .into_iter()
            .filter(|e| e["event"] == "request")
            .collect()
    }

    fn wait(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.0.wait(what, Duration::from_secs(20), ready)
    }

    fn command(&mut self, command: Value) {
        self.0.command(command)
    }
}

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value).expect("secret");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_alarm_goes_out_by_signed_sms_and_a_call_and_the_fire_department_waits_for_the_confirmation(
) {
    let mut receiver = Receiver::start();
    let mosquitto = mosquitto();
    let port = mosquitto.port;
    let secrets = tempfile::tempdir().expect("dir");
    let aliyun_secret = secret_file(secrets.path(), "aliyun", ALIYUN_SECRET);
    let tencent_secret = secret_file(secrets.path(), "tencent", TENCENT_KEY);
    let endpoint = format!("http://127.0.0.1:{}/", receiver.0.port);
    let operator = parkguard::web::random_token();
    let text = format!(
        r#"{header}
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
name = "二楼烟感"

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {port}
client_id = "pg-sms-{port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"

[alerts]
[[alerts.channels]]
name = "aliyun"
type = "aliyun_sms"
access_key_id = "{ALIYUN_ID}"
secret = {{ file = "{aliyun_secret}" }}
sign_name = "星河园区"
template = "SMS_465820123"
template_params = ["place", "alarm", "event"]
endpoint = "{endpoint}"
[[alerts.channels]]
name = "tencent"
type = "tencent_sms"
access_key_id = "{TENCENT_ID}"
secret = {{ file = "{tencent_secret}" }}
sms_app_id = "1400000001"
sign_name = "星河园区"
template = "2001234"
template_params = ["place", "alarm", "event", "time"]
endpoint = "{endpoint}"
[[alerts.channels]]
name = "call"
type = "aliyun_voice"
access_key_id = "{ALIYUN_ID}"
secret = {{ file = "{aliyun_secret}" }}
template = "TTS_287250123"
template_params = ["place", "alarm"]
endpoint = "{endpoint}"
[[alerts.routes]]
name = "duty-room"
channels = ["aliyun", "tencent", "call"]
recipients = [
  {{ name = "值班员", mobile = "13800000001" }},
  {{ name = "园区经理", mobile = "+86 139-0000-0002" }},
]
[[alerts.routes]]
name = "fire-department"
rules = ["R13"]
confirmed_only = true
channels = ["aliyun"]
recipients = [{{ name = "消防站", mobile = "13700000119", role = "fire_department" }}]

[web]
listen = "127.0.0.1:0"
[[web.tokens]]
name = "duty-desk"
role = "operator"
token_sha256 = "{op}"
"#,
        header = site_header("l", "").replace(
            "[[enterprises]]\nid = \"e\"",
            "[[enterprises]]\nid = \"e\"\nname = \"星河五金\""
        ),
        op = parkguard::web::token_sha256_hex(&operator),
    );
    let (_dir, path) = site(&text);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    let url = web_url(&gateway);

    // Aliyun refuses the first message with a rate limit in a 200 answer.
    receiver.command(json!({"cmd": "refuse_next", "provider": "aliyun_sms"}));
    let payload = format!(r#"{{"dev":"s1","ts":{},"event":"alarm"}}"#, now_s());
    mosquitto_pub(port, "park/p/smoke/s1/up", &[payload.as_bytes()]);

    // Two mobiles x (Aliyun SMS, Tencent SMS, call), the refused one sent again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepted = |r: &Vec<Value>, provider: &str, number: &str| {
        r.iter().any(|e| {
            e["provider"] == provider
                && e["valid"] == true
                && e["refused"] != true
                && e["answer"]["code"]
                    .as_str()
                    .is_some_and(|c| c == "OK" || c == "Ok")
                && e["numbers"]
                    .as_array()
                    .is_some_and(|n| n.contains(&json!(number)))
        })
    };
    loop {
        let r = receiver.requests();
        let done = accepted(&r, "aliyun_sms", "13800000001")
            && accepted(&r, "aliyun_sms", "13900000002")
            && accepted(&r, "tencent_sms", "+8613800000001")
            && accepted(&r, "tencent_sms", "+8613900000002")
            && accepted(&r, "aliyun_voice", "13800000001")
            && accepted(&r, "aliyun_voice", "13900000002");
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every message arrived: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = receiver.requests();
    let invalid: Vec<&Value> = requests.iter().filter(|e| e["valid"] != true).collect();
    assert!(
        invalid.is_empty(),
        "requests refused by the verifier: {invalid:#?}"
    );
    assert!(
        requests.iter().any(|e| e["refused"] == true),
        "the rate limit was answered"
    );
    let sms = requests
        .iter()
        .find(|e| e["provider"] == "aliyun_sms" && e["refused"] != true)
        .expect("an Aliyun SMS");
    assert_eq!(sms["sign_name"], "星河园区");
    assert_eq!(sms["template"], "SMS_465820123");
    assert_eq!(sms["template_params"]["alarm"], "烟雾报警");
    assert_eq!(sms["template_params"]["event"], "新报警");
    assert_eq!(sms["template_params"]["place"], "星河五金l");
    let tencent = requests
        .iter()
        .find(|e| e["provider"] == "tencent_sms")
        .expect("a Tencent SMS");
    let params = tencent["template_params"].as_array().expect("ordered");
    assert_eq!(params.len(), 4);
    assert_eq!(params[1], "烟雾报警");
    // The fire department has not been texted: the fire is not confirmed.
    assert!(
        !accepted(&requests, "aliyun_sms", "13700000119"),
        "an unconfirmed fire reached the fire department"
    );

    // The operator confirms: the fire department is texted, and the duty room hears of it
    // by SMS and by a call (a confirmed fire needs someone now).
    let calls_before = requests
        .iter()
        .filter(|e| e["provider"] == "aliyun_voice")
        .count();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/commands"))
        .bearer_auth(&operator)
        .json(&json!({"id": SMOKE, "command": "confirm_fire"}))
        .send()
        .await
        .expect("confirm");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let fire = receiver.wait("the fire department's SMS", |e| {
        e["event"] == "request"
            && e["provider"] == "aliyun_sms"
            && e["numbers"]
                .as_array()
                .is_some_and(|n| n.contains(&json!("13700000119")))
    });
    assert_eq!(fire["valid"], true, "{fire:#}");
    assert_eq!(fire["template_params"]["event"], "确认火警");

    // An acknowledgement is texted but never called.
    let response = reqwest::Client::new()
        .post(format!("{url}/api/commands"))
        .bearer_auth(&operator)
        .json(&json!({"id": SMOKE, "command": "acknowledge"}))
        .send()
        .await
        .expect("ack");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    receiver.wait("the acknowledgement by SMS", |e| {
        e["event"] == "request"
            && e["provider"] == "tencent_sms"
            && e["template_params"][2] == "已确认"
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls: Vec<Value> = receiver
        .requests()
        .into_iter()
        .filter(|e| e["provider"] == "aliyun_voice")
        .collect();
    // Calls: the raise and the confirmed fire, to each of the two mobiles.
    assert_eq!(calls.len(), calls_before + 2, "{calls:#?}");
    gateway.shutdown().await;
}

/// The receiver's own check against the providers' published signature examples and its
/// refusal of forgeries (changed parameter, wrong secret, stale timestamp, reused nonce).
#[test]
fn the_independent_receiver_passes_its_self_test() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/sms_receiver.py");
    let out = std::process::Command::new("python3")
        .args([script, "--self-test"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/sms"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
