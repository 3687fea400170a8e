//! Binding: rules compiled once, bound to every device whose profile has their quantities with
//! the site's overrides applied, and the instances, filters and shapes that result, shared
//! across devices where they repeat.

use super::*;

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
            pending_resets: HashMap::new(),
            linkage_notes: HashMap::new(),
            fire_confirm_timeout: ms(config.site.fire.confirm_timeout_s as f64),
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
                &profile
                    .produced_quantities()
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
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

    pub(super) fn add_device(
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
            reset_wait: config
                .profiles
                .get(&device.profile)
                .and_then(|p| p.reset.as_ref())
                .map(|r| r.wait_s.saturating_mul(1000) as Ms),
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

    /// Binds the device's own alarm decisions to the alarms of the rules they name.
    pub(super) fn bind_device_alarms(
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
    pub(super) fn bind_instances(
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
}

pub(super) fn compile(rule: &RuleConfig) -> CompiledRule {
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
                fire: l.is_fire(rule),
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
pub(super) fn bind(
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

pub(super) fn matches(pattern: &str, quantity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => quantity.starts_with(prefix),
        None => pattern == quantity,
    }
}

pub(super) fn ms(seconds: f64) -> Ms {
    (seconds * 1000.0).round() as Ms
}
