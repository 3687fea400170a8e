//! A push receiver for tests: a real HTTP server (axum) on a free port that records every
//! request as it came (path, raw query, headers, body bytes) and answers as the robots do
//! (`errcode 0` for WeCom and DingTalk paths, `code 0` for Feishu, `ok` otherwise).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub path: String,
    /// The query exactly as sent, not decoded.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Pushed {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The request as a JSON object for `tests/interop/push_verify.py`: headers lower-case,
    /// the body base64 (so that the verifier sees the exact bytes).
    pub fn for_python(&self) -> Value {
        use base64::Engine;
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    json!(v.to_str().unwrap_or_default()),
                )
            })
            .collect();
        json!({
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body_b64": base64::engine::general_purpose::STANDARD.encode(&self.body),
        })
    }

    /// The notices' (event, alarm key) pairs of a webhook document.
    pub fn events(&self) -> Vec<(String, String)> {
        self.json()["notices"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| {
                (
                    n["event"].as_str().unwrap_or_default().to_string(),
                    n["alarm"]["key"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

#[derive(Clone, Default)]
pub struct PushInbox(Arc<Mutex<Vec<Pushed>>>);

impl PushInbox {
    pub fn all(&self) -> Vec<Pushed> {
        self.0.lock().expect("inbox").clone()
    }
    pub fn at(&self, path: &str) -> Vec<Pushed> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn take(
    State(inbox): State<PushInbox>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_string();
    inbox.0.lock().expect("inbox").push(Pushed {
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    });
    match path.as_str() {
        "/wecom" | "/dingtalk" => axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        "/feishu" => axum::Json(json!({"code": 0, "msg": "success", "data": {}})).into_response(),
        _ => "ok".into_response(),
    }
}

/// Starts a receiver on a free port; returns its base URL, its inbox and the sender whose
/// drop stops it.
pub async fn start() -> (String, PushInbox, tokio::sync::oneshot::Sender<()>) {
    let inbox = PushInbox::default();
    let app = axum::Router::new().fallback(take).with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind the receiver");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (base, inbox, stop)
}
