//! The two endpoints SDKs poll: HTTP `GET /sampling?service=NAME` (and the
//! legacy `GET /?service=NAME`) answering the strategy as proto-JSON, and
//! gRPC `jaeger.api_v2.SamplingManager/GetSamplingStrategy`. Both read the
//! strategies currently loaded and count what they serve. The gRPC
//! endpoint also answers `grpc.health.v1.Health/Check` as Jaeger v2's does.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tonic::codec::CompressionEncoding;
use tracegate_model::jaeger::proto::{SamplingStrategyParameters, SamplingStrategyResponse};

use super::adaptive::Probabilities;
use super::fleet::{self, PROBABILITIES_PATH};
use super::strategies::{to_json, Strategies};
use crate::auth::ServerAuth;
use crate::receiver::http_ingest::{text_response, HttpResponse};
use crate::receiver::otlp::CorsPolicy;
use crate::url::query_unescape;

/// The gRPC method served.
pub const GET_SAMPLING_STRATEGY_PATH: &str = "/jaeger.api_v2.SamplingManager/GetSamplingStrategy";

/// The gRPC health check, and the service it reports `SERVING` (with `""`,
/// the server as a whole), as Jaeger v2's remote sampling server.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
pub const SAMPLING_MANAGER_SERVICE: &str = "jaeger.api_v2.SamplingManager";

/// Metric names (without namespace; see `crate::telemetry`).
pub mod names {
    /// Strategies served, by `extension`, `service` and `transport`
    /// (`http`, `grpc`).
    pub const REQUESTS: &str = "tracegate_remote_sampling_requests";
    /// The probability last served, by `extension`, `service` and
    /// `operation` (`*` for the service's default).
    pub const PROBABILITY: &str = "tracegate_remote_sampling_probability";
    /// The traces per second last served to a rate-limited service, by
    /// `extension` and `service`.
    pub const RATE_LIMIT: &str = "tracegate_remote_sampling_rate_limit";
    /// Loads of the strategies file, by `extension` and `outcome`
    /// (`success`, `failure`).
    pub const RELOADS: &str = "tracegate_remote_sampling_reloads";
    /// Requests refused by the endpoint's `auth`, by `extension` and
    /// `transport`.
    pub const UNAUTHENTICATED: &str = "tracegate_remote_sampling_unauthenticated_requests";
    /// `adaptive`: the target, sampled root spans per second per
    /// operation, by `extension`.
    pub const TARGET_RATE: &str = "tracegate_remote_sampling_target_samples_per_second";
    /// `adaptive`: root spans per second sampled at the probability
    /// served, measured over the last interval (for the whole fleet), by
    /// `extension`, `service` and `operation`: what is compared with the
    /// target. Set by the gateway that calculated.
    pub const SAMPLED_RATE: &str = "tracegate_remote_sampling_sampled_root_spans_per_second";
    /// `adaptive`: root spans per second the SDKs were offered, as the
    /// tallies imply (each root weighs 1/p), same labels.
    pub const OFFERED_RATE: &str = "tracegate_remote_sampling_offered_root_spans_per_second";
    /// `adaptive`: 1 when this gateway calculated the probabilities it
    /// serves in the last interval, 0 when it took them from its fleet's
    /// leader, by `extension`.
    pub const LEADER: &str = "tracegate_remote_sampling_adaptive_leader";
    /// `adaptive` with `fleet`: fetches of the leader's probabilities, by
    /// `extension` and `outcome` (`success`, `failure`).
    pub const FETCHES: &str = "tracegate_remote_sampling_adaptive_fetches";
    /// `adaptive`: root spans not counted because their (service,
    /// operation) was beyond the cap of operations, by `extension`.
    pub const UNCOUNTED_ROOTS: &str = "tracegate_remote_sampling_adaptive_uncounted_root_spans";
}

/// The most distinct `service` label values one extension reports; the
/// service names come from clients, so further ones are counted as
/// [`OTHER_SERVICES`].
pub const MAX_SERVICE_LABELS: usize = 1000;
/// The `service` label of services beyond [`MAX_SERVICE_LABELS`].
pub const OTHER_SERVICES: &str = "_other";

/// What both endpoints share: the strategies and the counters.
pub struct Served {
    extension: String,
    strategies: RwLock<Arc<Strategies>>,
    labelled: Mutex<HashSet<String>>,
    /// `adaptive`: the probabilities served, as [`PROBABILITIES_PATH`]
    /// answers them to the fleet.
    published: RwLock<Option<Bytes>>,
}

impl Served {
    pub fn new(extension: &str, strategies: Strategies) -> Served {
        Served {
            extension: extension.to_string(),
            strategies: RwLock::new(Arc::new(strategies)),
            labelled: Mutex::new(HashSet::new()),
            published: RwLock::new(None),
        }
    }

    /// The extension's id (the `extension` label).
    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// Serves `strategies`, and publishes `table` (the `adaptive`
    /// source's probabilities, as JSON) to the fleet; the gauge of every
    /// probability in it is set.
    pub fn publish(&self, strategies: Strategies, table: &Probabilities) {
        self.replace(strategies);
        *self.published.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Bytes::from(fleet::to_json(table)));
        for (service, ops) in table {
            let label = self.service_label(service);
            for (operation, p) in ops {
                metrics::gauge!(names::PROBABILITY, "extension" => self.extension.clone(),
                    "service" => label.clone(), "operation" => operation.clone())
                .set(*p);
            }
        }
    }

    /// What [`PROBABILITIES_PATH`] answers: `None` without an `adaptive`
    /// source.
    pub fn published(&self) -> Option<Bytes> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `strategies` from now on.
    pub fn replace(&self, strategies: Strategies) {
        *self.strategies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(strategies);
    }

    /// The strategies served now.
    pub fn current(&self) -> Arc<Strategies> {
        self.strategies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The strategy for `service`, counted as served over `transport`.
    pub fn serve(&self, service: &str, transport: &'static str) -> SamplingStrategyResponse {
        let response = self.current().for_service(service).clone();
        let label = self.service_label(service);
        metrics::counter!(names::REQUESTS, "extension" => self.extension.clone(),
            "service" => label.clone(), "transport" => transport)
        .increment(1);
        let gauge = |operation: &str, value: f64| {
            metrics::gauge!(names::PROBABILITY, "extension" => self.extension.clone(),
                "service" => label.clone(), "operation" => operation.to_string())
            .set(value);
        };
        if let Some(ops) = &response.operation_sampling {
            gauge("*", ops.default_sampling_probability);
            for op in &ops.per_operation_strategies {
                if let Some(p) = op.probabilistic_sampling {
                    gauge(&op.operation, p.sampling_rate);
                }
            }
        } else if let Some(p) = response.probabilistic_sampling {
            gauge("*", p.sampling_rate);
        }
        if let Some(r) = response.rate_limiting_sampling {
            metrics::gauge!(names::RATE_LIMIT, "extension" => self.extension.clone(),
                "service" => label)
            .set(f64::from(r.max_traces_per_second));
        }
        response
    }

    /// `service` as a label value, or [`OTHER_SERVICES`] once
    /// [`MAX_SERVICE_LABELS`] others have been seen.
    fn service_label(&self, service: &str) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        if labelled.contains(service) {
            return service.to_string();
        }
        if labelled.len() < MAX_SERVICE_LABELS {
            labelled.insert(service.to_string());
            return service.to_string();
        }
        OTHER_SERVICES.to_string()
    }

    /// Counts a request refused by the endpoint's `auth`.
    pub fn count_unauthenticated(&self, transport: &'static str) {
        metrics::counter!(names::UNAUTHENTICATED, "extension" => self.extension.clone(),
            "transport" => transport)
        .increment(1);
    }

    /// Counts a load of the strategies file.
    pub fn count_reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        metrics::counter!(names::RELOADS, "extension" => self.extension.clone(),
            "outcome" => outcome)
        .increment(1);
    }
}

/// The HTTP endpoint's hyper service.
#[derive(Clone)]
pub(crate) struct HttpService {
    pub served: Arc<Served>,
    pub cors: Option<Arc<CorsPolicy>>,
    /// `http.auth`: every request but a CORS preflight must pass it.
    pub auth: Option<ServerAuth>,
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, _body) = request.into_parts();
            if let Some(cors) = &this.cors {
                if CorsPolicy::is_preflight(&parts.method, &parts.headers) {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    *response.headers_mut() = cors.preflight(&parts.headers);
                    return Ok(response);
                }
            }
            let mut response = match &this.auth {
                Some(auth) => match auth.check(&parts.headers, &parts.uri).await {
                    Ok(()) => this.answer(&parts.method, &parts.uri),
                    Err(message) => {
                        this.served.count_unauthenticated("http");
                        text_response(StatusCode::UNAUTHORIZED, &message)
                    }
                },
                None => this.answer(&parts.method, &parts.uri),
            };
            if let Some(cors) = &this.cors {
                cors.decorate(
                    &parts.method,
                    parts.headers.get(header::ORIGIN),
                    response.headers_mut(),
                );
            }
            Ok(response)
        })
    }
}

impl HttpService {
    /// The answer to `GET /sampling?service=NAME` or `GET /?service=NAME`.
    pub fn answer(&self, method: &Method, uri: &http::Uri) -> HttpResponse {
        if uri.path() == PROBABILITIES_PATH && (method == Method::GET || method == Method::HEAD) {
            return match self.served.published() {
                Some(body) => {
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                None => text_response(
                    StatusCode::NOT_FOUND,
                    "no adaptive source: no probabilities are calculated here",
                ),
            };
        }
        if uri.path() != "/sampling" && uri.path() != "/" {
            return text_response(StatusCode::NOT_FOUND, "404 page not found");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let services = match query_values(uri.query().unwrap_or_default(), "service") {
            Ok(services) => services,
            Err(e) => return text_response(StatusCode::BAD_REQUEST, &e),
        };
        let [service] = services.as_slice() else {
            return text_response(
                StatusCode::BAD_REQUEST,
                "'service' parameter must be provided once",
            );
        };
        let body = to_json(&self.served.serve(service, "http"));
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Every value of the query parameter `key`, decoded as Go's
/// `url.ParseQuery` does (`+` is a space, `%XY` a byte).
pub fn query_values(query: &str, key: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || format!("invalid query: {pair:?} is not URL-encoded");
        if query_unescape(k).ok_or_else(bad)? == key {
            values.push(query_unescape(v).ok_or_else(bad)?);
        }
    }
    Ok(values)
}

/// The gRPC endpoint's hyper service: the one unary method, answered by
/// tonic's unary handler (compression, limits, status trailers).
#[derive(Clone)]
pub(crate) struct GrpcService {
    pub served: Arc<Served>,
    pub max_recv_msg_size: usize,
    /// `grpc.auth`: every call must pass it.
    pub auth: Option<ServerAuth>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if let Some(auth) = &this.auth {
                if let Err(message) = auth.check(request.headers(), request.uri()).await {
                    this.served.count_unauthenticated("grpc");
                    return Ok(tonic::Status::unauthenticated(message).into_http());
                }
            }
            if request.uri().path() == HEALTH_CHECK_PATH {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                    HealthCheckResponse,
                    HealthCheckRequest,
                >::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(this.max_recv_msg_size);
                return Ok(grpc.unary(HealthCheck, request).await);
            }
            if request.uri().path() != GET_SAMPLING_STRATEGY_PATH {
                let status = tonic::Status::unimplemented(format!(
                    "unknown method {}: this endpoint serves only {GET_SAMPLING_STRATEGY_PATH} \
                     and {HEALTH_CHECK_PATH}",
                    request.uri().path()
                ));
                return Ok(status.into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                SamplingStrategyResponse,
                SamplingStrategyParameters,
            >::default())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(this.max_recv_msg_size);
            Ok(grpc.unary(Unary(this.served.clone()), request).await)
        })
    }
}

struct Unary(Arc<Served>);

impl tonic::server::UnaryService<SamplingStrategyParameters> for Unary {
    type Response = SamplingStrategyResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<SamplingStrategyParameters>) -> Self::Future {
        let service = request.into_inner().service_name;
        std::future::ready(Ok(tonic::Response::new(self.0.serve(&service, "grpc"))))
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: `status` is its `ServingStatus`
/// (1 `SERVING`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// The health check: the server (`""`) and the sampling service are
/// serving for as long as the endpoint answers; any other service is
/// `NOT_FOUND`, as grpc-go's health server answers.
struct HealthCheck;

impl tonic::server::UnaryService<HealthCheckRequest> for HealthCheck {
    type Response = HealthCheckResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let service = request.into_inner().service;
        std::future::ready(
            if service.is_empty() || service == SAMPLING_MANAGER_SERVICE {
                Ok(tonic::Response::new(HealthCheckResponse {
                    status: SERVING,
                }))
            } else {
                Err(tonic::Status::not_found("unknown service"))
            },
        )
    }
}
