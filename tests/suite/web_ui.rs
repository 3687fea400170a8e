//! The operators' board in real headless Chromium (Debian's chromium and chromium-driver,
//! driven over WebDriver): log in; a reading over a threshold published to mosquitto appears on
//! the open board within a second without a reload; acknowledge it with a comment and see the
//! state change and the journal name the operator; a viewer gets no acknowledge button and is
//! refused by the API; a device named like an HTML tag renders as text. A screenshot of the
//! board, the journal and the device list are saved as test artefacts (`target/tmp/web-*.png`).

use crate::support;

use std::time::{Duration, Instant};

use fantoccini::Locator;
use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::json;
use support::browser::{browser, click, log_in, wait_script};
use support::*;

/// Device id (and so topic level and board text) that would run script if it were HTML.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn site_text(mqtt_port: u16) -> String {
    format!(
        r#"{header}[[devices]]
id = "{HOSTILE}"
location = "l"
profile = "adw300_json"

[[rule_overrides]]
rule = "R1"
on_delay_s = 0
off_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-web-ui-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"

[alerts]
[[alerts.channels]]
name = "duty-desk"
type = "webhook"
url = "http://127.0.0.1:9/parkguard"
[[alerts.routes]]
name = "operators"
channels = ["duty-desk"]

{web}"#,
        header = site_header("l", ""),
        web = web_section(&[
            ("olga", "operator", "operator-pass"),
            ("victor", "viewer", "viewer-pass"),
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_an_alarm_live_acknowledges_it_and_a_viewer_cannot() {
    let mosquitto = mosquitto();
    let (_dir, path) = site(&site_text(mosquitto.port));
    let config = Config::load(&path).expect("valid site");
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    let url = web_url(&gateway);
    let driver = chromedriver();
    let client = browser(&driver).await;

    log_in(&client, &url, "olga", "operator-pass").await;
    // Chinese by default.
    let tab = client
        .find(Locator::Css("[data-tab=board]"))
        .await
        .expect("board tab");
    assert_eq!(tab.text().await.expect("tab text"), "报警");

    let topic = format!("park/p/meter/{HOSTILE}/up");
    mosquitto_pub(mosquitto.port, &topic, &[meter(20.0).as_bytes()]);
    mosquitto_pub(mosquitto.port, &topic, &[meter(650.0).as_bytes()]);
    let published = Instant::now();
    wait_script(
        &client,
        "the leakage alarm on the board",
        "return document.querySelectorAll('#board tbody tr[data-key^=\"R1/\"]').length === 1",
    )
    .await;
    let shown_after = published.elapsed();
    assert!(
        shown_after < Duration::from_secs(1),
        "the alarm took {shown_after:?} to appear on the open board"
    );

    // The hostile device id is text, not markup: no image element, and the cell reads as typed.
    let images = client
        .execute(
            "return document.querySelectorAll('#board img').length",
            vec![],
        )
        .await
        .expect("count images");
    assert_eq!(images, json!(0));
    let row = client
        .find(Locator::Css("#board tbody tr[data-key^=\"R1/\"]"))
        .await
        .expect("alarm row");
    let device_cell = row
        .find(Locator::Css(".device-name"))
        .await
        .expect("device cell");
    assert!(device_cell
        .text()
        .await
        .expect("device text")
        .starts_with(HOSTILE));
    let state = row.find(Locator::Css(".state")).await.expect("state cell");
    assert_eq!(state.text().await.expect("state"), "未确认");

    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-board.png"), png).expect("save screenshot");

    // Acknowledge with a comment.
    row.find(Locator::Css("button.ack"))
        .await
        .expect("acknowledge button")
        .click()
        .await
        .expect("click acknowledge");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#dialog[open] #dialog-comment"))
        .await
        .expect("dialog")
        .send_keys("电工已到现场")
        .await
        .expect("type comment");
    client
        .find(Locator::Css("#dialog-ok"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click confirm");
    wait_script(
        &client,
        "the alarm shown acknowledged",
        "const r = document.querySelector('#board tbody tr[data-key^=\"R1/\"]'); \
         return !!r && r.querySelector('.state').textContent === '已确认' && !r.querySelector('button.ack')",
    )
    .await;

    // Its pushes under the row: the raise and the acknowledgement, waiting for a receiver that
    // refuses connections.
    click(&client, "#board tbody tr[data-key^=\"R1/\"] button.pushes").await;
    wait_script(
        &client,
        "the alarm's pushes, pending",
        "const rows = [...document.querySelectorAll('#board tr.pushes-row tr.push-pending')]; \
         return rows.length === 2 && rows.every(r => r.textContent.includes('operators') \
           && r.textContent.includes('duty-desk') && r.textContent.includes('待发送'))",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-pushes.png"), png).expect("save screenshot");
    click(&client, "#board tbody tr[data-key^=\"R1/\"] button.pushes").await;

    // At a critical level it cannot be shelved: no button, and the API says why.
    let shelve_buttons = client
        .execute(
            "return document.querySelectorAll('#board tbody tr[data-key^=\"R1/\"] button.shelve').length",
            vec![],
        )
        .await
        .expect("count shelve buttons");
    assert_eq!(
        shelve_buttons,
        json!(0),
        "no shelve button on a critical alarm"
    );
    let refused = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             const key = document.querySelector('#board tbody tr[data-key^=\"R1/\"]').dataset.key; \
             api('POST', '/api/commands', {target: 'alarm', id: key, command: 'shelve', minutes: 30, reason: 'x'}) \
               .then(() => done('accepted'), e => done(e.message));",
            vec![],
        )
        .await
        .expect("shelve through the page's API helper");
    assert!(
        refused
            .as_str()
            .is_some_and(|m| m.contains("cannot be shelved")),
        "a critical alarm's shelving is refused with its reason: {refused}"
    );

    // Back at the alarm level (350 mA) it can: it leaves the board, stays visible on
    // request, and comes back unshelved.
    mosquitto_pub(mosquitto.port, &topic, &[meter(350.0).as_bytes()]);
    wait_script(
        &client,
        "the alarm at the high level, with a shelve button",
        "return !!document.querySelector('#board tbody tr[data-key^=\"R1/\"] button.shelve')",
    )
    .await;
    click(&client, "#board tbody tr[data-key^=\"R1/\"] button.shelve").await;
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#dialog[open] #dialog-reason"))
        .await
        .expect("shelve dialog")
        .send_keys("传感器检修")
        .await
        .expect("type reason");
    click(&client, "#dialog-ok").await;
    wait_script(
        &client,
        "the shelved alarm off the board",
        "return document.querySelectorAll('#board tbody tr').length === 0",
    )
    .await;
    click(&client, "#show-hidden").await;
    click(&client, "#board tbody tr.hidden-alarm button.unshelve").await;
    click(&client, "#dialog[open] #dialog-ok").await;
    click(&client, "#show-hidden").await;
    wait_script(
        &client,
        "the unshelved alarm back on the board",
        "return document.querySelectorAll('#board tbody tr[data-key^=\"R1/\"]:not(.hidden-alarm)').length === 1",
    )
    .await;

    // The journal names the operator and carries the comment.
    client
        .find(Locator::Css("[data-tab=journal]"))
        .await
        .expect("journal tab")
        .click()
        .await
        .expect("open journal");
    wait_script(
        &client,
        "the acknowledgement in the journal",
        "return [...document.querySelectorAll('#journal tbody tr')].some(r => \
           r.querySelector('.operator').textContent === 'olga' && r.textContent.includes('电工已到现场'))",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-journal.png"), png).expect("save screenshot");

    // Devices: grouped by place, with status, last values and a chart of recent history.
    client
        .find(Locator::Css("[data-tab=devices]"))
        .await
        .expect("devices tab")
        .click()
        .await
        .expect("open devices");
    wait_script(
        &client,
        "the device in alarm with its last values",
        "const d = document.querySelector('#device-tree .device'); \
         return !!d && d.querySelector('.badge').textContent === '报警' \
           && d.querySelector('.values').textContent.includes('剩余电流 350 mA') \
           && document.querySelectorAll('#device-tree img').length === 0",
    )
    .await;
    client
        .find(Locator::Css("#device-tree .device"))
        .await
        .expect("device row")
        .click()
        .await
        .expect("open device");
    wait_script(
        &client,
        "the history chart",
        "return !!document.querySelector('#chart .uplot canvas') \
           && document.getElementById('detail-quantity').value !== ''",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-devices.png"), png).expect("save screenshot");

    // English on request.
    client
        .find(Locator::Css("#lang"))
        .await
        .expect("language button")
        .click()
        .await
        .expect("switch language");
    assert_eq!(
        client
            .find(Locator::Css("[data-tab=board]"))
            .await
            .expect("board tab")
            .text()
            .await
            .expect("text"),
        "Alarms"
    );

    // A viewer sees the alarm (and may look at its pushes) but has no command buttons, and the
    // API refuses its acknowledgement.
    client
        .find(Locator::Css("#logout"))
        .await
        .expect("logout")
        .click()
        .await
        .expect("log out");
    client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#login-view:not([hidden])"))
        .await
        .expect("login form again");
    log_in(&client, &url, "victor", "viewer-pass").await;
    wait_script(
        &client,
        "the alarm on the viewer's board",
        "return document.querySelectorAll('#board tbody tr[data-key^=\"R1/\"]').length === 1",
    )
    .await;
    let buttons = client
        .execute(
            "return document.querySelectorAll('#board button:not(.pushes)').length",
            vec![],
        )
        .await
        .expect("count buttons");
    assert_eq!(buttons, json!(0));
    let status = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             const key = document.querySelector('#board tbody tr').dataset.key; \
             fetch('/api/session').then(r => r.json()).then(me => fetch('/api/commands', { \
               method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf }, \
               body: JSON.stringify({ id: key, command: 'acknowledge' }) })) \
             .then(r => done(r.status))",
            vec![],
        )
        .await
        .expect("viewer's acknowledge");
    assert_eq!(status, json!(403));

    client.close().await.expect("close the browser");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technician_reads_tests_and_signs_off_a_device_and_an_operator_cannot() {
    use parkguard::decode::registers::Area;
    use parkguard::sim::modbus::SimulatedBus;
    // A P5 gas detector at 30 %LEL, its float word-swapped as the profile says.
    let bus = SimulatedBus::new([1]);
    let bits = 30.0f32.to_bits();
    bus.unit(1).expect("unit").set_words(
        Area::Holding,
        0,
        &[
            300,
            1,
            1,
            1,
            250,
            500,
            0,
            1800,
            (bits & 0xffff) as u16,
            (bits >> 16) as u16,
        ],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let modbus = listener.local_addr().expect("addr");
    tokio::spawn(bus.clone().serve_tcp(listener));
    let text = format!(
        "{}[[devices]]\nid = \"g1\"\nlocation = \"l\"\nprofile = \"gas_detector_lel\"\nname = \"厨房燃气探测器\"\n\
         [[modbus]]\nname = \"bus\"\ntransport = \"tcp\"\naddress = \"{modbus}\"\ntimeout_ms = 500\n\
         [[modbus.units]]\ndevice = \"g1\"\nunit_id = 1\n\n{}",
        site_header("l", ""),
        web_section(&[
            ("tina", "technician", "technician-pass"),
            ("olga", "operator", "operator-pass"),
        ])
    );
    let (_dir, path) = site(&text);
    let config = Config::load(&path).expect("valid site");
    let gateway = Gateway::start(config).await.expect("start");
    let url = web_url(&gateway);
    let driver = chromedriver();
    let client = browser(&driver).await;

    // An operator has no commissioning tab, and the API refuses the read.
    log_in(&client, &url, "olga", "operator-pass").await;
    wait_script(
        &client,
        "the commissioning tab hidden",
        "return document.querySelector('[data-tab=commissioning]').hidden",
    )
    .await;
    let status = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/api/session').then(r => r.json()).then(me => fetch('/api/commissioning/read', { \
               method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf }, \
               body: JSON.stringify({ device: 'g1', area: 'holding', address: 0, count: 2 }) })) \
             .then(r => done(r.status))",
            vec![],
        )
        .await
        .expect("operator's read");
    assert_eq!(status, json!(403));
    click(&client, "#logout").await;

    log_in(&client, &url, "tina", "technician-pass").await;
    click(&client, "[data-tab=commissioning]").await;
    wait_script(
        &client,
        "the gas detector offered",
        "return document.getElementById('comm-device').value === 'g1'",
    )
    .await;
    client
        .execute(
            "document.getElementById('comm-address').value = '8'; \
             document.getElementById('comm-count').value = '2';",
            vec![],
        )
        .await
        .expect("fill the read form");
    click(&client, "#comm-read").await;
    wait_script(
        &client,
        "the words and the word-order table",
        "const rows = document.getElementById('comm-orders').textContent.split('\\n'); \
         const f32 = rows.find(r => r.trim().startsWith('f32')); \
         return !!f32 && f32.trim().split(/\\s+/)[2] === '30'",
    )
    .await;
    click(&client, "#comm-profile-test").await;
    wait_script(
        &client,
        "the profile test",
        "return [...document.querySelectorAll('#comm-checks tr')].some(r => \
           r.cells[0].textContent === 'lel' && r.cells[1].textContent === '30' \
           && r.querySelector('.verdict').textContent.startsWith('ok'))",
    )
    .await;
    client
        .find(Locator::Css("#comm-firmware"))
        .await
        .expect("firmware field")
        .send_keys("2.1.0")
        .await
        .expect("type firmware");
    client
        .find(Locator::Css("#comm-notes"))
        .await
        .expect("notes field")
        .send_keys("零点标定完成")
        .await
        .expect("type notes");
    click(&client, "#comm-signoff").await;
    wait_script(
        &client,
        "the sign-off recorded",
        "return document.getElementById('comm-signoff-result').textContent.includes('tina')",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-commissioning.png"),
        png,
    )
    .expect("save screenshot");
    click(&client, "[data-tab=devices]").await;
    wait_script(
        &client,
        "the sign-off on the device list",
        "const d = document.querySelector('#device-tree .device[data-device=g1]'); \
         return !!d && d.querySelector('.signoff').textContent.includes('tina')",
    )
    .await;
    client.close().await.expect("close the browser");
    gateway.shutdown().await;
}
