//! The few `google.rpc` messages of OTLP error answers: `Status` (gRPC
//! status details, OTLP/HTTP error bodies) and `RetryInfo` (the delay a
//! throttling server asks for). The receiver writes them when it refuses a
//! batch; exporters read them from backends. Field numbers are the
//! contract.

use std::time::Duration;

use prost::Message;

pub(crate) const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl ProtoDuration {
    /// Seconds beyond `i64::MAX` saturate.
    pub(crate) fn from_duration(d: Duration) -> Self {
        ProtoDuration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        }
    }

    /// Negative or out-of-range delays mean no delay.
    pub(crate) fn to_duration(&self) -> Duration {
        if self.seconds < 0 || self.nanos < 0 {
            return Duration::ZERO;
        }
        Duration::new(self.seconds as u64, 0)
            .checked_add(Duration::from_nanos(self.nanos as u64))
            .unwrap_or(Duration::MAX)
    }
}

impl RpcStatus {
    /// A status with, when `retry_after` is set, a `RetryInfo` detail
    /// asking the client to wait that long.
    pub(crate) fn new(code: i32, message: String, retry_after: Option<Duration>) -> Self {
        let details = retry_after
            .map(|delay| ProtoAny {
                type_url: RETRY_INFO_TYPE_URL.into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration::from_duration(delay)),
                }
                .encode_to_vec(),
            })
            .into_iter()
            .collect();
        RpcStatus {
            code,
            message,
            details,
        }
    }
}

/// The `RetryInfo` among encoded `google.rpc.Status` details, if any.
/// `Some(ZERO)` when present without a delay: for RESOURCE_EXHAUSTED its
/// mere presence makes the error retryable. Public for tests that play a
/// client of tracegate's receivers.
pub fn retry_info(status_details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(status_details).ok()?;
    let detail = status
        .details
        .iter()
        .find(|any| any.type_url == RETRY_INFO_TYPE_URL)?;
    let info = RetryInfo::decode(detail.value.as_slice()).ok()?;
    Some(
        info.retry_delay
            .map(|d| d.to_duration())
            .unwrap_or(Duration::ZERO),
    )
}

/// Encoded status details of a RESOURCE_EXHAUSTED answer asking for `delay`.
#[cfg(test)]
pub(crate) fn encode_retry_info(delay: Duration) -> Vec<u8> {
    RpcStatus::new(8, "throttled".into(), Some(delay)).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_retry_info_among_details() {
        let encoded = encode_retry_info(Duration::from_millis(1500));
        assert_eq!(retry_info(&encoded), Some(Duration::from_millis(1500)));
        assert_eq!(retry_info(&[]), None);
        assert_eq!(retry_info(&[0xff, 0xff]), None, "garbage is ignored");
        let without = RpcStatus {
            code: 8,
            message: "x".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                value: vec![],
            }],
        }
        .encode_to_vec();
        assert_eq!(retry_info(&without), None);
    }
}
