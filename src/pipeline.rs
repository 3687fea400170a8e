//! Wiring: builds the stages back to front (embedded broker, store, alert service, outbox and
//! sink drains, rules, outbox writer, dispatcher, status watch, web, ingest), runs them, and
//! shuts them down front to back.
//!
//! Ingest, the web server and the status watch watch the cancellation token; the data path
//! stops by its inputs closing. When ingest stops it drops its senders; the dispatcher ends
//! when its input closes and drops the rules' and the outbox writer's inputs; the writer
//! commits and acknowledges what it holds; the rules task stores its last transitions; the
//! alert service stops (pushes still queued are sent at the next start); then the drain tasks
//! send what the outbox holds until it is empty or the grace period is over. What is left
//! stays in the outbox for the next start.
//!
//! Every long-lived task and thread is supervised ([`Supervisor`]): one that ends or panics
//! outside shutdown is reported through [`Gateway::failed`], and the daemon exits for its
//! service manager to restart it. The rules loop and the MQTT loops beat [`Liveness`]
//! heartbeats, which alone feed the systemd watchdog. [`Gateway::status`] fills in the control
//! socket's `GatewayStatus`.

use crate::control::{
    AlarmsStatus, AlertsStatus, DevicesStatus, GatewayStatus, ModbusStatus, MqttStatus,
    OutboxStatus, SinkStatus,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, trace, warn};

use crate::alerts::channels;
use crate::alerts::delivery::{wall_clock, AlertService};
use crate::alerts::Router;
use crate::config::devices::DeviceDirectory;
use crate::config::Config;
use crate::health::{Liveness, Supervisor, TaskFailure};
use crate::ingest::broker;
use crate::ingest::downlink::Downlinks;
use crate::ingest::modbus::ModbusPoller;
use crate::ingest::mqtt::MqttIngest;
use crate::ingest::Ingested;
use crate::linkage::port::Ports;
use crate::linkage::LinkageHandle;
use crate::live::LatestValues;
use crate::metrics::Metrics;
use crate::rules::engine::RuleEngine;
use crate::rules_task::{self, now_ms, restore, RulesHandle, RulesInput};
use crate::sinks::drain::{self, Closing, SinkReport};
use crate::sinks::outbox_writer::{self, Outbox};
use crate::status::{self, StatusReporter};
use crate::store::history::FineQuantities;
use crate::store::Store;
use crate::web::{self, WebServer};

/// Messages waiting between ingest and the dispatcher, and between it and the outbox writer.
const INGEST_CAPACITY: usize = 4096;

/// A running gateway.
pub struct Gateway {
    pub metrics: Arc<Metrics>,
    /// Operator commands and alarm snapshots.
    pub rules: RulesHandle,
    pub outbox: Arc<Outbox>,
    /// Latest values of every device.
    pub latest: Arc<LatestValues>,
    /// The web UI, when `[web]` is configured.
    pub web: Option<WebServer>,
    /// Outputs (valves, fans, sounders): their states and manual control.
    pub linkage: LinkageHandle,
    linkage_task: JoinHandle<()>,
    pub northbound: crate::northbound::Northbound,
    northbound_tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    ingest: Vec<JoinHandle<Option<()>>>,
    dispatcher: JoinHandle<Option<()>>,
    outbox_writer: std::thread::JoinHandle<()>,
    rules_task: JoinHandle<Option<()>>,
    watch_task: JoinHandle<()>,
    ingest_open: Option<mpsc::Sender<Ingested>>,
    closing: Arc<Closing>,
    grace: Duration,
    sinks: Vec<JoinHandle<Option<SinkReport>>>,
    alerts: Option<AlertService>,
    config: Arc<Config>,
    started: Instant,
    supervisor: Supervisor,
    liveness: Arc<Liveness>,
}

#[derive(Debug)]
pub struct ShutdownReport {
    pub sinks: Vec<SinkReport>,
}

impl ShutdownReport {
    /// Points still in the outbox for some sink (sent at the next start).
    pub fn points_left(&self) -> u64 {
        self.sinks.iter().map(|s| s.points_left).sum()
    }
}

/// Installs the process-wide TLS crypto provider (ring). Safe to call more than once.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Journal anchoring as configured (off with an interval of 0).
fn anchoring(config: &Config) -> Option<rules_task::Anchoring> {
    let gateway = &config.site.gateway;
    (gateway.journal_anchor_interval_s > 0).then(|| rules_task::Anchoring {
        interval: Duration::from_secs(gateway.journal_anchor_interval_s),
        file: config.resolve_path(&gateway.journal_anchor_file()),
        topic: format!("parkguard/{}/journal", gateway.name),
        gateway: gateway.name.clone(),
    })
}

impl Gateway {
    /// Starts every stage. Errors here are startup errors (port in use, unreadable files).
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        Gateway::start_with(config, false).await
    }

    /// Starts again in a process whose gateway was just shut down for a reload: the embedded
    /// broker that process started keeps running instead of being started twice.
    pub async fn restart(config: Config) -> anyhow::Result<Gateway> {
        Gateway::start_with(config, true).await
    }

    async fn start_with(config: Config, reload: bool) -> anyhow::Result<Gateway> {
        init_tls();
        // First: the daemon's own connections (ingest, MQTT alert channels) need its login.
        if let Some(embedded) = &config.site.broker.embedded {
            // The client ids of the daemon's own connections to it: no other login may use them.
            let own_ids = config
                .site
                .mqtt
                .iter()
                .filter(|m| m.targets(embedded.listen))
                .flat_map(|m| {
                    let mut ids = vec![crate::ingest::mqtt::client_id(&config, m)];
                    ids.extend(crate::alerts::channels::mqtt_client_ids(&config, &m.name));
                    ids
                })
                .collect();
            broker::start(embedded, &config.base_dir, own_ids, reload).await?;
        }
        let metrics = Metrics::for_config(&config);
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new();
        let liveness = Liveness::new();
        let store_path = config.resolve_path(&config.site.gateway.store);
        let open_store = || Store::open(&store_path);

        // The rules' store: alarm states and the journal.
        let mut store = open_store()?;
        store.sync_every_commit()?;
        let sink_names: Vec<String> = config.site.influx.iter().map(|s| s.name.clone()).collect();
        let dropped = store.outbox_set_sinks(&sink_names)?;
        if dropped.rows > 0 {
            warn!(
                points = dropped.points,
                "Outbox batches no configured sink needs any more were deleted."
            );
        }
        let (status, gateway_input) = StatusReporter::new(&config);
        let gateway_status = status.clone();
        let linkage_status = status.clone();
        let alerts = match Router::from_config(&config) {
            Some(router) => {
                let router = Arc::new(router);
                let push_queue = open_store()?;
                push_queue.sync_every_commit()?;
                let mut service = AlertService::spawn(
                    Arc::clone(&router),
                    channels::build(&config)?,
                    push_queue,
                    wall_clock(),
                    Some(status.clone()),
                    Arc::clone(&metrics),
                );
                service.supervise(&supervisor);
                let link = service.link(router);
                Some((service, link))
            }
            None => None,
        };
        let max_bytes = (config.site.gateway.outbox_max_mb * 1024.0 * 1024.0) as i64;
        let outbox = Outbox::new(
            max_bytes,
            store.outbox_bytes()?,
            sink_names,
            status,
            Arc::clone(&metrics),
        );
        let closing = Arc::new(Closing::default());
        let mut sinks = Vec::new();
        for index in 0..config.site.influx.len() {
            let sink = drain::spawn(
                &config,
                index,
                Arc::clone(&outbox),
                open_store()?,
                Arc::clone(&closing),
            )?;
            let name = format!("sink {}", config.site.influx[index].name);
            sinks.push(supervisor.watch(name, sink));
        }

        for warning in config.warnings() {
            warn!(%warning, "Check the rule set.");
        }
        let mut engine = RuleEngine::new(&config, &crate::status::device(&config), now_ms());
        let router = alerts.as_ref().map(|(_, link)| Arc::clone(&link.router));
        let restored = restore(&mut engine, &mut store, router.as_deref())?;
        if let Some((service, _)) = &alerts {
            // Retired alarms' pushes, queued by the restore.
            service.wake.notify_one();
        }
        info!(
            rules = config.rules.len(),
            alarms_watched = engine.instance_count(),
            alarms_restored = restored,
            store = %store_path.display(),
            outbox_bytes = outbox.bytes(),
            "Rules loaded."
        );
        let (rules_tx, rules_rx) = mpsc::channel::<RulesInput>(INGEST_CAPACITY);
        let downlinks = Downlinks::new();
        // Devices behind CTWing or OneNET are acknowledged through their platform's API.
        for endpoint in &config.site.http_ingest {
            if let Some(api) =
                crate::ingest::platform::PlatformApi::for_endpoint(endpoint, &metrics)
            {
                downlinks.register_platform(api);
            }
        }
        // The monitoring centres' links, whose queues the rules' store writer fills.
        let crate::northbound::Started {
            northbound,
            queue: northbound_queue,
            tasks: northbound_tasks,
        } = crate::northbound::spawn(&config, &open_store, linkage_status.clone(), cancel.clone())?;
        let northbound_tasks: Vec<JoinHandle<()>> = northbound_tasks
            .into_iter()
            .map(|(name, task)| supervisor.watch_unit(name, task))
            .collect();
        let (linkage_events, linkage_events_rx) = mpsc::unbounded_channel();
        let (linkage_notes_tx, linkage_notes) = mpsc::unbounded_channel();
        let (rules, rules_task) = rules_task::spawn(
            engine,
            store,
            rules_rx,
            gateway_input,
            Some(Arc::clone(&outbox)),
            rules_task::Forwarding {
                alerts: alerts.as_ref().map(|(_, link)| link.clone()),
                northbound: northbound_queue,
            },
            Arc::clone(&metrics),
            rules_task::RulesLiveness {
                heartbeat: liveness.register("rules loop", Duration::from_secs(30)),
                writer_guard: supervisor.guard("alarm store writer"),
            },
            Some(Arc::clone(&downlinks)),
            anchoring(&config),
            Some(rules_task::LinkageLink {
                events: linkage_events,
                notes: linkage_notes,
            }),
        )?;
        let rules_task = supervisor.watch("rules", rules_task);

        // Linkage reaches Modbus devices through the connections' own tasks (one master per
        // bus) and MQTT ones through the connections' clients.
        let mut ports = Ports::default();
        let mut port_queues = std::collections::HashMap::new();
        for m in &config.site.modbus {
            let (tx, rx) = mpsc::channel(crate::linkage::port::PORT_QUEUE);
            ports.modbus.insert(m.name.clone(), tx);
            port_queues.insert(m.name.clone(), rx);
        }
        let mqtt_out = Arc::clone(&downlinks);
        ports.mqtt = Some(Arc::new(
            move |connection: &str, topic: &str, payload: Vec<u8>| {
                mqtt_out.publish(connection, topic, payload)
            },
        ));
        let (linkage, linkage_task) = crate::linkage::spawn(
            &config,
            open_store()?,
            ports,
            linkage_notes_tx,
            linkage_status,
            linkage_events_rx,
        );
        let linkage_task = supervisor.watch_unit("linkage", linkage_task);
        let alerts = alerts.map(|(service, _)| service);

        let hours = config.site.gateway.history_hours;
        let history = (hours > 0.0).then(|| outbox_writer::HistorySettings {
            keep: Duration::from_secs_f64(hours * 3600.0),
            max_bytes: (config.site.gateway.history_max_mb * 1_048_576.0) as i64,
            write_every: Duration::from_secs(config.site.gateway.history_write_s.max(1)),
            fine: FineQuantities::matching(
                config
                    .rules
                    .iter()
                    .flat_map(|r| r.condition.quantities().iter().cloned()),
            ),
        });
        let (outbox_tx, outbox_rx) = mpsc::channel::<Ingested>(INGEST_CAPACITY);
        let outbox_writer = outbox_writer::spawn_writer(
            open_store()?,
            outbox_rx,
            Arc::clone(&outbox),
            history,
            supervisor.guard("outbox writer"),
        )?;

        let latest = Arc::new(LatestValues::default());
        let (ingest_tx, ingest_rx) = mpsc::channel::<Ingested>(INGEST_CAPACITY);
        let dispatcher = supervisor.watch(
            "dispatcher",
            tokio::spawn(dispatch(
                ingest_rx,
                rules_tx,
                outbox_tx,
                Arc::clone(&latest),
            )),
        );

        let watch_task = supervisor.watch_unit(
            "self-watch",
            status::spawn_watch(
                &config,
                Arc::clone(&metrics),
                gateway_status,
                cancel.clone(),
            ),
        );
        let config = Arc::new(config);
        let devices = Arc::new(DeviceDirectory::from_config(&config));
        let web = match &config.site.web {
            Some(web_config) => {
                let mut web = web::start(
                    Arc::clone(&config),
                    web_config,
                    rules.clone(),
                    linkage.clone(),
                    northbound.clone(),
                    Arc::clone(&metrics),
                    Arc::clone(&latest),
                    open_store()?,
                    Some(web::ingest::IngestLink {
                        output: ingest_tx.clone(),
                        devices: Arc::clone(&devices),
                    }),
                    cancel.clone(),
                )
                .await?;
                let server = std::mem::replace(&mut web.task, tokio::spawn(async {}));
                web.task = supervisor.watch_unit("web server", server);
                let hub = std::mem::replace(&mut web.hub_task, tokio::spawn(async {}));
                web.hub_task = supervisor.watch_unit("web event hub", hub);
                Some(web)
            }
            None => None,
        };

        let mut ingest = Vec::new();
        for (index, mqtt) in config.site.mqtt.iter().enumerate() {
            let name = format!("mqtt {}", mqtt.name);
            let heartbeat = liveness.register(format!("{name} loop"), Duration::from_secs(30));
            let task = MqttIngest::new(&config, index, Arc::clone(&devices), Arc::clone(&metrics))?
                .with_heartbeat(heartbeat)
                .with_downlinks(Arc::clone(&downlinks));
            let task = tokio::spawn(task.run(ingest_tx.clone(), cancel.clone()));
            ingest.push(supervisor.watch(name, task));
        }
        for (index, modbus) in config.site.modbus.iter().enumerate() {
            let mut poller = ModbusPoller::new(&config, index, &devices, &metrics)?;
            if let Some(port) = port_queues.remove(&modbus.name) {
                poller = poller.with_port(port);
            }
            let task = tokio::spawn(poller.run(ingest_tx.clone(), cancel.clone()));
            ingest.push(supervisor.watch(format!("modbus {}", modbus.name), task));
        }
        // Kept until shutdown: a site with no ingest (everything from HTTP, or nothing yet)
        // must not end the dispatcher, which would read as a failure. The web server's push
        // endpoints hold their own senders until it stops, which shutdown waits for first.
        let ingest_open = ingest_tx;
        info!(
            mqtt = config.site.mqtt.len(),
            modbus = config.site.modbus.len(),
            http_ingest = config.site.http_ingest.len(),
            sinks = config.site.influx.len(),
            devices = config.site.devices.len(),
            "parkguard started."
        );
        Ok(Gateway {
            metrics,
            rules,
            outbox,
            latest,
            web,
            linkage,
            linkage_task,
            northbound,
            northbound_tasks,
            cancel,
            ingest,
            dispatcher,
            outbox_writer,
            rules_task,
            watch_task,
            ingest_open: Some(ingest_open),
            closing,
            grace: Duration::from_secs(config.site.gateway.shutdown_grace_s),
            sinks,
            alerts,
            config,
            started: Instant::now(),
            supervisor,
            liveness,
        })
    }

    /// The first of the gateway's tasks that ended or panicked outside shutdown; waits until
    /// one does.
    pub async fn failed(&self) -> TaskFailure {
        self.supervisor.failed().await
    }

    /// The heartbeats of the gateway's loops, for the watchdog.
    pub fn liveness(&self) -> Arc<Liveness> {
        Arc::clone(&self.liveness)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gateway's condition for `parkguard status`: connections, devices offline, outbox
    /// depth, pushes waiting and active alarms.
    pub async fn status(&self) -> GatewayStatus {
        use crate::model::alarm::AlarmState;
        use std::sync::atomic::Ordering::Relaxed;
        let config = &self.config;
        let mqtt = config
            .site
            .mqtt
            .iter()
            .map(|m| {
                let s = self.metrics.mqtt(&m.name);
                MqttStatus {
                    name: m.name.clone(),
                    broker: format!("{}:{}", m.host, m.port()),
                    connected: s.connected.load(Relaxed),
                    connects: s.connects.load(Relaxed),
                    connection_errors: s.connection_errors.load(Relaxed),
                }
            })
            .collect();
        let modbus = config
            .site
            .modbus
            .iter()
            .map(|m| {
                let s = self.metrics.modbus(&m.name);
                ModbusStatus {
                    name: m.name.clone(),
                    address: m.address.clone(),
                    units: m.units.len(),
                    units_offline: s.units_offline.load(Relaxed),
                    polls_ok: s.polls_ok.load(Relaxed),
                    polls_failed: s.polls_failed.load(Relaxed),
                }
            })
            .collect();
        let now = rules_task::now_ms();
        let sinks = config
            .site
            .influx
            .iter()
            .map(|i| {
                let s = self.metrics.sink(&i.name);
                let oldest = s.oldest_created_ms.load(Relaxed) as i64;
                SinkStatus {
                    name: i.name.clone(),
                    points_waiting: s.depth_points.load(Relaxed),
                    oldest_waiting_s: if oldest > 0 {
                        (now - oldest).max(0) / 1000
                    } else {
                        0
                    },
                    points_written: s.points_written.load(Relaxed),
                    write_failures: s.write_failures.load(Relaxed),
                }
            })
            .collect();
        let alarms = self.rules.alarms().await;
        let active: Vec<_> = alarms
            .iter()
            .filter(|a| a.state != AlarmState::Normal)
            .collect();
        let mut offline: Vec<String> = active
            .iter()
            .filter(|a| a.comm_loss)
            .map(|a| a.device.clone())
            .collect();
        offline.sort_unstable();
        offline.dedup();
        let unacknowledged: Vec<_> = active
            .iter()
            .filter(|a| {
                matches!(
                    a.state,
                    AlarmState::Unacknowledged | AlarmState::ReturnedUnacknowledged
                )
            })
            .collect();
        let mut by_severity = std::collections::BTreeMap::new();
        for a in &active {
            let severity = a.severity.map_or("none", |s| s.as_str());
            *by_severity.entry(severity.to_string()).or_insert(0) += 1;
        }
        let m = &self.metrics;
        GatewayStatus {
            ok: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            gateway: config.site.gateway.name.clone(),
            site: config.file.display().to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            reloads: 0,
            mqtt,
            modbus,
            devices: DevicesStatus {
                configured: config.site.devices.len(),
                offline,
            },
            outbox: OutboxStatus {
                bytes: self.outbox.bytes(),
                sinks,
            },
            alerts: AlertsStatus {
                routes: config.site.alerts.as_ref().map_or(0, |a| a.routes.len()),
                pending: m.alerts_pending.load(Relaxed),
                delivered: m.alerts_delivered.load(Relaxed),
                given_up: m.alerts_given_up.load(Relaxed),
            },
            alarms: AlarmsStatus {
                active: active.len(),
                unacknowledged: unacknowledged.len(),
                by_severity,
                unacknowledged_critical: unacknowledged
                    .iter()
                    .filter(|a| a.severity == Some(crate::model::alarm::Severity::Critical))
                    .map(|a| a.key.clone())
                    .collect(),
            },
            readings_decoded: m.readings_decoded.load(Relaxed),
        }
    }

    /// Stops ingest, commits and acknowledges what is in flight, lets the sinks write what the
    /// outbox holds within the grace period, and reports what is left in it.
    pub async fn shutdown(self) -> ShutdownReport {
        let started = Instant::now();
        self.supervisor.stopping();
        self.liveness.clear();
        self.cancel.cancel();
        if let Some(web) = self.web {
            let _ = web.task.await;
            let _ = web.hub_task.await;
        }
        let _ = self.watch_task.await;
        for task in self.ingest {
            let _ = task.await;
        }
        drop(self.ingest_open);
        let _ = self.dispatcher.await;
        let writer = self.outbox_writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        let _ = self.rules_task.await;
        // Ends once the rules task has dropped its side; outputs keep their states.
        let _ = self.linkage_task.await;
        for task in self.northbound_tasks {
            let _ = task.await;
        }
        if let Some(alerts) = self.alerts {
            // Pushes still queued are sent at the next start.
            alerts.shutdown().await;
        }
        self.closing.begin(self.grace);
        let mut reports = Vec::new();
        for sink in self.sinks {
            if let Ok(Some(report)) = sink.await {
                reports.push(report);
            }
        }
        let report = ShutdownReport { sinks: reports };
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            points_left_in_outbox = report.points_left(),
            "parkguard stopped."
        );
        report
    }
}

/// Hands each message's readings to the rules, then the message to the outbox writer. Both
/// sends wait: a message is acknowledged only after the writer has committed it, so here
/// waiting is the backpressure that makes the broker hold what the gateway cannot take yet.
async fn dispatch(
    mut input: mpsc::Receiver<Ingested>,
    rules: mpsc::Sender<RulesInput>,
    outbox: mpsc::Sender<Ingested>,
    latest: Arc<LatestValues>,
) {
    while let Some(mut item) = input.recv().await {
        if let Some(readings) = &item.readings {
            trace!(readings = readings.len(), "Dispatched.");
            latest.update(readings);
            let input = RulesInput {
                readings: Arc::clone(readings),
                device_ack: item.device_ack.take(),
            };
            if rules.send(input).await.is_err() {
                // The rules task is gone: alarms would stop while telemetry flows. The
                // supervisor has its cause; ending here makes the failure impossible to miss.
                error!("The rules task has stopped; alarm evaluation is no longer possible.");
                break;
            }
        }
        if outbox.send(item).await.is_err() {
            break;
        }
    }
}
