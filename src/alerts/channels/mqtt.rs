//! The MQTT channel: each alarm's state published retained on its own topic, through a
//! connection of the site or the embedded broker.

use super::*;

/// The retained topic of an alarm: `<prefix>/<device>/<rule>[/<quantity>]`, with MQTT's
/// special characters in ids replaced.
pub fn alarm_topic(prefix: &str, notice: &Notice) -> String {
    let clean = |s: &str| s.replace(['/', '+', '#', '\0'], "_");
    let a = &notice.alarm;
    let mut topic = format!("{prefix}/{}/{}", clean(&a.device), clean(&a.rule));
    if !a.quantity.is_empty() {
        topic.push('/');
        topic.push_str(&clean(&a.quantity));
    }
    topic
}

/// The retained payload of an alarm: its state as JSON, or empty (which deletes the retained
/// message) once it is over.
pub fn alarm_state_payload(notice: &Notice, utc_offset_minutes: i32) -> Vec<u8> {
    let over = notice.alarm.state == "normal" || notice.event == "retired";
    if over {
        return Vec::new();
    }
    let m = render(notice, utc_offset_minutes);
    let mut v = serde_json::to_value(notice).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("schema".into(), json!(SCHEMA));
        o.insert("title".into(), json!(m.title));
        o.remove("recipients");
    }
    v.to_string().into_bytes()
}

/// MQTT channel: one session of its own; a publish counts once the broker's PUBACK arrived.
/// The client id of MQTT alert channel `channel` on connection `mqtt`.
pub(super) fn alert_client_id(
    config: &Config,
    mqtt: &crate::config::MqttConfig,
    channel: &str,
) -> String {
    let base_id = mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("parkguard-{}", config.site.gateway.name));
    format!("{base_id}-alerts-{channel}")
}

/// The client ids of the MQTT alert channels on connection `connection`.
pub fn mqtt_client_ids(config: &Config, connection: &str) -> Vec<String> {
    let Some(mqtt) = config.site.mqtt.iter().find(|m| m.name == connection) else {
        return Vec::new();
    };
    config
        .site
        .alerts
        .iter()
        .flat_map(|a| a.channels.iter())
        .filter(|c| c.mqtt.as_deref() == Some(connection))
        .map(|c| alert_client_id(config, mqtt, &c.name))
        .collect()
}

pub struct MqttNotifier {
    prefix: String,
    client: rumqttc::AsyncClient,
    acks: Mutex<mpsc::Receiver<u16>>,
    timeout: Duration,
    utc_offset_minutes: i32,
}

impl MqttNotifier {
    pub(super) fn start(config: &Config, channel: &ChannelConfig) -> anyhow::Result<MqttNotifier> {
        let name = channel.mqtt.as_deref().unwrap_or_default();
        let mqtt = config
            .site
            .mqtt
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow::anyhow!("no [[mqtt]] connection `{name}`"))?;
        let embedded = crate::ingest::broker::daemon_link_for(config, mqtt);
        let (host, port) = match &embedded {
            Some(link) => (link.address.ip().to_string(), link.address.port()),
            None => (mqtt.host.clone(), mqtt.port()),
        };
        let mut options =
            rumqttc::MqttOptions::new(alert_client_id(config, mqtt, &channel.name), host, port);
        options
            .set_keep_alive(Duration::from_secs(mqtt.keepalive_s))
            .set_clean_session(true);
        if let Some((user, password)) = embedded.as_ref().and_then(|l| l.login.clone()) {
            options.set_credentials(user, password);
        } else if let Some(user) = &mqtt.username {
            let password = mqtt
                .password
                .as_ref()
                .and_then(crate::config::Secret::value)
                .unwrap_or_default();
            options.set_credentials(user, password);
        }
        if let (Some(tls), None) = (&mqtt.tls, &embedded) {
            let tls = crate::ingest::mqtt::load_tls(config, tls)?;
            options.set_transport(rumqttc::Transport::Tls(tls));
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        eventloop
            .network_options
            .set_connection_timeout(mqtt.connect_timeout_s);
        let (ack_tx, acks) = mpsc::channel(64);
        let channel_name = channel.name.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                        if ack_tx.send(ack.pkid).await.is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        backoff.reset();
                        debug!(channel = %channel_name, "Alert MQTT channel connected.");
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if ack_tx.is_closed() {
                            return;
                        }
                        let delay = backoff.next_delay();
                        warn!(channel = %channel_name, error = %err, retry_in_ms = delay.as_millis() as u64, "Alert MQTT channel disconnected.");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        Ok(MqttNotifier {
            prefix: channel.topic_prefix.clone(),
            client,
            acks: Mutex::new(acks),
            timeout: Duration::from_secs(channel.timeout_s),
            utc_offset_minutes: config
                .site
                .alerts
                .as_ref()
                .map_or(480, |a| a.utc_offset_minutes),
        })
    }
}

impl Notifier for MqttNotifier {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            // One publish in flight at a time, so the next PUBACK is this publish's.
            let mut acks = self.acks.lock().await;
            while acks.try_recv().is_ok() {}
            for notice in &batch.notices {
                let topic = alarm_topic(&self.prefix, notice);
                let payload = alarm_state_payload(notice, self.utc_offset_minutes);
                tokio::time::timeout(
                    self.timeout,
                    self.client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload),
                )
                .await
                .map_err(|_| SendError::new("MQTT request queue full"))?
                .map_err(|e| SendError::new(e.to_string()))?;
                match tokio::time::timeout(self.timeout, acks.recv()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(SendError::new("MQTT channel stopped")),
                    Err(_) => {
                        return Err(SendError::new(format!(
                            "no PUBACK within {} s",
                            self.timeout.as_secs()
                        )))
                    }
                }
            }
            Ok(())
        })
    }
}
