//! The Grafana dashboard (`deploy/grafana/tracegate.json`) and the
//! Prometheus alerts (`deploy/prometheus/alerts.yaml`) name only metrics
//! tracegate serves: every PromQL expression in them is parsed with a
//! PromQL parser, and each metric it selects must appear in the `/metrics`
//! of a gateway that runs every component tracegate has.

use std::collections::BTreeSet;
use std::time::Duration;

use promql_parser::parser::Expr;
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value;

use super::{read, yaml};
use crate::support::gateway::{Gateway, TELEMETRY};
use crate::support::raw;
use crate::support::sink::Sink;

/// The metric names an expression selects.
fn metric_names(expr: &str, origin: &str) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            match &selector.name {
                Some(name) => {
                    self.0.insert(name.clone());
                    Ok(true)
                }
                None => Err(format!("a selector without a metric name: {selector}")),
            }
        }
    }
    // Grafana's variables, as Grafana fills them in.
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    let parsed =
        promql_parser::parser::parse(&expr).unwrap_or_else(|e| panic!("{origin}: {e}\n{expr}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed).unwrap_or_else(|e| panic!("{origin}: {e}"));
    assert!(!names.0.is_empty(), "{origin}: selects no metric: {expr}");
    names.0
}

/// Every PromQL expression of the dashboard: panel targets, and the
/// metric selectors of its variables' `label_values(...)` queries.
fn dashboard_expressions(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push((here, expr.clone())),
                    ("query" | "definition", Value::String(q)) => {
                        if let Some(args) = q
                            .strip_prefix("label_values(")
                            .and_then(|rest| rest.strip_suffix(')'))
                        {
                            let (selector, _label) = args
                                .rsplit_once(',')
                                .expect("label_values(selector, label)");
                            out.push((here, selector.trim().to_string()));
                        }
                    }
                    _ => dashboard_expressions(v, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                dashboard_expressions(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The alerting rules' expressions; each rule is a well-formed alert.
fn alert_expressions(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        let name = group["name"].as_str().expect("a group name");
        for rule in group["rules"].as_array().expect("rules") {
            let alert = rule["alert"].as_str().expect("alerting rules only");
            assert!(rule["for"].is_string(), "{alert}: a `for` duration");
            assert!(
                rule["labels"]["severity"].is_string(),
                "{alert}: a severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert}: a summary"
            );
            out.push((
                format!("{name}/{alert}"),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// Metric names a `/metrics` text serves.
fn served(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A port nothing listens on: exporters sent there fail, so their failure
/// counters move too.
fn refusing_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A config with every receiver, processor, exporter and extension
/// tracegate builds.
fn every_component(sink: std::net::SocketAddr) -> String {
    let refusing = refusing_port();
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
  jaeger:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      thrift_http: {{endpoint: "127.0.0.1:0"}}
      thrift_compact: {{endpoint: "127.0.0.1:0"}}
      thrift_binary: {{endpoint: "127.0.0.1:0"}}
  zipkin:
    endpoint: "127.0.0.1:0"
processors:
  memory_limiter: {{check_interval: 100ms, limit_mib: 8192}}
  probabilistic_sampler: {{sampling_percentage: 100}}
  sampling:
    sampling_percentage: 100
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  resource_detection: {{detectors: [env]}}
  tail_sampling:
    decision_wait: 200ms
    policies:
      - {{name: everything, type: always_sample}}
  batch: {{timeout: 100ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
  otlphttp:
    endpoint: http://127.0.0.1:{refusing}
    retry_on_failure: {{enabled: false}}
  jaeger:
    endpoint: 127.0.0.1:{refusing}
    tls: {{insecure: true}}
    retry_on_failure: {{enabled: false}}
  debug: {{verbosity: basic}}
  file: {{path: "{{dir}}/spans.jsonl"}}
extensions:
  health_check: {{endpoint: "127.0.0.1:0"}}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp, jaeger, zipkin]
      processors: [memory_limiter, probabilistic_sampler, sampling, resource_detection, tail_sampling, batch]
      exporters: [otlp, otlphttp, jaeger, debug, file]
{TELEMETRY}"#,
        sink = sink.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_name_only_served_metrics() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/tracegate.json"))
        .expect("the dashboard is JSON");
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard, "tracegate.json", &mut expressions);
    let dashboard_count = expressions.len();
    let rules = yaml(&read("deploy/prometheus/alerts.yaml"), "alerts.yaml");
    expressions.extend(alert_expressions(&rules));
    assert!(dashboard_count >= 10 && expressions.len() > dashboard_count + 4);

    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut by_origin = Vec::new();
    for (origin, expr) in &expressions {
        let names = metric_names(expr, origin);
        named.extend(names.iter().cloned());
        by_origin.push((origin.clone(), names));
    }
    // What the dashboard must show and the alerts must watch (issue 12).
    let shown = |origin_prefix: &str, metric: &str| {
        by_origin
            .iter()
            .any(|(o, names)| o.starts_with(origin_prefix) && names.contains(metric))
    };
    for metric in [
        "otelcol_receiver_accepted_spans_total",
        "otelcol_exporter_sent_spans_total",
        "otelcol_receiver_refused_spans_total",
        "otelcol_processor_tail_sampling_count_traces_sampled_total",
        "otelcol_processor_tail_sampling_sampling_traces_on_memory",
        "otelcol_exporter_queue_size",
        "otelcol_tracegate_dropped_spans_total",
    ] {
        assert!(
            shown("tracegate.json", metric),
            "the dashboard lacks {metric}"
        );
    }
    for metric in [
        "otelcol_receiver_refused_spans_total",
        "otelcol_exporter_queue_capacity",
        "otelcol_exporter_send_failed_spans_total",
        "otelcol_tracegate_memory_limiter_used_bytes",
        "otelcol_tracegate_tail_sampling_early_decisions_total",
    ] {
        assert!(shown("tracegate/", metric), "no alert watches {metric}");
    }

    // A gateway running every component, with traffic through all of it.
    let sink = Sink::start().await;
    let gw = Gateway::start(&every_component(sink.addr));
    super::send_one_span(&gw, "everything").await;
    assert!(sink.wait_for_spans(1, Duration::from_secs(10)).await);
    let text = raw::wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[
            r#"otelcol_exporter_sent_spans_total{exporter="otlp"} 1"#,
            r#"otelcol_exporter_send_failed_spans_total{exporter="jaeger"} 1"#,
            "otelcol_process_memory_rss ",
        ],
        Duration::from_secs(10),
    )
    .await;
    let served = served(&text);
    let missing: Vec<&String> = named.iter().filter(|n| !served.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the dashboard or the alerts but not served: {missing:?}\nserved: {served:#?}"
    );
}
