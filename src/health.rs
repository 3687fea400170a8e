//! The gateway's own liveness: which long-lived tasks and threads must never end outside
//! shutdown (supervision), whether its loops are still making progress (liveness, which alone
//! feeds the systemd watchdog), and the service manager's notifications.
//!
//! A safety gateway's worst failure is silence: a task that panicked or ended while the
//! process lives on keeps telemetry flowing while alarms stop. So every such task carries a
//! [`TaskGuard`]; when one is dropped outside shutdown (a panic unwinding, or a loop that
//! returned), the supervisor reports it and the daemon exits non-zero for systemd to restart
//! it. Alarm state survives restarts, so a restart is the safe answer.
//!
//! Owns: task guards, loop heartbeats, `sd_notify`. Must not touch: anything the tasks do; it
//! only watches. Depends on nothing else in the crate.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A long-lived task or thread that ended outside shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub task: String,
    /// `panicked: <message>` or `ended unexpectedly`.
    pub cause: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.task, self.cause)
    }
}

/// Watches the task guards of one running gateway.
pub struct Supervisor {
    stopping: Arc<AtomicBool>,
    failures_tx: mpsc::UnboundedSender<TaskFailure>,
    failures: tokio::sync::Mutex<mpsc::UnboundedReceiver<TaskFailure>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        install_panic_hook();
        let (failures_tx, failures) = mpsc::unbounded_channel();
        Supervisor {
            stopping: Arc::new(AtomicBool::new(false)),
            failures_tx,
            failures: tokio::sync::Mutex::new(failures),
        }
    }

    /// A guard to move into the task or thread called `task`.
    pub fn guard(&self, task: impl Into<String>) -> TaskGuard {
        TaskGuard {
            task: task.into(),
            stopping: Arc::clone(&self.stopping),
            failures: self.failures_tx.clone(),
            reported: false,
        }
    }

    /// `watch` for tasks whose handle is kept as a `JoinHandle<()>`.
    pub fn watch_unit(
        &self,
        task: impl Into<String>,
        handle: tokio::task::JoinHandle<()>,
    ) -> tokio::task::JoinHandle<()> {
        let watched = self.watch(task, handle);
        tokio::spawn(async move {
            let _ = watched.await;
        })
    }

    /// Supervises a spawned task from outside: when it ends outside shutdown, or panics, it is
    /// reported. The returned handle gives the task's output (`None` after a panic).
    pub fn watch<T: Send + 'static>(
        &self,
        task: impl Into<String>,
        handle: tokio::task::JoinHandle<T>,
    ) -> tokio::task::JoinHandle<Option<T>> {
        let mut guard = self.guard(task);
        tokio::spawn(async move {
            match handle.await {
                Ok(output) => Some(output),
                Err(err) if err.is_panic() => {
                    guard.fail(format!("panicked: {}", panic_text(&*err.into_panic())));
                    None
                }
                Err(_) => {
                    guard.fail("was cancelled".to_string());
                    None
                }
            }
        })
    }

    /// Shutdown has begun: tasks ending from now on are expected to.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The first task that failed; waits until one does.
    pub async fn failed(&self) -> TaskFailure {
        let mut failures = self.failures.lock().await;
        match failures.recv().await {
            Some(failure) => failure,
            // The supervisor holds a sender itself, so the channel never closes.
            None => std::future::pending().await,
        }
    }
}

/// Reports its task to the supervisor when dropped outside shutdown.
pub struct TaskGuard {
    task: String,
    stopping: Arc<AtomicBool>,
    failures: mpsc::UnboundedSender<TaskFailure>,
    reported: bool,
}

impl TaskGuard {
    /// Reports the task as failed now, with `cause`, shutdown or not.
    pub fn fail(&mut self, cause: String) {
        self.reported = true;
        let _ = self.failures.send(TaskFailure {
            task: self.task.clone(),
            cause,
        });
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        // Unwinding: the panic hook has just noted the message on this thread. (Tokio tasks
        // are watched from outside instead, with `Supervisor::watch`, since tokio drops a
        // panicked task's future only after catching the panic.)
        let cause = if std::thread::panicking() {
            match LAST_PANIC.with(|p| p.borrow_mut().take()) {
                Some(message) => format!("panicked: {message}"),
                None => "panicked".to_string(),
            }
        } else if self.stopping.load(Ordering::SeqCst) {
            return;
        } else {
            "ended unexpectedly".to_string()
        };
        let _ = self.failures.send(TaskFailure {
            task: std::mem::take(&mut self.task),
            cause,
        });
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps the default panic output and notes each panic's message on its thread, so that the
/// guard dropped next on that thread can say why its task ended.
fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_text(info.payload());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{message}{at}")));
            previous(info);
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_string()
    }
}

/// Heartbeats of the loops that must keep turning: the rules loop and each ingest loop. A loop
/// beats each time round and promises its next beat within a time; the watchdog is fed only
/// while every loop has kept its promise.
#[derive(Default)]
pub struct Liveness {
    loops: Mutex<Vec<Arc<Heartbeat>>>,
}

/// One loop's heartbeat.
pub struct Heartbeat {
    name: String,
    /// Milliseconds since the process's epoch by which the next beat is due.
    due_ms: AtomicU64,
}

/// Slack over a loop's own promise before it counts as stalled (scheduling, slow disks).
const LIVENESS_SLACK: Duration = Duration::from_secs(5);

fn process_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Heartbeat {
    /// The loop came round; it will come round again within `next`.
    pub fn beat(&self, next: Duration) {
        let due = process_ms() + (next + LIVENESS_SLACK).as_millis() as u64;
        self.due_ms.store(due, Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn overdue_ms(&self, now: u64) -> Option<u64> {
        let due = self.due_ms.load(Ordering::Relaxed);
        (now > due).then(|| now - due)
    }
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Liveness::default())
    }

    /// A heartbeat for the loop `name`, due within `first` (its start-up).
    pub fn register(&self, name: impl Into<String>, first: Duration) -> Arc<Heartbeat> {
        let heartbeat = Arc::new(Heartbeat {
            name: name.into(),
            due_ms: AtomicU64::new(0),
        });
        heartbeat.beat(first);
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&heartbeat));
        heartbeat
    }

    /// Stops watching a loop that ended on purpose (a reload replaces the pipeline).
    pub fn clear(&self) {
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The loops past their promised beat, with how long past.
    pub fn stalled(&self) -> Vec<(String, Duration)> {
        let now = process_ms();
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|h| {
                h.overdue_ms(now)
                    .map(|ms| (h.name.clone(), Duration::from_millis(ms)))
            })
            .collect()
    }
}

/// The service manager's notification socket (`Type=notify`), when started under one.
pub mod notify {
    use std::time::Duration;

    pub use sd_notify::NotifyState;

    /// Tells the service manager; a no-op outside systemd.
    pub fn send(state: &[NotifyState<'_>]) {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            let _ = sd_notify::notify(false, state);
        }
    }

    /// The watchdog period systemd asked for (`WatchdogSec=`), when it did.
    pub fn watchdog_period() -> Option<Duration> {
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            Some(Duration::from_micros(usec))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_outside_shutdown_is_reported() {
        let supervisor = Supervisor::new();
        let guard = supervisor.guard("looper");
        tokio::spawn(async move {
            let _guard = guard;
        })
        .await
        .ok();
        let failure = supervisor.failed().await;
        assert_eq!(failure.task, "looper");
        assert_eq!(failure.cause, "ended unexpectedly");
    }

    #[tokio::test]
    async fn a_panicking_thread_is_reported_with_its_message() {
        let supervisor = Supervisor::new();
        let guard = supervisor.guard("outbox writer");
        let thread = std::thread::spawn(move || {
            let _guard = guard;
            panic!("injected");
        });
        assert!(thread.join().is_err());
        let failure = supervisor.failed().await;
        assert_eq!(failure.task, "outbox writer");
        assert!(failure.cause.starts_with("panicked: injected"), "{failure}");
    }

    #[tokio::test]
    async fn a_watched_task_that_panics_is_reported_with_its_message() {
        let supervisor = Supervisor::new();
        let handle = supervisor.watch("dispatcher", tokio::spawn(async { panic!("boom") }));
        assert_eq!(handle.await.ok(), Some(None::<()>));
        let failure = supervisor.failed().await;
        assert_eq!(failure.task, "dispatcher");
        assert!(failure.cause.starts_with("panicked: boom"), "{failure}");
    }

    #[tokio::test]
    async fn tasks_ending_during_shutdown_are_not_failures() {
        let supervisor = Supervisor::new();
        let guard = supervisor.guard("ingest");
        supervisor.stopping();
        drop(guard);
        let waited = tokio::time::timeout(Duration::from_millis(50), supervisor.failed()).await;
        assert!(waited.is_err());
    }

    #[test]
    fn a_loop_past_its_promise_counts_as_stalled() {
        let liveness = Liveness::default();
        let beat = liveness.register("rules", Duration::from_secs(1));
        assert!(liveness.stalled().is_empty());
        // A promise already broken: due before now.
        beat.due_ms.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        let stalled = liveness.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].0, "rules");
    }
}
