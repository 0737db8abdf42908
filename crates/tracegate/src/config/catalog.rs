//! Which component types exist, section by section, as the loader needs to
//! know it: the types tracegate builds and the collector's well-known types
//! it does not, both from each kind's registry
//! (`tracegate_pipeline::registry`), plus the `prometheus` exporter, which
//! the loader reads as the self-telemetry endpoint. A known type that is
//! not built is fine until a traces pipeline uses it; a type that is known
//! nowhere is an error wherever it appears.

use tracegate_pipeline::exporter::ExporterConfig;
use tracegate_pipeline::extension::ExtensionConfig;
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
            Section::Receivers => ReceiverConfig::REGISTRY.kind,
            Section::Processors => ProcessorConfig::REGISTRY.kind,
            Section::Exporters => ExporterConfig::REGISTRY.kind,
            Section::Extensions => ExtensionConfig::REGISTRY.kind,
        }
    }

    /// Types tracegate builds, aliases included.
    pub fn implemented(self) -> &'static [&'static str] {
        match self {
            Section::Receivers => ReceiverConfig::KINDS,
            Section::Processors => ProcessorConfig::KINDS,
            Section::Exporters => ExporterConfig::KINDS,
            Section::Extensions => ExtensionConfig::KINDS,
        }
    }

    /// The collector's well-known types tracegate does not build.
    fn not_built(self) -> &'static [&'static str] {
        match self {
            Section::Receivers => ReceiverConfig::REGISTRY.not_built,
            Section::Processors => ProcessorConfig::REGISTRY.not_built,
            Section::Exporters => ExporterConfig::REGISTRY.not_built,
            Section::Extensions => ExtensionConfig::REGISTRY.not_built,
        }
    }
}

/// The exporter type whose endpoint serves tracegate's own metrics.
pub(crate) const PROMETHEUS_EXPORTER: &str = "prometheus";

/// What the catalogue knows about a type in a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Implemented,
    /// The `prometheus` exporter: it moves tracegate's own metrics.
    SelfTelemetry,
    /// A collector type tracegate does not build.
    NotBuilt,
    Unknown,
}

pub(crate) fn lookup(section: Section, kind: &str) -> Known {
    if section == Section::Exporters && kind == PROMETHEUS_EXPORTER {
        return Known::SelfTelemetry;
    }
    if section.implemented().contains(&kind) {
        return Known::Implemented;
    }
    if section.not_built().contains(&kind) {
        return Known::NotBuilt;
    }
    Known::Unknown
}

/// Every type the section knows, for "did you mean" suggestions.
pub(crate) fn all_kinds(section: Section) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = section.implemented().to_vec();
    kinds.extend(section.not_built());
    if section == Section::Exporters {
        kinds.push(PROMETHEUS_EXPORTER);
    }
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// ``the `kafka` exporter is a collector component that tracegate does not
/// implement``.
pub(crate) fn not_built(section: Section, kind: &str) -> String {
    format!(
        "the `{kind}` {} is a collector component that tracegate does not implement",
        section.singular()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_configs_types_are_implemented() {
        for kind in ["otlp", "jaeger", "zipkin"] {
            assert_eq!(
                lookup(Section::Receivers, kind),
                Known::Implemented,
                "{kind}"
            );
        }
        for kind in [
            "sampling",
            "resource_detection",
            "resourcedetection",
            "tail_sampling",
            "batch",
            "memory_limiter",
        ] {
            assert_eq!(
                lookup(Section::Processors, kind),
                Known::Implemented,
                "{kind}"
            );
        }
        for kind in ["jaeger", "otlp", "tempo"] {
            assert_eq!(
                lookup(Section::Exporters, kind),
                Known::Implemented,
                "{kind}"
            );
        }
        assert_eq!(
            lookup(Section::Exporters, "prometheus"),
            Known::SelfTelemetry
        );
        assert_eq!(
            lookup(Section::Extensions, "health_check"),
            Known::Implemented
        );
        assert_eq!(lookup(Section::Exporters, "kafka"), Known::NotBuilt);
        assert_eq!(lookup(Section::Extensions, "file_storage"), Known::NotBuilt);
        assert_eq!(lookup(Section::Exporters, "otlpp"), Known::Unknown);
        // Known in one section is not known in another.
        assert_eq!(lookup(Section::Receivers, "tail_sampling"), Known::Unknown);
    }

    #[test]
    fn not_built_message_names_the_kind_and_no_issue() {
        assert_eq!(
            not_built(Section::Exporters, "kafka"),
            "the `kafka` exporter is a collector component that tracegate does not implement"
        );
        assert_eq!(
            not_built(Section::Extensions, "pprof"),
            "the `pprof` extension is a collector component that tracegate does not implement"
        );
    }
}
