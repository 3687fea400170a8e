//! Linkage (联动): alarms that act. A gas alarm closes the emergency shut-off valve and starts
//! the exhaust fan (GB 50028 §10.8, GB/T 50493), sounds the sounders of its area (GB 50116);
//! a technician operates and releases outputs by hand; an operator's Reset reaches a latched
//! detector as a write to its reset register.
//!
//! Every action is verified and journaled: written, read back within the output's
//! `confirm_ms`, retried with backoff; the journal (on the alarm's key, or `output/<id>`
//! for manual actions) says what was done and whether the device confirmed it, and an output
//! that does not confirm raises the critical linkage fault (gateway rule G11) until it does.
//!
//! Restarts and reloads never flip an output: the last commanded and confirmed states and the
//! alarms holding each output are kept in the store; at start each output is read back and
//! differences are reported, nothing is written. Alarms still active after a restart that had
//! not yet operated their outputs (a crash in between) operate them then.
//!
//! Owns: the outputs' state, the interlocks, the output drivers, device reset writes, the
//! linkage fault flags. Must not touch: alarm state (the rules task journals for it and owns
//! the lifecycle) or connections (requests go to the tasks that own them, `port`).

pub mod drive;
pub mod plan;
pub mod port;
mod reset;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::linkage::Release;
use crate::config::{Config, OutputConfig, OutputKind};
use crate::model::alarm::{Action, AlarmEvent, Operator};
use crate::model::{local_time, now_ms, Ms, Tags};
use crate::status::StatusReporter;
use crate::store::Store;
use drive::{Cause, Drive, Outcome};
use plan::{Hold, Holders, Intent, Interlocks};
use port::{PortOp, Ports};
use reset::DeviceResets;
pub use view::OutputView;
use view::{commanding, state_word};

/// What linkage did, for the journal: on alarm `key` when there is one (the rules task adds
/// it to the alarm's view), else on the output's own key `output/<output>`.
#[derive(Debug, Clone)]
pub struct Note {
    pub key: Option<String>,
    pub tags: Arc<Tags>,
    pub output: String,
    pub message: String,
    pub operator: Option<Operator>,
}

/// Where notes go: the rules task, which journals them in order with the transitions.
pub type Notes = mpsc::UnboundedSender<Note>;

/// Why a manual operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkageError {
    #[error("no output `{0}`")]
    UnknownOutput(String),
    #[error("give a reason: it is journaled with your name")]
    ReasonRequired,
    #[error("alarm {0} that operated it is still present; it can be released once the condition is gone (a faulty detector can be taken out of service first)")]
    HolderActive(String),
    #[error("linkage has stopped")]
    Stopped,
}

enum Request {
    Outputs {
        reply: oneshot::Sender<Vec<OutputView>>,
    },
    Operate {
        id: String,
        operate: bool,
        operator: Operator,
        reply: oneshot::Sender<Result<(), LinkageError>>,
    },
}

/// The library API to the running linkage: outputs' views and manual control.
#[derive(Clone)]
pub struct LinkageHandle {
    requests: mpsc::Sender<Request>,
}

impl LinkageHandle {
    pub async fn outputs(&self) -> Vec<OutputView> {
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send(Request::Outputs { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Operates (`operate = true`) or releases an output by hand, in `operator`'s name with
    /// the reason in its comment. Returns once the command is journaled and handed to the
    /// output's driver; the confirmation follows in the journal and the output's view.
    pub async fn operate(
        &self,
        id: &str,
        operate: bool,
        operator: Operator,
    ) -> Result<(), LinkageError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Operate {
            id: id.to_string(),
            operate,
            operator,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| LinkageError::Stopped)?;
        answer.await.map_err(|_| LinkageError::Stopped)?
    }
}

/// What is kept of an output across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    commanded: Option<bool>,
    confirmed: Option<bool>,
    confirmed_at_ms: Option<Ms>,
    holders: Holders,
}

struct OutputRuntime {
    config: OutputConfig,
    tags: Arc<Tags>,
    saved: Saved,
    pending: bool,
    failing: Option<String>,
    mismatch: Option<String>,
    drive: watch::Sender<Option<Drive>>,
}

/// Starts linkage: one driver per output and the task that plans and journals. `events` are
/// the rules' transitions (with, first, the alarms standing at start); `store` a connection of
/// its own for the outputs' states.
pub fn spawn(
    config: &Config,
    store: Store,
    ports: Ports,
    notes: Notes,
    status: StatusReporter,
    mut events: mpsc::UnboundedReceiver<AlarmEvent>,
) -> (LinkageHandle, JoinHandle<()>) {
    let interlocks = Interlocks::from_config(config);
    let saved: BTreeMap<String, Saved> = match store.output_states() {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(state) => Some((id, state)),
                Err(err) => {
                    warn!(output = %id, error = %err, "Saved output state unreadable; starting from unknown.");
                    None
                }
            })
            .collect(),
        Err(err) => {
            error!(error = %err, "Outputs' saved states not read; starting from unknown.");
            BTreeMap::new()
        }
    };
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut outputs = Vec::new();
    let mut drivers = Vec::new();
    for (index, o) in config.site.outputs.iter().enumerate() {
        let (drive, commands) = watch::channel(None);
        drivers.push(drive::spawn(
            index,
            o.clone(),
            ports.clone(),
            commands,
            outcome_tx.clone(),
        ));
        let place = &interlocks.outputs[index].2;
        outputs.push(OutputRuntime {
            config: o.clone(),
            tags: Arc::new(Tags {
                park: place.park.clone(),
                enterprise: place.enterprise.clone(),
                location: place.location.clone(),
                device: o.id.clone(),
                kind: o.kind.as_str().to_string(),
                profile: "output".into(),
                extra: Vec::new(),
            }),
            saved: saved.get(&o.id).cloned().unwrap_or_default(),
            pending: false,
            failing: None,
            mismatch: None,
            drive,
        });
    }
    let resets = DeviceResets::from_config(config);
    let (requests_tx, mut requests) = mpsc::channel::<Request>(16);
    let mut linkage = Linkage {
        interlocks,
        outputs,
        store: std::sync::Mutex::new(store),
        notes,
        present: BTreeSet::new(),
        status,
        ports,
        resets,
        utc_offset: config
            .site
            .alerts
            .as_ref()
            .map_or(480, |a| a.utc_offset_minutes),
    };
    let task = tokio::spawn(async move {
        for o in &linkage.outputs {
            linkage
                .status
                .set(&crate::status::linkage_failed(&o.config.id), false);
        }
        loop {
            tokio::select! {
                biased;
                Some(outcome) = outcomes.recv() => linkage.on_outcome(outcome).await,
                event = events.recv() => match event {
                    Some(event) => linkage.on_event(event).await,
                    None => break,
                },
                Some(request) = requests.recv() => match request {
                    Request::Outputs { reply } => {
                        let _ = reply.send(linkage.views());
                    }
                    Request::Operate { id, operate, operator, reply } => {
                        let _ = reply.send(linkage.manual(&id, operate, operator).await);
                    }
                },
            }
        }
        for d in drivers {
            d.abort();
        }
        info!("Linkage stopped.");
    });
    (
        LinkageHandle {
            requests: requests_tx,
        },
        task,
    )
}

struct Linkage {
    interlocks: Interlocks,
    outputs: Vec<OutputRuntime>,
    store: std::sync::Mutex<Store>,
    notes: Notes,
    /// Alarms holding an output whose condition is present (the last transition said so).
    present: BTreeSet<String>,
    status: StatusReporter,
    ports: Ports,
    resets: DeviceResets,
    /// Local time for the journal's messages (`alerts.utc_offset_minutes`).
    utc_offset: i32,
}

impl Linkage {
    async fn on_event(&mut self, event: AlarmEvent) {
        if event.action == Action::ResetRequested {
            self.reset_device(&event);
            return;
        }
        let key = event.key.to_string();
        if event.alarm.condition {
            self.present.insert(key);
        } else {
            self.present.remove(&key);
        }
        let mut holders: Vec<Holders> = self
            .outputs
            .iter()
            .map(|o| o.saved.holders.clone())
            .collect();
        let intents = self.interlocks.on_event(&event, &mut holders);
        if intents.is_empty() {
            return;
        }
        for (o, held) in self.outputs.iter_mut().zip(holders) {
            o.saved.holders = held;
        }
        for intent in intents {
            match intent {
                Intent::Operate { output, key, link } => {
                    self.command(
                        output,
                        true,
                        Cause::Alarm {
                            key: key.clone(),
                            link: link.clone(),
                        },
                    )
                    .await;
                }
                Intent::Release { output, key } => {
                    self.command(
                        output,
                        false,
                        Cause::Alarm {
                            key,
                            link: "its alarms cleared".into(),
                        },
                    )
                    .await;
                }
            }
        }
    }

    /// Tells output `i`'s driver to take a state, saving it first. A state it already has,
    /// confirmed, is not written again: the journal says so.
    async fn command(&mut self, i: usize, operate: bool, cause: Cause) {
        let o = &mut self.outputs[i];
        let word = state_word(o.config.kind, operate);
        let name = o.config.display_name().to_string();
        let kind = o.config.kind;
        let already = o.saved.confirmed == Some(operate) && o.saved.commanded == Some(operate);
        o.saved.commanded = Some(operate);
        self.save(i);
        let (key, why) = match &cause {
            Cause::Alarm { key, link } => (Some(key.clone()), format!("linkage `{link}`")),
            Cause::Manual { .. } => (None, "by hand".to_string()),
        };
        let message = if already {
            format!("{name}: already {word} ({why})")
        } else {
            format!("{name}: {} ({why})", commanding(kind, operate))
        };
        self.journal(i, key, message, None).await;
        if already {
            return;
        }
        let o = &mut self.outputs[i];
        let was_pending = o.pending;
        o.pending = true;
        let causes = match o.drive.borrow().as_ref() {
            // A repeated command while the last is still unconfirmed keeps its causes, so
            // that every alarm hears of the confirmation.
            Some(d) if was_pending && d.operate == operate => {
                let mut causes = d.causes.clone();
                causes.push(cause);
                causes
            }
            _ => vec![cause],
        };
        let _ = o.drive.send(Some(Drive {
            operate,
            causes,
            since: Instant::now(),
        }));
    }

    async fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Confirmed {
                output,
                drive,
                attempts,
                at_ms,
            } => {
                let o = &mut self.outputs[output];
                if o.saved.commanded != Some(drive.operate) {
                    return; // superseded
                }
                o.pending = false;
                o.saved.confirmed = Some(drive.operate);
                o.saved.confirmed_at_ms = Some(at_ms);
                o.mismatch = None;
                let was_failing = o.failing.take().is_some();
                let word = state_word(o.config.kind, drive.operate);
                let name = o.config.display_name().to_string();
                let took = drive.since.elapsed().as_millis();
                let tries = if attempts > 1 {
                    format!(", after {attempts} attempts")
                } else {
                    String::new()
                };
                let message = format!(
                    "{name} {word} {}, confirmed (read back in {took} ms{tries})",
                    local_time(at_ms, self.utc_offset)
                );
                info!(output = %o.config.id, state = word, latency_ms = took as u64, attempts, "Output confirmed.");
                self.save(output);
                if was_failing {
                    self.status.set(
                        &crate::status::linkage_failed(&self.outputs[output].config.id),
                        false,
                    );
                }
                self.journal_causes(output, &drive.causes, message).await;
            }
            Outcome::Sent {
                output,
                drive,
                at_ms,
            } => {
                let o = &mut self.outputs[output];
                if o.saved.commanded != Some(drive.operate) {
                    return;
                }
                o.pending = false;
                let word = state_word(o.config.kind, drive.operate);
                let name = o.config.display_name().to_string();
                let message = format!(
                    "{name}: command to be {word} sent {} over MQTT (no read-back: not confirmed)",
                    local_time(at_ms, self.utc_offset)
                );
                self.journal_causes(output, &drive.causes, message).await;
            }
            Outcome::Failing {
                output,
                drive,
                attempts,
                error,
            } => {
                let o = &mut self.outputs[output];
                if o.saved.commanded != Some(drive.operate) {
                    return;
                }
                o.failing = Some(error.clone());
                let word = state_word(o.config.kind, drive.operate);
                let name = o.config.display_name().to_string();
                error!(output = %o.config.id, attempts, error = %error, "Output not confirmed; linkage fault raised, still trying.");
                let message = format!(
                    "{name} NOT confirmed {word} after {attempts} attempts: {error}; linkage fault raised, still trying"
                );
                self.status
                    .set(&crate::status::linkage_failed(&o.config.id), true);
                self.journal_causes(output, &drive.causes, message).await;
            }
            Outcome::Found {
                output,
                operated,
                error,
            } => self.on_found(output, operated, error).await,
        }
    }

    /// At start: the device's state against what was last commanded. Differences are
    /// reported, never corrected by a write.
    async fn on_found(&mut self, output: usize, operated: Option<bool>, error: Option<String>) {
        let o = &mut self.outputs[output];
        let name = o.config.display_name().to_string();
        let expected = o.saved.commanded;
        let read = match (operated, &error) {
            (Some(state), _) => state_word(o.config.kind, state).to_string(),
            (None, Some(err)) => format!("could not be read ({err})"),
            (None, None) => "reads neither state".to_string(),
        };
        if operated.is_some() && operated == expected {
            o.saved.confirmed = operated;
            return;
        }
        if expected.is_none() && operated.is_some() {
            // Never commanded: what it is, is what it is.
            o.saved.confirmed = operated;
            self.save(output);
            return;
        }
        let message = match expected {
            Some(cmd) => format!(
                "{name} at start {read}; last commanded {} (nothing sent: check the output on site)",
                state_word(o.config.kind, cmd)
            ),
            None => format!("{name} at start {read}"),
        };
        warn!(output = %o.config.id, "{message}");
        o.mismatch = Some(message.clone());
        o.saved.confirmed = operated;
        self.save(output);
        self.journal(output, None, message, None).await;
    }

    async fn manual(
        &mut self,
        id: &str,
        operate: bool,
        operator: Operator,
    ) -> Result<(), LinkageError> {
        let i = self
            .interlocks
            .output_index(id)
            .ok_or_else(|| LinkageError::UnknownOutput(id.to_string()))?;
        let reason = operator
            .comment
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        if reason.is_empty() {
            return Err(LinkageError::ReasonRequired);
        }
        if operate {
            self.outputs[i].saved.holders.insert(
                format!("manual:{}", operator.name),
                Hold {
                    link: "by hand".into(),
                    release: Release::Manual,
                },
            );
        } else {
            let alarms: Vec<String> = self.outputs[i]
                .saved
                .holders
                .keys()
                .filter(|k| !k.starts_with("manual:"))
                .cloned()
                .collect();
            if let Some(key) = alarms.into_iter().find(|k| self.present.contains(k)) {
                return Err(LinkageError::HolderActive(key));
            }
            self.outputs[i].saved.holders.clear();
        }
        let o = &self.outputs[i];
        let message = format!(
            "{}: {} by hand by {} ({reason})",
            o.config.display_name(),
            commanding(o.config.kind, operate),
            operator.name
        );
        self.journal(i, None, message, Some(operator.clone())).await;
        let name = operator.name.clone();
        // Journaled above with the reason; the driver's outcome is journaled on the output.
        self.command_quiet(i, operate, Cause::Manual { name });
        Ok(())
    }

    /// `command` without its journal entry (the caller wrote a fuller one).
    fn command_quiet(&mut self, i: usize, operate: bool, cause: Cause) {
        let o = &mut self.outputs[i];
        o.saved.commanded = Some(operate);
        o.pending = true;
        self.save(i);
        let o = &mut self.outputs[i];
        let _ = o.drive.send(Some(Drive {
            operate,
            causes: vec![cause],
            since: Instant::now(),
        }));
    }

    /// Journals `message` for each alarm among `causes` (on the output for manual ones).
    async fn journal_causes(&mut self, output: usize, causes: &[Cause], message: String) {
        let mut on_output = false;
        for cause in causes {
            match cause {
                Cause::Alarm { key, .. } => {
                    self.journal(output, Some(key.clone()), message.clone(), None)
                        .await
                }
                Cause::Manual { .. } => on_output = true,
            }
        }
        if on_output || causes.is_empty() {
            self.journal(output, None, message, None).await;
        }
    }

    async fn journal(
        &self,
        output: usize,
        key: Option<String>,
        message: String,
        operator: Option<Operator>,
    ) {
        let o = &self.outputs[output];
        let _ = self.notes.send(Note {
            key,
            tags: Arc::clone(&o.tags),
            output: o.config.id.clone(),
            message,
            operator,
        });
    }

    fn save(&mut self, i: usize) {
        let o = &self.outputs[i];
        let json = serde_json::to_string(&o.saved).unwrap_or_default();
        let saved = self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .save_output_state(&o.config.id, &json, now_ms());
        if let Err(err) = saved {
            // The command goes ahead: acting on the alarm matters more than remembering it.
            error!(output = %o.config.id, error = %err, "Output state not saved.");
        }
    }
}
