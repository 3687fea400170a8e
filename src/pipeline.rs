//! Wiring: builds the stages back to front (sinks, store and rules, dispatcher, broker,
//! ingest), runs them, and shuts them down front to back.
//!
//! Only ingest watches the cancellation token. When ingest stops it drops its senders; the
//! dispatcher ends when its input closes and drops the rules' and sinks' inputs; the rules
//! task stores its last transitions and drops its sink inputs; each sink writes what it
//! holds until its grace period ends and reports what it left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, trace, warn};

use crate::config::Config;
use crate::ingest::broker;
use crate::ingest::devices::DeviceDirectory;
use crate::ingest::modbus::ModbusPoller;
use crate::ingest::mqtt::MqttIngest;
use crate::metrics::Metrics;
use crate::model::ReadingBatch;
use crate::rules::engine::RuleEngine;
use crate::rules::runtime::{self, now_ms, restore, RulesHandle};
use crate::sinks::runner::{self, SinkReport};
use crate::store::Store;

/// Message batches waiting between ingest and the dispatcher.
const INGEST_CAPACITY: usize = 4096;

/// A running gateway.
pub struct Gateway {
    pub metrics: Arc<Metrics>,
    /// Operator commands and alarm snapshots.
    pub rules: RulesHandle,
    cancel: CancellationToken,
    ingest: Vec<JoinHandle<()>>,
    dispatcher: JoinHandle<()>,
    rules_task: JoinHandle<()>,
    sinks: Vec<JoinHandle<SinkReport>>,
}

#[derive(Debug)]
pub struct ShutdownReport {
    pub sinks: Vec<SinkReport>,
}

impl ShutdownReport {
    pub fn points_left(&self) -> u64 {
        self.sinks.iter().map(|s| s.points_left).sum()
    }
}

/// Installs the process-wide TLS crypto provider (ring). Safe to call more than once.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Gateway {
    /// Starts every stage. Errors here are startup errors (port in use, unreadable files).
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        init_tls();
        let metrics = Metrics::new();
        let cancel = CancellationToken::new();

        let mut sink_inputs = Vec::new();
        let mut sinks = Vec::new();
        for index in 0..config.site.influx.len() {
            let handle = runner::spawn(&config, index, &metrics)?;
            sink_inputs.push((handle.name, handle.input));
            sinks.push(handle.done);
        }

        let store_path = config.resolve_path(&config.site.gateway.store);
        let mut store = Store::open(&store_path)?;
        let mut engine = RuleEngine::new(&config, now_ms());
        let restored = restore(&mut engine, &mut store)?;
        info!(
            rules = config.rules.len(),
            alarms_watched = engine.instance_count(),
            alarms_restored = restored,
            store = %store_path.display(),
            "Rules loaded."
        );
        let (rules_tx, rules_rx) = mpsc::channel::<ReadingBatch>(INGEST_CAPACITY);
        let (rules, rules_task) = runtime::spawn(
            engine,
            store,
            rules_rx,
            sink_inputs.clone(),
            Arc::clone(&metrics),
        )?;

        let (ingest_tx, ingest_rx) = mpsc::channel::<ReadingBatch>(INGEST_CAPACITY);
        let dispatcher = tokio::spawn(dispatch(
            ingest_rx,
            rules_tx,
            sink_inputs,
            Arc::clone(&metrics),
        ));

        if let Some(embedded) = &config.site.broker.embedded {
            broker::start(embedded)?;
        }

        let devices = Arc::new(DeviceDirectory::from_config(&config));
        let mut ingest = Vec::new();
        for index in 0..config.site.mqtt.len() {
            let task = MqttIngest::new(&config, index, Arc::clone(&devices), Arc::clone(&metrics))?;
            ingest.push(tokio::spawn(task.run(ingest_tx.clone(), cancel.clone())));
        }
        for index in 0..config.site.modbus.len() {
            let poller = ModbusPoller::new(&config, index, &devices, &metrics)?;
            ingest.push(tokio::spawn(poller.run(ingest_tx.clone(), cancel.clone())));
        }
        drop(ingest_tx);
        info!(
            mqtt = config.site.mqtt.len(),
            modbus = config.site.modbus.len(),
            sinks = config.site.influx.len(),
            devices = config.site.devices.len(),
            "parkguard started."
        );
        Ok(Gateway {
            metrics,
            rules,
            cancel,
            ingest,
            dispatcher,
            rules_task,
            sinks,
        })
    }

    /// Stops ingest, lets the sinks write what they hold within their grace period, and reports
    /// what could not be written.
    pub async fn shutdown(self) -> ShutdownReport {
        let started = Instant::now();
        self.cancel.cancel();
        for task in self.ingest {
            let _ = task.await;
        }
        let _ = self.dispatcher.await;
        let _ = self.rules_task.await;
        let mut reports = Vec::new();
        for sink in self.sinks {
            if let Ok(report) = sink.await {
                reports.push(report);
            }
        }
        let report = ShutdownReport { sinks: reports };
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            points_left = report.points_left(),
            "parkguard stopped."
        );
        report
    }
}

async fn dispatch(
    mut input: mpsc::Receiver<ReadingBatch>,
    rules: mpsc::Sender<ReadingBatch>,
    sinks: Vec<(String, mpsc::Sender<ReadingBatch>)>,
    metrics: Arc<Metrics>,
) {
    let mut last_warning: Option<Instant> = None;
    while let Some(batch) = input.recv().await {
        trace!(readings = batch.len(), "Dispatched.");
        // Rules get every reading (they never wait on IO, so this only waits on evaluation).
        let _ = rules.send(Arc::clone(&batch)).await;
        for (name, sink) in &sinks {
            // try_send: a sink that cannot keep up loses readings (counted), it never stalls
            // ingest or the other sinks.
            if let Err(mpsc::error::TrySendError::Full(batch)) = sink.try_send(Arc::clone(&batch)) {
                metrics
                    .readings_dropped_queue_full
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    warn!(sink = %name, "Sink input full: readings dropped.");
                }
            }
        }
    }
}
