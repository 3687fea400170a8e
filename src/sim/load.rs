//! The simulator's load mode: meter messages (the `adw300_json` payload, 12 readings each) at a
//! given rate across a given number of devices, through a real broker, for benchmarks.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

use crate::sim::scenario::MqttTarget;

/// Readings in one load message.
pub const READINGS_PER_MESSAGE: u64 = 12;

#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub messages: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publishes `rate` messages per second (QoS 0) on `park/{park}/meter/{device}/up` for
/// `duration` or until `cancel`, spread evenly over `devices` ids `load-0001`...
pub async fn run(
    target: &MqttTarget,
    park: &str,
    rate: u64,
    devices: usize,
    duration: Option<Duration>,
    cancel: CancellationToken,
) -> LoadReport {
    let suffix: u32 = rand::random();
    let mut options = MqttOptions::new(
        format!("parkguard-load-{suffix:08x}"),
        target.host.clone(),
        target.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let devices = devices.max(1);
    let topics: Vec<String> = (0..devices)
        .map(|d| format!("park/{park}/meter/load-{:04}/up", d + 1))
        .collect();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let elapsed = started.elapsed();
        if duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        let now_ms = crate::model::now_ms();
        while sent < due {
            let d = (sent % devices as u64) as f64;
            let payload = format!(
                r#"{{"ts":{now_ms},"ua":{:.1},"ub":230.2,"uc":229.7,"ia":{:.2},"ib":11.8,"ic":12.4,"p_total":8350,"leakage":{:.0},"t":[31.5,32.0,30.8,33.1]}}"#,
                229.0 + (d % 7.0) * 0.3,
                12.0 + (d % 5.0),
                60.0 + (d % 40.0),
            );
            let topic = &topics[(sent % devices as u64) as usize];
            if client
                .publish(topic.as_str(), QoS::AtMostOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
    }
    let report = LoadReport {
        messages: sent,
        elapsed: started.elapsed(),
    };
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    poller.abort();
    report
}
