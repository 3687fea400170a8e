//! How linkage reaches the devices without owning a connection: a request queued to the task
//! that owns the Modbus connection (`ingest::modbus`), which serves it between its polls, so
//! that one bus has one master; and an MQTT publish queued on a connection's client.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::decode::registers::Area;

/// One read or write for a Modbus connection's task to make.
#[derive(Debug)]
pub struct PortRequest {
    pub unit_id: u8,
    pub op: PortOp,
    /// The word (or bit, as 0/1) read, or the value written.
    pub reply: oneshot::Sender<Result<u16, PortError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortOp {
    /// Function 05 for a coil (`value` 0 or 1), 06 for a holding register.
    Write {
        area: Area,
        address: u16,
        value: u16,
    },
    /// Functions 01 to 04.
    Read { area: Area, address: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no answer within {0} ms")]
    NoAnswer(u64),
    #[error("the device refused: {0}")]
    Exception(String),
    #[error("{0}")]
    Transport(String),
    #[error("the Modbus connection `{0}` is not running")]
    Closed(String),
}

/// Requests wait here while the connection polls; more than this and the output's driver is
/// told the link is busy rather than waiting without end.
pub const PORT_QUEUE: usize = 16;

/// The Modbus connections' request queues, by connection name.
pub type ModbusPorts = HashMap<String, mpsc::Sender<PortRequest>>;

/// Queues a QoS 1 publish (connection, topic, payload).
pub type MqttPublish = Arc<dyn Fn(&str, &str, Vec<u8>) -> Result<(), String> + Send + Sync>;

/// The ways out to the devices.
#[derive(Clone, Default)]
pub struct Ports {
    pub modbus: ModbusPorts,
    pub mqtt: Option<MqttPublish>,
}

impl Ports {
    /// Sends one request to connection `connection` and waits for its answer, at most
    /// `limit` in all (queueing behind a poll included).
    pub async fn modbus(
        &self,
        connection: &str,
        unit_id: u8,
        op: PortOp,
        limit: std::time::Duration,
    ) -> Result<u16, PortError> {
        let closed = || PortError::Closed(connection.to_string());
        let port = self.modbus.get(connection).ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let request = PortRequest { unit_id, op, reply };
        match tokio::time::timeout(limit, async {
            port.send(request).await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(PortError::NoAnswer(limit.as_millis() as u64)),
        }
    }
}
