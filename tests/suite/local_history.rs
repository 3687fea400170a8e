//! A site with no InfluxDB: readings still reach the local history (for the web UI's charts),
//! nothing piles up in the outbox, and an undecodable QoS 1 message is counted, recorded and
//! acknowledged, so the broker does not deliver it again after a restart.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::decode::payload::DecodeErrorKind;
use parkguard::pipeline::Gateway;
use parkguard::store::Store;
use support::*;

fn site_text(mqtt_port: u16) -> String {
    format!(
        "{header}[[devices]]\nid = \"m1\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n\
         [[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"pg-history\"\n\
         [[mqtt.subscriptions]]\ntopic = \"t/{{device}}\"\nprofile = \"adw300_json\"\n",
        header = site_header("l", "store = \"pg.db\"\nshutdown_grace_s = 2\nhistory_write_s = 1"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_influxdb_readings_reach_the_local_history_and_bad_messages_are_acknowledged() {
    let broker = mosquitto();
    let (dir, path) = site(&site_text(broker.port));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;

    // Thirty seconds ago, so that their 10-second buckets are complete at once.
    let base_ms = parkguard::model::now_ns() / 1_000_000 - 30_000;
    let messages: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"ts":{},"ua":{},"leakage":20}}"#,
                base_ms + i * 1000,
                220.0 + i as f64
            )
        })
        .collect();
    let bytes: Vec<&[u8]> = messages.iter().map(|m| m.as_bytes()).collect();
    mosquitto_pub(broker.port, "t/m1", &bytes);
    mosquitto_pub(broker.port, "t/m1", &[b"{not json".as_slice()]);

    let store = Store::open(&dir.path().join("pg.db")).expect("store");
    eventually("history written", Duration::from_secs(10), || async {
        store
            .history("m1", "ua", base_ms - 20_000)
            .map(|h| h.iter().map(|p| p.n).sum::<u64>() == 5)
            .unwrap_or(false)
    })
    .await;
    let history = store
        .history("m1", "ua", base_ms - 20_000)
        .expect("history");
    let min = history.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
    let max = history
        .iter()
        .map(|p| p.max)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((min, max), (220.0, 224.0));
    assert_eq!(
        store.outbox_bytes().expect("outbox"),
        0,
        "no sink, no outbox"
    );
    assert_eq!(
        gateway
            .metrics
            .outbox_points_committed
            .load(Ordering::Relaxed),
        0
    );

    eventually(
        "the bad message recorded",
        Duration::from_secs(10),
        || async { !store.bad_messages(10).unwrap_or_default().is_empty() },
    )
    .await;
    let bad = store.bad_messages(10).expect("bad messages");
    assert_eq!(bad[0].reason, "bad_json");
    assert_eq!(bad[0].source, "mqtt/m/t/m1");
    assert_eq!(bad[0].payload, b"{not json");
    assert_eq!(gateway.metrics.decode_errors(DecodeErrorKind::BadJson), 1);
    gateway.shutdown().await;

    // Same client id, persistent session: an unacknowledged message would come again now.
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("restart");
    let connected = gateway.metrics.mqtt("m");
    eventually("reconnected", Duration::from_secs(20), || async {
        connected.connected.load(Ordering::Relaxed)
    })
    .await;
    // The subject: a second in which the message must not come again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gateway.metrics.messages_received.load(Ordering::Relaxed), 0);
    assert_eq!(store.bad_messages(10).expect("bad messages").len(), 1);
    gateway.shutdown().await;
}
