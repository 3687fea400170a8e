//! The rule engine: binds the rule sets to devices, evaluates readings and the passing of time,
//! runs one alarm state machine per (rule, device, quantity), and reports every transition as
//! an `AlarmEvent`. Pure and single-owner: no IO, no locks, the clock is passed in. Flood and
//! chatter detection live here because they look across alarms.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::config::devices::DeviceDirectory;
use crate::config::{AlarmKind, ConditionConfig, Config, RuleConfig, Severity};
use crate::model::alarm::{AlarmEvent, Observed, PersistedAlarm};
use crate::model::{Quality, Reading, Tags, Value};
use crate::rules::alarm::{Action, Alarm, AlarmState, Command, CommandError, Level, Operator};
use crate::rules::threshold::{Direction, Edge, LevelFilter, Ms};

/// Flood: more than this many new alarms in `FLOOD_WINDOW_MS` in one park ...
pub const FLOOD_START: usize = 10;
/// ... and it ends when the window holds fewer than this.
pub const FLOOD_END: usize = 5;
pub const FLOOD_WINDOW_MS: Ms = 10 * 60 * 1000;
/// Chatter: more than this many activations of one alarm within its chatter window, which is
/// `CHATTER_WINDOW_MS`, or enough whole raise-and-clear cycles of a delayed rule to hold that
/// many activations (R1 needs 40 s a cycle: its window is 4 x 40 s).
pub const CHATTER_ACTIVATIONS: usize = 3;
pub const CHATTER_WINDOW_MS: Ms = 60 * 1000;
/// A chattering alarm that stays calm (no activation) for this many windows is no longer
/// flagged, and its deadband returns to normal.
pub const CHATTER_CALM_WINDOWS: Ms = 2;

/// A transition whose condition the device's own clock places more than this far behind the
/// gateway's (beyond the device's usual offset) is reported late: it happened while messages
/// could not reach the gateway, and the journal says when its condition began.
pub const LATE_AFTER_MS: Ms = 30 * 1000;

/// Samples a rate condition keeps per window: the rise is measured from the oldest one within
/// the window, so over at least 7/8 of it.
const RATE_SAMPLES_PER_WINDOW: Ms = 8;

/// The chatter window of a rule bound with these delays.
fn chatter_window(on_delays: &[Ms], off_delays: &[Ms]) -> Ms {
    let cycle = on_delays.first().copied().unwrap_or(0) + off_delays.first().copied().unwrap_or(0);
    CHATTER_WINDOW_MS.max(cycle.saturating_mul(CHATTER_ACTIVATIONS as Ms + 1))
}

impl AlarmEvent {
    fn mark_late(&mut self, began: Ms, at: Ms) {
        self.late_began_ms = Some(began);
        let ago = (at - began).max(0) / 1000;
        self.message.push_str(&format!(
            " [reported late: its condition began {ago} s before the gateway received it]"
        ));
    }
}

/// Which alarms a command is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "target", content = "id", rename_all = "snake_case")]
pub enum Target {
    Alarm(String),
    /// Every alarm of a device (maintenance mode of a device).
    Device(String),
    /// Every alarm of every device at a location.
    Location(String),
}

/// A read-only view of one alarm, for the API and the board.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    pub key: String,
    pub rule: String,
    pub rule_name: String,
    /// The rule's Chinese name, when the rule set gives one.
    pub rule_name_zh: Option<String>,
    pub park: String,
    pub enterprise: String,
    pub location: String,
    pub device: String,
    pub source: String,
    pub state: AlarmState,
    pub severity: Option<Severity>,
    pub kind: Option<AlarmKind>,
    pub value: Option<Observed>,
    pub threshold: Option<f64>,
    pub latched: bool,
    /// The rule watches for the device going silent (comm loss, missed heartbeats).
    pub comm_loss: bool,
    pub shelved_until_ms: Option<Ms>,
    pub shelve_reason: Option<String>,
    pub suppressed_until_ms: Option<Ms>,
    pub out_of_service: bool,
    pub out_of_service_until_ms: Option<Ms>,
    /// Suppressed by design: the device's maintenance state (calibration, warm-up, ...).
    pub maintenance: Option<String>,
    pub chattering: bool,
    /// The device silenced its sounder (消音); the alarm is still active.
    pub silenced: bool,
    /// Operators may shelve it (rules without a critical level, unless configured).
    pub shelvable: bool,
    pub raised_at_ms: Option<Ms>,
    pub changed_at_ms: Ms,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Evaluation {
    Numeric(Direction),
    Rate(Direction, Ms),
    Max,
    Unbalance { min_mean: f64 },
    PhaseLoss { below: f64, others_above: f64 },
    Flag,
    State,
    Invalid,
    CommLoss,
    Silence { after: Ms },
}

/// A rule with its levels, as bound to one device (overrides applied).
#[derive(Clone, PartialEq)]
struct Bound {
    rule: usize,
    ats: Vec<f64>,
    deadband: f64,
    on_delays: Vec<Ms>,
    off_delays: Vec<Ms>,
}

struct CompiledLevel {
    severity: Severity,
    kind: AlarmKind,
    latched: bool,
    /// For `state` conditions: the states that raise this level.
    states: Vec<String>,
}

impl CompiledLevel {
    fn raised_by(&self, state: &str) -> bool {
        self.states.iter().any(|s| s == state)
    }
}

struct CompiledRule {
    id: Arc<str>,
    name: Arc<str>,
    name_zh: Option<Arc<str>>,
    levels: Vec<CompiledLevel>,
    clear_states: Vec<String>,
    silence_states: Vec<String>,
    flood_suppressible: bool,
    shelvable: bool,
}

/// What an alarm instance shares with every instance of the same rule, quantity and
/// settings, which is usually every device of a profile: kept once, not once per device
/// (10,000 meters bind some 200,000 instances).
#[derive(PartialEq)]
struct Binding {
    settings: Bound,
    /// The quantity evaluated; empty for whole-device and derived conditions.
    source: Arc<str>,
    evaluation: Evaluation,
}

impl Eq for Binding {}

impl std::hash::Hash for Binding {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let s = &self.settings;
        s.rule.hash(state);
        for at in &s.ats {
            at.to_bits().hash(state);
        }
        s.deadband.to_bits().hash(state);
        s.on_delays.hash(state);
        s.off_delays.hash(state);
        self.source.hash(state);
        std::mem::discriminant(&self.evaluation).hash(state);
    }
}

static NORMAL_ALARM: LazyLock<Alarm> = LazyLock::new(Alarm::default);

/// An instance's alarm, stored only once it has left normal: most instances of a large site
/// never do, and an `Alarm` inline in each would be most of the gateway's memory. Reads of a
/// normal alarm see `NORMAL_ALARM`; the first change allocates it; `settle` frees it when it
/// is back to exactly normal.
#[derive(Default)]
struct AlarmSlot(Option<Box<Alarm>>);

impl AlarmSlot {
    fn settle(&mut self) {
        if self.0.as_deref().is_some_and(|a| *a == *NORMAL_ALARM) {
            self.0 = None;
        }
    }
}

impl From<Alarm> for AlarmSlot {
    fn from(alarm: Alarm) -> Self {
        let mut slot = AlarmSlot(Some(Box::new(alarm)));
        slot.settle();
        slot
    }
}

impl std::ops::Deref for AlarmSlot {
    type Target = Alarm;
    fn deref(&self) -> &Alarm {
        self.0.as_deref().unwrap_or(&NORMAL_ALARM)
    }
}

impl std::ops::DerefMut for AlarmSlot {
    fn deref_mut(&mut self) -> &mut Alarm {
        self.0.get_or_insert_with(|| Box::new(Alarm::default()))
    }
}

/// One rule on one quantity (or on the whole device) of one device. Its key,
/// `rule/device[/source]`, is composed when needed rather than stored.
// Boxed deques: 8 bytes inline where a deque is 32, for state only rate conditions and
// raised alarms ever use.
#[allow(clippy::box_collection)]
struct Instance {
    binding: Arc<Binding>,
    device: usize,
    /// Where its level filters (one per level of its rule) start in `RuleEngine::filters`.
    filters_at: u32,
    /// Latest value of each input, for derived conditions (empty otherwise).
    inputs: Box<[Option<f64>]>,
    /// Recent samples, for rate conditions.
    history: Option<Box<VecDeque<(Ms, f64)>>>,
    alarm: AlarmSlot,
    value: Option<Observed>,
    unit: Option<Arc<str>>,
    /// Recent activations, once it has been raised (chatter detection).
    activations: Option<Box<VecDeque<Ms>>>,
    scheduled: Option<Ms>,
    /// The device's own decisions bound to this alarm: (level index, set now; `None` until
    /// the first reading, so that an alarm restored after a restart is re-evaluated).
    device_reports: Box<[(u8, Option<bool>)]>,
}

impl Instance {
    /// When a chattering alarm will have been calm long enough to be unflagged.
    fn calm_at(&self) -> Option<Ms> {
        if !self.alarm.chattering {
            return None;
        }
        let settings = &self.binding.settings;
        let window = chatter_window(&settings.on_delays, &settings.off_delays);
        let last = self
            .activations
            .as_ref()
            .and_then(|a| a.back())
            .copied()
            .unwrap_or(self.alarm.changed_at);
        Some(last + CHATTER_CALM_WINDOWS * window)
    }

    /// Its level filters' place in `RuleEngine::filters`.
    fn filters(&self) -> Range<usize> {
        let at = self.filters_at as usize;
        at..at + self.binding.settings.ats.len()
    }

    /// A chattering alarm's deadband is doubled (a bad actor).
    fn deadband(&self) -> f64 {
        let factor = if self.alarm.chattering { 2.0 } else { 1.0 };
        self.binding.settings.deadband * factor
    }
}

/// Where a device's own alarm decision goes: (instance offset, report slot, the states that
/// mean it; none for a flag).
type DeviceInput = (usize, usize, Arc<[String]>);

/// A device's own time, for devices whose messages carry a timestamp (the receive time
/// otherwise, which makes it the gateway's clock). Delays of the rules on its measurements run
/// on it, so that messages the broker replays after an outage are evaluated as they happened:
/// a condition that held for its on-delay during the outage is raised, one that came and went
/// is journaled, and a delay is not cut short by the gateway's clock running on between two
/// replayed messages.
#[derive(Debug, Clone, Copy)]
struct DeviceClock {
    /// Device time of the latest message evaluated, never going back.
    device_ms: Ms,
    /// The gateway's time when it was evaluated.
    wall_ms: Ms,
    /// How far behind the gateway's clock this device's messages usually are (its clock's
    /// offset plus transport): the least seen, relaxing upwards by a tenth of the time passed
    /// so that a corrected clock is learned, but not within a burst of replayed messages.
    usual_lag_ms: Ms,
}

impl DeviceClock {
    /// The device's time now: its latest message's, plus the time passed since.
    fn now(&self, wall: Ms) -> Ms {
        self.device_ms + (wall - self.wall_ms).max(0)
    }

    /// A device time as the gateway's time it is learned at (never later than `wall`).
    fn to_wall(self, device: Ms, wall: Ms) -> Ms {
        (device + self.wall_ms - self.device_ms).min(wall)
    }

    /// The latest message arrived much later than the device's messages usually do.
    fn is_late(&self) -> bool {
        self.wall_ms - self.device_ms - self.usual_lag_ms > LATE_AFTER_MS
    }

    /// Takes a message stamped `stamped` (device time) in at `wall`; returns the time it is
    /// evaluated at.
    fn observe(clock: &mut Option<DeviceClock>, stamped: Ms, wall: Ms) -> Ms {
        let Some(c) = clock else {
            *clock = Some(DeviceClock {
                device_ms: stamped,
                wall_ms: wall,
                usual_lag_ms: (wall - stamped).min(0),
            });
            return stamped;
        };
        // Never before the previous message; the gateway's clock running on meanwhile says
        // nothing of when the device sent this one (the broker may be replaying).
        let at = stamped.max(c.device_ms);
        let relaxed = c.usual_lag_ms + (wall - c.wall_ms).max(0) / 10;
        c.usual_lag_ms = relaxed.min(wall - at);
        c.device_ms = at;
        c.wall_ms = wall;
        at
    }
}

/// When a sample is evaluated: `wall` on the gateway's clock, `at` on the instance's (its
/// device's clock for measurements).
#[derive(Debug, Clone, Copy)]
struct When {
    wall: Ms,
    at: Ms,
}

impl When {
    fn wall(now: Ms) -> When {
        When { wall: now, at: now }
    }
}

struct Device {
    tags: Arc<Tags>,
    last_seen: Option<Ms>,
    /// `None` until its first message.
    clock: Option<DeviceClock>,
    /// The maintenance state each of its shape's maintenance quantities is in now.
    in_maintenance: Vec<Option<String>>,
    /// Its alarm instances are `first_instance..first_instance + shape.instances`.
    first_instance: usize,
    shape: Arc<Shape>,
}

/// How a device's readings reach its alarm instances, by offset from its first instance:
/// the same for every device with the same profile and rules, so kept once for all of them.
#[derive(Default, PartialEq)]
struct Shape {
    instances: usize,
    /// The profile's maintenance states: quantity -> states (empty: a flag).
    maintenance_states: Vec<(Arc<str>, Vec<String>)>,
    /// The device's own alarm decisions by quantity.
    device_inputs: HashMap<Arc<str>, Vec<DeviceInput>>,
    /// Instances fed by each quantity, with the input slot for derived ones.
    by_quantity: HashMap<Arc<str>, Vec<(usize, u8)>>,
    /// Instances fed by every reading of the device (comm loss, silence).
    every_reading: Vec<usize>,
}

/// Shares what repeats across devices while the engine is built.
#[derive(Default)]
struct Interner {
    bindings: HashSet<Arc<Binding>>,
    names: HashSet<Arc<str>>,
    /// Shapes by profile, compared whole.
    shapes: HashMap<String, Vec<Arc<Shape>>>,
}

impl Interner {
    fn binding(&mut self, binding: Binding) -> Arc<Binding> {
        if let Some(b) = self.bindings.get(&binding) {
            return Arc::clone(b);
        }
        let b = Arc::new(binding);
        self.bindings.insert(Arc::clone(&b));
        b
    }

    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&n));
        n
    }

    fn shape(&mut self, profile: &str, shape: Shape) -> Arc<Shape> {
        let same_profile = self.shapes.entry(profile.to_string()).or_default();
        if let Some(s) = same_profile.iter().find(|s| ***s == shape) {
            return Arc::clone(s);
        }
        let s = Arc::new(shape);
        same_profile.push(Arc::clone(&s));
        s
    }
}

#[derive(Default)]
struct Flood {
    raises: VecDeque<Ms>,
    active: bool,
}

/// The gateway itself as a device its own rules watch (the status module describes it): its tags
/// (kind `gateway`) and the quantities it reports about itself.
#[derive(Debug, Clone)]
pub struct GatewayDevice {
    pub tags: Tags,
    pub quantities: Vec<String>,
}

pub struct RuleEngine {
    rules: Vec<CompiledRule>,
    instances: Vec<Instance>,
    /// Every instance's level filters, in one allocation (`Instance::filters`).
    filters: Vec<LevelFilter>,
    devices: Vec<Device>,
    device_index: HashMap<String, usize>,
    floods: BTreeMap<String, Flood>,
    timers: BinaryHeap<Reverse<(Ms, usize)>>,
    started: Ms,
    flood_rule: Arc<str>,
    /// Only rules naming this kind apply to the gateway device.
    gateway_kind: String,
    /// Device timestamps older than this (behind the gateway's clock) are not believed: such
    /// a message is evaluated at its arrival.
    replay_window: Ms,
}

fn ms(seconds: f64) -> Ms {
    (seconds * 1000.0).round() as Ms
}

fn matches(pattern: &str, quantity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => quantity.starts_with(prefix),
        None => pattern == quantity,
    }
}

/// Every quantity a profile can produce: payload fields, registers, and named bits.
fn profile_quantities(profile: &crate::config::Profile) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(payload) = &profile.payload {
        out.extend(payload.fields.iter().map(|f| f.quantity.clone()));
    }
    if let Some(modbus) = &profile.modbus {
        for r in &modbus.registers {
            out.push(r.quantity.clone());
            out.extend(r.bits.values().cloned());
            out.extend(r.fields.iter().map(|f| f.quantity.clone()));
        }
    }
    out
}

impl RuleEngine {
    /// Binds every rule to every device it applies to, and the rules naming the gateway's
    /// kind to the gateway itself. `now` is the start of silence deadlines for devices never
    /// seen.
    pub fn new(config: &Config, gateway: &GatewayDevice, now: Ms) -> RuleEngine {
        let directory = DeviceDirectory::from_config(config);
        let rules: Vec<CompiledRule> = config.rules.iter().map(compile).collect();
        let mut interner = Interner::default();
        let mut engine = RuleEngine {
            rules,
            instances: Vec::new(),
            filters: Vec::new(),
            devices: Vec::new(),
            device_index: HashMap::new(),
            floods: BTreeMap::new(),
            timers: BinaryHeap::new(),
            started: now,
            flood_rule: Arc::from("flood"),
            gateway_kind: String::new(),
            replay_window: ms(config.site.gateway.replay_window_s as f64),
        };
        let polled: HashMap<&str, Ms> = config
            .site
            .modbus
            .iter()
            .flat_map(|m| m.units.iter())
            .filter_map(|u| {
                let profile = config.profiles.get(&directory.get(&u.device)?.profile)?;
                let fastest = profile.modbus.as_ref()?.poll_classes.values().min()?;
                Some((u.device.as_str(), *fastest as Ms))
            })
            .collect();
        for device in &config.site.devices {
            let Some(tags) = directory.get(&device.id) else {
                continue;
            };
            let Some(profile) = config.profiles.get(&device.profile) else {
                continue;
            };
            let interval = polled
                .get(device.id.as_str())
                .copied()
                .or(profile.heartbeat_s.map(ms));
            engine.add_device(
                &mut interner,
                config,
                device,
                tags,
                &profile_quantities(profile),
                interval,
            );
        }
        // The gateway watches itself through rules that name its kind explicitly.
        let device = crate::config::DeviceConfig {
            id: gateway.tags.device.clone(),
            location: String::new(),
            profile: gateway.tags.kind.clone(),
            kind: Some(gateway.tags.kind.clone()),
            name: None,
            params: Default::default(),
        };
        engine.gateway_kind = gateway.tags.kind.clone();
        engine.add_device(
            &mut interner,
            config,
            &device,
            &gateway.tags,
            &gateway.quantities,
            None,
        );
        engine.instances.shrink_to_fit();
        engine.filters.shrink_to_fit();
        engine.devices.shrink_to_fit();
        engine
    }

    fn add_device(
        &mut self,
        interner: &mut Interner,
        config: &Config,
        device: &crate::config::DeviceConfig,
        tags: &Tags,
        quantities: &[String],
        interval: Option<Ms>,
    ) {
        let d = self.devices.len();
        let first = self.instances.len();
        let mut shape = Shape {
            maintenance_states: config
                .profiles
                .get(&device.profile)
                .map(|p| {
                    p.maintenance
                        .iter()
                        .map(|m| (interner.name(&m.quantity), m.states.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Shape::default()
        };
        let is_gateway = tags.kind == self.gateway_kind;
        for (r, rule) in config.rules.iter().enumerate() {
            let kind_named = rule.kinds.contains(&tags.kind);
            if !kind_named && (is_gateway || !rule.kinds.is_empty()) {
                continue;
            }
            if !rule.profiles.is_empty() && !rule.profiles.contains(&device.profile) {
                continue;
            }
            let Some(bound) = bind(config, r, rule, device, tags) else {
                continue;
            };
            self.bind_instances(
                interner, &mut shape, d, first, bound, rule, quantities, interval,
            );
        }
        if let Some(profile) = config.profiles.get(&device.profile) {
            self.bind_device_alarms(interner, &mut shape, first, config, &profile.device_alarms);
        }
        shape.instances = self.instances.len() - first;
        self.device_index.insert(device.id.clone(), d);
        self.devices.push(Device {
            tags: Arc::new(tags.clone()),
            last_seen: None,
            clock: None,
            in_maintenance: Vec::new(),
            first_instance: first,
            shape: interner.shape(&device.profile, shape),
        });
    }

    /// An alarm's key: `rule/device`, or `rule/device/source` for one of its quantities.
    fn key_of(&self, inst: &Instance) -> String {
        let rule = &self.rules[inst.binding.settings.rule].id;
        let device = &self.devices[inst.device].tags.device;
        match &*inst.binding.source {
            "" => format!("{rule}/{device}"),
            source => format!("{rule}/{device}/{source}"),
        }
    }

    /// The instance with this key. Rule and device ids may themselves hold `/`, so every
    /// reading of the key is tried.
    fn instance_of(&self, key: &str) -> Option<usize> {
        self.rules.iter().enumerate().find_map(|(r, rule)| {
            let rest = key.strip_prefix(&*rule.id)?.strip_prefix('/')?;
            let splits = rest
                .match_indices('/')
                .map(|(at, _)| (&rest[..at], &rest[at + 1..]));
            std::iter::once((rest, ""))
                .chain(splits)
                .find_map(|(device, source)| {
                    let &d = self.device_index.get(device)?;
                    self.device_instances(d).find(|&i| {
                        let binding = &self.instances[i].binding;
                        binding.settings.rule == r && *binding.source == *source
                    })
                })
        })
    }

    /// The device's alarm instances.
    fn device_instances(&self, d: usize) -> Range<usize> {
        let device = &self.devices[d];
        device.first_instance..device.first_instance + device.shape.instances
    }

    /// Binds the device's own alarm decisions to the alarms of the rules they name.
    fn bind_device_alarms(
        &mut self,
        interner: &mut Interner,
        shape: &mut Shape,
        first: usize,
        config: &Config,
        entries: &[crate::config::DeviceAlarm],
    ) {
        for entry in entries {
            let Some(r) = config.rules.iter().position(|r| r.id == entry.rule) else {
                continue;
            };
            let Some(level) = config.rules[r]
                .levels
                .iter()
                .position(|l| l.severity == entry.severity)
            else {
                continue;
            };
            let states: Arc<[String]> = Arc::from(entry.states.clone());
            for i in first..self.instances.len() {
                let binding = &self.instances[i].binding;
                let same_rule = binding.settings.rule == r;
                let same_source = entry
                    .source
                    .as_deref()
                    .is_none_or(|s| *binding.source == *s);
                if !(same_rule && same_source) {
                    continue;
                }
                let reports = &mut self.instances[i].device_reports;
                let slot = reports.len();
                let mut grown = std::mem::take(reports).into_vec();
                grown.push((level as u8, None));
                *reports = grown.into_boxed_slice();
                shape
                    .device_inputs
                    .entry(interner.name(&entry.quantity))
                    .or_default()
                    .push((i - first, slot, Arc::clone(&states)));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn bind_instances(
        &mut self,
        interner: &mut Interner,
        shape: &mut Shape,
        d: usize,
        first: usize,
        bound: Bound,
        rule: &RuleConfig,
        quantities: &[String],
        interval: Option<Ms>,
    ) {
        let matched: Vec<&String> = quantities
            .iter()
            .filter(|q| rule.condition.quantities().iter().any(|p| matches(p, q)))
            .collect();
        let per_quantity = |e: Evaluation| {
            matched
                .iter()
                .map(move |q| (e, vec![(*q).clone()], (*q).clone()))
        };
        let plan: Vec<(Evaluation, Vec<String>, String)> = match &rule.condition {
            ConditionConfig::High { .. } => {
                per_quantity(Evaluation::Numeric(Direction::High)).collect()
            }
            ConditionConfig::Low { .. } => {
                per_quantity(Evaluation::Numeric(Direction::Low)).collect()
            }
            ConditionConfig::Rate { window_s, .. } => {
                per_quantity(Evaluation::Rate(Direction::High, ms(*window_s))).collect()
            }
            ConditionConfig::Flag { .. } => per_quantity(Evaluation::Flag).collect(),
            ConditionConfig::State { .. } => per_quantity(Evaluation::State).collect(),
            ConditionConfig::Invalid { .. } => per_quantity(Evaluation::Invalid).collect(),
            ConditionConfig::Max { .. } if !matched.is_empty() => {
                vec![(
                    Evaluation::Max,
                    matched.iter().map(|q| (*q).clone()).collect(),
                    String::new(),
                )]
            }
            ConditionConfig::Unbalance { min_mean, .. } if matched.len() >= 2 => vec![(
                Evaluation::Unbalance {
                    min_mean: *min_mean,
                },
                matched.iter().map(|q| (*q).clone()).collect(),
                String::new(),
            )],
            ConditionConfig::PhaseLoss {
                below,
                others_above,
                ..
            } if matched.len() >= 2 => vec![(
                Evaluation::PhaseLoss {
                    below: *below,
                    others_above: *others_above,
                },
                matched.iter().map(|q| (*q).clone()).collect(),
                String::new(),
            )],
            ConditionConfig::CommLoss => vec![(Evaluation::CommLoss, Vec::new(), String::new())],
            ConditionConfig::Silence {
                intervals, grace_s, ..
            } => match interval {
                Some(interval) => vec![(
                    Evaluation::Silence {
                        after: (interval as f64 * intervals) as Ms + ms(*grace_s),
                    },
                    Vec::new(),
                    String::new(),
                )],
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        for (evaluation, inputs, source) in plan {
            let derived = matches!(
                evaluation,
                Evaluation::Max | Evaluation::Unbalance { .. } | Evaluation::PhaseLoss { .. }
            );
            let source = interner.name(&source);
            let binding = interner.binding(Binding {
                settings: bound.clone(),
                source,
                evaluation,
            });
            let i = self.instances.len();
            let filters_at = self.filters.len() as u32;
            self.filters
                .extend(std::iter::repeat_n(LevelFilter::default(), bound.ats.len()));
            self.instances.push(Instance {
                binding,
                device: d,
                filters_at,
                inputs: if derived {
                    vec![None; inputs.len()].into_boxed_slice()
                } else {
                    Box::default()
                },
                history: None,
                alarm: AlarmSlot::default(),
                value: None,
                unit: None,
                activations: None,
                scheduled: None,
                device_reports: Box::default(),
            });
            match evaluation {
                Evaluation::CommLoss | Evaluation::Silence { .. } => {
                    shape.every_reading.push(i - first)
                }
                _ => {
                    for (slot, q) in inputs.iter().enumerate() {
                        shape
                            .by_quantity
                            .entry(interner.name(q))
                            .or_default()
                            .push((i - first, slot as u8));
                    }
                }
            }
            if let Evaluation::Silence { after } = evaluation {
                self.schedule(i, self.started + after);
            }
        }
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Puts back what was persisted before a restart; keys of rules that no longer exist are
    /// returned as `Retired` events so that the journal says where they went.
    pub fn restore(
        &mut self,
        persisted: impl IntoIterator<Item = (String, PersistedAlarm)>,
        now: Ms,
    ) -> Vec<AlarmEvent> {
        let mut retired = Vec::new();
        for (key, p) in persisted {
            match self.instance_of(&key) {
                Some(i) => {
                    let inst = &mut self.instances[i];
                    for (f, active) in self.filters[inst.filters()].iter_mut().zip(&p.filters) {
                        *f = LevelFilter::new(*active);
                    }
                    inst.alarm = p.alarm.into();
                    // Stored before out-of-service expired: it does now, a day from the start.
                    if inst.alarm.out_of_service && inst.alarm.out_of_service_until.is_none() {
                        inst.alarm.out_of_service_until =
                            Some(now + crate::rules::alarm::DEFAULT_OUT_OF_SERVICE_MS);
                    }
                    // A maintenance state the profile no longer has cannot end by itself.
                    if self.devices[inst.device]
                        .shape
                        .maintenance_states
                        .is_empty()
                    {
                        inst.alarm.maintenance = None;
                    }
                    self.reschedule(i);
                }
                None => {
                    let mut alarm = p.alarm;
                    alarm.active = false;
                    alarm.acknowledged = true;
                    alarm.changed_at = now;
                    let rule = key.split('/').next().unwrap_or_default().to_string();
                    retired.push(AlarmEvent {
                        key: Arc::from(key.as_str()),
                        rule: Arc::from(rule.as_str()),
                        rule_name: Arc::from(rule.as_str()),
                        tags: Arc::new(Tags::default()),
                        source: Arc::from(""),
                        action: Action::Retired,
                        at_ms: now,
                        state: AlarmState::Normal,
                        severity: alarm.level.map(|l| l.severity).unwrap_or_default(),
                        kind: alarm.level.map(|l| l.kind).unwrap_or_default(),
                        value: None,
                        unit: None,
                        threshold: None,
                        message: format!(
                            "alarm {key} retired: its rule or device is no longer configured"
                        ),
                        operator: Some(Operator::system()),
                        annunciated: false,
                        alarm,
                        filters: Vec::new(),
                        late_began_ms: None,
                    });
                }
            }
        }
        retired
    }

    /// Evaluates readings received at `now`. Measurements are evaluated at their device's time
    /// (`DeviceClock`); comm loss and silence at `now`.
    pub fn on_readings(&mut self, readings: &[Reading], now: Ms, out: &mut Vec<AlarmEvent>) {
        // Maintenance states first: span gas in the same message as `calibration` must not
        // raise a real alarm.
        for reading in readings {
            if let Some(&d) = self.device_index.get(reading.tags.device.as_str()) {
                if !self.devices[d].shape.maintenance_states.is_empty() {
                    self.on_maintenance_reading(d, reading, now, out);
                }
            }
        }
        let mut last_device: Option<usize> = None;
        for reading in readings {
            let Some(&d) = self.device_index.get(reading.tags.device.as_str()) else {
                continue;
            };
            let stamped = reading.timestamp_ns / 1_000_000;
            let stamped = if stamped < now - self.replay_window {
                now
            } else {
                stamped
            };
            let at = DeviceClock::observe(&mut self.devices[d].clock, stamped, now);
            let when = When { wall: now, at };
            // A reference count, not a copy: evaluation needs `&mut self`.
            let shape = Arc::clone(&self.devices[d].shape);
            let first = self.devices[d].first_instance;
            if let Some(bound) = shape.device_inputs.get(&reading.quantity) {
                self.on_device_decision(first, bound, reading, when, out);
            }
            if last_device != Some(d) {
                last_device = Some(d);
                self.devices[d].last_seen = Some(now);
                for &offset in &shape.every_reading {
                    self.on_device_reading(first + offset, reading, now, out);
                }
            }
            let Some(fed) = shape.by_quantity.get(&reading.quantity) else {
                continue;
            };
            for &(offset, slot) in fed {
                self.on_value(first + offset, slot, reading, when, out);
            }
        }
    }

    /// The device's own alarm decision changed: the alarm's level is the higher of the
    /// threshold's and the device's, so whichever comes first raises it.
    fn on_device_decision(
        &mut self,
        first: usize,
        bound: &[DeviceInput],
        reading: &Reading,
        when: When,
        out: &mut Vec<AlarmEvent>,
    ) {
        if reading.quality != Quality::Good {
            return;
        }
        for (offset, slot, states) in bound {
            let i = &(first + offset);
            let on = match &reading.value {
                Value::Bool(b) => *b && states.is_empty(),
                Value::Int(v) => *v != 0 && states.is_empty(),
                Value::Text(t) => states.iter().any(|s| **s == **t),
                Value::Float(_) => false,
            };
            let report = &mut self.instances[*i].device_reports[*slot];
            if report.1 == Some(on) {
                continue;
            }
            report.1 = Some(on);
            if on {
                self.instances[*i].value =
                    Some(Observed::Text(format!("device: {}", reading.quantity)));
            }
            let late = self.late_since(*i, when.at);
            self.apply_level(*i, when.wall, late, out);
            self.reschedule(*i);
        }
    }

    fn on_maintenance_reading(
        &mut self,
        d: usize,
        reading: &Reading,
        now: Ms,
        out: &mut Vec<AlarmEvent>,
    ) {
        // A failed poll's placeholder values say nothing about the device's state.
        if reading.quality != Quality::Good {
            return;
        }
        let device = &mut self.devices[d];
        let Some(k) = device
            .shape
            .maintenance_states
            .iter()
            .position(|(q, _)| **q == *reading.quantity)
        else {
            return;
        };
        let states = &device.shape.maintenance_states[k].1;
        let state = match &reading.value {
            Value::Text(t) if states.iter().any(|s| **s == **t) => Some(t.to_string()),
            Value::Bool(true) if states.is_empty() => Some(reading.quantity.to_string()),
            Value::Int(v) if *v != 0 && states.is_empty() => Some(reading.quantity.to_string()),
            _ => None,
        };
        device
            .in_maintenance
            .resize(device.shape.maintenance_states.len(), None);
        device.in_maintenance[k] = state;
        let now_in = device.in_maintenance.iter().flatten().next().cloned();
        // Every time, not only on a change: after a restart the alarms remember a
        // maintenance state the device may have left meanwhile.
        for i in self.device_instances(d) {
            if self.instances[i].alarm.maintenance == now_in {
                continue;
            }
            if let Some(action) = self.instances[i]
                .alarm
                .set_maintenance(now_in.as_deref(), now)
            {
                let operator = Operator {
                    name: "system".into(),
                    comment: Some(match &now_in {
                        Some(state) => format!("device in maintenance state `{state}`"),
                        None => "device maintenance state ended".into(),
                    }),
                };
                self.emit(i, action, now, Some(operator), out);
                // What latched during maintenance came from readings that were not real:
                // only a condition still present is annunciated again.
                if self.instances[i].alarm.condition {
                    self.reannunciate_after(i, action, now, out);
                }
            }
        }
    }

    fn on_device_reading(
        &mut self,
        i: usize,
        reading: &Reading,
        now: Ms,
        out: &mut Vec<AlarmEvent>,
    ) {
        let inst = &mut self.instances[i];
        match inst.binding.evaluation {
            Evaluation::CommLoss => {
                let lost = reading.quality == Quality::CommError;
                inst.value = Some(Observed::Text(reading.quality.as_str().to_string()));
                self.apply_sample(i, lost, !lost, When::wall(now), out);
            }
            Evaluation::Silence { .. } if inst.alarm.condition => {
                inst.value = Some(Observed::Text("seen".into()));
                self.apply_sample(i, false, true, When::wall(now), out);
            }
            _ => {}
        }
    }

    fn on_value(
        &mut self,
        i: usize,
        slot: u8,
        reading: &Reading,
        when: When,
        out: &mut Vec<AlarmEvent>,
    ) {
        let now = when.at;
        let inst = &mut self.instances[i];
        if inst.unit.is_none() {
            inst.unit = reading.unit.clone();
        }
        match inst.binding.evaluation {
            Evaluation::Invalid => {
                let invalid = reading.quality == Quality::Invalid;
                let good = reading.quality == Quality::Good;
                inst.value = Some(Observed::Text(reading.quality.as_str().to_string()));
                return self.apply_sample(i, invalid, good, when, out);
            }
            _ if reading.quality != Quality::Good => return, // hold state on missing data
            Evaluation::Flag => {
                let set = match &reading.value {
                    Value::Bool(b) => *b,
                    Value::Int(n) => *n != 0,
                    Value::Float(f) => *f != 0.0,
                    Value::Text(_) => return,
                };
                inst.value = Some(Observed::Number(f64::from(u8::from(set))));
                return self.apply_sample(i, set, !set, when, out);
            }
            Evaluation::State => {
                let Value::Text(text) = &reading.value else {
                    return;
                };
                inst.value = Some(Observed::Text(text.to_string()));
                return self.apply_state(i, text, when, out);
            }
            _ => {}
        }
        let Some(value) = reading.value.as_f64().filter(|v| v.is_finite()) else {
            return;
        };
        let derived = match inst.binding.evaluation {
            Evaluation::Numeric(_) => Some(value),
            Evaluation::Rate(_, window) => {
                let history = inst.history.get_or_insert_with(|| {
                    Box::new(VecDeque::with_capacity(
                        RATE_SAMPLES_PER_WINDOW as usize + 2,
                    ))
                });
                while history.front().is_some_and(|(t, _)| now - t > window) {
                    history.pop_front();
                }
                let rate = match history.front() {
                    Some(&(t0, v0)) if now - t0 >= window / 2 && now > t0 => {
                        Some((value - v0) / (now - t0) as f64 * 60_000.0)
                    }
                    _ => None,
                };
                // A few samples per window are enough to measure a rise over it; one per
                // reading would be a minute of 1 Hz samples on each of 40,000 temperatures.
                if history
                    .back()
                    .is_none_or(|(t, _)| now - t >= window / RATE_SAMPLES_PER_WINDOW)
                {
                    history.push_back((now, value));
                }
                rate
            }
            Evaluation::Max | Evaluation::Unbalance { .. } | Evaluation::PhaseLoss { .. } => {
                if let Some(input) = inst.inputs.get_mut(usize::from(slot)) {
                    *input = Some(value);
                }
                derive(inst.binding.evaluation, &inst.inputs)
            }
            _ => None,
        };
        let Some(v) = derived else {
            return;
        };
        inst.value = Some(Observed::Number(v));
        let direction = match inst.binding.evaluation {
            Evaluation::Numeric(d) | Evaluation::Rate(d, _) => d,
            _ => Direction::High,
        };
        let deadband = inst.deadband();
        let mut edges = Vec::new();
        for (k, filter) in self.filters[inst.filters()].iter_mut().enumerate() {
            let Some(&at) = inst.binding.settings.ats.get(k) else {
                continue;
            };
            let (raise, clear) = direction.compare(v, at, deadband);
            if let Some(edge) = filter.sample(
                raise,
                clear,
                now,
                inst.binding.settings.on_delays[k],
                inst.binding.settings.off_delays[k],
            ) {
                edges.push((k, edge));
            }
        }
        self.after_filters(i, edges, when, out);
    }

    fn apply_state(&mut self, i: usize, text: &str, when: When, out: &mut Vec<AlarmEvent>) {
        let now = when.at;
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        if rule.silence_states.iter().any(|s| s == text) {
            // The sounder is muted; the fire is not out. Shown, never a clear.
            if let Some(action) = inst.alarm.silence(when.wall) {
                self.emit(i, action, when.wall, None, out);
            }
            return;
        }
        let mut edges = Vec::new();
        let in_some_level = rule.levels.iter().any(|l| l.raised_by(text));
        let clearing = if rule.clear_states.is_empty() {
            !in_some_level
        } else {
            rule.clear_states.iter().any(|s| s == text)
        };
        for (k, filter) in self.filters[inst.filters()].iter_mut().enumerate() {
            let raise = rule.levels.get(k).is_some_and(|l| l.raised_by(text));
            // A state outside this level but in another ends this level; with clear_states,
            // only those end the condition.
            let clear = !raise && (clearing || (in_some_level && rule.clear_states.is_empty()));
            if let Some(edge) = filter.sample(
                raise,
                clear,
                now,
                inst.binding.settings.on_delays[k],
                inst.binding.settings.off_delays[k],
            ) {
                edges.push((k, edge));
            }
        }
        self.after_filters(i, edges, when, out);
    }

    /// One-level conditions (flag, invalid, comm loss, silence).
    fn apply_sample(
        &mut self,
        i: usize,
        raise: bool,
        clear: bool,
        when: When,
        out: &mut Vec<AlarmEvent>,
    ) {
        let inst = &mut self.instances[i];
        let mut edges = Vec::new();
        for (k, filter) in self.filters[inst.filters()].iter_mut().enumerate() {
            if let Some(edge) = filter.sample(
                raise,
                clear,
                when.at,
                inst.binding.settings.on_delays[k],
                inst.binding.settings.off_delays[k],
            ) {
                edges.push((k, edge));
            }
        }
        self.after_filters(i, edges, when, out);
    }

    /// Turns level edges (level index, edge at the instance's time) into the alarm's new level,
    /// runs the state machine, schedules the next deadline.
    fn after_filters(
        &mut self,
        i: usize,
        edges: Vec<(usize, Edge)>,
        when: When,
        out: &mut Vec<AlarmEvent>,
    ) {
        if !edges.is_empty() {
            let settings = &self.instances[i].binding.settings;
            // Transitions are stamped with the millisecond the delay ran out ...
            let ran_out = edges
                .iter()
                .map(|(_, e)| match e {
                    Edge::Raised(t) | Edge::Cleared(t) => *t,
                })
                .max()
                .unwrap_or(when.at);
            // ... and the condition behind them began one delay earlier.
            let began = edges
                .iter()
                .map(|&(k, e)| match e {
                    Edge::Raised(t) => t - settings.on_delays[k],
                    Edge::Cleared(t) => t - settings.off_delays[k],
                })
                .min()
                .unwrap_or(when.at);
            let late = self.late_since(i, began);
            let at = self.wall_time(i, ran_out, when.wall);
            self.apply_level(i, at, late, out);
        }
        self.reschedule(i);
    }

    /// Whether the instance runs on its device's clock (measurements) or on the gateway's
    /// (whether the device is heard at all).
    fn on_device_time(&self, i: usize) -> bool {
        !matches!(
            self.instances[i].binding.evaluation,
            Evaluation::CommLoss | Evaluation::Silence { .. }
        )
    }

    /// The instance's time now: its device's for measurements.
    fn instance_now(&self, i: usize, wall: Ms) -> Ms {
        match self.devices[self.instances[i].device].clock {
            Some(clock) if self.on_device_time(i) => clock.now(wall),
            _ => wall,
        }
    }

    /// An instance time as the gateway's.
    fn wall_time(&self, i: usize, t: Ms, wall: Ms) -> Ms {
        match self.devices[self.instances[i].device].clock {
            Some(clock) if self.on_device_time(i) => clock.to_wall(t, wall),
            _ => t.min(wall),
        }
    }

    /// `Some(began)` (device time) when a transition whose condition began then is late news:
    /// its device's latest message arrived well behind its usual lag.
    fn late_since(&self, i: usize, began: Ms) -> Option<Ms> {
        let clock = self.devices[self.instances[i].device].clock?;
        (self.on_device_time(i) && clock.is_late()).then_some(began)
    }

    /// Runs the state machine on the alarm's current level (thresholds and the device's own
    /// decisions) at `at`, and emits what it did; `late` marks those events as reported late.
    fn apply_level(&mut self, i: usize, at: Ms, late: Option<Ms>, out: &mut Vec<AlarmEvent>) {
        let first = out.len();
        self.apply_level_now(i, at, out);
        if let Some(began) = late {
            for event in &mut out[first..] {
                event.mark_late(began, at);
            }
        }
    }

    fn apply_level_now(&mut self, i: usize, at: Ms, out: &mut Vec<AlarmEvent>) {
        let level = self.current_level(i);
        let inst = &mut self.instances[i];
        let before = inst.alarm.level.filter(|_| inst.alarm.active);
        if let Some(action) = inst.alarm.on_condition(level, at) {
            // A shelved alarm that turns critical is never left hidden: it comes back before
            // its escalation is annunciated.
            let turned_critical = inst
                .alarm
                .level
                .is_some_and(|l| l.severity == Severity::Critical)
                && before.is_none_or(|b| b.severity != Severity::Critical);
            if turned_critical && inst.alarm.shelved_until.is_some() {
                inst.alarm.shelved_until = None;
                inst.alarm.shelve_reason = None;
                self.emit(i, Action::Unshelved, at, Some(Operator::system()), out);
            }
            self.emit(i, action, at, None, out);
        }
    }

    fn current_level(&self, i: usize) -> Option<Level> {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        let by_threshold = self.filters[inst.filters()].iter().rposition(|f| f.active);
        let by_device = inst
            .device_reports
            .iter()
            .filter(|(_, on)| *on == Some(true))
            .map(|(level, _)| usize::from(*level))
            .max();
        let k = by_threshold.max(by_device)?;
        let level = rule.levels.get(k)?;
        Some(Level {
            index: k as u8,
            severity: level.severity,
            kind: level.kind,
            latched: level.latched,
        })
    }

    fn reschedule(&mut self, i: usize) {
        self.instances[i].alarm.settle();
        let inst = &self.instances[i];
        let mut next = inst.alarm.deadline();
        if let Some(t) = inst.calm_at() {
            next = Some(next.map_or(t, |n: Ms| n.min(t)));
        }
        let device_clock = self.devices[inst.device]
            .clock
            .filter(|_| self.on_device_time(i));
        for (k, f) in self.filters[inst.filters()].iter().enumerate() {
            if let Some(t) = f.deadline(
                inst.binding.settings.on_delays[k],
                inst.binding.settings.off_delays[k],
            ) {
                // On the device's clock: due when the gateway's has passed as much time.
                let t = device_clock.map_or(t, |c| t + c.wall_ms - c.device_ms);
                next = Some(next.map_or(t, |n: Ms| n.min(t)));
            }
        }
        if let Evaluation::Silence { after } = inst.binding.evaluation {
            if !inst.alarm.condition {
                let seen = self.devices[inst.device].last_seen.unwrap_or(self.started);
                let t = seen + after;
                next = Some(next.map_or(t, |n: Ms| n.min(t)));
            }
        }
        if let Some(t) = next {
            if inst.scheduled.is_none_or(|s| t < s) {
                self.schedule(i, t);
            }
        }
    }

    fn schedule(&mut self, i: usize, t: Ms) {
        self.instances[i].scheduled = Some(t);
        self.timers.push(Reverse((t, i)));
    }

    /// The next time `tick` has work, if any.
    pub fn next_deadline(&self) -> Option<Ms> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Lets time pass: delays that ran out, shelving and maintenance that ended, devices that
    /// went silent, floods that ended.
    pub fn tick(&mut self, now: Ms, out: &mut Vec<AlarmEvent>) {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.instances[i].scheduled != Some(t) {
                continue; // superseded by an earlier schedule
            }
            self.instances[i].scheduled = None;
            self.tick_instance(i, now, out);
        }
        let ended: Vec<String> = self
            .floods
            .iter_mut()
            .filter_map(|(park, flood)| {
                while flood
                    .raises
                    .front()
                    .is_some_and(|t| now - t > FLOOD_WINDOW_MS)
                {
                    flood.raises.pop_front();
                }
                (flood.active && flood.raises.len() < FLOOD_END).then(|| {
                    flood.active = false;
                    park.clone()
                })
            })
            .collect();
        for park in ended {
            out.push(self.flood_event(&park, false, now));
        }
    }

    fn tick_instance(&mut self, i: usize, now: Ms, out: &mut Vec<AlarmEvent>) {
        let inst = &mut self.instances[i];
        let ended = inst.alarm.tick(now);
        for &action in &ended {
            self.emit(i, action, now, Some(Operator::system()), out);
        }
        // Once, however many of shelving, suppression and out-of-service ended together.
        if let Some(&last) = ended.last() {
            self.reannunciate_after(i, last, now, out);
        }
        if self.instances[i].calm_at().is_some_and(|t| t <= now) {
            let inst = &mut self.instances[i];
            inst.alarm.chattering = false;
            inst.activations = None;
            out.push(self.event(i, Action::ChatterCleared, now, None, false));
        }
        let inst = &mut self.instances[i];
        if let Evaluation::Silence { after } = inst.binding.evaluation {
            let seen = self.devices[inst.device].last_seen.unwrap_or(self.started);
            if !inst.alarm.condition && now >= seen + after {
                inst.value = Some(Observed::Text(match self.devices[inst.device].last_seen {
                    Some(_) => "silent".into(),
                    None => "never_seen".into(),
                }));
                // Stamped at the deadline, not at the tick that noticed it.
                let when = When {
                    wall: now,
                    at: seen + after,
                };
                return self.apply_sample(i, true, false, when, out);
            }
        }
        let at = self.instance_now(i, now);
        let inst = &mut self.instances[i];
        let mut edges = Vec::new();
        for (k, f) in self.filters[inst.filters()].iter_mut().enumerate() {
            if let Some(edge) = f.tick(
                at,
                inst.binding.settings.on_delays[k],
                inst.binding.settings.off_delays[k],
            ) {
                edges.push((k, edge));
            }
        }
        self.after_filters(i, edges, When { wall: now, at }, out);
    }

    /// An operator's command on one alarm or every alarm of a device or location.
    pub fn command(
        &mut self,
        target: &Target,
        command: &Command,
        operator: &Operator,
        now: Ms,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        if operator.name.trim().is_empty() {
            return Err(CommandError::OperatorRequired);
        }
        let targets: Vec<usize> = match target {
            Target::Alarm(key) => vec![self
                .instance_of(key)
                .ok_or_else(|| CommandError::UnknownAlarm(key.clone()))?],
            Target::Device(id) => self
                .instances
                .iter()
                .enumerate()
                .filter(|(_, inst)| self.devices[inst.device].tags.device == *id)
                .map(|(i, _)| i)
                .collect(),
            Target::Location(id) => self
                .instances
                .iter()
                .enumerate()
                .filter(|(_, inst)| self.devices[inst.device].tags.location == *id)
                .map(|(i, _)| i)
                .collect(),
        };
        if targets.is_empty() {
            return Err(CommandError::UnknownAlarm(format!("{target:?}")));
        }
        let single = targets.len() == 1;
        for i in targets {
            let rule = &self.rules[self.instances[i].binding.settings.rule];
            let critical_now = self.instances[i]
                .alarm
                .level
                .is_some_and(|l| l.severity == Severity::Critical);
            if matches!(command, Command::Shelve { .. }) && (!rule.shelvable || critical_now) {
                if single {
                    return Err(CommandError::NotShelvable);
                }
                continue;
            }
            match self.instances[i].alarm.command(command, now) {
                Ok(action) => {
                    self.emit(i, action, now, Some(operator.clone()), out);
                    self.reannunciate_after(i, action, now, out);
                    self.reschedule(i);
                }
                // On a device or location, commands apply where they make sense.
                Err(err) if single => return Err(err),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// An alarm still active when its shelving, suppression or out-of-service ends is
    /// annunciated again: journaled, pushed, escalated, to be acknowledged anew.
    fn reannunciate_after(&mut self, i: usize, action: Action, at: Ms, out: &mut Vec<AlarmEvent>) {
        if !matches!(
            action,
            Action::Unshelved | Action::Unsuppressed | Action::ReturnedToService
        ) {
            return;
        }
        if let Some(again) = self.instances[i].alarm.reannunciate(at) {
            self.emit(i, again, at, Some(Operator::system()), out);
        }
    }

    fn emit(
        &mut self,
        i: usize,
        action: Action,
        at: Ms,
        operator: Option<Operator>,
        out: &mut Vec<AlarmEvent>,
    ) {
        let mut annunciated = self.instances[i].alarm.annunciated();
        let inst = &self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        let level = inst.alarm.level;
        let severity = level.map(|l| l.severity).unwrap_or_default();
        let kind = level.map(|l| l.kind).unwrap_or_default();
        let park = self.devices[inst.device].tags.park.clone();
        let mut extra = Vec::new();
        if action == Action::Raised && kind != AlarmKind::Event {
            let flood = self.floods.entry(park.clone()).or_default();
            flood.raises.push_back(at);
            while flood
                .raises
                .front()
                .is_some_and(|t| at - t > FLOOD_WINDOW_MS)
            {
                flood.raises.pop_front();
            }
            if !flood.active && flood.raises.len() > FLOOD_START {
                flood.active = true;
                extra.push(self.flood_event(&park, true, at));
            }
            let inst = &mut self.instances[i];
            let window = chatter_window(
                &inst.binding.settings.on_delays,
                &inst.binding.settings.off_delays,
            );
            let activations = inst.activations.get_or_insert_default();
            activations.push_back(at);
            while activations.front().is_some_and(|t| at - t > window) {
                activations.pop_front();
            }
            if !inst.alarm.chattering && activations.len() > CHATTER_ACTIVATIONS {
                // Flagged as a bad actor; its deadband doubles (docs/domain.md, section 3).
                inst.alarm.chattering = true;
                extra.push(self.event(i, Action::ChatterFlagged, at, None, false));
            }
        }
        let rule_floodable = rule.flood_suppressible;
        if rule_floodable
            && severity != Severity::Critical
            && self.floods.get(&park).is_some_and(|f| f.active)
        {
            annunciated = false;
        }
        out.push(self.event(i, action, at, operator, annunciated));
        out.append(&mut extra);
    }

    fn event(
        &self,
        i: usize,
        action: Action,
        at: Ms,
        operator: Option<Operator>,
        annunciated: bool,
    ) -> AlarmEvent {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        let level = inst.alarm.level;
        let threshold =
            level.and_then(|l| inst.binding.settings.ats.get(usize::from(l.index)).copied());
        let value = inst.value.clone();
        let subject = if inst.binding.source.is_empty() {
            rule.name.to_string()
        } else {
            format!("{} {}", rule.name, inst.binding.source)
        };
        let unit = inst.unit.as_deref().unwrap_or("");
        let message = match (action, &value, threshold) {
            (Action::Raised | Action::Escalated | Action::DeEscalated, Some(v), Some(t)) => {
                format!("{subject} {v}{unit} (threshold {t}{unit})")
            }
            (_, Some(v), _) => format!("{subject}: {} ({v})", action.as_str().replace('_', " ")),
            _ => format!("{subject}: {}", action.as_str().replace('_', " ")),
        };
        AlarmEvent {
            key: Arc::from(self.key_of(inst)),
            rule: Arc::clone(&rule.id),
            rule_name: Arc::clone(&rule.name),
            tags: Arc::clone(&self.devices[inst.device].tags),
            source: Arc::clone(&inst.binding.source),
            action,
            at_ms: at,
            state: inst.alarm.state(),
            severity: level.map(|l| l.severity).unwrap_or_default(),
            kind: level.map(|l| l.kind).unwrap_or_default(),
            value,
            unit: inst.unit.clone(),
            threshold,
            message,
            operator,
            annunciated,
            alarm: inst.alarm.clone(),
            filters: self.filters[inst.filters()]
                .iter()
                .map(|f| f.active)
                .collect(),
            late_began_ms: None,
        }
    }

    fn flood_event(&self, park: &str, started: bool, at: Ms) -> AlarmEvent {
        let tags = Tags {
            park: park.to_string(),
            ..Tags::default()
        };
        AlarmEvent {
            key: Arc::from(format!("flood/{park}")),
            rule: Arc::clone(&self.flood_rule),
            rule_name: Arc::from("Alarm flood"),
            tags: Arc::new(tags),
            source: Arc::from(""),
            action: if started {
                Action::Raised
            } else {
                Action::Cleared
            },
            at_ms: at,
            state: if started {
                AlarmState::Acknowledged
            } else {
                AlarmState::Normal
            },
            severity: Severity::Medium,
            kind: AlarmKind::Supervisory,
            value: None,
            unit: None,
            threshold: Some(FLOOD_START as f64),
            message: if started {
                format!("alarm flood in park {park}: more than {FLOOD_START} new alarms in 10 minutes; non-critical alarms of flood-suppressible rules are held back")
            } else {
                format!("alarm flood in park {park} ended")
            },
            operator: Some(Operator::system()),
            annunciated: true,
            alarm: Alarm::default(),
            filters: Vec::new(),
            late_began_ms: None,
        }
    }

    /// Parks in flood now.
    pub fn floods(&self) -> Vec<String> {
        self.floods
            .iter()
            .filter(|(_, f)| f.active)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Every alarm that is not normal (active, unacknowledged, shelved, suppressed or out of
    /// service), most severe first, then newest first.
    pub fn alarms(&self) -> Vec<AlarmView> {
        let mut views: Vec<AlarmView> = self
            .instances
            .iter()
            .filter(|inst| !inst.alarm.is_normal())
            .map(|inst| self.view(inst))
            .collect();
        views.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.changed_at_ms.cmp(&a.changed_at_ms))
        });
        views
    }

    pub fn alarm(&self, key: &str) -> Option<AlarmView> {
        self.instance_of(key).map(|i| self.view(&self.instances[i]))
    }

    fn view(&self, inst: &Instance) -> AlarmView {
        let tags = &self.devices[inst.device].tags;
        let rule = &self.rules[inst.binding.settings.rule];
        let a = &inst.alarm;
        AlarmView {
            key: self.key_of(inst),
            rule: rule.id.to_string(),
            rule_name: rule.name.to_string(),
            rule_name_zh: rule.name_zh.as_deref().map(str::to_string),
            park: tags.park.clone(),
            enterprise: tags.enterprise.clone(),
            location: tags.location.clone(),
            device: tags.device.clone(),
            source: inst.binding.source.to_string(),
            state: a.state(),
            severity: a.level.map(|l| l.severity),
            kind: a.level.map(|l| l.kind),
            value: inst.value.clone(),
            threshold: a
                .level
                .and_then(|l| inst.binding.settings.ats.get(usize::from(l.index)).copied()),
            latched: a.latched,
            comm_loss: matches!(
                inst.binding.evaluation,
                Evaluation::CommLoss | Evaluation::Silence { .. }
            ),
            shelved_until_ms: a.shelved_until,
            shelve_reason: a.shelve_reason.clone(),
            suppressed_until_ms: a.suppressed_until,
            out_of_service: a.out_of_service,
            out_of_service_until_ms: a.out_of_service_until,
            maintenance: a.maintenance.clone(),
            chattering: a.chattering,
            silenced: a.silenced,
            shelvable: rule.shelvable,
            raised_at_ms: a.raised_at,
            changed_at_ms: a.changed_at,
        }
    }
}

fn derive(evaluation: Evaluation, inputs: &[Option<f64>]) -> Option<f64> {
    let known: Vec<f64> = inputs.iter().flatten().copied().collect();
    match evaluation {
        Evaluation::Max => known.iter().copied().reduce(f64::max),
        Evaluation::Unbalance { min_mean } => {
            if known.len() < inputs.len() {
                return None;
            }
            let mean = known.iter().sum::<f64>() / known.len() as f64;
            if mean < min_mean.max(f64::MIN_POSITIVE) {
                return Some(0.0);
            }
            let deviation = known.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
            Some(deviation / mean * 100.0)
        }
        Evaluation::PhaseLoss {
            below,
            others_above,
        } => {
            if known.len() < inputs.len() {
                return None;
            }
            let lost = known.iter().enumerate().any(|(i, v)| {
                *v < below
                    && known
                        .iter()
                        .enumerate()
                        .all(|(j, w)| j == i || *w > others_above)
            });
            Some(f64::from(u8::from(lost)))
        }
        _ => None,
    }
}

fn compile(rule: &RuleConfig) -> CompiledRule {
    let (clear_states, silence_states) = match &rule.condition {
        ConditionConfig::State {
            clear_states,
            silence_states,
            ..
        } => (clear_states.clone(), silence_states.clone()),
        _ => (Vec::new(), Vec::new()),
    };

    CompiledRule {
        id: Arc::from(rule.id.as_str()),
        name: Arc::from(rule.name.as_str()),
        name_zh: rule.name_zh.as_deref().map(Arc::from),
        levels: rule
            .levels
            .iter()
            .map(|l| CompiledLevel {
                severity: l.severity,
                kind: l.kind,
                latched: l.latched.unwrap_or(rule.latched),
                states: l.states.clone(),
            })
            .collect(),
        clear_states,
        silence_states,
        flood_suppressible: rule.flood_suppressible,
        shelvable: !rule.fire && rule.shelvable.unwrap_or(true),
    }
}

/// The rule's settings for one device, with the site's overrides applied from the least to
/// the most specific scope. `None`: the rule is switched off for the device, or it scales by a
/// parameter the device does not have.
fn bind(
    config: &Config,
    index: usize,
    rule: &RuleConfig,
    device: &crate::config::DeviceConfig,
    tags: &Tags,
) -> Option<Bound> {
    let scale = match &rule.per {
        Some(param) => *device.params.get(param)?,
        None => 1.0,
    };
    let mut ats: Vec<f64> = rule
        .levels
        .iter()
        .map(|l| l.at.unwrap_or(0.0) * scale)
        .collect();
    let mut deadband = rule.deadband * scale;
    let mut on_delay = rule.on_delay_s;
    let mut off_delay = rule.off_delay_s;
    let mut overrides: Vec<_> = config
        .site
        .rule_overrides
        .iter()
        .filter(|o| o.rule == rule.id)
        .filter(|o| {
            o.park.as_ref().is_none_or(|p| *p == tags.park)
                && o.enterprise.as_ref().is_none_or(|e| *e == tags.enterprise)
                && o.location.as_ref().is_none_or(|l| *l == tags.location)
                && o.device.as_ref().is_none_or(|d| *d == tags.device)
        })
        .collect();
    overrides.sort_by_key(|o| o.specificity());
    let mut enabled = true;
    for o in overrides {
        if let Some(e) = o.enabled {
            enabled = e;
        }
        // Overrides speak the rule's own units: for a rule scaled by a device parameter
        // (R7: multiples of the rated current), `at = 1.1` means 1.1 In, as in the rule.
        if let Some(d) = o.deadband {
            deadband = d * scale;
        }
        if let Some(d) = o.on_delay_s {
            on_delay = d;
        }
        if let Some(d) = o.off_delay_s {
            off_delay = d;
        }
        for (k, level) in rule.levels.iter().enumerate() {
            if let (Some(at), Some(slot)) = (o.at.get(&level.severity), ats.get_mut(k)) {
                *slot = *at * scale;
            }
        }
    }
    if !enabled {
        return None;
    }
    Some(Bound {
        rule: index,
        on_delays: rule
            .levels
            .iter()
            .map(|l| ms(l.on_delay_s.unwrap_or(on_delay)))
            .collect(),
        off_delays: rule
            .levels
            .iter()
            .map(|l| ms(l.off_delay_s.unwrap_or(off_delay)))
            .collect(),
        ats,
        deadband,
    })
}
