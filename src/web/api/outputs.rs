//! The outputs linkage switches (gas valves, fans, sounders, strobes, power trips) with their
//! state, and their manual control by technicians: operate or release, with a reason and the
//! output's id typed again as the confirmation.

use super::*;
use crate::linkage::{LinkageError, OutputView};

/// Every output with its state: any role (operators must see whether the valve is closed).
pub async fn outputs(State(state): State<Shared>, _caller: Caller) -> Response {
    let list: Vec<OutputView> = state.linkage.outputs().await;
    Json(list).into_response()
}

/// A manual operation, as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperateRequest {
    /// Why (required): journaled with the technician's name.
    #[serde(default)]
    reason: Option<String>,
    /// The output's id again: the confirmation that this output is meant.
    #[serde(default)]
    confirm: Option<String>,
}

/// Operates an output by hand: closes the valve, starts the fan, sounds the sounder.
pub async fn output_operate(
    State(state): State<Shared>,
    Require(caller, _): Require<Technician>,
    Path(id): Path<String>,
    request: Result<Json<OperateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    manual(&state, caller, id, true, request).await
}

/// Releases an output by hand: reopens the valve, stops the fan. Refused while an alarm that
/// operated it is still present.
pub async fn output_release(
    State(state): State<Shared>,
    Require(caller, _): Require<Technician>,
    Path(id): Path<String>,
    request: Result<Json<OperateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    manual(&state, caller, id, false, request).await
}

/// What a request must carry before it reaches linkage: a reason of at most `MAX_TEXT`
/// characters and `confirm` naming the output.
fn check_request(id: &str, request: &OperateRequest) -> Result<String, String> {
    if request.confirm.as_deref().map(str::trim) != Some(id) {
        return Err(format!(
            "confirm the output: send `\"confirm\": \"{id}\"`, the id of the output to switch"
        ));
    }
    let reason = request.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Err("give a reason: it is journaled with your name".into());
    }
    if reason.chars().count() > MAX_TEXT {
        return Err(format!("reasons are at most {MAX_TEXT} characters"));
    }
    Ok(reason.to_string())
}

async fn manual(
    state: &Shared,
    caller: Caller,
    id: String,
    operate: bool,
    request: Result<Json<OperateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    // An unknown output is a 404 whatever the body says.
    if !state.config.site.outputs.iter().any(|o| o.id == id) {
        return error(StatusCode::NOT_FOUND, format!("no output `{id}`"));
    }
    let reason = match check_request(&id, &request) {
        Ok(reason) => reason,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let operator = Operator {
        name: caller.name.clone(),
        comment: Some(reason),
    };
    match state.linkage.operate(&id, operate, operator).await {
        Ok(()) => {
            tracing::info!(output = %id, operate, technician = %caller.name, "Output switched by hand.");
            (StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response()
        }
        Err(refused @ LinkageError::UnknownOutput(_)) => {
            error(StatusCode::NOT_FOUND, refused.to_string())
        }
        Err(refused @ LinkageError::ReasonRequired) => {
            error(StatusCode::BAD_REQUEST, refused.to_string())
        }
        Err(refused @ LinkageError::HolderActive(_)) => {
            error(StatusCode::CONFLICT, refused.to_string())
        }
        Err(LinkageError::Stopped) => error(StatusCode::SERVICE_UNAVAILABLE, "linkage has stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: Option<&str>, confirm: Option<&str>) -> OperateRequest {
        OperateRequest {
            reason: reason.map(str::to_string),
            confirm: confirm.map(str::to_string),
        }
    }

    #[test]
    fn the_output_must_be_named_and_a_reason_given() {
        assert!(check_request("valve-1", &request(Some("leak"), None)).is_err());
        assert!(check_request("valve-1", &request(Some("leak"), Some("valve-2"))).is_err());
        assert!(check_request("valve-1", &request(None, Some("valve-1"))).is_err());
        assert!(check_request("valve-1", &request(Some("  "), Some("valve-1"))).is_err());
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(check_request("valve-1", &request(Some(&long), Some("valve-1"))).is_err());
        assert_eq!(
            check_request("valve-1", &request(Some(" leak found "), Some("valve-1"))),
            Ok("leak found".to_string())
        );
    }
}
