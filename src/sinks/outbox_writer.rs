//! The ingest side of the outbox: one writer thread commits what ingest delivered (readings as
//! gzip line protocol, undecodable messages, history buckets) in one SQLite transaction per
//! group of messages, and only then acknowledges them to their source. It then wakes the
//! sinks' drain tasks (`drain`).
//!
//! Group commit: the thread takes every message waiting when it starts a commit, so under
//! load one transaction carries many messages, and at low rates a message waits for no timer.
//!
//! When the outbox would outgrow `gateway.outbox_max_mb`, the oldest telemetry is evicted (to
//! 90 % of the bound, so eviction happens in steps, not on every commit); alarm events are
//! never evicted. A commit that fails (disk full, I/O error) is retried with the messages
//! still unacknowledged, so the broker keeps them; a full disk also evicts telemetry.
//!
//! Owns: the outbox's size accounting and the wake-ups of the drain tasks. Must not touch:
//! HTTP (the drain tasks do that) or the rules.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

use crate::ingest::Ingested;
use crate::metrics::{Metrics, SinkMetrics};
use crate::model::{now_ns, BadMessage};
use crate::sinks::{influx, line_protocol};
use crate::status::{self, StatusReporter};
use crate::store::history::{Accumulator, FineQuantities, Retention};
use crate::store::{IngestCommit, Store, StoreError, BAD_MESSAGES_KEPT};

/// Readings per commit at most: bounds the memory of one group and the latency of its acks.
const MAX_COMMIT_READINGS: usize = 20_000;
/// Attempts at the last commit before shutdown gives up on a failing store.
const LAST_COMMIT_ATTEMPTS: u32 = 10;
/// How often history buckets are closed and compacted.
/// How often the writer wakes up with nothing to do, to close history buckets on time.
const HISTORY_FLUSH: Duration = Duration::from_secs(1);
/// Rejected messages are written at most this often, the newest `BAD_MESSAGES_KEPT` of them:
/// a flood of bad messages (an attacker's distinct device ids, a broken firmware) costs the
/// flash one write of at most that many records per interval instead of one per message. The
/// first after a quiet interval is written with its own group.
const BAD_MESSAGES_WRITE_EVERY: Duration = Duration::from_secs(5);
/// Closed history buckets held for the next write at most (about 72 bytes each).
const HISTORY_CLOSED_MAX: usize = 150_000;
/// Longest a group of telemetry is gathered before its commit.
const COMMIT_WINDOW: Duration = Duration::from_millis(1000);
/// A group with messages awaiting their acknowledgement is committed once the input has been
/// quiet this long.
const ACK_PAUSE: Duration = Duration::from_millis(5);
const HISTORY_COMPACT: Duration = Duration::from_secs(300);

/// One sink as the outbox knows it.
pub struct SinkSlot {
    pub name: String,
    pub wake: Notify,
    pub metrics: Arc<SinkMetrics>,
}

/// What the writer, the drain tasks and the rules' store thread share about the outbox.
pub struct Outbox {
    pub max_bytes: i64,
    bytes: AtomicI64,
    evicting: AtomicBool,
    pub sinks: Vec<SinkSlot>,
    status: StatusReporter,
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub fn new(
        max_bytes: i64,
        current_bytes: i64,
        sinks: Vec<String>,
        status: StatusReporter,
        metrics: Arc<Metrics>,
    ) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            max_bytes,
            bytes: AtomicI64::new(current_bytes),
            evicting: AtomicBool::new(false),
            sinks: sinks
                .into_iter()
                .map(|name| SinkSlot {
                    metrics: metrics.sink(&name),
                    name,
                    wake: Notify::new(),
                })
                .collect(),
            status,
            metrics,
        });
        outbox.publish_size();
        outbox
    }

    pub fn has_sinks(&self) -> bool {
        !self.sinks.is_empty()
    }

    pub fn bytes(&self) -> i64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A batch was committed (by the writer or the rules' store thread).
    pub fn added(&self, bytes: i64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.publish_size();
        for sink in &self.sinks {
            sink.wake.notify_one();
        }
    }

    /// Batches were deleted (delivered everywhere, or evicted).
    pub fn freed(&self, bytes: i64) {
        if bytes == 0 {
            return;
        }
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.publish_size();
        // Hysteresis: the fault clears only with real room again, not after each eviction step.
        if self.bytes() < self.max_bytes * 8 / 10 && self.evicting.swap(false, Ordering::Relaxed) {
            info!(
                outbox_bytes = self.bytes(),
                "Outbox has room again; eviction stopped."
            );
            self.status.set(status::OUTBOX_EVICTING, false);
        }
    }

    fn evicted(&self, points: u64, bytes: i64) {
        self.metrics
            .outbox_points_evicted
            .fetch_add(points, Ordering::Relaxed);
        self.metrics
            .outbox_evictions
            .fetch_add(1, Ordering::Relaxed);
        if !self.evicting.swap(true, Ordering::Relaxed) {
            self.status.set(status::OUTBOX_EVICTING, true);
        }
        error!(
            points,
            bytes,
            max_bytes = self.max_bytes,
            "Outbox full: the oldest telemetry was deleted before every sink received it."
        );
    }

    fn publish_size(&self) {
        self.metrics
            .outbox_bytes
            .store(self.bytes().max(0) as u64, Ordering::Relaxed);
    }

    pub fn status(&self) -> &StatusReporter {
        &self.status
    }
}

/// Starts the writer thread. It ends when `input` closes, after committing and acknowledging
/// everything it received.
/// The local history: how long and how large it is kept, how often closed buckets are
/// written, and which quantities get 10-second buckets.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    pub keep: Duration,
    pub max_bytes: i64,
    pub write_every: Duration,
    pub fine: FineQuantities,
}

pub fn spawn_writer(
    store: Store,
    input: mpsc::Receiver<Ingested>,
    outbox: Arc<Outbox>,
    history: Option<HistorySettings>,
    guard: crate::health::TaskGuard,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("parkguard-outbox".into())
        .spawn(move || {
            let _guard = guard;
            Writer::new(store, outbox, history, runtime).run(input)
        })
}

struct Writer {
    store: Store,
    outbox: Arc<Outbox>,
    history: Option<Accumulator>,
    history_keep_ms: i64,
    history_max_bytes: i64,
    history_write_every: Duration,
    last_flush: Instant,
    last_compact: Instant,
    text: String,
    gzip: Vec<u8>,
    failing_since: Option<Instant>,
    /// Rejected messages not written yet, the newest `BAD_MESSAGES_KEPT` at most.
    bad_pending: std::collections::VecDeque<BadMessage>,
    last_bad_write: Option<Instant>,
    runtime: tokio::runtime::Handle,
}

impl Writer {
    fn new(
        store: Store,
        outbox: Arc<Outbox>,
        history: Option<HistorySettings>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Writer {
            runtime,
            store,
            outbox,
            history_keep_ms: history.as_ref().map_or(0, |h| h.keep.as_millis() as i64),
            history_max_bytes: history.as_ref().map_or(0, |h| h.max_bytes),
            history_write_every: history
                .as_ref()
                .map_or(Duration::from_secs(60), |h| h.write_every),
            history: history.map(|h| Accumulator::new(h.fine)),
            last_flush: Instant::now(),
            last_compact: Instant::now(),
            text: String::new(),
            gzip: Vec::new(),
            failing_since: None,
            bad_pending: std::collections::VecDeque::new(),
            last_bad_write: None,
        }
    }

    fn run(mut self, mut input: mpsc::Receiver<Ingested>) {
        let mut group: Vec<Ingested> = Vec::new();
        loop {
            // History buckets close on time even when nothing arrives, and rejected messages
            // waiting for their write are written.
            let first = if self.history.is_some() || !self.bad_pending.is_empty() {
                // The timer must be made inside the runtime's context, hence the async block.
                let next = self
                    .runtime
                    .block_on(async { tokio::time::timeout(HISTORY_FLUSH, input.recv()).await });
                match next {
                    Ok(item) => item,
                    Err(_) => {
                        self.commit(&mut group, false);
                        continue;
                    }
                }
            } else {
                input.blocking_recv()
            };
            let Some(first) = first else { break };
            let opened = Instant::now();
            let mut readings = first.readings.as_ref().map_or(0, |r| r.len());
            let mut waiting_acks = first.ack.is_some();
            group.push(first);
            // Group commit: every commit costs a few pages of WAL and checkpoint however small
            // it is, so telemetry is gathered for up to `COMMIT_WINDOW` (flash wears by the
            // page). A group holding messages whose senders wait for their acknowledgement is
            // committed as soon as the input pauses: the broker may be holding the next ones
            // back until then.
            let mut open = true;
            while open && readings < MAX_COMMIT_READINGS {
                let item = match input.try_recv() {
                    Ok(item) => Some(item),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let left = COMMIT_WINDOW.saturating_sub(opened.elapsed());
                        let wait = if waiting_acks {
                            left.min(ACK_PAUSE)
                        } else {
                            left
                        };
                        if wait.is_zero() {
                            break;
                        }
                        match self
                            .runtime
                            .block_on(async { tokio::time::timeout(wait, input.recv()).await })
                        {
                            Ok(Some(item)) => Some(item),
                            Ok(None) => {
                                open = false;
                                None
                            }
                            Err(_) => break,
                        }
                    }
                };
                if let Some(item) = item {
                    readings += item.readings.as_ref().map_or(0, |r| r.len());
                    waiting_acks |= item.ack.is_some();
                    group.push(item);
                }
            }
            self.commit(&mut group, false);
            if !open {
                break;
            }
        }
        self.commit(&mut group, true);
        info!("Outbox writer stopped.");
    }

    /// Commits the group (retrying until it is stored), then acknowledges its messages.
    /// The history's retention now: its hours, and its size cap. The size is read here,
    /// outside the commit's transaction, so that the journal's writer never waits on it.
    fn history_retention(&self) -> Retention {
        let bytes = match self.store.history_bytes() {
            Ok(bytes) => bytes,
            Err(err) => {
                warn!(error = %err, "Could not measure the local history; its size cap is not applied this time.");
                0
            }
        };
        let retention = Retention::over_cap(self.history_keep_ms, bytes, self.history_max_bytes);
        if retention.drop_fraction > 0.0 {
            info!(
                history_mb = bytes / (1 << 20),
                max_mb = self.history_max_bytes / (1 << 20),
                "The local history is over its size cap; its oldest part is deleted."
            );
        }
        retention
    }

    fn commit(&mut self, group: &mut Vec<Ingested>, last: bool) {
        let now = Instant::now();
        let now_ms = now_ns() / 1_000_000;
        self.text.clear();
        let mut points = 0u64;
        let mut unencodable = 0u64;
        for item in group.iter_mut() {
            if let Some(readings) = &item.readings {
                if self.outbox.has_sinks() {
                    let skipped = line_protocol::encode(readings, &mut self.text);
                    unencodable += skipped as u64;
                    points += (readings.len() - skipped) as u64;
                }
                if let Some(history) = &mut self.history {
                    history.add(readings);
                }
            }
            if let Some(rejected) = item.rejected.take() {
                if self.bad_pending.len() >= BAD_MESSAGES_KEPT {
                    self.bad_pending.pop_front();
                }
                self.bad_pending.push_back(rejected);
            }
        }
        let bad_due = !self.bad_pending.is_empty()
            && (last
                || self
                    .last_bad_write
                    .is_none_or(|at| now.duration_since(at) >= BAD_MESSAGES_WRITE_EVERY));
        let bad: Vec<BadMessage> = if bad_due {
            self.bad_pending.drain(..).collect()
        } else {
            Vec::new()
        };
        // Written on time, or sooner when so many buckets wait that memory would suffer
        // (10,000 meters close 120,000 buckets every 10 s).
        let history_full = self
            .history
            .as_ref()
            .is_some_and(|h| h.closed_len() >= HISTORY_CLOSED_MAX);
        let flush_history =
            last || history_full || now.duration_since(self.last_flush) >= self.history_write_every;
        if let Some(history) = &mut self.history {
            if flush_history {
                history.close(now_ms, last);
                self.last_flush = now;
            }
        }
        let compact = (now.duration_since(self.last_compact) >= HISTORY_COMPACT
            && self.history.is_some())
        .then(|| self.history_retention());
        let history_due = self.history.as_ref().is_some_and(|h| h.has_closed());
        if group.is_empty() && bad.is_empty() && !history_due && compact.is_none() {
            return;
        }
        self.gzip.clear();
        if !self.text.is_empty() {
            self.gzip = influx::gzip(self.text.as_bytes());
        }
        let new_bytes = self.gzip.len() as i64;
        let mut evict_bytes = 0;
        if new_bytes > 0 {
            let over = self.outbox.bytes() + new_bytes - self.outbox.max_bytes;
            if over > 0 {
                evict_bytes = over + self.outbox.max_bytes / 10;
            }
        }
        let mut attempt = 0u32;
        let outcome = loop {
            let mut commit = IngestCommit {
                now_ms,
                telemetry: (new_bytes > 0).then_some((&self.gzip[..], points)),
                evict_bytes,
                room: (self.outbox.bytes(), self.outbox.max_bytes),
                bad_messages: &bad,
                history: self.history.as_mut(),
                compact_history: compact,
            };
            match self.store.commit_ingest(&mut commit) {
                Ok(outcome) => break outcome,
                Err(err) => {
                    attempt += 1;
                    self.outbox
                        .metrics
                        .outbox_commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if is_busy(&err) && attempt < 5 {
                        // Another writer of the store (the journal) held it: retried at once.
                        warn!(error = %err, attempt, "Outbox commit waited for the store; retried.");
                    } else if self.failing_since.is_none() || attempt.is_power_of_two() {
                        error!(error = %err, attempt, "Outbox commit failed; the messages stay unacknowledged and the commit is retried.");
                    }
                    self.failing_since.get_or_insert(now);
                    self.outbox
                        .metrics
                        .outbox_store_failing
                        .store(true, Ordering::Relaxed);
                    if last && attempt >= LAST_COMMIT_ATTEMPTS {
                        // Shutting down: the messages stay unacknowledged and come again.
                        error!("Giving up the last outbox commit at shutdown.");
                        return;
                    }
                    if is_disk_full(&err) && new_bytes > 0 {
                        // Make room from the oldest telemetry rather than stall ingest.
                        evict_bytes = evict_bytes.max(new_bytes + self.outbox.max_bytes / 10);
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))));
                }
            }
        };
        if let Some(since) = self.failing_since.take() {
            self.outbox
                .metrics
                .outbox_store_failing
                .store(false, Ordering::Relaxed);
            warn!(
                failed_for_ms = since.elapsed().as_millis() as u64,
                "Outbox commits work again."
            );
        }
        if compact.is_some() {
            self.last_compact = now;
        }
        if !bad.is_empty() {
            self.last_bad_write = Some(now);
        }
        let metrics = &self.outbox.metrics;
        metrics.outbox_commits.fetch_add(1, Ordering::Relaxed);
        if unencodable > 0 {
            metrics
                .readings_unencodable
                .fetch_add(unencodable, Ordering::Relaxed);
        }
        if outcome.dropped_points > 0 {
            metrics
                .outbox_points_dropped
                .fetch_add(outcome.dropped_points, Ordering::Relaxed);
        }
        if outcome.evicted.rows > 0 || outcome.dropped_points > 0 {
            self.outbox.freed(outcome.evicted.bytes);
            self.outbox.evicted(
                outcome.evicted.points + outcome.dropped_points,
                outcome.evicted.bytes,
            );
        }
        if outcome.inserted_bytes > 0 {
            metrics
                .outbox_points_committed
                .fetch_add(points, Ordering::Relaxed);
            self.outbox.added(outcome.inserted_bytes);
        }
        if group.iter().any(|item| item.ack.is_some()) {
            crate::crashpoint::reached(crate::crashpoint::OUTBOX_COMMITTED_BEFORE_ACK);
        }
        for item in group.drain(..) {
            if let Some(ack) = item.ack {
                ack.send();
            }
        }
    }
}

fn is_busy(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy
    )
}

fn is_disk_full(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DiskFull
    )
}
