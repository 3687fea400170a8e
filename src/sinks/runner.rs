//! One runner per sink, as two tasks: the batcher gathers readings into batches by size and age;
//! the writer sends batches in order and applies the retry classes of `influx::classify`.
//!
//! They share a bounded in-memory queue, so a slow or dead InfluxDB never slows the batcher
//! (and so never slows ingest or another sink). While the sink is down the queue grows up to
//! `max_buffered_points`; beyond that the oldest batch is dropped and counted. (A durable
//! SQLite outbox replaces this bound in a later change.)
//!
//! Shutdown: the batcher ends when its input closes, hands over the last partial batch and
//! starts the grace period; the writer keeps writing until the queue is empty or the grace
//! period is over, and reports what it left.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::ingest::backoff::Backoff;

use crate::metrics::{Metrics, SinkMetrics};
use crate::model::{Reading, ReadingBatch};
use crate::sinks::influx::{classify, InfluxWriter, RetryClass};
use crate::sinks::line_protocol;

/// Message batches (one per MQTT message) waiting for the batcher.
const INPUT_CAPACITY: usize = 16_384;

pub struct SinkHandle {
    pub name: String,
    pub input: mpsc::Sender<ReadingBatch>,
    pub done: JoinHandle<SinkReport>,
}

#[derive(Debug, Clone)]
pub struct SinkReport {
    pub name: String,
    /// Points still queued when the grace period ended.
    pub points_left: u64,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Vec<Reading>>,
    points: usize,
    /// Set by the batcher when its input has closed: no more batches will come.
    closing_deadline: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    max_points: usize,
    metrics: Arc<SinkMetrics>,
    name: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_back(&self, batch: Vec<Reading>) {
        if batch.is_empty() {
            return;
        }
        let mut dropped = 0;
        {
            let mut q = self.lock();
            q.points += batch.len();
            q.batches.push_back(batch);
            while q.points > self.max_points && q.batches.len() > 1 {
                if let Some(oldest) = q.batches.pop_front() {
                    q.points -= oldest.len();
                    dropped += oldest.len();
                }
            }
            self.metrics
                .points_buffered
                .store(q.points as u64, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.metrics
                .points_dropped_overflow
                .fetch_add(dropped as u64, Ordering::Relaxed);
            error!(sink = %self.name, dropped, "Sink buffer full: oldest points dropped.");
        }
        self.wake.notify_one();
    }

    fn push_front(&self, batch: Vec<Reading>) {
        let mut q = self.lock();
        q.points += batch.len();
        q.batches.push_front(batch);
        self.metrics
            .points_buffered
            .store(q.points as u64, Ordering::Relaxed);
    }

    fn pop_front(&self) -> Option<Vec<Reading>> {
        let mut q = self.lock();
        let batch = q.batches.pop_front()?;
        q.points -= batch.len();
        self.metrics
            .points_buffered
            .store(q.points as u64, Ordering::Relaxed);
        Some(batch)
    }
}

pub fn spawn(config: &Config, index: usize, metrics: &Metrics) -> anyhow::Result<SinkHandle> {
    let sink = &config.site.influx[index];
    let writer = InfluxWriter::new(config, index)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        wake: Notify::new(),
        max_points: sink.max_buffered_points.max(sink.batch_points),
        metrics: metrics.sink(&sink.name),
        name: sink.name.clone(),
    });
    let (input, rx) = mpsc::channel(INPUT_CAPACITY);
    let grace = Duration::from_secs(config.site.gateway.shutdown_grace_s);
    tokio::spawn(batcher(
        rx,
        Arc::clone(&shared),
        sink.batch_points,
        Duration::from_millis(sink.batch_age_ms),
        grace,
    ));
    let done = tokio::spawn(writer_task(writer, shared));
    Ok(SinkHandle {
        name: sink.name.clone(),
        input,
        done,
    })
}

async fn batcher(
    mut rx: mpsc::Receiver<ReadingBatch>,
    shared: Arc<Shared>,
    batch_points: usize,
    batch_age: Duration,
    grace: Duration,
) {
    let mut current: Vec<Reading> = Vec::with_capacity(batch_points);
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(readings) => {
                    if current.is_empty() {
                        deadline = Some(Instant::now() + batch_age);
                    }
                    current.extend(readings.iter().cloned());
                    if current.len() >= batch_points {
                        shared.push_back(std::mem::replace(&mut current, Vec::with_capacity(batch_points)));
                        deadline = None;
                    }
                }
                None => break,
            },
            _ = sleep_until_opt(deadline) => {
                shared.push_back(std::mem::replace(&mut current, Vec::with_capacity(batch_points)));
                deadline = None;
            }
        }
    }
    shared.push_back(current);
    shared.lock().closing_deadline = Some(Instant::now() + grace);
    shared.wake.notify_one();
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn writer_task(writer: InfluxWriter, shared: Arc<Shared>) -> SinkReport {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut failing_since: Option<Instant> = None;
    let mut body = String::new();
    loop {
        let Some(batch) = shared.pop_front() else {
            let deadline = shared.lock().closing_deadline;
            if deadline.is_some() {
                break;
            }
            shared.wake.notified().await;
            continue;
        };
        body.clear();
        let unencodable = line_protocol::encode(&batch, &mut body);
        if unencodable > 0 {
            shared
                .metrics
                .points_unencodable
                .fetch_add(unencodable as u64, Ordering::Relaxed);
        }
        let result = writer.write(&body).await;
        let points = batch.len() as u64;
        let err = match result {
            Ok(()) => {
                shared
                    .metrics
                    .points_written
                    .fetch_add(points - unencodable as u64, Ordering::Relaxed);
                shared
                    .metrics
                    .batches_written
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    info!(sink = %shared.name, attempts = backoff.attempts(), down_for_s = since.elapsed().as_secs(), "Sink writes recovered.");
                }
                backoff.reset();
                continue;
            }
            Err(err) => err,
        };
        shared
            .metrics
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        let class = classify(&err);
        let delay = match class {
            RetryClass::Reject => {
                shared
                    .metrics
                    .points_rejected
                    .fetch_add(points, Ordering::Relaxed);
                error!(sink = %shared.name, points, error = %err, "InfluxDB refused a batch as invalid; it is dropped.");
                continue;
            }
            RetryClass::Split if batch.len() > 1 => {
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                warn!(sink = %shared.name, points, "InfluxDB says the batch is too large; splitting it.");
                shared.push_front(second);
                shared.push_front(first);
                continue;
            }
            RetryClass::Split => {
                shared
                    .metrics
                    .points_rejected
                    .fetch_add(points, Ordering::Relaxed);
                error!(sink = %shared.name, error = %err, "InfluxDB refuses even a single point as too large; it is dropped.");
                continue;
            }
            RetryClass::Retry { after } => after.unwrap_or_else(|| backoff.next_delay()),
            RetryClass::Unauthorized => backoff.next_delay().max(Duration::from_secs(5)),
        };
        shared.push_front(batch);
        if failing_since.is_none() {
            failing_since = Some(Instant::now());
            if class == RetryClass::Unauthorized {
                error!(sink = %shared.name, error = %err, "InfluxDB refuses the credentials; data is kept and retried until they are fixed.");
            } else {
                warn!(sink = %shared.name, error = %err, "InfluxDB write failed; retrying with backoff.");
            }
        }
        let wake_at = Instant::now() + delay;
        let deadline = shared.lock().closing_deadline;
        match deadline {
            Some(deadline) if deadline <= wake_at => {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            _ => tokio::time::sleep_until(wake_at).await,
        }
    }
    let points_left = shared.lock().points as u64;
    if points_left > 0 {
        error!(sink = %shared.name, points_left, "Shutdown grace period over: points not written.");
    }
    SinkReport {
        name: shared.name.clone(),
        points_left,
    }
}
