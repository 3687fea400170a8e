//! Health for service managers (`/healthz`, `/readyz`) and the Prometheus metrics.

use super::*;

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
