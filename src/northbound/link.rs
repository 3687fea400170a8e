//! One connection to a monitoring centre: sends the queue fires first, waits for the
//! centre's confirmation of each frame and sends it again after `answer_timeout_s` or a
//! denial, up to `attempts` sends; then the transmission has failed: gateway fault G12 is
//! raised at once and the connection is opened again (the frame stays first in the queue).
//! Answers the centre's clock sync and duty checks (an operator answers a duty check on the
//! web UI, within its timeout), and reports the gateway's run state as a heartbeat.
//!
//! Owns: the TCP connection and the link's status. Must not touch: alarms, which it only
//! forwards from the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::gb26875::frame::{command, tag_ms, time_tag, Decoder, Frame, FrameError};
use super::gb26875::mapping::Priority;
use super::gb26875::unit::{self, device_state, operation, parse_downlink, Downlink};
use super::queue::{self, Queued};
use crate::backoff::Backoff;
use crate::config::northbound::NorthboundConfig;
use crate::model::now_ms;
use crate::status::StatusReporter;
use crate::store::Store;

/// Frames of states and values on their way at once; fires are sent whatever this says.
const WINDOW: usize = 4;
/// Fires on their way at once.
const FIRE_WINDOW: usize = 16;
/// A frame that failed (no confirmation after every send) in this many connections in a row
/// is set aside, so that the rest of the queue moves; G12 stays raised while it is. Set-aside
/// frames are tried again at the next start.
const SET_ASIDE_AFTER: u32 = 3;

/// What the web UI shows of a link.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub centre: String,
    pub connected: bool,
    /// Units waiting for the centre's confirmation.
    pub queued: u64,
    pub oldest_queued_ms: Option<i64>,
    pub last_confirmed_ms: Option<i64>,
    /// Transmissions that failed (no confirmation after every attempt) and connections that
    /// could not be opened.
    pub failures: u64,
    pub last_error: Option<String>,
    /// A duty check (查岗) waiting for an operator's answer.
    pub duty_check: Option<DutyCheck>,
    pub duty_checks_answered: u64,
    pub duty_checks_missed: u64,
    /// Frames the centre refused in several connections in a row, set aside (G12 stays
    /// raised); they are tried again at the next start.
    pub set_aside: u64,
    /// The centre's clock minus the gateway's at the last clock sync, in milliseconds.
    pub clock_offset_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DutyCheck {
    pub asked_ms: i64,
    pub due_ms: i64,
}

pub enum LinkCommand {
    /// An operator answers the duty check (operator number, name).
    AnswerDutyCheck {
        operator: u8,
        name: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

pub struct Link {
    pub config: NorthboundConfig,
    pub store: Arc<Mutex<Store>>,
    pub wake: Arc<Notify>,
    pub status: Arc<Mutex<LinkStatus>>,
    pub gateway: StatusReporter,
    pub commands: mpsc::Receiver<LinkCommand>,
    pub cancel: CancellationToken,
    /// Rows whose transmission failed, with the connections in a row they failed in: G12
    /// clears only once none is left.
    pub failing: HashMap<i64, u32>,
}

/// A frame on its way: its row (none for a heartbeat), bytes, sends so far and when it is
/// due again.
struct InFlight {
    row: Option<i64>,
    fire: bool,
    bytes: Vec<u8>,
    sends: u32,
    due: Instant,
    what: String,
}

enum Sending {
    Row(Queued),
    /// The gateway's run state: not kept in the queue (the next one says the same).
    Heartbeat(Vec<u8>),
}

enum Ended {
    Cancelled,
    Failed(String),
}

impl Link {
    fn fault(&self) -> String {
        crate::status::northbound_failed(&self.config.name)
    }

    fn update(&self, f: impl FnOnce(&mut LinkStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let store = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&store).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn refresh_depth(&self) {
        let name = self.config.name.clone();
        if let Ok((queued, oldest)) = self.db(move |s| queue::depth(s.connection(), &name)).await {
            self.update(|st| {
                st.queued = queued;
                st.oldest_queued_ms = oldest;
            });
        }
    }

    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let timeout = Duration::from_secs_f64(self.config.answer_timeout_s);
        let name = self.config.name.clone();
        if let Err(err) = self
            .db(move |s| queue::restore_set_aside(s.connection(), &name))
            .await
        {
            warn!(link = %self.config.name, error = %err, "Set-aside frames not restored.");
        }
        loop {
            self.refresh_depth().await;
            let centre = self.config.centre.clone();
            let connect = tokio::time::timeout(timeout, TcpStream::connect(centre));
            let Some(stream) = self.meanwhile(connect).await else {
                return;
            };
            let confirmed_before = self.status().last_confirmed_ms;
            let why = match stream {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    info!(link = %self.config.name, centre = %self.config.centre, "Connected to the monitoring centre.");
                    self.update(|s| s.connected = true);
                    let ended = self.session(stream).await;
                    self.update(|s| s.connected = false);
                    match ended {
                        Ended::Cancelled => return,
                        Ended::Failed(why) => why,
                    }
                }
                Ok(Err(err)) => format!("cannot connect to {}: {err}", self.config.centre),
                Err(_) => format!("no connection to {} within {timeout:?}", self.config.centre),
            };
            // Only a centre that confirms is a centre that works: one that takes connections
            // and refuses every frame must not be reconnected to at once, forever.
            if self.status().last_confirmed_ms != confirmed_before {
                backoff.reset();
            }
            // The channel to the centre is down: nothing forwarded can reach it.
            self.gateway.set(&self.fault(), true);
            self.update(|s| {
                s.failures += 1;
                s.last_error = Some(why.clone());
            });
            warn!(link = %self.config.name, error = %why, "Monitoring centre link failed; reconnecting.");
            if self
                .meanwhile(tokio::time::sleep(backoff.next_delay()))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    fn status(&self) -> LinkStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for `work` while answering operators (a duty check can be answered while the
    /// link is down: the answer is queued) and expiring duty checks; `None` when cancelled.
    async fn meanwhile<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            self.expire_duty_check();
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                done = &mut work => return Some(done),
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn frame(&self, serial: u16, command: u8, unit: Vec<u8>) -> Frame {
        Frame {
            serial,
            user_version: self.config.user_version,
            time: time_tag(now_ms(), self.config.utc_offset_minutes),
            source: self.config.device_address,
            destination: self.config.centre_address,
            command,
            unit,
        }
    }

    async fn session(&mut self, mut stream: TcpStream) -> Ended {
        let timeout = Duration::from_secs_f64(self.config.answer_timeout_s);
        let mut decoder = Decoder::default();
        let mut in_flight: HashMap<u16, InFlight> = HashMap::new();
        let mut buf = vec![0u8; 4096];
        let heartbeat =
            (self.config.heartbeat_s > 0).then(|| Duration::from_secs(self.config.heartbeat_s));
        let mut next_heartbeat = heartbeat.map(|_| Instant::now());
        let mut refill = true;
        loop {
            if refill {
                refill = false;
                if let Err(why) = self.send_queued(&mut stream, &mut in_flight, timeout).await {
                    return Ended::Failed(why);
                }
            }
            if let (Some(every), Some(at)) = (heartbeat, next_heartbeat) {
                if Instant::now() >= at {
                    next_heartbeat = Some(Instant::now() + every);
                    let unit = unit::device_state(
                        device_state::NORMAL,
                        time_tag(now_ms(), self.config.utc_offset_minutes),
                    );
                    let sent = self
                        .send_new(
                            &mut stream,
                            &mut in_flight,
                            Sending::Heartbeat(unit),
                            timeout,
                        )
                        .await;
                    if let Err(why) = sent {
                        return Ended::Failed(why);
                    }
                }
            }
            self.expire_duty_check();
            let soon = Instant::now() + Duration::from_secs(1);
            let next_due = in_flight
                .values()
                .map(|f| f.due)
                .chain(next_heartbeat)
                .fold(soon, Instant::min);
            tokio::select! {
                _ = self.cancel.cancelled() => return Ended::Cancelled,
                _ = self.wake.notified() => refill = true,
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                read = stream.read(&mut buf) => match read {
                    Ok(0) => return Ended::Failed("the centre closed the connection".into()),
                    Ok(n) => {
                        decoder.push(&buf[..n]);
                        while let Some(next) = decoder.next_frame() {
                            match self.received(&mut stream, &mut in_flight, next).await {
                                Ok(freed) => refill |= freed,
                                Err(why) => return Ended::Failed(why),
                            }
                        }
                    }
                    Err(err) => return Ended::Failed(format!("read: {err}")),
                },
                _ = tokio::time::sleep_until(next_due) => {
                    if let Err(why) = self.resend_due(&mut stream, &mut in_flight, timeout).await {
                        return Ended::Failed(why);
                    }
                    // Rows queued while the wake was missed (and the periodic depth).
                    refill = true;
                }
            }
        }
    }

    async fn write(&self, stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
        let timeout = Duration::from_secs_f64(self.config.answer_timeout_s);
        match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("write: {err}")),
            Err(_) => Err("the centre does not take what is sent".into()),
        }
    }

    /// Sends queued rows in order while the window has room; a fire always has room.
    async fn send_queued(
        &self,
        stream: &mut TcpStream,
        in_flight: &mut HashMap<u16, InFlight>,
        timeout: Duration,
    ) -> Result<(), String> {
        let skip: Vec<i64> = in_flight.values().filter_map(|f| f.row).collect();
        let name = self.config.name.clone();
        let rows: Vec<Queued> = self
            .db(move |s| queue::head(s.connection(), &name, FIRE_WINDOW, &skip))
            .await?;
        for row in rows {
            let fires = in_flight.values().filter(|f| f.fire).count();
            let room = if row.is_fire() {
                fires < FIRE_WINDOW
            } else {
                in_flight.len() - fires < WINDOW
            };
            if !room {
                // Rows are in send order: nothing behind a state without room is a fire.
                if !row.is_fire() {
                    break;
                }
                continue;
            }
            self.send_new(stream, in_flight, Sending::Row(row), timeout)
                .await?;
        }
        self.refresh_depth().await;
        Ok(())
    }

    /// Sends a queued row (with its serial when it was sent before, else with the link's
    /// next one, kept with the row) or a heartbeat.
    async fn send_new(
        &self,
        stream: &mut TcpStream,
        in_flight: &mut HashMap<u16, InFlight>,
        item: Sending,
        timeout: Duration,
    ) -> Result<(), String> {
        let (row, fire, known, unit, what) = match item {
            Sending::Row(q) => (Some(q.id), q.is_fire(), q.serial, q.unit, q.what),
            Sending::Heartbeat(unit) => (None, false, None, unit, "run state".to_string()),
        };
        let serial = match known {
            Some(serial) => serial,
            None => {
                let name = self.config.name.clone();
                self.db(move |s| {
                    let serial = queue::next_serial(s.connection(), &name)?;
                    if let Some(id) = row {
                        queue::set_serial(s.connection(), id, serial)?;
                    }
                    Ok(serial)
                })
                .await?
            }
        };
        let bytes = self.frame(serial, command::SEND_DATA, unit).encode();
        self.write(stream, &bytes).await?;
        in_flight.insert(
            serial,
            InFlight {
                row,
                fire,
                bytes,
                sends: 1,
                due: Instant::now() + timeout,
                what,
            },
        );
        Ok(())
    }

    /// Frames whose confirmation did not come in time are sent again, the same serial and
    /// data; one sent `attempts` times has failed.
    async fn resend_due(
        &mut self,
        stream: &mut TcpStream,
        in_flight: &mut HashMap<u16, InFlight>,
        timeout: Duration,
    ) -> Result<(), String> {
        let now = Instant::now();
        let due: Vec<u16> = in_flight
            .iter()
            .filter(|(_, f)| f.due <= now)
            .map(|(s, _)| *s)
            .collect();
        for serial in due {
            self.resend(stream, in_flight, serial, timeout, "no confirmation")
                .await?;
        }
        Ok(())
    }

    async fn resend(
        &mut self,
        stream: &mut TcpStream,
        in_flight: &mut HashMap<u16, InFlight>,
        serial: u16,
        timeout: Duration,
        why: &str,
    ) -> Result<(), String> {
        let Some(f) = in_flight.get(&serial) else {
            return Ok(());
        };
        // A state word replaced by a newer one must not come after it.
        if let Some(id) = f.row {
            if !self.db(move |s| queue::exists(s.connection(), id)).await? {
                in_flight.remove(&serial);
                return Ok(());
            }
        }
        let Some(f) = in_flight.get_mut(&serial) else {
            return Ok(());
        };
        if f.sends >= self.config.attempts {
            let failed = format!(
                "{} (serial {serial}) not confirmed after {} sends: {why}",
                f.what, f.sends
            );
            if let Some(id) = f.row {
                let sessions = self.failing.entry(id).or_insert(0);
                *sessions += 1;
                if *sessions >= SET_ASIDE_AFTER {
                    error!(link = %self.config.name, what = %f.what, "The centre refused a frame in {SET_ASIDE_AFTER} connections in a row; set aside until the next start.");
                    self.db(move |s| queue::set_aside(s.connection(), id))
                        .await?;
                    self.update(|s| s.set_aside += 1);
                }
            }
            return Err(failed);
        }
        // The frame's own time tag stays: it is the same frame sent again.
        let bytes = f.bytes.clone();
        f.sends += 1;
        f.due = Instant::now() + timeout;
        warn!(link = %self.config.name, serial, what = %f.what, sends = f.sends, reason = why, "Sending again.");
        self.write(stream, &bytes).await
    }

    /// Handles one frame from the centre; `Ok(true)` when a confirmation freed room.
    async fn received(
        &mut self,
        stream: &mut TcpStream,
        in_flight: &mut HashMap<u16, InFlight>,
        frame: Result<Frame, FrameError>,
    ) -> Result<bool, String> {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                warn!(link = %self.config.name, error = %err, "Bad frame from the centre.");
                if let Some(serial) = err.serial() {
                    let deny = self.frame(serial, command::DENY, Vec::new());
                    self.write(stream, &deny.encode()).await?;
                }
                return Ok(false);
            }
        };
        let timeout = Duration::from_secs_f64(self.config.answer_timeout_s);
        match frame.command {
            command::CONFIRM => {
                let Some(f) = in_flight.remove(&frame.serial) else {
                    return Ok(false);
                };
                if let Some(id) = f.row {
                    self.db(move |s| queue::remove(s.connection(), id)).await?;
                    self.failing.remove(&id);
                }
                self.update(|s| s.last_confirmed_ms = Some(now_ms()));
                // A frame that failed, or one set aside, keeps the fault up until it is through.
                if self.failing.is_empty() && self.status().set_aside == 0 {
                    self.gateway.set(&self.fault(), false);
                }
                Ok(true)
            }
            command::DENY => {
                self.resend(
                    stream,
                    in_flight,
                    frame.serial,
                    timeout,
                    "denied by the centre",
                )
                .await?;
                Ok(false)
            }
            command::CONTROL => {
                let answer = match parse_downlink(&frame.unit) {
                    Ok(Downlink::ClockSync(tag)) => {
                        let offset = tag_ms(&tag, self.config.utc_offset_minutes)
                            .map(|centre| centre - now_ms());
                        // The gateway's clock is the system's (NTP): the offset is shown and
                        // logged, not applied.
                        info!(link = %self.config.name, offset_ms = ?offset, "Clock sync from the centre.");
                        self.update(|s| s.clock_offset_ms = offset);
                        command::CONFIRM
                    }
                    Ok(Downlink::DutyCheck { timeout_minutes }) => {
                        let asked = now_ms();
                        let due = asked + i64::from(timeout_minutes.max(1)) * 60_000;
                        info!(link = %self.config.name, timeout_minutes, "Duty check from the centre: an operator must answer.");
                        self.update(|s| {
                            s.duty_check = Some(DutyCheck {
                                asked_ms: asked,
                                due_ms: due,
                            })
                        });
                        command::CONFIRM
                    }
                    Ok(Downlink::Unsupported { flag }) => {
                        warn!(link = %self.config.name, flag, "Control command not supported; denied.");
                        command::DENY
                    }
                    Err(err) => {
                        warn!(link = %self.config.name, error = %err, "Bad control command; denied.");
                        command::DENY
                    }
                };
                let reply =
                    frame.answer(answer, time_tag(now_ms(), self.config.utc_offset_minutes));
                self.write(stream, &reply.encode()).await?;
                Ok(false)
            }
            command::REQUEST => {
                // Reads of the facilities are not offered: the centre is told of every change.
                let reply = frame.answer(
                    command::DENY,
                    time_tag(now_ms(), self.config.utc_offset_minutes),
                );
                self.write(stream, &reply.encode()).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn expire_duty_check(&self) {
        let now = now_ms();
        let mut missed = false;
        self.update(|s| {
            if s.duty_check.as_ref().is_some_and(|d| d.due_ms < now) {
                s.duty_check = None;
                s.duty_checks_missed += 1;
                missed = true;
            }
        });
        if missed {
            warn!(link = %self.config.name, "Duty check from the centre not answered in time.");
        }
    }

    async fn command(&self, cmd: LinkCommand) {
        match cmd {
            LinkCommand::AnswerDutyCheck {
                operator,
                name,
                reply,
            } => {
                self.expire_duty_check();
                let pending = self
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .duty_check
                    .clone();
                let result = match pending {
                    None => Err("no duty check is waiting for an answer".to_string()),
                    Some(_) => {
                        let at = now_ms();
                        let unit = unit::device_operation(
                            operation::DUTY_ANSWER,
                            operator,
                            time_tag(at, self.config.utc_offset_minutes),
                        );
                        let item = super::gb26875::mapping::Outgoing {
                            priority: Priority::Answer,
                            unit,
                            what: format!("duty check answered by {name}"),
                            supersedes: None,
                        };
                        let link = self.config.name.clone();
                        let queued = self
                            .db(move |s| queue::enqueue(s.connection(), &link, &[item], at))
                            .await;
                        match queued {
                            Ok(_) => {
                                info!(link = %self.config.name, operator = %name, "Duty check answered.");
                                self.update(|s| {
                                    s.duty_check = None;
                                    s.duty_checks_answered += 1;
                                });
                                self.wake.notify_one();
                                Ok(())
                            }
                            Err(err) => Err(err),
                        }
                    }
                };
                let _ = reply.send(result);
            }
        }
    }
}
