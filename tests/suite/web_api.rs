//! The web API over real HTTP against a daemon fed by real mosquitto: every write endpoint
//! refuses unauthenticated, cross-site and CSRF-less requests; the OpenAPI file describes
//! exactly the routes; roles and API tokens; the login rate limit; the live event stream, the
//! device list and `/metrics` after an alarm; HTTPS with the session cookie marked Secure.

use crate::support;

use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

struct Tokens {
    viewer: String,
    operator: String,
}

fn site_text(mqtt_port: u16, extra_web: &str) -> (String, Tokens) {
    let tokens = Tokens {
        viewer: parkguard::web::random_token(),
        operator: parkguard::web::random_token(),
    };
    let text = format!(
        r#"{header}[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"

[[rule_overrides]]
rule = "R1"
on_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-web-api-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"

{web}{extra_web}
[[web.tokens]]
name = "scada-viewer"
role = "viewer"
token_sha256 = "{viewer}"
[[web.tokens]]
name = "scada-operator"
role = "operator"
token_sha256 = "{operator}"
"#,
        header = site_header("l", ""),
        web = web_section(&[("olga", "operator", "operator-pass")]),
        viewer = parkguard::web::token_sha256_hex(&tokens.viewer),
        operator = parkguard::web::token_sha256_hex(&tokens.operator),
    );
    (text, tokens)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn start(extra_web: &str) -> (Server, tempfile::TempDir, Gateway, Tokens) {
    let mosquitto = mosquitto();
    let (text, tokens) = site_text(mosquitto.port, extra_web);
    let (dir, path) = site(&text);
    let config = Config::load(&path).expect("valid site");
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    (mosquitto, dir, gateway, tokens)
}

/// Write routes with a body each accepts when authorised.
fn write_body(path: &str) -> Value {
    match path {
        "/api/login" => json!({ "name": "olga", "password": "operator-pass" }),
        "/api/login/token" => json!({ "token": "not-a-token" }),
        "/api/commands" => json!({ "id": "R1/m1/leakage", "command": "acknowledge" }),
        "/api/devices/signoff" => json!({ "device": "m1", "notes": "ok" }),
        "/api/commissioning/read" => {
            json!({ "device": "m1", "area": "holding", "address": 0, "count": 1 })
        }
        "/api/commissioning/profile-test" => json!({ "device": "m1" }),
        "/api/outputs/:id/operate" | "/api/outputs/:id/release" => {
            json!({ "reason": "test", "confirm": ":id" })
        }
        _ => json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_endpoint_refuses_unauthenticated_cross_site_and_csrf_less_requests() {
    let (_mosquitto, _dir, gateway, _tokens) = start("").await;
    let base = web_url(&gateway);
    let (session, csrf) = api_log_in(&base, "olga", "operator-pass").await;
    let host = base.trim_start_matches("http://").to_string();
    let writes: Vec<&str> = parkguard::web::route_table()
        .into_iter()
        .filter(|(method, _, _)| method == reqwest::Method::POST)
        .map(|(_, path, _)| path)
        .collect();
    assert!(writes.contains(&"/api/commands") && writes.contains(&"/api/logout"));
    let http = client();
    for path in writes {
        let url = format!("{base}{path}");
        let send = |headers: HeaderMap| {
            http.post(&url)
                .headers(headers)
                .json(&write_body(path))
                .send()
        };
        let mut cross_origin = HeaderMap::new();
        cross_origin.insert("cookie", HeaderValue::from_str(&session).expect("cookie"));
        cross_origin.insert("x-csrf-token", HeaderValue::from_str(&csrf).expect("csrf"));
        cross_origin.insert("origin", HeaderValue::from_static("http://evil.example"));
        let status = send(cross_origin).await.expect("send").status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: foreign Origin");

        let mut cross_site = HeaderMap::new();
        cross_site.insert("cookie", HeaderValue::from_str(&session).expect("cookie"));
        cross_site.insert("x-csrf-token", HeaderValue::from_str(&csrf).expect("csrf"));
        cross_site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        let status = send(cross_site).await.expect("send").status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: Sec-Fetch-Site");

        // The logins take no session: they make one.
        if path == "/api/login" || path == "/api/login/token" {
            continue;
        }
        let status = send(HeaderMap::new()).await.expect("send").status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: no credentials");

        let mut bad_token = HeaderMap::new();
        bad_token.insert(
            "authorization",
            HeaderValue::from_static("Bearer not-a-token"),
        );
        let status = send(bad_token).await.expect("send").status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: unknown token");

        let mut no_csrf = HeaderMap::new();
        no_csrf.insert("cookie", HeaderValue::from_str(&session).expect("cookie"));
        let status = send(no_csrf).await.expect("send").status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: no CSRF token");

        let mut wrong_csrf = HeaderMap::new();
        wrong_csrf.insert("cookie", HeaderValue::from_str(&session).expect("cookie"));
        wrong_csrf.insert("x-csrf-token", HeaderValue::from_static("guess"));
        let status = send(wrong_csrf).await.expect("send").status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: wrong CSRF token");
    }

    // The same-origin request with the token passes the checks (409: the alarm is normal, so
    // there is nothing to acknowledge).
    let response = http
        .post(format!("{base}/api/commands"))
        .header("cookie", &session)
        .header("x-csrf-token", &csrf)
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .json(&write_body("/api/commands"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CONFLICT);

    // Reads need a login too.
    for path in ["/api/alarms", "/api/devices", "/api/journal", "/api/events"] {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    gateway.shutdown().await;
}

#[test]
fn openapi_file_describes_exactly_the_routes() {
    let spec: Value = serde_json::from_str(parkguard::web::OPENAPI).expect("OpenAPI is JSON");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, operations) in spec["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = parkguard::web::route_table()
        .into_iter()
        .map(|(method, path, _)| {
            // axum's `:name` segments are OpenAPI's `{name}`.
            let path = path
                .split('/')
                .map(|segment| match segment.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => segment.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            (method.to_string(), path)
        })
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_reaches_the_event_stream_devices_and_metrics_and_roles_decide_commands() {
    let (mosquitto, _dir, gateway, tokens) = start("").await;
    let base = web_url(&gateway);
    let http = client();

    // An API token opens the event stream; events arrive as the rules raise them.
    let mut stream = reqwest::Client::new()
        .get(format!("{base}/api/events"))
        .bearer_auth(&tokens.viewer)
        .send()
        .await
        .expect("event stream");
    assert_eq!(stream.status(), StatusCode::OK);
    // The stream is registered once the response head is here; publish only then.
    eventually("the event client counted", Duration::from_secs(5), || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let text = http
                .get(url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.contains("parkguard_web_event_clients 1")
        }
    })
    .await;
    mosquitto_pub(
        mosquitto.port,
        "park/p/meter/m1/up",
        &[meter(650.0).as_bytes()],
    );
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(received.contains("event: alarm") && received.contains("event: device")) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("events within 10 s")
            .expect("stream")
            .expect("open stream");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let alarm_line = received
        .lines()
        .skip_while(|l| *l != "event: alarm")
        .nth(1)
        .expect("alarm data");
    let transition: Value =
        serde_json::from_str(alarm_line.trim_start_matches("data:").trim()).expect("json");
    assert_eq!(transition["action"], "raised");
    assert_eq!(transition["alarm"]["key"], "R1/m1/leakage");
    assert_eq!(transition["alarm"]["state"], "unacknowledged");
    assert!(received.contains(r#"{"device":"m1","status":"alarm"}"#));

    let devices: Value = http
        .get(format!("{base}/api/devices"))
        .bearer_auth(&tokens.viewer)
        .send()
        .await
        .expect("devices")
        .json()
        .await
        .expect("json");
    assert_eq!(devices[0]["id"], "m1");
    assert_eq!(devices[0]["status"], "alarm");
    assert_eq!(devices[0]["values"]["leakage"]["value"], 650.0);
    assert_eq!(devices[0]["values"]["leakage"]["unit"], "mA");

    let filtered: Value = http
        .get(format!("{base}/api/alarms?severity=low"))
        .bearer_auth(&tokens.viewer)
        .send()
        .await
        .expect("alarms")
        .json()
        .await
        .expect("json");
    assert_eq!(filtered, json!([]));
    let bad_filter = http
        .get(format!("{base}/api/alarms?severity=apocalyptic"))
        .bearer_auth(&tokens.viewer)
        .send()
        .await
        .expect("alarms");
    assert_eq!(bad_filter.status(), StatusCode::BAD_REQUEST);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"parkguard_alarms{state="unacknowledged",severity="critical"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("parkguard_mqtt_connected{connection=\"park\"} 1"));
    assert!(metrics.contains("parkguard_readings_decoded_total "));

    // Roles: the viewer's token may not acknowledge, the operator's may; a maintenance window
    // needs a technician.
    let command = |token: &str, body: Value| {
        http.post(format!("{base}/api/commands"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let ack = json!({ "id": "R1/m1/leakage", "command": "acknowledge", "comment": "seen" });
    let refused = command(&tokens.viewer, ack.clone()).await.expect("send");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let suppress = json!({ "target": "device", "id": "m1", "command": "suppress", "minutes": 30 });
    let refused = command(&tokens.operator, suppress).await.expect("send");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = command(&tokens.operator, ack.clone()).await.expect("send");
    assert_eq!(done.status(), StatusCode::OK);
    let again = command(&tokens.operator, ack).await.expect("send");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let unknown = command(
        &tokens.operator,
        json!({ "id": "R1/m1/leakage", "command": "explode" }),
    )
    .await
    .expect("send");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    // The journal is written by the store's thread after the command returns.
    let journal_url = format!("{base}/api/journal?search=m1");
    let mut journal = Value::Null;
    for _ in 0..100 {
        journal = http
            .get(&journal_url)
            .bearer_auth(&tokens.viewer)
            .send()
            .await
            .expect("journal")
            .json()
            .await
            .expect("json");
        if journal[0]["action"] == "acknowledged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(journal[0]["action"], "acknowledged");
    assert_eq!(journal[0]["operator"], "scada-operator");
    assert_eq!(journal[0]["comment"], "seen");

    let history = http
        .get(format!(
            "{base}/api/history?device=m1&quantity=leakage&hours=1"
        ))
        .bearer_auth(&tokens.viewer)
        .send()
        .await
        .expect("history");
    assert_eq!(history.status(), StatusCode::OK);
    assert!(history.json::<Value>().await.expect("json").is_array());

    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    drop(stream);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_and_the_right_password_then_waits_too() {
    let (_mosquitto, _dir, gateway, _tokens) = start("").await;
    let base = web_url(&gateway);
    let http = client();
    for _ in 0..5 {
        let response = http
            .post(format!("{base}/api/login"))
            .json(&json!({ "name": "olga", "password": "guess" }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = http
        .post(format!("{base}/api/login"))
        .json(&json!({ "name": "olga", "password": "operator-pass" }))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=300).contains(&retry_after));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_marks_the_session_cookie_secure() {
    let certs = tempfile::TempDir::new().expect("temp dir");
    make_certificates(certs.path());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certs.path().join("server.pem").display(),
        certs.path().join("server.key").display()
    );
    // `tls_*` belong to [web], which `web_section` opens; insert them right after its header.
    let (_mosquitto, _dir, gateway, _tokens) = {
        let mosquitto = mosquitto();
        let (text, tokens) = site_text(mosquitto.port, "");
        let text = text.replace("[web]\n", &format!("[web]\n{extra}"));
        let (dir, path) = site(&text);
        let config = Config::load(&path).expect("valid site");
        let gateway = Gateway::start(config).await.expect("start");
        (mosquitto, dir, gateway, tokens)
    };
    let address = gateway.web.as_ref().expect("web").address;
    let ca = std::fs::read(certs.path().join("ca.pem")).expect("ca");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", address.port());
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health
            .headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000"),
        "HSTS over TLS"
    );
    let login = http
        .post(format!("{base}/api/login"))
        .json(&json!({ "name": "olga", "password": "operator-pass" }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on the HTTPS port gets no page.
    let plain = client()
        .get(format!("http://127.0.0.1:{}/healthz", address.port()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("response").status().is_success());
    gateway.shutdown().await;
}

/// `/metrics` is Prometheus text by the book (this crate's strict check, and Python's
/// prometheus_client as a parser parkguard did not write), lists exactly the families
/// docs/metrics.md describes, and has every configured sink, connection and route and every
/// label value from the first scrape, at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_exposition_format_and_the_reference_from_the_start() {
    // Servers that are never there: what matters is that their series exist before anything
    // happened on them.
    let extra = r#"
[[influx]]
name = "i"
url = "http://127.0.0.1:9"
api = "v1"
database = "pg"

[[modbus]]
name = "bus"
transport = "tcp"
address = "127.0.0.1:9"
units = []

[alerts]
[[alerts.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
[[alerts.routes]]
name = "operators"
channels = ["hook"]
"#;
    let (_mosquitto, _dir, gateway, _tokens) = start(extra).await;
    let text = client()
        .get(format!("{}/metrics", web_url(&gateway)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    let problems = parkguard::metrics::check_exposition(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");

    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let documented: std::collections::BTreeSet<String> =
        parkguard::metrics::documented_families(&docs)
            .into_iter()
            .collect();
    let exposed: std::collections::BTreeSet<String> = parkguard::metrics::exposed_families(&text)
        .into_iter()
        .collect();
    assert_eq!(
        exposed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported but not in docs/metrics.md"
    );
    assert_eq!(
        documented.difference(&exposed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in docs/metrics.md but not exported"
    );

    for series in [
        r#"parkguard_decode_errors_total{reason="bad_json"} 0"#,
        r#"parkguard_alarms{state="unacknowledged",severity="critical"} 0"#,
        r#"parkguard_alarms{state="shelved",severity="none"} 0"#,
        r#"parkguard_outbox_oldest_age_seconds{sink="i"} 0"#,
        r#"parkguard_sink_write_requests_total{sink="i",result="failed"} "#,
        r#"parkguard_modbus_requests_total{connection="bus",result="timeout"} 0"#,
        r#"parkguard_modbus_units{connection="bus"} 0"#,
        r#"parkguard_alerts_oldest_critical_age_seconds{route="operators"} 0"#,
        r#"parkguard_alerts_finished_total{result="given_up"} 0"#,
        r#"parkguard_mqtt_connected{connection="park"} 1"#,
        r#"parkguard_store_failing{store="journal"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(text.contains(&format!(
        "parkguard_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    )));

    let python = std::env::var("PARKGUARD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("PARKGUARD_TEST_PYTHON is not set: run ./scripts/test, which makes a virtual environment with prometheus-client")
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/prometheus_parse.py"
    );
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("python ran");
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prometheus_client: {}\n{parsed}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(parsed.lines().count(), exposed.len(), "{parsed}");
    gateway.shutdown().await;
}
