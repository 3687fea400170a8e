//! Routing and escalation, pure: from an alarm transition (or a due timer) and the routes that
//! already hold the alarm, which deliveries to queue, which routes now hold it and which
//! timers to set or cancel. The store applies the plan in the journal's transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::alerts::{
    AlertsConfig, ChannelConfig, ChannelType, Language, RecipientConfig, RouteConfig,
};
use crate::config::{AlarmKind, Config, Severity};
use crate::model::alarm::Action;
use crate::model::alarm::{AlarmEvent, FireVerdict, Observed};

/// Characters of an alarm key escaped in a link's fragment.
const LINK_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// Version of the JSON that webhooks receive; bumped on incompatible changes.
pub const SCHEMA: &str = "parkguard.alert.v1";

/// An alarm as messages describe it: names resolved from the site file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmInfo {
    pub key: String,
    pub rule: String,
    pub rule_name: String,
    pub rule_name_zh: Option<String>,
    pub park: String,
    pub park_name: String,
    pub enterprise: String,
    pub enterprise_name: String,
    pub location: String,
    pub location_name: String,
    pub device: String,
    pub device_name: String,
    pub device_kind: String,
    /// The quantity watched; empty for whole-device rules.
    pub quantity: String,
    /// The quantity's name in Chinese and in English, when the device's profile names it
    /// (`[[quantities]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_zh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_en: Option<String>,
    pub value: Option<Observed>,
    pub unit: Option<String>,
    pub threshold: Option<f64>,
    pub severity: Severity,
    pub kind: AlarmKind,
    pub state: String,
    /// The rule engine's own description of the transition.
    pub message: String,
}

/// One push: what happened to which alarm, for whom. Stored in the queue as JSON and sent by
/// the generic webhook as is (with `schema` and `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// `raised`, `escalated`, `reannunciated`, `de_escalated`, `condition_cleared`, `cleared`,
    /// `acknowledged`, `silenced`, `shelved`, `suppressed`, `removed_from_service`, `reset`,
    /// `retired`, `fire_confirmed`, `false_alarm`; and from timers
    /// `unacknowledged` (escalated by deadline) and `reminder`.
    pub event: String,
    pub at_ms: i64,
    pub route: String,
    pub language: Language,
    pub alarm: AlarmInfo,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// `unacknowledged`: the route whose deadline passed.
    #[serde(default)]
    pub escalated_from: Option<String>,
    /// `unacknowledged`, `reminder`: seconds since the route was told.
    #[serde(default)]
    pub unacknowledged_for_s: Option<u64>,
    #[serde(default)]
    pub recipients: Vec<RecipientConfig>,
    /// The alarm in the web UI.
    #[serde(default)]
    pub link: Option<String>,
    /// The journal entry of the transition (absent for timer pushes).
    #[serde(default)]
    pub journal_seq: Option<i64>,
    /// Reported late (messages replayed after an outage): when, by the device's clock, the
    /// transition's condition began. `at_ms` is when the gateway learned of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_began_ms: Option<i64>,
}

impl Notice {
    /// A critical alarm that people must hear of now: it goes ahead of everything on its
    /// lane and is never held by a rate limit nor folded into a digest. (The store orders a
    /// lane's queue by the same test.)
    pub fn urgent(&self) -> bool {
        // A confirmed fire is the fire department's first word of it, at any severity.
        self.event == "fire_confirmed"
            || self.alarm.severity == Severity::Critical
                && matches!(
                    self.event.as_str(),
                    "raised" | "escalated" | "reannunciated" | "unacknowledged" | "reminder"
                )
    }
}

/// One queued delivery: a notice to one channel of a route (and, for e-mail, one recipient).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Unique across restarts: the same transition never queues twice.
    pub dedupe: String,
    pub route: String,
    pub channel: String,
    /// E-mail address for `email` channels; empty for the others.
    pub recipient: String,
    pub notice: Notice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Escalate to the route's `escalate_to` if still unacknowledged.
    Escalate,
    /// Remind the route of the standing unacknowledged alarm.
    Remind,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Escalate => "escalate",
            TimerKind::Remind => "remind",
        }
    }
    pub fn parse(s: &str) -> Option<TimerKind> {
        match s {
            "escalate" => Some(TimerKind::Escalate),
            "remind" => Some(TimerKind::Remind),
            _ => None,
        }
    }
}

/// A timer of one alarm on one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub key: String,
    pub route: String,
    pub kind: TimerKind,
    pub due_ms: i64,
    /// When the route was told (for "unacknowledged for ...").
    pub since_ms: i64,
}

/// What the store does for one transition or timer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertPlan {
    pub deliveries: Vec<Delivery>,
    /// Routes that now hold the alarm (told of it; told again of its acknowledgement and clear).
    pub hold: Vec<String>,
    /// The alarm is over: forget its holders, timers and snapshot after these deliveries.
    pub release: bool,
    /// Stop escalating and reminding (acknowledged, shelved, suppressed, out of service).
    pub cancel_timers: bool,
    pub timers: Vec<Timer>,
    /// The alarm as of this transition, kept while it is active for timer pushes.
    pub snapshot: Option<AlarmInfo>,
}

impl AlertPlan {
    pub fn is_empty(&self) -> bool {
        *self == AlertPlan::default()
    }
}

struct Names {
    parks: BTreeMap<String, String>,
    enterprises: BTreeMap<String, (String, Option<RecipientConfig>)>,
    locations: BTreeMap<String, String>,
    devices: BTreeMap<String, String>,
    rules_zh: BTreeMap<String, String>,
    /// Device id -> its profile's id.
    device_profiles: BTreeMap<String, String>,
    /// Profile id -> quantity -> (name in Chinese, name in English).
    quantity_names: BTreeMap<String, BTreeMap<String, (String, String)>>,
}

/// The routes of a site, ready to plan pushes.
pub struct Router {
    alerts: AlertsConfig,
    channels: BTreeMap<String, ChannelConfig>,
    names: Names,
}

impl Router {
    /// `None` when the site has no `[alerts]` routes.
    pub fn from_config(config: &Config) -> Option<Router> {
        let alerts = config.site.alerts.clone()?;
        if alerts.routes.is_empty() {
            return None;
        }
        let site = &config.site;
        let name_or_id = |id: &String, name: &Option<String>| name.clone().unwrap_or(id.clone());
        let names = Names {
            parks: site
                .parks
                .iter()
                .map(|p| (p.id.clone(), name_or_id(&p.id, &p.name)))
                .collect(),
            enterprises: site
                .enterprises
                .iter()
                .map(|e| {
                    (
                        e.id.clone(),
                        (name_or_id(&e.id, &e.name), e.contact.clone()),
                    )
                })
                .collect(),
            locations: site
                .locations
                .iter()
                .map(|l| (l.id.clone(), name_or_id(&l.id, &l.name)))
                .collect(),
            devices: site
                .devices
                .iter()
                .map(|d| (d.id.clone(), name_or_id(&d.id, &d.name)))
                .collect(),
            rules_zh: config
                .rules
                .iter()
                .filter_map(|r| Some((r.id.clone(), r.name_zh.clone()?)))
                .collect(),
            device_profiles: site
                .devices
                .iter()
                .map(|d| (d.id.clone(), d.profile.clone()))
                .collect(),
            quantity_names: config
                .profiles
                .iter()
                .map(|(id, p)| {
                    let names = p
                        .quantities
                        .iter()
                        .map(|q| (q.id.clone(), (q.zh.clone(), q.en.clone())))
                        .collect();
                    (id.clone(), names)
                })
                .collect(),
        };
        let channels = alerts
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        Some(Router {
            alerts,
            channels,
            names,
        })
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.alerts
    }

    fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.alerts.routes.iter().find(|r| r.name == name)
    }

    /// The alarm of a transition with its names resolved.
    pub fn describe(&self, e: &AlarmEvent) -> AlarmInfo {
        let n = &self.names;
        let lookup = |map: &BTreeMap<String, String>, id: &str| {
            map.get(id).cloned().unwrap_or_else(|| id.to_string())
        };
        let quantity_name = n
            .device_profiles
            .get(&e.tags.device)
            .and_then(|profile| n.quantity_names.get(profile))
            .and_then(|names| names.get(&*e.source));
        AlarmInfo {
            key: e.key.to_string(),
            rule: e.rule.to_string(),
            rule_name: e.rule_name.to_string(),
            rule_name_zh: n.rules_zh.get(&*e.rule).cloned(),
            park: e.tags.park.clone(),
            park_name: lookup(&n.parks, &e.tags.park),
            enterprise: e.tags.enterprise.clone(),
            enterprise_name: n
                .enterprises
                .get(&e.tags.enterprise)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| e.tags.enterprise.clone()),
            location: e.tags.location.clone(),
            location_name: lookup(&n.locations, &e.tags.location),
            device: e.tags.device.clone(),
            device_name: lookup(&n.devices, &e.tags.device),
            device_kind: e.tags.kind.clone(),
            quantity: e.source.to_string(),
            quantity_zh: quantity_name.map(|(zh, _)| zh.clone()),
            quantity_en: quantity_name.map(|(_, en)| en.clone()),
            value: e.value.clone(),
            unit: e.unit.as_ref().map(|u| u.to_string()),
            threshold: e.threshold,
            severity: e.severity,
            kind: e.kind,
            state: e.state.as_str().to_string(),
            message: e.message.clone(),
        }
    }

    /// Routes an alarm is sent to by matching (not by escalation).
    pub fn matching_routes(&self, info: &AlarmInfo) -> Vec<&RouteConfig> {
        self.alerts
            .routes
            .iter()
            .filter(|r| !r.escalation_only && route_matches(r, info))
            .collect()
    }

    /// The plan for one journaled transition (`seq` is its journal sequence number), given the
    /// routes that hold the alarm already.
    pub fn plan(&self, e: &AlarmEvent, seq: i64, holders: &BTreeSet<String>) -> AlertPlan {
        let mut plan = AlertPlan::default();
        // Flood bookkeeping and advisory events need nobody's action.
        if e.key.starts_with("flood/") || e.kind == AlarmKind::Event {
            return plan;
        }
        let info = self.describe(e);
        let operator = e.operator.as_ref().map(|o| o.name.clone());
        let comment = e.operator.as_ref().and_then(|o| o.comment.clone());
        let notice_for = |route: &RouteConfig, plan: &mut AlertPlan| {
            let notice = Notice {
                event: e.action.as_str().to_string(),
                at_ms: e.at_ms,
                route: route.name.clone(),
                language: route.language,
                alarm: info.clone(),
                operator: operator.clone(),
                comment: comment.clone(),
                escalated_from: None,
                unacknowledged_for_s: None,
                recipients: Vec::new(),
                link: None,
                journal_seq: Some(seq),
                late_began_ms: e.late_began_ms,
            };
            self.queue(route, notice, &format!("j{seq}"), plan);
        };
        // Confirmed-only routes (the fire department's) take fires once confirmed, and nothing
        // else: not a fire waiting for its verdict, not a false alarm, not a gas level 1.
        let confirmed_fire = e.alarm.fire.as_ref().is_some_and(|f| f.confirmed());
        let takes = |route: &RouteConfig| !route.confirmed_only || confirmed_fire;
        match e.action {
            // Re-annunciated (shelving, suppression or out-of-service ended with the alarm
            // still active): told and escalated like a new alarm.
            Action::Raised | Action::Escalated | Action::Reannunciated if e.annunciated => {
                let mut told = BTreeSet::new();
                for route in self.matching_routes(&info) {
                    if !takes(route) {
                        continue;
                    }
                    told.insert(route.name.clone());
                    notice_for(route, &mut plan);
                    if !holders.contains(&route.name) {
                        plan.hold.push(route.name.clone());
                        self.start_timers(route, &info.key, e.at_ms, &mut plan);
                    } else if e.action != Action::Raised {
                        // A new annunciation to be acknowledged anew: its deadline counts from
                        // now (shelving or acknowledgement had cancelled the timers).
                        self.start_timers(route, &info.key, e.at_ms, &mut plan);
                    }
                }
                // A severity change is news to every route already told, matching or not.
                for name in holders.iter().filter(|h| !told.contains(*h)) {
                    if let Some(route) = self.route(name).filter(|r| takes(r)) {
                        notice_for(route, &mut plan);
                    }
                }
                plan.snapshot = Some(info);
            }
            Action::DeEscalated
            | Action::ConditionCleared
            | Action::Acknowledged
            | Action::Shelved
            | Action::Suppressed
            | Action::RemovedFromService
            | Action::Cleared
            | Action::Reset
            | Action::Silenced
            | Action::Retired => {
                for name in holders {
                    if let Some(route) = self.route(name) {
                        notice_for(route, &mut plan);
                    }
                }
                plan.cancel_timers = matches!(
                    e.action,
                    Action::Acknowledged
                        | Action::Shelved
                        | Action::Suppressed
                        | Action::RemovedFromService
                );
                plan.release = e.alarm.is_normal() || e.action == Action::Retired;
                if !plan.release {
                    plan.snapshot = Some(info);
                }
            }
            // Shelving, suppression or out-of-service ended on an alarm that cleared
            // meanwhile: nothing to tell, but its holders and snapshot go.
            Action::Unshelved | Action::Unsuppressed | Action::ReturnedToService => {
                plan.release = e.alarm.is_normal();
            }
            // Routes that hold the fire hear of the verdict; confirmed-only routes that
            // waited for it take the fire now, with their own deadline and reminders.
            Action::FireConfirmed => {
                let mut told = BTreeSet::new();
                if e.annunciated && matches!(e.alarm.fire, Some(FireVerdict::Confirmed { .. })) {
                    for route in self.matching_routes(&info) {
                        if route.confirmed_only && !holders.contains(&route.name) {
                            told.insert(route.name.clone());
                            notice_for(route, &mut plan);
                            plan.hold.push(route.name.clone());
                            self.start_timers(route, &info.key, e.at_ms, &mut plan);
                        }
                    }
                }
                for name in holders.iter().filter(|h| !told.contains(*h)) {
                    if let Some(route) = self.route(name) {
                        notice_for(route, &mut plan);
                    }
                }
                plan.snapshot = Some(info);
            }
            Action::FalseAlarm => {
                for name in holders {
                    if let Some(route) = self.route(name) {
                        notice_for(route, &mut plan);
                    }
                }
                plan.snapshot = Some(info);
            }
            _ => {}
        }
        plan
    }

    /// The plan for a due timer of an alarm still held (its snapshot `info`). `now_ms` is when
    /// it fired; `fired` counts the timer's earlier firings (part of the deliveries' identity).
    pub fn on_timer(&self, timer: &Timer, info: &AlarmInfo, now_ms: i64, fired: i64) -> AlertPlan {
        let mut plan = AlertPlan::default();
        let Some(route) = self.route(&timer.route) else {
            return plan;
        };
        let waited_s = ((now_ms - timer.since_ms).max(0) / 1000) as u64;
        let id = format!(
            "t{}:{}:{}:{fired}",
            timer.kind.as_str(),
            timer.route,
            info.key
        );
        match timer.kind {
            TimerKind::Escalate => {
                // A confirmed-only route gets fires by their confirmation, never by escalation.
                let Some(next) = route
                    .escalate_to
                    .as_deref()
                    .and_then(|n| self.route(n))
                    .filter(|r| !r.confirmed_only)
                else {
                    return plan;
                };
                // A route takes by escalation only what it would select itself: the fire
                // department's route (smoke and gas level 2) gets no overvoltage. An
                // `escalation_only` route selects by its filters too (none: everything).
                if !route_matches(next, info) {
                    return plan;
                }
                let notice = Notice {
                    event: "unacknowledged".into(),
                    at_ms: now_ms,
                    route: next.name.clone(),
                    language: next.language,
                    alarm: info.clone(),
                    operator: None,
                    comment: None,
                    escalated_from: Some(route.name.clone()),
                    unacknowledged_for_s: Some(waited_s),
                    recipients: Vec::new(),
                    link: None,
                    journal_seq: None,
                    late_began_ms: None,
                };
                self.queue(next, notice, &id, &mut plan);
                plan.hold.push(next.name.clone());
                self.start_timers(next, &info.key, now_ms, &mut plan);
            }
            TimerKind::Remind => {
                let notice = Notice {
                    event: "reminder".into(),
                    at_ms: now_ms,
                    route: route.name.clone(),
                    language: route.language,
                    alarm: info.clone(),
                    operator: None,
                    comment: None,
                    escalated_from: None,
                    unacknowledged_for_s: Some(waited_s),
                    recipients: Vec::new(),
                    link: None,
                    journal_seq: None,
                    late_began_ms: None,
                };
                self.queue(route, notice, &id, &mut plan);
                plan.timers.push(Timer {
                    due_ms: timer.due_ms + route.remind_every_s as i64 * 1000,
                    ..timer.clone()
                });
            }
        }
        plan
    }

    fn start_timers(&self, route: &RouteConfig, key: &str, at_ms: i64, plan: &mut AlertPlan) {
        let timer = |kind, after_s: u64| Timer {
            key: key.to_string(),
            route: route.name.clone(),
            kind,
            due_ms: at_ms + after_s as i64 * 1000,
            since_ms: at_ms,
        };
        if route.escalate_to.is_some() {
            plan.timers
                .push(timer(TimerKind::Escalate, route.ack_deadline_s));
        }
        if route.remind_every_s > 0 {
            plan.timers
                .push(timer(TimerKind::Remind, route.remind_every_s));
        }
    }

    /// Queues `notice` on every channel of `route`: once per channel, and per recipient with
    /// an address on e-mail channels.
    fn queue(&self, route: &RouteConfig, mut notice: Notice, id: &str, plan: &mut AlertPlan) {
        let mut recipients = route.recipients.clone();
        if route.enterprise_contact {
            if let Some((_, Some(contact))) = self.names.enterprises.get(&notice.alarm.enterprise) {
                let mut contact = contact.clone();
                contact
                    .role
                    .get_or_insert_with(|| "enterprise_contact".into());
                recipients.push(contact);
            }
        }
        notice.recipients = recipients;
        notice.link = self.alerts.web_url.as_ref().map(|base| {
            format!(
                "{}/#alarm={}",
                base.trim_end_matches('/'),
                percent_encoding::utf8_percent_encode(&notice.alarm.key, LINK_ESCAPED)
            )
        });
        for channel_name in &route.channels {
            let Some(channel) = self.channels.get(channel_name) else {
                continue;
            };
            let addresses: Vec<String> = if channel.kind == ChannelType::Email {
                notice
                    .recipients
                    .iter()
                    .filter_map(|r| r.email.clone())
                    .collect()
            } else if channel.kind.by_mobile() {
                notice
                    .recipients
                    .iter()
                    .filter_map(|r| r.mobile.clone())
                    .collect()
            } else {
                vec![String::new()]
            };
            for recipient in addresses {
                plan.deliveries.push(Delivery {
                    dedupe: format!("{id}/{}/{}/{recipient}", route.name, channel.name),
                    route: route.name.clone(),
                    channel: channel.name.clone(),
                    recipient,
                    notice: notice.clone(),
                });
            }
        }
    }
}

fn id_matches(patterns: &[String], id: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => p == id,
        })
}

fn route_matches(r: &RouteConfig, a: &AlarmInfo) -> bool {
    (r.severities.is_empty() || r.severities.contains(&a.severity))
        && (r.kinds.is_empty() || r.kinds.contains(&a.kind))
        && id_matches(&r.device_kinds, &a.device_kind)
        && id_matches(&r.rules, &a.rule)
        && id_matches(&r.parks, &a.park)
        && id_matches(&r.enterprises, &a.enterprise)
        && id_matches(&r.locations, &a.location)
        && id_matches(&r.devices, &a.device)
}
