//! The embedded broker's front door on its public address: TLS (when configured) and the
//! per-login topic rules (ACL) that rumqttd itself lacks. Each client's packets towards the
//! broker are read whole (up to the broker's payload limit) and passed on unchanged, except
//! that a CONNECT whose will, a PUBLISH whose topic or a SUBSCRIBE whose filter the client's
//! login may not use ends the connection (MQTT 3.1.1 has no other answer to a refused
//! publish). Logins themselves are checked by rumqttd behind it.
//!
//! Owns: the public listener and the relay of each client. Must not touch: rumqttd's
//! sessions, or the daemon's own connections, which use the internal port directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::mqtt_guard::{encode_varint, read_varint_counted};
use crate::config::BrokerAcl;

/// How long a client may take for its TLS handshake and its CONNECT.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether topic `topic` matches filter `filter` (`+` one level, `#` the rest).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (literal, Some(level)) if literal == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Whether every topic filter `requested` can match is also matched by `allowed`.
pub fn filter_covers(allowed: &str, requested: &str) -> bool {
    let mut wanted = requested.split('/');
    for part in allowed.split('/') {
        match (part, wanted.next()) {
            ("#", _) => return true,
            ("+", Some(level)) if level != "#" => {}
            (literal, Some(level)) if literal == level && level != "+" && level != "#" => {}
            _ => return false,
        }
    }
    wanted.next().is_none()
}

impl BrokerAcl {
    fn patterns<'a>(list: &'a [String], user: &'a str) -> impl Iterator<Item = String> + 'a {
        list.iter().map(move |p| p.replace("{user}", user))
    }

    pub fn may_publish(&self, user: &str, topic: &str) -> bool {
        // A login cannot smuggle levels or wildcards into its own name's place.
        !user.contains(['/', '+', '#'])
            && Self::patterns(&self.publish, user).any(|p| topic_matches(&p, topic))
    }

    pub fn may_subscribe(&self, user: &str, filter: &str) -> bool {
        !user.contains(['/', '+', '#'])
            && Self::patterns(&self.subscribe, user).any(|p| filter_covers(&p, filter))
    }
}

/// Accepts clients on the public address and relays each to rumqttd's internal port.
pub async fn serve(
    public: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    internal: SocketAddr,
    acl: Option<Arc<BrokerAcl>>,
    max_packet: usize,
) {
    loop {
        let (stream, peer) = match public.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                debug!(error = %err, "Embedded MQTT broker: accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let acl = acl.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => relay(stream, internal, acl, max_packet).await,
                        _ => Err("TLS handshake failed".to_string()),
                    }
                }
                None => relay(stream, internal, acl, max_packet).await,
            };
            if let Err(why) = result {
                debug!(%peer, why = %why, "Embedded MQTT broker: client dropped.");
            }
        });
    }
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    internal: SocketAddr,
    acl: Option<Arc<BrokerAcl>>,
    max_packet: usize,
) -> Result<(), String> {
    let inner = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(internal))
        .await
        .map_err(|_| "broker connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = inner.set_nodelay(true);
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_broker, mut to_broker) = inner.into_split();
    let downstream = async {
        let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    let upstream = async {
        let mut user: Option<String> = None;
        let mut packet = Vec::new();
        loop {
            let first = if user.is_none() {
                tokio::time::timeout(HELLO_TIMEOUT, from_client.read_u8())
                    .await
                    .map_err(|_| "no CONNECT in time".to_string())?
            } else {
                from_client.read_u8().await
            }
            .map_err(|e| e.to_string())?;
            let (length, _) = read_varint_counted(&mut from_client)
                .await
                .map_err(|e| e.to_string())?;
            if length > max_packet {
                return Err(format!("a packet of {length} bytes"));
            }
            packet.clear();
            packet.resize(length, 0);
            from_client
                .read_exact(&mut packet)
                .await
                .map_err(|e| e.to_string())?;
            judge(first >> 4, &packet, &mut user, acl.as_deref())?;
            let mut header = vec![first];
            encode_varint(&mut header, length);
            to_broker
                .write_all(&header)
                .await
                .map_err(|e| e.to_string())?;
            to_broker
                .write_all(&packet)
                .await
                .map_err(|e| e.to_string())?;
        }
        #[allow(unreachable_code)]
        Ok::<(), String>(())
    };
    tokio::select! {
        _ = downstream => Ok(()),
        result = upstream => result,
    }
}

/// A 2-byte-length-prefixed string at `at`; the string and the position after it.
fn mqtt_string(body: &[u8], at: usize) -> Option<(&str, usize)> {
    let len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let text = std::str::from_utf8(body.get(at + 2..at + 2 + len)?).ok()?;
    Some((text, at + 2 + len))
}

/// Checks one client packet (type, body) against the ACL; records the login at CONNECT.
fn judge(
    kind: u8,
    body: &[u8],
    user: &mut Option<String>,
    acl: Option<&BrokerAcl>,
) -> Result<(), String> {
    const CONNECT: u8 = 1;
    const PUBLISH: u8 = 3;
    const SUBSCRIBE: u8 = 8;
    let malformed = || "malformed packet".to_string();
    match (kind, user.as_deref()) {
        (CONNECT, None) => {
            let (_, at) = mqtt_string(body, 0).ok_or_else(malformed)?;
            let flags = *body.get(at + 1).ok_or_else(malformed)?;
            let (_, mut at) = mqtt_string(body, at + 4).ok_or_else(malformed)?;
            let mut will_topic = None;
            if flags & 0x04 != 0 {
                let (topic, next) = mqtt_string(body, at).ok_or_else(malformed)?;
                will_topic = Some(topic.to_string());
                let len = usize::from(u16::from_be_bytes([
                    *body.get(next).ok_or_else(malformed)?,
                    *body.get(next + 1).ok_or_else(malformed)?,
                ]));
                at = next + 2 + len;
            }
            let name = if flags & 0x80 != 0 {
                mqtt_string(body, at).ok_or_else(malformed)?.0.to_string()
            } else {
                String::new()
            };
            if let (Some(acl), Some(topic)) = (acl, &will_topic) {
                if !acl.may_publish(&name, topic) {
                    return Err(format!("`{name}` may not leave a will on {topic}"));
                }
            }
            *user = Some(name);
            Ok(())
        }
        (CONNECT, Some(_)) | (_, None) => Err("CONNECT must come first, once".into()),
        (PUBLISH, Some(name)) => {
            let (topic, _) = mqtt_string(body, 0).ok_or_else(malformed)?;
            match acl {
                Some(acl) if !acl.may_publish(name, topic) => {
                    Err(format!("`{name}` may not publish to {topic}"))
                }
                _ => Ok(()),
            }
        }
        (SUBSCRIBE, Some(name)) => {
            let Some(acl) = acl else {
                return Ok(());
            };
            let mut at = 2;
            while at < body.len() {
                let (filter, next) = mqtt_string(body, at).ok_or_else(malformed)?;
                if !acl.may_subscribe(name, filter) {
                    return Err(format!("`{name}` may not subscribe to {filter}"));
                }
                at = next + 1;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> BrokerAcl {
        BrokerAcl {
            publish: vec!["park/+/smoke/{user}/up".into()],
            subscribe: vec!["park/+/smoke/{user}/down".into()],
        }
    }

    #[test]
    fn a_device_publishes_only_its_uplink_and_reads_only_its_downlink() {
        let acl = acl();
        assert!(acl.may_publish("s1", "park/p/smoke/s1/up"));
        assert!(!acl.may_publish("s1", "park/p/smoke/s2/up"));
        assert!(!acl.may_publish("s1", "park/p/smoke/s1/up/extra"));
        assert!(
            !acl.may_publish("+", "park/p/smoke/s2/up"),
            "no wildcard logins"
        );
        assert!(acl.may_subscribe("s1", "park/p/smoke/s1/down"));
        assert!(acl.may_subscribe("s1", "park/+/smoke/s1/down"));
        assert!(!acl.may_subscribe("s1", "park/#"));
        assert!(!acl.may_subscribe("s1", "park/p/smoke/+/down"));
        assert!(!acl.may_subscribe("s1", "#"));
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(!filter_covers("a/+/c", "a/#"));
    }

    #[test]
    fn a_refused_publish_ends_the_connection_and_connect_must_come_first() {
        let acl = acl();
        let mut user = None;
        let publish = |topic: &str| {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend(topic.as_bytes());
            body.extend(b"{}");
            body
        };
        assert!(judge(3, &publish("park/p/smoke/s1/up"), &mut user, Some(&acl)).is_err());
        // CONNECT: "MQTT", level 4, flags (username), keep-alive, client id "c", username "s1".
        let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x80, 0, 60, 0, 1, b'c'];
        connect.extend([0, 2, b's', b'1']);
        judge(1, &connect, &mut user, Some(&acl)).expect("connect");
        assert_eq!(user.as_deref(), Some("s1"));
        assert!(judge(3, &publish("park/p/smoke/s1/up"), &mut user, Some(&acl)).is_ok());
        assert!(judge(3, &publish("park/p/smoke/s9/up"), &mut user, Some(&acl)).is_err());
    }
}
