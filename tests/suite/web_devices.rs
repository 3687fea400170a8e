//! The device list and device page as the duty room reads them, in real headless Chromium:
//! quantities by their profile's names (Chinese, then English) with their units, the two to
//! four primary values per device, the one in alarm coloured, filters and search, a device
//! page with its values grouped by role (settings and counters there only), and the list at
//! 375 px. Screenshots: `target/tmp/web-devices-list.png`, `web-devices-detail.png`,
//! `web-devices-375.png`.

use crate::support;

use fantoccini::Locator;
use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value as Json};
use support::browser::{browser, click, log_in, wait_script};
use support::*;

fn site_text(mqtt_port: u16) -> String {
    format!(
        r#"{header}[[devices]]
id = "m1"
name = "1号配电箱"
location = "l"
profile = "adw300_json"

[[devices]]
id = "s1"
name = "仓库烟感"
location = "l"
profile = "nb_smoke"

[[rule_overrides]]
rule = "R1"
on_delay_s = 0
off_delay_s = 0

[[mqtt]]
name = "park"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "pg-web-devices-{mqtt_port}"
[[mqtt.subscriptions]]
topic = "park/{{park}}/meter/{{device}}/up"
profile = "adw300_json"
[[mqtt.subscriptions]]
topic = "park/{{park}}/smoke/{{device}}/up"
profile = "nb_smoke"

{web}"#,
        header = site_header("l", ""),
        web = web_section(&[("olga", "operator", "operator-pass")]),
    )
}

/// The text of the list row of `device`.
async fn row_text(client: &fantoccini::Client, device: &str) -> String {
    let value = client
        .execute(
            "const r = document.querySelector(`#device-tree .device[data-device=\"${arguments[0]}\"]`); return r ? r.innerText : null",
            vec![json!(device)],
        )
        .await
        .expect("row text");
    value.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_and_page_show_named_quantities_with_units_and_the_one_in_alarm() {
    let mosquitto = mosquitto();
    let (_dir, path) = site(&site_text(mosquitto.port));
    let gateway = Gateway::start(Config::load(&path).expect("valid site"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "park", 2).await;
    let url = web_url(&gateway);

    // The profiles' names, as the API gives them to any logged-in role.
    let (cookie, _csrf) = api_log_in(&url, "olga", "operator-pass").await;
    let profiles: Json = reqwest::Client::new()
        .get(format!("{url}/api/profiles"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("profiles")
        .json()
        .await
        .expect("profiles JSON");
    let leakage = profiles["adw300_json"]["quantities"]
        .as_array()
        .expect("quantities")
        .iter()
        .find(|q| q["id"] == "leakage")
        .cloned()
        .expect("leakage named");
    assert_eq!(leakage["zh"], "剩余电流");
    assert_eq!(leakage["en"], "Residual current");
    assert_eq!(leakage["primary"], true);
    assert_eq!(leakage["role"], "measurement");

    // A residual current of 650 mA: R1 at its critical level on `leakage`.
    mosquitto_pub(
        mosquitto.port,
        "park/p/meter/m1/up",
        &[meter(650.0).as_bytes()],
    );
    let smoke = format!(
        r#"{{"dev":"s1","ts":{},"event":"heartbeat","seq":17,"smoke_pct":0.5,"battery_pct":93,"rsrp_dbm":-95,"hb_interval_s":14400}}"#,
        now_s()
    );
    mosquitto_pub(mosquitto.port, "park/p/smoke/s1/up", &[smoke.as_bytes()]);

    let driver = chromedriver();
    let client = browser(&driver).await;
    log_in(&client, &url, "olga", "operator-pass").await;
    wait_script(
        &client,
        "the leakage alarm on the board",
        "return document.querySelectorAll('#board tbody tr[data-key^=\"R1/m1\"]').length === 1",
    )
    .await;
    // The board names the quantity and gives the value its unit.
    let board_row = client
        .execute(
            "return document.querySelector('#board tbody tr[data-key^=\"R1/m1\"]').innerText",
            vec![],
        )
        .await
        .expect("board row");
    let board_row = board_row.as_str().unwrap_or_default();
    assert!(board_row.contains("1号配电箱"), "{board_row}");
    assert!(board_row.contains("剩余电流"), "{board_row}");
    assert!(board_row.contains("650 mA"), "{board_row}");

    click(&client, "[data-tab=devices]").await;
    wait_script(
        &client,
        "both devices listed with values",
        "return document.querySelectorAll('#device-tree .device .value').length >= 5",
    )
    .await;
    let meter_row = row_text(&client, "m1").await;
    for shown in [
        "1号配电箱",
        "剩余电流",
        "650 mA",
        "线缆温度1",
        "35.5 °C",
        "A相电流",
        "12.5 A",
        "总有功功率",
    ] {
        assert!(
            meter_row.contains(shown),
            "`{shown}` in the meter's row: {meter_row}"
        );
    }
    // Only the primary values: no raw ids, no other phases.
    for hidden in ["leakage", "ua", "B相电流", "线缆温度4"] {
        assert!(
            !meter_row.contains(hidden),
            "`{hidden}` not in the list: {meter_row}"
        );
    }
    let alarmed = client
        .execute(
            "return [...document.querySelectorAll('#device-tree .device[data-device=\"m1\"] .value-alarm')].map(e => e.dataset.quantity)",
            vec![],
        )
        .await
        .expect("alarmed values");
    assert_eq!(
        alarmed,
        json!(["leakage"]),
        "only the value in alarm is coloured"
    );
    let colour = client
        .execute(
            "return getComputedStyle(document.querySelector('#device-tree .value-alarm b')).color",
            vec![],
        )
        .await
        .expect("colour");
    assert_eq!(colour, json!("rgb(185, 28, 28)"), "critical is red");
    let smoke_row = row_text(&client, "s1").await;
    for shown in [
        "仓库烟感",
        "事件",
        "heartbeat",
        "烟雾浓度",
        "0.5 %",
        "电池电量",
        "93 %",
    ] {
        assert!(
            smoke_row.contains(shown),
            "`{shown}` in the smoke detector's row: {smoke_row}"
        );
    }
    for hidden in ["心跳间隔", "报文序号", "14400"] {
        assert!(
            !smoke_row.contains(hidden),
            "settings and counters are not listed: {smoke_row}"
        );
    }
    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-devices-list.png"), png).expect("save screenshot");

    // Filters: by status, then by search.
    let shown =
        "return [...document.querySelectorAll('#device-tree .device')].map(e => e.dataset.device)";
    client
        .execute(
            "const s = document.getElementById('device-status'); s.value = 'alarm'; s.dispatchEvent(new Event('change')); return true",
            vec![],
        )
        .await
        .expect("filter by status");
    assert_eq!(
        client.execute(shown, vec![]).await.expect("shown"),
        json!(["m1"])
    );
    client
        .execute(
            "const s = document.getElementById('device-status'); s.value = ''; s.dispatchEvent(new Event('change')); return true",
            vec![],
        )
        .await
        .expect("clear the status filter");
    client
        .find(Locator::Css("#device-search"))
        .await
        .expect("search field")
        .send_keys("烟感")
        .await
        .expect("type");
    assert_eq!(
        client.execute(shown, vec![]).await.expect("shown"),
        json!(["s1"])
    );

    // The smoke detector's page: every value, grouped by role, settings and counters included.
    click(&client, "#device-tree .device[data-device=\"s1\"]").await;
    wait_script(
        &client,
        "the device page",
        "return !document.getElementById('device-detail').hidden && document.querySelectorAll('#detail-values .role-head').length >= 3",
    )
    .await;
    let groups = client
        .execute(
            "return [...document.querySelectorAll('#detail-values tr')].map(r => r.classList.contains('role-head') ? '# ' + r.innerText : r.cells[0].innerText)",
            vec![],
        )
        .await
        .expect("detail rows");
    assert_eq!(
        groups,
        json!([
            "# 测量值",
            "烟雾浓度",
            "电池电量",
            "信号强度",
            "# 状态",
            "事件",
            "# 设定值",
            "心跳间隔",
            "# 计数",
            "报文序号",
        ]),
        "grouped by role, in the profile's order"
    );
    // Its link, sign-off and (no) alarms under the values.
    wait_script(
        &client,
        "the smoke detector's link and sign-off",
        "return document.querySelector('#detail-more .detail-link').textContent === 'MQTT park · park/{park}/smoke/{device}/up' \
           && document.querySelector('#detail-more .detail-signoff').textContent === '尚未调试签字' \
           && !document.querySelector('#detail-more .detail-alarms')",
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-devices-detail.png"), png).expect("save screenshot");

    // English.
    click(&client, "#lang").await;
    wait_script(
        &client,
        "English names",
        "return document.getElementById('detail-values').innerText.includes('Heartbeat interval')",
    )
    .await;
    client
        .find(Locator::Css("#device-search"))
        .await
        .expect("search field")
        .clear()
        .await
        .expect("clear");
    client
        .execute(
            "document.getElementById('device-search').dispatchEvent(new Event('input')); return true",
            vec![],
        )
        .await
        .expect("search cleared");
    let meter_row = row_text(&client, "m1").await;
    assert!(meter_row.contains("Residual current"), "{meter_row}");
    assert!(meter_row.contains("Cable temperature 1"), "{meter_row}");
    // The meter's page: its alarm and the alarm's journal entry.
    click(&client, "#device-tree .device[data-device=\"m1\"]").await;
    wait_script(
        &client,
        "the meter's alarm and journal on its page",
        "return !!document.querySelector('#detail-more .detail-alarms li[data-key^=\"R1/m1\"]') \
           && document.querySelector('#detail-more .detail-alarms li').textContent.includes('Residual current') \
           && document.querySelectorAll('#detail-more .detail-journal li').length >= 1",
    )
    .await;

    // A phone: the list fits 375 px without scrolling sideways.
    client
        .set_window_size(375, 812)
        .await
        .expect("phone-sized window");
    wait_script(
        &client,
        "a phone-sized layout",
        "return document.documentElement.clientWidth <= 400",
    )
    .await;
    let beyond = "const page = document.documentElement.clientWidth; \
         return [...document.querySelectorAll('header *, #devices-view *')] \
           .every(e => e.getBoundingClientRect().right <= page + 1)";
    // The chart is drawn again for the narrower window.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while client.execute(beyond, vec![]).await.expect("widths") != json!(true)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots.join("web-devices-375.png"), png).expect("save screenshot");
    let widths = client
        .execute(
            "const page = document.documentElement.clientWidth; \
             const wider = [...document.querySelectorAll('header *, #devices-view *')] \
               .filter(e => e.getBoundingClientRect().right > page + 1) \
               .map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`); \
             return { page, wider: wider.slice(0, 8) }",
            vec![],
        )
        .await
        .expect("widths");
    assert_eq!(
        widths["wider"],
        json!([]),
        "nothing of the header or the device view beyond the screen: {widths}"
    );
    let _ = client.close().await;
    gateway.shutdown().await;
}
