//! Zipkin's proto3 wire format (`zipkin.proto3.ListOfSpans`, as in
//! openzipkin/zipkin-api `zipkin.proto`): field numbers are the contract.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message;

use super::{Endpoint, ZipkinError, ZipkinSpan};

#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    /// Epoch microseconds.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// Microseconds.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: std::collections::BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

fn invalid(i: usize, field: &str, message: String) -> ZipkinError {
    ZipkinError::Invalid {
        path: format!("spans[{i}].{field}"),
        message,
    }
}

fn span_id(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn endpoint(
    e: Option<ProtoEndpoint>,
    i: usize,
    field: &str,
) -> Result<Option<Endpoint>, ZipkinError> {
    let Some(e) = e else { return Ok(None) };
    let ipv4 = match e.ipv4.len() {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            e.ipv4[0], e.ipv4[1], e.ipv4[2], e.ipv4[3],
        ))),
        n => return Err(invalid(i, field, format!("ipv4 of {n} bytes, expected 4"))),
    };
    let ipv6 = match e.ipv6.len() {
        0 => None,
        16 => {
            let bytes: [u8; 16] = e.ipv6.as_slice().try_into().unwrap_or_default();
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        n => return Err(invalid(i, field, format!("ipv6 of {n} bytes, expected 16"))),
    };
    let port =
        u16::try_from(e.port).map_err(|_| invalid(i, field, format!("invalid port {}", e.port)))?;
    let endpoint = Endpoint {
        service_name: e.service_name,
        ipv4,
        ipv6,
        port,
    };
    Ok((!endpoint.is_empty()).then_some(endpoint))
}

/// Decodes a `ListOfSpans`, checking ids as zipkin-go does: trace ids of 8
/// or 16 bytes, span ids of 8, parent ids of 8 or none.
pub(super) fn parse(body: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    let list = ListOfSpans::decode(body)
        .map_err(|e| ZipkinError::Syntax(format!("invalid Zipkin proto3: {e}")))?;
    let mut spans = Vec::with_capacity(list.spans.len());
    for (i, p) in list.spans.into_iter().enumerate() {
        let mut trace_id = [0u8; 16];
        match p.trace_id.len() {
            8 => trace_id[8..].copy_from_slice(&p.trace_id),
            16 => trace_id.copy_from_slice(&p.trace_id),
            n => {
                return Err(invalid(
                    i,
                    "trace_id",
                    format!("{n} bytes, expected 8 or 16"),
                ))
            }
        }
        let id = span_id(&p.id)
            .ok_or_else(|| invalid(i, "id", format!("{} bytes, expected 8", p.id.len())))?;
        let parent_id = match p.parent_id.len() {
            0 => None,
            _ => Some(span_id(&p.parent_id).ok_or_else(|| {
                invalid(
                    i,
                    "parent_id",
                    format!("{} bytes, expected 8", p.parent_id.len()),
                )
            })?),
        };
        let kind = match p.kind {
            1 => "CLIENT",
            2 => "SERVER",
            3 => "PRODUCER",
            4 => "CONSUMER",
            _ => "",
        };
        spans.push(ZipkinSpan {
            trace_id,
            id,
            parent_id,
            name: p.name,
            kind: kind.into(),
            timestamp_us: p.timestamp,
            // zipkin-go makes 0 the epoch, a set time: never "absent".
            start_absent: false,
            duration_us: p.duration,
            local: endpoint(p.local_endpoint, i, "local_endpoint")?,
            remote: endpoint(p.remote_endpoint, i, "remote_endpoint")?,
            annotations: p
                .annotations
                .into_iter()
                .map(|a| (a.timestamp, a.value))
                .collect(),
            tags: p.tags.into_iter().collect(),
        });
    }
    Ok(spans)
}
