//! Running the daemon and talking to it: `run` (with hot reload on SIGHUP or `parkguard
//! reload`, and the control socket), `status` and `reload`.
//!
//! A reload re-reads the whole site file (devices, rule sets, routes, users). An invalid file
//! is refused with its errors and the running configuration kept. A valid one replaces the
//! running gateway: it stops as at shutdown (everything received is committed and
//! acknowledged first; the broker keeps what arrives meanwhile for the persistent session) and
//! starts again with the new file, restoring the alarm states from the store, so alarms
//! survive, and alarms of rules that no longer exist are retired with a journal entry.
//!
//! A task of the gateway that ends or panics outside shutdown ends the daemon with exit code
//! 3, its cause at ERROR and in a note beside the store that the next start raises as gateway
//! fault G10: systemd restarts it, and alarm states survive restarts. Under systemd
//! (`Type=notify`) the daemon reports ready and stopping, and feeds the watchdog only while
//! every loop's heartbeat is on time. A shutdown is bounded by `gateway.shutdown_deadline_s`
//! beyond the sinks' grace, and a second SIGINT/SIGTERM exits at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use parkguard::config::Config;
use parkguard::control::{self, Answer, ReloadSummary, Reloaded, Request};
use parkguard::health::notify::{self, NotifyState};
use parkguard::health::TaskFailure;
use parkguard::pipeline::Gateway;
use parkguard::status::failure_note_path;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{load, usage_error, wait_for_signal, EXIT_INVALID_CONFIG, EXIT_TASK_FAILED};

/// `parkguard run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Site configuration file.
    #[arg(short, long, env = "PARKGUARD_CONFIG")]
    pub config: PathBuf,
}

/// `parkguard status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Site configuration file of the running daemon (only its `gateway.store` is read).
    #[arg(short, long, env = "PARKGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The control socket itself.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// `parkguard reload`.
#[derive(clap::Args)]
pub struct ReloadArgs {
    /// Site configuration file of the running daemon (only its `gateway.store` is read).
    #[arg(short, long, env = "PARKGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The control socket itself.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

fn problems_text(problems: &[parkguard::config::Problem]) -> Vec<String> {
    problems.iter().map(|p| p.to_string()).collect()
}

/// Re-reads `file` and, when valid, replaces the running gateway; the answer names the outcome.
async fn reload(file: &Path, gateway: &mut Option<Gateway>, reloads: &mut u64) -> Answer {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "Reload refused: the site file has problems.");
            }
            return Answer::refused(problems_text(&problems));
        }
    };
    let Some(running) = gateway.take() else {
        return Answer::refused(vec!["the gateway is not running".into()]);
    };
    let old = running.config().clone();
    let store = |c: &Config| c.resolve_path(&c.site.gateway.store);
    let old_store = store(&old);
    if store(&old) != store(&config) {
        *gateway = Some(running);
        return Answer::refused(vec![
            "gateway.store changed: that takes a restart of the daemon".into(),
        ]);
    }
    tracing::info!("Reloading the site file.");
    running.shutdown().await;
    let summary = ReloadSummary {
        devices: config.site.devices.len(),
        rules: config.rules.len(),
        routes: config.site.alerts.as_ref().map_or(0, |a| a.routes.len()),
        users: config.site.web.as_ref().map_or(0, |w| w.users.len()),
    };
    match Gateway::restart(config).await {
        Ok(started) => {
            *gateway = Some(started);
            parkguard::footprint::release_freed_memory();
            *reloads += 1;
            tracing::info!(
                devices = summary.devices,
                rules = summary.rules,
                routes = summary.routes,
                users = summary.users,
                "Reloaded."
            );
            Answer::Reloaded(Reloaded {
                ok: true,
                reloads: *reloads,
                loaded: summary,
            })
        }
        Err(err) => {
            let message = format!("{err:#}");
            tracing::error!(error = %message, "The new configuration did not start; going back to the previous one.");
            match Gateway::restart(old).await {
                Ok(previous) => *gateway = Some(previous),
                Err(again) => {
                    // Running without a gateway would keep the process (and the watchdog)
                    // alive while nothing is watched: exit for the service manager instead.
                    exit_on_failure(
                        TaskFailure {
                            task: "reload".into(),
                            cause: format!(
                                "neither the new nor the previous configuration started: {again:#}"
                            ),
                        },
                        Some(&old_store),
                    );
                }
            }
            Answer::refused(vec![message])
        }
    }
}

/// `parkguard run`: the daemon until SIGINT/SIGTERM; SIGHUP and `parkguard reload` reload.
pub fn run(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    parkguard::footprint::limit_allocator_arenas();
    let runtime = match super::multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let socket = control::socket_path(&config.resolve_path(&config.site.gateway.store));
        let mut gateway = match Gateway::start(config).await {
            Ok(gateway) => {
                parkguard::footprint::release_freed_memory();
                Some(gateway)
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "Startup failed.");
                return ExitCode::FAILURE;
            }
        };
        let cancel = CancellationToken::new();
        let (calls_tx, mut calls) = mpsc::channel(8);
        let server = tokio::spawn(control::serve(socket.clone(), calls_tx, cancel.clone()));
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(error = %err, "No SIGHUP handler; use `parkguard reload`.");
                None
            }
        };
        let mut reloads = 0u64;
        let stop = wait_for_signal();
        tokio::pin!(stop);
        let store_path = gateway
            .as_ref()
            .map(|g| g.config().resolve_path(&g.config().site.gateway.store));
        let watchdog = notify::watchdog_period();
        let mut feed = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 3));
        let mut starving = false;
        notify::send(&[NotifyState::Ready, NotifyState::Status("running")]);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                failure = async { match &gateway { Some(g) => g.failed().await, None => std::future::pending().await } } => {
                    exit_on_failure(failure, store_path.as_deref());
                }
                _ = feed.tick(), if watchdog.is_some() => {
                    let stalled = gateway.as_ref().map(|g| g.liveness().stalled()).unwrap_or_default();
                    if stalled.is_empty() {
                        notify::send(&[NotifyState::Watchdog]);
                        if starving {
                            starving = false;
                            tracing::info!("Every loop turns again; the watchdog is fed.");
                        }
                    } else if !starving {
                        starving = true;
                        let loops: Vec<String> = stalled
                            .iter()
                            .map(|(name, late)| format!("{name} ({} s late)", late.as_secs()))
                            .collect();
                        tracing::error!(loops = %loops.join(", "), "Loops have stopped turning; the watchdog is no longer fed and systemd will restart the daemon.");
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    notify::send(&[NotifyState::Reloading]);
                    reload(file, &mut gateway, &mut reloads).await;
                    notify::send(&[NotifyState::Ready]);
                }
                Some((request, reply)) = calls.recv() => {
                    let answer = match request {
                        Request::Status => match &gateway {
                            Some(g) => {
                                let mut status = g.status().await;
                                status.reloads = reloads;
                                Answer::Status(Box::new(status))
                            }
                            None => Answer::refused(vec!["the gateway is not running".into()]),
                        },
                        Request::Reload => reload(file, &mut gateway, &mut reloads).await,
                    };
                    let _ = reply.send(answer);
                }
            }
        }
        tracing::info!("Shutting down.");
        notify::send(&[NotifyState::Stopping]);
        cancel.cancel();
        if let Ok(Err(err)) = server.await {
            tracing::warn!(error = %err, socket = %socket.display(), "Control socket was not available.");
        }
        // What the sinks could not take within the grace period stays in the outbox (the drain
        // tasks have logged it) and is sent at the next start.
        if let Some(gateway) = gateway {
            let site = &gateway.config().site.gateway;
            let deadline = Duration::from_secs(site.shutdown_grace_s + site.shutdown_deadline_s);
            tokio::select! {
                result = tokio::time::timeout(deadline, gateway.shutdown()) => {
                    if result.is_err() {
                        tracing::error!(deadline_s = deadline.as_secs(), "Shutdown did not finish within its deadline; exiting now. Unacknowledged messages come again from the broker.");
                        std::process::exit(1);
                    }
                }
                _ = wait_for_signal() => {
                    tracing::warn!("Second signal: exiting at once. Unacknowledged messages come again from the broker.");
                    std::process::exit(130);
                }
            }
        }
        ExitCode::SUCCESS
    })
}

/// Logs a task failure, leaves its cause beside the store for the next start (gateway fault
/// G10) and exits at once: a gateway with a dead task must not limp on, and alarm states
/// survive the restart. No graceful shutdown is tried, since it may wait on the dead task;
/// what was not committed is still unacknowledged at the broker and comes again.
fn exit_on_failure(failure: TaskFailure, store: Option<&Path>) -> ! {
    tracing::error!(task = %failure.task, cause = %failure.cause, "A task of the gateway failed; exiting for the service manager to restart the daemon.");
    if let Some(store) = store {
        let at = unix_time_text();
        let note = format!("{at} {failure}\n");
        if let Err(err) = std::fs::write(failure_note_path(store), note) {
            tracing::warn!(error = %err, "Cannot leave the failure note beside the store.");
        }
    }
    notify::send(&[
        NotifyState::Stopping,
        NotifyState::Status(&format!("task failed: {failure}")),
    ]);
    std::process::exit(i32::from(EXIT_TASK_FAILED))
}

/// Seconds since the Unix epoch, for the failure note.
fn unix_time_text() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("unix {}", d.as_secs()))
        .unwrap_or_default()
}

/// The control socket of the daemon running `site` (read leniently: a site file being fixed
/// may not validate, but its store path is all that is needed), or `socket` itself.
fn socket_of(site: Option<&Path>, socket: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(socket) = socket {
        return Ok(socket);
    }
    let Some(site) = site else {
        return Err(usage_error(
            "give the site file (-c) or the control socket (--socket)",
        ));
    };
    let text = std::fs::read_to_string(site).map_err(|e| {
        eprintln!("{}: {e}", site.display());
        ExitCode::from(EXIT_INVALID_CONFIG)
    })?;
    let store = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("gateway")?.get("store")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("parkguard.db"));
    let base = site.parent().unwrap_or(Path::new("."));
    Ok(control::socket_path(&base.join(store)))
}

fn ask(socket: &Path, request: Request) -> Result<Answer, ExitCode> {
    let runtime = super::current_thread_runtime()?;
    runtime
        .block_on(control::call(socket, request))
        .map_err(|err| {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        })
}

/// `parkguard status`
pub fn status(site: Option<&Path>, socket: Option<PathBuf>, as_json: bool) -> ExitCode {
    let socket = match socket_of(site, socket) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let s = match ask(&socket, Request::Status) {
        Ok(Answer::Status(s)) => s,
        Ok(other) => return refused(other),
        Err(code) => return code,
    };
    if as_json {
        match serde_json::to_string(&s) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "parkguard {} · gateway {} · up {} s · reloaded {} time(s)",
        s.version, s.gateway, s.uptime_s, s.reloads
    );
    println!("site: {}", s.site);
    for m in &s.mqtt {
        println!(
            "mqtt {}: {} ({})",
            m.name,
            if m.connected {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            m.broker
        );
    }
    for m in &s.modbus {
        println!(
            "modbus {}: {} unit(s), {} offline ({})",
            m.name, m.units, m.units_offline, m.address
        );
    }
    let offline = &s.devices.offline;
    println!(
        "devices: {} configured, {} offline{}",
        s.devices.configured,
        offline.len(),
        if offline.is_empty() {
            String::new()
        } else {
            format!(": {}", offline.join(", "))
        }
    );
    println!("outbox: {} bytes", s.outbox.bytes);
    for sink in &s.outbox.sinks {
        println!(
            "  sink {}: {} points waiting, oldest {} s",
            sink.name, sink.points_waiting, sink.oldest_waiting_s
        );
    }
    println!(
        "pushes: {} waiting, {} delivered, {} given up",
        s.alerts.pending, s.alerts.delivered, s.alerts.given_up
    );
    let by_severity: Vec<String> = s
        .alarms
        .by_severity
        .iter()
        .map(|(severity, n)| format!("{severity} {n}"))
        .collect();
    println!(
        "alarms: {} active, {} unacknowledged ({})",
        s.alarms.active,
        s.alarms.unacknowledged,
        by_severity.join(", ")
    );
    for key in &s.alarms.unacknowledged_critical {
        println!("  CRITICAL unacknowledged: {key}");
    }
    ExitCode::SUCCESS
}

/// An answer that is not the one asked for: its errors, exit 1.
fn refused(answer: Answer) -> ExitCode {
    match answer {
        Answer::Refused(r) => {
            for e in r.errors {
                eprintln!("{e}");
            }
        }
        other => eprintln!("unexpected answer from the daemon: {other:?}"),
    }
    ExitCode::FAILURE
}

/// `parkguard reload`: exit 0 when reloaded, 2 when the file was refused (errors printed).
pub fn reload_command(site: Option<&Path>, socket: Option<PathBuf>) -> ExitCode {
    let socket = match socket_of(site, socket) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match ask(&socket, Request::Reload) {
        Ok(Answer::Reloaded(r)) => {
            let l = r.loaded;
            println!(
                "reloaded: {} devices, {} rules, {} routes, {} users",
                l.devices, l.rules, l.routes, l.users
            );
            ExitCode::SUCCESS
        }
        Ok(Answer::Refused(r)) => {
            for e in r.errors {
                eprintln!("{e}");
            }
            eprintln!("reload refused; the daemon keeps running with the configuration it had");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
        Ok(other) => refused(other),
        Err(code) => code,
    }
}
