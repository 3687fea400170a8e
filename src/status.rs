//! The gateway's own condition as readings of the gateway device (kind `gateway`, device id
//! = the gateway's name): the outbox evicting telemetry, a sink refusing its credentials. The
//! built-in gateway rules (`firmware-config/rules/gateway.toml`) raise faults from them, so
//! the gateway's troubles go through the same alarm lifecycle, journal and pushes as a
//! sensor's. Stages report through a [`StatusReporter`], which sends a quantity only when it
//! changes.
//!
//! The watch task ([`spawn_watch`]) turns the gateway's metrics into those readings every
//! couple of seconds: connections down, links with every unit offline, sinks stalled,
//! critical pushes late, store writes failing, the clock stepping, a restart after a failure
//! (the note a failing daemon leaves beside the store). The delays before each becomes an
//! alarm are the gateway rules' `on_delay_s`.
//!
//! Owns: the gateway device's tags and quantities, and the failure note's place. Must not
//! touch: the rules themselves (it only names the gateway device for the engine).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::Metrics;

use crate::config::Config;
use crate::model::{now_ns, Quality, Reading, ReadingBatch, Tags, Value};
use crate::rules::engine::GatewayDevice;

pub const KIND: &str = "gateway";

/// How long a connection must stay up before it counts as recovered (MQTT reconnect backoff
/// and the connection-lost fault).
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The gateway quantity raised while pushes of `route` have been given up.
pub fn given_up_quantity(route: &str) -> String {
    format!("alert_given_up_{route}")
}
pub const MEASUREMENT: &str = "gateway";
/// 1 while the outbox is full and telemetry is being evicted; 0 once it has room again.
pub const OUTBOX_EVICTING: &str = "outbox_evicting";

/// 1 while `sink` refuses parkguard's credentials (HTTP 401/403).
pub fn auth_refused(sink: &str) -> String {
    format!("auth_refused_{sink}")
}

/// 1 while the MQTT connection `name` is down or cannot stay up.
pub fn mqtt_down(name: &str) -> String {
    format!("mqtt_down_{name}")
}
/// 1 while every unit on the Modbus link `name` is offline.
pub fn modbus_down(name: &str) -> String {
    format!("modbus_down_{name}")
}
/// 1 while the sink `name` has data waiting and has not written lately.
pub fn sink_stalled(name: &str) -> String {
    format!("sink_stalled_{name}")
}
/// 1 while a critical push of the alert route `name` has waited undelivered for 5 s or more.
pub fn alert_critical_waiting(route: &str) -> String {
    format!("alert_critical_waiting_{route}")
}
/// 1 while output `id` has not confirmed its last command (linkage).
pub fn linkage_failed(id: &str) -> String {
    format!("linkage_failed_{id}")
}
/// 1 while the link to monitoring centre `name` is down or a frame went unconfirmed.
pub fn northbound_failed(name: &str) -> String {
    format!("northbound_failed_{name}")
}
/// 1 while the store refuses writes.
pub const STORE_FAILING: &str = "store_failing";
/// 1 for a while after the clock stepped.
pub const CLOCK_JUMPED: &str = "clock_jumped";
/// 1 for a while after a start that followed a task failure.
pub const RESTARTED_AFTER_FAILURE: &str = "restarted_after_failure";

/// Every quantity the gateway device reports.
pub fn quantities(config: &Config) -> Vec<String> {
    let mut out = vec![
        OUTBOX_EVICTING.to_string(),
        STORE_FAILING.to_string(),
        CLOCK_JUMPED.to_string(),
        RESTARTED_AFTER_FAILURE.to_string(),
    ];
    out.extend(config.site.influx.iter().map(|s| auth_refused(&s.name)));
    out.extend(config.site.influx.iter().map(|s| sink_stalled(&s.name)));
    out.extend(config.site.mqtt.iter().map(|m| mqtt_down(&m.name)));
    out.extend(
        config
            .site
            .modbus
            .iter()
            .filter(|m| !m.units.is_empty())
            .map(|m| modbus_down(&m.name)),
    );
    out.extend(config.site.outputs.iter().map(|o| linkage_failed(&o.id)));
    out.extend(
        config
            .site
            .northbound
            .iter()
            .map(|n| northbound_failed(&n.name)),
    );
    if let Some(alerts) = &config.site.alerts {
        out.extend(alerts.routes.iter().map(|r| given_up_quantity(&r.name)));
        out.extend(
            alerts
                .routes
                .iter()
                .map(|r| alert_critical_waiting(&r.name)),
        );
    }
    out
}

/// The gateway's place in the site: the park when the site has exactly one.
pub fn tags(config: &Config) -> Tags {
    let park = match config.site.parks.as_slice() {
        [only] => only.id.clone(),
        _ => String::new(),
    };
    Tags {
        park,
        device: config.site.gateway.name.clone(),
        kind: KIND.to_string(),
        profile: KIND.to_string(),
        ..Tags::default()
    }
}

/// The gateway as the rule engine binds it.
pub fn device(config: &Config) -> GatewayDevice {
    GatewayDevice {
        tags: tags(config),
        quantities: quantities(config),
    }
}

/// Sends the gateway's condition to the rules, each quantity only when it changes.
#[derive(Clone)]
pub struct StatusReporter {
    tags: Arc<Tags>,
    output: mpsc::UnboundedSender<ReadingBatch>,
    last: Arc<Mutex<HashMap<String, bool>>>,
}

impl StatusReporter {
    pub fn new(config: &Config) -> (Self, mpsc::UnboundedReceiver<ReadingBatch>) {
        let (output, input) = mpsc::unbounded_channel();
        let reporter = StatusReporter {
            tags: Arc::new(tags(config)),
            output,
            last: Arc::new(Mutex::new(HashMap::new())),
        };
        (reporter, input)
    }

    pub fn set(&self, quantity: &str, on: bool) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(quantity) == Some(&on) {
                return;
            }
            last.insert(quantity.to_string(), on);
        }
        let reading = Reading {
            tags: Arc::clone(&self.tags),
            measurement: Arc::from(MEASUREMENT),
            quantity: Arc::from(quantity),
            value: Value::Bool(on),
            unit: None,
            timestamp_ns: now_ns(),
            quality: Quality::Good,
        };
        // The rules have stopped only at shutdown, when there is nobody left to tell.
        let _ = self.output.send(Arc::from(vec![reading]));
    }
}

/// How often the watch task looks.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// A critical push waiting this long is late (G7's on-delay adds to it).
const CRITICAL_PUSH_LATE_MS: i64 = 5_000;
/// A sink that wrote within this long is not stalled, whatever waits.
const SINK_QUIET: Duration = Duration::from_secs(5);
/// How long the one-off faults (clock step, restart after a failure) stay active; they then
/// return to normal and wait on the board for an acknowledgement.
const ONE_OFF_HOLD: Duration = Duration::from_secs(60);

/// The file beside the store where a failing daemon leaves the cause for its next start.
pub fn failure_note_path(store: &std::path::Path) -> std::path::PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".failure");
    std::path::PathBuf::from(name)
}

/// Watches the gateway's metrics and reports its condition until `cancel`.
pub fn spawn_watch(
    config: &Config,
    metrics: Arc<Metrics>,
    status: StatusReporter,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let mqtt: Vec<(String, Arc<crate::metrics::MqttMetrics>)> = config
        .site
        .mqtt
        .iter()
        .map(|m| (mqtt_down(&m.name), metrics.mqtt(&m.name)))
        .collect();
    let modbus: Vec<(String, u64, Arc<crate::metrics::ModbusMetrics>)> = config
        .site
        .modbus
        .iter()
        .filter(|m| !m.units.is_empty())
        .map(|m| {
            (
                modbus_down(&m.name),
                m.units.len() as u64,
                metrics.modbus(&m.name),
            )
        })
        .collect();
    let sinks: Vec<(String, Arc<crate::metrics::SinkMetrics>)> = config
        .site
        .influx
        .iter()
        .map(|s| (sink_stalled(&s.name), metrics.sink(&s.name)))
        .collect();
    let routes: Vec<(String, String)> = config
        .site
        .alerts
        .iter()
        .flat_map(|a| &a.routes)
        .map(|r| (r.name.clone(), alert_critical_waiting(&r.name)))
        .collect();
    let jump_ms = i64::try_from(config.site.gateway.clock_jump_s)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let failure_note = failure_note_path(&config.resolve_path(&config.site.gateway.store));
    tokio::spawn(async move {
        let mut restarted_until = None;
        if let Ok(cause) = std::fs::read_to_string(&failure_note) {
            warn!(cause = %cause.trim(), "The previous run ended with a task failure.");
            let _ = std::fs::remove_file(&failure_note);
            status.set(RESTARTED_AFTER_FAILURE, true);
            restarted_until = Some(Instant::now() + ONE_OFF_HOLD);
        }
        let mut clock_until: Option<Instant> = None;
        let mut last = (Instant::now(), now_ns() / 1_000_000);
        let mut waiting_since: Vec<Option<Instant>> = vec![None; sinks.len()];
        let mut last_written: Vec<u64> = vec![0; sinks.len()];
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = Instant::now();
            let wall_ms = now_ns() / 1_000_000;
            for (quantity, m) in &mqtt {
                // Down, or not up long enough to count: a connection that keeps breaking
                // right after connecting is down too.
                let since = m.connected_since_ms.load(Relaxed) as i64;
                let stable = since > 0 && wall_ms - since >= STABLE_AFTER.as_millis() as i64;
                status.set(quantity, !stable);
            }
            for (quantity, units, m) in &modbus {
                status.set(quantity, m.units_offline.load(Relaxed) >= *units);
            }
            for (i, (quantity, m)) in sinks.iter().enumerate() {
                let written = m.last_write_ms.load(Relaxed);
                if written != last_written[i] {
                    last_written[i] = written;
                    waiting_since[i] = None;
                }
                let waiting = m.depth_points.load(Relaxed) > 0;
                let quiet_since = match (waiting, waiting_since[i]) {
                    (false, _) => {
                        waiting_since[i] = None;
                        None
                    }
                    (true, Some(since)) => Some(since),
                    (true, None) => {
                        waiting_since[i] = Some(now);
                        Some(now)
                    }
                };
                status.set(
                    quantity,
                    quiet_since.is_some_and(|t| now.duration_since(t) >= SINK_QUIET),
                );
            }
            {
                let oldest = metrics
                    .alerts_oldest_critical
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                for (route, quantity) in &routes {
                    // Late, not merely waiting: a steady flow of criticals each delivered in
                    // moments keeps one pending at all times without any being late.
                    let late = oldest
                        .get(route)
                        .is_some_and(|&queued| wall_ms - queued >= CRITICAL_PUSH_LATE_MS);
                    status.set(quantity, late);
                }
            }
            status.set(
                STORE_FAILING,
                metrics.journal_store_failing.load(Relaxed)
                    || metrics.outbox_store_failing.load(Relaxed),
            );
            // Wall time against the monotonic clock: a difference is a step of the wall clock.
            let step = (wall_ms - last.1) - now.duration_since(last.0).as_millis() as i64;
            last = (now, wall_ms);
            if step.abs() > jump_ms {
                warn!(step_s = step / 1000, "The gateway's clock stepped.");
                status.set(CLOCK_JUMPED, true);
                clock_until = Some(now + ONE_OFF_HOLD);
            }
            if clock_until.is_some_and(|t| now >= t) {
                clock_until = None;
                status.set(CLOCK_JUMPED, false);
            }
            if restarted_until.is_some_and(|t| now >= t) {
                restarted_until = None;
                status.set(RESTARTED_AFTER_FAILURE, false);
            }
        }
    })
}
