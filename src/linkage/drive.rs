//! One task per output: makes the output what it was last told to be, and proves it. A Modbus
//! output is written, then read back until it shows the new state or `confirm_ms` runs out;
//! that is retried with a jittered backoff, `attempts` times before it counts as failing, and
//! on after that (every 30 s at most) until it confirms or is told otherwise. An MQTT output
//! is published; it cannot be read back.
//!
//! A newer command replaces the one being retried at once: a valve told to close while its
//! last opening is still unconfirmed closes, and is not opened first.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::port::{PortError, PortOp, Ports};
use crate::backoff::Backoff;
use crate::config::linkage::ModbusOutputConfig;
use crate::config::OutputConfig;
use crate::model::{now_ms, Ms};

/// Who asked for a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// An alarm, through an interlock.
    Alarm { key: String, link: String },
    /// A technician, by hand.
    Manual { name: String },
}

/// A state an output is told to take.
#[derive(Debug, Clone)]
pub struct Drive {
    pub operate: bool,
    pub causes: Vec<Cause>,
    /// When it was asked for, for the latency reported.
    pub since: Instant,
}

/// What a driver found.
#[derive(Debug)]
pub enum Outcome {
    /// The device shows the state (read back).
    Confirmed {
        output: usize,
        drive: Drive,
        attempts: u32,
        at_ms: Ms,
    },
    /// Published; nothing can be read back.
    Sent {
        output: usize,
        drive: Drive,
        at_ms: Ms,
    },
    /// Not confirmed after the output's attempts; still being tried.
    Failing {
        output: usize,
        drive: Drive,
        attempts: u32,
        error: String,
    },
    /// The state read at start, before anything is written (`None`: unreadable or neither
    /// of the two values).
    Found {
        output: usize,
        operated: Option<bool>,
        error: Option<String>,
    },
}

/// How long to wait before retrying a failing output, at most.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Read-back polling while waiting for a confirmation.
const READBACK_EVERY: Duration = Duration::from_millis(50);

pub fn spawn(
    index: usize,
    output: OutputConfig,
    ports: Ports,
    mut commands: watch::Receiver<Option<Drive>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(modbus) = &output.modbus {
            let limit = Duration::from_millis(output.confirm_ms);
            let found = read_state(&ports, modbus, limit).await;
            let (operated, error) = match found {
                Ok(state) => (state, None),
                Err(err) => (None, Some(err.to_string())),
            };
            let _ = outcomes.send(Outcome::Found {
                output: index,
                operated,
                error,
            });
        }
        // Nothing is written until the first command: the state at start is only reported.
        while commands.changed().await.is_ok() {
            let Some(drive) = commands.borrow_and_update().clone() else {
                continue;
            };
            let mut backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match apply(&output, &ports, drive.operate).await {
                    Ok(Applied::Confirmed) => {
                        let _ = outcomes.send(Outcome::Confirmed {
                            output: index,
                            drive: drive.clone(),
                            attempts: attempt,
                            at_ms: now_ms(),
                        });
                        break;
                    }
                    Ok(Applied::Sent) => {
                        let _ = outcomes.send(Outcome::Sent {
                            output: index,
                            drive: drive.clone(),
                            at_ms: now_ms(),
                        });
                        break;
                    }
                    Err(error) => {
                        if attempt == output.attempts.max(1) {
                            let _ = outcomes.send(Outcome::Failing {
                                output: index,
                                drive: drive.clone(),
                                attempts: attempt,
                                error,
                            });
                        }
                    }
                }
                tokio::select! {
                    changed = commands.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // Handled by the outer loop with the new command.
                        commands.mark_changed();
                        break;
                    }
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    })
}

enum Applied {
    Confirmed,
    Sent,
}

async fn apply(output: &OutputConfig, ports: &Ports, operate: bool) -> Result<Applied, String> {
    if let Some(m) = &output.mqtt {
        let publish = ports
            .mqtt
            .as_ref()
            .ok_or_else(|| "no MQTT connection is running".to_string())?;
        let payload = if operate { &m.on } else { &m.off };
        publish(&m.connection, &m.topic, payload.as_bytes().to_vec())?;
        return Ok(Applied::Sent);
    }
    let Some(m) = &output.modbus else {
        return Err("the output has neither a Modbus nor an MQTT way out".into());
    };
    let limit = Duration::from_millis(output.confirm_ms);
    let started = Instant::now();
    let value = if operate { m.on } else { m.off };
    let write = PortOp::Write {
        area: m.area,
        address: m.address,
        value,
    };
    ports
        .modbus(&m.connection, m.unit_id, write, limit)
        .await
        .map_err(|e| format!("write {value} to {:?} {}: {e}", m.area, m.address))?;
    let readback = m.readback();
    let mut last = None;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match read_state(ports, m, left).await {
            Ok(Some(state)) if state == operate => return Ok(Applied::Confirmed),
            Ok(state) => last = Some(Ok(state)),
            Err(err) => last = Some(Err(err)),
        }
        tokio::time::sleep(READBACK_EVERY.min(limit.saturating_sub(started.elapsed()))).await;
    }
    let (want, other) = if operate {
        (readback.on, readback.off)
    } else {
        (readback.off, readback.on)
    };
    Err(match last {
        Some(Err(err)) => format!(
            "written, but the read-back of {:?} {} failed: {err}",
            readback.area, readback.address
        ),
        Some(Ok(Some(_))) => format!(
            "written, but {:?} {} still reads {other} (expected {want}) after {} ms",
            readback.area,
            readback.address,
            limit.as_millis()
        ),
        _ => format!(
            "written, but {:?} {} reads neither {want} nor {other} after {} ms",
            readback.area,
            readback.address,
            limit.as_millis()
        ),
    })
}

/// Whether the output reads operated; `None` when it reads neither value.
async fn read_state(
    ports: &Ports,
    m: &ModbusOutputConfig,
    limit: Duration,
) -> Result<Option<bool>, PortError> {
    let readback = m.readback();
    let read = PortOp::Read {
        area: readback.area,
        address: readback.address,
    };
    let word = ports.modbus(&m.connection, m.unit_id, read, limit).await?;
    Ok(if word == readback.on {
        Some(true)
    } else if word == readback.off {
        Some(false)
    } else {
        None
    })
}
