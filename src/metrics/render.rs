//! The families `/metrics` serves, rendered from the counters.

use super::*;

/// Seconds from `since_ms` to `now_ms`; 0 for none (`since_ms` 0) and for a clock that went
/// back.
fn age_seconds(now_ms: i64, since_ms: i64) -> f64 {
    if since_ms <= 0 {
        return 0.0;
    }
    (now_ms - since_ms).max(0) as f64 / 1000.0
}

impl Metrics {
    /// Every counter and gauge of the pipeline, and the label sets of `alarms`, which the web
    /// handler adds.
    pub fn render(&self, text: &mut PrometheusText) {
        self.render_at(text, crate::model::now_ms());
    }

    /// `render` with the wall clock read by the caller (ages are relative to `now_ms`).
    pub fn render_at(&self, text: &mut PrometheusText, now_ms: i64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let flag = |b: &AtomicBool| f64::from(u8::from(b.load(Ordering::Relaxed)));
        text.family(
            "build_info",
            "gauge",
            "Always 1; the labels name the running build.",
        );
        text.sample(
            "build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
                ("os", std::env::consts::OS),
            ],
            1.0,
        );
        text.single(
            "mqtt_messages_received_total",
            "counter",
            "MQTT messages received, whatever became of them.",
            get(&self.messages_received),
        );
        text.single(
            "readings_decoded_total",
            "counter",
            "Readings that left decoding (MQTT and Modbus).",
            get(&self.readings_decoded),
        );
        text.family(
            "decode_errors_total",
            "counter",
            "Messages that could not be decoded, by reason.",
        );
        for kind in DecodeErrorKind::ALL {
            text.sample(
                "decode_errors_total",
                &[("reason", kind.as_str())],
                self.decode_errors(kind) as f64,
            );
        }
        text.family(
            "http_ingest_requests_total",
            "counter",
            "Pushes of carrier IoT platforms to an [[http_ingest]] endpoint, by result.",
        );
        let endpoints: Vec<(String, Arc<HttpIngestMetrics>)> = self
            .http_ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect();
        for (endpoint, m) in &endpoints {
            for result in HttpIngestResult::ALL {
                text.sample(
                    "http_ingest_requests_total",
                    &[("endpoint", endpoint), ("result", result.as_str())],
                    m.get(result) as f64,
                );
            }
        }
        text.family(
            "platform_commands_total",
            "counter",
            "Commands to devices through a carrier platform's API, by endpoint and result.",
        );
        let commands: Vec<(String, Arc<PlatformCommandMetrics>)> = self
            .platform_commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect();
        for (endpoint, m) in &commands {
            for result in CommandResult::ALL {
                text.sample(
                    "platform_commands_total",
                    &[("endpoint", endpoint), ("result", result.as_str())],
                    m.get(result) as f64,
                );
            }
        }
        text.family(
            "platform_command_retries_total",
            "counter",
            "Requests to a carrier platform's API sent again after a timeout, a connection error or an HTTP 5xx.",
        );
        for (endpoint, m) in &commands {
            text.sample(
                "platform_command_retries_total",
                &[("endpoint", endpoint)],
                get(&m.retries),
            );
        }
        for (name, help, counter) in [
            (
                "readings_unencodable_total",
                "Readings with values line protocol cannot carry (NaN, infinity).",
                &self.readings_unencodable,
            ),
            (
                "readings_evaluated_total",
                "Readings the rule engine evaluated.",
                &self.readings_evaluated,
            ),
            (
                "alarm_transitions_total",
                "Alarm transitions (raised, cleared, acknowledged, ...).",
                &self.alarm_transitions,
            ),
            (
                "store_errors_total",
                "Alarm state or journal writes that failed for good.",
                &self.store_errors,
            ),
        ] {
            text.single(name, "counter", help, get(counter));
        }
        text.family(
            "store_failing",
            "gauge",
            "1 while the store refuses the writes of the alarm journal or of the outbox.",
        );
        text.sample(
            "store_failing",
            &[("store", "journal")],
            flag(&self.journal_store_failing),
        );
        text.sample(
            "store_failing",
            &[("store", "outbox")],
            flag(&self.outbox_store_failing),
        );

        text.single(
            "alerts_queued_total",
            "counter",
            "Alarm pushes queued (per transition, route, channel and e-mail recipient).",
            get(&self.alerts_queued),
        );
        text.family(
            "alerts_finished_total",
            "counter",
            "Alarm pushes done with: delivered, or given up after the route's give-up time \
             (gateway fault G3).",
        );
        for (result, counter) in [
            ("delivered", &self.alerts_delivered),
            ("given_up", &self.alerts_given_up),
        ] {
            text.sample("alerts_finished_total", &[("result", result)], get(counter));
        }
        text.single(
            "alerts_send_failures_total",
            "counter",
            "Failed push attempts, retried until the route's give-up time.",
            get(&self.alerts_send_failures),
        );
        text.single(
            "alerts_digests_total",
            "counter",
            "Sends that carried several pushes as one digest (rate limit reached).",
            get(&self.alerts_digests),
        );
        text.single(
            "alerts_pending",
            "gauge",
            "Alarm pushes waiting in the queue.",
            get(&self.alerts_pending),
        );
        text.family(
            "alerts_oldest_critical_age_seconds",
            "gauge",
            "Per route: how long its oldest undelivered critical push has waited (0: none).",
        );
        {
            let oldest = self
                .alerts_oldest_critical
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut routes = self
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            routes.extend(oldest.keys().cloned());
            for route in &routes {
                let since = oldest.get(route).copied().unwrap_or(0);
                text.sample(
                    "alerts_oldest_critical_age_seconds",
                    &[("route", route)],
                    age_seconds(now_ms, since),
                );
            }
        }

        text.family(
            "outbox_commits_total",
            "counter",
            "Ingest transactions committed to the outbox (ok), and commits that failed and \
             were retried (failed).",
        );
        for (result, counter) in [
            ("ok", &self.outbox_commits),
            ("failed", &self.outbox_commit_failures),
        ] {
            text.sample("outbox_commits_total", &[("result", result)], get(counter));
        }
        for (name, help, counter) in [
            (
                "outbox_points_committed_total",
                "Readings committed to the outbox.",
                &self.outbox_points_committed,
            ),
            (
                "outbox_points_evicted_total",
                "Readings deleted from a full outbox before every sink had them (gateway \
                 fault G1).",
                &self.outbox_points_evicted,
            ),
            (
                "outbox_points_dropped_total",
                "Of the evicted readings, those of a new batch that did not fit even after \
                 eviction.",
                &self.outbox_points_dropped,
            ),
            (
                "outbox_evictions_total",
                "Times the outbox was full and evicted telemetry.",
                &self.outbox_evictions,
            ),
        ] {
            text.single(name, "counter", help, get(counter));
        }
        text.single(
            "outbox_bytes",
            "gauge",
            "Compressed bytes in the outbox.",
            get(&self.outbox_bytes),
        );

        let sinks: Vec<(String, Arc<SinkMetrics>)> = {
            let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
            sinks
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        type SinkValue = fn(&SinkMetrics, i64) -> f64;
        let sink_families: [(&str, &str, &str, SinkValue); 6] = [
            (
                "outbox_depth_points",
                "gauge",
                "Readings in the outbox not yet written to the sink.",
                |s, _| s.depth_points.load(Ordering::Relaxed) as f64,
            ),
            (
                "outbox_depth_batches",
                "gauge",
                "Batches in the outbox not yet written to the sink.",
                |s, _| s.depth_batches.load(Ordering::Relaxed) as f64,
            ),
            (
                "outbox_oldest_age_seconds",
                "gauge",
                "How long the oldest batch waiting for the sink has waited (0: none waiting).",
                |s, now| {
                    let created = s.oldest_created_ms.load(Ordering::Relaxed);
                    age_seconds(now, i64::try_from(created).unwrap_or(0))
                },
            ),
            (
                "sink_points_written_total",
                "counter",
                "Readings a sink's server accepted.",
                |s, _| s.points_written.load(Ordering::Relaxed) as f64,
            ),
            (
                "sink_points_retried_total",
                "counter",
                "Readings in requests that failed and were sent again.",
                |s, _| s.points_retried.load(Ordering::Relaxed) as f64,
            ),
            (
                "sink_points_dead_lettered_total",
                "counter",
                "Readings the server refused as invalid, kept as dead letters.",
                |s, _| s.points_dead_lettered.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in sink_families {
            text.family(name, kind, help);
            for (sink, m) in &sinks {
                text.sample(name, &[("sink", sink)], value(m, now_ms));
            }
        }
        text.family(
            "sink_write_requests_total",
            "counter",
            "Write requests to a sink's server, by result: accepted (ok) or failed (failed; \
             retried, split or dead-lettered).",
        );
        for (sink, m) in &sinks {
            for (result, counter) in [("ok", &m.batches_written), ("failed", &m.write_failures)] {
                text.sample(
                    "sink_write_requests_total",
                    &[("sink", sink), ("result", result)],
                    get(counter),
                );
            }
        }

        let mqtt: Vec<(String, Arc<MqttMetrics>)> = {
            let conns = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        text.family(
            "mqtt_connected",
            "gauge",
            "1 while the MQTT connection is up.",
        );
        for (name, m) in &mqtt {
            text.sample(
                "mqtt_connected",
                &[("connection", name)],
                flag(&m.connected),
            );
        }
        type MqttField = fn(&MqttMetrics) -> &AtomicU64;
        let mqtt_families: [(&str, &str, MqttField); 3] = [
            ("mqtt_connects_total", "Successful MQTT connections.", |m| {
                &m.connects
            }),
            (
                "mqtt_connection_errors_total",
                "MQTT connection errors (failed connects and dropped connections).",
                |m| &m.connection_errors,
            ),
            (
                "mqtt_acks_deferred_total",
                "Acknowledgements sent later because the client's queue was full.",
                |m| &m.acks_deferred,
            ),
        ];
        for (name, help, field) in mqtt_families {
            text.family(name, "counter", help);
            for (conn, m) in &mqtt {
                text.sample(name, &[("connection", conn)], get(field(m)));
            }
        }

        let modbus: Vec<(String, Arc<ModbusMetrics>)> = {
            let conns = self.modbus.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        text.family(
            "modbus_requests_total",
            "counter",
            "Modbus read requests by result: data (ok), a Modbus exception, no answer in time \
             (timeout), or a transport error.",
        );
        for (conn, m) in &modbus {
            for (result, counter) in [
                ("ok", &m.answered_ok),
                ("exception", &m.exceptions),
                ("timeout", &m.timeouts),
                ("transport", &m.transport_errors),
            ] {
                text.sample(
                    "modbus_requests_total",
                    &[("connection", conn), ("result", result)],
                    get(counter),
                );
            }
        }
        text.family(
            "modbus_polls_total",
            "counter",
            "Device polls (one unit, one poll class) by result.",
        );
        for (conn, m) in &modbus {
            for (result, counter) in [("ok", &m.polls_ok), ("failed", &m.polls_failed)] {
                text.sample(
                    "modbus_polls_total",
                    &[("connection", conn), ("result", result)],
                    get(counter),
                );
            }
        }
        type ModbusField = fn(&ModbusMetrics) -> &AtomicU64;
        let modbus_families: [(&str, &str, &str, ModbusField); 4] = [
            (
                "modbus_connects_total",
                "counter",
                "Modbus connections made.",
                |m| &m.connects,
            ),
            (
                "modbus_missed_cycles_total",
                "counter",
                "Poll ticks skipped because the link was still busy.",
                |m| &m.missed_cycles,
            ),
            (
                "modbus_units",
                "gauge",
                "Units configured on the link.",
                |m| &m.units,
            ),
            (
                "modbus_units_offline",
                "gauge",
                "Units counted offline now.",
                |m| &m.units_offline,
            ),
        ];
        for (name, kind, help, field) in modbus_families {
            text.family(name, kind, help);
            for (conn, m) in &modbus {
                text.sample(name, &[("connection", conn)], get(field(m)));
            }
        }
        text.family(
            "modbus_poll_seconds",
            "summary",
            "Time spent polling devices (sum and count: mean latency).",
        );
        for (conn, m) in &modbus {
            let labels = [("connection", conn.as_str())];
            text.sample(
                "modbus_poll_seconds_sum",
                &labels,
                get(&m.poll_micros_total) / 1e6,
            );
            let polls = get(&m.polls_ok) + get(&m.polls_failed);
            text.sample("modbus_poll_seconds_count", &labels, polls);
        }

        // Written by the web handler, which counts the alarms; every state and severity is
        // there from start-up.
        let states = alarm_states();
        let severities = alarm_severities();
        let sets = states
            .iter()
            .flat_map(|&state| {
                severities
                    .iter()
                    .map(move |&severity| vec![("state", state), ("severity", severity)])
            })
            .collect();
        text.expect("alarms", sets);
    }
}
