//! The MQTT session behind one connection, in MQTT 3.1.1 (`v311`) and 5 (`v5`) with the same
//! interface, so that the connection loop does not care which the site speaks.

use super::*;

/// What a protocol-specific session reports to the shared connection loop.
pub enum SessionEvent {
    Connected {
        session_present: bool,
    },
    /// `ack` is set for QoS 1 and 2: the message stays unacknowledged until it is called.
    Publish {
        topic: Bytes,
        payload: Bytes,
        ack: Option<TryAck>,
    },
    Subscribed,
    Other,
}

/// Hands a PUBACK to the client's request queue; false when the queue is full (the event loop
/// has not been polled for a while), so that it is tried again instead of lost.
pub type TryAck = Box<dyn FnMut() -> bool + Send>;

/// The part of an MQTT client that differs between protocol versions.
pub(super) trait Session {
    async fn poll(&mut self) -> Result<SessionEvent, String>;
    fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String>;
    /// Queues a retained QoS 1 message (the gateway's status).
    fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String>;
    /// Queues QoS 1 messages from elsewhere (device acknowledgements).
    fn publisher(&self) -> Publisher;
    async fn disconnect(&mut self);
}

pub(super) const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

pub(super) const CLIENT_REQUEST_HEADROOM: usize = 256;

pub(super) const OUTGOING_INFLIGHT: u16 = 32;

pub(super) const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// The client id of connection `mqtt`: as configured, else `<gateway>-<connection>`.
pub fn client_id(config: &Config, mqtt: &MqttConfig) -> String {
    mqtt.client_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", config.site.gateway.name, mqtt.name))
}

pub(super) mod v311 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

    pub struct Session {
        client: AsyncClient,
        eventloop: EventLoop,
    }

    impl Session {
        pub fn new(s: &SessionSettings, relay: &Path) -> Self {
            let c = &s.config;
            let mut options =
                MqttOptions::new(&s.client_id, relay.to_string_lossy().into_owned(), 0);
            options
                .set_transport(Transport::Unix)
                .set_keep_alive(Duration::from_secs(c.keepalive_s))
                .set_clean_session(!c.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(
                    mqtt_guard::client_packet_limit(c.max_packet_bytes),
                    c.max_packet_bytes,
                );
            if let Some(user) = &c.username {
                options.set_credentials(user, s.password.clone().unwrap_or_default());
            }
            if let Some(status) = &s.status {
                options.set_last_will(rumqttc::LastWill::new(
                    &status.topic,
                    status.offline.clone(),
                    QoS::AtLeastOnce,
                    true,
                ));
            }
            let capacity = usize::from(c.max_unacked) + CLIENT_REQUEST_HEADROOM;
            let (client, mut eventloop) = AsyncClient::new(options, capacity);
            eventloop
                .network_options
                .set_connection_timeout(c.connect_timeout_s);
            Session { client, eventloop }
        }
    }

    impl super::Session for Session {
        async fn poll(&mut self) -> Result<SessionEvent, String> {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(SessionEvent::Connected {
                    session_present: ack.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != QoS::AtMostOnce).then(|| {
                        let client = self.client.clone();
                        // An acknowledgement needs the packet id, not the payload.
                        let mut publish = p.clone();
                        publish.payload = Bytes::new();
                        Box::new(move || client.try_ack(&publish).is_ok()) as TryAck
                    });
                    Ok(SessionEvent::Publish {
                        topic: Bytes::copy_from_slice(p.topic.as_bytes()),
                        payload: p.payload,
                        ack,
                    })
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Ok(SessionEvent::Subscribed),
                Ok(_) => Ok(SessionEvent::Other),
                Err(err) => Err(err.to_string()),
            }
        }

        fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
            self.client
                .try_subscribe(filter, qos)
                .map_err(|e| e.to_string())
        }

        fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.client
                .try_publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
                .map_err(|e| e.to_string())
        }

        fn publisher(&self) -> Publisher {
            let client = self.client.clone();
            Arc::new(move |topic: &str, payload: Vec<u8>| {
                client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                    .map_err(|e| e.to_string())
            })
        }

        async fn disconnect(&mut self) {
            if self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
                    while self.eventloop.poll().await.is_ok() {}
                })
                .await;
            }
        }
    }
}

pub(super) mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub struct Session {
        client: AsyncClient,
        eventloop: EventLoop,
    }

    impl Session {
        pub fn new(s: &SessionSettings, relay: &Path) -> Self {
            let c = &s.config;
            let mut options =
                MqttOptions::new(&s.client_id, relay.to_string_lossy().into_owned(), 0);
            // MQTT's own maximum is announced, so that the broker delivers every message,
            // whatever its size: the relay shrinks the oversized ones into counted bad
            // messages instead of the broker dropping them unseen.
            options
                .set_transport(Transport::Unix)
                .set_keep_alive(Duration::from_secs(c.keepalive_s))
                .set_clean_start(!c.persistent_session)
                .set_manual_acks(true)
                .set_receive_maximum(Some(c.max_unacked))
                // The client keeps a slot per packet id it may have in flight, 65,535 by
                // default (14 MB); this session publishes only the gateway's status.
                .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
                .set_max_packet_size(Some(mqtt_guard::MQTT_MAX_PACKET as u32))
                .set_connection_timeout(c.connect_timeout_s);
            if c.persistent_session {
                options.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            if let Some(user) = &c.username {
                options.set_credentials(user, s.password.clone().unwrap_or_default());
            }
            if let Some(status) = &s.status {
                options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    &status.topic,
                    status.offline.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            let capacity = usize::from(c.max_unacked) + CLIENT_REQUEST_HEADROOM;
            let (client, eventloop) = AsyncClient::new(options, capacity);
            Session { client, eventloop }
        }
    }

    impl super::Session for Session {
        async fn poll(&mut self) -> Result<SessionEvent, String> {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(SessionEvent::Connected {
                    session_present: ack.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then(|| {
                        let client = self.client.clone();
                        // An acknowledgement needs the packet id, not the payload.
                        let mut publish = p.clone();
                        publish.payload = Bytes::new();
                        Box::new(move || client.try_ack(&publish).is_ok()) as TryAck
                    });
                    Ok(SessionEvent::Publish {
                        topic: p.topic,
                        payload: p.payload,
                        ack,
                    })
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Ok(SessionEvent::Subscribed),
                Ok(_) => Ok(SessionEvent::Other),
                Err(err) => Err(err.to_string()),
            }
        }

        fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
            let qos = match qos {
                QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
            };
            self.client
                .try_subscribe(filter, qos)
                .map_err(|e| e.to_string())
        }

        fn publish_retained(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.client
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    payload.to_vec(),
                )
                .map_err(|e| e.to_string())
        }

        fn publisher(&self) -> Publisher {
            let client = self.client.clone();
            Arc::new(move |topic: &str, payload: Vec<u8>| {
                client
                    .try_publish(
                        topic,
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .map_err(|e| e.to_string())
            })
        }

        async fn disconnect(&mut self) {
            if self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
                    while self.eventloop.poll().await.is_ok() {}
                })
                .await;
            }
        }
    }
}
