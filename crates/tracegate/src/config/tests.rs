//! The loader's own checks: section shapes, ids, pipelines, telemetry,
//! the prometheus exporter, and env references reaching typed configs.
//! Components used here (`otlp`, `batch`, `debug`, `health_check`) are the
//! foundation's; types tracegate does not build are picked from the
//! catalogue so the tests keep working as components land.

use super::catalog::{self, Known, Section};
use super::*;

fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn load(yaml: &str) -> Result<Loaded, ConfigError> {
    load_str(yaml, "test.yaml", &|_| None)
}

fn load_ok(yaml: &str) -> Loaded {
    match load(yaml) {
        Ok(loaded) => loaded,
        Err(e) => panic!("config should load:\n{e}"),
    }
}

/// Asserts that `found` (a config's problems) lists `want`.
#[track_caller]
fn assert_listed(found: &[String], want: &str) {
    assert!(found.iter().any(|p| p == want), "{want:?} not in {found:?}");
}

/// The problems of a config that must fail, as `path: message (line N)`.
fn problems(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("config should fail:\n{yaml}"),
        Err(e) => {
            assert!(!e.problems().is_empty(), "{e}");
            e.problems().iter().map(ToString::to_string).collect()
        }
    }
}

fn id(s: &str) -> ComponentId {
    ComponentId::parse(s).unwrap()
}

/// A type the catalogue knows in `section` that tracegate does not build.
fn not_built_kind(section: Section) -> &'static str {
    catalog::all_kinds(section)
        .into_iter()
        .find(|kind| catalog::lookup(section, kind) == Known::NotBuilt)
        .unwrap_or_else(|| panic!("every known {section:?} type is built; pick another test"))
}

const MINIMAL: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
processors:
  batch:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
";

#[test]
fn minimal_traces_pipeline() {
    let loaded = load_ok(MINIMAL);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.receivers.keys().collect::<Vec<_>>(), [&id("otlp")]);
    assert_eq!(config.processors.keys().collect::<Vec<_>>(), [&id("batch")]);
    assert_eq!(config.exporters.keys().collect::<Vec<_>>(), [&id("debug")]);
    assert!(config.extensions.is_empty());
    assert_eq!(
        config.service.pipelines,
        [TracesPipeline {
            id: "traces".into(),
            receivers: vec![id("otlp")],
            processors: vec![id("batch")],
            exporters: vec![id("debug")],
        }]
    );
    assert_eq!(config.service.telemetry, Telemetry::default());
    assert_eq!(
        config.service.telemetry.metrics_address.as_deref(),
        Some("localhost:8888"),
        "the collector's default pull reader"
    );
    assert_eq!(config.service.telemetry.metrics_namespace, "otelcol");
}

#[test]
fn processors_keep_pipeline_order_and_named_ids() {
    let yaml = MINIMAL
        .replace("  batch:\n", "  batch:\n  batch/second:\n    timeout: 1s\n")
        .replace("processors: [batch]", "processors: [batch/second, batch]");
    let config = load_ok(&yaml).config;
    assert_eq!(
        config.service.pipelines[0].processors,
        [id("batch/second"), id("batch")]
    );
    assert_eq!(config.processors.len(), 2);
}

#[test]
fn unknown_key_names_its_path_line_and_nearest_key() {
    let yaml = MINIMAL.replace("        endpoint: 127", "        endpiont: 127");
    assert_eq!(
        problems(&yaml),
        [
            r#"receivers::otlp::protocols::grpc: unknown field "endpiont", did you mean "endpoint"? (line 5)"#
        ]
    );
}

#[test]
fn unknown_top_level_and_service_keys() {
    let yaml = MINIMAL
        .replace("processors:\n  batch:", "procesors:\n  batch:")
        .replace("  pipelines:", "  pipeline:");
    let found = problems(&yaml);
    assert_listed(
        &found,
        r#"unknown field "procesors", did you mean "processors"? (line 6)"#,
    );
    assert_listed(
        &found,
        r#"service: unknown field "pipeline", did you mean "pipelines"? (line 11)"#,
    );
}

#[test]
fn unknown_type_is_an_error_even_when_unused() {
    let yaml = MINIMAL.replace(
        "exporters:\n  debug:\n",
        "exporters:\n  debug:\n  debgu/x:\n",
    );
    assert_eq!(
        problems(&yaml),
        [r#"exporters::debgu/x: unknown exporter type "debgu", did you mean "debug"? (line 10)"#]
    );
}

#[test]
fn invalid_ids_are_errors() {
    let yaml = MINIMAL.replace("  debug:\n", "  debug:\n  debug/a b:\n");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .starts_with("exporters::debug/a b: in \"debug/a b\" id: invalid character(s) in name"),
        "{found:?}"
    );
}

#[test]
fn a_pipeline_naming_an_undefined_component_suggests_the_nearest_defined_id() {
    let yaml = MINIMAL.replace("exporters: [debug]", "exporters: [debgu]");
    assert_eq!(
        problems(&yaml),
        [
            r#"service::pipelines::traces::exporters[0]: exporter "debgu" is not defined in exporters, did you mean "debug"? (line 15)"#
        ]
    );
}

#[test]
fn a_traces_pipeline_needs_receivers_and_exporters() {
    let yaml = MINIMAL
        .replace("receivers: [otlp]", "receivers: []")
        .replace("exporters: [debug]", "exporters:");
    let found = problems(&yaml);
    assert_listed(
        &found,
        "service::pipelines::traces: must have at least one receiver (line 12)",
    );
    assert_listed(
        &found,
        "service::pipelines::traces: must have at least one exporter (line 12)",
    );
}

#[test]
fn the_same_processor_twice_is_an_error() {
    let yaml = MINIMAL.replace("processors: [batch]", "processors: [batch, batch]");
    assert_eq!(
        problems(&yaml),
        [
            r#"service::pipelines::traces::processors[1]: references processor "batch" multiple times (line 14)"#
        ]
    );
}

#[test]
fn no_traces_pipeline_is_an_error() {
    let yaml = MINIMAL.replace("    traces:", "    metrics:");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("service::pipelines: no traces pipeline"),
        "{found:?}"
    );
    // Without a service section there is no line to point at.
    let found = problems("receivers:\n  otlp:\n");
    assert!(
        found.iter().any(
            |p| p.starts_with("service::pipelines: no traces pipeline") && !p.contains("(line")
        ),
        "{found:?}"
    );
}

#[test]
fn pipeline_ids_are_checked() {
    let yaml = MINIMAL.replace("    traces:", "    trace/x:");
    // The bad id is the only complaint: no "no traces pipeline" besides.
    assert_eq!(
        problems(&yaml),
        [
            r#"service::pipelines::trace/x: pipeline "trace/x": unknown signal "trace", did you mean "traces"? (line 12)"#
        ]
    );
}

#[test]
fn metrics_and_logs_pipelines_are_skipped_with_a_warning() {
    let yaml = format!(
        "{MINIMAL}    metrics:\n      receivers: [otlp, prometheus]\n      processors: [batch/metrics]\n      exporters: [debug/metrics]\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n"
    )
    .replace("processors:\n  batch:\n", "processors:\n  batch:\n  batch/metrics:\n")
    .replace("exporters:\n  debug:\n", "exporters:\n  debug:\n  debug/metrics:\n");
    let loaded = load_ok(&yaml);
    let config = &loaded.config;
    // Used only by the skipped pipeline: not built.
    assert!(!config.processors.contains_key(&id("batch/metrics")));
    assert!(!config.exporters.contains_key(&id("debug/metrics")));
    assert_eq!(config.service.pipelines.len(), 1);
    let w = &loaded.warnings;
    let has = |s: &str| w.iter().any(|x| x.contains(s));
    assert!(
        has("service::pipelines::metrics: metrics pipelines are not handled by tracegate"),
        "{w:?}"
    );
    assert!(
        has("service::pipelines::logs: logs pipelines are not handled by tracegate"),
        "{w:?}"
    );
    // An undefined id in a skipped pipeline is only a warning.
    assert!(
        has(
            r#"service::pipelines::metrics::receivers[1]: receiver "prometheus" is not defined in receivers (ignored: the pipeline is skipped)"#
        ),
        "{w:?}"
    );
    assert!(
        has("processors::batch/metrics: used only by skipped pipeline(s) metrics; not built"),
        "{w:?}"
    );
}

#[test]
fn unused_components_are_warned_about_and_not_built() {
    let yaml = MINIMAL.replace("  debug:\n", "  debug:\n  debug/spare:\n");
    let loaded = load_ok(&yaml);
    assert!(!loaded.config.exporters.contains_key(&id("debug/spare")));
    assert_eq!(
        loaded.warnings,
        ["exporters::debug/spare: not used by any pipeline; not built (line 10)"]
    );
}

#[test]
fn a_component_not_built_is_an_error_in_a_traces_pipeline_and_a_warning_elsewhere() {
    let kind = not_built_kind(Section::Processors);
    let expected = format!(
        "the `{kind}` processor is a collector component that tracegate does not implement"
    );

    let used = MINIMAL
        .replace(
            "  batch:\n",
            &format!("  batch:\n  {kind}:\n    some_key: 1\n"),
        )
        .replace(
            "processors: [batch]",
            &format!("processors: [{kind}, batch]"),
        );
    assert_eq!(
        problems(&used),
        [format!(
            "processors::{kind}: {expected}; used by service::pipelines::traces (line 8)"
        )]
    );

    let unused = MINIMAL.replace("  batch:\n", &format!("  batch:\n  {kind}:\n"));
    let loaded = load_ok(&unused);
    assert_eq!(
        loaded.warnings,
        [format!(
            "processors::{kind}: {expected}; not used by any pipeline; not built (line 8)"
        )]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let yaml = MINIMAL
        .replace("        endpoint: 127", "        endpiont: 127")
        .replace("exporters: [debug]", "exporters: [nope]")
        .replace("  batch:\n", "  batch:\n    timeout: soon\n");
    let e = load(&yaml).unwrap_err();
    assert_eq!(e.problems().len(), 3, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("test.yaml: 3 errors:\n  receivers::otlp::protocols::grpc: unknown field"),
        "{text}"
    );
    assert!(text.contains("processors::batch::timeout: "), "{text}");
    assert!(text.contains(r#"service::pipelines::traces::exporters[0]: exporter "nope" is not defined in exporters"#), "{text}");
}

#[test]
fn connectors_are_not_implemented() {
    let yaml = format!("{MINIMAL}connectors:\n  forward:\n");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("connectors::forward: connectors are not implemented yet"),
        "{found:?}"
    );
}

#[test]
fn extensions_listed_are_built_and_must_be_defined() {
    let yaml = format!("{MINIMAL}  extensions: [health_check]\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:13133\n  health_check/spare:\n    endpoint: 127.0.0.1:13134\n");
    let loaded = load_ok(&yaml);
    assert_eq!(loaded.config.service.extensions, [id("health_check")]);
    assert_eq!(
        loaded.config.extensions[&id("health_check")],
        ExtensionConfig::HealthCheck(HealthCheckConfig {
            endpoint: Some("127.0.0.1:13133".into()),
            ..HealthCheckConfig::default()
        })
    );
    assert!(!loaded
        .config
        .extensions
        .contains_key(&id("health_check/spare")));
    assert_eq!(
        loaded.warnings,
        ["extensions::health_check/spare: not listed in service::extensions, so not started (line 20)"]
    );

    let yaml = format!("{MINIMAL}  extensions: [healthcheck]\nextensions:\n  health_check:\n");
    assert_eq!(
        problems(&yaml),
        [
            r#"service::extensions[0]: extension "healthcheck" is not defined in extensions, did you mean "health_check"? (line 16)"#
        ]
    );

    let kind = not_built_kind(Section::Extensions);
    let yaml = format!("{MINIMAL}  extensions: [{kind}]\nextensions:\n  {kind}:\n");
    assert_eq!(
        problems(&yaml),
        [format!(
            "extensions::{kind}: the `{kind}` extension is a collector component that tracegate does not implement (line 18)"
        )]
    );
}

#[test]
fn telemetry_logs_and_metrics() {
    let yaml = format!(
        "{MINIMAL}  telemetry:\n    logs:\n      level: DEBUG\n      encoding: json\n    metrics:\n      level: detailed\n      address: 127.0.0.1:9999\n"
    );
    let t = load_ok(&yaml).config.service.telemetry;
    assert_eq!(t.log_level, "debug");
    assert_eq!(t.log_format, LogFormat::Json);
    assert_eq!(t.metrics_address.as_deref(), Some("127.0.0.1:9999"));

    let yaml = format!("{MINIMAL}  telemetry:\n    metrics:\n      level: none\n");
    assert_eq!(
        load_ok(&yaml).config.service.telemetry.metrics_address,
        None
    );

    let yaml = format!("{MINIMAL}  telemetry:\n    logs:\n      level: loud\n");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(r#"service::telemetry::logs::level: unknown value "loud", expected one of "debug", "info", "warn", "error""#),
        "{found:?}"
    );
    assert!(found[0].ends_with("(line 18)"), "{found:?}");
}

#[test]
fn telemetry_readers_form() {
    let yaml = format!(
        "{MINIMAL}  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: '::1'\n                port: 9464\n"
    );
    let t = load_ok(&yaml).config.service.telemetry;
    assert_eq!(t.metrics_address.as_deref(), Some("[::1]:9464"));

    let yaml = format!(
        "{MINIMAL}  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: 0.0.0.0\n                prot: 9464\n"
    );
    let found = problems(&yaml);
    assert_eq!(
        found,
        [
            r#"service::telemetry::metrics::readers[0]::pull::exporter::prometheus: unknown field "prot", did you mean "port"? (line 23)"#
        ]
    );
}

#[test]
fn readers_without_a_pull_reader_serve_nothing() {
    let periodic = "      readers:\n        - periodic:\n            exporter:\n              otlp:\n                endpoint: http://x:4318\n";
    let yaml = format!("{MINIMAL}  telemetry:\n    metrics:\n{periodic}");
    let loaded = load_ok(&yaml);
    assert_eq!(loaded.config.service.telemetry.metrics_address, None);

    // Written readers also keep a prometheus exporter from serving.
    let with_exporter = MINIMAL.replace(
        "  debug:\n",
        "  debug:\n  prometheus:\n    endpoint: 0.0.0.0:8889\n",
    );
    let yaml = format!("{with_exporter}  telemetry:\n    metrics:\n{periodic}");
    let loaded = load_ok(&yaml);
    assert_eq!(loaded.config.service.telemetry.metrics_address, None);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("exporters::prometheus: ignored")),
        "{:?}",
        loaded.warnings
    );

    // An empty list is refused unless the level is none, as the collector does.
    let yaml = format!("{MINIMAL}  telemetry:\n    metrics:\n      readers: []\n");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("service::telemetry::metrics::readers: collector telemetry metrics reader should exist when metric level is not none"),
        "{found:?}"
    );
    let yaml =
        format!("{MINIMAL}  telemetry:\n    metrics:\n      level: none\n      readers: []\n");
    assert_eq!(
        load_ok(&yaml).config.service.telemetry.metrics_address,
        None
    );
}

#[test]
fn prometheus_exporter_moves_self_telemetry() {
    let yaml = MINIMAL.replace(
        "  debug:\n",
        "  debug:\n  prometheus:\n    endpoint: 0.0.0.0:8889\n    namespace: otel_collector\n    send_timestamps: true\n",
    );
    let loaded = load_ok(&yaml);
    let t = &loaded.config.service.telemetry;
    assert_eq!(t.metrics_address.as_deref(), Some("0.0.0.0:8889"));
    assert_eq!(t.metrics_namespace, "otel_collector");
    assert!(!loaded.config.exporters.contains_key(&id("prometheus")));
    let w = &loaded.warnings;
    assert!(
        w.iter()
            .any(|x| x.starts_with("exporters::prometheus: send_timestamps accepted but ignored")),
        "{w:?}"
    );
    assert!(w.iter().any(|x| x.starts_with("exporters::prometheus: tracegate serves its own metrics here (0.0.0.0:8889, namespace otel_collector)")), "{w:?}");

    // Without a namespace the collector's stays.
    let yaml = MINIMAL.replace(
        "  debug:\n",
        "  debug:\n  prometheus:\n    endpoint: 0.0.0.0:8889\n",
    );
    let t = load_ok(&yaml).config.service.telemetry;
    assert_eq!(
        (t.metrics_address.as_deref(), t.metrics_namespace.as_str()),
        (Some("0.0.0.0:8889"), "otelcol")
    );

    // An explicit telemetry address wins.
    let yaml = format!("{yaml}  telemetry:\n    metrics:\n      address: 127.0.0.1:7777\n");
    let loaded = load_ok(&yaml);
    assert_eq!(
        loaded.config.service.telemetry.metrics_address.as_deref(),
        Some("127.0.0.1:7777")
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("exporters::prometheus: ignored")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn prometheus_exporter_in_a_traces_pipeline_is_an_error() {
    let yaml = MINIMAL
        .replace(
            "  debug:\n",
            "  debug:\n  prometheus:\n    endpoint: 0.0.0.0:8889\n",
        )
        .replace("exporters: [debug]", "exporters: [debug, prometheus]");
    assert_eq!(
        problems(&yaml),
        ["service::pipelines::traces::exporters[1]: the prometheus exporter serves metrics; it cannot be in a traces pipeline (line 17)"]
    );
    let yaml = MINIMAL.replace("  debug:\n", "  debug:\n  prometheus:\n    endpiont: x\n");
    let found = problems(&yaml);
    assert_eq!(
        found,
        [r#"exporters::prometheus: unknown field "endpiont", did you mean "endpoint"? (line 11)"#]
    );
}

#[test]
fn env_references_reach_typed_configs() {
    let yaml = MINIMAL
        .replace("endpoint: 127.0.0.1:4317", "endpoint: ${env:HOST}:${PORT}")
        .replace("  batch:\n", "  batch:\n    send_batch_size: ${env:SIZE}\n");
    let env = [("HOST", "127.0.0.1"), ("PORT", "4317"), ("SIZE", "512")];
    let loaded = load_str(&yaml, "test.yaml", &env_of(&env)).unwrap();
    // Other processor kinds will appear; this one is batch.
    #[allow(unreachable_patterns)]
    let batch = match &loaded.config.processors[&id("batch")] {
        ProcessorConfig::Batch(batch) => batch,
        other => panic!("{other:?}"),
    };
    assert_eq!(batch.send_batch_size, 512);
    let yaml_receiver = load_ok(MINIMAL).config.receivers[&id("otlp")].clone();
    assert_eq!(loaded.config.receivers[&id("otlp")], yaml_receiver);
}

#[test]
fn a_retyped_reference_falls_back_to_its_text_for_string_fields() {
    // HC is all digits, so it is re-typed as an int; the field wants a string.
    let yaml = format!("{MINIMAL}  extensions: [health_check]\nextensions:\n  health_check:\n    path: ${{env:HC}}\n");
    let loaded = load_str(&yaml, "test.yaml", &env_of(&[("HC", "13133")])).unwrap();
    #[allow(unreachable_patterns)]
    let hc = match &loaded.config.extensions[&id("health_check")] {
        ExtensionConfig::HealthCheck(hc) => hc,
        other => panic!("{other:?}"),
    };
    assert_eq!(hc.path, "13133");
}

#[test]
fn unset_variables_warn_and_bad_references_are_errors() {
    let yaml = format!("{MINIMAL}  extensions: [health_check]\nextensions:\n  health_check:\n    endpoint: localhost:13133\n    path: /x${{env:UNSET}}\n");
    let loaded = load(&yaml).unwrap();
    assert_eq!(
        loaded.warnings,
        ["extensions::health_check::path: environment variable UNSET is not set; it expands to nothing (line 20)"]
    );
    let yaml = yaml.replace("${env:UNSET}", "${env:BAD NAME}");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            r#"extensions::health_check::path: environment variable "BAD NAME" has invalid name"#
        ),
        "{found:?}"
    );
}

#[test]
fn duplicate_ids_after_trimming() {
    let yaml = MINIMAL.replace("  debug:\n", "  debug:\n  ' debug':\n");
    let found = problems(&yaml);
    assert_eq!(
        found,
        ["exporters:: debug: duplicate exporter id debug (line 10)"]
    );
}

#[test]
fn same_id_in_different_sections_are_different_components() {
    // `otlp` names both a receiver and an exporter, as in most collector configs.
    let yaml = MINIMAL
        .replace(
            "  debug:\n",
            "  debug:\n  otlp:\n    endpoint: 127.0.0.1:4317\n    tls:\n      insecure: true\n",
        )
        .replace("exporters: [debug]", "exporters: [otlp]");
    let config = load_ok(&yaml).config;
    assert!(config.receivers.contains_key(&id("otlp")));
    assert!(config.exporters.contains_key(&id("otlp")));
}

#[test]
fn shapes_and_yaml_errors() {
    assert!(matches!(load("a: [1"), Err(ConfigError::Yaml { .. })));
    let e = load("a:\n  b: 1\n  b: 2\n").unwrap_err().to_string();
    assert!(
        e.starts_with("test.yaml: not valid YAML: line 3 column 3: duplicate mapping key: b\n --> test.yaml:3:3"),
        "{e}"
    );
    let found = problems("- receivers\n");
    assert!(
        found[0].starts_with("expected a mapping of receivers"),
        "{found:?}"
    );
    let found = problems(&MINIMAL.replace("exporters:\n  debug:\n", "exporters: [debug]\n"));
    assert!(
        found.contains(&"exporters: expected a mapping, found a list (line 8)".to_string()),
        "{found:?}"
    );
}

#[test]
fn component_validation_errors_carry_the_full_path() {
    let yaml = MINIMAL.replace("endpoint: 127.0.0.1:4317", "endpoint: no-port-here");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("receivers::otlp::protocols::grpc::endpoint: "),
        "{found:?}"
    );
    assert!(found[0].ends_with("(line 5)"), "{found:?}");
}

#[test]
fn several_documents_are_refused_as_such() {
    let manifest = "kind: Namespace\n---\nreceivers:\n  otlp:\n";
    let e = load(manifest).unwrap_err();
    assert!(
        matches!(e, ConfigError::SeveralDocuments { line: 3, .. }),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.starts_with("test.yaml: holds several YAML documents (the second starts at line 3), but a collector config is one document."),
        "{message}"
    );
    // No parser-library advice.
    assert!(!message.contains("from_multiple"), "{message}");
    assert!(message.contains("--from-configmap NAME[:KEY]"), "{message}");
}

#[test]
fn log_output_paths_are_honoured_or_refused() {
    // The collector's default.
    assert_eq!(
        load_ok(MINIMAL).config.service.telemetry.log_outputs,
        [LogOutput::Stderr]
    );
    let yaml = format!(
        "{MINIMAL}  telemetry:\n    logs:\n      output_paths: [stdout, stderr, /var/log/tg.log, \"file:///tmp/a.log\", \"file:rel.log\", stdout]\n"
    );
    let loaded = load_ok(&yaml);
    assert_eq!(
        loaded.config.service.telemetry.log_outputs,
        [
            LogOutput::Stdout,
            LogOutput::Stderr,
            LogOutput::File("/var/log/tg.log".into()),
            LogOutput::File("/tmp/a.log".into()),
            LogOutput::File("rel.log".into()),
        ]
    );
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("output_paths")),
        "{:?}",
        loaded.warnings
    );
    let yaml = format!("{MINIMAL}  telemetry:\n    logs:\n      output_paths: []\n");
    assert!(load_ok(&yaml)
        .config
        .service
        .telemetry
        .log_outputs
        .is_empty());

    let yaml = format!(
        "{MINIMAL}  telemetry:\n    logs:\n      output_paths: [stderr, \"lumberjack://x\"]\n"
    );
    let problems = problems(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("service::telemetry::logs::output_paths[1]:")
            && problems[0].contains("\"lumberjack\" sink is not supported"),
        "{problems:?}"
    );
}

/// A refusal that reaches the OTLP receiver carries a retry delay the
/// collector does not send: warned where a pipeline's refusals reach it
/// (a memory_limiter before any stage that holds data, or no such stage),
/// not where a batch or tail_sampling acknowledges first.
#[test]
fn refusals_reaching_the_otlp_receiver_warn_of_the_retry_delay() {
    let with = |processors: &str| {
        let yaml = MINIMAL
            .replace(
                "  batch:\n",
                "  batch:\n  memory_limiter:\n    check_interval: 1s\n    limit_mib: 100\n",
            )
            .replace(
                "processors: [batch]",
                &format!("processors: [{processors}]"),
            );
        let warnings = load_ok(&yaml).warnings;
        warnings
            .into_iter()
            .filter(|w| w.starts_with("receivers::"))
            .collect::<Vec<_>>()
    };
    assert!(with("batch").is_empty());
    assert!(with("batch, memory_limiter").is_empty());
    for (processors, refusal) in [
        ("memory_limiter, batch", "its memory_limiter refuses data"),
        ("", "every exporter's queue is full"),
    ] {
        let warnings = with(processors);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "receivers::otlp: when pipeline traces refuses spans ({refusal}), tracegate's answer asks the client to retry later"
            )) && warnings[0].contains("the collector sends no delay"),
            "{warnings:?}"
        );
    }
}

#[test]
fn a_persistent_queue_names_a_started_storage_extension() {
    let config = |storage: &str, listed: &str| {
        format!(
            "\
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  debug:
    sending_queue:
      storage: {storage}
extensions:
  file_storage/q:
    directory: /var/lib/q
  health_check:
service:
  extensions: [{listed}]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"
        )
    };
    let loaded = load_ok(&config("file_storage/q", "file_storage/q"));
    let debug = &loaded.config.exporters[&id("debug")];
    assert_eq!(
        debug.sending_queue().storage.as_deref(),
        Some("file_storage/q")
    );
    assert!(matches!(
        loaded.config.extensions[&id("file_storage/q")],
        ExtensionConfig::FileStorage(_)
    ));
    assert_listed(
        &problems(&config("file_storage/nope", "file_storage/q")),
        "exporters::debug::sending_queue::storage: storage extension \"file_storage/nope\" is \
         not defined in extensions (define a file_storage extension and list it in \
         service::extensions) (line 8)",
    );
    assert_listed(
        &problems(&config("file_storage/q", "health_check")),
        "exporters::debug::sending_queue::storage: storage extension \"file_storage/q\" is not \
         listed in service::extensions, so it would not be started (line 8)",
    );
    assert_listed(
        &problems(&config("health_check", "health_check, file_storage/q")),
        "exporters::debug::sending_queue::storage: \"health_check\" is not a storage \
         extension; use a file_storage extension (line 8)",
    );
}

#[test]
fn an_authenticator_is_a_started_extension_of_the_right_side() {
    let config = |receiver: &str, exporter: &str, listed: &str| {
        format!(
            "\
receivers:
  otlp:
    protocols:
      grpc:
        auth:
          authenticator: {receiver}
exporters:
  otlphttp:
    endpoint: http://backend:4318
    auth:
      authenticator: {exporter}
extensions:
  bearertokenauth:
    token: t
  basicauth/server:
    htpasswd:
      inline: u:p
  basicauth/client:
    client_auth:
      username: u
      password: p
  health_check:
service:
  extensions: [{listed}]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"
        )
    };
    let all = "bearertokenauth, basicauth/server, basicauth/client, health_check";
    load_ok(&config("bearertokenauth", "bearertokenauth", all));
    load_ok(&config("basicauth/server", "basicauth/client", all));
    assert_listed(
        &problems(&config("basicauth/client", "basicauth/server", all)),
        "receivers::otlp::protocols::grpc::auth::authenticator: \"basicauth/client\" is not a \
         server authenticator (a basicauth extension authenticates receivers with htpasswd) \
         (line 6)",
    );
    assert_listed(
        &problems(&config("basicauth/client", "basicauth/server", all)),
        "exporters::otlphttp::auth::authenticator: \"basicauth/server\" is not a client \
         authenticator (a basicauth extension authenticates exporters with client_auth) \
         (line 11)",
    );
    assert_listed(
        &problems(&config("bearertokenauth", "health_check", all)),
        "exporters::otlphttp::auth::authenticator: \"health_check\" is not an authenticator; \
         use a bearertokenauth or basicauth extension (line 11)",
    );
    assert_listed(
        &problems(&config(
            "bearertokenauth",
            "bearertokenauth",
            "health_check",
        )),
        "receivers::otlp::protocols::grpc::auth::authenticator: authenticator \
         \"bearertokenauth\" is not listed in service::extensions, so it would not be started \
         (line 6)",
    );
    assert_listed(
        &problems(&config("oauth2", "bearertokenauth", all)),
        "receivers::otlp::protocols::grpc::auth::authenticator: authenticator \"oauth2\" is not \
         defined in extensions (define a bearertokenauth or basicauth extension and list it in \
         service::extensions) (line 6)",
    );
}

#[test]
fn tail_storage_names_a_started_pebble_tail_storage_or_file_storage() {
    let config = |storage: &str, listed: &str| {
        format!(
            "\
receivers:
  otlp:
    protocols:
      grpc:
processors:
  tail_sampling:
    tail_storage: {storage}
    policies:
      - name: all
        type: always_sample
exporters:
  debug:
extensions:
  pebble_tail_storage:
    directory: /var/lib/otelcol/pebble-tail-storage
    max_storage_size_mib: 10240
  file_storage/t:
    directory: /var/lib/t
  health_check:
service:
  extensions: [{listed}]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [debug]
"
        )
    };
    for storage in ["pebble_tail_storage", "file_storage/t"] {
        let loaded = load_ok(&config(storage, storage));
        let ProcessorConfig::TailSampling(tail) = &loaded.config.processors[&id("tail_sampling")]
        else {
            panic!("tail_sampling");
        };
        assert_eq!(tail.tail_storage.as_deref(), Some(storage));
    }
    assert_listed(
        &problems(&config("pebble_tail_storage/x", "pebble_tail_storage")),
        "processors::tail_sampling::tail_storage: storage extension \"pebble_tail_storage/x\" \
         is not defined in extensions (define a pebble_tail_storage or file_storage extension \
         and list it in service::extensions) (line 7)",
    );
    assert_listed(
        &problems(&config("pebble_tail_storage", "health_check")),
        "processors::tail_sampling::tail_storage: storage extension \"pebble_tail_storage\" is \
         not listed in service::extensions, so it would not be started (line 7)",
    );
    assert_listed(
        &problems(&config("health_check", "health_check")),
        "processors::tail_sampling::tail_storage: \"health_check\" is not a storage extension; \
         use a pebble_tail_storage or file_storage extension (line 7)",
    );
}
