//! The running daemon's control socket: a Unix socket next to the store
//! (`<store>.sock`, mode 0660) on which `parkguard status` and `parkguard reload` ask the
//! daemon for its condition or to re-read its site file. One JSON line in, one JSON line out.
//!
//! Owns: the socket and its protocol, typed on both ends: a `Request`, and an `Answer` that is a
//! `GatewayStatus`, a reload's outcome or a refusal. Must not touch: any pipeline stage (the
//! daemon's run loop fills the answers in).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
}

/// The daemon's answer. On the wire every answer has `ok`; a refusal has `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<GatewayStatus>),
    Reloaded(Reloaded),
    Refused(Refused),
}

impl Answer {
    /// A refusal with these reasons.
    pub fn refused(errors: Vec<String>) -> Answer {
        Answer::Refused(Refused { ok: false, errors })
    }
}

/// The daemon's condition, as `parkguard status` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Always true.
    pub ok: bool,
    pub version: String,
    pub gateway: String,
    /// The site file.
    pub site: String,
    pub uptime_s: u64,
    /// Reloads since the daemon started.
    pub reloads: u64,
    pub mqtt: Vec<MqttStatus>,
    pub modbus: Vec<ModbusStatus>,
    pub devices: DevicesStatus,
    pub outbox: OutboxStatus,
    pub alerts: AlertsStatus,
    pub alarms: AlarmsStatus,
    pub readings_decoded: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqttStatus {
    pub name: String,
    /// `host:port`.
    pub broker: String,
    pub connected: bool,
    pub connects: u64,
    pub connection_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModbusStatus {
    pub name: String,
    pub address: String,
    pub units: usize,
    pub units_offline: u64,
    pub polls_ok: u64,
    pub polls_failed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicesStatus {
    pub configured: usize,
    /// Devices with an active comm-loss or silence alarm.
    pub offline: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxStatus {
    pub bytes: i64,
    pub sinks: Vec<SinkStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    pub points_waiting: u64,
    /// Age of the oldest waiting batch; 0 when nothing waits.
    pub oldest_waiting_s: i64,
    pub points_written: u64,
    pub write_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsStatus {
    pub routes: usize,
    pub pending: u64,
    pub delivered: u64,
    pub given_up: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmsStatus {
    pub active: usize,
    pub unacknowledged: usize,
    /// Active alarms by severity (`none` for alarms without a level).
    pub by_severity: std::collections::BTreeMap<String, u64>,
    /// Keys of the critical alarms nobody has acknowledged.
    pub unacknowledged_critical: Vec<String>,
}

/// A reload that took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Always true.
    pub ok: bool,
    pub reloads: u64,
    pub loaded: ReloadSummary,
}

/// What the reloaded site holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub devices: usize,
    pub rules: usize,
    pub routes: usize,
    pub users: usize,
}

/// A request refused, and why (an invalid site file: one line per problem).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// Always false.
    pub ok: bool,
    pub errors: Vec<String>,
}

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Answer>);

/// The control socket of the daemon whose store is `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// Longest request line read.
const MAX_REQUEST: u64 = 4096;
/// A client has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A reload stops and starts every stage; status answers at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves the socket until `cancel`, handing each request to `calls`.
pub async fn serve(
    path: PathBuf,
    calls: mpsc::Sender<Call>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    // A socket file left by a daemon that did not stop cleanly; a live daemon would answer.
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another parkguard answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "Control socket accept failed.");
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, calls).await {
                debug!(error = %err, "Control request failed.");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn answer(stream: UnixStream, calls: mpsc::Sender<Call>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await??;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            calls
                .send((request, tx))
                .await
                .map_err(|_| anyhow::anyhow!("the daemon is stopping"))?;
            tokio::time::timeout(ANSWER_TIMEOUT, rx).await??
        }
        Err(err) => Answer::refused(vec![format!("bad request: {err}")]),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await?;
    Ok(())
}

/// Asks the daemon on `path`; its answer.
pub async fn call(path: &Path, request: Request) -> anyhow::Result<Answer> {
    let stream = tokio::time::timeout(READ_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer", path.display()))?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the daemon on {}: {e} (is it running, and may this user use the socket?)",
                path.display()
            )
        })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(&request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    tokio::time::timeout(ANSWER_TIMEOUT, BufReader::new(read).read_line(&mut line))
        .await
        .map_err(|_| anyhow::anyhow!("the daemon did not answer within {ANSWER_TIMEOUT:?}"))??;
    Ok(serde_json::from_str(line.trim())?)
}
