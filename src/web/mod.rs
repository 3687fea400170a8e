//! The operators' web UI and HTTP API, served by the daemon itself: the live alarm board
//! (server-sent events), operator commands with roles, devices with status and last values,
//! recent history, the journal, the pushes' deliveries, commissioning, the outputs (linkage)
//! with their manual control, `/metrics`, `/healthz` and `/readyz`. The page and its assets
//! are embedded in the binary. Handlers are under `api`; logins and roles are `auth`'s,
//! connection limits `conn`'s, the live board `hub`'s. The `[[http_ingest]]` endpoints of the
//! carrier IoT platforms are `ingest`'s: served here, without logins.
//!
//! Owns: HTTP (axum, optional rustls), sessions and the route table. Must not touch: alarm state
//! (it sends commands to the rules task and reads snapshots), outputs (manual operations go to
//! the linkage task through its handle) or the outbox; the store only to
//! read (journal, history, deliveries, sign-offs) and to record commissioning sign-offs.

mod api;
pub mod auth;
pub mod conn;
pub mod hub;
pub mod ingest;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::{Config, WebConfig};
use crate::linkage::LinkageHandle;
use crate::live::LatestValues;
use crate::metrics::Metrics;
use crate::rules_task::RulesHandle;
use crate::store::Store;

use auth::SESSION_COOKIE;
pub use auth::{hash_password, random_token, token_sha256_hex, Auth, Caller};
pub use hub::{DeviceStatus, Hub};

/// The OpenAPI description of every route, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// How long a connection may take to send its request head (slow-loris bound).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take to be answered, its body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares.
pub struct WebState {
    pub config: Arc<Config>,
    pub auth: Auth,
    pub hub: Arc<Hub>,
    pub rules: RulesHandle,
    /// The outputs (valves, fans, sounders) and their manual control.
    pub linkage: LinkageHandle,
    pub northbound: crate::northbound::Northbound,
    pub metrics: Arc<Metrics>,
    pub latest: Arc<LatestValues>,
    /// A reading connection to the store (journal, history); used from blocking threads.
    pub store: Mutex<Store>,
    /// Set on HTTPS: session cookies are then `Secure`.
    pub tls: bool,
    /// Open event streams.
    pub streams: Arc<StreamCounts>,
    /// The `[[http_ingest]]` endpoints, routed by their configured paths.
    pub http_ingest: Vec<Arc<ingest::Endpoint>>,
}

/// A JSON error answer: `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Open event streams, in all and per login session (`api::MAX_STREAMS...`).
#[derive(Default)]
pub struct StreamCounts {
    open: Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// One open event stream; counted until dropped.
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    session: Option<String>,
}

impl StreamCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, std::collections::HashMap<String, usize>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a stream of `session` (none for API tokens), unless a cap is reached.
    pub fn open(self: &Arc<Self>, session: Option<&str>) -> Option<StreamSlot> {
        let mut open = self.lock();
        if open.0 >= api::MAX_STREAMS {
            return None;
        }
        if let Some(id) = session {
            let mine = open.1.entry(id.to_string()).or_default();
            if *mine >= api::MAX_STREAMS_PER_SESSION {
                return None;
            }
            *mine += 1;
        }
        open.0 += 1;
        Some(StreamSlot {
            counts: Arc::clone(self),
            session: session.map(str::to_string),
        })
    }

    pub fn total(&self) -> usize {
        self.lock().0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(id) = &self.session {
            if let Some(n) = open.1.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(id);
                }
            }
        }
    }
}

type Shared = Arc<WebState>;

/// Every route: method, path (axum syntax), handler. The OpenAPI file must describe exactly
/// these (a test checks it).
pub fn route_table() -> Vec<(Method, &'static str, MethodRouter<Shared>)> {
    vec![
        (Method::GET, "/", get(api::index)),
        (Method::GET, "/assets/:file", get(api::asset)),
        (Method::GET, "/healthz", get(api::healthz)),
        (Method::GET, "/readyz", get(api::readyz)),
        (Method::GET, "/metrics", get(api::metrics)),
        (Method::GET, "/api/openapi.json", get(api::openapi)),
        (Method::POST, "/api/login", post(api::login)),
        (Method::POST, "/api/login/token", post(api::login_token)),
        (Method::POST, "/api/logout", post(api::logout)),
        (Method::GET, "/api/session", get(api::session)),
        (Method::GET, "/api/alarms", get(api::alarms)),
        (Method::POST, "/api/commands", post(api::command)),
        (Method::GET, "/api/events", get(api::events)),
        (Method::GET, "/api/journal", get(api::journal)),
        (Method::GET, "/api/fire/tally", get(api::fire_tally)),
        (Method::GET, "/api/northbound", get(api::northbound)),
        (
            Method::POST,
            "/api/northbound/:name/duty-check",
            post(api::duty_check_answer),
        ),
        (Method::GET, "/api/alarms/deliveries", get(api::deliveries)),
        (Method::GET, "/api/alarms/hourly", get(api::alarms_hourly)),
        (Method::GET, "/api/devices", get(api::devices)),
        (Method::GET, "/api/profiles", get(api::profiles)),
        (Method::GET, "/api/history", get(api::history)),
        (Method::GET, "/api/outputs", get(api::outputs)),
        (
            Method::POST,
            "/api/outputs/:id/operate",
            post(api::output_operate),
        ),
        (
            Method::POST,
            "/api/outputs/:id/release",
            post(api::output_release),
        ),
        (
            Method::POST,
            "/api/commissioning/read",
            post(api::commissioning_read),
        ),
        (
            Method::POST,
            "/api/commissioning/profile-test",
            post(api::commissioning_profile_test),
        ),
        (Method::POST, "/api/devices/signoff", post(api::signoff)),
    ]
}

pub fn router(state: Shared) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in route_table() {
        router = router.route(path, handler);
    }
    // The platforms' push endpoints, at the paths the site file gives (validation keeps them
    // off the routes above). They take no login: the token or signature is checked instead.
    for endpoint in &state.http_ingest {
        let serve = |endpoint: &Arc<ingest::Endpoint>| {
            let endpoint = Arc::clone(endpoint);
            move |request: Request| ingest::handle(endpoint, request)
        };
        let mut methods = post(serve(endpoint));
        if endpoint.platform == crate::config::IngestPlatform::Onenet {
            // OneNET verifies the URL with a GET before it pushes.
            methods = methods.get(serve(endpoint));
        }
        router = router.route(&endpoint.path, methods);
    }
    router
        .fallback(api::not_found)
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(middleware::from_fn_with_state(state.tls, security_headers))
        .with_state(state)
}

/// Refuses state-changing requests a browser sends on behalf of another site: the
/// `Sec-Fetch-Site` header (set by every current browser) must not say `cross-site` or
/// `same-site`, and an `Origin`, when sent, must be this server. SameSite=Strict cookies and
/// the CSRF token are the other two layers.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let method = request.method();
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return next.run(request).await;
    }
    if let Some(reason) = cross_site(request.headers()) {
        return error(StatusCode::FORBIDDEN, reason);
    }
    next.run(request).await
}

fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return Some("cross-site request refused");
        }
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("\u{0}");
        if origin_host != host {
            return Some("request from another origin refused");
        }
    }
    None
}

async fn security_headers(
    axum::extract::State(tls): axum::extract::State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if tls {
        // Browsers that saw HTTPS here once never fall back to plain HTTP for a year.
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    for (name, value) in [
        // Everything the page needs is served from here; inline scripts are not allowed,
        // which is a second line of defence behind escaping device-supplied text.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A running web server.
pub struct WebServer {
    pub address: SocketAddr,
    pub task: JoinHandle<()>,
    pub hub_task: JoinHandle<()>,
}

/// Binds the listener (a startup error if the port is taken) and serves until `cancel`.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    config: Arc<Config>,
    web: &WebConfig,
    rules: RulesHandle,
    linkage: LinkageHandle,
    northbound: crate::northbound::Northbound,
    metrics: Arc<Metrics>,
    latest: Arc<LatestValues>,
    store: Store,
    ingest_link: Option<ingest::IngestLink>,
    cancel: CancellationToken,
) -> anyhow::Result<WebServer> {
    let http_ingest = match ingest_link {
        Some(link) => ingest::endpoints(&config, link, &metrics)?,
        None => Vec::new(),
    };
    let tls = match (&web.tls_cert, &web.tls_key) {
        (Some(cert), Some(key)) => Some(crate::secure::tls_acceptor(
            "web",
            &config.resolve_path(cert),
            &config.resolve_path(key),
            &[b"http/1.1"],
        )?),
        _ => None,
    };
    let listener = TcpListener::bind(&web.listen)
        .await
        .with_context(|| format!("web.listen: cannot listen on {}", web.listen))?;
    let address = listener.local_addr()?;
    let (hub, hub_task) = Hub::start(rules.clone(), Arc::clone(&latest), cancel.clone());
    let state = Arc::new(WebState {
        config,
        auth: Auth::new(web),
        hub,
        rules,
        linkage,
        northbound,
        metrics,
        latest,
        store: Mutex::new(store),
        tls: tls.is_some(),
        streams: Arc::new(StreamCounts::default()),
        http_ingest,
    });
    let app = router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cap = conn::connection_cap(web.max_connections, conn::raise_fd_limit());
    let gate = conn::ConnectionGate::new(cap, web.max_connections_per_address.max(1));
    info!(url = %format!("{scheme}://{address}/"), max_connections = cap, "Web UI listening.");
    let task = tokio::spawn(serve(listener, tls, app, gate, cancel));
    Ok(WebServer {
        address,
        task,
        hub_task,
    })
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    gate: Arc<conn::ConnectionGate>,
    cancel: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                warn!(error = %err, "Web: accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over a cap: closed at once, before TLS or HTTP cost anything.
        let Some(admitted) = gate.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            let activity = conn::Activity::new();
            let stream = conn::Watched::new(stream, std::sync::Arc::clone(&activity));
            let requests = std::sync::Arc::clone(&activity);
            let service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let answering = requests.request();
                    let app = app.clone();
                    async move {
                        // Bounds a handler, its body upload included (a body trickled a byte a
                        // minute); an event stream's response is ready at once and streams after.
                        let response = tokio::time::timeout(
                            REQUEST_TIMEOUT,
                            app.oneshot(request.map(Body::new)),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            Ok(error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the request took too long",
                            ))
                        });
                        drop(answering);
                        response
                    }
                });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let result = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        result = connection => result,
                        _ = activity.silent_too_long() => Ok(()),
                        _ = cancel.cancelled() => Ok(()),
                    }
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                debug!(%peer, error = %err, "Web: TLS handshake failed.");
                                return;
                            }
                            Err(_) => return,
                        };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        result = connection => result,
                        _ = activity.silent_too_long() => Ok(()),
                        _ = cancel.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(err) = result {
                debug!(%peer, error = %err, "Web: connection ended with an error.");
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    info!("Web UI stopped.");
}

/// Builds a `Set-Cookie` value for the session cookie.
fn session_cookie(value: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session id from the `Cookie` header.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(cross_site(&headers), None);
        headers.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        assert_eq!(cross_site(&headers), None);
        headers.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(cross_site(&headers).is_some());
        headers.remove("origin");
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&headers).is_some());
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; parkguard_session=abc; b=2"),
        );
        assert_eq!(session_id(&headers), Some("abc"));
    }
}
