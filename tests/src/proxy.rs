//! A userspace TCP proxy for fault injection (there is no netem on these machines): it
//! sits on a link (a region's leaf-node link to the hub) and can delay it, black-hole it
//! (stop forwarding while keeping every socket open, like a WAN cut where packets vanish
//! and TCP waits), or reset it (every connection gets an RST).
//!
//! New connections go to the first upstream that accepts, starting after the last one
//! used, so that a dead upstream (a killed hub node) is skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the link does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk this long after it arrived (order kept).
    Delay(Duration),
    /// Forward nothing, accept nothing new upstream, keep every socket open.
    BlackHole,
}

/// Chunks in flight per direction; when full, the proxy stops reading (TCP backpressure).
const IN_FLIGHT: usize = 256;

#[derive(Debug)]
struct Shared {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
    mode: watch::Sender<Mode>,
    /// Cancelled by `reset`; replaced by a fresh token for later connections.
    reset: Mutex<CancellationToken>,
    connections: AtomicU64,
    bytes: AtomicU64,
}

/// A running proxy; stops (and drops its connections) on drop.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstreams`.
    pub async fn start(upstreams: Vec<SocketAddr>) -> anyhow::Result<Proxy> {
        anyhow::ensure!(!upstreams.is_empty(), "a proxy needs an upstream");
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstreams,
            next: AtomicUsize::new(0),
            mode: watch::channel(Mode::Pass).0,
            reset: Mutex::new(CancellationToken::new()),
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    pub fn delay(&self, by: Duration) {
        self.set_mode(Mode::Delay(by));
    }

    pub fn black_hole(&self) {
        self.set_mode(Mode::BlackHole);
    }

    /// Resets every open connection (RST to both ends); later connections work.
    pub fn reset(&self) {
        let mut token = self
            .shared
            .reset
            .lock()
            .expect("reset lock is never poisoned");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let reset = shared
            .reset
            .lock()
            .expect("reset lock is never poisoned")
            .clone();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = reset.cancelled() => {}
                _ = serve(client, &shared) => {}
            }
        });
    }
}

/// Connects upstream (once the link is not black-holed) and forwards both ways until
/// either side closes. Dropping this future drops both sockets with linger 0: an RST.
async fn serve(client: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let _ = client.set_zero_linger();
    let mut mode = shared.mode.subscribe();
    wait_open(&mut mode).await;
    let Some(upstream) = connect_upstream(shared).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = upstream.set_zero_linger();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = pipe(cr, uw, shared.mode.subscribe(), &shared.bytes);
    let down = pipe(ur, cw, shared.mode.subscribe(), &shared.bytes);
    // When one direction ends, the other soon does too; a half-open link is not a state
    // the tests need.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn connect_upstream(shared: &Shared) -> Option<TcpStream> {
    let n = shared.upstreams.len();
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..n {
        let addr = shared.upstreams[(start + i) % n];
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        {
            return Some(s);
        }
    }
    None
}

async fn wait_open(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() == Mode::BlackHole {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// One direction: a reader that stops reading while black-holed or when too much is in
/// flight, and a writer that holds each chunk until its delay has passed and the link is
/// open.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    bytes: &AtomicU64,
) {
    let mut read_mode = mode.clone();
    let mut write_mode = mode;
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            wait_open(&mut read_mode).await;
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = match *read_mode.borrow() {
                Mode::Delay(d) => Instant::now() + d,
                _ => Instant::now(),
            };
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            wait_open(&mut write_mode).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An echo server and a client connected to it through a proxy.
    async fn echo_through_proxy() -> (Proxy, TcpStream) {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::start(vec![addr]).await.unwrap();
        let client = TcpStream::connect(proxy.addr()).await.unwrap();
        (proxy, client)
    }

    async fn round_trip(c: &mut TcpStream, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        c.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, c.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(start.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_then_delays_both_ways() {
        let (proxy, mut c) = echo_through_proxy().await;
        assert!(round_trip(&mut c, Duration::from_secs(2)).await.is_some());
        proxy.delay(Duration::from_millis(150));
        let rtt = round_trip(&mut c, Duration::from_secs(2)).await.unwrap();
        assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?}");
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn black_hole_holds_bytes_until_restored() {
        let (proxy, mut c) = echo_through_proxy().await;
        assert!(round_trip(&mut c, Duration::from_secs(2)).await.is_some());
        proxy.black_hole();
        assert_eq!(round_trip(&mut c, Duration::from_millis(500)).await, None);
        proxy.pass();
        // The held "ping" arrives now: nothing was lost, only delayed.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");
        assert!(round_trip(&mut c, Duration::from_secs(2)).await.is_some());
    }

    #[tokio::test]
    async fn reset_breaks_open_connections_only() {
        let (proxy, mut c) = echo_through_proxy().await;
        assert!(round_trip(&mut c, Duration::from_secs(2)).await.is_some());
        proxy.reset();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "read {read:?} after a reset"
        );
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut again, Duration::from_secs(2))
                .await
                .is_some()
        );
    }
}
