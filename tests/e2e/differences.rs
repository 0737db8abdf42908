//! `tracegate validate` on the real binary warns wherever a config's
//! outcome differs from the collector's (docs/configuration.md,
//! "Differences from the collector"), naming the key and what differs, and
//! still passes the config.

use crate::support;

use support::gateway::validate;

/// A collector config that runs into one difference per component.
const DIFFERS: &str = r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
        keep_alives_enabled: false
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 512
  resource_detection:
    detectors: [system]
    system:
      resource_attributes:
        host.ip: {enabled: true}
  tail_sampling:
    decision_wait: 500ms
    num_shards: 2
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  batch:
    send_batch_max_size: 10000
exporters:
  debug:
  loadbalancing:
    routing_attributes: [tenant]
    sending_queue:
      queue_size: 100
    protocol:
      otlp:
        tls:
          insecure: true
    resolver:
      static:
        hostnames: [127.0.0.1:4317]
extensions:
  health_check:
    path: /$${A}/${env:TRACEGATE_E2E_UNSET:-up}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, resource_detection, tail_sampling, batch]
      exporters: [debug, loadbalancing]
"#;

#[test]
fn validate_warns_where_the_outcome_differs_from_the_collector() {
    let (valid, stdout, stderr) = validate(DIFFERS);
    assert!(valid, "{stdout}\n{stderr}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .collect();
    // Each: where, and the start of what differs.
    let expected = [
        (
            "receivers::otlp",
            "when pipeline traces refuses spans (its memory_limiter refuses data), tracegate's answer asks the client to retry later",
        ),
        (
            "receivers::otlp",
            "protocols.http.keep_alives_enabled is false: tracegate closes each HTTP/1 connection",
        ),
        (
            "processors::resource_detection",
            "system.resource_attributes.host.ip: read from the kernel's address tables",
        ),
        (
            "processors::tail_sampling",
            "decision_wait is 500ms: tracegate decides each trace exactly then; the collector counts the wait in whole seconds",
        ),
        (
            "processors::tail_sampling",
            "num_shards is 2: the collector splits num_traces",
        ),
        (
            "processors::batch",
            "send_batch_max_size is 10000: at shutdown tracegate sends everything pending",
        ),
        (
            "exporters::loadbalancing",
            "routing_attributes is ignored unless routing_key is attributes; the collector refuses",
        ),
        (
            "exporters::loadbalancing",
            "sending_queue has settings but not enabled: true: tracegate leaves the queue",
        ),
        (
            "extensions::health_check",
            "endpoint is not set: tracegate listens on 0.0.0.0:13133",
        ),
        (
            "extensions::health_check::path",
            "${env:TRACEGATE_E2E_UNSET:-up} is expanded after an escaped $${...}",
        ),
    ];
    for (path, start) in expected {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{path}: {start}"))),
            "no warning at {path} starting {start:?} in:\n{stdout}"
        );
    }
    assert_eq!(warnings.len(), expected.len(), "{stdout}");
}
