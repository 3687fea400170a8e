//! TLS to the broker, and the private socket folder of the relay in front of it.

use super::*;

/// Where private sockets go: systemd's `RuntimeDirectory=`, else the temporary folder.
pub(super) fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| {
            std::env::split_paths(&dirs)
                .next()
                .filter(|d| !d.as_os_str().is_empty())
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// The relay's TLS settings for `[mqtt.tls]`.
pub(super) fn relay_tls(
    config: &Config,
    tls: &crate::config::MqttTlsConfig,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let read = |p: &Path| {
        let full = config.resolve_path(p);
        std::fs::read(&full).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", full.display()))
    };
    let ca = read(&tls.ca)?;
    let client = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    mqtt_guard::tls_config(
        &ca,
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .map_err(anyhow::Error::msg)
}

pub(crate) fn load_tls(
    config: &Config,
    tls: &crate::config::MqttTlsConfig,
) -> anyhow::Result<TlsConfiguration> {
    let read = |p: &Path| {
        let full = config.resolve_path(p);
        std::fs::read(&full).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", full.display()))
    };
    let ca = read(&tls.ca)?;
    let client_auth = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}
