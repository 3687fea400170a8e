//! The alarm list, operators' commands on alarms (with the role each needs) and the
//! deliveries of their pushes.

use super::*;
use crate::model::alarm::FalseAlarmReason;

#[derive(Deserialize, Default)]
pub struct AlarmFilter {
    park: Option<String>,
    enterprise: Option<String>,
    location: Option<String>,
    device: Option<String>,
    kind: Option<AlarmKind>,
    severity: Option<Severity>,
    state: Option<AlarmState>,
}

impl AlarmFilter {
    fn keeps(&self, a: &AlarmView) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&self.park, &a.park)
            && same(&self.enterprise, &a.enterprise)
            && same(&self.location, &a.location)
            && same(&self.device, &a.device)
            && self.kind.is_none_or(|k| a.kind == Some(k))
            && self.severity.is_none_or(|s| a.severity == Some(s))
            && self.state.is_none_or(|s| a.state == s)
    }
}

pub async fn alarms(
    State(state): State<Shared>,
    _caller: Caller,
    filter: Result<Query<AlarmFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let list: Vec<AlarmView> = state
        .hub
        .alarms()
        .into_iter()
        .filter(|a| filter.keeps(a))
        .collect();
    Json(list).into_response()
}

/// An operator command, as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// `alarm` (default), `device` or `location`.
    #[serde(default = "default_target")]
    target: String,
    id: String,
    /// acknowledge, shelve, unshelve, reset, suppress, remove_from_service, return_to_service,
    /// and for fire alarms confirm_fire, false_alarm.
    command: String,
    /// For shelve, suppress and remove_from_service: how long, in minutes (out of service
    /// lasts 24 hours when absent).
    #[serde(default)]
    minutes: Option<f64>,
    /// For shelve: why (required). For false_alarm: cooking, steam, dust, smoking, hot_work,
    /// test, device_fault or other (other needs a comment).
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

fn default_target() -> String {
    "alarm".into()
}

/// The role a command needs: commands on a whole device or location are for technicians
/// (commissioning, maintenance), whatever the command.
pub fn role_for(target: &Target, command: &Command) -> Role {
    if !matches!(target, Target::Alarm(_)) {
        return Role::Technician;
    }
    match command {
        Command::Acknowledge
        | Command::Shelve { .. }
        | Command::Unshelve
        | Command::Reset
        | Command::ConfirmFire
        | Command::FalseAlarm { .. } => Role::Operator,
        Command::Suppress { .. } | Command::RemoveFromService { .. } | Command::ReturnToService => {
            Role::Technician
        }
    }
}

fn parse_command(request: &CommandRequest, now: i64) -> Result<(Target, Command), String> {
    let target = match request.target.as_str() {
        "alarm" => Target::Alarm(request.id.clone()),
        "device" => Target::Device(request.id.clone()),
        "location" => Target::Location(request.id.clone()),
        other => {
            return Err(format!(
                "unknown target `{other}` (alarm, device, location)"
            ))
        }
    };
    let until = || -> Result<i64, String> {
        let minutes = request
            .minutes
            .filter(|m| m.is_finite() && *m > 0.0)
            .ok_or("give `minutes`, a duration above 0")?;
        Ok(now.saturating_add((minutes * 60_000.0) as i64))
    };
    let command = match request.command.as_str() {
        "acknowledge" => Command::Acknowledge,
        "shelve" => Command::Shelve {
            until_ms: until()?,
            reason: request.reason.clone().unwrap_or_default(),
        },
        "unshelve" => Command::Unshelve,
        "reset" => Command::Reset,
        "suppress" => Command::Suppress { until_ms: until()? },
        "remove_from_service" => Command::RemoveFromService {
            until_ms: match request.minutes {
                Some(_) => Some(until()?),
                None => None,
            },
        },
        "return_to_service" => Command::ReturnToService,
        "confirm_fire" => Command::ConfirmFire,
        "false_alarm" => {
            let reasons = || {
                FalseAlarmReason::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let reason = request
                .reason
                .as_deref()
                .ok_or_else(|| format!("give `reason`, one of {}", reasons()))?;
            Command::FalseAlarm {
                reason: FalseAlarmReason::parse(reason)
                    .ok_or_else(|| format!("unknown reason `{reason}` (one of {})", reasons()))?,
            }
        }
        other => return Err(format!("unknown command `{other}`")),
    };
    Ok((target, command))
}

pub async fn command(
    State(state): State<Shared>,
    caller: Caller,
    request: Result<Json<CommandRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let too_long = |t: &Option<String>| t.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT);
    if too_long(&request.comment) || too_long(&request.reason) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("comments and reasons are at most {MAX_TEXT} characters"),
        );
    }
    let (target, command) = match parse_command(&request, now_ms()) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Err(refused) = allowed(&caller, role_for(&target, &command)) {
        return refused;
    }
    let operator = Operator {
        name: caller.name.clone(),
        comment: request.comment.filter(|c| !c.trim().is_empty()),
    };
    match state.rules.command(target, command, operator).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(HandleError::Refused(CommandError::UnknownAlarm(key))) => {
            error(StatusCode::NOT_FOUND, format!("no alarm `{key}`"))
        }
        // What the request lacks is the caller's to fix; the rest is the alarm's state.
        Err(HandleError::Refused(
            refused @ (CommandError::CommentRequired
            | CommandError::ReasonRequired
            | CommandError::OperatorRequired),
        )) => error(StatusCode::BAD_REQUEST, refused.to_string()),
        Err(HandleError::Refused(refused)) => error(StatusCode::CONFLICT, refused.to_string()),
        Err(HandleError::Stopped) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rules engine has stopped",
        ),
    }
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    key: String,
}

/// The pushes of one alarm and how each went (pending, delivered, failed), newest first.
pub async fn deliveries(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<DeliveriesQuery>,
) -> Response {
    match on_store(&state, "delivery read", move |s| {
        s.alert_deliveries(&query.key, 200)
    })
    .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, minutes: Option<f64>) -> CommandRequest {
        CommandRequest {
            target: "alarm".into(),
            id: "R1/d".into(),
            command: command.into(),
            minutes,
            reason: Some("r".into()),
            comment: None,
        }
    }

    #[test]
    fn shelving_needs_a_positive_duration() {
        assert!(parse_command(&request("shelve", None), 0).is_err());
        assert!(parse_command(&request("shelve", Some(f64::NAN)), 0).is_err());
        let (_, command) = parse_command(&request("shelve", Some(30.0)), 1000).expect("parsed");
        assert_eq!(
            command,
            Command::Shelve {
                until_ms: 1000 + 30 * 60_000,
                reason: "r".into()
            }
        );
    }

    #[test]
    fn operators_acknowledge_but_only_technicians_suppress() {
        let alarm = Target::Alarm("R1/m1/leakage".into());
        assert_eq!(role_for(&alarm, &Command::Acknowledge), Role::Operator);
        assert_eq!(
            role_for(&Target::Device("m1".into()), &Command::Acknowledge),
            Role::Technician,
            "commands on a whole device are for technicians"
        );
        assert_eq!(
            role_for(&alarm, &Command::Suppress { until_ms: 0 }),
            Role::Technician
        );
    }
}
