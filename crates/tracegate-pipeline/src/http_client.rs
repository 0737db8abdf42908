//! A minimal HTTP/1.1 client: one connection per request, over TCP (plain
//! or TLS) or a Unix socket (Docker). The resource detectors' metadata
//! calls read whole bodies; the Kubernetes API client ([`crate::kube`])
//! also reads a watch's body as it arrives. Callers bound each request with
//! their own timeout.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Metadata answers are small; a larger body means something else answered.
const MAX_BODY: usize = 1 << 20;

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as text, or an error naming the status when it is not 200.
    pub fn ok_text(self, what: &str) -> Result<String, String> {
        if self.status != StatusCode::OK {
            return Err(format!("{what}: HTTP {}", self.status));
        }
        String::from_utf8(self.body.to_vec()).map_err(|_| format!("{what}: body is not UTF-8"))
    }
}

/// A response whose body is read as it arrives (a Kubernetes watch). The
/// connection closes when it is dropped.
pub(crate) struct Streaming {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    _connection: AbortOnDrop,
}

impl Streaming {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                    // Trailers carry no data.
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }

    /// The rest of the body, refused beyond `limit` bytes.
    pub async fn collect(self, limit: usize) -> Result<Bytes, String> {
        Limited::new(self.body, limit)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| format!("reading the body: {e}"))
    }
}

/// Stops the task driving a connection when the response is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one request to an `http://host[:port]/path` URL.
pub(crate) async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url}: only http:// metadata endpoints are supported"
        ));
    }
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // The Host header as the URL writes it.
    let host_header = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let result = async {
        let stream = connect(host, port, None).await?;
        let response = start(stream, method, host_header, path, headers).await?;
        whole(response, MAX_BODY).await
    };
    result.await.map_err(|e| format!("{url}: {e}"))
}

/// Sends one request over the Unix socket at `socket`.
pub(crate) async fn send_unix(
    socket: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let response = start(stream, method, "localhost", path, headers)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    whole(response, MAX_BODY)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))
}

/// Sends one request to `host:port` — over TLS with `tls`, else plain —
/// and returns once the response's head has arrived; the body is read from
/// the result. Errors name the URL.
pub(crate) async fn open(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Streaming, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let authority = authority(host, port);
    let result = async {
        let stream = connect(host, port, tls).await?;
        start(stream, method, &authority, path, headers).await
    };
    result
        .await
        .map_err(|e| format!("{scheme}://{authority}{path}: {e}"))
}

/// A byte stream to a server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn connect(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid server name"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(stream))
}

/// `host:port`, an IPv6 address in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn whole(response: Streaming, limit: usize) -> Result<Response, String> {
    let status = response.status;
    let headers = response.headers.clone();
    let body = response.collect(limit).await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

async fn start<S>(
    stream: S,
    method: Method,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Streaming, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    Ok(Streaming {
        status: parts.status,
        headers: parts.headers,
        body,
        _connection: driver,
    })
}
