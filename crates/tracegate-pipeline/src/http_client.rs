//! A minimal HTTP/1.1 client for the resource detectors' metadata
//! endpoints: one connection per request (detection makes a handful of
//! requests once, at startup), over TCP or a Unix socket (Docker). Callers
//! bound it with the detection timeout.

use std::path::Path;

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
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(host)
        .to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    exchange(stream, method, &authority, &path, headers)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// Sends one request to `https://host:port{path}` over TLS with `tls`
/// (the Kubernetes API).
pub(crate) async fn send_tls(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Response, String> {
    let url = format!("https://{host}:{port}{path}");
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("{url}: {host:?} is not a valid server name"))?;
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| format!("{url}: TLS: {e}"))?;
    let authority = format!("{host}:{port}");
    exchange(stream, Method::GET, &authority, path, headers)
        .await
        .map_err(|e| format!("{url}: {e}"))
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
    exchange(stream, method, "localhost", path, headers)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))
}

async fn exchange<S>(
    stream: S,
    method: Method,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
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
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}
