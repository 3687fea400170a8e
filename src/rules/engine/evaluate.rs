//! Evaluation: readings (measurements, device decisions, maintenance states) through the level
//! filters into the alarm state machine, on the device's clock where it has one, and the timer
//! heap that ends delays, silence and shelving on time.

use super::*;

impl RuleEngine {
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
        self.complete_device_resets(now, out);
    }

    /// The device's own alarm decision changed: the alarm's level is the higher of the
    /// threshold's and the device's, so whichever comes first raises it.
    pub(super) fn on_device_decision(
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

    pub(super) fn on_maintenance_reading(
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

    pub(super) fn on_device_reading(
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

    pub(super) fn on_value(
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

    pub(super) fn apply_state(
        &mut self,
        i: usize,
        text: &str,
        when: When,
        out: &mut Vec<AlarmEvent>,
    ) {
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
    pub(super) fn apply_sample(
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
    pub(super) fn after_filters(
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
    pub(super) fn on_device_time(&self, i: usize) -> bool {
        !matches!(
            self.instances[i].binding.evaluation,
            Evaluation::CommLoss | Evaluation::Silence { .. }
        )
    }

    /// The instance's time now: its device's for measurements.
    pub(super) fn instance_now(&self, i: usize, wall: Ms) -> Ms {
        match self.devices[self.instances[i].device].clock {
            Some(clock) if self.on_device_time(i) => clock.now(wall),
            _ => wall,
        }
    }

    /// An instance time as the gateway's.
    pub(super) fn wall_time(&self, i: usize, t: Ms, wall: Ms) -> Ms {
        match self.devices[self.instances[i].device].clock {
            Some(clock) if self.on_device_time(i) => clock.to_wall(t, wall),
            _ => t.min(wall),
        }
    }

    /// `Some(began)` (device time) when a transition whose condition began then is late news:
    /// its device's latest message arrived well behind its usual lag.
    pub(super) fn late_since(&self, i: usize, began: Ms) -> Option<Ms> {
        let clock = self.devices[self.instances[i].device].clock?;
        (self.on_device_time(i) && clock.is_late()).then_some(began)
    }

    /// Runs the state machine on the alarm's current level (thresholds and the device's own
    /// decisions) at `at`, and emits what it did; `late` marks those events as reported late.
    pub(super) fn apply_level(
        &mut self,
        i: usize,
        at: Ms,
        late: Option<Ms>,
        out: &mut Vec<AlarmEvent>,
    ) {
        let first = out.len();
        self.apply_level_now(i, at, out);
        if let Some(began) = late {
            for event in &mut out[first..] {
                event.mark_late(began, at);
            }
        }
    }

    pub(super) fn apply_level_now(&mut self, i: usize, at: Ms, out: &mut Vec<AlarmEvent>) {
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

    pub(super) fn current_level(&self, i: usize) -> Option<Level> {
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

    pub(super) fn reschedule(&mut self, i: usize) {
        let alarm = &mut self.instances[i].alarm;
        // A fire's verdict belongs to that fire: the next one is judged anew.
        if alarm.fire.is_some() && alarm.state() == AlarmState::Normal {
            alarm.fire = None;
        }
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

    pub(super) fn schedule(&mut self, i: usize, t: Ms) {
        self.instances[i].scheduled = Some(t);
        self.timers.push(Reverse((t, i)));
    }

    /// The next time `tick` has work, if any.
    pub fn next_deadline(&self) -> Option<Ms> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        match (timer, self.next_reset_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        self.end_floods(now, out);
        self.expire_device_resets(now, out);
        self.forget_notes();
    }

    pub(super) fn tick_instance(&mut self, i: usize, now: Ms, out: &mut Vec<AlarmEvent>) {
        let inst = &mut self.instances[i];
        let ended = inst.alarm.tick(now);
        for &action in &ended {
            self.emit(i, action, now, Some(Operator::system()), out);
        }
        // Once, however many of shelving, suppression and out-of-service ended together.
        if let Some(&last) = ended.last() {
            self.reannunciate_after(i, last, now, out);
        }
        if let Some(confirmed) = self.instances[i].alarm.confirm_fire_if_due(now) {
            let waited_s = self.fire_confirm_timeout / 1000;
            let operator = Operator {
                name: "system".into(),
                comment: Some(format!(
                    "no operator confirmed or dismissed it within {waited_s} s: treated as a confirmed fire"
                )),
            };
            self.emit(i, confirmed, now, Some(operator), out);
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
}

impl DeviceClock {
    /// The device's time now: its latest message's, plus the time passed since.
    pub(super) fn now(&self, wall: Ms) -> Ms {
        self.device_ms + (wall - self.wall_ms).max(0)
    }

    /// A device time as the gateway's time it is learned at (never later than `wall`).
    pub(super) fn to_wall(self, device: Ms, wall: Ms) -> Ms {
        (device + self.wall_ms - self.device_ms).min(wall)
    }

    /// The latest message arrived much later than the device's messages usually do.
    pub(super) fn is_late(&self) -> bool {
        self.wall_ms - self.device_ms - self.usual_lag_ms > LATE_AFTER_MS
    }

    /// Takes a message stamped `stamped` (device time) in at `wall`; returns the time it is
    /// evaluated at.
    pub(super) fn observe(clock: &mut Option<DeviceClock>, stamped: Ms, wall: Ms) -> Ms {
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

impl When {
    pub(super) fn wall(now: Ms) -> When {
        When { wall: now, at: now }
    }
}

pub(super) fn derive(evaluation: Evaluation, inputs: &[Option<f64>]) -> Option<f64> {
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
