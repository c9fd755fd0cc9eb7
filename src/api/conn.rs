//! Connections: the accept loop, and what a connection may hold before its request is known to
//! come from a user.
//!
//! Nothing here needs a key, so nothing here may be free to hold for long or in numbers:
//!
//! - **At most [`Limits::max_connections`] connections** are served at once (fewer when the
//!   process may open few files: half the soft `RLIMIT_NOFILE`, so deliveries, the database and
//!   the rest keep the other half). At the cap the listener stops accepting; new connections wait
//!   in the kernel's backlog until one ends, rather than being accepted and dropped.
//! - **One client address holds at most [`Limits::max_connections_per_address`]** of them (IPv6
//!   by its /64); a connection beyond its address's share is closed as soon as it is accepted,
//!   so one client cannot take the slots everyone else needs (`/health` included).
//! - **Headers must arrive within [`Limits::header_timeout`]**, counted from when the connection
//!   is ready for a request — just accepted, or its previous answer sent — so the same timer is
//!   the idle keep-alive timeout: a connection that trickles header bytes, or says nothing, is
//!   closed when it runs out (hyper's `header_read_timeout`, with a tokio timer).
//! - **A request's header block is at most [`MAX_HEAD`] bytes** (hyper's read buffer), so a
//!   connection's buffer before any route runs is small.
//!
//! Bodies have their own deadline and budget, applied once the route and the key are known
//! ([`super::intake`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// The default of [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration =
    Duration::from_millis(crate::limits::HEADER_TIMEOUT_MS as u64);
/// The default of [`Limits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration =
    Duration::from_millis(crate::limits::BODY_TIMEOUT_MS as u64);
/// The default of [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = crate::limits::MAX_CONNECTIONS;
/// The largest request head (request line and headers) read, in bytes: hyper's read buffer.
pub const MAX_HEAD: usize = 64 << 10;

/// What connections may do before authentication: the server settings of `cueapi serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection has to deliver a request's headers once it is ready for one (just
    /// accepted, or its previous answer sent): also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, from the end of its headers.
    pub body_timeout: Duration,
    /// Connections served at once (lowered to half the soft open-file limit when that is less).
    pub max_connections: usize,
    /// Connections one client address (IPv6: its /64) may hold; `None`: a quarter of
    /// `max_connections`, or all of them behind a trusted reverse proxy (every connection then
    /// comes from the proxy).
    pub max_connections_per_address: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: None,
        }
    }
}

impl Limits {
    /// The cap and the per-address share in force: the cap within the open-file limit, the
    /// share within the cap.
    pub(super) fn effective(&self, behind_proxy: bool) -> (usize, usize) {
        let cap = self
            .max_connections
            .min(open_file_limit().map_or(usize::MAX, |n| n / 2))
            .max(1);
        let share = match self.max_connections_per_address {
            Some(n) => n,
            None if behind_proxy => cap,
            None => cap / 4,
        };
        (cap, share.clamp(1, cap))
    }
}

/// The soft limit on open files, if there is one.
fn open_file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if ok && lim.rlim_cur != libc::RLIM_INFINITY {
            return usize::try_from(lim.rlim_cur).ok();
        }
    }
    None
}

/// Connections held by each client address.
struct PerAddress {
    share: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's share; given back when dropped.
struct Held {
    of: Arc<PerAddress>,
    addr: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl PerAddress {
    fn admit(self: &Arc<Self>, ip: IpAddr, slot: OwnedSemaphorePermit) -> Option<Held> {
        let addr = client_key(ip);
        let mut held = self.held.lock();
        let n = held.entry(addr).or_insert(0);
        if *n >= self.share {
            return None;
        }
        *n += 1;
        Some(Held {
            of: Arc::clone(self),
            addr,
            _slot: slot,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.of.held.lock();
        if let Some(n) = held.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

/// What a client is counted as: its address, an IPv6 one by its /64 (what one client holds).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Serves `app` on `listener` within `limits` until `stop` turns true; then stops accepting,
/// lets each connection finish the request it is on, and returns once all have ended.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    behind_proxy: bool,
    mut stop: watch::Receiver<bool>,
) {
    let (cap, share) = limits.effective(behind_proxy);
    let slots = Arc::new(Semaphore::new(cap));
    let per_address = Arc::new(PerAddress {
        share,
        held: Mutex::new(HashMap::new()),
    });
    // Every connection task holds a receiver; the loop's end waits for them all to drop.
    let (alive_tx, alive_rx) = watch::channel(());
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Over its address's share: closed at once, its slot given back.
        let Some(held) = per_address.admit(peer.ip(), slot) else {
            drop(stream);
            continue;
        };
        let conn = Connection {
            stream,
            peer,
            app: app.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            _held: held,
            _alive: alive_rx.clone(),
        };
        tokio::spawn(conn.run());
    }
    drop(alive_rx);
    drop(listener);
    alive_tx.closed().await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An accept that failed: a connection that died in the backlog is nothing; anything else (out of
/// file descriptors, above all) is said and waited out briefly, not spun on.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _held: Held,
    _alive: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        let (app, peer) = (self.app, self.peer);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(Body::new))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        let conn = http.serve_connection(TokioIo::new(self.stream), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stopped(&mut self.stop) => {}
        }
        // Stopping: finish the request in flight (an idle connection closes at once).
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_within_the_open_file_limit_and_the_share_within_the_cap() {
        let files = open_file_limit();
        let l = Limits::default();
        let (cap, share) = l.effective(false);
        assert!((1..=DEFAULT_MAX_CONNECTIONS).contains(&cap));
        if let Some(n) = files {
            assert!(cap <= n / 2);
        }
        assert_eq!(share, (cap / 4).max(1));
        assert_eq!(l.effective(true).1, cap);
        let mine = Limits {
            max_connections: 10,
            max_connections_per_address: Some(50),
            ..Limits::default()
        };
        assert_eq!(mine.effective(false), (10, 10));
        let tiny = Limits {
            max_connections: 0,
            max_connections_per_address: Some(0),
            ..Limits::default()
        };
        assert_eq!(tiny.effective(false), (1, 1));
    }

    #[test]
    fn an_address_holds_its_share_and_gets_it_back() {
        let slots = Arc::new(Semaphore::new(10));
        let per = Arc::new(PerAddress {
            share: 2,
            held: Mutex::new(HashMap::new()),
        });
        let slot = || Arc::clone(&slots).try_acquire_owned().unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let h1 = per.admit(a, slot()).unwrap();
        let _h2 = per.admit(a, slot()).unwrap();
        assert!(per.admit(a, slot()).is_none());
        // The refused one's slot was dropped with it.
        assert_eq!(slots.available_permits(), 8);
        let _b = per.admit(b, slot()).unwrap();
        let _b2 = per.admit(b2, slot()).unwrap();
        assert!(per.admit(b, slot()).is_none(), "one /64, one client");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(
            per.admit(mapped, slot()).is_none(),
            "a mapped address is its IPv4 one"
        );
        drop(h1);
        assert_eq!(slots.available_permits(), 7);
        assert!(per.admit(a, slot()).is_some());
    }
}
