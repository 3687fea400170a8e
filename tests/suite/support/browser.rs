//! A headless Chromium session over WebDriver (Debian's chromium and chromium-driver), and the
//! steps the web tests share.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::Server;

pub async fn browser(driver: &Server) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,900",
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .expect("start a Chromium session")
}

pub async fn log_in(client: &Client, url: &str, name: &str, password: &str) {
    client.goto(url).await.expect("open the page");
    let field = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#login-name"))
        .await
        .expect("login form");
    field.send_keys(name).await.expect("type name");
    client
        .find(Locator::Css("#login-password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type password");
    client
        .find(Locator::Css("#login-submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click log in");
    wait_script(client, "the board after login", "return !document.getElementById('tabs').hidden && document.getElementById('live').className.indexOf('off') < 0").await;
}

/// Clicks the element `css` finds once it is there. The live pages re-render (an event, the
/// device list arriving), so an element found can be replaced before the click lands: a
/// stale element is found again, for up to 5 s.
pub async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let element = client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(e) if e.to_string().contains("stale element") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// Polls a script returning a boolean until it is true (10 s at most).
pub async fn wait_script(client: &Client, what: &str, script: &str) {
    wait_script_for(client, what, script, Duration::from_secs(10)).await;
}

/// Polls a script returning a boolean until it is true, for at most `timeout`.
pub async fn wait_script_for(client: &Client, what: &str, script: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let value = client.execute(script, vec![]).await.expect("run script");
        if value.as_bool() == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
