//! Small security primitives shared by the web server and the embedded broker: comparing
//! secrets in constant time and a rustls server from PEM files.
//!
//! Owns: nothing stateful. Must not touch: sessions, logins or any listener.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    same_secret_bytes(a.as_bytes(), b.as_bytes())
}

/// The same for bytes (digests). Only the lengths may leak, and secrets here are digests or
/// random tokens of fixed length.
pub fn same_secret_bytes(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// A TLS server from a PEM certificate chain and key; `what` names them in errors (`web`,
/// `broker.embedded`); `alpn` is offered to clients.
pub fn tls_acceptor(
    what: &str,
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{what}.tls_cert: cannot read {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{what}.tls_key: cannot read {}", key.display()))?;
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{what}: the TLS certificate and key do not fit together"))?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}
