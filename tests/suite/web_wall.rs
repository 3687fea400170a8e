//! The duty room's wall display (`/#wall`) in real headless Chromium at 1920x1080, against a
//! daemon fed by real mosquitto: opened by a kiosk with a viewer token in the address's
//! fragment, it shows the counts by severity and the enterprises as tiles; a critical alarm
//! published to mosquitto is on the wall within a second, with its place, and sounds; after the
//! daemon is shut down it says it is disconnected, and once the daemon is back on the same port
//! it logs in again by itself and shows a new alarm without a reload, and a smoke alarm as a
//! fire waiting for its verdict; a network that goes silent (a relay that stops passing bytes)
//! is noticed and recovered from without a reload. A viewer who logs in with
//! a password opens it too; a token of a higher role opens no browser session. Screenshots:
//! `target/tmp/web-wall.png`, `web-wall-en.png`, `web-wall-disconnected.png`, `web-wall-fire.png`.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::browser::{browser, click, wait_script, wait_script_for};
use support::*;

/// An enterprise name that would be markup if it were inserted as HTML.
const HOSTILE: &str = "<b>恒达</b>物流";

fn site_text(mqtt_port: u16, web_port: u16, wall_token: &str, operator_token: &str) -> String {
    let web = web_section(&[("victor", "viewer", "viewer-pass")]).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{web_port}\""),
    );
    format!(
        r#"[gateway]
profiles_dir = "profiles"

[[parks]]
id = "p"
name = "高新园区"
[[enterprises]]
id = "e1"
park = "p"
name = "华强电子厂"
[[enterprises]]
id = "e2"
park = "p"
name = "{HOSTILE}"
[[locations]]
id = "l1"
enterprise = "e1"
name = "1号配电室"
[[locations]]
id = "l2"
enterprise = "e2"
name = "仓库"

[[devices]]
id = "m1"
name = "1号配电箱"
location = "l1"
profile = "adw300_json"
[[devices]]
id = "m2"
location = "l1"
profile = "adw300_json"
[[devices]]
id = "m3"
name = "仓库配电箱"
location = "l2"
profile = "adw300_json"
[[devices]]
id = "s1"
name = "仓库烟感"
location = "l2"
profile = "nb_smoke"

[[rule_overrides]]
rule = "R1"
on_delay_s = 0
off_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-web-wall-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"

{web}
[[web.tokens]]
name = "duty-room-wall"
role = "viewer"
token_sha256 = "{wall}"
[[web.tokens]]
name = "scada"
role = "operator"
token_sha256 = "{operator}"
"#,
        wall = parkguard::web::token_sha256_hex(wall_token),
        operator = parkguard::web::token_sha256_hex(operator_token),
    )
}

/// Starts the gateway on a web port of its own, fixed in the site file so that it can be
/// started again on it; another port is tried if the reserved one was taken meanwhile.
async fn start_on_a_fixed_port(
    mqtt_port: u16,
    wall_token: &str,
    operator_token: &str,
) -> (tempfile::TempDir, PathBuf, Gateway, u16) {
    let mut last_error = String::new();
    for _ in 0..5 {
        let (port, socket) = reserved_port();
        // Released just before the gateway binds it.
        drop(socket);
        let (dir, path) = site(&site_text(mqtt_port, port, wall_token, operator_token));
        match Gateway::start(Config::load(&path).expect("valid site")).await {
            Ok(gateway) => return (dir, path, gateway, port),
            Err(err) => {
                last_error = format!("{err:#}");
                eprintln!("starting on port {port}: {last_error}");
            }
        }
    }
    panic!("no web port of our own in 5 attempts: {last_error}");
}

/// Starts the gateway again on the port it had (retrying while the port is still held).
async fn start_again(path: &Path, port: u16) -> Gateway {
    tokio::task::spawn_blocking(move || wait_port_free(port))
        .await
        .expect("join");
    let mut last_error = String::new();
    for _ in 0..10 {
        match Gateway::start(Config::load(path).expect("valid site")).await {
            Ok(gateway) => return gateway,
            Err(err) => {
                last_error = format!("{err:#}");
                eprintln!("starting again on port {port}: {last_error}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the gateway did not start again on port {port}: {last_error}");
}

async fn script(client: &Client, code: &str) -> Value {
    client.execute(code, vec![]).await.expect("run script")
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join(name), png)
        .expect("save screenshot");
}

/// Publishes `leakage` mA for `device` and returns when the wall lists it among the
/// unacknowledged criticals, and how long that took after the publisher returned.
async fn raise_and_time(client: &Client, mqtt_port: u16, device: &str) -> Duration {
    let topic = format!("park/p/meter/{device}/up");
    mosquitto_pub(mqtt_port, &topic, &[meter(650.0).as_bytes()]);
    let published = Instant::now();
    wait_script(
        client,
        &format!("{device}'s critical alarm on the wall"),
        &format!(
            "return !!document.querySelector('#wall-criticals .wall-alarm[data-key^=\"R1/{device}/\"]')"
        ),
    )
    .await;
    published.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_shows_a_new_critical_within_a_second_and_recovers_after_a_restart() {
    let mosquitto = mosquitto();
    let wall_token = parkguard::web::random_token();
    let operator_token = parkguard::web::random_token();
    let (_dir, path, gateway, port) =
        start_on_a_fixed_port(mosquitto.port, &wall_token, &operator_token).await;
    wait_subscribed(&gateway, "park", 2).await;
    let url = format!("http://127.0.0.1:{port}");
    for device in ["m1", "m3"] {
        let topic = format!("park/p/meter/{device}/up");
        mosquitto_pub(mosquitto.port, &topic, &[meter(20.0).as_bytes()]);
    }

    // Only a viewer token opens a browser session; an unknown one is refused.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let login_token = |token: String| {
        http.post(format!("{url}/api/login/token"))
            .json(&json!({ "token": token }))
            .send()
    };
    let refused = login_token(operator_token.clone()).await.expect("send");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get("set-cookie").is_none());
    let unknown = login_token("not-a-token".into()).await.expect("send");
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let accepted = login_token(wall_token.clone()).await.expect("send");
    assert_eq!(accepted.status(), StatusCode::OK);
    let cookie = accepted
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let me: Value = accepted.json().await.expect("caller");
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["name"], "duty-room-wall");

    // Both meters heard from before the wall opens (a device's first reading changes no alarm,
    // so the wall learns of it only at its next re-read of the list).
    let session = cookie.split(';').next().expect("cookie pair").to_string();
    eventually("m1 and m3 seen", Duration::from_secs(10), || {
        let request = http
            .get(format!("{url}/api/devices"))
            .header("cookie", &session)
            .send();
        async move {
            let devices: Value = request.await.expect("devices").json().await.expect("JSON");
            devices
                .as_array()
                .is_some_and(|list| list.iter().filter(|d| d["status"] == "ok").count() == 2)
        }
    })
    .await;

    let driver = chromedriver();
    let client = browser(&driver).await;
    client
        .set_window_size(1920, 1080)
        .await
        .expect("a 1920x1080 window");
    // The kiosk's address: the token after the #, which the browser never sends.
    client
        .goto(&format!("{url}/#wall?token={wall_token}"))
        .await
        .expect("open the wall");
    wait_script(
        &client,
        "the wall connected, with its counts and two enterprise tiles",
        "return app.wall.connected && document.querySelectorAll('#wall-counts .wall-count').length === 5 \
           && document.querySelectorAll('#wall-tiles .wall-tile').length === 2 \
           && document.querySelectorAll('#wall-chart .bar').length === 24",
    )
    .await;
    assert_eq!(
        script(&client, "return location.hash").await,
        json!("#wall"),
        "the token is taken out of the address bar"
    );
    // The page itself at 1920x1080: the window made larger by what the browser takes.
    let frame = script(
        &client,
        "return [outerWidth - innerWidth, outerHeight - innerHeight]",
    )
    .await;
    let extra = |i: usize| frame[i].as_u64().unwrap_or(0) as u32;
    client
        .set_window_size(1920 + extra(0), 1080 + extra(1))
        .await
        .expect("a 1920x1080 page");
    wait_script(
        &client,
        "a 1920x1080 page",
        "return innerWidth === 1920 && innerHeight === 1080",
    )
    .await;
    // Chinese by default; nothing of the board's header on the wall.
    assert_eq!(
        script(
            &client,
            "return document.querySelector('.wall-criticals-panel h2').textContent"
        )
        .await,
        json!("未确认紧急报警")
    );
    assert_eq!(
        script(
            &client,
            "return document.querySelector('header').offsetHeight"
        )
        .await,
        json!(0)
    );
    let tiles = script(
        &client,
        "return [...document.querySelectorAll('#wall-tiles .wall-tile')].map(t => \
           [t.dataset.enterprise, t.dataset.status, t.querySelector('.tile-name').textContent])",
    )
    .await;
    assert_eq!(
        tiles,
        json!([["e1", "ok", "华强电子厂"], ["e2", "ok", HOSTILE]]),
        "the enterprises as tiles, the hostile name as text"
    );
    assert_eq!(
        script(
            &client,
            "return document.querySelectorAll('#wall b').length"
        )
        .await,
        json!(0)
    );

    // Sound on (the click is the gesture the browser wants before it plays anything).
    click(&client, "#wall-sound").await;
    let beeps_before = script(&client, "return app.beeps").await;

    let shown_after = raise_and_time(&client, mosquitto.port, "m1").await;
    assert!(
        shown_after < Duration::from_secs(1),
        "the critical alarm took {shown_after:?} to appear on the wall"
    );
    wait_script(
        &client,
        "the count, the tile and the chart after the alarm",
        "return document.querySelector('#wall-counts [data-severity=critical]').dataset.count === '1' \
           && document.querySelector('#wall-tiles [data-enterprise=e1]').dataset.status === 'alarm' \
           && [...document.querySelectorAll('#wall-chart .bar')].some(b => b.dataset.critical === '1')",
    )
    .await;
    let row = script(
        &client,
        "return document.querySelector('#wall-criticals .wall-alarm[data-key^=\"R1/m1/\"]').innerText",
    )
    .await;
    let row = row.as_str().unwrap_or_default();
    for shown in ["华强电子厂 / 1号配电室", "1号配电箱", "650 mA"] {
        assert!(row.contains(shown), "`{shown}` on the wall: {row}");
    }
    let beeps_after = script(&client, "return app.beeps").await;
    assert_eq!(
        beeps_after.as_i64(),
        beeps_before.as_i64().map(|n| n + 1),
        "one sound for the new critical"
    );
    // The whole wall fits the screen: nothing to scroll.
    assert_eq!(
        script(
            &client,
            "const d = document.documentElement; return d.scrollHeight <= innerHeight && d.scrollWidth <= innerWidth"
        )
        .await,
        json!(true)
    );
    screenshot(&client, "web-wall.png").await;

    // English with the language button, and back.
    click(&client, "#wall-lang").await;
    wait_script(
        &client,
        "the wall in English",
        "return document.querySelector('.wall-criticals-panel h2').textContent === 'Unacknowledged critical alarms' \
           && document.querySelector('#wall-counts [data-severity=critical] .label').textContent === 'Critical'",
    )
    .await;
    screenshot(&client, "web-wall-en.png").await;
    click(&client, "#wall-lang").await;

    // The daemon goes away: the wall says so, keeping what it showed.
    script(&client, "window.sameWall = true; return true").await;
    gateway.shutdown().await;
    wait_script(
        &client,
        "the wall showing it is disconnected",
        "return document.body.classList.contains('wall-offline') \
           && document.getElementById('wall-conn').textContent.includes('连接已中断')",
    )
    .await;
    screenshot(&client, "web-wall-disconnected.png").await;

    // Back on the same port (every session ended with it): the wall logs in again with its
    // token, reconnects and shows a new alarm, without a reload.
    let gateway = start_again(&path, port).await;
    // The session is persistent: the broker kept the subscriptions, so there is no SUBACK to
    // wait for, only the connection.
    let mqtt = gateway.metrics.mqtt("park");
    eventually("MQTT reconnected", Duration::from_secs(20), || {
        let mqtt = std::sync::Arc::clone(&mqtt);
        async move { mqtt.connected.load(std::sync::atomic::Ordering::Relaxed) }
    })
    .await;
    wait_script_for(
        &client,
        "the wall reconnected by itself",
        "return app.wall.connected && app.wall.reconnects >= 1 && app.wall.disconnects >= 1 \
           && !document.body.classList.contains('wall-offline') && window.sameWall === true",
        Duration::from_secs(30),
    )
    .await;
    let shown_after = raise_and_time(&client, mosquitto.port, "m3").await;
    assert_eq!(
        script(&client, "return window.sameWall === true").await,
        json!(true),
        "no reload"
    );
    println!(
        "after the restart, the new alarm was on the wall {shown_after:?} after it was published"
    );
    // A smoke alarm: a fire waiting for its verdict, newest first, marked as such.
    let smoke = format!(
        r#"{{"dev":"s1","ts":{},"event":"alarm","seq":18,"smoke_pct":12.5,"battery_pct":93,"rsrp_dbm":-95,"hb_interval_s":14400}}"#,
        now_s()
    );
    mosquitto_pub(mosquitto.port, "park/p/smoke/s1/up", &[smoke.as_bytes()]);
    wait_script(
        &client,
        "the smoke alarm first on the wall, as a fire waiting for its verdict",
        "const first = document.querySelector('#wall-criticals .wall-alarm'); \
         return !!first && first.dataset.key.startsWith('R13/s1') \
           && first.querySelector('.fire.pending').textContent.startsWith('待确认火警')",
    )
    .await;
    // The new alarm's value with its unit, once the wall has re-read the device's values.
    wait_script(
        &client,
        "m3's value with its unit",
        "return document.querySelector('#wall-criticals .wall-alarm[data-key^=\"R1/m3/\"]').innerText.includes('650 mA')",
    )
    .await;
    screenshot(&client, "web-wall-fire.png").await;
    wait_script(
        &client,
        "the second enterprise in alarm",
        "return document.querySelector('#wall-tiles [data-enterprise=e2]').dataset.status === 'alarm'",
    )
    .await;

    // The hourly counts, as the API gives them to a viewer token.
    let hourly: Value = http
        .get(format!("{url}/api/alarms/hourly"))
        .bearer_auth(&wall_token)
        .send()
        .await
        .expect("hourly")
        .json()
        .await
        .expect("hourly JSON");
    let hours = hourly["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 24);
    let raised: i64 = hours.iter().filter_map(|h| h["raised"].as_i64()).sum();
    let critical: i64 = hours.iter().filter_map(|h| h["critical"].as_i64()).sum();
    assert!(raised >= 2 && critical >= 2, "{hourly}");

    // A viewer who logs in with a password opens the wall too.
    client
        .delete_all_cookies()
        .await
        .expect("forget the session");
    script(&client, "sessionStorage.clear(); return true").await;
    client
        .goto(&format!("{url}/?viewer#wall"))
        .await
        .expect("open the wall again");
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#login-view:not([hidden]) #login-name"))
        .await
        .expect("login form")
        .send_keys("victor")
        .await
        .expect("type name");
    client
        .find(Locator::Css("#login-password"))
        .await
        .expect("password field")
        .send_keys("viewer-pass")
        .await
        .expect("type password");
    click(&client, "#login-submit").await;
    wait_script(
        &client,
        "the viewer's wall with the new alarm",
        "return app.wall.connected && app.me.role === 'viewer' && !document.getElementById('wall').hidden \
           && !!document.querySelector('#wall-criticals .wall-alarm[data-key^=\"R1/m3/\"]')",
    )
    .await;

    client.close().await.expect("close the browser");
    gateway.shutdown().await;
}

/// A TCP relay to the gateway whose "network" can be cut: while cut, connections open and
/// new ones hang in silence (nothing goes through, nothing is closed), as when a cable is
/// pulled; when restored, the hung ones are closed and new ones go through again.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let was_cut = *watch.borrow();
                    if !was_cut {
                        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = watch.wait_for(|cut| *cut) => {}
                        }
                    }
                    // Cut: hold the connection in silence until the network is back.
                    let _ = watch.wait_for(|cut| !*cut).await;
                });
            }
        });
        Relay { port, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_notices_a_silent_network_drop_and_recovers_without_a_reload() {
    let mosquitto = mosquitto();
    let wall_token = parkguard::web::random_token();
    let operator_token = parkguard::web::random_token();
    let (_dir, _path, gateway, port) =
        start_on_a_fixed_port(mosquitto.port, &wall_token, &operator_token).await;
    wait_subscribed(&gateway, "park", 2).await;
    let relay = Relay::start(([127, 0, 0, 1], port).into()).await;
    let url = format!("http://127.0.0.1:{}", relay.port);

    let driver = chromedriver();
    let client = browser(&driver).await;
    client
        .goto(&format!("{url}/#wall?token={wall_token}"))
        .await
        .expect("open the wall");
    wait_script(
        &client,
        "the wall connected through the relay",
        "return app.wall.connected && document.querySelectorAll('#wall-tiles .wall-tile').length === 2",
    )
    .await;
    script(&client, "window.sameWall = true; return true").await;

    // The cable is pulled: no error, no close, just silence. The wall's re-read every 10 s
    // gives up after 5 s and says it is disconnected.
    relay.set_cut(true);
    wait_script_for(
        &client,
        "the wall showing it is disconnected",
        "return document.body.classList.contains('wall-offline') && !app.wall.connected",
        Duration::from_secs(30),
    )
    .await;

    // Meanwhile an alarm is raised; once the network is back the wall reconnects and shows it.
    mosquitto_pub(
        mosquitto.port,
        "park/p/meter/m1/up",
        &[meter(650.0).as_bytes()],
    );
    relay.set_cut(false);
    wait_script_for(
        &client,
        "the wall reconnected, with the alarm raised while it was cut off",
        "return app.wall.connected && app.wall.reconnects >= 1 && window.sameWall === true \
           && !!document.querySelector('#wall-criticals .wall-alarm[data-key^=\"R1/m1/\"]')",
        Duration::from_secs(30),
    )
    .await;

    client.close().await.expect("close the browser");
    gateway.shutdown().await;
}
