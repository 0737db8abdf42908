//! Which component types exist: the ones tracegate implements (each typed
//! config enum's `KINDS`) and the OpenTelemetry Collector's well-known ones
//! it does not implement yet, with the issue that brings them. A known but
//! unimplemented type is fine until a traces pipeline uses it; a type that
//! is known nowhere is an error wherever it appears.

use tracegate_pipeline::exporter::ExporterConfig;
use tracegate_pipeline::processor::ProcessorConfig;
use tracegate_pipeline::receiver::ReceiverConfig;

/// The config sections that hold components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Section {
    Receivers,
    Processors,
    Exporters,
    Extensions,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Receivers,
        Section::Processors,
        Section::Exporters,
        Section::Extensions,
    ];

    /// The top-level key: `receivers`.
    pub fn key(self) -> &'static str {
        match self {
            Section::Receivers => "receivers",
            Section::Processors => "processors",
            Section::Exporters => "exporters",
            Section::Extensions => "extensions",
        }
    }

    /// One component of the section: `receiver`.
    pub fn singular(self) -> &'static str {
        match self {
            Section::Receivers => "receiver",
            Section::Processors => "processor",
            Section::Exporters => "exporter",
            Section::Extensions => "extension",
        }
    }

    /// Types tracegate implements, aliases included.
    pub fn implemented(self) -> &'static [&'static str] {
        match self {
            Section::Receivers => ReceiverConfig::KINDS,
            Section::Processors => ProcessorConfig::KINDS,
            Section::Exporters => ExporterConfig::KINDS,
            Section::Extensions => EXTENSION_KINDS,
        }
    }

    /// Known types tracegate does not implement (yet).
    fn planned(self) -> &'static [Planned] {
        match self {
            Section::Receivers => RECEIVERS,
            Section::Processors => PROCESSORS,
            Section::Exporters => EXPORTERS,
            Section::Extensions => EXTENSIONS,
        }
    }
}

/// Extension types the loader builds itself.
pub(crate) const EXTENSION_KINDS: &[&str] = &["health_check"];

/// The exporter type whose endpoint serves tracegate's own metrics.
pub(crate) const PROMETHEUS_EXPORTER: &str = "prometheus";

/// A known type that is not implemented, and the issue that implements it
/// (`None`: not planned in an issue yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planned {
    pub kind: &'static str,
    pub issue: Option<u32>,
}

const fn planned(kind: &'static str, issue: Option<u32>) -> Planned {
    Planned { kind, issue }
}

/// Issue 2 builds the foundation's components; until each lands it is
/// reported as planned there.
const FOUNDATION: Option<u32> = Some(2);
const HEAD_SAMPLING: Option<u32> = Some(4);
const TAIL_SAMPLING: Option<u32> = Some(6);

const RECEIVERS: &[Planned] = &[
    planned("otlp", FOUNDATION),
    planned("prometheus", None),
    planned("hostmetrics", None),
    planned("kafka", None),
    planned("filelog", None),
    planned("opencensus", None),
    planned("fluentforward", None),
    planned("kubeletstats", None),
    planned("k8s_cluster", None),
    planned("k8sobjects", None),
    planned("journald", None),
    planned("syslog", None),
    planned("statsd", None),
    planned("otlpjsonfile", None),
    planned("nop", None),
];

const PROCESSORS: &[Planned] = &[
    planned("batch", FOUNDATION),
    planned("memory_limiter", HEAD_SAMPLING),
    planned("resource_detection", HEAD_SAMPLING),
    planned("resourcedetection", HEAD_SAMPLING),
    planned("tail_sampling", TAIL_SAMPLING),
    planned("attributes", None),
    planned("resource", None),
    planned("filter", None),
    planned("transform", None),
    planned("k8sattributes", None),
    planned("groupbytrace", None),
    planned("groupbyattrs", None),
    planned("span", None),
    planned("redaction", None),
    planned("cumulativetodelta", None),
    planned("metricstransform", None),
];

const EXPORTERS: &[Planned] = &[
    planned("otlp", FOUNDATION),
    planned("otlp_grpc", FOUNDATION),
    planned("tempo", FOUNDATION),
    planned("otlp_http", FOUNDATION),
    planned("otlphttp", FOUNDATION),
    planned("debug", FOUNDATION),
    planned("file", FOUNDATION),
    planned("loadbalancing", None),
    planned("kafka", None),
    planned("zipkin", None),
    planned("prometheusremotewrite", None),
    planned("logging", None),
    planned("nop", None),
];

const EXTENSIONS: &[Planned] = &[
    planned("pprof", None),
    planned("zpages", None),
    planned("memory_ballast", None),
    planned("file_storage", None),
    planned("basicauth", None),
    planned("bearertokenauth", None),
    planned("oauth2client", None),
    planned("k8s_observer", None),
];

/// What the catalogue knows about a type in a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Implemented,
    /// The `prometheus` exporter: it moves tracegate's own metrics.
    SelfTelemetry,
    Planned(Planned),
    Unknown,
}

pub(crate) fn lookup(section: Section, kind: &str) -> Known {
    if section == Section::Exporters && kind == PROMETHEUS_EXPORTER {
        return Known::SelfTelemetry;
    }
    if section.implemented().contains(&kind) {
        return Known::Implemented;
    }
    match section.planned().iter().find(|p| p.kind == kind) {
        Some(p) => Known::Planned(*p),
        None => Known::Unknown,
    }
}

/// Every type the section knows, for "did you mean" suggestions.
pub(crate) fn all_kinds(section: Section) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = section.implemented().to_vec();
    kinds.extend(section.planned().iter().map(|p| p.kind));
    if section == Section::Exporters {
        kinds.push(PROMETHEUS_EXPORTER);
    }
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// `tail_sampling is not implemented yet (issue 6)`.
pub(crate) fn not_implemented(kind: &str, issue: Option<u32>) -> String {
    match issue {
        Some(n) => format!("{kind} is not implemented yet (issue {n})"),
        None => format!("{kind} is not implemented yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_configs_types_are_known() {
        for kind in ["otlp", "jaeger"] {
            assert_ne!(lookup(Section::Receivers, kind), Known::Unknown, "{kind}");
        }
        for kind in [
            "sampling",
            "resource_detection",
            "resourcedetection",
            "tail_sampling",
            "batch",
            "memory_limiter",
        ] {
            assert_ne!(lookup(Section::Processors, kind), Known::Unknown, "{kind}");
        }
        for kind in ["jaeger", "otlp", "tempo"] {
            assert_ne!(lookup(Section::Exporters, kind), Known::Unknown, "{kind}");
        }
        assert_eq!(
            lookup(Section::Exporters, "prometheus"),
            Known::SelfTelemetry
        );
        assert_eq!(
            lookup(Section::Extensions, "health_check"),
            Known::Implemented
        );
    }

    #[test]
    fn issues_are_named_for_our_planned_components() {
        let issue = |section, kind| match lookup(section, kind) {
            Known::Planned(p) => p.issue,
            other => panic!("{kind}: {other:?}"),
        };
        for kind in ["resource_detection", "resourcedetection", "memory_limiter"] {
            assert_eq!(
                lookup(Section::Processors, kind),
                Known::Implemented,
                "{kind}"
            );
        }
        assert_eq!(lookup(Section::Receivers, "jaeger"), Known::Implemented);
        assert_eq!(lookup(Section::Receivers, "zipkin"), Known::Implemented);
        assert_eq!(lookup(Section::Exporters, "jaeger"), Known::Implemented);
        assert_eq!(issue(Section::Exporters, "kafka"), None);
    }

    #[test]
    fn implemented_kinds_win_over_the_planned_list() {
        for section in Section::ALL {
            for kind in section.implemented() {
                assert_eq!(lookup(section, kind), Known::Implemented, "{kind}");
            }
        }
    }

    #[test]
    fn not_implemented_message() {
        assert_eq!(
            not_implemented("tail_sampling", Some(6)),
            "tail_sampling is not implemented yet (issue 6)"
        );
        assert_eq!(
            not_implemented("kafka", None),
            "kafka is not implemented yet"
        );
    }
}
