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
