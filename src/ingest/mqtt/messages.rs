//! Messages into readings: the subscription a topic matches, the device it names, its site
//! tags, the decoded readings, the device's acknowledgement, and bad messages counted and logged
//! within bounds.

use super::*;

impl MqttIngest {
    /// Decodes one message. Returns the readings to send on, or `None` when nothing is left of it.
    pub fn handle_message(&mut self, topic: &[u8], payload: &[u8]) -> Option<ReadingBatch> {
        self.last_problem = None;
        self.last_device_ack = None;
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        let received_ns = now_ns();
        let topic = String::from_utf8_lossy(topic);
        let Some(route_index) = self
            .routes
            .iter()
            .position(|r| r.template.capture(&topic).is_some())
        else {
            self.count_problem(
                &topic,
                &DecodeError::new(
                    DecodeErrorKind::UnknownTopic,
                    format!("topic `{topic}` matches no subscription"),
                ),
            );
            return None;
        };
        let route = &self.routes[route_index];
        if let Some(oversized) = mqtt_guard::oversized(payload) {
            let err = DecodeError::new(
                DecodeErrorKind::TooLarge,
                format!(
                    "{} bytes, over the connection's max_packet_bytes {}; discarded unread",
                    oversized.size, self.session.config.max_packet_bytes
                ),
            );
            self.count_problem(&topic, &err);
            return None;
        }
        if payload.len() > route.max_payload_bytes {
            let err = DecodeError::new(
                DecodeErrorKind::TooLarge,
                format!("{} bytes, limit {}", payload.len(), route.max_payload_bytes),
            );
            self.count_problem(&topic, &err);
            return None;
        }
        let parsed = match route.decoder.parse(payload) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.count_problem(&topic, &err);
                return None;
            }
        };
        let (tags, problem) = match route.tags_by_topic.get(topic.as_ref()) {
            Some(cached) => cached.clone(),
            None => {
                let payload_device = route.decoder.device_id(&parsed).map(|d| d.into_owned());
                let resolved = match build_tags(
                    route,
                    &self.devices,
                    &topic,
                    payload_device.as_deref(),
                ) {
                    Ok(tags) => (Some(Arc::new(tags)), None),
                    Err(err) => {
                        let accept = err.kind == DecodeErrorKind::UnknownDevice
                            && route.unknown_devices == UnknownDevices::Accept;
                        let tags = accept.then(|| {
                            build_tags_unchecked(route, &topic, payload_device.as_deref())
                        });
                        match tags {
                            Some(tags) if self.devices.admit_unknown(&tags.device) => {
                                (Some(Arc::new(tags)), Some(err))
                            }
                            Some(tags) => {
                                let over = DecodeError::new(
                                        DecodeErrorKind::UnknownOverCap,
                                        format!(
                                            "device `{}` is not declared and {} unknown devices are already accepted (gateway.max_unknown_devices)",
                                            tags.device,
                                            self.devices.unknown_cap()
                                        ),
                                    );
                                self.count_problem(&tags.device, &over);
                                return None;
                            }
                            None => (None, Some(err)),
                        }
                    }
                };
                // Payload-named devices can differ per message on one topic: no caching then.
                // Refusals are not cached either: a flood of made-up ids must not fill it.
                let route = &mut self.routes[route_index];
                if !route.decoder.names_device_in_payload() && resolved.0.is_some() {
                    if route.tags_by_topic.len() >= TAGS_CACHED {
                        route.tags_by_topic.clear();
                    }
                    route
                        .tags_by_topic
                        .insert(topic.to_string(), resolved.clone());
                }
                resolved
            }
        };
        if let Some(problem) = &problem {
            let device = tags
                .as_ref()
                .map(|t| t.device.clone())
                .unwrap_or_else(|| topic.to_string());
            self.count_problem(&device, problem);
        }
        let tags = tags?;
        let route = &self.routes[route_index];
        let mut readings = Vec::with_capacity(16);
        let mut problems = Vec::new();
        route
            .decoder
            .readings(&parsed, &tags, received_ns, &mut readings, &mut problems);
        for problem in &problems {
            self.count_problem(&tags.device, problem);
        }
        if readings.is_empty() {
            return None;
        }
        let route = &self.routes[route_index];
        if let Some(ack) = &route.ack {
            self.last_device_ack = device_ack(&self.name, route, ack, &topic, &tags, &readings);
        }
        self.metrics
            .readings_decoded
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        Some(readings.into())
    }

    pub(super) fn bad_message(
        &self,
        topic: &[u8],
        payload: &[u8],
        problem: DecodeError,
    ) -> BadMessage {
        // A stand-in for an oversized message keeps the original's head, never the marker.
        let payload = mqtt_guard::oversized(payload).map_or(payload, |o| o.head);
        BadMessage {
            at_ms: now_ns() / 1_000_000,
            source: format!("mqtt/{}/{}", self.name, String::from_utf8_lossy(topic)),
            reason: problem.kind.as_str().to_string(),
            detail: problem.detail,
            payload: payload[..payload.len().min(BAD_PAYLOAD_KEPT)].to_vec(),
        }
    }

    pub(super) fn count_problem(&mut self, device: &str, err: &DecodeError) {
        self.last_problem = Some(err.clone());
        self.metrics.count_decode_error(err.kind);
        let (log, suppressed) = self.log_limiter.allow(device, err.kind);
        if suppressed > 0 {
            warn!(connection = %self.name, not_logged = suppressed, "More messages could not be decoded than are logged; see the decode error counters.");
        }
        if log {
            warn!(connection = %self.name, device = %device, reason = err.kind.as_str(), error = %err.detail, "Message could not be fully decoded (logged once a minute per device and reason).");
        }
    }
}

pub(super) struct Route {
    pub(super) template: TopicTemplate,
    pub(super) filter: String,
    pub(super) decoder: PayloadDecoder,
    pub(super) profile: String,
    pub(super) kind: String,
    pub(super) max_payload_bytes: usize,
    pub(super) unknown_devices: UnknownDevices,
    /// The profile's acknowledgement of alarm messages on the device's downlink.
    pub(super) ack: Option<crate::config::DeviceAckConfig>,
    /// Tags per topic: built once per device and topic, then shared by all its readings. The
    /// problem (unknown device) is kept too, so that every message of such a device is counted.
    pub(super) tags_by_topic: HashMap<String, (Option<Arc<Tags>>, Option<DecodeError>)>,
}

/// Problem lines logged per minute over all devices; the counters still see every problem.
pub(super) const LOG_LINES_PER_MINUTE: u32 = 50;

/// Logs a given (device, reason) at most once per interval, and at most
/// `LOG_LINES_PER_MINUTE` lines per interval in all; the counters still see every problem.
/// Constant time per problem and bounded memory whatever a flood of distinct ids does: keys
/// are remembered only when a line is logged, and forgotten when the interval turns.
pub(super) struct LogLimiter {
    pub(super) interval: Duration,
    pub(super) window_started: Instant,
    pub(super) logged: HashSet<u64>,
    pub(super) lines: u32,
    pub(super) suppressed: u64,
    pub(super) hasher: std::collections::hash_map::RandomState,
}

impl LogLimiter {
    pub(super) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            window_started: Instant::now(),
            logged: HashSet::new(),
            lines: 0,
            suppressed: 0,
            hasher: Default::default(),
        }
    }

    /// True when this problem may be logged. Returns the number of problems that were not
    /// logged in the window that just ended, for one summary line.
    pub(super) fn allow(&mut self, device: &str, kind: DecodeErrorKind) -> (bool, u64) {
        let now = Instant::now();
        let mut summary = 0;
        if now.duration_since(self.window_started) >= self.interval {
            summary = std::mem::take(&mut self.suppressed);
            self.logged.clear();
            self.lines = 0;
            self.window_started = now;
        }
        let mut h = self.hasher.build_hasher();
        device.hash(&mut h);
        kind.hash(&mut h);
        let key = h.finish();
        if self.logged.contains(&key) {
            return (false, summary);
        }
        if self.lines >= LOG_LINES_PER_MINUTE {
            self.suppressed += 1;
            return (false, summary);
        }
        self.lines += 1;
        self.logged.insert(key);
        (true, summary)
    }
}

pub(super) fn build_tags_unchecked(route: &Route, topic: &str, device: Option<&str>) -> Tags {
    let mut tags = Tags {
        kind: route.kind.clone(),
        profile: route.profile.clone(),
        ..Tags::default()
    };
    for (name, value) in route.template.capture(topic).unwrap_or_default() {
        match name {
            "park" => tags.park = value.to_string(),
            "enterprise" => tags.enterprise = value.to_string(),
            "location" => tags.location = value.to_string(),
            "device" => tags.device = value.to_string(),
            "kind" => tags.kind = value.to_string(),
            other => tags.extra.push((other.to_string(), value.to_string())),
        }
    }
    if tags.device.is_empty() {
        if let Some(device) = device {
            tags.device = device.to_string();
        }
    }
    tags.extra.sort();
    tags
}

/// Tags for a message: topic levels first, then the declared device's place in the site,
/// which wins over what the topic says.
pub(super) fn build_tags(
    route: &Route,
    devices: &DeviceDirectory,
    topic: &str,
    payload_device: Option<&str>,
) -> Result<Tags, DecodeError> {
    let mut tags = build_tags_unchecked(route, topic, payload_device);
    if tags.device.is_empty() {
        return Err(DecodeError::new(
            DecodeErrorKind::NoDevice,
            format!("topic `{topic}` has no {{device}} level and the payload names none"),
        ));
    }
    match devices.get(&tags.device) {
        Some(declared) => {
            let extra = std::mem::take(&mut tags.extra);
            tags = declared.clone();
            tags.extra = extra;
            Ok(tags)
        }
        None => Err(DecodeError::new(
            DecodeErrorKind::UnknownDevice,
            format!("device `{}` is not declared in [[devices]]", tags.device),
        )),
    }
}

/// The acknowledgement a message asks for: when its `ack.quantity` is one of `ack.states`,
/// the profile's topic and payload with the topic's levels, the state and the time filled in.
pub(super) fn device_ack(
    connection: &str,
    route: &Route,
    ack: &crate::config::DeviceAckConfig,
    topic: &str,
    tags: &Tags,
    readings: &[crate::model::Reading],
) -> Option<DeviceAck> {
    // A profile acknowledged only through a platform's API has nothing to publish here.
    let (Some(ack_topic), Some(ack_payload)) = (&ack.topic, &ack.payload) else {
        return None;
    };
    let state = readings.iter().find_map(|r| match &r.value {
        crate::model::Value::Text(t) if *r.quantity == *ack.quantity => {
            ack.states.iter().any(|s| **s == **t).then_some(t)
        }
        _ => None,
    })?;
    let mut fields: Vec<(String, String)> = route
        .template
        .capture(topic)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    if !fields.iter().any(|(name, _)| name == "device") {
        fields.push(("device".into(), tags.device.clone()));
    }
    fields.push(("event".into(), state.to_string()));
    fields.push(("ts".into(), (now_ns() / 1_000_000_000).to_string()));
    let fill = |template: &str| {
        fields
            .iter()
            .fold(template.to_string(), |text, (name, value)| {
                text.replace(&format!("{{{name}}}"), value)
            })
    };
    Some(DeviceAck::Mqtt {
        connection: connection.to_string(),
        topic: fill(ack_topic),
        payload: fill(ack_payload).into_bytes(),
    })
}

/// Topics whose tags are cached per subscription; the cache starts afresh beyond this.
pub(super) const TAGS_CACHED: usize = 50_000;

pub(super) const BAD_PAYLOAD_KEPT: usize = 1024;
