//! A QoS 1 publisher that counts a message as published only once the broker acknowledged it,
//! and survives broker restarts: after a lost connection it connects afresh and publishes the
//! unacknowledged message again (a duplicate at worst, which the payload's timestamp makes
//! harmless).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Publishes `messages` in order, one at a time; `acked` counts those the broker acknowledged.
pub async fn publish_acked(port: u16, messages: Vec<(String, Vec<u8>)>, acked: Arc<AtomicUsize>) {
    let connect = || {
        let mut options = MqttOptions::new(
            format!("test-publisher-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        options.set_keep_alive(Duration::from_secs(5));
        AsyncClient::new(options, 16)
    };
    let (mut client, mut eventloop) = connect();
    let mut i = 0;
    while i < messages.len() {
        let (topic, payload) = &messages[i];
        let mut done = false;
        if client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .is_ok()
        {
            let mut pkid = None;
            loop {
                match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(id)))) => pkid = Some(id),
                    Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) if Some(ack.pkid) == pkid => {
                        done = true;
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        if done {
            acked.fetch_add(1, Ordering::Relaxed);
            i += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (client, eventloop) = connect();
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}
