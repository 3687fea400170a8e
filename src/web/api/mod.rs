//! The HTTP handlers, one file per resource: the page and its assets, health and metrics,
//! login, alarms and commands, live events, the journal, devices and history, commissioning,
//! the outputs and their manual control. Authentication (the `Caller` and `Require`
//! extractors) is the auth module's.
//!
//! Owns: request parsing, role checks and answers. Must not touch: alarm state (commands go to
//! the rules task through its handle), outputs (manual operations go to linkage through its
//! handle) or the store's writes beyond commissioning sign-offs.

mod alarms;
mod assets;
mod commissioning;
mod devices;
mod events;
mod health;
mod journal;
mod northbound;
mod outputs;
mod session;

pub use alarms::{alarms, command, deliveries};
pub use assets::{asset, index, openapi};
pub use commissioning::{commissioning_profile_test, commissioning_read, signoff};
pub use devices::{devices, history, profiles};
pub use events::{events, MAX_STREAMS, MAX_STREAMS_PER_SESSION};
pub use health::{healthz, metrics, readyz};
pub use journal::{alarms_hourly, fire_tally, journal};
pub use northbound::{duty_check_answer, northbound};
pub use outputs::{output_operate, output_release, outputs};
pub use session::{login, login_token, logout, session};

pub use super::error;

use super::auth::{Caller, LoginError, Require, Technician, TokenLoginError, CHECK_SLOT_WAIT};
use super::{session_cookie, session_id, Shared, OPENAPI};
use crate::config::{AlarmKind, Role, Severity};
use crate::live::DeviceLatest;
use crate::metrics::PrometheusText;
use crate::rules::alarm::{AlarmState, Command, CommandError, Operator};
use crate::rules::engine::{AlarmView, Target};
use crate::rules_task::{now_ms, HandleError};
use crate::store::history::HistoryPoint;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Longest comment or shelve reason accepted, in characters.
const MAX_TEXT: usize = 500;

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
