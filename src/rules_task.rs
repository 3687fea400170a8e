//! The task that owns the rule engine: feeds it readings (the devices' and the gateway's own),
//! operator commands and the clock, and sends its transitions to the store's writer thread,
//! which commits alarm state, journal entries and the transitions' `alarm` points for the
//! sinks' outbox in one transaction. Evaluation never waits on it: the channel is unbounded
//! (transitions are few; the journal must not lose one). With alert routes, the same
//! transaction queues the transitions' pushes (`alerts`).
//!
//! Only after that commit does the writer send a device the acknowledgement it waits for
//! (through `ingest::downlink`), so that a device is told only what is recorded; and now and
//! then it anchors the journal's head outside the database (a file, an MQTT topic, a
//! `journal_anchor` point).
//!
//! Owns: the engine's loop, the alarm store writer thread and journal anchoring. Must not
//! touch: evaluation (the engine's) or push delivery (the alert service's).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::alerts::delivery::QueueLink;
use crate::config::AlarmKind;
use crate::ingest::downlink::Downlinks;
use crate::metrics::Metrics;
use crate::model::alarm::AlarmEvent;
use crate::model::{DeviceAck, Reading, ReadingBatch};
use crate::rules::alarm::{Action, Command, CommandError, Operator};
use crate::rules::engine::{AlarmView, RuleEngine, Target};
use crate::rules::threshold::Ms;
use crate::sinks::alarm_points;
use crate::sinks::outbox_writer::Outbox;
use crate::store::{PushPlanner, Store};

pub use crate::model::now_ms;

enum Request {
    Command {
        target: Target,
        command: Command,
        operator: Operator,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Alarms {
        reply: oneshot::Sender<Vec<AlarmView>>,
    },
    Alarm {
        key: String,
        reply: oneshot::Sender<Option<AlarmView>>,
    },
}

/// The library API to the running rules: operator commands, alarm snapshots and a live feed
/// of transitions.
#[derive(Clone)]
pub struct RulesHandle {
    requests: mpsc::Sender<Request>,
    transitions: broadcast::Sender<Arc<AlarmEventView>>,
}

/// An `AlarmEvent` as watchers (the web UI's live board) see it: what happened, and the
/// alarm's `AlarmView` after it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmEventView {
    pub action: Action,
    pub at_ms: Ms,
    pub message: String,
    pub operator: Option<Operator>,
    pub annunciated: bool,
    pub alarm: AlarmView,
}

/// Transitions a slow watcher may fall behind by before it is told to re-read the alarm list.
const TRANSITION_BACKLOG: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Refused(#[from] CommandError),
    #[error("the rules engine has stopped")]
    Stopped,
}

impl RulesHandle {
    pub async fn command(
        &self,
        target: Target,
        command: Command,
        operator: Operator,
    ) -> Result<(), HandleError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Command {
                target,
                command,
                operator,
                reply,
            })
            .await
            .map_err(|_| HandleError::Stopped)?;
        Ok(answer.await.map_err(|_| HandleError::Stopped)??)
    }

    /// Every alarm that is not normal, most severe and newest first.
    pub async fn alarms(&self) -> Vec<AlarmView> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Alarms { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    pub async fn alarm(&self, key: &str) -> Option<AlarmView> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Alarm {
            key: key.to_string(),
            reply,
        };
        self.requests.send(request).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Every transition from now on. A watcher that falls more than a few thousand behind
    /// gets `RecvError::Lagged` and should re-read `alarms()`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AlarmEventView>> {
        self.transitions.subscribe()
    }
}

/// Starts the rules task and the store's writer thread. The task ends when `input` closes,
/// after the writer has stored everything. With `outbox`, transitions also become `alarm`
/// points for the sinks.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    mut engine: RuleEngine,
    mut store: Store,
    mut input: mpsc::Receiver<RulesInput>,
    mut gateway_input: mpsc::UnboundedReceiver<ReadingBatch>,
    outbox: Option<Arc<Outbox>>,
    forwarding: Forwarding,
    metrics: Arc<Metrics>,
    liveness: RulesLiveness,
    downlinks: Option<Arc<Downlinks>>,
    anchoring: Option<Anchoring>,
    linkage: Option<LinkageLink>,
) -> std::io::Result<(RulesHandle, JoinHandle<()>)> {
    let (linkage, mut linkage_notes) = match linkage {
        Some(link) => (Some(link.events), Some(link.notes)),
        None => (None, None),
    };
    let RulesLiveness {
        heartbeat,
        writer_guard,
    } = liveness;
    let fault = TestFault::from_env();
    crate::crashpoint::arm();
    let (requests_tx, mut requests) = mpsc::channel::<Request>(64);
    let (transitions, _) = broadcast::channel(TRANSITION_BACKLOG);
    let watchers = transitions.clone();
    let (store_tx, store_rx) = std::sync::mpsc::channel::<StoreJob>();
    // The centres' device states brought up to date with the alarms standing at start,
    // before any transition is stored.
    if let Some(northbound) = &forwarding.northbound {
        match northbound
            .planner
            .reconcile(&mut store, &engine.not_normal(now_ms()), now_ms())
        {
            Ok(queued) if queued > 0 => northbound.notify(),
            Ok(_) => {}
            Err(err) => {
                error!(error = %err, "The monitoring centres' device states could not be brought up to date.")
            }
        }
    }
    let writer_metrics = Arc::clone(&metrics);
    let writer = std::thread::Builder::new()
        .name("parkguard-store".into())
        .spawn(move || {
            let _guard = writer_guard;
            store_writer(
                store,
                store_rx,
                outbox,
                forwarding,
                writer_metrics,
                downlinks,
                anchoring,
            )
        })?;
    if let Some(linkage) = &linkage {
        // Alarms standing at start that had not yet operated their outputs (a crash in
        // between) operate them now; those that had are known to linkage and change nothing.
        for e in engine.standing(now_ms()) {
            let _ = linkage.send(e);
        }
    }
    let task = tokio::spawn(async move {
        let mut events = Vec::new();
        let mut pending_ack: Option<DeviceAck> = None;
        let mut open = true;
        while open {
            // The loop comes round at least every `LOOP_TICK`, so that its heartbeat shows it
            // turning even when nothing arrives.
            let sleep_for = engine
                .next_deadline()
                .map(|t| Duration::from_millis((t - now_ms()).clamp(0, 3_600_000) as u64))
                .unwrap_or(LOOP_TICK)
                .min(LOOP_TICK);
            heartbeat.beat(LOOP_TICK);
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(RulesInput { readings: batch, device_ack }) => {
                        fault.check(&batch).await;
                        engine.on_readings(&batch, now_ms(), &mut events);
                        metrics.readings_evaluated.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        pending_ack = device_ack;
                    }
                    None => open = false,
                },
                Some(batch) = gateway_input.recv() => {
                    engine.on_readings(&batch, now_ms(), &mut events);
                }
                Some(request) = requests.recv() => match request {
                    Request::Command { target, command, operator, reply } => {
                        let result = engine.command(&target, &command, &operator, now_ms(), &mut events);
                        let _ = reply.send(result);
                    }
                    Request::Alarms { reply } => {
                        let _ = reply.send(engine.alarms());
                    }
                    Request::Alarm { key, reply } => {
                        let _ = reply.send(engine.alarm(&key));
                    }
                },
                Some(note) = next_note(&mut linkage_notes) => {
                    let now = now_ms();
                    let on_alarm = note.key.as_deref().is_some_and(|k| {
                        engine.annotate(k, &note.message, note.operator.clone(), now, &mut events)
                    });
                    if !on_alarm {
                        events.push(AlarmEvent::output_note(&note.output, note.tags, note.message, note.operator, now));
                    }
                }
                _ = tokio::time::sleep(sleep_for) => {}
            }
            engine.tick(now_ms(), &mut events);
            if !events.is_empty() {
                if watchers.receiver_count() > 0 {
                    for e in &events {
                        if let Some(alarm) = engine.alarm(&e.key) {
                            let _ = watchers.send(Arc::new(AlarmEventView {
                                action: e.action,
                                at_ms: e.at_ms,
                                message: e.message.clone(),
                                operator: e.operator.clone(),
                                annunciated: e.annunciated,
                                alarm,
                            }));
                        }
                    }
                }
                if let Some(linkage) = &linkage {
                    for e in events.iter().filter(|e| linkage_acts_on(e.action)) {
                        let _ = linkage.send(e.clone());
                    }
                }
                publish(std::mem::take(&mut events), &store_tx, &metrics);
            }
            // Behind this batch's transitions in the writer's queue: the device hears back
            // only once they are committed.
            if let Some(ack) = pending_ack.take() {
                let _ = store_tx.send(StoreJob::DeviceAck(ack));
            }
        }
        drop(store_tx);
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        info!("Rules stopped.");
    });
    Ok((
        RulesHandle {
            requests: requests_tx,
            transitions,
        },
        task,
    ))
}

/// The rules task's side of linkage: transitions go out to it, what it did comes back to be
/// journaled.
pub struct LinkageLink {
    pub events: mpsc::UnboundedSender<AlarmEvent>,
    pub notes: mpsc::UnboundedReceiver<crate::linkage::Note>,
}

async fn next_note(
    notes: &mut Option<mpsc::UnboundedReceiver<crate::linkage::Note>>,
) -> Option<crate::linkage::Note> {
    match notes {
        Some(notes) => notes.recv().await,
        None => std::future::pending().await,
    }
}

/// The transitions linkage plans on (the rest would only be cloned for nothing).
fn linkage_acts_on(action: Action) -> bool {
    matches!(
        action,
        Action::Raised
            | Action::Escalated
            | Action::Reannunciated
            | Action::ConditionCleared
            | Action::Cleared
            | Action::Reset
            | Action::Retired
            | Action::ResetRequested
    )
}

/// The rules loop comes round at least this often.
const LOOP_TICK: Duration = Duration::from_secs(5);

/// What watches the rules task: its loop's heartbeat and the store writer thread's guard.
pub struct RulesLiveness {
    pub heartbeat: Arc<crate::health::Heartbeat>,
    pub writer_guard: crate::health::TaskGuard,
}

/// One message's readings for the rules, with the acknowledgement its device waits for.
pub struct RulesInput {
    pub readings: ReadingBatch,
    /// Sent by the store writer once the transitions of these readings are committed.
    pub device_ack: Option<DeviceAck>,
}

/// What the store writer does, in order: commit transitions, or tell a device that what it
/// sent before is recorded.
enum StoreJob {
    Transitions(Vec<AlarmEvent>),
    DeviceAck(DeviceAck),
}

/// Faults injected by the test suite through `PARKGUARD_TEST_FAULT`, to show that supervision
/// and the watchdog notice them: `rules_panic:<device>` panics the rules task and
/// `rules_stall:<device>` stalls its loop when a reading of `<device>` arrives. Never set in
/// production.
enum TestFault {
    None,
    Panic(String),
    Stall(String),
}

impl TestFault {
    fn from_env() -> Self {
        let Ok(spec) = std::env::var("PARKGUARD_TEST_FAULT") else {
            return TestFault::None;
        };
        match spec.split_once(':') {
            Some(("rules_panic", device)) => TestFault::Panic(device.to_string()),
            Some(("rules_stall", device)) => TestFault::Stall(device.to_string()),
            _ => TestFault::None,
        }
    }

    async fn check(&self, batch: &[Reading]) {
        let hit = |device: &str| batch.iter().any(|r| r.tags.device == device);
        match self {
            TestFault::None => {}
            TestFault::Panic(device) if hit(device) => {
                panic!("test fault injected: rules task panics on a reading of {device}")
            }
            TestFault::Stall(device) if hit(device) => {
                error!(device = %device, "Test fault injected: the rules loop stalls.");
                std::future::pending::<()>().await
            }
            _ => {}
        }
    }
}

/// Restores the store's alarm states into the engine (before the first reading). Alarms of
/// rules that no longer exist (the configuration changed) are retired: journaled, and pushed
/// to the routes that had them.
pub fn restore(
    engine: &mut RuleEngine,
    store: &mut Store,
    router: Option<&crate::alerts::Router>,
) -> anyhow::Result<usize> {
    let persisted = store.load_alarms()?;
    let count = persisted.len();
    let retired = engine.restore(persisted, now_ms());
    if !retired.is_empty() {
        info!(
            alarms = retired.len(),
            "Alarms of rules that no longer exist were retired."
        );
        store.record_and_route(&retired, None, router.map(|r| r as &dyn PushPlanner))?;
    }
    Ok(count)
}

fn publish(events: Vec<AlarmEvent>, store: &std::sync::mpsc::Sender<StoreJob>, metrics: &Metrics) {
    for e in &events {
        metrics.alarm_transitions.fetch_add(1, Ordering::Relaxed);
        match e.action {
            Action::Raised | Action::Escalated if e.kind != AlarmKind::Event => {
                warn!(alarm = %e.key, severity = e.severity.as_str(), kind = e.kind.as_str(), action = e.action.as_str(), annunciated = e.annunciated, "{}", e.message)
            }
            _ => {
                info!(alarm = %e.key, action = e.action.as_str(), state = e.state.as_str(), operator = e.operator.as_ref().map(|o| o.name.as_str()), "{}", e.message)
            }
        }
    }
    let _ = store.send(StoreJob::Transitions(events));
}

/// Attempts at storing one group of transitions before it is given up (and counted).
const STORE_ATTEMPTS: u32 = 10;

/// Where and how often the journal's head is written outside the database.
pub struct Anchoring {
    pub interval: Duration,
    /// The anchor file (absolute).
    pub file: std::path::PathBuf,
    /// The MQTT topic anchors are published to on every connection.
    pub topic: String,
    /// The `gateway` tag of the `journal_anchor` point.
    pub gateway: String,
}

impl Anchoring {
    /// Writes the head out if it moved since `last` and `interval` has passed; returns the
    /// sequence number anchored.
    fn maybe_anchor(
        &self,
        store: &mut Store,
        last: &mut Option<(std::time::Instant, i64)>,
        outbox: Option<&Arc<Outbox>>,
        downlinks: Option<&Arc<Downlinks>>,
        force: bool,
    ) {
        if !force && last.is_some_and(|(at, _)| at.elapsed() < self.interval) {
            return;
        }
        let head = match store.journal_head() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(err) => {
                warn!(error = %err, "Journal head not read for its anchor.");
                return;
            }
        };
        if last.is_some_and(|(_, seq)| seq == head.0) {
            return;
        }
        let anchor = crate::store::JournalAnchor {
            at_ms: now_ms(),
            seq: head.0,
            hash: head.1,
        };
        let line = serde_json::to_string(&anchor).unwrap_or_default();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "{line}")?;
                f.sync_data()
            });
        if let Err(err) = written {
            warn!(file = %self.file.display(), error = %err, "Journal anchor not written to its file.");
        }
        if let Some(downlinks) = downlinks {
            downlinks.publish_everywhere(&self.topic, line.as_bytes());
        }
        if let Some(outbox) = outbox {
            let gz =
                alarm_points::anchor_batch(&self.gateway, anchor.at_ms, anchor.seq, &anchor.hash);
            match store.queue_alarm_points(anchor.at_ms, &gz, 2) {
                Ok(_) => outbox.added(gz.len() as i64),
                Err(err) => warn!(error = %err, "Journal anchor not queued for InfluxDB."),
            }
        }
        *last = Some((std::time::Instant::now(), anchor.seq));
    }
}

/// Where the store writer sends what it commits, in the journal's transaction: pushes
/// (`alerts`) and the queues towards fire-monitoring centres (`northbound`).
#[derive(Clone, Default)]
pub struct Forwarding {
    pub alerts: Option<QueueLink>,
    pub northbound: Option<crate::northbound::QueueLink>,
}

/// Both planners as one: pushes first (their count is returned), then the centres' queues
/// (their count kept apart, to wake the links only when they have something new).
struct Planners<'a>(&'a Forwarding, std::cell::Cell<u64>);

impl PushPlanner for Planners<'_> {
    fn queue_pushes(
        &self,
        tx: &rusqlite::Transaction<'_>,
        event: &AlarmEvent,
        seq: i64,
    ) -> Result<u64, crate::store::StoreError> {
        let pushes = match &self.0.alerts {
            Some(alerts) => alerts.router.queue_pushes(tx, event, seq)?,
            None => 0,
        };
        if let Some(northbound) = &self.0.northbound {
            let queued = northbound.planner.queue_pushes(tx, event, seq)?;
            self.1.set(self.1.get() + queued);
        }
        Ok(pushes)
    }
}

fn store_writer(
    mut store: Store,
    input: std::sync::mpsc::Receiver<StoreJob>,
    outbox: Option<Arc<Outbox>>,
    forwarding: Forwarding,
    metrics: Arc<Metrics>,
    downlinks: Option<Arc<Downlinks>>,
    anchoring: Option<Anchoring>,
) {
    let outbox = outbox.filter(|o| o.has_sinks());
    let mut text = String::new();
    // Whether the last transitions were stored: a device is acknowledged only then (its
    // retransmission, unanswered, brings the alarm again).
    let mut last_stored = true;
    let mut last_anchor = None;
    let wake = anchoring.as_ref().map_or(Duration::from_secs(3600), |a| {
        a.interval.min(Duration::from_secs(5))
    });
    loop {
        let job = match input.recv_timeout(wake) {
            Ok(job) => Some(job),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(anchoring) = &anchoring {
            if job.is_none() {
                anchoring.maybe_anchor(
                    &mut store,
                    &mut last_anchor,
                    outbox.as_ref(),
                    downlinks.as_ref(),
                    false,
                );
            }
        }
        let Some(job) = job else {
            continue;
        };
        let events = match job {
            StoreJob::Transitions(events) => events,
            StoreJob::DeviceAck(ack) => {
                if !last_stored {
                    warn!(to = %ack.target(), "Device not acknowledged: its alarm was not stored.");
                    continue;
                }
                if let Some(downlinks) = &downlinks {
                    if let Err(err) = downlinks.send(&ack) {
                        // The device retransmits; its next message is acknowledged then.
                        warn!(to = %ack.target(), error = %err, "Device acknowledgement not sent.");
                    }
                }
                continue;
            }
        };
        let mut batch = None;
        if outbox.is_some() {
            // The journal's sequence numbers make each point unique and name its entry. This
            // thread is the journal's only writer, so the numbers are known before the commit.
            let first_seq = match store.journal_last_seq() {
                Ok(seq) => seq + 1,
                Err(err) => {
                    error!(error = %err, "Cannot read the journal head.");
                    0
                }
            };
            batch = Some(alarm_points::events_batch(&events, first_seq, &mut text));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let alarm_batch = batch.as_ref().map(|(gz, n)| (&gz[..], *n));
            let planners = Planners(&forwarding, std::cell::Cell::new(0));
            match store.record_and_route(&events, alarm_batch, Some(&planners)) {
                Ok(queued) => {
                    if queued > 0 {
                        crate::crashpoint::reached(
                            crate::crashpoint::JOURNAL_COMMITTED_BEFORE_WAKE,
                        );
                    }
                    last_stored = true;
                    metrics
                        .journal_store_failing
                        .store(false, Ordering::Relaxed);
                    if let (Some(outbox), Some((gz, _))) = (&outbox, &batch) {
                        outbox.added(gz.len() as i64);
                    }
                    if let (Some(alerts), true) = (&forwarding.alerts, queued > 0) {
                        metrics.alerts_queued.fetch_add(queued, Ordering::Relaxed);
                        alerts.wake.notify_one();
                    }
                    if let (Some(northbound), true) = (&forwarding.northbound, planners.1.get() > 0)
                    {
                        northbound.notify();
                    }
                    break;
                }
                Err(err) if attempt < STORE_ATTEMPTS => {
                    metrics.journal_store_failing.store(true, Ordering::Relaxed);
                    warn!(error = %err, attempt, "Alarm transitions could not be stored; retrying.");
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
                Err(err) => {
                    last_stored = false;
                    metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    error!(error = %err, transitions = events.len(), "Alarm transitions could not be stored.");
                    break;
                }
            }
        }
        if let Some(anchoring) = &anchoring {
            anchoring.maybe_anchor(
                &mut store,
                &mut last_anchor,
                outbox.as_ref(),
                downlinks.as_ref(),
                false,
            );
        }
    }
    // The last head, on the way out.
    if let Some(anchoring) = &anchoring {
        anchoring.maybe_anchor(
            &mut store,
            &mut last_anchor,
            outbox.as_ref(),
            downlinks.as_ref(),
            true,
        );
    }
}
