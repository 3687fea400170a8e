//! The pushes checked by a second implementation: `tests/interop/push_verify.py` (Python's
//! standard library only, written from the documented formats, none of parkguard's code)
//! verifies what the daemon really sent to a receiver after a smoke alarm published to
//! mosquitto and its acknowledgement through the API: the webhook's `X-Parkguard-Signature`
//! (HMAC-SHA256 of `<timestamp>.<body>`), timestamp and delivery id, DingTalk's URL signing,
//! Feishu's body signing, WeCom's markdown body, and every documented field. The verifier also
//! forges requests from the genuine ones (a byte changed, another request's valid signature, a
//! moved or stale timestamp, another secret, a replay) and must refuse each. parkguard has no
//! receiving side of its own, so these forgeries go to the Python receiver.
//!
//! The golden files of `tests/golden/alerts/` (written by parkguard with `PARKGUARD_BLESS`)
//! are checked by the same Python format checks; `tests/golden/alerts/README.md` explains them.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use parkguard::config::Config;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "golden-webhook-secret";
const DINGTALK_SECRET: &str = "SECgolden-dingtalk-secret";
const FEISHU_SECRET: &str = "golden-feishu-secret";

fn python() -> String {
    std::env::var("PARKGUARD_TEST_PYTHON").expect(
        "PARKGUARD_TEST_PYTHON must name a Python 3 (./scripts/test sets it to target/test-venv)",
    )
}

fn verifier() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/push_verify.py")
}

/// Runs the verifier on `spec`; (exit success, report).
fn run_verifier(dir: &Path, name: &str, spec: &Value) -> (bool, Value) {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec(spec).expect("json")).expect("write spec");
    let out = Command::new(python())
        .arg(verifier())
        .arg(&file)
        .output()
        .expect("run the Python verifier");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verifier output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[test]
fn the_golden_bodies_have_the_documented_formats_by_an_independent_check() {
    let out = Command::new(python())
        .arg(verifier())
        .arg("--golden")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/alerts"))
        .output()
        .expect("run the Python verifier");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_daemon_pushes_verifies_under_an_independent_python_implementation() {
    let mosquitto = support::mosquitto();
    let (base, inbox, _stop) = support::push_receiver::start().await;
    let token = parkguard::web::random_token();
    let header = support::site_header("l", "").replace(
        "[[enterprises]]\nid = \"e\"\npark = \"p\"\n",
        "[[enterprises]]\nid = \"e\"\npark = \"p\"\nname = \"星河五金\"\n\
         contact = { name = \"李经理\", mobile = \"13800000001\", email = \"li@e.example\" }\n",
    );
    let (dir, path) = support::site(&format!(
        r#"{header}
[[devices]]
id = "smoke-1"
location = "l"
profile = "nb_smoke"
name = "1号车间烟感"
[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt}
client_id = "pg-golden-pushes-{mqtt}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"
[web]
listen = "127.0.0.1:0"
[[web.tokens]]
name = "duty-desk"
role = "operator"
token_sha256 = "{token_hash}"
[alerts]
web_url = "https://gw.example:8443/"
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "{base}/hook"
secret = {{ file = "webhook.secret" }}
[[alerts.channels]]
name = "wecom"
type = "wecom"
url = "{base}/wecom?key=wc-key"
[[alerts.channels]]
name = "dingtalk"
type = "dingtalk"
url = "{base}/dingtalk?access_token=dt-token"
secret = {{ file = "dingtalk.secret" }}
[[alerts.channels]]
name = "feishu"
type = "feishu"
url = "{base}/feishu"
secret = {{ file = "feishu.secret" }}
[[alerts.routes]]
name = "park-operators"
channels = ["hook", "wecom", "dingtalk", "feishu"]
recipients = [{{ name = "值班员王工", role = "park_operator", mobile = "13900000002" }}]
enterprise_contact = true
"#,
        mqtt = mosquitto.port,
        token_hash = parkguard::web::token_sha256_hex(&token),
    ));
    for (file, secret) in [
        ("webhook.secret", WEBHOOK_SECRET),
        ("dingtalk.secret", DINGTALK_SECRET),
        ("feishu.secret", FEISHU_SECRET),
    ] {
        std::fs::write(dir.path().join(file), secret).expect("secret file");
    }
    let gateway = parkguard::pipeline::Gateway::start(Config::load(&path).expect("valid site"))
        .await
        .expect("start");
    support::wait_subscribed(&gateway, "park", 1).await;
    let payload = format!(
        r#"{{"dev":"smoke-1","ts":{},"event":"alarm"}}"#,
        support::now_s()
    );
    support::mosquitto_pub(
        mosquitto.port,
        "park/p/smoke/smoke-1/up",
        &[payload.as_bytes()],
    );
    support::eventually("four pushes", Duration::from_secs(10), || async {
        inbox.all().len() >= 4
    })
    .await;
    let ack = reqwest::Client::new()
        .post(format!("{}/api/commands", support::web_url(&gateway)))
        .bearer_auth(&token)
        .json(&json!({"id": "R13/smoke-1/event", "command": "acknowledge", "comment": "on my way"}))
        .send()
        .await
        .expect("acknowledge");
    assert!(ack.status().is_success(), "{}", ack.status());
    support::eventually(
        "the acknowledgement pushed",
        Duration::from_secs(10),
        || async { inbox.at("/hook").len() >= 2 && inbox.all().len() >= 8 },
    )
    .await;
    gateway.shutdown().await;

    let pushed = inbox.all();
    let hooks = inbox.at("/hook");
    assert_eq!(
        hooks.iter().flat_map(|h| h.events()).collect::<Vec<_>>(),
        vec![
            ("raised".to_string(), "R13/smoke-1/event".to_string()),
            ("acknowledged".to_string(), "R13/smoke-1/event".to_string())
        ]
    );
    let spec = |webhook_secret: &str, requests: Vec<Value>| {
        json!({
            "now_s": support::now_s(),
            "web_url": "https://gw.example:8443/",
            "secrets": {"webhook": webhook_secret, "dingtalk": DINGTALK_SECRET, "feishu": FEISHU_SECRET},
            "requests": requests,
        })
    };
    let all: Vec<Value> = pushed.iter().map(|p| p.for_python()).collect();
    let (ok, report) = run_verifier(dir.path(), "genuine.json", &spec(WEBHOOK_SECRET, all));
    assert!(ok, "the independent verifier refused: {report:#}");
    let accepted: Vec<&str> = report["accepted"]
        .as_array()
        .expect("accepted")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ids: Vec<String> = hooks
        .iter()
        .map(|h| h.json()["id"].as_str().expect("id").to_string())
        .collect();
    for id in &ids {
        assert!(accepted.contains(&id.as_str()), "{report:#}");
    }
    for robot in ["wecom", "dingtalk", "feishu"] {
        assert_eq!(
            accepted.iter().filter(|a| **a == robot).count(),
            2,
            "{robot}: raised and acknowledged verified: {report:#}"
        );
    }
    let forgeries = report["forgeries"].as_array().expect("forgeries");
    assert!(forgeries.len() >= 12, "{report:#}");
    assert!(
        forgeries.iter().all(|f| f["refused"].is_string()),
        "every forgery refused: {report:#}"
    );

    // Negative controls from this side: a byte of the body changed here, and the verifier
    // given another secret, are refused (the check really compares parkguard's header with an
    // HMAC the verifier computes itself).
    let mut changed = hooks[0].for_python();
    let mut body = hooks[0].body.to_vec();
    let at = body.len() / 3;
    body[at] = if body[at] == b'a' { b'b' } else { b'a' };
    use base64::Engine;
    changed["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&body));
    let (ok, report) = run_verifier(
        dir.path(),
        "changed.json",
        &spec(WEBHOOK_SECRET, vec![changed]),
    );
    assert!(!ok);
    assert_eq!(report["rejected"], json!(["bad signature"]), "{report:#}");
    let (ok, report) = run_verifier(
        dir.path(),
        "other-secret.json",
        &spec("not-the-secret", vec![hooks[0].for_python()]),
    );
    assert!(!ok);
    assert_eq!(report["rejected"], json!(["bad signature"]), "{report:#}");
}
