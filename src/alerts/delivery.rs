//! Delivers the durable queue: one worker per lane (route × channel × e-mail recipient) sends
//! its pushes in queue order, retries with backoff and jitter until the receiver takes them or
//! the route's give-up time passes (which raises gateway fault G3), and sends a digest instead
//! of single pushes when the route's rate limit would be exceeded. A coordinator fires
//! escalation and reminder timers and wakes the lanes when the store writer queued something.
//!
//! The clock is injected: wall time in the daemon, Tokio's (pausable) clock in tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::channels::{Batch, Notifier};
use super::queue::{Lane, Queued};
use super::Router;
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::status::{given_up_quantity, StatusReporter};
use crate::store::{Store, StoreError};

/// Milliseconds since the Unix epoch, as the alert tasks see it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock, as the rule engine stamps transitions.
pub fn wall_clock() -> Clock {
    Arc::new(crate::model::now_ms)
}

/// `start_ms` plus the time elapsed on Tokio's clock, which `tokio::time::pause` controls.
pub fn tokio_clock(start_ms: i64) -> Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || start_ms + start.elapsed().as_millis() as i64)
}

/// Most pushes one digest carries.
const MAX_DIGEST: usize = 50;
/// Longest wait before an urgent push (a critical alarm) is tried again.
const URGENT_RETRY_MAX: Duration = Duration::from_secs(5);
/// Upper bound on one send, over the channel's own timeout, so that no lane can hang.
const SEND_LIMIT: Duration = Duration::from_secs(120);
/// Finished deliveries are kept this long for the web UI, then deleted.
const KEEP_FINISHED_MS: i64 = 30 * 24 * 3600 * 1000;

struct Shared {
    router: Arc<Router>,
    notifiers: BTreeMap<String, Arc<dyn Notifier>>,
    store: Arc<Mutex<Store>>,
    clock: Clock,
    status: Option<StatusReporter>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    /// The coordinator's wake-up, also used by lanes so that it re-counts the queue.
    wake: Arc<Notify>,
}

impl Shared {
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Sleeps `ms` (capped) unless cancelled first; false when cancelled.
    async fn pause(&self, ms: i64) -> bool {
        let wait = Duration::from_millis(ms.clamp(1, 3_600_000) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Like `pause`, but a push queued meanwhile (`notify`) ends the wait early: an urgent
    /// one must not wait out a backoff or a rate-limit window meant for the others.
    async fn pause_unless_queued(&self, ms: i64, notify: &Notify) -> bool {
        let wait = Duration::from_millis(ms.clamp(1, 3_600_000) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = notify.notified() => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// What the store writer needs to queue pushes and wake their delivery.
#[derive(Clone)]
pub struct QueueLink {
    pub router: Arc<Router>,
    pub wake: Arc<Notify>,
}

/// The running delivery tasks.
pub struct AlertService {
    /// Notified by the store writer after it queued pushes.
    pub wake: Arc<Notify>,
    task: JoinHandle<()>,
    cancel: CancellationToken,
}

impl AlertService {
    /// Starts the coordinator (and lane workers as lanes appear) over its own store connection.
    pub fn spawn(
        router: Arc<Router>,
        notifiers: BTreeMap<String, Arc<dyn Notifier>>,
        store: Store,
        clock: Clock,
        status: Option<StatusReporter>,
        metrics: Arc<Metrics>,
    ) -> AlertService {
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            router,
            notifiers,
            store: Arc::new(Mutex::new(store)),
            clock,
            status,
            metrics,
            cancel: cancel.clone(),
            wake: Arc::clone(&wake),
        });
        let task = tokio::spawn(coordinate(shared, Arc::clone(&wake)));
        AlertService { wake, task, cancel }
    }

    /// Reports the coordinator to `supervisor` when it ends outside shutdown or panics.
    pub fn supervise(&mut self, supervisor: &crate::health::Supervisor) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let watched = supervisor.watch("alert delivery", task);
        self.task = tokio::spawn(async move {
            let _ = watched.await;
        });
    }

    pub fn link(&self, router: Arc<Router>) -> QueueLink {
        QueueLink {
            router,
            wake: Arc::clone(&self.wake),
        }
    }

    /// Stops after the sends in flight; what is left stays queued for the next start.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn coordinate(shared: Arc<Shared>, wake: Arc<Notify>) {
    let mut lanes: BTreeMap<Lane, (Arc<Notify>, JoinHandle<()>)> = BTreeMap::new();
    let mut last_purge: Option<i64> = None;
    loop {
        let now = (shared.clock)();
        let router = Arc::clone(&shared.router);
        let purge = last_purge.is_none_or(|at| now - at > 3_600_000);
        let pass = shared
            .db(move |s| {
                let fired = s.alert_fire_timers(&router, now)?;
                if purge {
                    s.alert_purge(now - KEEP_FINISHED_MS)?;
                }
                Ok((
                    fired,
                    s.alert_lanes()?,
                    s.alert_pending()?,
                    s.alert_next_timer()?,
                    s.alert_oldest_critical()?,
                ))
            })
            .await;
        let next_timer = match pass {
            Ok((fired, pending_lanes, pending, next_timer, oldest_critical)) => {
                let critical_waiting = !oldest_critical.is_empty();
                *shared
                    .metrics
                    .alerts_oldest_critical
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = oldest_critical;
                if purge {
                    last_purge = Some(now);
                }
                shared
                    .metrics
                    .alerts_queued
                    .fetch_add(fired, Ordering::Relaxed);
                shared
                    .metrics
                    .alerts_pending
                    .store(pending, Ordering::Relaxed);
                // A lane worker that panicked would leave its receiver silent for good: end
                // delivery, which its supervisor reports (the daemon restarts).
                let finished: Vec<Lane> = lanes
                    .iter()
                    .filter(|(_, (_, task))| task.is_finished())
                    .map(|(lane, _)| lane.clone())
                    .collect();
                for lane in finished {
                    if let Some((notify, task)) = lanes.remove(&lane) {
                        if let Err(err) = task.await {
                            if err.is_panic() {
                                error!(route = %lane.route, channel = %lane.channel, "An alert lane worker panicked; alert delivery stops.");
                                return;
                            }
                        }
                        // Ended by design (its route or channel is gone): not started again.
                        lanes.insert(lane, (notify, tokio::spawn(async {})));
                    }
                }
                for lane in pending_lanes {
                    let (notify, _) = lanes.entry(lane.clone()).or_insert_with(|| {
                        let notify = Arc::new(Notify::new());
                        let task =
                            tokio::spawn(work_lane(Arc::clone(&shared), lane, Arc::clone(&notify)));
                        (notify, task)
                    });
                    notify.notify_one();
                }
                // While a critical push waits, look again soon: its lateness is a gateway fault.
                if critical_waiting {
                    Some(next_timer.map_or(now + 2000, |t| t.min(now + 2000)))
                } else {
                    next_timer
                }
            }
            Err(err) => {
                error!(error = %err, "Alert queue unreadable; trying again in 5 s.");
                Some(now + 5000)
            }
        };
        let sleep_ms = next_timer.map_or(60_000, |due| (due - now).clamp(0, 60_000));
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            _ = shared.cancel.cancelled() => break,
        }
    }
    for (_, (_, task)) in lanes {
        let _ = task.await;
    }
    info!("Alert delivery stopped.");
}

async fn work_lane(shared: Arc<Shared>, lane: Lane, notify: Arc<Notify>) {
    let Some(route) = shared
        .router
        .config()
        .routes
        .iter()
        .find(|r| r.name == lane.route)
        .cloned()
    else {
        warn!(route = %lane.route, "Queued pushes name a route that no longer exists; they stay queued.");
        return;
    };
    let Some(notifier) = shared.notifiers.get(&lane.channel).cloned() else {
        warn!(channel = %lane.channel, "Queued pushes name a channel that no longer exists; they stay queued.");
        return;
    };
    let window_ms = route.rate_limit.per_s as i64 * 1000;
    let give_up_ms = route.give_up_after_s as i64 * 1000;
    let given_up = given_up_quantity(&route.name);
    let mut sent: VecDeque<i64> = VecDeque::new();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    while !shared.cancel.is_cancelled() {
        let head_lane = lane.clone();
        let head = match shared
            .db(move |s| s.alert_lane_head(&head_lane, MAX_DIGEST))
            .await
        {
            Ok(head) => head,
            Err(err) => {
                error!(error = %err, route = %lane.route, "Alert queue unreadable.");
                if !shared.pause(5000).await {
                    return;
                }
                continue;
            }
        };
        let Some(first) = head.first() else {
            tokio::select! {
                _ = notify.notified() => continue,
                _ = shared.cancel.cancelled() => return,
            }
        };
        let now = (shared.clock)();
        let urgent = first.notice.urgent();
        if first.next_ms > now {
            if !shared
                .pause_unless_queued(first.next_ms - now, &notify)
                .await
            {
                return;
            }
            continue;
        }
        while sent.front().is_some_and(|t| now - t >= window_ms) {
            sent.pop_front();
        }
        let slots = (route.rate_limit.max as usize).saturating_sub(sent.len());
        // Urgent pushes (critical alarms) are never held by the rate limit.
        if slots == 0 && !urgent {
            let opens = sent.front().map_or(now, |t| t + window_ms);
            if !shared.pause_unless_queued(opens - now, &notify).await {
                return;
            }
            continue;
        }
        // More waiting than the window has room for: one digest now instead of a flood. An
        // urgent push always goes alone (urgent ones are first in the head, the rest after).
        let take = if !urgent && head.len() > slots {
            head.iter().take_while(|q| !q.notice.urgent()).count()
        } else {
            1
        };
        let rows: Vec<&Queued> = head.iter().take(take).collect();
        let ids: Vec<i64> = rows.iter().map(|q| q.id).collect();
        let batch = Batch {
            id: match ids.as_slice() {
                [one] => format!("d{one}"),
                [a, .., b] => format!("d{a}-d{b}"),
                [] => String::new(),
            },
            recipient: lane.recipient.clone(),
            notices: rows.iter().map(|q| q.notice.clone()).collect(),
            sent_at_ms: now,
        };
        let outcome = match tokio::time::timeout(SEND_LIMIT, notifier.send(&batch)).await {
            Ok(result) => result,
            Err(_) => Err(super::channels::SendError {
                message: format!("no answer within {} s", SEND_LIMIT.as_secs()),
                retry_after: None,
            }),
        };
        let now = (shared.clock)();
        let batch_id = batch.id.clone();
        let record = match outcome {
            Ok(()) => {
                crate::crashpoint::reached(crate::crashpoint::PUSH_DELIVERED_BEFORE_RECORD);
                sent.push_back(now);
                backoff.reset();
                let m = &shared.metrics;
                m.alerts_delivered
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                if ids.len() > 1 {
                    m.alerts_digests.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(status) = &shared.status {
                    status.set(&given_up, false);
                }
                shared
                    .db(move |s| s.alert_mark(&ids, "delivered", &batch_id, None, now, now))
                    .await
            }
            Err(err) => {
                shared
                    .metrics
                    .alerts_send_failures
                    .fetch_add(1, Ordering::Relaxed);
                if now - first.created_ms >= give_up_ms {
                    error!(route = %lane.route, channel = %lane.channel, pushes = ids.len(), error = %err.message, "Alarm pushes given up after the route's give-up time.");
                    shared
                        .metrics
                        .alerts_given_up
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    if let Some(status) = &shared.status {
                        status.set(&given_up, true);
                    }
                    shared
                        .db(move |s| {
                            s.alert_mark(&ids, "failed", &batch_id, Some(&err.message), now, now)
                        })
                        .await
                } else {
                    // A failing receiver is retried with backoff; an urgent push at most
                    // every few seconds, unless the receiver asks for longer.
                    let mut delay = backoff.next_delay();
                    if urgent {
                        delay = delay.min(URGENT_RETRY_MAX);
                    }
                    let delay = delay.max(err.retry_after.unwrap_or_default());
                    warn!(route = %lane.route, channel = %lane.channel, attempt = first.attempts + 1, retry_in_ms = delay.as_millis() as u64, error = %err.message, "Alarm push failed; retrying.");
                    let next = now + delay.as_millis() as i64;
                    shared
                        .db(move |s| {
                            s.alert_mark(&ids, "pending", &batch_id, Some(&err.message), now, next)
                        })
                        .await
                }
            }
        };
        shared.wake.notify_one();
        if let Err(err) = record {
            // The push may go out again: receivers can drop it by its delivery id.
            error!(error = %err, "Outcome of an alarm push could not be recorded.");
            if !shared.pause(1000).await {
                return;
            }
        }
    }
}
