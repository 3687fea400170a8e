//! Recovery: a broker restart that loses the session is followed by a resubscribe (the peers'
//! "ingest silently stops after a broker restart"), and a shutdown with an unreachable
//! InfluxDB reports the points it could not write instead of hanging.

use crate::support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use support::*;

fn site_text(mqtt_port: u16, influx_url: &str, grace_s: u64) -> String {
    format!(
        "[gateway]\nprofiles_dir = \"profiles\"\nshutdown_grace_s = {grace_s}\n\
         [[mqtt]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         [[mqtt.subscriptions]]\ntopic = \"s/{{device}}\"\nprofile = \"nb_smoke\"\n\
         [[influx]]\nname = \"i\"\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\nrequest_timeout_s = 2\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_that_lost_the_session_is_followed_by_a_resubscribe() {
    let mut broker = mosquitto();
    let influx = influxd();
    create_database(&influx, "pg").await;
    let (_dir, path) = site(&site_text(broker.port, &influx.url(), 5));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    let m = gateway.metrics.mqtt("m");
    wait_subscribed(&gateway, "m", 1).await;
    let ts = now_s();
    mosquitto_pub(
        broker.port,
        "s/d1",
        &[format!(r#"{{"ts":{},"event":"before"}}"#, ts - 1).as_bytes()],
    );

    // SIGKILL: mosquitto saves nothing, so the restarted broker has no session for us.
    broker.restart();
    wait_subscribed(&gateway, "m", 2).await;
    assert!(m.connects.load(Ordering::Relaxed) >= 2);
    mosquitto_pub(
        broker.port,
        "s/d1",
        &[format!(r#"{{"ts":{ts},"event":"after"}}"#).as_bytes()],
    );

    eventually(
        "both events in InfluxDB",
        Duration::from_secs(20),
        || async { rows(&influxql(&influx, "pg", "SELECT * FROM smoke").await).len() >= 2 },
    )
    .await;
    let events: Vec<String> =
        rows(&influxql(&influx, "pg", "SELECT * FROM smoke ORDER BY time").await)
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("").to_string())
            .collect();
    assert_eq!(events, ["before", "after"]);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_influxdb_down_reports_unwritten_points_within_the_grace_period() {
    let broker = mosquitto();
    // Nothing listens on this port (held, never listening): every write fails and is retried.
    let (dead_port, _held) = reserved_port();
    let dead = format!("http://127.0.0.1:{dead_port}");
    let (_dir, path) = site(&site_text(broker.port, &dead, 2));
    let gateway = Gateway::start(Config::load(&path).expect("config"))
        .await
        .expect("start");
    wait_subscribed(&gateway, "m", 1).await;
    let ts = now_s();
    let msg = format!(r#"{{"ts":{ts},"event":"alarm","smoke_pct":40.0}}"#);
    mosquitto_pub(broker.port, "s/d1", &[msg.as_bytes()]);
    let sink = gateway.metrics.sink("i");
    eventually(
        "write attempted and failed",
        Duration::from_secs(20),
        || {
            let sink = Arc::clone(&sink);
            async move { sink.write_failures.load(Ordering::Relaxed) >= 1 }
        },
    )
    .await;
    let started = std::time::Instant::now();
    let report = gateway.shutdown().await;
    assert_eq!(
        report.points_left(),
        2,
        "event and smoke_pct were not written"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(sink.points_written.load(Ordering::Relaxed), 0);
}
