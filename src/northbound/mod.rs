//! Northbound: forwarding fires and the facilities' state to urban fire remote-monitoring
//! centres (`[[northbound]]`), with parkguard as the centre's user information transmission
//! device (GB/T 26875.3). Alarm transitions are queued durably in the journal's transaction
//! (`queue::Planner`); one task per centre sends the queue, fires first, until each frame is
//! confirmed (`link`).
//!
//! Owns: the protocol (`gb26875`, pure), the queue's rows and the connections. Must not
//! touch: alarms and the journal, which it only follows.

pub mod gb26875;
pub mod link;
pub mod queue;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::northbound::NorthboundType;
use crate::config::Config;
use crate::status::StatusReporter;
use crate::store::Store;
pub use link::{DutyCheck, LinkStatus};

/// How the rules' store writer reaches the links: the planner it queues with, and the wake
/// it rings after each commit.
#[derive(Clone)]
pub struct QueueLink {
    pub planner: Arc<queue::Planner>,
    pub wake: Vec<Arc<Notify>>,
}

impl QueueLink {
    pub fn notify(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }
}

struct LinkHandle {
    status: Arc<Mutex<LinkStatus>>,
    commands: mpsc::Sender<link::LinkCommand>,
}

/// The links, for the web UI.
#[derive(Clone, Default)]
pub struct Northbound {
    links: Arc<Vec<LinkHandle>>,
}

impl Northbound {
    pub fn status(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|l| l.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// An operator answers the duty check of link `name`.
    pub async fn answer_duty_check(
        &self,
        name: &str,
        operator: u8,
        operator_name: &str,
    ) -> Result<(), String> {
        let link = self
            .links
            .iter()
            .find(|l| l.status.lock().unwrap_or_else(|e| e.into_inner()).name == name)
            .ok_or_else(|| format!("no northbound link `{name}`"))?;
        let (reply, answer) = oneshot::channel();
        link.commands
            .send(link::LinkCommand::AnswerDutyCheck {
                operator,
                name: operator_name.to_string(),
                reply,
            })
            .await
            .map_err(|_| "the link has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the link has stopped".to_string())?
    }
}

/// The started links: their handle for the web UI, the store writer's side (none without
/// links), and their tasks by name.
pub struct Started {
    pub northbound: Northbound,
    pub queue: Option<QueueLink>,
    pub tasks: Vec<(String, JoinHandle<()>)>,
}

/// Starts one task per `[[northbound]]` link. `open_store` gives each its own connection.
pub fn spawn(
    config: &Config,
    open_store: &dyn Fn() -> Result<Store, crate::store::StoreError>,
    gateway: StatusReporter,
    cancel: CancellationToken,
) -> Result<Started, crate::store::StoreError> {
    let Some(planner) = queue::Planner::from_config(config) else {
        return Ok(Started {
            northbound: Northbound::default(),
            queue: None,
            tasks: Vec::new(),
        });
    };
    let mut handles = Vec::new();
    let mut wakes = Vec::new();
    let mut tasks = Vec::new();
    for n in config
        .site
        .northbound
        .iter()
        .filter(|n| n.kind == NorthboundType::Gb26875)
    {
        let status = Arc::new(Mutex::new(LinkStatus {
            name: n.name.clone(),
            centre: n.centre.clone(),
            ..LinkStatus::default()
        }));
        let wake = Arc::new(Notify::new());
        let (commands_tx, commands) = mpsc::channel(8);
        let link = link::Link {
            config: n.clone(),
            store: Arc::new(Mutex::new(open_store()?)),
            wake: Arc::clone(&wake),
            status: Arc::clone(&status),
            gateway: gateway.clone(),
            commands,
            cancel: cancel.clone(),
            failing: std::collections::HashMap::new(),
        };
        tasks.push((format!("northbound {}", n.name), tokio::spawn(link.run())));
        handles.push(LinkHandle {
            status,
            commands: commands_tx,
        });
        wakes.push(wake);
    }
    Ok(Started {
        northbound: Northbound {
            links: Arc::new(handles),
        },
        queue: Some(QueueLink {
            planner: Arc::new(planner),
            wake: wakes,
        }),
        tasks,
    })
}
