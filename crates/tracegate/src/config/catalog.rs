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

    /// The section's rows for the docs: (type, aliases, doc line).
    #[cfg(test)]
    fn rows(self) -> Vec<(&'static str, &'static [&'static str], &'static str)> {
        fn rows<C>(
            registry: &tracegate_pipeline::registry::Registry<C>,
        ) -> Vec<(&'static str, &'static [&'static str], &'static str)> {
            registry
                .built
                .iter()
                .map(|r| (r.name, r.aliases, r.doc))
                .collect()
        }
        let mut rows = match self {
            Section::Receivers => rows(&ReceiverConfig::REGISTRY),
            Section::Processors => rows(&ProcessorConfig::REGISTRY),
            Section::Exporters => rows(&ExporterConfig::REGISTRY),
            Section::Extensions => rows(&ExtensionConfig::REGISTRY),
        };
        if self == Section::Exporters {
            rows.push((PROMETHEUS_EXPORTER, &[], PROMETHEUS_EXPORTER_DOC));
        }
        rows
    }
}

/// The exporter type whose endpoint serves tracegate's own metrics.
pub(crate) const PROMETHEUS_EXPORTER: &str = "prometheus";

#[cfg(test)]
const PROMETHEUS_EXPORTER_DOC: &str =
    "Not an exporter here: where tracegate serves its own metrics ([below](#the-prometheus-exporter)).";

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

/// The component tables of `docs/configuration.md`: what tracegate builds,
/// and the collector types it knows but does not build.
#[cfg(test)]
fn component_tables() -> String {
    let code = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("| section | type | aliases | what it does |\n|---|---|---|---|\n");
    for section in Section::ALL {
        for (name, aliases, doc) in section.rows() {
            out.push_str(&format!(
                "| {} | `{name}` | {} | {doc} |\n",
                section.key(),
                code(aliases)
            ));
        }
    }
    out.push_str("\n| section | collector types tracegate does not implement |\n|---|---|\n");
    for section in Section::ALL {
        out.push_str(&format!(
            "| {} | {} |\n",
            section.key(),
            code(section.not_built())
        ));
    }
    out
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
        for kind in ["health_check", "file_storage"] {
            assert_eq!(
                lookup(Section::Extensions, kind),
                Known::Implemented,
                "{kind}"
            );
        }
        assert_eq!(lookup(Section::Exporters, "kafka"), Known::NotBuilt);
        assert_eq!(lookup(Section::Extensions, "pprof"), Known::NotBuilt);
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

    /// The docs' component tables are the registries' (with the
    /// `prometheus` exporter): a type added, renamed or dropped in a
    /// registry fails here until `docs/configuration.md` says the same.
    /// `TRACEGATE_BLESS_DOCS=1` rewrites the docs' tables from the
    /// registries.
    #[test]
    fn the_docs_component_tables_are_the_registries() {
        const BEGIN: &str = "<!-- component tables: generated from the registries -->\n";
        const END: &str = "<!-- end of component tables -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let docs = std::fs::read_to_string(path).expect("docs/configuration.md");
        let start = docs
            .find(BEGIN)
            .expect("the begin marker in docs/configuration.md")
            + BEGIN.len();
        let end = start
            + docs[start..]
                .find(END)
                .expect("the end marker in docs/configuration.md");
        let expected = component_tables();
        if docs[start..end] != expected && std::env::var_os("TRACEGATE_BLESS_DOCS").is_some() {
            let blessed = format!("{}{expected}{}", &docs[..start], &docs[end..]);
            std::fs::write(path, blessed).expect("rewrite docs/configuration.md");
            return;
        }
        assert!(
            docs[start..end] == expected,
            "docs/configuration.md's component tables differ from the registries; \
             rerun with TRACEGATE_BLESS_DOCS=1 to rewrite them, or write:\n{expected}"
        );
    }
}
