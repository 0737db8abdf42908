//! What the receivers' (and stages') tests share: a consumer that hands
//! every batch to the test, one that also says whether it reads spans,
//! one that refuses everything, and one plain HTTP/1 request.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tracegate_model::SpanBatch;

use crate::consumer::{ConsumeError, Consumer};

/// Hands every batch to the test.
pub(crate) struct Collect(pub mpsc::UnboundedSender<SpanBatch>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let _ = self.0.send(batch);
        Ok(())
    }
}

/// Hands every batch to the test, saying whether it reads spans as a
/// stage does (`Consumer::reads_spans`).
pub(crate) struct CollectSaying {
    pub batches: mpsc::UnboundedSender<SpanBatch>,
    pub reads_spans: bool,
}

#[async_trait]
impl Consumer for CollectSaying {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        let _ = self.batches.send(batch);
        Ok(())
    }

    fn reads_spans(&self) -> bool {
        self.reads_spans
    }
}

/// Refuses every batch, as a full pipeline does.
pub(crate) struct Refuse;

#[async_trait]
impl Consumer for Refuse {
    async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
        Err(ConsumeError::refused("full"))
    }
}

/// Sends one request to `addr` over plaintext HTTP; the answer's status
/// and body text.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
