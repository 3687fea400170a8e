//! One task per Modbus connection: polls each unit's read plan at its poll classes' cadence,
//! one request at a time, and sends the decoded readings downstream.
//!
//! tokio-modbus has neither request timeouts nor reconnects (tokio-modbus#113, #309), so every
//! connect and request here is wrapped in a timeout, and a transport error or timeout drops the
//! connection (a late answer would otherwise be read as the answer to the next request) and
//! reconnects after a jittered backoff. A Modbus exception is the device speaking: it counts
//! against that unit, not against the connection.
//!
//! A unit that fails `offline_after_failures` polls in a row is offline: its quantities are
//! sent once with quality `comm_error` and it is then tried only every `offline_retry_s`, so a
//! dead unit costs its neighbours on the bus one timeout per retry, not one per cycle. Ticks
//! missed while the bus was busy are skipped and counted, never bunched.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::lookup_host;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::prelude::{Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use tokio_serial::{ClearBuffer, DataBits, FlowControl, SerialPort, SerialStream, StopBits};

use crate::backoff::Backoff;
use crate::config::devices::DeviceDirectory;
use crate::config::{Config, ModbusConfig, ModbusLink, ModbusTransport, Parity, SerialConfig};
use crate::decode::registers::{Area, RegisterDecoder};
use crate::ingest::read_plan::{plan, PlanOptions, ReadRequest};
use crate::ingest::Ingested;
use crate::linkage::port::{PortError, PortOp, PortRequest};
use crate::metrics::{Metrics, ModbusMetrics};
use crate::model::{now_ns, Quality, Reading, Tags, Value};
use link::read_area;
pub use link::{
    connect, open_serial, profile_test, read_once, write, LinkError, ProfileTest, RequestError,
    Write,
};

mod link;

struct Schedule {
    interval: Duration,
    requests: Vec<ReadRequest>,
    next_due: Instant,
}

struct Unit {
    device: String,
    unit_id: u8,
    tags: Arc<Tags>,
    measurement: Arc<str>,
    decoders: Vec<RegisterDecoder>,
    schedules: Vec<Schedule>,
    request_pause: Duration,
    failures: u32,
    offline: bool,
}

pub struct ModbusPoller {
    config: ModbusConfig,
    /// Quiet kept between any two requests on this connection.
    bus_gap: Duration,
    units: Vec<Unit>,
    metrics: Arc<ModbusMetrics>,
    /// Linkage's reads and writes (valves, fans, device resets), served between polls and
    /// ahead of them: one bus, one master.
    port: Option<mpsc::Receiver<PortRequest>>,
}

enum PollError {
    /// The device answered with a Modbus exception.
    Exception(String),
    /// No usable answer: the connection is dropped.
    Transport(String),
}

/// The next linkage request, or never when there is no port.
async fn next_request(port: &mut Option<mpsc::Receiver<PortRequest>>) -> Option<PortRequest> {
    match port {
        Some(port) => port.recv().await,
        None => std::future::pending().await,
    }
}

impl ModbusPoller {
    pub fn new(
        config: &Config,
        index: usize,
        devices: &DeviceDirectory,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let modbus = config.site.modbus[index].clone();
        let now = Instant::now();
        let mut units = Vec::new();
        for u in &modbus.units {
            let tags = devices
                .get(&u.device)
                .ok_or_else(|| anyhow::anyhow!("device `{}` is not declared", u.device))?
                .clone();
            let profile = config.profile(&tags.profile)?;
            let map = profile
                .modbus
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("profile `{}` has no [modbus] map", tags.profile))?;
            let decoders: Vec<RegisterDecoder> = map
                .registers
                .iter()
                .map(|r| RegisterDecoder::new(r, map.address_base))
                .collect();
            let schedules = map
                .poll_classes
                .iter()
                .map(|(class, ms)| Schedule {
                    interval: Duration::from_millis(*ms),
                    requests: plan(&decoders, class, PlanOptions::from(map)),
                    next_due: now,
                })
                .filter(|s| !s.requests.is_empty())
                .collect();
            units.push(Unit {
                device: u.device.clone(),
                unit_id: u.unit_id,
                tags: Arc::new(tags),
                measurement: Arc::from(profile.measurement()),
                decoders,
                schedules,
                request_pause: Duration::from_millis(map.request_pause_ms),
                failures: 0,
                offline: false,
            });
        }
        let frame_gap = match modbus.transport {
            ModbusTransport::Rtu => modbus.serial.unwrap_or_default().frame_gap(),
            ModbusTransport::Tcp | ModbusTransport::RtuOverTcp => Duration::ZERO,
        };
        Ok(ModbusPoller {
            bus_gap: frame_gap + Duration::from_millis(modbus.request_pause_ms),
            metrics: metrics.modbus(&modbus.name),
            config: modbus,
            units,
            port: None,
        })
    }

    /// Serves linkage's requests on this connection too.
    pub fn with_port(mut self, port: mpsc::Receiver<PortRequest>) -> Self {
        self.port = Some(port);
        self
    }

    /// Connects unless connected or backing off; true when connected.
    async fn ensure_connected(
        &self,
        context: &mut Option<Context>,
        backoff: &mut Backoff,
        reconnect_not_before: &mut Instant,
        limit: Duration,
    ) -> bool {
        if context.is_none() && Instant::now() >= *reconnect_not_before {
            match self.connect(limit).await {
                Ok(ctx) => {
                    self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                    if backoff.attempts() > 0 {
                        info!(connection = %self.config.name, attempts = backoff.attempts(), "Modbus connection recovered.");
                    }
                    backoff.reset();
                    *context = Some(ctx);
                }
                Err(err) => {
                    if backoff.attempts() == 0 {
                        warn!(connection = %self.config.name, address = %self.config.address, error = %err, "Modbus connection failed; retrying with backoff.");
                    }
                    *reconnect_not_before = Instant::now() + backoff.next_delay();
                }
            }
        }
        context.is_some()
    }

    /// One of linkage's requests, on the polling connection.
    async fn serve(
        &self,
        request: PortRequest,
        context: &mut Option<Context>,
        limit: Duration,
        quiet_until: &mut Instant,
    ) {
        let Some(ctx) = context.as_mut() else {
            let _ = request.reply.send(Err(PortError::Transport(format!(
                "not connected to {}",
                self.config.address
            ))));
            return;
        };
        ctx.set_slave(Slave(request.unit_id));
        sleep_until(*quiet_until).await;
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let answer = timeout(limit, async {
            match request.op {
                PortOp::Write {
                    area: Area::Coil,
                    address,
                    value,
                } => ctx
                    .write_single_coil(address, value != 0)
                    .await
                    .map(|r| r.map(|()| value)),
                PortOp::Write { address, value, .. } => ctx
                    .write_single_register(address, value)
                    .await
                    .map(|r| r.map(|()| value)),
                PortOp::Read { area, address } => read_area(ctx, area, address, 1)
                    .await
                    .map(|r| r.map(|words| words.first().copied().unwrap_or(0))),
            }
        })
        .await;
        *quiet_until = Instant::now() + self.bus_gap;
        let result = match answer {
            Err(_) => {
                *context = None;
                Err(PortError::NoAnswer(limit.as_millis() as u64))
            }
            Ok(Err(err)) => {
                *context = None;
                Err(PortError::Transport(err.to_string()))
            }
            Ok(Ok(Err(exception))) => Err(PortError::Exception(format!("{exception:?}"))),
            Ok(Ok(Ok(word))) => Ok(word),
        };
        let _ = request.reply.send(result);
    }

    pub async fn run(mut self, output: mpsc::Sender<Ingested>, cancel: CancellationToken) {
        let request_timeout = Duration::from_millis(self.config.timeout_ms);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut context: Option<Context> = None;
        let mut reconnect_not_before = Instant::now();
        let mut quiet_until = Instant::now();
        let mut port = self.port.take();
        loop {
            let next = self.earliest_due();
            let due = next.map_or_else(|| Instant::now() + Duration::from_secs(3600), |n| n.2);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                request = next_request(&mut port) => {
                    match request {
                        Some(request) => {
                            // A linkage request gets its own connection attempt at once: a
                            // valve must not wait for the poll backoff to run out.
                            reconnect_not_before = reconnect_not_before.min(Instant::now());
                            self.ensure_connected(&mut context, &mut backoff, &mut reconnect_not_before, request_timeout).await;
                            self.serve(request, &mut context, request_timeout, &mut quiet_until).await;
                        }
                        None => port = None,
                    }
                    continue;
                }
                _ = sleep_until(due) => {}
            }
            let Some((u, s, _)) = next else {
                continue;
            };
            self.ensure_connected(
                &mut context,
                &mut backoff,
                &mut reconnect_not_before,
                request_timeout,
            )
            .await;
            let started = Instant::now();
            let result = match context.as_mut() {
                Some(ctx) => {
                    self.poll(ctx, u, s, request_timeout, &mut quiet_until)
                        .await
                }
                None => Err(PollError::Transport("not connected".into())),
            };
            self.metrics
                .poll_micros_total
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            let readings = match result {
                Ok(readings) => {
                    self.metrics.polls_ok.fetch_add(1, Ordering::Relaxed);
                    self.unit_answered(u);
                    readings
                }
                Err(err) => {
                    self.metrics.polls_failed.fetch_add(1, Ordering::Relaxed);
                    let detail = match err {
                        PollError::Exception(e) => e,
                        PollError::Transport(e) => {
                            // Reconnect at the next poll without waiting: one silent unit
                            // behind a serial server must not cost its neighbours a backoff.
                            // Only failed connects back off.
                            context = None;
                            e
                        }
                    };
                    self.unit_failed(u, &detail)
                }
            };
            self.reschedule(u, s);
            if !readings.is_empty()
                && output
                    .send(Ingested::readings(readings.into()))
                    .await
                    .is_err()
            {
                break;
            }
        }
        if let Some(mut ctx) = context {
            let _ = timeout(request_timeout, ctx.disconnect()).await;
        }
        info!(connection = %self.config.name, "Modbus polling stopped.");
    }

    fn earliest_due(&self) -> Option<(usize, usize, Instant)> {
        let mut best: Option<(usize, usize, Instant)> = None;
        for (u, unit) in self.units.iter().enumerate() {
            for (s, schedule) in unit.schedules.iter().enumerate() {
                if best.is_none_or(|(_, _, t)| schedule.next_due < t) {
                    best = Some((u, s, schedule.next_due));
                }
            }
        }
        best
    }

    async fn connect(&self, limit: Duration) -> Result<Context, LinkError> {
        connect(&self.config.link(), limit).await
    }

    async fn poll(
        &self,
        ctx: &mut Context,
        u: usize,
        s: usize,
        limit: Duration,
        quiet_until: &mut Instant,
    ) -> Result<Vec<Reading>, PollError> {
        let unit = &self.units[u];
        ctx.set_slave(Slave(unit.unit_id));
        let timestamp_ns = now_ns();
        let mut readings = Vec::new();
        for (i, request) in unit.schedules[s].requests.iter().enumerate() {
            if i > 0 && !unit.request_pause.is_zero() {
                tokio::time::sleep(unit.request_pause).await;
            }
            sleep_until(*quiet_until).await;
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let (start, count) = (request.start, request.count);
            let answer = timeout(limit, read_area(ctx, request.area, start, count)).await;
            *quiet_until = Instant::now() + self.bus_gap;
            self.metrics.count_answer(&answer);
            let words = match answer {
                Err(_) => {
                    return Err(PollError::Transport(format!(
                        "unit {} gave no answer within {} ms",
                        unit.unit_id,
                        limit.as_millis()
                    )));
                }
                Ok(Err(err)) => return Err(PollError::Transport(err.to_string())),
                Ok(Ok(Err(exception))) => {
                    return Err(PollError::Exception(format!(
                        "unit {} answered {:?} reading {:?} {start}+{count}",
                        unit.unit_id, exception, request.area
                    )))
                }
                Ok(Ok(Ok(words))) => words,
            };
            for &index in &request.values {
                let decoder = &unit.decoders[index];
                let offset = usize::from(decoder.pdu_address - start);
                let width = usize::from(decoder.width());
                let slice = words.get(offset..offset + width).unwrap_or(&[]);
                decoder.readings(
                    slice,
                    &unit.tags,
                    &unit.measurement,
                    timestamp_ns,
                    &mut readings,
                );
            }
        }
        Ok(readings)
    }

    fn unit_answered(&mut self, u: usize) {
        let unit = &mut self.units[u];
        if unit.offline {
            unit.offline = false;
            self.metrics.units_offline.fetch_sub(1, Ordering::Relaxed);
            info!(device = %unit.device, unit_id = unit.unit_id, "Modbus unit back online.");
        }
        unit.failures = 0;
    }

    /// Counts a failure; the first time a unit goes offline, returns its readings with
    /// quality `comm_error` so that downstream sees the loss, not silence.
    fn unit_failed(&mut self, u: usize, detail: &str) -> Vec<Reading> {
        let limit = self.config.offline_after_failures;
        let unit = &mut self.units[u];
        unit.failures = unit.failures.saturating_add(1);
        debug!(device = %unit.device, unit_id = unit.unit_id, failures = unit.failures, error = %detail, "Modbus poll failed.");
        if unit.offline || unit.failures < limit {
            return Vec::new();
        }
        unit.offline = true;
        self.metrics.units_offline.fetch_add(1, Ordering::Relaxed);
        warn!(device = %unit.device, unit_id = unit.unit_id, failures = unit.failures, error = %detail, "Modbus unit offline.");
        let timestamp_ns = now_ns();
        unit.decoders
            .iter()
            .map(|d| Reading {
                tags: Arc::clone(&unit.tags),
                measurement: Arc::clone(&unit.measurement),
                quantity: Arc::from(d.quantity()),
                value: Value::Int(0),
                unit: None,
                timestamp_ns,
                quality: Quality::CommError,
            })
            .collect()
    }

    fn reschedule(&mut self, u: usize, s: usize) {
        let retry = Duration::from_secs(self.config.offline_retry_s);
        let unit = &mut self.units[u];
        let now = Instant::now();
        if unit.offline {
            for schedule in &mut unit.schedules {
                schedule.next_due = schedule.next_due.max(now + retry);
            }
            return;
        }
        let schedule = &mut unit.schedules[s];
        schedule.next_due += schedule.interval;
        if schedule.next_due <= now {
            let behind = now - schedule.next_due;
            let missed = behind.as_nanos() / schedule.interval.as_nanos().max(1) + 1;
            schedule.next_due += schedule.interval * missed as u32;
            self.metrics
                .missed_cycles
                .fetch_add(missed as u64, Ordering::Relaxed);
        }
    }
}
