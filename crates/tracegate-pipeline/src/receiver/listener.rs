//! The connection side shared by every receiver protocol: binding the
//! endpoint, accepting with TCP_NODELAY, the optional TLS handshake, serving
//! HTTP/1 and HTTP/2 with hyper, connection age and idle limits, and
//! graceful shutdown (stop accepting, let in-flight requests finish).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tls::ServerTls;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::StartError;
use crate::tls::TlsServerConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A slow or stalled TLS client must not hold a connection task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits `host:port` as Go's `net.SplitHostPort` does (`[v6]:port` and
/// `:port` included). The port must be numeric.
pub fn split_host_port(endpoint: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in address {endpoint:?}"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port in address {endpoint:?}"))?;
        (host, port)
    } else {
        let (host, port) = endpoint
            .rsplit_once(':')
            .ok_or_else(|| format!("missing port in address {endpoint:?}"))?;
        if host.contains(':') {
            return Err(format!("too many colons in address {endpoint:?}"));
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port {port:?} in address {endpoint:?}"))?;
    Ok((host, port))
}

/// Binds `endpoint`. An empty host listens on every interface (dual-stack
/// where the OS allows it); a name is resolved and its first IPv4 address
/// preferred, as Go's `net.Listen` does.
pub(crate) async fn bind(endpoint: &str) -> std::io::Result<TcpListener> {
    let (host, port) = split_host_port(endpoint)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let candidates: Vec<SocketAddr> = if host.is_empty() {
        vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ]
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let mut resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        resolved.sort_by_key(|a| !a.is_ipv4());
        resolved
    };
    let mut last_error = None;
    for addr in candidates {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            // Another process has the port: trying other addresses would
            // only hide that.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{host:?} resolved to no address"),
        )
    }))
}

/// Binds a protocol's `endpoint` (see [`bind`]) for receiver `id`, with
/// the address it got (the port the OS chose, for port 0).
pub(crate) async fn bind_endpoint(
    id: &str,
    protocol: &'static str,
    endpoint: &str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        receiver: id.to_string(),
        protocol,
        endpoint: endpoint.to_string(),
        source,
    };
    let listener = bind(endpoint).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// Loads a protocol's server TLS, offering `alpn`; `None` for plaintext.
pub(crate) fn tls_acceptor(
    tls: Option<&TlsServerConfig>,
    alpn: &[&[u8]],
    id: &str,
    protocol: &'static str,
) -> Result<Option<Arc<ServerTls>>, StartError> {
    match tls.filter(|t| t.is_enabled()) {
        None => Ok(None),
        Some(tls) => ServerTls::load(tls, alpn)
            .map(|tls| Some(Arc::new(tls)))
            .map_err(|source| StartError::Tls {
                receiver: id.to_string(),
                protocol,
                source,
            }),
    }
}

/// How accepted connections are served.
pub(crate) struct ConnectionSettings {
    /// hyper's HTTP/1 + HTTP/2 server, already tuned by the protocol.
    pub builder: auto::Builder<TokioExecutor>,
    pub tls: Option<Arc<ServerTls>>,
    /// Close connections this old (gracefully: GOAWAY, in-flight finish).
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, how long in-flight requests may take
    /// before the connection is dropped.
    pub max_connection_age_grace: Option<Duration>,
    /// Close connections with no request in flight for this long.
    pub max_connection_idle: Option<Duration>,
    /// Added to every response that does not set the header itself.
    pub response_headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl ConnectionSettings {
    pub fn new(builder: auto::Builder<TokioExecutor>, tls: Option<Arc<ServerTls>>) -> Self {
        ConnectionSettings {
            builder,
            tls,
            max_connection_age: None,
            max_connection_age_grace: None,
            max_connection_idle: None,
            response_headers: Arc::new([]),
        }
    }
}

/// A hyper builder with the timer every keepalive and header-timeout
/// setting needs.
pub(crate) fn hyper_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections on `listener` until `shutdown`, serving each with
/// `service` on a task tracked by `tasks`.
pub(crate) fn spawn_accept_loop<S, B>(
    listener: TcpListener,
    settings: ConnectionSettings,
    service: S,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let settings = Arc::new(settings);
    let connections = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Latency-bound small requests: never wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        settings.clone(),
                        service.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead
                    // of spinning, as Go's http.Server does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
        // Dropping the listener here closes the port before in-flight
        // requests have finished, so clients fail over instead of hanging.
    });
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<ConnectionSettings>,
    service: S,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match &settings.tls {
        None => drive(TokioIo::new(stream), peer, &settings, service, &shutdown).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.acceptor().accept(stream));
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                },
            };
            drive(TokioIo::new(stream), peer, &settings, service, &shutdown).await
        }
    }
}

async fn drive<I, S, B>(
    io: I,
    peer: SocketAddr,
    settings: &ConnectionSettings,
    service: S,
    shutdown: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        inner: service,
        peer,
        activity: activity.clone(),
        response_headers: settings.response_headers.clone(),
    };
    let mut conn = pin!(settings.builder.serve_connection(io, service));
    let mut aged = pin!(sleep_or_pending(settings.max_connection_age));
    let mut idle = pin!(idle_for(&activity, settings.max_connection_idle));
    let mut grace: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(std::future::pending());
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut aged, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
                grace = Box::pin(sleep_or_pending(settings.max_connection_age_grace));
            }
            _ = &mut idle, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // Dropping the connection closes it, in-flight or not.
            _ = &mut grace => return,
        }
    }
}

async fn sleep_or_pending(duration: Option<Duration>) {
    match duration {
        Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
        _ => std::future::pending().await,
    }
}

/// Resolves once no request has been in flight for `max_idle`.
async fn idle_for(activity: &Activity, max_idle: Option<Duration>) {
    let Some(max_idle) = max_idle.filter(|d| !d.is_zero()) else {
        return std::future::pending().await;
    };
    loop {
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(max_idle).await;
            continue;
        }
        let idle = activity.idle_time();
        if idle >= max_idle {
            return;
        }
        tokio::time::sleep(max_idle - idle).await;
    }
}

/// Requests in flight on one connection and when the last one started or
/// ended, for `max_connection_idle`.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    last_change_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = self.opened.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.last_change_nanos.store(nanos, Ordering::Release);
    }

    fn idle_time(&self) -> Duration {
        let last = Duration::from_nanos(self.last_change_nanos.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(last)
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts the requests of one connection in flight, and adds the
/// configured response headers.
/// The address a request's connection came from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub SocketAddr);

#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    response_headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        let in_flight = InFlight::start(self.activity.clone());
        let response = self.inner.call(request);
        let extra = self.response_headers.clone();
        Box::pin(async move {
            let mut response = response.await;
            drop(in_flight);
            if let Ok(response) = &mut response {
                let headers = response.headers_mut();
                for (name, value) in extra.iter() {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_endpoints_like_go() {
        assert_eq!(split_host_port("localhost:4317"), Ok(("localhost", 4317)));
        assert_eq!(split_host_port("0.0.0.0:0"), Ok(("0.0.0.0", 0)));
        assert_eq!(split_host_port(":4318"), Ok(("", 4318)));
        assert_eq!(split_host_port("[::1]:4317"), Ok(("::1", 4317)));
        for bad in [
            "localhost",
            "::1:4317",
            "[::1]",
            "host:http",
            "host:70000",
            "[::1:4317",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[tokio::test]
    async fn binds_port_zero_and_reports_a_port_in_use() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let err = bind(&addr.to_string()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let by_name = bind("localhost:0").await.unwrap();
        assert!(by_name.local_addr().unwrap().ip().is_loopback());
    }
}
