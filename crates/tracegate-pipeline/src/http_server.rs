//! A small plain-HTTP/1 server loop for tracegate's own endpoints
//! (`/metrics`, health). The OTLP receiver has its own, with TLS and h2c.

use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts connections until `shutdown` is cancelled; each request is
/// answered by `answer`. Connection errors are logged at debug and dropped.
pub fn serve_plain<F, Fut>(listener: TcpListener, shutdown: CancellationToken, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer));
                tokio::pin!(conn);
                tokio::select! {
                    res = conn.as_mut() => if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
}
