//! The gateway's own condition as readings of the gateway device (kind `gateway`, device id
//! = the gateway's name): the outbox evicting telemetry, a sink refusing its credentials. The
//! built-in gateway rules (`firmware-config/rules/gateway.toml`) raise faults from them, so
//! the gateway's troubles go through the same alarm lifecycle, journal and pushes as a
//! sensor's.
//!
//! Owns: the gateway device's tags and quantities. Must not touch: the rules themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::Config;
use crate::model::{now_ns, Quality, Reading, ReadingBatch, Tags, Value};

pub const KIND: &str = "gateway";
pub const MEASUREMENT: &str = "gateway";
/// 1 while the outbox is full and telemetry is being evicted; 0 once it has room again.
pub const OUTBOX_EVICTING: &str = "outbox_evicting";

/// 1 while `sink` refuses parkguard's credentials (HTTP 401/403).
pub fn auth_refused(sink: &str) -> String {
    format!("auth_refused_{sink}")
}

/// Every quantity the gateway device reports.
pub fn quantities(config: &Config) -> Vec<String> {
    let mut out = vec![OUTBOX_EVICTING.to_string()];
    out.extend(config.site.influx.iter().map(|s| auth_refused(&s.name)));
    if let Some(alerts) = &config.site.alerts {
        out.extend(
            alerts
                .routes
                .iter()
                .map(|r| crate::alerts::dispatch::given_up_quantity(&r.name)),
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
