//! The alarm journal, newest first, searchable.

use super::*;

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

#[derive(Deserialize)]
pub struct FireTallyQuery {
    days: Option<u32>,
}

/// Fires judged per enterprise over the last `days` (default 30): confirmed by an operator,
/// confirmed because nobody answered, false alarms by reason, and the false-alarm rate.
pub async fn fire_tally(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<FireTallyQuery>,
) -> Response {
    let days = i64::from(query.days.unwrap_or(30).clamp(1, 366));
    let since = now_ms() - days * 24 * 3600 * 1000;
    match on_store(&state, "fire tally", move |s| s.fire_tally(since)).await {
        Ok(tallies) => Json(json!({ "days": days, "enterprises": tallies })).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub struct HourlyQuery {
    hours: Option<u32>,
}

/// Alarms raised per hour over the last `hours` (default 24, at most 168), oldest first, the
/// current hour last: for the wall display's chart. Events and tests are not counted.
pub async fn alarms_hourly(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<HourlyQuery>,
) -> Response {
    const HOUR_MS: i64 = 3_600_000;
    let hours = i64::from(query.hours.unwrap_or(24).clamp(1, 168));
    let from_ms = (now_ms() / HOUR_MS - (hours - 1)) * HOUR_MS;
    match on_store(&state, "hourly alarm count", move |s| {
        s.alarms_raised_per_hour(from_ms, hours as usize)
    })
    .await
    {
        Ok(counts) => {
            let hours: Vec<_> = counts
                .iter()
                .enumerate()
                .map(|(i, (raised, critical))| {
                    json!({ "at_ms": from_ms + i as i64 * HOUR_MS, "raised": raised, "critical": critical })
                })
                .collect();
            Json(json!({ "from_ms": from_ms, "hour_ms": HOUR_MS, "hours": hours })).into_response()
        }
        Err(response) => response,
    }
}
