//! Logging in and out, and who the caller is.

use super::*;

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
        Ok(Err(LoginError::Limited(wait))) => too_many_failed_logins(wait),
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

#[derive(Deserialize)]
pub struct TokenLoginRequest {
    token: String,
}

/// A browser session for a viewer API token, sent in the body (never in a URL): the wall
/// display's kiosk login. Same cookie and answer as `login`.
pub async fn login_token(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Result<Json<TokenLoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.token.len() > 200 {
        return error(StatusCode::BAD_REQUEST, "token too long");
    }
    match state.auth.token_login(peer.ip(), request.token.trim()) {
        Ok((session, caller)) => {
            tracing::info!(token = %caller.name, %peer, "Web login with a viewer token.");
            let cookie = session_cookie(&session, state.auth.idle().as_secs(), state.tls);
            let mut response = Json(&caller).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(TokenLoginError::Refused) => {
            tracing::warn!(%peer, "Web token login refused: unknown token.");
            error(StatusCode::UNAUTHORIZED, "unknown API token")
        }
        Err(TokenLoginError::NotViewer(role)) => error(
            StatusCode::FORBIDDEN,
            format!(
                "this token is a {}'s; only a viewer token opens a browser session",
                role.as_str()
            ),
        ),
        Err(TokenLoginError::Limited(wait)) => too_many_failed_logins(wait),
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

/// 429 with `Retry-After` for a name or address whose failed logins (by password or by
/// token) are being delayed.
fn too_many_failed_logins(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins; try again in {seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
