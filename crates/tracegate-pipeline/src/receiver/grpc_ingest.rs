//! The gRPC side shared by the receivers that take spans over gRPC (OTLP's
//! `TraceService/Export`, Jaeger's `CollectorService/PostSpans`): one
//! unary [`IngestMethod`] per listener, served with the same HTTP/2
//! settings, limits, counters and answers. The request's one message is
//! read here (see [`gather_message`]), so it reaches the decoder as the
//! bytes that came off the wire, decompressed and capped at
//! `max_recv_msg_size_mib`, and is answered as tonic's unary handler would;
//! tonic serves only what that does not cover (encodings tracegate does not
//! take).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::tls::ServerTls;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

use super::counters::{RejectReason, TransportCounters, OTLP_REASONS};
use super::listener::{self, ConnectionSettings, PeerAddr};
use super::otlp::status::ExportFailure;
use super::otlp::GrpcConfig;
use crate::auth::{Authenticators, ServerAuth};
use crate::compression::{decompress, gunzip_members, ContentEncoding, DecompressError};
use crate::consumer::NextConsumer;
use crate::grpc::PassthroughCodec;
use crate::offload;
use crate::processor::tail_sampling::handover::{HandoverExchange, HANDOVER_PATH};
use tracegate_model::{Indexing, SpanBatch};

/// The largest HTTP/2 frame gRPC clients may send (the protocol's default
/// is 16 KiB). A request that fits in one DATA frame reaches the scanner
/// without a copy, and fewer frames cost both sides less CPU (see
/// benches/RESULTS.md, "gRPC transport settings"). It adds no memory: a
/// peer can never have more unread data in flight than the connection's
/// flow-control window, hyper's 1 MiB, whatever the frame size.
pub(crate) const GRPC_MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// The HTTP/2 connection settings of a gRPC listener: large frames, and
/// the config's stream, buffer and keepalive limits.
pub(crate) fn grpc_settings(
    config: &GrpcConfig,
    tls: Option<Arc<ServerTls>>,
) -> ConnectionSettings {
    let mut builder = listener::hyper_builder().http2_only();
    {
        let mut h2 = builder.http2();
        h2.max_frame_size(GRPC_MAX_FRAME_SIZE);
        if let Some(streams) = config.max_concurrent_streams.filter(|s| *s > 0) {
            h2.max_concurrent_streams(streams);
        }
        if let Some(size) = config.write_buffer_size.filter(|s| *s > 0) {
            h2.max_send_buf_size(usize::try_from(size).unwrap_or(usize::MAX));
        }
        if let Some(params) = config
            .keepalive
            .as_ref()
            .and_then(|k| k.server_parameters.as_ref())
        {
            if let Some(time) = params.time.filter(|t| !t.is_zero()) {
                h2.keep_alive_interval(time);
            }
            if let Some(timeout) = params.timeout.filter(|t| !t.is_zero()) {
                h2.keep_alive_timeout(timeout);
            }
        }
    }
    let mut settings = ConnectionSettings::new(builder, tls);
    if let Some(params) = config
        .keepalive
        .as_ref()
        .and_then(|k| k.server_parameters.as_ref())
    {
        settings.max_connection_age = params.max_connection_age;
        settings.max_connection_age_grace = params.max_connection_age_grace;
        settings.max_connection_idle = params.max_connection_idle;
    }
    settings
}

/// A bound gRPC listener of receiver `id`, before it serves.
pub(crate) struct BoundGrpc<'a> {
    config: &'a GrpcConfig,
    tls: Option<Arc<ServerTls>>,
    listener: TcpListener,
    auth: Option<ServerAuth>,
}

impl<'a> BoundGrpc<'a> {
    /// Loads the TLS files and binds the endpoint of `config`, so a bad
    /// certificate or a port in use fails before anything serves.
    pub async fn bind(
        config: &'a GrpcConfig,
        id: &str,
        authenticators: &Authenticators,
    ) -> Result<(Self, std::net::SocketAddr), super::StartError> {
        let auth = ServerAuth::resolve(
            authenticators,
            config.auth.as_ref().map(|a| a.authenticator.as_str()),
            &[],
        )
        .map_err(|message| super::StartError::Auth {
            receiver: id.to_string(),
            protocol: "grpc",
            message,
        })?;
        let tls = listener::tls_acceptor(config.tls.as_ref(), &[b"h2"], id, "grpc")?;
        let (listener, addr) = listener::bind_endpoint(id, "grpc", &config.endpoint).await?;
        Ok((
            BoundGrpc {
                config,
                tls,
                listener,
                auth,
            },
            addr,
        ))
    }

    /// Serves `method` until `shutdown`, handing batches to `next`, with
    /// the transport counters of receiver `id`; with `handover`, also
    /// tail sampling's hand-over method (`HANDOVER_PATH`).
    pub fn serve(
        self,
        method: &'static IngestMethod,
        id: &str,
        next: NextConsumer,
        handover: Option<HandoverExchange>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let service = GrpcService(Arc::new(GrpcReceiver {
            method,
            indexing: super::indexing_for(next.as_ref()),
            next,
            handover,
            counters: TransportCounters::register_with_auth(
                id,
                "grpc",
                OTLP_REASONS,
                self.auth.is_some(),
            ),
            max_recv_msg_size: self.config.max_recv_msg_size(),
            auth: self.auth,
        }));
        let settings = grpc_settings(self.config, self.tls);
        listener::spawn_accept_loop(self.listener, settings, service, shutdown, tasks);
    }
}

/// The one unary method a gRPC listener serves, taking spans and
/// answering an empty message (which encodes to no bytes).
pub(crate) struct IngestMethod {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// The request message as spans, indexed as the listener's pipelines
    /// need ([`Indexing`]); an error is the INVALID_ARGUMENT message.
    pub decode: fn(Bytes, Indexing) -> Result<SpanBatch, String>,
}

/// State shared by every connection of one gRPC listener.
struct GrpcReceiver {
    method: &'static IngestMethod,
    next: NextConsumer,
    /// Lazy when nothing after the receiver reads spans
    /// ([`Consumer::reads_spans`](crate::consumer::Consumer::reads_spans)).
    indexing: Indexing,
    /// Where hand-overs between gateways go (OTLP listeners only).
    handover: Option<HandoverExchange>,
    counters: TransportCounters,
    max_recv_msg_size: usize,
    /// The listener's `auth`: every request's credentials are checked
    /// before anything of it is read.
    auth: Option<ServerAuth>,
}

/// The hyper service of one gRPC listener.
#[derive(Clone)]
struct GrpcService(Arc<GrpcReceiver>);

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            if let Some(auth) = &receiver.auth {
                if let Err(message) = auth.check(request.headers(), request.uri()).await {
                    receiver.counters.rejected(RejectReason::Unauthenticated);
                    return Ok(Status::unauthenticated(message).into_http());
                }
            }
            if request.uri().path() == HANDOVER_PATH {
                if let Some(exchange) = receiver.handover.clone() {
                    return Ok(
                        serve_handover(&exchange, request, receiver.max_recv_msg_size).await,
                    );
                }
            }
            if request.uri().path() != receiver.method.path {
                return Ok(unknown_method(receiver.method.path, request.uri().path()).into_http());
            }
            if let Some(encoding) = gathered_encoding(request.headers()) {
                let limit = receiver.max_recv_msg_size;
                let gathered = gather_message(request.into_body(), encoding.is_some(), limit);
                let message = decompress_gathered(encoding, gathered.await, limit).await;
                return Ok(match message {
                    Ok(message) => match receiver.ingest(message.message, message.gzip).await {
                        Ok(()) => empty_ok_response(),
                        Err(status) => status.into_http(),
                    },
                    Err(status) => receiver.account_transport_failure(status.into_http()),
                });
            }
            let mut grpc = tonic::server::Grpc::new(PassthroughCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(receiver.max_recv_msg_size)
                .max_encoding_message_size(usize::MAX);
            let ran = Arc::new(AtomicBool::new(false));
            let handler = IngestHandler {
                receiver: receiver.clone(),
                ran: ran.clone(),
            };
            let response = grpc.unary(handler, request).await;
            // Once the handler ran, its answer is its own (counted there).
            if ran.load(Ordering::Acquire) {
                Ok(response)
            } else {
                Ok(receiver.account_transport_failure(response))
            }
        })
    }
}

/// One hand-over between gateways: read as an ingest request is (the
/// encodings tracegate's own sender uses), then given to `exchange` with
/// the address it came from.
async fn serve_handover(
    exchange: &HandoverExchange,
    request: Request<Incoming>,
    limit: usize,
) -> Response<tonic::body::Body> {
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
    let Some(encoding) = gathered_encoding(request.headers()) else {
        return Status::unimplemented("hand-overs are sent uncompressed, gzip or zstd").into_http();
    };
    let gathered = gather_message(request.into_body(), encoding.is_some(), limit);
    let message = decompress_gathered(encoding, gathered.await, limit).await;
    match message {
        Ok(message) => match exchange.deliver(message.message, peer).await {
            Ok(()) => empty_ok_response(),
            Err(status) => status.into_http(),
        },
        Err(status) => status.into_http(),
    }
}

/// What grpc-go answers for a method it does not serve (`path`) when it
/// serves only `served`.
fn unknown_method(served: &str, path: &str) -> Status {
    match split_method(path) {
        (service, Some(method)) if service == split_method(served).0 => {
            Status::unimplemented(format!("unknown method {method} for service {service}"))
        }
        (service, _) => Status::unimplemented(format!("unknown service {service}")),
    }
}

/// `/package.Service/Method` as (`package.Service`, `Method`).
fn split_method(path: &str) -> (&str, Option<&str>) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    (parts.next().unwrap_or_default(), parts.next())
}

impl GrpcReceiver {
    /// Counts requests refused before the handler ran (tonic's framing or
    /// decompression, or the receiver's own gathering), and maps tonic's
    /// OUT_OF_RANGE for an oversized message to RESOURCE_EXHAUSTED, which
    /// grpc-go (and so the collector) answers. Never called with the
    /// handler's own answers, which can carry any code a backend gave.
    fn account_transport_failure(
        &self,
        mut response: Response<tonic::body::Body>,
    ) -> Response<tonic::body::Body> {
        let Some(code) = response
            .headers()
            .get(Status::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32)
        else {
            return response;
        };
        let reason = match code {
            Code::OutOfRange => {
                response.headers_mut().insert(
                    Status::GRPC_STATUS,
                    HeaderValue::from(Code::ResourceExhausted as i32),
                );
                RejectReason::TooLarge
            }
            Code::ResourceExhausted => RejectReason::TooLarge,
            Code::Unimplemented => RejectReason::UnsupportedEncoding,
            Code::Internal => RejectReason::Malformed,
            _ => return response,
        };
        self.counters.rejected(reason);
        response
    }
}

/// The unary handler of the listener's [`IngestMethod`]; `ran` tells the
/// service that tonic got as far as calling it.
struct IngestHandler {
    receiver: Arc<GrpcReceiver>,
    ran: Arc<AtomicBool>,
}

impl tonic::server::UnaryService<Bytes> for IngestHandler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        self.ran.store(true, Ordering::Release);
        Box::pin(async move {
            receiver.ingest(request.into_inner(), Vec::new()).await?;
            Ok(tonic::Response::new(Bytes::new()))
        })
    }
}

impl GrpcReceiver {
    /// Decodes one request message and hands it to the pipeline, with the
    /// gzip members it arrived in when the decoded batch holds the message
    /// itself (OTLP), so an exporter can send them on as they came.
    async fn ingest(
        &self,
        message: Bytes,
        gzip: Vec<(usize, tracegate_gzip::Member)>,
    ) -> Result<(), Status> {
        let batch = match (self.method.decode)(message.clone(), self.indexing) {
            Ok(mut batch) => {
                if !gzip.is_empty() {
                    batch.set_gzip_members(&message, gzip);
                }
                batch
            }
            Err(message) => {
                self.counters.rejected(RejectReason::Malformed);
                return Err(Status::invalid_argument(message));
            }
        };
        self.counters
            .export(&self.next, batch)
            .await
            .map_err(|e| ExportFailure::from(e).to_grpc())
    }
}

/// The `grpc-encoding` of a request the receiver gathers itself: `None`
/// for uncompressed messages (no header, or `identity`); an encoding tonic
/// does not serve either is left to tonic, which answers UNIMPLEMENTED.
fn gathered_encoding(headers: &http::HeaderMap) -> Option<Option<ContentEncoding>> {
    match headers.get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => Some(None),
        Some(b"gzip") => Some(Some(ContentEncoding::Gzip)),
        Some(b"zstd") => Some(Some(ContentEncoding::Zstd)),
        Some(_) => None,
    }
}

/// A request message, decompressed, and the gzip members it arrived in
/// (each with the offset of its data in the message).
#[derive(Debug)]
struct Received {
    message: Bytes,
    gzip: Vec<(usize, tracegate_gzip::Member)>,
}

/// A gathered message as the pipeline takes it: decompressed if it came
/// compressed, on the blocking pool when large ([`offload`]).
async fn decompress_gathered(
    encoding: Option<ContentEncoding>,
    gathered: Result<(bool, Bytes), Status>,
    limit: usize,
) -> Result<Received, Status> {
    match (encoding, gathered?) {
        (Some(encoding), (true, message)) => {
            offload::by_size(message.len(), offload::COMPRESSED_BYTES, move || {
                decompress_message(encoding, message, limit)
            })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("Error decompressing: {e}"))))
        }
        (_, (_, message)) => Ok(Received {
            message,
            gzip: Vec::new(),
        }),
    }
}

/// Decompresses a request message, capped at `limit` bytes as tonic caps
/// it: RESOURCE_EXHAUSTED past the cap, INTERNAL for corrupt data.
fn decompress_message(
    encoding: ContentEncoding,
    message: Bytes,
    limit: usize,
) -> Result<Received, Status> {
    let status = |e: DecompressError| match e {
        DecompressError::TooLarge { .. } => {
            Status::resource_exhausted(format!("Error decompressing: {e}"))
        }
        DecompressError::Corrupt { .. } => Status::internal(format!("Error decompressing: {e}")),
    };
    let plain = |message| Received {
        message,
        gzip: Vec::new(),
    };
    if encoding == ContentEncoding::Zstd {
        if let Some(decompressed) = zstd_of_stated_size(&message, limit) {
            return Ok(plain(decompressed));
        }
    }
    if encoding == ContentEncoding::Gzip {
        let (message, gzip) = gunzip_members(&message, limit).map_err(status)?;
        return Ok(Received { message, gzip });
    }
    decompress(encoding, message, limit)
        .map(plain)
        .map_err(status)
}

/// A zstd frame that states its decompressed size (one-shot encoders
/// write it) is decompressed in one call into a buffer of that size, with
/// a decompression context kept per thread; tonic grows its buffer through
/// an 8 KiB copy loop and sets up a context per request. `None` (a size
/// not stated or over `limit`, several frames, corrupt data) leaves the
/// message to the capped streaming path, which also says what is wrong.
fn zstd_of_stated_size(input: &[u8], limit: usize) -> Option<Bytes> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(input).ok()??;
    let size = usize::try_from(size).ok().filter(|size| *size <= limit)?;
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Decompressor::new().ok();
        }
        let mut out = Vec::with_capacity(size);
        match cell.as_mut()?.decompress_to_buffer(input, &mut out) {
            Ok(written) if written == size => Some(Bytes::from(out)),
            _ => None,
        }
    })
}

/// The gRPC message prefix: compressed flag and big-endian length.
const PREFIX_LEN: usize = 5;

/// Reads the one message of a unary request, and whether it is compressed
/// (allowed when the request named an encoding). tonic's decoder copies
/// every DATA frame into its buffer; here a message that arrives in one
/// frame (the common case, as the listener takes 1 MiB frames) is taken as
/// that frame's bytes, and one split over several frames is copied once
/// into a buffer of its announced size. Failures get tonic's codes and
/// messages, except that a second message in the request, which tonic
/// would drop unread, is refused.
async fn gather_message<B>(
    mut body: B,
    compression_allowed: bool,
    limit: usize,
) -> Result<(bool, Bytes), Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;

    let mut prefix = [0u8; PREFIX_LEN];
    let mut prefix_read = 0;
    let mut message: Option<(usize, bytes::BytesMut)> = None;
    let mut whole: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let status = Status::from_error(e.into());
                // A client that cancels has left; tonic reads that as the
                // end of the request.
                if status.code() == Code::Cancelled {
                    break;
                }
                return Err(status);
            }
        };
        // Request trailers carry nothing tracegate reads.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if whole.is_some() {
            if data.is_empty() {
                continue;
            }
            return Err(Status::internal(
                "protocol error: more than one message in a unary request",
            ));
        }
        if prefix_read < PREFIX_LEN {
            let take = (PREFIX_LEN - prefix_read).min(data.len());
            prefix[prefix_read..prefix_read + take].copy_from_slice(&data[..take]);
            prefix_read += take;
            data = data.slice(take..);
            if prefix_read < PREFIX_LEN {
                continue;
            }
            match prefix[0] {
                0 => {}
                1 if compression_allowed => {}
                1 => {
                    return Err(Status::internal(
                        "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                    ))
                }
                flag => {
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
                    )))
                }
            }
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if len > limit {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
                )));
            }
            if data.len() >= len {
                // The whole message in this frame: no copy.
                whole = Some(data.split_to(len));
            } else {
                message = Some((len, bytes::BytesMut::with_capacity(len)));
            }
        }
        if let Some((len, buf)) = message.as_mut() {
            let take = (*len - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = data.slice(take..);
            if buf.len() == *len {
                whole = message.take().map(|(_, buf)| buf.freeze());
            }
        }
        if whole.is_some() && !data.is_empty() {
            return Err(Status::internal(
                "protocol error: more than one message in a unary request",
            ));
        }
    }
    match whole {
        Some(message) => Ok((prefix[0] == 1, message)),
        None if prefix_read == 0 => Err(Status::internal("Missing request message.")),
        None => Err(Status::internal("Unexpected EOF decoding stream.")),
    }
}

/// The answer to a request the pipeline took: the empty response message
/// and `grpc-status: 0`, as tonic's unary handler sends it.
fn empty_ok_response() -> Response<tonic::body::Body> {
    use http_body_util::BodyExt;

    let mut trailers = http::HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from(Code::Ok as i32));
    let body = http_body_util::Full::new(Bytes::from_static(&[0; PREFIX_LEN]))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut response = Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::TRACE_EXPORT_PATH;
    use http_body::Frame;
    use http_body_util::StreamBody;

    /// A request body that yields `chunks` as its DATA frames.
    fn body_of(
        chunks: Vec<Bytes>,
    ) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames = chunks.into_iter().map(|c| Ok(Frame::data(c)));
        StreamBody::new(futures::stream::iter(frames))
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut framed = vec![flag];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[tokio::test]
    async fn a_message_arrives_whole_however_the_frames_split_it() {
        let message: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let wire = framed(0, &message);
        // One frame, and two or three frames split at every place around
        // the prefix and inside the message.
        let mut splits = vec![vec![wire.clone()]];
        for at in (1..wire.len()).filter(|at| *at < 12 || at % 97 == 0) {
            splits.push(vec![wire[..at].to_vec(), wire[at..].to_vec()]);
            splits.push(vec![
                wire[..at / 2].to_vec(),
                Vec::new(),
                wire[at / 2..at].to_vec(),
                wire[at..].to_vec(),
            ]);
        }
        for chunks in splits {
            let shape: Vec<usize> = chunks.iter().map(Vec::len).collect();
            let body = body_of(chunks.into_iter().map(Bytes::from).collect());
            let got = gather_message(body, false, message.len()).await;
            assert_eq!(
                got.unwrap(),
                (false, Bytes::from(message.clone())),
                "frames {shape:?}"
            );
        }
        let empty = gather_message(body_of(vec![Bytes::from(framed(0, b""))]), false, 0).await;
        assert_eq!(empty.unwrap(), (false, Bytes::new()));
    }

    #[test]
    fn compressed_messages_are_decompressed_within_the_limit() {
        use crate::compression::test_encoders::{gzip, zstd};
        let message: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let stated = zstd::bulk::compress(&message, 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&stated),
            Ok(Some(_))
        ));
        // Streamed zstd does not state its size; two frames state only
        // the first one's.
        let streamed = zstd(&message);
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let two_frames = [stated.clone(), stated.clone()].concat();
        let doubled = [message.clone(), message.clone()].concat();
        for (encoding, compressed, expected) in [
            (ContentEncoding::Zstd, &stated, &message),
            (ContentEncoding::Zstd, &streamed, &message),
            (ContentEncoding::Zstd, &two_frames, &doubled),
            (ContentEncoding::Gzip, &gzip(&message), &message),
        ] {
            let limit = expected.len();
            let got = decompress_message(encoding, Bytes::from(compressed.clone()), limit);
            assert_eq!(got.unwrap().message, &expected[..], "{encoding:?}");
            let over = decompress_message(encoding, Bytes::from(compressed.clone()), limit - 1);
            assert_eq!(
                over.unwrap_err().code(),
                Code::ResourceExhausted,
                "{encoding:?}"
            );
        }
        let corrupt = [&stated[..stated.len() / 2], &[0xff; 64][..]].concat();
        for encoding in [ContentEncoding::Zstd, ContentEncoding::Gzip] {
            let status =
                decompress_message(encoding, Bytes::from(corrupt.clone()), 1 << 20).unwrap_err();
            assert_eq!(status.code(), Code::Internal, "{encoding:?}: {status:?}");
        }
    }

    #[tokio::test]
    async fn the_compressed_flag_needs_an_encoding() {
        let wire = Bytes::from(framed(1, b"abc"));
        let got = gather_message(body_of(vec![wire.clone()]), true, 3).await;
        assert_eq!(got.unwrap(), (true, Bytes::from_static(b"abc")));
        let status = gather_message(body_of(vec![wire]), false, 3)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }

    #[tokio::test]
    async fn bad_requests_get_tonics_answers() {
        let message = vec![7u8; 100];
        let wire = framed(0, &message);
        let cases: Vec<(Vec<Vec<u8>>, usize, Code, &str)> = vec![
            (
                vec![wire.clone()],
                99,
                Code::OutOfRange,
                "found 100 bytes, the limit is: 99",
            ),
            (
                vec![framed(1, &message)],
                100,
                Code::Internal,
                "compressed-flag",
            ),
            (
                vec![framed(2, &message)],
                100,
                Code::Internal,
                "invalid compression flag: 2",
            ),
            (vec![], 100, Code::Internal, "Missing request message."),
            (
                vec![wire[..3].to_vec()],
                100,
                Code::Internal,
                "Unexpected EOF",
            ),
            (
                vec![wire[..50].to_vec()],
                100,
                Code::Internal,
                "Unexpected EOF",
            ),
            (
                vec![wire.clone(), wire.clone()],
                100,
                Code::Internal,
                "more than one message",
            ),
            (
                [wire.clone(), vec![0]]
                    .concat()
                    .chunks(40)
                    .map(<[u8]>::to_vec)
                    .collect(),
                100,
                Code::Internal,
                "more than one message",
            ),
        ];
        for (chunks, limit, code, message) in cases {
            let shape: Vec<usize> = chunks.iter().map(Vec::len).collect();
            let body = body_of(chunks.into_iter().map(Bytes::from).collect());
            let status = gather_message(body, false, limit).await.unwrap_err();
            assert_eq!(status.code(), code, "frames {shape:?}: {status:?}");
            assert!(
                status.message().contains(message),
                "frames {shape:?}: {status:?}"
            );
        }
    }

    /// An OTLP receiver serving gRPC on 127.0.0.1:0 that hands batches to
    /// the test.
    async fn grpc_receiver(
        grpc: serde_json::Value,
    ) -> (
        std::net::SocketAddr,
        tokio_util::sync::CancellationToken,
        tokio::sync::mpsc::UnboundedReceiver<SpanBatch>,
    ) {
        let config = crate::receiver::ReceiverConfig::from_value(
            "otlp",
            serde_json::json!({"protocols": {"grpc": grpc}}),
        )
        .unwrap()
        .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = config
            .start(
                "otlp/transport",
                Arc::new(crate::receiver::test_support::Collect(tx)),
                shutdown.clone(),
            )
            .await
            .unwrap();
        (running.addresses()[0].1, shutdown, rx)
    }

    /// The server's first SETTINGS as (id, value) pairs, and the increment
    /// of its first WINDOW_UPDATE for the whole connection.
    async fn server_settings(addr: std::net::SocketAddr) -> (Vec<(u16, u32)>, u32) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut settings = None;
        let mut connection_window = None;
        while settings.is_none() || connection_window.is_none() {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            match head[3] {
                // SETTINGS, not the ACK of ours.
                4 if head[4] & 1 == 0 && settings.is_none() => {
                    settings = Some(
                        payload
                            .chunks_exact(6)
                            .map(|e| {
                                (
                                    u16::from_be_bytes([e[0], e[1]]),
                                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                                )
                            })
                            .collect(),
                    );
                }
                8 if stream == 0 => {
                    connection_window = Some(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
                _ => {}
            }
        }
        (
            settings.unwrap_or_default(),
            connection_window.unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn grpc_listeners_take_large_frames_within_bounded_windows() {
        let (addr, shutdown, _rx) =
            grpc_receiver(serde_json::json!({"endpoint": "127.0.0.1:0"})).await;
        let (settings, connection_increment) =
            tokio::time::timeout(std::time::Duration::from_secs(5), server_settings(addr))
                .await
                .expect("the server sends its SETTINGS and a connection WINDOW_UPDATE");
        const MAX_FRAME_SIZE: u16 = 5;
        const INITIAL_WINDOW_SIZE: u16 = 4;
        const MAX_CONCURRENT_STREAMS: u16 = 3;
        let get = |id| settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
        assert_eq!(get(MAX_FRAME_SIZE), Some(GRPC_MAX_FRAME_SIZE));
        // The memory bound docs/configuration.md states: 1 MiB per stream
        // and per connection (65 535 bytes plus the increment), 200 streams.
        assert_eq!(get(INITIAL_WINDOW_SIZE), Some(1 << 20));
        assert_eq!(65_535 + connection_increment, 1 << 20);
        assert_eq!(get(MAX_CONCURRENT_STREAMS), Some(200));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_request_larger_than_a_frame_and_the_windows_arrives_whole() {
        use prost::Message;
        use tracegate_model::otlp::{
            any_value, AnyValue, ExportTraceServiceRequest, KeyValue, ResourceSpans, ScopeSpans,
            Span,
        };
        let (addr, shutdown, mut rx) = grpc_receiver(
            serde_json::json!({"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 8}),
        )
        .await;
        // 3 MiB: three frames' and three windows' worth.
        let span = |i: u8| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("large-{i}"),
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(
                        "x".repeat(64 * 1024 + i as usize),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sent = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..48).map(span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let encoded = Bytes::from(sent.encode_to_vec());
        assert!(encoded.len() > 3 << 20);
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for compression in [None, Some(CompressionEncoding::Gzip)] {
            let mut client = tonic::client::Grpc::new(channel.clone());
            if let Some(encoding) = compression {
                client = client.send_compressed(encoding);
            }
            client.ready().await.unwrap();
            client
                .unary(
                    tonic::Request::new(encoded.clone()),
                    http::uri::PathAndQuery::from_static(TRACE_EXPORT_PATH),
                    PassthroughCodec,
                )
                .await
                .unwrap();
            let batch = rx.recv().await.unwrap();
            assert_eq!(batch.bytes(), &encoded, "{compression:?}");
            assert_eq!(batch.len(), 48);
        }
        shutdown.cancel();
    }

    #[test]
    fn other_methods_get_grpc_gos_answers() {
        let jaeger = "/jaeger.api_v2.CollectorService/PostSpans";
        let trace = "opentelemetry.proto.collector.trace.v1.TraceService";
        for (served, path, message) in [
            (
                TRACE_EXPORT_PATH,
                format!("/{trace}/Other"),
                format!("unknown method Other for service {trace}"),
            ),
            (
                TRACE_EXPORT_PATH,
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export".into(),
                "unknown service opentelemetry.proto.collector.logs.v1.LogsService".into(),
            ),
            (
                jaeger,
                "/jaeger.api_v2.CollectorService/GetTrace".into(),
                "unknown method GetTrace for service jaeger.api_v2.CollectorService".into(),
            ),
            (
                jaeger,
                TRACE_EXPORT_PATH.into(),
                format!("unknown service {trace}"),
            ),
        ] {
            let status = unknown_method(served, &path);
            assert_eq!(status.code(), Code::Unimplemented);
            assert_eq!(status.message(), message, "{path}");
        }
    }
}
