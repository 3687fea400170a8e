//! The embedded MQTT broker (rumqttd), for small sites without a broker of their own: sensors
//! connect to the daemon directly, and the daemon ingests from it like from any broker.
//!
//! rumqttd's `Broker::start` blocks on its server threads and logs (rather than returns) a bind
//! failure, so the port is probed here first: a port in use is a startup error, not a silent
//! broker that never accepts anyone.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use crate::config::EmbeddedBrokerConfig;

/// Addresses an embedded broker was started on in this process.
static RUNNING: std::sync::Mutex<std::collections::BTreeSet<std::net::SocketAddr>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Starts the embedded broker on `config.listen`, failing if the address is taken.
///
/// With `reuse_running` (a reload), a broker this process already started on the same address
/// is kept: rumqttd cannot be stopped, so changes to its settings apply at the next restart of
/// the daemon. Without it, an address in use is an error like any other.
pub fn start(config: &EmbeddedBrokerConfig, reuse_running: bool) -> anyhow::Result<()> {
    {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if reuse_running && running.contains(&config.listen) {
            info!(listen = %config.listen, "Embedded MQTT broker keeps running.");
            return Ok(());
        }
        running.insert(config.listen);
    }
    TcpListener::bind(config.listen).map_err(|err| {
        anyhow::anyhow!(
            "embedded MQTT broker cannot listen on {}: {err}",
            config.listen
        )
    })?;
    let server = ServerSettings {
        name: "embedded-v4".into(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: config.max_payload_bytes,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let broker_config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let listen = config.listen;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(broker_config);
            if let Err(err) = broker.start() {
                error!(error = %err, "Embedded MQTT broker stopped.");
            }
        })?;
    // Ingest connects right after this returns; without waiting it would first see a refused
    // connection and log a spurious outage.
    let deadline = std::time::Instant::now() + BROKER_READY_TIMEOUT;
    while std::net::TcpStream::connect_timeout(&probe_address(listen), Duration::from_millis(100))
        .is_err()
    {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("embedded MQTT broker did not start listening on {listen}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    info!(listen = %listen, "Embedded MQTT broker started.");
    Ok(())
}

const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to probe a listener: a wildcard listen address is reached through loopback.
fn probe_address(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut probe = listen;
    if listen.ip().is_unspecified() {
        probe.set_ip(if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    probe
}
