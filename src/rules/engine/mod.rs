//! The rule engine: binds the rule sets to devices, evaluates readings and the passing of time,
//! runs one alarm state machine per (rule, device, quantity), and reports every transition as
//! an `AlarmEvent`. Pure and single-owner: no IO, no locks, the clock is passed in. Flood and
//! chatter detection live here because they look across alarms.
//!
//! Here are the engine's state, operators' commands and the restore after a restart; binding is
//! in `binding`, evaluation and timers in `evaluate`, floods and chatter in `flood`, the
//! events and their messages in `events`, resets that reach devices in `reset`, and the
//! read-only snapshots in `views`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::config::devices::DeviceDirectory;
use crate::config::{AlarmKind, ConditionConfig, Config, RuleConfig, Severity};
use crate::model::alarm::{AlarmEvent, Observed, PersistedAlarm};
use crate::model::{Quality, Reading, Tags, Value};
use crate::rules::alarm::{
    Action, Alarm, AlarmState, Command, CommandError, FalseAlarmReason, FireVerdict, Level,
    Operator,
};
use crate::rules::threshold::{Direction, Edge, LevelFilter, Ms};

mod binding;
mod evaluate;
mod events;
mod flood;
mod reset;
mod views;

use flood::chatter_window;
pub use views::AlarmView;

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
    /// A fire: operators confirm it or mark it false.
    fire: bool,
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

/// When a sample is evaluated: `wall` on the gateway's clock, `at` on the instance's (its
/// device's clock for measurements).
#[derive(Debug, Clone, Copy)]
struct When {
    wall: Ms,
    at: Ms,
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
    /// The profile's `[reset]`: how long to wait for the device to drop a latched alarm
    /// after its reset is written. `None`: the device cannot be reset from the host.
    reset_wait: Option<Ms>,
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
    /// Resets sent to devices that still held their latched alarm, by instance.
    pending_resets: HashMap<usize, reset::PendingReset>,
    /// What linkage did for each alarm (`Action::Linkage` messages), newest last, by
    /// instance; dropped when the alarm returns to normal.
    linkage_notes: HashMap<usize, Vec<String>>,
    /// How long a fire waits for an operator's verdict before it is treated as confirmed.
    fire_confirm_timeout: Ms,
}

impl RuleEngine {
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
            if matches!(
                command,
                Command::FalseAlarm {
                    reason: FalseAlarmReason::Other
                }
            ) && operator
                .comment
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
            {
                return Err(CommandError::CommentRequired);
            }
            match self.instances[i]
                .alarm
                .command(command, &operator.name, now)
            {
                Ok(action) => {
                    self.emit(i, action, now, Some(operator.clone()), out);
                    self.reannunciate_after(i, action, now, out);
                    self.reschedule(i);
                }
                // The device holds the alarm latched itself: reset the device, and complete
                // the reset once it has dropped the alarm.
                Err(CommandError::ConditionPresent)
                    if *command == Command::Reset && self.device_resettable(i) =>
                {
                    self.request_device_reset(i, operator, now, out);
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

    /// The alarm is active at a level that is a fire.
    fn at_fire_level(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        let rule = &self.rules[inst.binding.settings.rule];
        inst.alarm.active
            && inst
                .alarm
                .level
                .and_then(|l| rule.levels.get(usize::from(l.index)))
                .is_some_and(|l| l.fire)
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
        if annunciated
            && matches!(
                action,
                Action::Raised | Action::Escalated | Action::Reannunciated
            )
            && self.at_fire_level(i)
        {
            let timeout = self.fire_confirm_timeout;
            self.instances[i].alarm.await_fire_verdict(at, timeout);
            // Its automatic confirmation must come even if nothing else wakes the alarm.
            self.reschedule(i);
        }
        let inst = &self.instances[i];
        let rule_floodable = self.rules[inst.binding.settings.rule].flood_suppressible;
        let level = inst.alarm.level;
        let severity = level.map(|l| l.severity).unwrap_or_default();
        let kind = level.map(|l| l.kind).unwrap_or_default();
        let park = self.devices[inst.device].tags.park.clone();
        let mut extra = Vec::new();
        if action == Action::Raised && kind != AlarmKind::Event {
            extra.extend(self.count_raise_in_flood(&park, at));
            extra.extend(self.count_activation(i, at));
        }
        if rule_floodable
            && severity != Severity::Critical
            && self.floods.get(&park).is_some_and(|f| f.active)
        {
            annunciated = false;
        }
        out.push(self.event(i, action, at, operator, annunciated));
        out.append(&mut extra);
        // No confirmation time: the fire is confirmed as it is raised, and journaled so.
        if self.fire_confirm_timeout == 0 {
            if let Some(confirmed) = self.instances[i].alarm.confirm_fire_if_due(at) {
                let operator = Operator {
                    name: "system".into(),
                    comment: Some("confirmed at once: [fire] confirm_timeout_s = 0".into()),
                };
                out.push(self.event(i, confirmed, at, Some(operator), annunciated));
            }
        }
    }
}
