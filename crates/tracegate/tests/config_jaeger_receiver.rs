//! The `jaeger` receiver's config through the real loader, from YAML: a key
//! written with no value means its defaults at any depth, as it does for
//! the OTLP receiver beside it; a protocol written with no value is served
//! with its defaults and Jaeger's port, one left out is not served; and a
//! mistake deep inside a protocol is reported at its own path.

use tracegate::config::{self, ConfigError, Loaded};
use tracegate_pipeline::receiver::jaeger;
use tracegate_pipeline::receiver::otlp::{self, GrpcConfig};
use tracegate_pipeline::receiver::ReceiverConfig;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A config whose `otlp` and `jaeger` receivers are given `otlp` and
/// `jaeger` (YAML indented as the value of `receivers: <kind>:`).
fn yaml(otlp: &str, jaeger: &str) -> String {
    format!(
        "receivers:\n  otlp:\n{otlp}\n  jaeger:\n{jaeger}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp, jaeger]\n      exporters: [debug]\n"
    )
}

fn load(otlp: &str, jaeger: &str) -> Result<Loaded, ConfigError> {
    config::load_str(&yaml(otlp, jaeger), "test.yaml", &no_env)
}

/// The typed configs of both receivers.
fn receivers(otlp: &str, jaeger: &str) -> (otlp::Config, jaeger::Config) {
    let loaded = load(otlp, jaeger).unwrap_or_else(|e| panic!("{e}"));
    let mut otlp = None;
    let mut jaeger = None;
    for (id, receiver) in loaded.config.receivers {
        match receiver {
            ReceiverConfig::Otlp(c) => otlp = Some(c),
            ReceiverConfig::Jaeger(c) => jaeger = Some(c),
            other => panic!("{id:?}: {other:?}"),
        }
    }
    (otlp.expect("otlp"), jaeger.expect("jaeger"))
}

/// Every key of `grpc:` written with no value, nested sections included.
const GRPC_NULLS: &str = "      grpc:
        endpoint:
        transport:
        tls:
        max_recv_msg_size_mib:
        max_concurrent_streams:
        read_buffer_size:
        write_buffer_size:
        keepalive:
          server_parameters:
            max_connection_idle:
            time:
          enforcement_policy:
            min_time:
            permit_without_stream:
        include_metadata:";

#[test]
fn grpc_keys_with_no_value_mean_what_they_mean_for_otlp_with_jaegers_port() {
    let protocols = format!("    protocols:\n{GRPC_NULLS}");
    let (otlp, jaeger) = receivers(&protocols, &protocols);
    let otlp = otlp.protocols.grpc.expect("otlp grpc is served");
    let jaeger = jaeger.protocols.grpc.expect("jaeger grpc is served");
    assert_eq!(otlp.endpoint, "localhost:4317");
    assert_eq!(jaeger.endpoint, "localhost:14250");
    assert_eq!(
        jaeger,
        GrpcConfig {
            endpoint: "localhost:14250".into(),
            ..otlp.clone()
        }
    );
    assert_eq!(otlp.max_recv_msg_size(), 4 << 20);
    assert!(!otlp.include_metadata);
}

#[test]
fn grpc_with_no_value_or_an_empty_endpoint_key_listens_on_14250() {
    for grpc in [
        "      grpc:",
        "      grpc: {}",
        "      grpc:\n        endpoint:",
        "      grpc:\n        tls:\n        keepalive:",
    ] {
        let (_, jaeger) = receivers(
            "    protocols:\n      grpc:",
            &format!("    protocols:\n{grpc}"),
        );
        let grpc_config = jaeger.protocols.grpc.expect("served");
        assert_eq!(grpc_config.endpoint, "localhost:14250", "{grpc}");
        assert_eq!(grpc_config.tls, None, "{grpc}");
        assert_eq!(grpc_config.keepalive, None, "{grpc}");
        assert!(
            jaeger.protocols.thrift_http.is_none(),
            "left out: not served"
        );
        assert!(jaeger.protocols.thrift_compact.is_none());
        assert!(jaeger.protocols.thrift_binary.is_none());
    }
    let (_, jaeger) = receivers(
        "    protocols:\n      grpc:",
        "    protocols:\n      grpc:\n        endpoint: 0.0.0.0:9999",
    );
    assert_eq!(jaeger.protocols.grpc.unwrap().endpoint, "0.0.0.0:9999");
}

#[test]
fn thrift_keys_with_no_value_mean_the_protocols_defaults() {
    let nulls = "    protocols:
      thrift_http:
        endpoint:
        tls:
        max_request_body_size:
      thrift_compact:
        endpoint:
        queue_size:
        max_packet_size:
        workers:
        socket_buffer_size:
      thrift_binary:
        endpoint:
        queue_size:";
    let bare = "    protocols:\n      thrift_http:\n      thrift_compact:\n      thrift_binary:";
    let otlp = "    protocols:\n      grpc:";
    let (_, with_nulls) = receivers(otlp, nulls);
    let (_, with_no_value) = receivers(otlp, bare);
    assert_eq!(with_nulls, with_no_value);
    // The bare form's defaults are checked by the receiver's unit tests.
    let p = &with_nulls.protocols;
    assert!(p.grpc.is_none(), "left out: not served");
    assert!(p.thrift_compact.is_some() && p.thrift_binary.is_some());
    assert_eq!(p.thrift_http.as_ref().unwrap().endpoint, "localhost:14268");
}

/// The problems a config reports, each as `path: message`, lines left off.
fn problems(otlp: &str, jaeger: &str) -> Vec<String> {
    let err = load(otlp, jaeger).expect_err("invalid");
    err.problems()
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

#[test]
fn a_mistake_inside_a_protocol_is_reported_at_its_own_path() {
    let otlp = "    protocols:\n      grpc:";
    assert_eq!(
        problems(
            otlp,
            "    protocols:\n      grpc:\n        keepalive:\n          server_parameters:\n            tiem: 1s"
        ),
        [r#"receivers::jaeger::protocols::grpc::keepalive::server_parameters: unknown field "tiem", did you mean "time"?"#]
    );
    assert_eq!(
        problems(
            otlp,
            "    protocols:\n      thrift_http:\n        endpiont: 127.0.0.1:0"
        ),
        [
            r#"receivers::jaeger::protocols::thrift_http: unknown field "endpiont", did you mean "endpoint"?"#
        ]
    );
    let wrong_type = problems(
        otlp,
        "    protocols:\n      thrift_compact:\n        queue_size: many",
    );
    assert_eq!(wrong_type.len(), 1, "{wrong_type:?}");
    assert!(
        wrong_type[0].starts_with("receivers::jaeger::protocols::thrift_compact::queue_size: "),
        "{wrong_type:?}"
    );
    // The same mistakes under the OTLP receiver, for comparison.
    let jaeger = "    protocols:\n      grpc:";
    assert_eq!(
        problems(
            "    protocols:\n      grpc:\n        keepalive:\n          server_parameters:\n            tiem: 1s",
            jaeger
        ),
        [r#"receivers::otlp::protocols::grpc::keepalive::server_parameters: unknown field "tiem", did you mean "time"?"#]
    );
}
