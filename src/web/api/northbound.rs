//! The links to fire-monitoring centres (`[[northbound]]`): their state, and an operator's
//! answer to a centre's duty check (查岗).

use super::*;

/// Every link: connected, what waits for the centre's confirmation, a duty check waiting for
/// an answer. Any role.
pub async fn northbound(State(state): State<Shared>, _caller: Caller) -> Response {
    Json(state.northbound.status()).into_response()
}

/// An operator answers the duty check of link `name` (in the operator's name). 409 when no
/// duty check waits (none came, or its time ran out).
pub async fn duty_check_answer(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Response {
    if let Err(refused) = allowed(&caller, Role::Operator) {
        return refused;
    }
    let number = state
        .config
        .site
        .web
        .as_ref()
        .map_or(0, |w| w.operator_number(&caller.name));
    match state
        .northbound
        .answer_duty_check(&name, number, &caller.name)
        .await
    {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(message) if message.starts_with("no northbound link") => {
            error(StatusCode::NOT_FOUND, message)
        }
        Err(message) => error(StatusCode::CONFLICT, message),
    }
}
