//! What a web client may hold: how many connections (in all and per address, within the file
//! descriptors left over for the gateway's own links), and how long a connection may stay
//! silent. A connection that sends nothing, or stops half-way, is closed; one with a request
//! being answered is not.
//!
//! Owns: the connection counts and the per-connection activity clock. Must not touch: HTTP
//! semantics (hyper's) or anything behind the routes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection must send its first bytes within this.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request being answered and no bytes either way for this long is closed
/// (event streams send a keep-alive every 15 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors kept for everything but web clients: MQTT, Modbus, InfluxDB, the store,
/// pushes. Web connections are refused before they would eat into these.
pub const FD_RESERVE: u64 = 512;

/// Raises the soft limit of open files to the hard limit; returns the soft limit then in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Web connections allowed: the configured cap, within the descriptors beyond the reserve.
pub fn connection_cap(configured: usize, fd_limit: u64) -> usize {
    let beyond_reserve = fd_limit.saturating_sub(FD_RESERVE).max(16);
    configured.min(usize::try_from(beyond_reserve).unwrap_or(usize::MAX))
}

/// Counts open web connections, in all and per client address.
pub struct ConnectionGate {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One admitted connection; counted until dropped.
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    address: IpAddr,
}

impl ConnectionGate {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `address`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Admitted> {
        let mut per_address = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per_address.get(&address).copied().unwrap_or(0);
        if mine >= self.max_per_address || self.total.load(Ordering::Relaxed) >= self.max_total {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        per_address.insert(address, mine + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            gate: Arc::clone(self),
            address,
        })
    }

    /// Connections refused by a cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_address = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                per_address.remove(&self.address);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved bytes, whether it ever sent any, and how many of its requests
/// are being answered.
#[derive(Default)]
pub struct Activity {
    last_ms: AtomicU64,
    spoke: AtomicBool,
    in_flight: AtomicUsize,
    started: Option<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Some(Instant::now()),
            ..Activity::default()
        })
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.map_or(0, |s| {
            u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    fn touch(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// A request is being answered until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Resolves when the connection has been silent too long.
    pub async fn silent_too_long(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                continue;
            }
            let limit = if self.spoke.load(Ordering::Relaxed) {
                IDLE_TIMEOUT
            } else {
                FIRST_BYTES_TIMEOUT
            };
            let silent = self
                .elapsed_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if silent >= u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) {
                return;
            }
        }
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records its activity.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.spoke.store(true, Ordering::Relaxed);
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let gate = ConnectionGate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = gate.admit(a).expect("first");
        let _a2 = gate.admit(a).expect("second");
        assert!(gate.admit(a).is_none(), "per address");
        let _b1 = gate.admit(b).expect("other address");
        assert!(gate.admit(b).is_none(), "in all");
        drop(a1);
        assert!(gate.admit(b).is_some());
        assert_eq!(gate.refused(), 2);
    }

    #[test]
    fn the_reserve_comes_out_of_the_descriptor_limit() {
        assert_eq!(connection_cap(4096, 1024), 512);
        assert_eq!(connection_cap(256, 1_048_576), 256);
        assert_eq!(connection_cap(256, 100), 16);
    }
}
