//! A relay between the MQTT client (rumqttc) and the broker that keeps an oversized message
//! from ever breaking the session.
//!
//! rumqttc reads a whole packet into memory before looking at it, and a packet over its limit
//! is a connection error. On MQTT 3.1.1 the broker cannot be told a size limit, so it
//! redelivers the same QoS 1 message on every reconnect and nothing after it ever arrives: one
//! 2 MB payload stopped ingest for good. This relay sits in the byte stream from the broker:
//! every packet passes unchanged except a PUBLISH whose remaining length is over the limit,
//! which is read in fixed-size chunks and replaced by a small PUBLISH with the same flags,
//! topic, packet id (and MQTT 5 properties) whose payload is a marker, the original size and
//! the payload's first kilobyte. The client then acknowledges it like any other message, ingest
//! counts it as `too_large`, and the stream goes on. Memory per connection stays at a few
//! buffers whatever the broker sends (up to MQTT's 256 MB).
//!
//! The client connects to the relay over a Unix socket in a private directory; the relay
//! opens the broker connection (TCP or TLS) for each client connection, with a timeout, and
//! keeps the last error for the ingest task's log.
//!
//! Owns: the broker connection's bytes. Must not touch: MQTT state (acks, sessions), decoding.

use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
    BufReader as TokioBufReader, BufWriter,
};
use tokio::net::{TcpStream, UnixListener};
use tokio::task::JoinHandle;

/// Payload bytes of an oversized message kept for the bad-message record.
pub const HEAD_KEPT: usize = 1024;
/// Bytes read from the broker at a time.
const CHUNK: usize = 64 * 1024;
/// MQTT 5 properties of an oversized PUBLISH larger than this are dropped, not kept.
const MAX_KEPT_PROPERTIES: usize = 64 * 1024;
/// The largest packet MQTT can frame (remaining length of four bytes, plus the header).
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Bytes the client must accept so that every replacement fits: topic, packet id, properties,
/// marker, size and the kept head, over `limit`.
pub fn client_packet_limit(limit: usize) -> usize {
    limit + 2 + 65_535 + 2 + 4 + MAX_KEPT_PROPERTIES + MARKER_LEN + 8 + HEAD_KEPT + 5
}

const MARKER_LEN: usize = 16;

/// The marker that begins a replacement payload: random per process, so that no device can
/// send a message that reads as one.
fn marker() -> &'static [u8; MARKER_LEN] {
    static MARKER: OnceLock<[u8; MARKER_LEN]> = OnceLock::new();
    MARKER.get_or_init(rand::random)
}

/// An oversized message the relay replaced: its payload size and first bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized<'a> {
    pub size: u64,
    pub head: &'a [u8],
}

/// Recognises a replacement payload.
pub fn oversized(payload: &[u8]) -> Option<Oversized<'_>> {
    let rest = payload.strip_prefix(&marker()[..])?;
    let size = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some(Oversized {
        size,
        head: &rest[8..],
    })
}

/// Where the relay connects: the broker and, with TLS, how.
#[derive(Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
}

/// Builds the TLS client configuration for a broker from PEM files' contents.
pub fn tls_config(
    ca: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = rustls_pemfile::certs(&mut BufReader::new(Cursor::new(ca)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file: {e}"))?;
    roots.add_parsable_certificates(cas);
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut BufReader::new(Cursor::new(cert)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            if certs.is_empty() {
                return Err("the client certificate file holds no certificate".into());
            }
            let key = rustls_pemfile::private_key(&mut BufReader::new(Cursor::new(key)))
                .map_err(|e| format!("client key: {e}"))?
                .ok_or("the client key file holds no private key")?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// A running relay: its socket for the client, and the last broker-side error.
pub struct Relay {
    dir: PathBuf,
    socket: PathBuf,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a fresh Unix socket in a private directory under `runtime_dir`.
    pub fn start(
        runtime_dir: &Path,
        upstream: Upstream,
        limit: usize,
        v5: bool,
    ) -> std::io::Result<Relay> {
        let suffix: u64 = rand::random();
        let dir = runtime_dir.join(format!(
            "parkguard-mqtt-{}-{suffix:016x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let socket = dir.join("broker.sock");
        let listener = UnixListener::bind(&socket)?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = Arc::clone(&last_error);
        let task = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(err) => {
                        set(&errors, format!("relay accept failed: {err}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let upstream = upstream.clone();
                let errors = Arc::clone(&errors);
                tokio::spawn(async move {
                    if let Err(err) = relay(client, &upstream, limit, v5).await {
                        set(&errors, err);
                    }
                });
            }
        });
        Ok(Relay {
            dir,
            socket,
            last_error,
            task,
        })
    }

    /// The path the client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The broker-side cause of the last broken connection, taken.
    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn set(slot: &Mutex<Option<String>>, error: String) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect(upstream: &Upstream) -> Result<Box<dyn Stream>, String> {
    let address = format!("{}:{}", upstream.host, upstream.port);
    let connecting = async {
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &upstream.tls {
            None => Ok(Box::new(tcp) as Box<dyn Stream>),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(upstream.host.clone())
                    .map_err(|e| format!("`{}` is not a TLS server name: {e}", upstream.host))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {address}: {e}"))?;
                Ok(Box::new(tls) as Box<dyn Stream>)
            }
        }
    };
    tokio::time::timeout(upstream.connect_timeout, connecting)
        .await
        .map_err(|_| {
            format!(
                "no connection to {address} within {} s",
                upstream.connect_timeout.as_secs()
            )
        })?
}

/// Serves one client connection until either side closes it.
async fn relay(
    client: tokio::net::UnixStream,
    upstream: &Upstream,
    limit: usize,
    v5: bool,
) -> Result<(), String> {
    let broker = connect(upstream).await?;
    let (broker_read, mut broker_write) = tokio::io::split(broker);
    let (mut client_read, client_write) = client.into_split();
    let to_broker = async {
        tokio::io::copy(&mut client_read, &mut broker_write).await?;
        broker_write.shutdown().await
    };
    let from_broker = filter(broker_read, client_write, limit, v5);
    tokio::select! {
        result = to_broker => result.map_err(|e| format!("sending to the broker: {e}")),
        result = from_broker => result.map_err(|e| format!("receiving from the broker: {e}")),
    }
}

/// Copies MQTT packets from `input` to `output`, replacing every PUBLISH over `limit` bytes.
/// Ends at the end of `input`.
///
/// Complete packets never wait behind an incomplete one: whatever is buffered for the client
/// is flushed before any read that may wait for the broker. While an oversized payload is
/// skipped, a PINGRESP is injected every second, so that the client's keep-alive does not
/// expire behind a payload that takes long to arrive (an unexpected PINGRESP is harmless to
/// the client; the broker's own comes later, after the payload).
pub async fn filter<R, W>(input: R, output: W, limit: usize, v5: bool) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = TokioBufReader::with_capacity(CHUNK, input);
    let mut output = BufWriter::with_capacity(CHUNK, output);
    let mut packet = Vec::with_capacity(1024);
    loop {
        if input.buffer().is_empty() {
            output.flush().await?;
            if input.fill_buf().await?.is_empty() {
                return Ok(());
            }
        }
        // The fixed header takes at most five bytes.
        if input.buffer().len() < 5 {
            output.flush().await?;
        }
        let first = input.read_u8().await?;
        let remaining = read_varint(&mut input).await?;
        if first >> 4 == 3 && remaining > limit {
            output.flush().await?;
            let (replacement, rest) = shrink(&mut input, first, remaining, v5).await?;
            output.write_u8(first).await?;
            write_varint(&mut output, replacement.len()).await?;
            output.write_all(&replacement).await?;
            output.flush().await?;
            skip_with_pings(&mut input, &mut output, rest).await?;
            continue;
        }
        output.write_u8(first).await?;
        write_varint(&mut output, remaining).await?;
        if input.buffer().len() < remaining {
            output.flush().await?;
        }
        if remaining <= CHUNK {
            // Small packets gather in the writer's buffer and leave with one write.
            packet.resize(remaining, 0);
            input.read_exact(&mut packet).await?;
            output.write_all(&packet).await?;
        } else {
            let copied =
                tokio::io::copy(&mut (&mut input).take(remaining as u64), &mut output).await?;
            if copied < remaining as u64 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Reads an oversized PUBLISH's variable header and the first `HEAD_KEPT` bytes of its
/// payload; returns the body of its replacement and how many payload bytes are left to skip.
async fn shrink<R: AsyncRead + Unpin>(
    input: &mut R,
    first: u8,
    remaining: usize,
    v5: bool,
) -> std::io::Result<(Vec<u8>, u64)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut body = Vec::with_capacity(1024 + HEAD_KEPT);
    let topic_len = input.read_u16().await?;
    body.extend_from_slice(&topic_len.to_be_bytes());
    let start = body.len();
    body.resize(start + usize::from(topic_len), 0);
    input.read_exact(&mut body[start..]).await?;
    let mut consumed = 2 + usize::from(topic_len);
    if (first >> 1) & 3 != 0 {
        let mut packet_id = [0u8; 2];
        input.read_exact(&mut packet_id).await?;
        body.extend_from_slice(&packet_id);
        consumed += 2;
    }
    if v5 {
        let (length, length_bytes) = read_varint_counted(input).await?;
        consumed += length_bytes + length;
        if length <= MAX_KEPT_PROPERTIES {
            let mut properties = vec![0u8; length];
            input.read_exact(&mut properties).await?;
            encode_varint(&mut body, length);
            body.extend_from_slice(&properties);
        } else {
            skip(input, length as u64).await?;
            encode_varint(&mut body, 0);
        }
    }
    let payload = remaining
        .checked_sub(consumed)
        .ok_or_else(|| bad("PUBLISH header longer than the packet"))?;
    body.extend_from_slice(marker());
    body.extend_from_slice(&(payload as u64).to_be_bytes());
    let head = payload.min(HEAD_KEPT);
    let start = body.len();
    body.resize(start + head, 0);
    input.read_exact(&mut body[start..]).await?;
    Ok((body, (payload - head) as u64))
}

/// A PINGRESP: packet type 13, no body.
const PINGRESP: [u8; 2] = [0xd0, 0x00];

async fn skip_with_pings<R, W>(input: &mut R, output: &mut W, mut count: u64) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut last_ping = std::time::Instant::now();
    while count > 0 {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = available
            .len()
            .min(usize::try_from(count).unwrap_or(usize::MAX));
        input.consume(n);
        count -= n as u64;
        if last_ping.elapsed() >= Duration::from_secs(1) {
            last_ping = std::time::Instant::now();
            output.write_all(&PINGRESP).await?;
            output.flush().await?;
        }
    }
    Ok(())
}

async fn skip<R: AsyncRead + Unpin>(input: &mut R, count: u64) -> std::io::Result<()> {
    let skipped = tokio::io::copy(&mut input.take(count), &mut tokio::io::sink()).await?;
    if skipped < count {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

async fn read_varint<R: AsyncRead + Unpin>(input: &mut R) -> std::io::Result<usize> {
    Ok(read_varint_counted(input).await?.0)
}

/// MQTT's variable byte integer: the value and how many bytes it took.
pub(crate) async fn read_varint_counted<R: AsyncRead + Unpin>(
    input: &mut R,
) -> std::io::Result<(usize, usize)> {
    let mut value = 0usize;
    for i in 0..4 {
        let byte = input.read_u8().await?;
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "malformed remaining length",
    ))
}

pub(crate) fn encode_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

async fn write_varint<W: AsyncWrite + Unpin>(output: &mut W, value: usize) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(4);
    encode_varint(&mut bytes, value);
    output.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(
        qos: u8,
        topic: &str,
        packet_id: u16,
        properties: Option<&[u8]>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        if let Some(p) = properties {
            encode_varint(&mut body, p.len());
            body.extend_from_slice(p);
        }
        body.extend_from_slice(payload);
        let mut packet = vec![0x30 | (qos << 1)];
        encode_varint(&mut packet, body.len());
        packet.extend_from_slice(&body);
        packet
    }

    async fn run(input: Vec<u8>, limit: usize, v5: bool) -> Vec<u8> {
        let mut out = Vec::new();
        filter(&input[..], &mut out, limit, v5)
            .await
            .expect("filter");
        out
    }

    #[tokio::test]
    async fn packets_within_the_limit_pass_unchanged() {
        let mut stream = publish(1, "park/a/up", 7, None, b"{\"x\":1}");
        stream.extend_from_slice(&[0xd0, 0x00]); // PINGRESP
        stream.extend(publish(0, "t", 0, None, &[b'y'; 300]));
        assert_eq!(run(stream.clone(), 1000, false).await, stream);
    }

    #[tokio::test]
    async fn an_oversized_publish_becomes_a_marker_with_same_topic_and_packet_id() {
        let big = vec![b'z'; 3_000_000];
        let mut stream = publish(1, "park/a/smoke/1/up", 4242, None, &big);
        let after = publish(1, "park/a/smoke/2/up", 4243, None, b"{\"event\":\"alarm\"}");
        stream.extend_from_slice(&after);
        let out = run(stream, 1_048_576, false).await;
        let head_len = 2 + 17 + 2 + MARKER_LEN + 8 + HEAD_KEPT;
        let expected_first = {
            let mut body = Vec::new();
            body.extend_from_slice(&17u16.to_be_bytes());
            body.extend_from_slice(b"park/a/smoke/1/up");
            body.extend_from_slice(&4242u16.to_be_bytes());
            body.extend_from_slice(marker());
            body.extend_from_slice(&3_000_000u64.to_be_bytes());
            body.extend_from_slice(&big[..HEAD_KEPT]);
            assert_eq!(body.len(), head_len);
            let mut p = vec![0x32];
            encode_varint(&mut p, body.len());
            p.extend(body);
            p
        };
        assert_eq!(&out[..expected_first.len()], &expected_first[..]);
        assert_eq!(&out[expected_first.len()..], &after[..]);
        let payload = &expected_first[expected_first.len() - (MARKER_LEN + 8 + HEAD_KEPT)..];
        let seen = oversized(payload).expect("marker");
        assert_eq!(seen.size, 3_000_000);
        assert_eq!(seen.head, &big[..HEAD_KEPT]);
    }

    #[tokio::test]
    async fn mqtt5_properties_are_kept_in_the_replacement() {
        let properties = [0x23, 0x00, 0x05]; // topic alias 5
        let stream = publish(1, "", 9, Some(&properties), &vec![0u8; 5000]);
        let out = run(stream, 1000, true).await;
        // header(1) + remaining length(2: 1056) + topic length(2) + packet id(2)
        // + properties length(1) + properties(3) + marker, size and head.
        assert_eq!(&out[..3], &[0x32, 0xa0, 0x08]);
        assert_eq!(&out[3..5], &[0, 0]);
        assert_eq!(&out[5..7], &9u16.to_be_bytes());
        assert_eq!(&out[7..11], &[3, 0x23, 0x00, 0x05]);
        assert_eq!(oversized(&out[11..]).map(|o| o.size), Some(5000));
    }

    #[test]
    fn an_ordinary_payload_is_not_a_marker() {
        assert_eq!(oversized(b"{\"event\":\"alarm\"}"), None);
        assert_eq!(oversized(b""), None);
    }

    #[tokio::test]
    async fn a_truncated_packet_is_an_error_not_a_hang() {
        let mut stream = publish(1, "t", 1, None, b"abcdef");
        stream.truncate(stream.len() - 2);
        assert!(filter(&stream[..], Vec::new(), 1000, false).await.is_err());
    }
}
