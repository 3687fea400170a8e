//! Scenario files (`firmware-config/scenarios/*.toml`) and the simulator that plays them:
//! devices with a profile and starting values, and steps over time (set a value or flag, ramp,
//! chatter, go silent, answer with exceptions). Modbus devices are units of one simulated bus
//! (served over TCP and optionally RTU on a serial line); MQTT devices publish through any
//! broker, and an MQTT alarm event is sent again every `retransmit_s` (5 s) until a message
//! arrives on the device's `down` topic (the acknowledgement GB 26875-style devices wait for).
//!
//! Owns: the simulated devices' state over time. Must not touch: the daemon; it is reached only
//! over the network.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Profile;
use crate::sim::encode::{json_payload, register_words, status_word, SimValue};
use crate::sim::modbus::{Behaviour, SimulatedBus};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub devices: Vec<SimDeviceConfig>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// `[[devices]]` of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDeviceConfig {
    pub id: String,
    /// A profile id (a file in the profiles folder): a Modbus register map or an MQTT payload map.
    pub profile: String,
    /// Modbus unit id, for profiles with a register map.
    #[serde(default)]
    pub unit: Option<u8>,
    /// MQTT topic to publish on, `{device}` replaced by the id, for profiles with a payload map.
    #[serde(default)]
    pub topic: Option<String>,
    /// Seconds between MQTT messages (default 10).
    #[serde(default = "default_every_s")]
    pub every_s: f64,
    /// Seconds between retransmissions of an unacknowledged alarm (default 5).
    #[serde(default = "default_retransmit_s")]
    pub retransmit_s: f64,
    /// Starting values by quantity, and flags (named status bits) by name.
    #[serde(default)]
    pub values: BTreeMap<String, SimValue>,
}

fn default_every_s() -> f64 {
    10.0
}
fn default_retransmit_s() -> f64 {
    5.0
}

/// `[[steps]]`: what happens to a device at `at_s` seconds after the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at_s: f64,
    pub device: String,
    /// Values or flags set at once.
    #[serde(default)]
    pub set: BTreeMap<String, SimValue>,
    /// A quantity moving linearly to `to` over `over_s`.
    #[serde(default)]
    pub ramp: Option<Ramp>,
    /// A quantity flipping between `low` and `high` every `every_s` (a chattering value).
    #[serde(default)]
    pub chatter: Option<Chatter>,
    /// `normal`, `silent` (no answer, no messages) or `exception` (Modbus busy).
    #[serde(default)]
    pub behaviour: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub quantity: String,
    pub to: f64,
    pub over_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chatter {
    pub quantity: String,
    pub low: f64,
    pub high: f64,
    pub every_s: f64,
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Problems a scenario has against the profiles it names.
    pub fn problems(&self, profiles: &BTreeMap<String, Profile>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut units = BTreeMap::new();
        for d in &self.devices {
            let Some(profile) = profiles.get(&d.profile) else {
                problems.push(format!("device `{}`: no profile `{}`", d.id, d.profile));
                continue;
            };
            match (&profile.modbus, &profile.payload, d.unit, &d.topic) {
                (Some(_), _, Some(unit), _) => {
                    if let Some(other) = units.insert(unit, &d.id) {
                        problems.push(format!(
                            "devices `{other}` and `{}` share unit {unit}",
                            d.id
                        ));
                    }
                }
                (_, Some(_), None, Some(_)) => {}
                _ => problems.push(format!(
                    "device `{}`: give `unit` for a Modbus profile or `topic` for an MQTT one",
                    d.id
                )),
            }
            if !(d.every_s.is_finite() && d.every_s > 0.0) {
                problems.push(format!("device `{}`: every_s must be above 0", d.id));
            }
            if !(d.retransmit_s.is_finite() && d.retransmit_s > 0.0) {
                problems.push(format!("device `{}`: retransmit_s must be above 0", d.id));
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            if !self.devices.iter().any(|d| d.id == s.device) {
                problems.push(format!("steps[{i}]: no device `{}`", s.device));
            }
            if let Some(b) = &s.behaviour {
                if !matches!(b.as_str(), "normal" | "silent" | "exception") {
                    problems.push(format!("steps[{i}].behaviour: normal, silent or exception"));
                }
            }
            if s.ramp
                .as_ref()
                .is_some_and(|r| !(r.over_s.is_finite() && r.over_s > 0.0))
            {
                problems.push(format!("steps[{i}].ramp.over_s must be above 0"));
            }
            if s.chatter
                .as_ref()
                .is_some_and(|c| !(c.every_s.is_finite() && c.every_s > 0.0))
            {
                problems.push(format!("steps[{i}].chatter.every_s must be above 0"));
            }
        }
        problems
    }

    /// Unit ids of the Modbus devices.
    pub fn units(&self) -> Vec<u8> {
        self.devices.iter().filter_map(|d| d.unit).collect()
    }
}

/// One device while the scenario plays.
struct Live {
    config: SimDeviceConfig,
    profile: Profile,
    values: BTreeMap<String, SimValue>,
    ramps: Vec<(Ramp, f64, f64)>,
    chatter: Option<(Chatter, f64)>,
    behaviour: String,
    next_publish: f64,
    /// An alarm event sent and not yet acknowledged on the `down` topic.
    awaiting_ack: bool,
}

impl Live {
    fn value_at(&self, quantity: &str, t: f64) -> Option<SimValue> {
        if let Some((c, since)) = &self.chatter {
            if c.quantity == quantity {
                let flips = ((t - since) / c.every_s).floor() as i64;
                return Some(SimValue::Number(if flips % 2 == 0 {
                    c.high
                } else {
                    c.low
                }));
            }
        }
        for (ramp, started, from) in self.ramps.iter().rev() {
            if ramp.quantity == quantity {
                let progress = ((t - started) / ramp.over_s).clamp(0.0, 1.0);
                return Some(SimValue::Number(from + (ramp.to - from) * progress));
            }
        }
        self.values.get(quantity).cloned()
    }

    fn apply(&mut self, step: &Step, t: f64) {
        for (key, value) in &step.set {
            self.values.insert(key.clone(), value.clone());
            if key == "event" && *value == SimValue::Text("alarm".into()) {
                self.awaiting_ack = true;
                self.next_publish = t;
            }
            self.ramps.retain(|(r, _, _)| r.quantity != *key);
        }
        if let Some(ramp) = &step.ramp {
            let from = self
                .value_at(&ramp.quantity, t)
                .and_then(|v| match v {
                    SimValue::Number(n) => Some(n),
                    _ => None,
                })
                .unwrap_or(0.0);
            self.ramps.push((ramp.clone(), t, from));
        }
        if let Some(chatter) = &step.chatter {
            self.chatter = Some((chatter.clone(), t));
        }
        if let Some(b) = &step.behaviour {
            self.behaviour = b.clone();
        }
    }

    fn current(&self, t: f64) -> BTreeMap<String, SimValue> {
        let mut keys: Vec<String> = self.values.keys().cloned().collect();
        keys.extend(self.ramps.iter().map(|(r, _, _)| r.quantity.clone()));
        keys.extend(self.chatter.iter().map(|(c, _)| c.quantity.clone()));
        keys.into_iter()
            .filter_map(|k| self.value_at(&k, t).map(|v| (k, v)))
            .collect()
    }
}

/// Where the simulator's MQTT devices publish.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
}

/// Plays `scenario` until `cancel`: Modbus devices become units of `bus` (serve it where you
/// want), MQTT devices publish to `mqtt`.
pub async fn play(
    scenario: Scenario,
    profiles: BTreeMap<String, Profile>,
    bus: SimulatedBus,
    mqtt: Option<MqttTarget>,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let mut live: Vec<Live> = scenario
        .devices
        .iter()
        .filter_map(|d| {
            Some(Live {
                config: d.clone(),
                profile: profiles.get(&d.profile)?.clone(),
                values: d.values.clone(),
                ramps: Vec::new(),
                chatter: None,
                behaviour: "normal".into(),
                next_publish: 0.0,
                awaiting_ack: false,
            })
        })
        .collect();
    let has_mqtt = live.iter().any(|d| d.config.topic.is_some());
    let (client, acks) = match (&mqtt, has_mqtt) {
        (Some(target), true) => {
            let (client, acks) = connect(target, &live, cancel.clone());
            (Some(client), Some(acks))
        }
        (None, true) => {
            warn!(
                "The scenario has MQTT devices but no broker was given (--mqtt); they stay quiet."
            );
            (None, None)
        }
        _ => (None, None),
    };
    let mut steps = scenario.steps.clone();
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut next_step = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    info!(scenario = %scenario.name, devices = live.len(), steps = steps.len(), "Scenario playing.");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let t = started.elapsed().as_secs_f64();
        while let Some(step) = steps.get(next_step).filter(|s| s.at_s <= t) {
            if let Some(device) = live.iter_mut().find(|d| d.config.id == step.device) {
                info!(at_s = step.at_s, device = %step.device, "Scenario step.");
                device.apply(step, t);
            }
            next_step += 1;
        }
        if let Some(acks) = &acks {
            for id in acks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                if let Some(device) = live.iter_mut().find(|d| d.config.id == id) {
                    if device.awaiting_ack {
                        info!(device = %id, "Alarm acknowledged on the down topic; no more retransmissions.");
                        // Back to the ordinary reporting interval.
                        device.next_publish = t + device.config.every_s;
                    }
                    device.awaiting_ack = false;
                }
            }
        }
        for device in &mut live {
            if let (Some(modbus), Some(unit_id)) = (&device.profile.modbus, device.config.unit) {
                update_unit(&bus, unit_id, modbus, device, t);
            }
            if let (Some(client), Some(topic), Some(payload)) =
                (&client, &device.config.topic, &device.profile.payload)
            {
                if device.behaviour == "silent" || t < device.next_publish {
                    continue;
                }
                let values = device.current(t);
                let now_ms = crate::model::now_ms();
                let json = json_payload(payload, &values, &device.config.id, now_ms);
                let topic = topic.replace("{device}", &device.config.id);
                if let Err(err) =
                    client.try_publish(&topic, QoS::AtLeastOnce, false, json.to_string())
                {
                    debug!(error = %err, "Simulator: MQTT queue full; message skipped.");
                }
                // An unacknowledged alarm goes out again soon, like a real detector's.
                let every = if device.awaiting_ack {
                    device.config.retransmit_s
                } else {
                    device.config.every_s
                };
                device.next_publish = t + every;
            }
        }
    }
    if let Some(client) = client {
        let _ = client.disconnect().await;
    }
}

fn update_unit(
    bus: &SimulatedBus,
    unit_id: u8,
    modbus: &crate::decode::registers::ModbusProfile,
    device: &Live,
    t: f64,
) {
    let Some(unit) = bus.unit(unit_id) else {
        return;
    };
    unit.set_behaviour(match device.behaviour.as_str() {
        "silent" => Behaviour::Silent,
        "exception" => Behaviour::Exception(tokio_modbus::prelude::ExceptionCode::ServerDeviceBusy),
        _ => Behaviour::Normal,
    });
    let values = device.current(t);
    for mapping in &modbus.registers {
        let address = mapping.address.saturating_sub(modbus.address_base);
        let packed = !mapping.bits.is_empty() || !mapping.fields.is_empty();
        let words = if packed && !values.contains_key(&mapping.quantity) {
            Some(vec![status_word(mapping, &values)])
        } else {
            values
                .get(&mapping.quantity)
                .and_then(|v| register_words(mapping, v))
        };
        if let Some(words) = words {
            if mapping.area.is_bit() {
                unit.set_words(mapping.area, address, &words[..1]);
            } else {
                unit.set_words(mapping.area, address, &words);
            }
        }
    }
}

type Acks = Arc<std::sync::Mutex<Vec<String>>>;

/// Connects the MQTT devices' client and listens on their `down` topics for acknowledgements.
fn connect(target: &MqttTarget, live: &[Live], cancel: CancellationToken) -> (AsyncClient, Acks) {
    let suffix: u32 = rand::random();
    let mut options = MqttOptions::new(
        format!("parkguard-sim-{suffix:08x}"),
        target.host.clone(),
        target.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let downs: Vec<(String, String)> = live
        .iter()
        .filter_map(|d| {
            let topic = d.config.topic.as_ref()?.replace("{device}", &d.config.id);
            let down = match topic.strip_suffix("/up") {
                Some(base) => format!("{base}/down"),
                None => format!("{topic}/down"),
            };
            Some((down, d.config.id.clone()))
        })
        .collect();
    let acks: Acks = Arc::default();
    let received = Arc::clone(&acks);
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for (down, _) in &downs {
                        let _ = subscriber.try_subscribe(down, QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((_, id)) = downs.iter().find(|(down, _)| *down == p.topic) {
                        received
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(id.clone());
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    debug!(error = %err, "Simulator: MQTT connection error; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    (client, acks)
}
