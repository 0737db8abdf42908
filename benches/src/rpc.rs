//! gRPC status details: `google.rpc.Status` with a `google.rpc.RetryInfo`,
//! as servers put them in the `grpc-status-details-bin` trailer to say how
//! long a client should wait before retrying.

use std::time::Duration;

use base64::Engine;
use prost::Message;

pub const UNAVAILABLE: u32 = 14;
pub const RESOURCE_EXHAUSTED: u32 = 8;

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `grpc-status-details-bin` value for `code` with a RetryInfo of `delay`.
pub fn status_details_with_retry(code: u32, message: &str, delay: Duration) -> String {
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.into(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: retry.encode_to_vec(),
        }],
    };
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
}

/// The RetryInfo delay in a `grpc-status-details-bin` value, if any.
pub fn retry_delay(details_bin: &[u8]) -> Option<Duration> {
    // gRPC binary headers are base64 with or without padding.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = lenient.decode(details_bin).ok()?;
    let status = RpcStatus::decode(raw.as_slice()).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let d = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    Some(Duration::new(
        d.seconds.max(0) as u64,
        d.nanos.max(0) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let v =
            status_details_with_retry(RESOURCE_EXHAUSTED, "slow down", Duration::from_millis(1500));
        assert_eq!(retry_delay(v.as_bytes()), Some(Duration::from_millis(1500)));
        assert_eq!(retry_delay(b"not base64!"), None);
    }
}
