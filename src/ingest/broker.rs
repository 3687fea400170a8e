//! The embedded MQTT broker (rumqttd), for small sites without a broker of their own: sensors
//! connect to the daemon directly, and the daemon ingests from it like from any broker.
//!
//! rumqttd's `Broker::start` blocks on its server threads and logs (rather than returns) a bind
//! failure, so the port is probed here first: a port in use is a startup error, not a silent
//! broker that never accepts anyone.
//!
//! With a users file every client logs in (name and password, checked against SHA-256 hashes).
//! The daemon's own connections log in with a name and a random password made at start, which
//! no client can use, and their client ids are refused to every other login, so nobody on the
//! network can take over ingest's session. With logins or TLS, rumqttd listens on an internal
//! loopback port and a front (`broker_front`: TLS, topic rules) on `listen` relays to it; the
//! daemon connects to the internal port directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use crate::config::EmbeddedBrokerConfig;

/// The login name of the daemon's own connections to the embedded broker.
pub const DAEMON_USER: &str = "parkguard-daemon";

/// How the daemon itself reaches an embedded broker: its plain internal address and the login
/// made for it at start (none when the broker takes anonymous local clients).
#[derive(Debug, Clone)]
pub struct DaemonLink {
    pub address: SocketAddr,
    pub login: Option<(String, String)>,
}

/// The daemon's links to the embedded brokers started in this process, by `listen` address.
static LINKS: std::sync::Mutex<BTreeMap<SocketAddr, DaemonLink>> =
    std::sync::Mutex::new(BTreeMap::new());

/// How the daemon reaches the broker of connection `mqtt`, when that is the embedded broker
/// running in this process: its internal address and the daemon's own login.
pub fn daemon_link_for(
    config: &crate::config::Config,
    mqtt: &crate::config::MqttConfig,
) -> Option<DaemonLink> {
    config
        .site
        .broker
        .embedded
        .as_ref()
        .filter(|b| mqtt.targets(b.listen))
        .and_then(|b| daemon_link(b.listen))
}

/// How the daemon reaches the embedded broker listening on `listen`, if one runs.
pub fn daemon_link(listen: SocketAddr) -> Option<DaemonLink> {
    LINKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&listen)
        .cloned()
}

/// The embedded broker: rumqttd behind the front. Built with the `embedded-broker` feature (on
/// by default); sites that have a broker of their own can build without it and its crates.
#[cfg(feature = "embedded-broker")]
mod embedded {
    use super::*;
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Duration;

    use rumqttd::{AuthHandler, ConnectionSettings, RouterConfig, ServerSettings};
    use sha2::{Digest, Sha256};
    use tracing::{debug, error, info};

    /// Who may log in: the users file's names and hashes, the daemon's own login, and the client
    /// ids only the daemon may use.
    fn auth_handler(
        users: HashMap<String, [u8; 32]>,
        daemon_password: String,
        daemon_client_ids: BTreeSet<String>,
    ) -> AuthHandler {
        let users = Arc::new(users);
        let daemon_password = Arc::new(daemon_password);
        let daemon_client_ids = Arc::new(daemon_client_ids);
        Arc::new(move |client_id: String, user: String, password: String| {
            let allowed = if user == DAEMON_USER {
                crate::secure::same_secret(&password, &daemon_password)
            } else if daemon_client_ids.contains(&client_id) {
                false
            } else {
                let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                users
                    .get(&user)
                    .is_some_and(|hash| crate::secure::same_secret_bytes(&digest, hash))
            };
            if !allowed {
                debug!(client_id = %client_id, "Embedded MQTT broker refused a login.");
            }
            Box::pin(async move { allowed })
        })
    }

    /// Addresses an embedded broker was started on in this process.
    static RUNNING: std::sync::Mutex<std::collections::BTreeSet<std::net::SocketAddr>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());

    /// Starts the embedded broker on `config.listen`, failing if the address is taken.
    ///
    /// With `reuse_running` (a reload), a broker this process already started on the same address
    /// is kept: rumqttd cannot be stopped, so changes to its settings apply at the next restart of
    /// the daemon. Without it, an address in use is an error like any other.
    ///
    /// `base_dir` resolves the users file and certificates; `daemon_client_ids` are the client ids
    /// of the daemon's own connections to it.
    pub async fn start(
        config: &EmbeddedBrokerConfig,
        base_dir: &Path,
        daemon_client_ids: BTreeSet<String>,
        reuse_running: bool,
    ) -> anyhow::Result<()> {
        {
            let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if reuse_running && running.contains(&config.listen) {
                info!(listen = %config.listen, "Embedded MQTT broker keeps running.");
                return Ok(());
            }
            running.insert(config.listen);
        }
        let public = std::net::TcpListener::bind(config.listen).map_err(|err| {
            anyhow::anyhow!(
                "embedded MQTT broker cannot listen on {}: {err}",
                config.listen
            )
        })?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::secure::tls_acceptor(
                "broker.embedded",
                &base_dir.join(cert),
                &base_dir.join(key),
                &[],
            )?),
            _ => None,
        };
        // With TLS or logins, clients come through the front (TLS, topic rules) and rumqttd
        // listens on loopback only, on a port of its own.
        let front = if tls.is_some() || config.users_file.is_some() {
            Some((tls, public))
        } else {
            drop(public);
            None
        };
        let internal = if front.is_some() {
            let probe = TcpListener::bind(("127.0.0.1", 0))?;
            let address = probe.local_addr()?;
            drop(probe);
            address
        } else {
            config.listen
        };
        let (login, external_auth) = match &config.users_file {
            Some(path) => {
                let text = std::fs::read_to_string(base_dir.join(path))
                    .map_err(|e| anyhow::anyhow!("broker.embedded.users_file: {e}"))?;
                let users = crate::config::parse_broker_users(&text)
                    .map_err(|e| anyhow::anyhow!("broker.embedded.users_file: {e}"))?;
                let password = {
                    use base64::Engine;
                    let bytes: [u8; 32] = rand::random();
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
                };
                let handler = auth_handler(users, password.clone(), daemon_client_ids);
                (Some((DAEMON_USER.to_string(), password)), Some(handler))
            }
            None => (None, None),
        };
        LINKS.lock().unwrap_or_else(|e| e.into_inner()).insert(
            config.listen,
            DaemonLink {
                address: probe_address(internal),
                login,
            },
        );
        let server = ServerSettings {
            name: "embedded-v4".into(),
            listen: internal,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: config.max_payload_bytes,
                max_inflight_count: 500,
                auth: None,
                external_auth,
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
        let listen = internal;
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
        while std::net::TcpStream::connect_timeout(
            &probe_address(listen),
            Duration::from_millis(100),
        )
        .is_err()
        {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("embedded MQTT broker did not start listening on {listen}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some((tls, public)) = front {
            public.set_nonblocking(true)?;
            let public = tokio::net::TcpListener::from_std(public)?;
            let over_tls = tls.is_some();
            tokio::spawn(crate::ingest::broker_front::serve(
                public,
                tls,
                probe_address(internal),
                config.acl.clone().map(Arc::new),
                config.max_payload_bytes.saturating_add(64 * 1024),
            ));
            info!(listen = %config.listen, tls = over_tls, acl = config.acl.is_some(), "Embedded MQTT broker started.");
        } else {
            info!(listen = %listen, "Embedded MQTT broker started.");
        }
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
}

#[cfg(feature = "embedded-broker")]
pub use embedded::start;

/// Without the `embedded-broker` feature, `[broker.embedded]` cannot start.
#[cfg(not(feature = "embedded-broker"))]
pub async fn start(
    config: &EmbeddedBrokerConfig,
    _base_dir: &Path,
    _daemon_client_ids: BTreeSet<String>,
    _reuse_running: bool,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "broker.embedded (listen {}): this parkguard was built without the embedded MQTT broker \
         (cargo feature `embedded-broker`); build it with the feature, or point [[mqtt]] at a broker",
        config.listen
    )
}
