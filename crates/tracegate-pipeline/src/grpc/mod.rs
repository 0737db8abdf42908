//! The OTLP/gRPC wire pieces both directions share: the `google.rpc`
//! messages of error answers. The receiver writes them, the exporters read
//! them.

pub(crate) mod rpc_status;
