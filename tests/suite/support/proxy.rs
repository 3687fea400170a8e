//! An HTTP proxy in front of a real InfluxDB that records every write request (when, which
//! measurements it carried, how many lines, the status returned) and can answer some requests
//! itself with any status and headers (`Retry-After`), to test what parkguard does with each
//! answer.

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When the request arrived.
    pub at: std::time::Instant,
    pub status: u16,
    /// The measurement of each line, in order.
    pub measurements: Vec<String>,
    pub body: String,
}

impl Recorded {
    pub fn has(&self, measurement: &str) -> bool {
        self.measurements.iter().any(|m| m == measurement)
    }
}

/// The proxy's own answer to a request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Decides an answer for a request body instead of the upstream.
pub type Override = Box<dyn Fn(&str) -> Option<Answer> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    requests: Arc<Mutex<Vec<Recorded>>>,
    answer: Arc<Mutex<Option<Override>>>,
}

pub struct InfluxProxy {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    answer: Arc<Mutex<Option<Override>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InfluxProxy {
    pub async fn start(upstream: &str) -> InfluxProxy {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            requests: Arc::default(),
            answer: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (requests, answer) = (Arc::clone(&shared.requests), Arc::clone(&shared.answer));
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        InfluxProxy {
            url,
            requests,
            answer,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("proxy state").clone()
    }

    pub fn answer_with(&self, answer: Option<Override>) {
        *self.answer.lock().expect("proxy state") = answer;
    }
}

impl Drop for InfluxProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let at = std::time::Instant::now();
    let gzipped = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let text = if gzipped {
        let mut out = String::new();
        let _ = flate2::read::MultiGzDecoder::new(&body[..]).read_to_string(&mut out);
        out
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let measurements = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split([',', ' ']).next().unwrap_or("").to_string())
        .collect();
    let overridden = shared
        .answer
        .lock()
        .expect("proxy state")
        .as_ref()
        .and_then(|f| f(&text));
    let mut answer_headers = HeaderMap::new();
    let (status, message) = match overridden {
        Some(answer) => {
            for (name, value) in &answer.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    answer_headers.insert(name, value);
                }
            }
            (answer.status, answer.body)
        }
        None => {
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut request = shared
                .client
                .post(format!("{}{path}", shared.upstream))
                .body(body.clone());
            for name in ["content-encoding", "authorization", "content-type"] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value.clone());
                }
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.text().await.unwrap_or_default())
                }
                Err(err) => (502, err.to_string()),
            }
        }
    };
    shared.requests.lock().expect("proxy state").push(Recorded {
        at,
        status,
        measurements,
        body: text,
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        answer_headers,
        message,
    )
}
