//! `[alerts]`: where alarm pushes go (channels), which alarms go where (routes), who is told,
//! in which language, and when an unacknowledged alarm escalates. The doc comments here are
//! the operator's reference for the section.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Secret, Severity};
use crate::config::AlarmKind;

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Address of the web UI as the people receiving pushes reach it, e.g.
    /// `https://10.0.0.5:8443`; every message links to its alarm there. Absent: no link.
    #[serde(default)]
    pub web_url: Option<String>,
    /// Offset of local time from UTC in minutes, for the times in messages (China: 480).
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// Ways of reaching people: webhooks, group robots, MQTT, e-mail.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Which alarms go to which channels and people. An alarm goes to every route it matches.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_utc_offset_minutes() -> i32 {
    480
}

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    /// HTTP POST of parkguard's own JSON (schema `parkguard.alert.v1`), signed with
    /// HMAC-SHA256 when `secret` is set.
    Webhook,
    /// A WeCom (企业微信) group robot: `url` is its webhook address with `?key=`.
    Wecom,
    /// A DingTalk (钉钉) group robot: `url` is its address with `?access_token=`; `secret` is
    /// the robot's signing secret (`SEC...`) when its security setting is "加签".
    Dingtalk,
    /// A Feishu/Lark (飞书) group robot: `url` is its hook address; `secret` is the signing
    /// secret when "签名校验" is on.
    Feishu,
    /// MQTT: each alarm's current state, retained, on `<topic_prefix>/<device>/<rule>`; a
    /// cleared alarm's retained message is removed, so a late subscriber sees exactly the
    /// active alarms.
    Mqtt,
    /// E-mail over SMTP, one message per recipient with an `email`.
    Email,
    /// Aliyun SMS (阿里云短信, `SendSms`): one message per recipient with a `mobile`, from an
    /// approved signature (`sign_name`) and template (`template`, `SMS_...`).
    AliyunSms,
    /// Tencent Cloud SMS (腾讯云短信, `SendSms`): one message per recipient with a `mobile`,
    /// from the SMS application `sms_app_id`, an approved signature and template.
    TencentSms,
    /// Aliyun voice notification (阿里云语音通知, `SingleCallByTts`): a phone call reading a
    /// TTS template (`template`, `TTS_...`) to each recipient with a `mobile`. Calls only for
    /// what needs someone now: raised, escalated, re-annunciated, confirmed fires, unacknowledged
    /// and reminders; other events are not called.
    AliyunVoice,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Webhook => "webhook",
            ChannelType::Wecom => "wecom",
            ChannelType::Dingtalk => "dingtalk",
            ChannelType::Feishu => "feishu",
            ChannelType::Mqtt => "mqtt",
            ChannelType::Email => "email",
            ChannelType::AliyunSms => "aliyun_sms",
            ChannelType::TencentSms => "tencent_sms",
            ChannelType::AliyunVoice => "aliyun_voice",
        }
    }

    /// SMS and voice: one delivery per recipient's mobile.
    pub fn by_mobile(self) -> bool {
        matches!(
            self,
            ChannelType::AliyunSms | ChannelType::TencentSms | ChannelType::AliyunVoice
        )
    }
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same machine.
    None,
}

/// `[[alerts.channels]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name routes use to refer to it.
    pub name: String,
    /// How it reaches people: `webhook`, `wecom`, `dingtalk`, `feishu`, `mqtt` or `email`;
    /// it decides which of the keys below apply.
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// `webhook`, `wecom`, `dingtalk`, `feishu`: the address to POST to.
    #[serde(default)]
    pub url: Option<String>,
    /// `webhook`: the HMAC key; `dingtalk`, `feishu`: the robot's signing secret. Never
    /// written here: `{ env = "VAR" }`, `{ file = "path" }` or `{ credential = "NAME" }`
    /// (a systemd credential, read from `$CREDENTIALS_DIRECTORY/NAME`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Seconds one attempt may take (connect, send, answer) before it counts as failed.
    #[serde(default = "default_channel_timeout_s")]
    pub timeout_s: u64,
    /// `mqtt`: the `[[mqtt]]` connection (by name) whose broker and credentials to publish
    /// with. The channel opens its own session (client id `<client_id>-alerts`).
    #[serde(default)]
    pub mqtt: Option<String>,
    /// `mqtt`: topic prefix of the alarm topics.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// `email`: SMTP server host name (also the name its certificate must carry).
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// `email`: SMTP port; default 587 (`starttls`), 465 (`tls`) or 25 (`none`).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `email`: `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// `email`: PEM file of an extra CA to trust (a park's own mail server), relative to this
    /// file's folder. The system's roots are always trusted.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `email`: SMTP login, when the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// `email`: password for `username`, never written here: `{ env = "VAR" }`,
    /// `{ file = "path" }` or `{ credential = "NAME" }` (a systemd credential, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// `email`: sender address, e.g. `parkguard <alarm@park.example>`.
    #[serde(default)]
    pub from: Option<String>,
    /// `aliyun_sms`, `aliyun_voice`: the AccessKey ID; `tencent_sms`: the SecretId. Its
    /// secret (AccessKey secret, SecretKey) goes in `secret`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `aliyun_sms`, `tencent_sms`: the SMS signature (签名) the provider approved, e.g.
    /// `星河园区`.
    #[serde(default)]
    pub sign_name: Option<String>,
    /// `aliyun_sms`: the template code (`SMS_123456789`); `tencent_sms`: the template id;
    /// `aliyun_voice`: the TTS template code (`TTS_123456789`).
    #[serde(default)]
    pub template: Option<String>,
    /// `aliyun_sms`, `tencent_sms`, `aliyun_voice`: the template's variables, each one of
    /// `place`, `device`, `alarm`, `event`, `value`, `severity`, `time`. Aliyun takes them by
    /// these names (a template reading `${place}发生${alarm}（${event}）`), Tencent in this
    /// order (`{1}发生{2}（{3}）`). Each value is at most 35 characters.
    #[serde(default = "default_template_params")]
    pub template_params: Vec<TemplateParam>,
    /// `tencent_sms`: the SMS application's SdkAppId (`1400...`).
    #[serde(default)]
    pub sms_app_id: Option<String>,
    /// `aliyun_sms`, `aliyun_voice`: RegionId (default `cn-hangzhou`); `tencent_sms`: the
    /// region (default `ap-guangzhou`).
    #[serde(default)]
    pub region: Option<String>,
    /// `aliyun_sms`, `tencent_sms`, `aliyun_voice`: the API's address, changed only for a
    /// proxy or a test receiver. Default: `https://dysmsapi.aliyuncs.com/`,
    /// `https://sms.tencentcloudapi.com/`, `https://dyvmsapi.aliyuncs.com/`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `aliyun_voice`: the number shown to the person called (one bought with the voice
    /// service); absent: the provider's public number.
    #[serde(default)]
    pub called_show_number: Option<String>,
    /// `aliyun_voice`: how many times the message is read in one call, 1 to 3.
    #[serde(default = "default_play_times")]
    pub play_times: u8,
}

/// A variable of an SMS or voice template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateParam {
    /// The enterprise's and the location's names.
    Place,
    Device,
    /// The rule's name (Chinese when the route's language is `zh` and the rule has one).
    Alarm,
    /// What happened: 新报警, 确认火警, 已确认, ...
    Event,
    /// The value with its unit.
    Value,
    Severity,
    /// Local time, `MM-DD HH:MM`.
    Time,
}

impl TemplateParam {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateParam::Place => "place",
            TemplateParam::Device => "device",
            TemplateParam::Alarm => "alarm",
            TemplateParam::Event => "event",
            TemplateParam::Value => "value",
            TemplateParam::Severity => "severity",
            TemplateParam::Time => "time",
        }
    }
}

fn default_template_params() -> Vec<TemplateParam> {
    vec![
        TemplateParam::Place,
        TemplateParam::Alarm,
        TemplateParam::Event,
    ]
}

fn default_play_times() -> u8 {
    2
}

fn default_channel_timeout_s() -> u64 {
    10
}
fn default_topic_prefix() -> String {
    "parkguard/alarms".into()
}

/// A person told by a route.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecipientConfig {
    /// Who is told: a person or a post (`值班室`), carried in webhook documents.
    pub name: String,
    /// Role shown in messages: `park_operator`, `enterprise_contact`, `maintenance`,
    /// `fire_department`, or any text.
    #[serde(default)]
    pub role: Option<String>,
    /// Mobile number: @-mentioned in DingTalk and WeCom group robots, texted by `aliyun_sms`
    /// and `tencent_sms` channels and called by `aliyun_voice` ones (11 digits, or +86...).
    #[serde(default)]
    pub mobile: Option<String>,
    /// E-mail address, for `email` channels.
    #[serde(default)]
    pub email: Option<String>,
}

/// A route's limit on messages: beyond `max` in `per_s` seconds, waiting pushes are sent
/// together as one digest when the next slot opens. Nothing is dropped.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Most messages sent within `per_s` on each of the route's channels (to each e-mail
    /// recipient apart).
    pub max: u32,
    /// The window of `max`, in seconds. Critical alarms are never held by the limit.
    pub per_s: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { max: 20, per_s: 60 }
    }
}

/// `[[alerts.routes]]`: a selection of alarms, and who is told about them. Every list left
/// empty matches everything; lists of ids accept a trailing `*` as a prefix wildcard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name of the route, by which `escalate_to` refers to it; pushes and gateway fault G3
    /// name it too.
    pub name: String,
    /// Severities: `low`, `medium`, `high`, `critical`.
    #[serde(default)]
    pub severities: Vec<Severity>,
    /// Alarm kinds: `alarm`, `pre_alarm`, `fault`, `supervisory`, `test`. (Events are never
    /// pushed: they need nobody's action.)
    #[serde(default)]
    pub kinds: Vec<AlarmKind>,
    /// Device kinds: `meter`, `detector`, `gas`, `smoke`, `gateway`, ...
    #[serde(default)]
    pub device_kinds: Vec<String>,
    /// Rule ids, e.g. `["R13", "R11"]`.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Park ids (`[[parks]] id`).
    #[serde(default)]
    pub parks: Vec<String>,
    /// Enterprise ids (`[[enterprises]] id`).
    #[serde(default)]
    pub enterprises: Vec<String>,
    /// Location ids (`[[locations]] id`).
    #[serde(default)]
    pub locations: Vec<String>,
    /// Device ids (`[[devices]] id`), e.g. `["smoke-*"]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Alarms reach this route only by another route's `escalate_to`, never by matching.
    #[serde(default)]
    pub escalation_only: bool,
    /// The fire department's route: it takes fires (see `[fire]`) once confirmed, at once
    /// when an operator confirms or when nobody judged them within `fire.confirm_timeout_s`,
    /// and nothing else (no fire waiting for its verdict, no false alarm, no other alarm its
    /// filters match). It is never another route's `escalate_to`.
    #[serde(default)]
    pub confirmed_only: bool,
    /// Channels (by name) the route's messages go out on.
    pub channels: Vec<String>,
    /// People told (mentioned in robots, mailed by `email` channels).
    #[serde(default)]
    pub recipients: Vec<RecipientConfig>,
    /// Also tell the contact of the alarm's enterprise (`enterprises[].contact`).
    #[serde(default)]
    pub enterprise_contact: bool,
    /// Language of the messages: `zh` or `en`.
    #[serde(default)]
    pub language: Language,
    /// Seconds an alarm may stay unacknowledged after this route was told before it is
    /// escalated to `escalate_to`.
    #[serde(default = "default_ack_deadline_s")]
    pub ack_deadline_s: u64,
    /// Route (by name) told when `ack_deadline_s` passes without an acknowledgement, for the
    /// alarms that route selects by its own filters (severities, rules, kinds, places);
    /// others stop here. `parkguard check` prints what each chain can carry.
    #[serde(default)]
    pub escalate_to: Option<String>,
    /// Seconds between reminders of a standing unacknowledged alarm; 0: no reminders.
    #[serde(default)]
    pub remind_every_s: u64,
    /// Seconds a push is retried before it is given up, which raises gateway fault G3.
    #[serde(default = "default_give_up_after_s")]
    pub give_up_after_s: u64,
    /// Most messages per time on each channel; beyond it waiting pushes go out as one digest.
    #[serde(default)]
    pub rate_limit: RateLimit,
}

fn default_ack_deadline_s() -> u64 {
    300
}
fn default_give_up_after_s() -> u64 {
    3600
}

/// Language of pushed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// Chinese (简体中文).
    #[default]
    Zh,
    /// English.
    En,
}

/// The contact person of an enterprise, for routes with `enterprise_contact = true`.
pub type ContactConfig = RecipientConfig;

/// Checks `[alerts]` against itself and the site's MQTT connection names.
pub fn validate(
    alerts: &AlertsConfig,
    mqtt_names: &BTreeSet<&str>,
    base_dir: &std::path::Path,
    report: &mut dyn FnMut(String, String),
) {
    if let Some(url) = &alerts.web_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            report(
                "alerts.web_url".into(),
                "must start with http:// or https://".into(),
            );
        }
    }
    if !(-840..=840).contains(&alerts.utc_offset_minutes) {
        report(
            "alerts.utc_offset_minutes".into(),
            "must be -840 to 840".into(),
        );
    }
    let mut channels = BTreeSet::new();
    for (i, c) in alerts.channels.iter().enumerate() {
        let at = |key: &str| format!("alerts.channels[{i}].{key}");
        if !channels.insert(c.name.as_str()) {
            report(
                format!("alerts.channels[{i}]"),
                format!("duplicate name `{}`", c.name),
            );
        }
        if c.timeout_s == 0 {
            report(at("timeout_s"), "must be at least 1 second".into());
        }
        let http = matches!(
            c.kind,
            ChannelType::Webhook | ChannelType::Wecom | ChannelType::Dingtalk | ChannelType::Feishu
        );
        match (&c.url, http) {
            (None, true) => report(
                format!("alerts.channels[{i}]"),
                format!("type = \"{}\" needs `url`", c.kind.as_str()),
            ),
            (Some(url), true) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                report(at("url"), "must start with http:// or https://".into())
            }
            (Some(_), false) => report(
                at("url"),
                format!("type = \"{}\" has no `url`", c.kind.as_str()),
            ),
            _ => {}
        }
        if c.kind.by_mobile() {
            let mut need = |key: &str, present: bool| {
                if !present {
                    report(
                        format!("alerts.channels[{i}]"),
                        format!("type = \"{}\" needs `{key}`", c.kind.as_str()),
                    );
                }
            };
            need("access_key_id", c.access_key_id.is_some());
            need("secret", c.secret.is_some());
            need("template", c.template.is_some());
            if c.kind != ChannelType::AliyunVoice {
                need("sign_name", c.sign_name.is_some());
            }
            if c.kind == ChannelType::TencentSms {
                need("sms_app_id", c.sms_app_id.is_some());
            }
            if let Some(endpoint) = &c.endpoint {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    report(at("endpoint"), "must start with http:// or https://".into());
                }
            }
            if !(1..=3).contains(&c.play_times) {
                report(at("play_times"), "must be 1 to 3".into());
            }
        } else if c.secret.is_some()
            && !matches!(
                c.kind,
                ChannelType::Webhook | ChannelType::Dingtalk | ChannelType::Feishu
            )
        {
            report(
                at("secret"),
                format!("type = \"{}\" takes no `secret`", c.kind.as_str()),
            );
        }
        if c.kind == ChannelType::Mqtt {
            match &c.mqtt {
                None => report(
                    format!("alerts.channels[{i}]"),
                    "type = \"mqtt\" needs `mqtt`, the name of an [[mqtt]] connection".into(),
                ),
                Some(name) if !mqtt_names.contains(name.as_str()) => {
                    report(at("mqtt"), format!("no [[mqtt]] connection named `{name}`"))
                }
                Some(_) => {}
            }
            if c.topic_prefix.is_empty() || c.topic_prefix.contains(['+', '#']) {
                report(
                    at("topic_prefix"),
                    "must be a topic without wildcards".into(),
                );
            }
        }
        if c.kind == ChannelType::Email {
            if c.smtp_host.is_none() {
                report(
                    format!("alerts.channels[{i}]"),
                    "type = \"email\" needs `smtp_host`".into(),
                );
            }
            match &c.from {
                None => report(
                    format!("alerts.channels[{i}]"),
                    "type = \"email\" needs `from`".into(),
                ),
                Some(from) if from.parse::<lettre::message::Mailbox>().is_err() => {
                    report(at("from"), format!("`{from}` is not an e-mail address"))
                }
                Some(_) => {}
            }
            if c.password.is_some() && c.username.is_none() {
                report(at("password"), "a password needs a `username`".into());
            }
            if let Some(ca) = &c.ca {
                if !base_dir.join(ca).is_file() {
                    report(
                        at("ca"),
                        format!("no such file: {}", base_dir.join(ca).display()),
                    );
                }
            }
        }
    }
    let routes: BTreeSet<&str> = alerts.routes.iter().map(|r| r.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, r) in alerts.routes.iter().enumerate() {
        let at = |key: &str| format!("alerts.routes[{i}].{key}");
        if !seen.insert(r.name.as_str()) {
            report(
                format!("alerts.routes[{i}]"),
                format!("duplicate name `{}`", r.name),
            );
        }
        if r.channels.is_empty() {
            report(at("channels"), "name at least one channel".into());
        }
        for name in &r.channels {
            if !channels.contains(name.as_str()) {
                report(
                    at("channels"),
                    format!("no channel named `{name}` in [[alerts.channels]]"),
                );
            }
        }
        let by_mobile = r.channels.iter().any(|name| {
            alerts
                .channels
                .iter()
                .any(|c| c.name == *name && c.kind.by_mobile())
        });
        if by_mobile && !r.enterprise_contact && r.recipients.iter().all(|p| p.mobile.is_none()) {
            report(
                at("recipients"),
                "an SMS or voice channel needs recipients with a `mobile` (or `enterprise_contact = true`): nobody would be told".into(),
            );
        }
        for (j, p) in r.recipients.iter().enumerate() {
            if let Some(mobile) = &p.mobile {
                let digits = mobile.chars().filter(char::is_ascii_digit).count();
                let allowed = mobile
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' '));
                if !allowed || !(7..=15).contains(&digits) {
                    report(
                        format!("alerts.routes[{i}].recipients[{j}].mobile"),
                        format!("`{mobile}` is not a phone number (digits, `+`, `-`, spaces)"),
                    );
                }
            }
            if let Some(email) = &p.email {
                if email.parse::<lettre::Address>().is_err() {
                    report(
                        format!("alerts.routes[{i}].recipients[{j}].email"),
                        format!("`{email}` is not an e-mail address"),
                    );
                }
            }
        }
        match &r.escalate_to {
            Some(next) if next == &r.name => report(
                at("escalate_to"),
                "a route cannot escalate to itself".into(),
            ),
            Some(next) if !routes.contains(next.as_str()) => {
                report(at("escalate_to"), format!("no route named `{next}`"))
            }
            Some(next)
                if alerts
                    .routes
                    .iter()
                    .any(|o| o.name == *next && o.confirmed_only) =>
            {
                report(
                    at("escalate_to"),
                    format!("`{next}` is confirmed_only: it gets fires by their confirmation, not by escalation"),
                )
            }
            _ => {}
        }
        if r.escalate_to.is_some() && r.ack_deadline_s == 0 {
            report(at("ack_deadline_s"), "must be at least 1 second".into());
        }
        if r.rate_limit.max == 0 || r.rate_limit.per_s == 0 {
            report(
                at("rate_limit"),
                "`max` and `per_s` must be at least 1".into(),
            );
        }
        if r.give_up_after_s == 0 {
            report(at("give_up_after_s"), "must be at least 1 second".into());
        }
        // A chain that comes back to this route would escalate forever.
        let mut next = r.escalate_to.as_deref();
        for _ in 0..alerts.routes.len() {
            let Some(name) = next else { break };
            if name == r.name {
                report(
                    at("escalate_to"),
                    "escalation comes back to this route (a cycle)".into(),
                );
                break;
            }
            next = alerts
                .routes
                .iter()
                .find(|x| x.name == name)
                .and_then(|x| x.escalate_to.as_deref());
        }
        if r.kinds.contains(&AlarmKind::Event) {
            report(
                at("kinds"),
                "events are never pushed (they need nobody's action)".into(),
            );
        }
    }
}

impl AlertsConfig {
    /// One line per escalation step: which route escalates to which, after how long, and what
    /// the target takes (its own selection), for `parkguard check`.
    pub fn escalation_summary(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| {
                let to = self
                    .routes
                    .iter()
                    .find(|t| Some(&t.name) == r.escalate_to.as_ref())?;
                Some(format!(
                    "route {} escalates alarms unacknowledged for {} s to {}, which takes {}",
                    r.name,
                    r.ack_deadline_s,
                    to.name,
                    to.selection()
                ))
            })
            .collect()
    }
}

impl RouteConfig {
    /// Its filters in words: "every alarm", or e.g. "severities critical; rules R13, R11".
    pub fn selection(&self) -> String {
        let mut parts = Vec::new();
        let list = |name: &str, items: Vec<String>| {
            (!items.is_empty()).then(|| format!("{name} {}", items.join(", ")))
        };
        parts.extend(list(
            "severities",
            self.severities
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
        ));
        parts.extend(list(
            "kinds",
            self.kinds.iter().map(|k| k.as_str().to_string()).collect(),
        ));
        parts.extend(list("device kinds", self.device_kinds.clone()));
        parts.extend(list("rules", self.rules.clone()));
        parts.extend(list("parks", self.parks.clone()));
        parts.extend(list("enterprises", self.enterprises.clone()));
        parts.extend(list("locations", self.locations.clone()));
        parts.extend(list("devices", self.devices.clone()));
        if parts.is_empty() {
            "every alarm".to_string()
        } else {
            format!("only alarms of {}", parts.join("; "))
        }
    }
}
