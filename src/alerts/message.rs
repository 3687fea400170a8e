//! What a push says, in Chinese or English: a title and labelled lines (park, enterprise,
//! location, device, quantity, value, threshold, time, severity, state, operator) and the link
//! to the alarm in the web UI. Pure; the channels only lay it out.

use crate::config::alerts::Language;
use crate::config::{AlarmKind, Severity};

use super::routing::Notice;

/// A rendered notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub title: String,
    /// Label and value, in display order.
    pub lines: Vec<(&'static str, String)>,
    pub link: Option<String>,
    pub link_label: &'static str,
}

impl Message {
    /// Plain text: title, one `label: value` line each, the link.
    pub fn plain(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for (label, value) in &self.lines {
            out.push_str(&format!("{label}: {value}\n"));
        }
        if let Some(link) = &self.link {
            out.push_str(&format!("{}: {link}\n", self.link_label));
        }
        out
    }

    /// Markdown as the group robots render it: bold title, one line per field, link.
    pub fn markdown(&self) -> String {
        let mut out = format!("**{}**\n", escape_markdown(&self.title));
        for (label, value) in &self.lines {
            out.push_str(&format!("> {label}: {}\n", escape_markdown(value)));
        }
        if let Some(link) = &self.link {
            out.push_str(&format!("\n[{}]({link})\n", self.link_label));
        }
        out
    }
}

/// Device names come from site files and sensors; keep them from turning into markup.
fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '[' | ']' | '`' | '<' | '>' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn severity_label(s: Severity, lang: Language) -> &'static str {
    match (lang, s) {
        (Language::Zh, Severity::Critical) => "紧急",
        (Language::Zh, Severity::High) => "高",
        (Language::Zh, Severity::Medium) => "中",
        (Language::Zh, Severity::Low) => "低",
        (Language::En, Severity::Critical) => "critical",
        (Language::En, Severity::High) => "high",
        (Language::En, Severity::Medium) => "medium",
        (Language::En, Severity::Low) => "low",
    }
}

fn kind_label(k: AlarmKind, lang: Language) -> &'static str {
    match (lang, k) {
        (Language::Zh, AlarmKind::Alarm) => "报警",
        (Language::Zh, AlarmKind::PreAlarm) => "预警",
        (Language::Zh, AlarmKind::Fault) => "故障",
        (Language::Zh, AlarmKind::Supervisory) => "监管",
        (Language::Zh, AlarmKind::Test) => "测试",
        (Language::Zh, AlarmKind::Event) => "事件",
        (Language::En, AlarmKind::Alarm) => "alarm",
        (Language::En, AlarmKind::PreAlarm) => "pre-alarm",
        (Language::En, AlarmKind::Fault) => "fault",
        (Language::En, AlarmKind::Supervisory) => "supervisory",
        (Language::En, AlarmKind::Test) => "test",
        (Language::En, AlarmKind::Event) => "event",
    }
}

fn event_label(event: &str, lang: Language) -> String {
    let (zh, en) = match event {
        "raised" => ("新报警", "New"),
        "escalated" => ("级别升高", "Escalated"),
        "reannunciated" => (
            "屏蔽/搁置结束·仍在报警",
            "Still active after shelving or maintenance ended",
        ),
        "silenced" => (
            "现场已消音·仍在报警",
            "Silenced at the device, still active",
        ),
        "de_escalated" => ("级别降低", "De-escalated"),
        "condition_cleared" => ("已恢复·待确认", "Returned to normal, unacknowledged"),
        "cleared" => ("已恢复", "Cleared"),
        "acknowledged" => ("已确认", "Acknowledged"),
        "shelved" => ("已搁置", "Shelved"),
        "suppressed" => ("已屏蔽", "Suppressed"),
        "removed_from_service" => ("已停用", "Out of service"),
        "reset" => ("已复位", "Reset"),
        "retired" => ("规则已删除", "Rule removed"),
        "unacknowledged" => ("超时未确认·升级", "Unacknowledged, escalated"),
        "reminder" => ("仍未确认·提醒", "Reminder: still unacknowledged"),
        "fire_confirmed" => ("确认火警", "Fire confirmed"),
        "false_alarm" => ("误报", "False alarm"),
        other => (other, other),
    };
    match lang {
        Language::Zh => zh.to_string(),
        Language::En => en.to_string(),
    }
}

fn state_label(state: &str, lang: Language) -> String {
    let (zh, en) = match state {
        "normal" => ("正常", "normal"),
        "unacknowledged" => ("未确认", "unacknowledged"),
        "acknowledged" => ("已确认", "acknowledged"),
        "returned_unacknowledged" => ("已恢复未确认", "returned, unacknowledged"),
        other => (other, other),
    };
    match lang {
        Language::Zh => zh.to_string(),
        Language::En => en.to_string(),
    }
}

fn number(n: f64) -> String {
    format!("{}", (n * 1000.0).round() / 1000.0)
}

/// The values an SMS or voice template's variables can take, in the route's language: the
/// place (enterprise and location), the device, the alarm (rule name), the event, the value
/// with its unit, the severity and the local time (`MM-DD HH:MM`). Each is at most 35
/// characters, the providers' limit for a variable.
pub fn template_value(
    param: crate::config::alerts::TemplateParam,
    notice: &Notice,
    utc_offset_minutes: i32,
) -> String {
    use crate::config::alerts::TemplateParam;
    let lang = notice.language;
    let a = &notice.alarm;
    let text = match param {
        TemplateParam::Place => format!("{}{}", a.enterprise_name, a.location_name),
        TemplateParam::Device => a.device_name.clone(),
        TemplateParam::Alarm => match (lang, &a.rule_name_zh) {
            (Language::Zh, Some(name)) => name.clone(),
            _ => a.rule_name.clone(),
        },
        TemplateParam::Event => event_label(&notice.event, lang),
        TemplateParam::Value => match &a.value {
            Some(crate::model::alarm::Observed::Number(n)) => {
                format!("{}{}", number(*n), a.unit.as_deref().unwrap_or(""))
            }
            Some(crate::model::alarm::Observed::Text(t)) => t.clone(),
            None => String::new(),
        },
        TemplateParam::Severity => severity_label(a.severity, lang).to_string(),
        TemplateParam::Time => {
            let t = crate::model::CivilTime::at(notice.at_ms, utc_offset_minutes);
            format!("{:02}-{:02} {:02}:{:02}", t.month, t.day, t.hour, t.minute)
        }
    };
    text.chars().take(35).collect()
}

/// Renders a notice in its route's language.
pub fn render(notice: &Notice, utc_offset_minutes: i32) -> Message {
    let lang = notice.language;
    let a = &notice.alarm;
    let zh = lang == Language::Zh;
    let rule_name = match (zh, &a.rule_name_zh) {
        (true, Some(name)) => name.clone(),
        _ => a.rule_name.clone(),
    };
    let title = if zh {
        format!(
            "【{}{}】{} · {} · {}",
            severity_label(a.severity, lang),
            kind_label(a.kind, lang),
            event_label(&notice.event, lang),
            rule_name,
            a.device_name
        )
    } else {
        format!(
            "[{} {}] {}: {} at {}",
            severity_label(a.severity, lang),
            kind_label(a.kind, lang),
            event_label(&notice.event, lang),
            rule_name,
            a.device_name
        )
    };
    let unit = a.unit.as_deref().unwrap_or("");
    let with_unit = |v: String| {
        if unit.is_empty() {
            v
        } else {
            format!("{v} {unit}")
        }
    };
    let labels: [&'static str; 14] = if zh {
        [
            "园区",
            "企业",
            "位置",
            "设备",
            "监测量",
            "数值",
            "阈值",
            "时间",
            "级别",
            "状态",
            "操作人",
            "说明",
            "未确认时长",
            "升级自",
        ]
    } else {
        [
            "Park",
            "Enterprise",
            "Location",
            "Device",
            "Quantity",
            "Value",
            "Threshold",
            "Time",
            "Severity",
            "State",
            "Operator",
            "Comment",
            "Unacknowledged for",
            "Escalated from",
        ]
    };
    let mut lines = vec![
        (labels[0], a.park_name.clone()),
        (labels[1], a.enterprise_name.clone()),
        (labels[2], a.location_name.clone()),
        (labels[3], format!("{} ({})", a.device_name, a.device)),
    ];
    if !a.quantity.is_empty() {
        let name = if zh { &a.quantity_zh } else { &a.quantity_en };
        let shown = match name {
            Some(name) => format!("{name} ({})", a.quantity),
            None => a.quantity.clone(),
        };
        lines.push((labels[4], shown));
    }
    if let Some(v) = &a.value {
        let shown = match v {
            crate::model::alarm::Observed::Number(n) => with_unit(number(*n)),
            crate::model::alarm::Observed::Text(t) => t.clone(),
        };
        lines.push((labels[5], shown));
    }
    // States and flags have no threshold worth showing.
    if let (Some(t), Some(crate::model::alarm::Observed::Number(_))) = (a.threshold, &a.value) {
        lines.push((labels[6], with_unit(number(t))));
    }
    lines.push((
        labels[7],
        crate::model::local_time(notice.at_ms, utc_offset_minutes),
    ));
    // Learned late (replayed after an outage): when it really began, by the device's clock.
    if let Some(began) = notice.late_began_ms {
        let label = if zh {
            "迟报·开始于"
        } else {
            "Reported late, began"
        };
        lines.push((label, crate::model::local_time(began, utc_offset_minutes)));
    }
    lines.push((labels[8], severity_label(a.severity, lang).to_string()));
    lines.push((labels[9], state_label(&a.state, lang)));
    if let Some(op) = &notice.operator {
        lines.push((labels[10], op.clone()));
    }
    if let Some(c) = &notice.comment {
        lines.push((labels[11], c.clone()));
    }
    if let Some(s) = notice.unacknowledged_for_s {
        let shown = if zh {
            format!("{} 分 {} 秒", s / 60, s % 60)
        } else {
            format!("{} min {} s", s / 60, s % 60)
        };
        lines.push((labels[12], shown));
    }
    if let Some(from) = &notice.escalated_from {
        lines.push((labels[13], from.clone()));
    }
    Message {
        title,
        lines,
        link: notice.link.clone(),
        link_label: if zh { "查看报警" } else { "Open alarm" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_is_civil_time_at_the_offset() {
        // 2026-11-25 10:00:00 UTC.
        assert_eq!(
            crate::model::local_time(1_795_600_800_000, 480),
            "2026-11-25 18:00:00 +08:00"
        );
        assert_eq!(
            crate::model::local_time(0, -90),
            "1969-12-31 22:30:00 -01:30"
        );
        assert_eq!(
            crate::model::local_time(951_782_400_000, 0),
            "2000-02-29 00:00:00 +00:00"
        );
    }

    #[test]
    fn markdown_escapes_site_text() {
        assert_eq!(escape_markdown("a*b[c](d)"), "a\\*b\\[c\\](d)");
    }
}
