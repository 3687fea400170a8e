//! One drain task per sink: reads the outbox through the sink's own cursor (alarm events
//! first, then telemetry, each in order), sends what it read as one request, and moves the
//! cursor only on the server's 2xx. What a failure means is decided by `influx::classify`:
//!
//! - 429/503 wait for `Retry-After`; other 5xx and transport errors back off exponentially
//!   with jitter; the same rows are sent again.
//! - 413 splits the request in halves until the server takes them.
//! - 400/422 (and other 4xx): a request of several outbox batches is sent again one batch at a
//!   time, so that only the batch the server refuses becomes a dead letter (kept with the
//!   server's message, re-sendable with `parkguard outbox retry-dead`); the rest go through.
//! - 401/403 keep the data, retry slowly, and raise the gateway fault G2 until a write works.
//!
//! Owns: one sink's HTTP traffic and cursor. Must not touch: the ingest side of the outbox.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::SinkMetrics;
use crate::model::now_ns;
use crate::sinks::influx::{self, classify, InfluxWriter, RetryClass, WriteError};
use crate::sinks::outbox_writer::Outbox;
use crate::status;
use crate::store::outbox::{Chunk, Class};
use crate::store::{Store, StoreError};

/// Outbox rows read per request at most (each row is one commit of the ingest path).
const MAX_ROWS: usize = 2000;
/// How often an idle drain task looks at the outbox without being woken (dead letters put
/// back by `parkguard outbox retry-dead` from another process).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How often the backlog gauges are refreshed.
const DEPTH_EVERY: Duration = Duration::from_secs(1);

/// Shutdown of the drain tasks: once `begin` is called they send what the outbox holds until
/// it is empty or the deadline has passed. What is left stays in the outbox for the next start.
#[derive(Default)]
pub struct Closing {
    token: CancellationToken,
    deadline: Mutex<Option<Instant>>,
}

impl Closing {
    pub fn begin(&self, grace: Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + grace);
        self.token.cancel();
    }

    fn closing(&self) -> bool {
        self.token.is_cancelled()
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps `delay`, or until the shutdown deadline when that comes first. False when the
    /// deadline has passed.
    async fn sleep(&self, delay: Duration) -> bool {
        let wake_at = Instant::now() + delay;
        if let Some(deadline) = self.deadline() {
            tokio::time::sleep_until(deadline.min(wake_at)).await;
            return Instant::now() < deadline;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => true,
            _ = self.token.cancelled() => !self.expired(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinkReport {
    pub name: String,
    /// Points still in the outbox for this sink when it stopped (sent at the next start).
    pub points_left: u64,
}

pub fn spawn(
    config: &Config,
    index: usize,
    outbox: Arc<Outbox>,
    store: Store,
    closing: Arc<Closing>,
) -> anyhow::Result<JoinHandle<SinkReport>> {
    let sink = &config.site.influx[index];
    let drain = Drain {
        name: sink.name.clone(),
        slot: index,
        writer: InfluxWriter::new(config, index)?,
        store: Arc::new(Mutex::new(store)),
        metrics: Arc::clone(&outbox.sinks[index].metrics),
        outbox,
        batch_points: sink.batch_points as u64,
        batch_age: Duration::from_millis(sink.batch_age_ms),
        closing,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        failing_since: None,
        unauthorized: false,
    };
    Ok(tokio::spawn(drain.run()))
}

struct Drain {
    name: String,
    slot: usize,
    writer: InfluxWriter,
    store: Arc<Mutex<Store>>,
    metrics: Arc<SinkMetrics>,
    outbox: Arc<Outbox>,
    batch_points: u64,
    batch_age: Duration,
    closing: Arc<Closing>,
    backoff: Backoff,
    failing_since: Option<Instant>,
    unauthorized: bool,
}

enum Sent {
    /// Every part was written or dead-lettered: the cursor may pass the chunk.
    Done,
    /// The server refused a request of several outbox batches as invalid.
    Isolate,
    /// A transient failure, waited out: read the rows again and send them again.
    Again,
    /// The shutdown deadline came first.
    Abandoned,
}

impl Drain {
    async fn run(mut self) -> SinkReport {
        // After a refused request of several batches, rows up to this id go one at a time.
        let mut one_at_a_time_until = 0i64;
        let mut depth_at = Instant::now() - DEPTH_EVERY;
        loop {
            if self.closing.expired() {
                break;
            }
            if depth_at.elapsed() >= DEPTH_EVERY {
                depth_at = Instant::now();
                self.refresh_depth().await;
            }
            let (name, points) = (self.name.clone(), self.batch_points);
            let rows = if one_at_a_time_until > 0 { 1 } else { MAX_ROWS };
            let chunk = match self.db(move |s| s.outbox_next(&name, points, rows)).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    one_at_a_time_until = 0;
                    if self.closing.closing() {
                        break;
                    }
                    self.refresh_depth().await;
                    self.idle(IDLE_POLL).await;
                    continue;
                }
                Err(err) => {
                    error!(sink = %self.name, error = %err, "Cannot read the outbox.");
                    self.closing.sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if chunk.last_id >= one_at_a_time_until {
                one_at_a_time_until = 0;
            }
            if let Some(wait) = self.worth_waiting(&chunk) {
                self.idle(wait).await;
                continue;
            }
            match self.send(&chunk).await {
                Sent::Done => {
                    let (name, class, last) = (self.name.clone(), chunk.class, chunk.last_id);
                    match self
                        .db(move |s| s.outbox_delivered(&name, class, last))
                        .await
                    {
                        Ok(freed) => self.outbox.freed(freed.bytes),
                        Err(err) => {
                            // The rows are sent again later: a duplicate, never a loss.
                            error!(sink = %self.name, error = %err, "Cannot move the outbox cursor.");
                        }
                    }
                }
                Sent::Isolate => one_at_a_time_until = chunk.last_id,
                Sent::Again => {}
                Sent::Abandoned => break,
            }
        }
        self.refresh_depth().await;
        let points_left = self.metrics.depth_points.load(Ordering::Relaxed);
        if points_left > 0 {
            warn!(sink = %self.name, points_left, "Stopping with points still in the outbox; they are sent at the next start.");
        }
        SinkReport {
            name: self.name,
            points_left,
        }
    }

    /// A small telemetry chunk waits for more, up to `batch_age` after its oldest reading;
    /// alarm events and shutdown never wait.
    fn worth_waiting(&self, chunk: &Chunk) -> Option<Duration> {
        if chunk.class == Class::Alarm
            || chunk.points >= self.batch_points
            || self.closing.closing()
        {
            return None;
        }
        let age_ms = (now_ns() / 1_000_000 - chunk.oldest_ms).max(0) as u64;
        let wait = self.batch_age.saturating_sub(Duration::from_millis(age_ms));
        (!wait.is_zero()).then_some(wait)
    }

    async fn idle(&self, longest: Duration) {
        tokio::select! {
            _ = self.outbox.sinks[self.slot].wake.notified() => {}
            _ = self.closing.sleep(longest) => {}
        }
    }

    async fn send(&mut self, chunk: &Chunk) -> Sent {
        let mut parts: VecDeque<(Bytes, u64)> = VecDeque::new();
        parts.push_back((Bytes::from(chunk.body.clone()), chunk.points));
        let mut whole = true;
        while let Some((body, points)) = parts.pop_front() {
            if self.closing.expired() {
                return Sent::Abandoned;
            }
            let err = match self.writer.write(&body).await {
                Ok(()) => {
                    self.written(points);
                    continue;
                }
                Err(err) => err,
            };
            self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
            let class = classify(&err);
            match class {
                RetryClass::Split => match split(&body, points) {
                    Some((first, second)) => {
                        warn!(sink = %self.name, points, "The server says the request is too large; splitting it.");
                        parts.push_front(second);
                        parts.push_front(first);
                        whole = false;
                    }
                    None => self.dead_letter(chunk, &body, points, &err).await,
                },
                RetryClass::Reject if whole && chunk.rows > 1 => {
                    warn!(sink = %self.name, error = %err, rows = chunk.rows, "The server refused a request as invalid; sending its batches one at a time to find the one it refuses.");
                    return Sent::Isolate;
                }
                RetryClass::Reject => self.dead_letter(chunk, &body, points, &err).await,
                RetryClass::Retry { .. } | RetryClass::Unauthorized => {
                    self.metrics
                        .points_retried
                        .fetch_add(points, Ordering::Relaxed);
                    let delay = match class {
                        RetryClass::Retry { after: Some(after) } => after,
                        RetryClass::Unauthorized => {
                            if !self.unauthorized {
                                self.unauthorized = true;
                                self.outbox
                                    .status()
                                    .set(&status::auth_refused(&self.name), true);
                            }
                            self.backoff.next_delay().max(Duration::from_secs(5))
                        }
                        _ => self.backoff.next_delay(),
                    };
                    self.failing(&err, class);
                    if !self.closing.sleep(delay).await {
                        return Sent::Abandoned;
                    }
                    // Read the rows again: eviction may have removed some meanwhile.
                    return Sent::Again;
                }
            }
        }
        Sent::Done
    }

    fn written(&mut self, points: u64) {
        self.metrics
            .points_written
            .fetch_add(points, Ordering::Relaxed);
        self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .last_write_ms
            .store((now_ns() / 1_000_000).max(0) as u64, Ordering::Relaxed);
        if let Some(since) = self.failing_since.take() {
            info!(sink = %self.name, attempts = self.backoff.attempts(), down_for_s = since.elapsed().as_secs(), "Sink writes recovered.");
        }
        if self.unauthorized {
            self.unauthorized = false;
            self.outbox
                .status()
                .set(&status::auth_refused(&self.name), false);
        }
        self.backoff.reset();
    }

    fn failing(&mut self, err: &WriteError, class: RetryClass) {
        if self.failing_since.is_some() {
            return;
        }
        self.failing_since = Some(Instant::now());
        if class == RetryClass::Unauthorized {
            error!(sink = %self.name, error = %err, "The server refuses the credentials; data is kept in the outbox and sent once they are fixed.");
        } else {
            warn!(sink = %self.name, error = %err, "Write failed; retrying with backoff. Data waits in the outbox.");
        }
    }

    async fn dead_letter(&self, chunk: &Chunk, body: &Bytes, points: u64, err: &WriteError) {
        let (status, message) = match err {
            WriteError::Status {
                status, message, ..
            } => (*status, message.clone()),
            WriteError::Transport(message) => (0, message.clone()),
        };
        error!(sink = %self.name, status, points, message = %message, "The server refuses a batch as invalid; it is kept as a dead letter (`parkguard outbox status`; `outbox retry-dead` once the cause is fixed).");
        self.metrics
            .points_dead_lettered
            .fetch_add(points, Ordering::Relaxed);
        let (name, class, created, body) = (
            self.name.clone(),
            chunk.class,
            chunk.oldest_ms,
            body.to_vec(),
        );
        let now_ms = now_ns() / 1_000_000;
        let stored = self
            .db(move |s| {
                s.outbox_dead_letter(
                    &name, class, created, points, &body, status, &message, now_ms,
                )
            })
            .await;
        if let Err(err) = stored {
            error!(sink = %self.name, error = %err, "Cannot keep the dead letter; the batch is lost.");
        }
    }

    async fn refresh_depth(&self) {
        let name = self.name.clone();
        if let Ok(depth) = self.db(move |s| s.outbox_depth(&name)).await {
            self.metrics
                .depth_points
                .store(depth.points, Ordering::Relaxed);
            self.metrics
                .depth_batches
                .store(depth.batches, Ordering::Relaxed);
            self.metrics.oldest_created_ms.store(
                depth.oldest_ms.unwrap_or(0).max(0) as u64,
                Ordering::Relaxed,
            );
        }
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        })
        .await
        {
            Ok(result) => result,
            Err(join) => Err(StoreError::Task(join.to_string())),
        }
    }
}

/// Halves a gzip body at the line nearest its middle; `None` for a single line.
fn split(body: &[u8], points: u64) -> Option<((Bytes, u64), (Bytes, u64))> {
    let text = influx::gunzip(body).ok()?;
    let lines = text.iter().filter(|&&b| b == b'\n').count().max(1);
    if lines < 2 {
        return None;
    }
    let mut seen = 0;
    let cut = text.iter().position(|&b| {
        if b == b'\n' {
            seen += 1;
        }
        seen == lines / 2
    })? + 1;
    let first_points = (points * (lines / 2) as u64 / lines as u64).max(1);
    Some((
        (Bytes::from(influx::gzip(&text[..cut])), first_points),
        (
            Bytes::from(influx::gzip(&text[cut..])),
            points.saturating_sub(first_points),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_halves_at_a_line_boundary() {
        let text = "m f=1 1\nm f=2 2\nm f=3 3\nm f=4 4\n";
        let ((a, pa), (b, pb)) = split(&influx::gzip(text.as_bytes()), 4).unwrap();
        assert_eq!(influx::gunzip(&a).unwrap(), b"m f=1 1\nm f=2 2\n");
        assert_eq!(influx::gunzip(&b).unwrap(), b"m f=3 3\nm f=4 4\n");
        assert_eq!((pa, pb), (2, 2));
        assert!(split(&influx::gzip(b"m f=1 1\n"), 1).is_none());
    }
}
