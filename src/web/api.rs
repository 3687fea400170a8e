//! The HTTP handlers: the page and its assets, login, alarms, commands, events, journal,
//! devices, history, metrics and health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{async_trait, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;

use super::auth::{same_secret, Caller, LoginError, CHECK_SLOT_WAIT, CSRF_HEADER};
use super::{session_cookie, session_id, Shared, OPENAPI};
use crate::config::{AlarmKind, Role, Severity};
use crate::live::DeviceLatest;
use crate::metrics::PrometheusText;
use crate::rules::alarm::{AlarmState, Command, CommandError, Operator};
use crate::rules::engine::{AlarmView, Target};
use crate::rules_task::{now_ms, HandleError};
use crate::store::history::HistoryPoint;

const INDEX_HTML: &str = include_str!("assets/index.html");

/// Embedded assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.LICENSE"),
    ),
];

/// Longest comment or shelve reason accepted, in characters.
const MAX_TEXT: usize = 500;

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A JSON request body, or the 400 that says what is wrong with it.
// The error is returned straight from a handler; boxing it would only add a step.
#[allow(clippy::result_large_err)]
fn json_body<T>(
    request: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Response> {
    request
        .map(|Json(body)| body)
        .map_err(|err| error(StatusCode::BAD_REQUEST, err.body_text()))
}

/// `Ok` when the caller's role reaches `needed`, else the 403 naming both.
#[allow(clippy::result_large_err)]
fn allowed(caller: &Caller, needed: Role) -> Result<(), Response> {
    caller
        .require(needed)
        .map_err(|message| error(StatusCode::FORBIDDEN, message))
}

pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page or endpoint")
}

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the rules answer and every MQTT connection is up.
pub async fn readyz(State(state): State<Shared>) -> Response {
    let mut problems = Vec::new();
    let rules_answer =
        tokio::time::timeout(Duration::from_secs(2), state.rules.alarm("\u{0}")).await;
    if rules_answer.is_err() {
        problems.push("the rules engine does not answer".to_string());
    }
    // Counted, not named: this answer is for anyone who reaches the port.
    let down = state
        .config
        .site
        .mqtt
        .iter()
        .filter(|m| {
            !state
                .metrics
                .mqtt(&m.name)
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .count();
    if down > 0 {
        problems.push(format!("{down} MQTT connection(s) down"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<Shared>, mut parts: Parts) -> Response {
    if state.auth.metrics_locked() {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !state.auth.is_metrics_token(bearer)
            && Caller::from_request_parts(&mut parts, &state)
                .await
                .is_err()
        {
            return error(StatusCode::UNAUTHORIZED, "metrics need the metrics token");
        }
    }
    let mut text = PrometheusText::new();
    state.metrics.render(&mut text);
    let alarms = state.hub.alarms();
    text.family(
        "alarms",
        "gauge",
        "Alarms that are not normal, by state and severity.",
    );
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &alarms {
        let state = if a.shelved_until_ms.is_some() {
            "shelved"
        } else if a.suppressed_until_ms.is_some() || a.out_of_service {
            "suppressed"
        } else {
            a.state.as_str()
        };
        let severity = a.severity.map_or("none", Severity::as_str);
        *counts.entry((state, severity)).or_default() += 1;
    }
    for ((state_name, severity), count) in counts {
        text.sample(
            "alarms",
            &[("state", state_name), ("severity", severity)],
            count as f64,
        );
    }
    text.single(
        "web_event_clients",
        "gauge",
        "Clients connected to the live event stream.",
        state.hub.clients() as f64,
    );
    text.single(
        "web_sessions",
        "gauge",
        "Logged-in web sessions.",
        state.auth.session_count() as f64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text.finish(),
    )
        .into_response()
}

/// Authentication: a session cookie (with the CSRF token on state-changing requests) or an
/// API token.
#[async_trait]
impl FromRequestParts<Shared> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return token
                .and_then(|t| state.auth.token(t))
                .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown API token"));
        }
        let caller = session_id(&parts.headers)
            .and_then(|id| state.auth.session(id))
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "log in first"))?;
        let changes_state = !matches!(parts.method, Method::GET | Method::HEAD);
        if changes_state {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expected = caller.csrf.as_deref().unwrap_or("\u{0}");
            if !same_secret(sent, expected) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token (X-CSRF-Token header)",
                ));
            }
        }
        Ok(caller)
    }
}

#[derive(Deserialize)]
pub struct LoginRequest {
    name: String,
    password: String,
}

pub async fn login(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<LoginRequest>,
) -> Response {
    if request.name.len() > 200 || request.password.len() > 1000 {
        return error(StatusCode::BAD_REQUEST, "name or password too long");
    }
    let known = state.auth.is_user(&request.name);
    let result = match state.auth.begin_login(peer.ip(), &request.name) {
        Err(limited) => Ok(Err(limited)),
        Ok(attempt) => {
            // A name under attack: wait before checking, holding nothing.
            tokio::time::sleep(attempt.delay).await;
            match tokio::time::timeout(CHECK_SLOT_WAIT, state.auth.check_slots.acquire()).await {
                Ok(Ok(slot)) => {
                    let checker = Arc::clone(&state);
                    let password = request.password;
                    let result = tokio::task::spawn_blocking(move || {
                        checker.auth.check_password(attempt, &password)
                    })
                    .await;
                    drop(slot);
                    result
                }
                _ => Ok(Err(LoginError::Busy)),
            }
        }
    };
    match result {
        Ok(Ok((session, caller))) => {
            tracing::info!(user = %caller.name, role = caller.role.as_str(), %peer, "Web login.");
            let cookie = session_cookie(&session, state.auth.idle().as_secs(), state.tls);
            let mut response = Json(&caller).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Ok(Err(LoginError::Refused)) => {
            // A submitted name that is no user is often a password typed in the wrong field.
            if known {
                tracing::warn!(user = %request.name, %peer, "Web login refused: wrong password.");
            } else {
                tracing::warn!(%peer, "Web login refused: unknown user name.");
            }
            error(StatusCode::UNAUTHORIZED, "wrong name or password")
        }
        Ok(Err(LoginError::Limited(wait))) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins; try again in {} s",
                    wait.as_secs().max(1)
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Ok(Err(LoginError::Busy)) => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once; try again in a moment",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "login check failed"),
    }
}

pub async fn logout(State(state): State<Shared>, _caller: Caller, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.auth.logout(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&session_cookie("", 0, state.tls)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub async fn session(caller: Caller) -> Json<Caller> {
    Json(caller)
}

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
    /// acknowledge, shelve, unshelve, reset, suppress, remove_from_service, return_to_service.
    command: String,
    /// For shelve, suppress and remove_from_service: how long, in minutes (out of service
    /// lasts 24 hours when absent).
    #[serde(default)]
    minutes: Option<f64>,
    /// For shelve: why (required).
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
        Command::Acknowledge | Command::Shelve { .. } | Command::Unshelve | Command::Reset => {
            Role::Operator
        }
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
        Err(HandleError::Refused(refused)) => error(StatusCode::CONFLICT, refused.to_string()),
        Err(HandleError::Stopped) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rules engine has stopped",
        ),
    }
}

/// The live stream: `alarm` (a transition and the alarm after it), `device` (a device's
/// status changed) and `resync` (this client fell behind; re-read the lists).
/// Event streams at most, in all and per login session.
pub const MAX_STREAMS: usize = 200;
pub const MAX_STREAMS_PER_SESSION: usize = 4;
/// How often a stream checks that its session is still live.
const SESSION_CHECK: Duration = Duration::from_secs(2);

pub async fn events(State(state): State<Shared>, caller: Caller, headers: HeaderMap) -> Response {
    let session = session_id(&headers)
        .filter(|_| caller.csrf.is_some())
        .map(str::to_string);
    let Some(slot) = state.streams.open(session.as_deref()) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many event streams open; close another tab",
        );
    };
    let receiver = state.hub.subscribe();
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Arc::clone(&state);
    let stream = futures_util::stream::unfold(
        (receiver, check, slot),
        move |(mut receiver, mut check, slot)| {
            let live = Arc::clone(&live);
            let session = session.clone();
            async move {
                loop {
                    tokio::select! {
                        received = receiver.recv() => {
                            let event = match received {
                                Ok(event) => Event::default().event(event.name).data(&event.data),
                                Err(broadcast::error::RecvError::Lagged(_)) => {
                                    Event::default().event("resync").data("{}")
                                }
                                Err(broadcast::error::RecvError::Closed) => return None,
                            };
                            return Some((Ok::<_, Infallible>(event), (receiver, check, slot)));
                        }
                        _ = check.tick() => {
                            // Logged out or expired: the stream ends with the session.
                            if session.as_deref().is_some_and(|id| !live.auth.session_alive(id)) {
                                return None;
                            }
                        }
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub struct JournalQuery {
    search: Option<String>,
    limit: Option<u32>,
}

pub async fn journal(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<JournalQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let search = query.search.filter(|s| !s.is_empty());
    match on_store(&state, "journal read", move |s| {
        s.journal(search.as_deref(), limit)
    })
    .await
    {
        Ok(entries) => Json(entries).into_response(),
        Err(response) => response,
    }
}

/// Runs `f` on the web's store connection in a blocking thread; a failure is a 500 naming
/// `what`.
async fn on_store<T: Send + 'static>(
    state: &Shared,
    what: &'static str,
    f: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let state = Arc::clone(state);
    let result = tokio::task::spawn_blocking(move || {
        let mut store = state.store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut store)
    })
    .await;
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed"),
        )),
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

#[derive(Serialize)]
struct DeviceView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    park: &'a str,
    park_name: Option<&'a str>,
    enterprise: &'a str,
    enterprise_name: Option<&'a str>,
    location: &'a str,
    location_name: Option<&'a str>,
    kind: &'a str,
    profile: &'a str,
    status: super::DeviceStatus,
    /// Alarms of the device that are not normal.
    alarms: usize,
    /// Polled over Modbus (so the commissioning page can read it).
    modbus: bool,
    /// The newest commissioning sign-off.
    signoff: Option<crate::store::SignOff>,
    #[serde(flatten)]
    latest: DeviceLatest,
}

/// Every declared device with its place, status and latest values, in park, enterprise,
/// location and id order.
pub async fn devices(State(state): State<Shared>, _caller: Caller) -> Response {
    let signoffs = on_store(&state, "sign-off read", |s| s.latest_signoffs())
        .await
        .unwrap_or_default();
    let site = &state.config.site;
    let latest = state.latest.all();
    let alarms = state.hub.alarms();
    // Lookups by id: the list is built for every refresh of every open device page.
    let park_names: HashMap<&str, Option<&str>> = site
        .parks
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_deref()))
        .collect();
    let enterprises: HashMap<&str, (&str, Option<&str>)> = site
        .enterprises
        .iter()
        .map(|e| (e.id.as_str(), (e.park.as_str(), e.name.as_deref())))
        .collect();
    let locations: HashMap<&str, (&str, Option<&str>)> = site
        .locations
        .iter()
        .map(|l| (l.id.as_str(), (l.enterprise.as_str(), l.name.as_deref())))
        .collect();
    let mut alarms_of: HashMap<&str, Vec<&AlarmView>> = HashMap::new();
    for a in &alarms {
        alarms_of.entry(a.device.as_str()).or_default().push(a);
    }
    let polled: HashSet<&str> = site
        .modbus
        .iter()
        .flat_map(|m| m.units.iter().map(|u| u.device.as_str()))
        .collect();
    let signoffs: HashMap<String, crate::store::SignOff> = signoffs
        .into_iter()
        .map(|s| (s.device.clone(), s))
        .collect();
    let mut list: Vec<DeviceView> = site
        .devices
        .iter()
        .map(|d| {
            let location = locations.get(d.location.as_str());
            let enterprise_id = location.map_or("", |l| l.0);
            let enterprise = enterprises.get(enterprise_id);
            let park_id = enterprise.map_or("", |e| e.0);
            let kind = d.kind.as_deref().unwrap_or_else(|| {
                state
                    .config
                    .profiles
                    .get(&d.profile)
                    .map_or("", |p| p.kind.as_str())
            });
            let seen = latest.get(&d.id).cloned().unwrap_or_default();
            let own = alarms_of.get(d.id.as_str()).map_or(&[][..], Vec::as_slice);
            DeviceView {
                id: &d.id,
                name: d.name.as_deref(),
                park: park_id,
                park_name: park_names.get(park_id).copied().flatten(),
                enterprise: enterprise_id,
                enterprise_name: enterprise.and_then(|e| e.1),
                location: &d.location,
                location_name: location.and_then(|l| l.1),
                kind,
                profile: &d.profile,
                status: super::hub::device_status(own.iter().copied(), seen.last_seen_ms.is_some()),
                alarms: own.len(),
                modbus: polled.contains(d.id.as_str()),
                signoff: signoffs.get(&d.id).cloned(),
                latest: seen,
            }
        })
        .collect();
    list.sort_by(|a, b| {
        (a.park, a.enterprise, a.location, a.id).cmp(&(b.park, b.enterprise, b.location, b.id))
    });
    Json(list).into_response()
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    device: String,
    quantity: String,
    /// How far back, in hours (default 1).
    hours: Option<f64>,
}

pub async fn history(
    State(state): State<Shared>,
    _caller: Caller,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let hours = query.hours.unwrap_or(1.0);
    if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0) {
        return error(StatusCode::BAD_REQUEST, "hours must be above 0");
    }
    let since = now_ms() - (hours * 3_600_000.0) as i64;
    let read = move |s: &mut crate::store::Store| s.history(&query.device, &query.quantity, since);
    match on_store(&state, "history read", read).await {
        Ok(points) => Json::<Vec<HistoryPoint>>(points).into_response(),
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

/// The Modbus connection, unit id and profile of a configured device.
fn modbus_device(
    state: &Shared,
    device: &str,
) -> Option<(crate::config::ModbusLink, u8, crate::config::Profile)> {
    let site = &state.config.site;
    let profile_id = &site.devices.iter().find(|d| d.id == device)?.profile;
    let profile = state.config.profiles.get(profile_id)?.clone();
    site.modbus.iter().find_map(|m| {
        m.units
            .iter()
            .find(|u| u.device == device)
            .map(|u| (m.link(), u.unit_id, profile.clone()))
    })
}

/// How long a commissioning read may wait for the device.
const COMMISSIONING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    device: String,
    /// holding, input, coil or discrete.
    area: String,
    /// As the manual counts (see `base`).
    address: u16,
    count: u16,
    #[serde(default)]
    base: u16,
}

/// Reads raw words from a configured Modbus device for a technician: the words and every
/// type in all four word orders.
pub async fn commissioning_read(
    State(state): State<Shared>,
    caller: Caller,
    request: Result<Json<ReadRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use crate::decode::registers::Area;
    if let Err(refused) = allowed(&caller, Role::Technician) {
        return refused;
    }
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let (area, max) = match request.area.as_str() {
        "holding" => (Area::Holding, 125),
        "input" => (Area::Input, 125),
        "coil" => (Area::Coil, 2000),
        "discrete" => (Area::DiscreteInput, 2000),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown area `{other}`: holding, input, coil or discrete"),
            )
        }
    };
    if request.count == 0 || request.count > max {
        return error(StatusCode::BAD_REQUEST, format!("count must be 1 to {max}"));
    }
    let Some(wire) = request.address.checked_sub(request.base) else {
        return error(StatusCode::BAD_REQUEST, "address below the base");
    };
    if u32::from(wire) + u32::from(request.count) > 65_536 {
        return error(
            StatusCode::BAD_REQUEST,
            "address and count run past the last address (65535)",
        );
    }
    let Some((link, unit, _)) = modbus_device(&state, &request.device) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{}` is not a Modbus device of this site", request.device),
        );
    };
    let answer = crate::ingest::modbus::read_once(
        &link,
        unit,
        area,
        wire,
        request.count,
        COMMISSIONING_TIMEOUT,
    )
    .await;
    match answer {
        Ok(words) => {
            let (words_table, orders_table) = if area.is_bit() {
                let bits: Vec<bool> = words.iter().map(|w| *w != 0).collect();
                (
                    crate::decode::inspect::bits_table(request.address, &bits),
                    String::new(),
                )
            } else {
                (
                    crate::decode::inspect::words_table(request.address, &words),
                    crate::decode::inspect::every_order_table(request.address, &words),
                )
            };
            Json(
                json!({ "words": words, "words_table": words_table, "orders_table": orders_table }),
            )
            .into_response()
        }
        Err(err) => error(StatusCode::BAD_GATEWAY, err.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    device: String,
}

/// Polls a configured Modbus device once with its profile and judges every value.
pub async fn commissioning_profile_test(
    State(state): State<Shared>,
    caller: Caller,
    request: Result<Json<DeviceRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refused) = allowed(&caller, Role::Technician) {
        return refused;
    }
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some((link, unit, profile)) = modbus_device(&state, &request.device) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{}` is not a Modbus device of this site", request.device),
        );
    };
    match crate::ingest::modbus::profile_test(&link, unit, &profile, COMMISSIONING_TIMEOUT).await {
        Ok(result) => Json(json!({
            "checks": result.checks,
            "failures": result.failures,
            "flags_set": result.flags_set(),
            "implausible": result.implausible(),
        }))
        .into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOffRequest {
    device: String,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    notes: String,
}

/// Records that a technician commissioned a device.
pub async fn signoff(
    State(state): State<Shared>,
    caller: Caller,
    request: Result<Json<SignOffRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refused) = allowed(&caller, Role::Technician) {
        return refused;
    }
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if !state
        .config
        .site
        .devices
        .iter()
        .any(|d| d.id == request.device)
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no device `{}`", request.device),
        );
    }
    let too_long = |t: &str| t.chars().count() > MAX_TEXT;
    if too_long(&request.notes) || request.firmware.as_deref().is_some_and(too_long) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("notes and firmware are at most {MAX_TEXT} characters"),
        );
    }
    let record = crate::store::SignOff {
        device: request.device,
        at_ms: now_ms(),
        technician: caller.name.clone(),
        firmware: request.firmware.filter(|f| !f.trim().is_empty()),
        notes: request.notes,
    };
    let stored = record.clone();
    match on_store(&state, "sign-off", move |s| s.add_signoff(&stored)).await {
        Ok(()) => {
            tracing::info!(device = %record.device, technician = %record.technician, "Device signed off.");
            Json(record).into_response()
        }
        Err(response) => response,
    }
}
