//! An in-test OTLP gRPC backend that records what it receives; it can
//! stall (never answer) to play a dead backend, and serve TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::Notify;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    arrived: Notify,
    stall: bool,
    /// Answer UNAVAILABLE without taking anything (a backend that is down).
    refusing: AtomicBool,
    /// Wait this long before taking each request (a slow backend).
    delay: Option<Duration>,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        if self.0.stall {
            std::future::pending::<()>().await;
        }
        if let Some(delay) = self.0.delay {
            tokio::time::sleep(delay).await;
        }
        if self.0.refusing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("backend down"));
        }
        self.0.requests.lock().unwrap().push(request.into_inner());
        self.0.arrived.notify_waiters();
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span as the sink saw it, with its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub resource: Option<Resource>,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    pub fn resource_attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.resource.as_ref()?.attributes, key)
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::serve(false, None).await
    }

    /// A slow backend: each request is taken only after `delay`.
    pub async fn start_delayed(delay: Duration) -> Sink {
        Self::serve_with(false, None, Some(delay)).await
    }

    /// A backend that accepts connections and requests but never answers.
    pub async fn start_stalled() -> Sink {
        Self::serve(true, None).await
    }

    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Sink {
        Self::serve(false, Some(Identity::from_pem(cert_pem, key_pem))).await
    }

    async fn serve(stall: bool, tls: Option<Identity>) -> Sink {
        Self::serve_with(stall, tls, None).await
    }

    async fn serve_with(stall: bool, tls: Option<Identity>, delay: Option<Duration>) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            stall,
            delay,
            ..State::default()
        });
        let mut server = Server::builder();
        if let Some(identity) = tls {
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let router = server.add_service(
            TraceServiceServer::new(Service(state.clone()))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .max_decoding_message_size(64 << 20),
        );
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Sink { addr, state }
    }

    /// While on, every request is answered UNAVAILABLE and not recorded.
    pub fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for req in self.state.requests.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(ReceivedSpan {
                            resource: rs.resource.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    pub fn span_count(&self) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// Waits until at least `n` spans have arrived; false on timeout.
    pub async fn wait_for_spans(&self, n: usize, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                let arrived = self.state.arrived.notified();
                if self.span_count() >= n {
                    return;
                }
                arrived.await;
            }
        })
        .await
        .is_ok()
    }
}
