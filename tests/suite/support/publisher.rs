//! A QoS 1 publisher that counts a message as published only once the broker acknowledged it,
//! and survives broker restarts: after a lost connection it connects afresh and publishes every
//! unacknowledged message again, oldest first (a duplicate at worst, which the payload's
//! timestamp makes harmless).
//!
//! It keeps up to `WINDOW` messages in flight instead of waiting for each PUBACK before the
//! next PUBLISH: on one connection they still leave in order, so the broker's order per topic
//! is the order of `messages`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Messages published and not yet acknowledged, at most.
pub const WINDOW: usize = 100;

/// Publishes `messages` in order, up to `WINDOW` at a time; `acked` counts those the broker
/// acknowledged. Returns once every message is acknowledged.
pub async fn publish_acked(port: u16, messages: Vec<(String, Vec<u8>)>, acked: Arc<AtomicUsize>) {
    publish_acked_window(port, messages, acked, WINDOW).await;
}

/// `publish_acked` with at most `window` messages in flight (1: each PUBACK before the next
/// PUBLISH, for a test that needs the messages to arrive one by one).
pub async fn publish_acked_window(
    port: u16,
    messages: Vec<(String, Vec<u8>)>,
    acked: Arc<AtomicUsize>,
    window: usize,
) {
    let window = window.clamp(1, u16::MAX as usize);
    let started = std::time::Instant::now();
    let connect = || {
        let mut options = MqttOptions::new(
            format!("test-publisher-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        options.set_keep_alive(Duration::from_secs(5));
        options.set_inflight(window as u16);
        // Room for the whole window in the request channel: `try_publish` never finds it full.
        AsyncClient::new(options, window + 16)
    };
    let (mut client, mut eventloop) = connect();
    // Indices of messages handed to the client and not acknowledged, in order.
    let mut unacked: BTreeSet<usize> = BTreeSet::new();
    // Handed to the client, packet id not yet known (the event loop assigns it when it
    // writes the PUBLISH, in the order they were handed over).
    let mut unassigned: VecDeque<usize> = VecDeque::new();
    let mut by_pkid: HashMap<u16, usize> = HashMap::new();
    // Messages to publish (again) before the next new one, after a reconnect.
    let mut again: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    let mut done = 0;
    while done < messages.len() {
        // Fill the window.
        while unacked.len() < window {
            let i = match again.pop_front() {
                Some(i) => i,
                None if next < messages.len() => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            let (topic, payload) = &messages[i];
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .is_err()
            {
                again.push_front(i);
                break;
            }
            unacked.insert(i);
            unassigned.push_back(i);
        }
        let lost = match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(i) = unassigned.pop_front() {
                    by_pkid.insert(pkid, i);
                }
                false
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(i) = by_pkid.remove(&ack.pkid) {
                    if unacked.remove(&i) {
                        done += 1;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                false
            }
            Ok(Ok(_)) => false,
            Ok(Err(_)) | Err(_) => true,
        };
        if lost {
            // A fresh connection (a clean session: nothing of the old one is resent by the
            // client library) and every unacknowledged message again, oldest first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            (client, eventloop) = connect();
            unassigned.clear();
            by_pkid.clear();
            let mut pending: Vec<usize> = unacked.iter().copied().collect();
            pending.extend(again.drain(..));
            pending.sort_unstable();
            pending.dedup();
            again.extend(pending);
            unacked.clear();
        }
    }
    eprintln!(
        "published {} message(s) in {:?}, up to {window} in flight",
        messages.len(),
        started.elapsed()
    );
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}
