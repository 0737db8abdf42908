//! Error answers as OTLP requires them: a `google.rpc.Status` (code,
//! message, and a `RetryInfo` detail when the client should come back
//! later), sent as gRPC trailers or as the HTTP body in the request's
//! encoding, plus the HTTP `Retry-After` header.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::Code;

use crate::consumer::ConsumeError;
use crate::grpc::rpc_status::{RpcStatus, RETRY_INFO_TYPE_URL};

/// How long clients are told to wait when the pipeline refuses a batch
/// without saying how long.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A failed export, protocol-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportFailure {
    pub code: Code,
    pub message: String,
    /// Set for retryable refusals.
    pub retry_after: Option<Duration>,
}

impl ExportFailure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ExportFailure {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn rpc_status(&self) -> RpcStatus {
        RpcStatus::new(self.code as i32, self.message.clone(), self.retry_after)
    }

    /// The gRPC status, with the `RetryInfo` in `grpc-status-details-bin`.
    pub fn to_grpc(&self) -> tonic::Status {
        if self.retry_after.is_some() {
            tonic::Status::with_details(
                self.code,
                self.message.clone(),
                Bytes::from(self.rpc_status().encode_to_vec()),
            )
        } else {
            tonic::Status::new(self.code, self.message.clone())
        }
    }

    /// The HTTP body for `application/x-protobuf`.
    pub fn to_protobuf(&self) -> Bytes {
        Bytes::from(self.rpc_status().encode_to_vec())
    }

    /// The HTTP body for `application/json` (protobuf JSON mapping).
    pub fn to_json(&self) -> Bytes {
        let mut status = serde_json::json!({
            "code": self.code as i32,
            "message": self.message,
        });
        if let Some(delay) = self.retry_after {
            status["details"] = serde_json::json!([{
                "@type": RETRY_INFO_TYPE_URL,
                "retryDelay": json_duration(delay),
            }]);
        }
        Bytes::from(status.to_string())
    }

    /// `Retry-After` in whole seconds, rounded up so clients never come
    /// back early.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            secs.to_string()
        })
    }
}

impl From<ConsumeError> for ExportFailure {
    /// The answer for a batch the pipeline did not take (docs/architecture.md,
    /// "Answers to clients"), as the collector's `GetStatusFromError`: a
    /// refusal is retryable (UNAVAILABLE, with a delay); a rejection passes
    /// on the backend's code, or is INTERNAL when no backend gave one.
    fn from(error: ConsumeError) -> Self {
        match error {
            ConsumeError::Refused {
                reason,
                retry_after,
            } => ExportFailure {
                code: Code::Unavailable,
                message: reason,
                retry_after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
            },
            ConsumeError::Rejected { message, code } => {
                ExportFailure::new(code.unwrap_or(Code::Internal), message)
            }
        }
    }
}

/// The HTTP status for a gRPC code, as the collector's OTLP/HTTP receiver
/// answers a failed export (`GetHTTPStatusCodeFromStatus`).
pub(crate) fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => StatusCode::SERVICE_UNAVAILABLE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unimplemented => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A `google.protobuf.Duration` in its JSON form (`"1.500s"`).
fn json_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::rpc_status::{ProtoDuration, RetryInfo};

    #[test]
    fn protobuf_body_is_a_google_rpc_status_with_retry_info() {
        let failure = ExportFailure {
            code: Code::Unavailable,
            message: "queue full".into(),
            retry_after: Some(Duration::from_millis(2500)),
        };
        let status = RpcStatus::decode(failure.to_protobuf()).unwrap();
        assert_eq!(status.code, 14);
        assert_eq!(status.message, "queue full");
        assert_eq!(status.details.len(), 1);
        assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE_URL);
        let retry = RetryInfo::decode(&status.details[0].value[..]).unwrap();
        assert_eq!(
            retry.retry_delay,
            Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        assert_eq!(failure.retry_after_header().as_deref(), Some("3"));
    }

    #[test]
    fn json_body_uses_the_protobuf_json_mapping() {
        let failure = ExportFailure::new(Code::InvalidArgument, "bad \"span\"");
        let json: serde_json::Value = serde_json::from_slice(&failure.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 3, "message": "bad \"span\""})
        );
        assert_eq!(failure.retry_after_header(), None);

        let refused = ExportFailure {
            retry_after: Some(Duration::from_millis(1500)),
            ..ExportFailure::new(Code::Unavailable, "busy")
        };
        let json: serde_json::Value = serde_json::from_slice(&refused.to_json()).unwrap();
        assert_eq!(json["details"][0]["retryDelay"], "1.5s");
        assert_eq!(
            json["details"][0]["@type"],
            "type.googleapis.com/google.rpc.RetryInfo"
        );
    }

    #[test]
    fn grpc_status_carries_details_only_when_retryable() {
        let plain = ExportFailure::new(Code::InvalidArgument, "bad").to_grpc();
        assert_eq!(plain.code(), Code::InvalidArgument);
        assert!(plain.details().is_empty());
        let refused = ExportFailure {
            retry_after: Some(Duration::from_secs(5)),
            ..ExportFailure::new(Code::Unavailable, "busy")
        }
        .to_grpc();
        let status = RpcStatus::decode(refused.details()).unwrap();
        assert_eq!(status.code, 14);
        assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE_URL);
    }
}
