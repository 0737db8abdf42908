//! One registry per component kind: every receiver, processor, exporter
//! and extension type tracegate builds is one row of its kind's
//! [`component_registry!`] call (`receiver/mod.rs`, `processor/mod.rs`,
//! `exporter/mod.rs`, `extension.rs`), and each kind also lists the
//! collector's types it knows by name but does not build. Everything else
//! is derived from those rows: the typed config enum, the known types and
//! aliases (`KINDS`), parsing (`from_value`), validation, construction, the
//! config loader's catalogue and the component table of
//! `docs/configuration.md` (a test in the `tracegate` crate fails when the
//! two disagree).
//!
//! # Why a macro over a table of rows
//!
//! A row must produce an enum variant (so a config stays a plain, typed,
//! comparable value), a registry entry (name, aliases, doc line, parser)
//! and the dispatch from the variant to its component. A `const` table can
//! hold the entries but not declare the variant or the dispatch, which
//! would then be kept in step by hand in two more places. The macro writes
//! all three from one line and does nothing else. What a component does is
//! ordinary code in its own module: its config's `validate` method, and
//! the kind's build trait implemented for the config
//! ([`crate::receiver::BuildReceiver`],
//! [`crate::processor::BuildProcessor`], [`crate::exporter::BuildExporter`],
//! [`crate::extension::BuildExtension`]). Build functions take a
//! [`crate::context::BuildContext`] for whatever they need from the rest
//! of the process.
//!
//! # How to add a component
//!
//! 1. Write the component in its own module (`exporter/kafka.rs`): its
//!    `Config` (`serde::Deserialize` with `deny_unknown_fields`, defaults
//!    as the collector's) with a `validate` method (pure checks: no
//!    network, no disk; `Ok` carries warnings), and the kind's build trait
//!    for that `Config`, whose one method takes from the `BuildContext`
//!    what the component needs. Tests go beside it.
//! 2. Add one row to the kind's `component_registry!` call:
//!    `Kafka(kafka::Config) = "kafka" => "Sends spans to a Kafka topic",`
//!    (aliases as `= "name" | "alias"`; a parser other than
//!    [`crate::config::from_value`] as `, parse kafka::from_value`; checks
//!    other than `Config::validate` as `, validate kafka::check`), and take
//!    the type out of the kind's `not built` list if it was there. Declare
//!    the module (`pub mod kafka;`) beside the others.
//! 3. Document its keys in `docs/configuration.md`. The component tables
//!    there are generated from the registries: run the `tracegate` crate's
//!    tests with `TRACEGATE_BLESS_DOCS=1` to rewrite them, and check the
//!    diff.
//!
//! What a component needs from another (memory pressure, later storage
//! extensions or membership) is a field of the `BuildContext`, filled in
//! once by the binary (`tracegate::app::start`), never a global.

use serde_json::Value;

use crate::config::ComponentError;

/// One component type tracegate builds: a row of its kind's registry.
#[derive(Debug)]
pub struct Registration<C: 'static> {
    /// The type as written in a config (`otlp`).
    pub name: &'static str,
    /// Other spellings of the same type (`otlp_grpc`, `tempo`).
    pub aliases: &'static [&'static str],
    /// What it does, in one line (the docs' component table).
    pub doc: &'static str,
    /// Reads the component's settings into its typed config.
    pub parse: fn(Value) -> Result<C, ComponentError>,
}

impl<C> Registration<C> {
    /// Whether `kind` is this type's name or one of its aliases.
    pub fn answers_to(&self, kind: &str) -> bool {
        self.name == kind || self.aliases.contains(&kind)
    }
}

/// The registry of one component kind.
#[derive(Debug)]
pub struct Registry<C: 'static> {
    /// `receiver`, `processor`, `exporter` or `extension`.
    pub kind: &'static str,
    /// The types tracegate builds.
    pub built: &'static [Registration<C>],
    /// The OpenTelemetry Collector's well-known types of this kind that
    /// tracegate does not build: known, so a config that defines one but
    /// does not use it still loads.
    pub not_built: &'static [&'static str],
}

impl<C> Registry<C> {
    /// The row of the type `kind` (a name or an alias).
    pub fn find(&self, kind: &str) -> Option<&'static Registration<C>> {
        self.built.iter().find(|r| r.answers_to(kind))
    }

    /// `None` when tracegate does not build `kind`.
    pub fn parse(&self, kind: &str, value: Value) -> Option<Result<C, ComponentError>> {
        self.find(kind).map(|r| (r.parse)(value))
    }

    /// Whether `kind` is a collector type tracegate does not build.
    pub fn is_not_built(&self, kind: &str) -> bool {
        self.not_built.contains(&kind)
    }
}

/// Declares a kind's typed config enum and its registry, one row per
/// component type; see the [module docs](self). The grammar:
///
/// ```text
/// component_registry! {
///     #[derive(...)] pub enum ExporterConfig: "exporter", dyn BuildExporter {
///         Variant(module::Config) = "name" | "alias"
///             [, parse module::parse_fn] [, validate module::validate_fn] => "doc line",
///         ...
///     }
///     not built: ["kafka", ...]
/// }
/// ```
///
/// It generates the enum (one variant per row), `REGISTRY`, `KINDS`,
/// `from_value`, `validate` (the config's own `validate` method unless the
/// row names another function) and `component` (the row's config as the
/// kind's build trait, through which the kind's own `build`/`start` reaches
/// the component).
macro_rules! component_registry {
    (@parse $value:ident) => {
        $crate::config::from_value($value)
    };
    (@parse $value:ident $parse:path) => {
        $parse($value)
    };
    (@validate $config:ident) => {
        $config.validate()
    };
    (@validate $config:ident $validate:path) => {
        $validate($config)
    };
    (
        $(#[$attr:meta])*
        pub enum $Enum:ident: $kind:literal, dyn $Trait:path {
            $(
                $Variant:ident($Ty:ty) = $name:literal $(| $alias:literal)*
                    $(, parse $parse:path)? $(, validate $validate:path)? => $doc:literal
            ),* $(,)?
        }
        not built: [$($other:literal),* $(,)?]
    ) => {
        $(#[$attr])*
        pub enum $Enum {
            $(
                #[doc = $doc]
                $Variant($Ty),
            )*
        }

        impl $Enum {
            /// This kind's registry: the types tracegate builds and the
            /// collector types it knows but does not build.
            pub const REGISTRY: $crate::registry::Registry<$Enum> = $crate::registry::Registry {
                kind: $kind,
                built: &[
                    $(
                        $crate::registry::Registration {
                            name: $name,
                            aliases: &[$($alias),*],
                            doc: $doc,
                            parse: |value| {
                                let parsed: Result<$Ty, $crate::config::ComponentError> =
                                    $crate::registry::component_registry!(@parse value $($parse)?);
                                parsed.map($Enum::$Variant)
                            },
                        },
                    )*
                ],
                not_built: &[$($other),*],
            };

            /// Component types tracegate builds, aliases included.
            pub const KINDS: &'static [&'static str] = &[$($name, $($alias,)*)*];

            /// Parses the settings of a component of type `kind`; `None`
            /// when tracegate does not build that type.
            pub fn from_value(
                kind: &str,
                value: serde_json::Value,
            ) -> Option<Result<$Enum, $crate::config::ComponentError>> {
                Self::REGISTRY.parse(kind, value)
            }

            /// Pure checks (no network, no disk): `Err` for an invalid
            /// config, `Ok(warnings)` for valid but surprising settings.
            pub fn validate(&self) -> Result<Vec<String>, $crate::config::ComponentError> {
                match self {
                    $($Enum::$Variant(config) => {
                        $crate::registry::component_registry!(@validate config $($validate)?)
                    })*
                }
            }

            /// The row's config, as the kind's build trait.
            fn component(&self) -> &dyn $Trait {
                match self {
                    $($Enum::$Variant(config) => config,)*
                }
            }
        }
    };
}

pub(crate) use component_registry;

#[cfg(test)]
mod tests {
    use crate::exporter::ExporterConfig;
    use crate::extension::ExtensionConfig;
    use crate::processor::ProcessorConfig;
    use crate::receiver::ReceiverConfig;

    /// A name is a type of one row only, and never also "not built".
    fn names_are_unique<C>(registry: &super::Registry<C>, kinds: &[&str]) {
        let mut seen: Vec<&str> = Vec::new();
        for row in registry.built {
            for name in std::iter::once(&row.name).chain(row.aliases) {
                assert!(!seen.contains(name), "{name} twice in {}s", registry.kind);
                assert!(!registry.is_not_built(name), "{name} is built");
                assert!(kinds.contains(name), "{name} not in KINDS");
                seen.push(name);
            }
            assert!(!row.doc.is_empty(), "{} has no doc line", row.name);
        }
        assert_eq!(seen.len(), kinds.len(), "{}: {kinds:?}", registry.kind);
        for (i, name) in registry.not_built.iter().enumerate() {
            assert!(!registry.not_built[..i].contains(name), "{name} twice");
        }
    }

    #[test]
    fn every_registry_names_each_type_once() {
        names_are_unique(&ReceiverConfig::REGISTRY, ReceiverConfig::KINDS);
        names_are_unique(&ProcessorConfig::REGISTRY, ProcessorConfig::KINDS);
        names_are_unique(&ExporterConfig::REGISTRY, ExporterConfig::KINDS);
        names_are_unique(&ExtensionConfig::REGISTRY, ExtensionConfig::KINDS);
    }

    #[test]
    fn an_alias_parses_as_its_type() {
        let by_alias =
            ExporterConfig::from_value("tempo", serde_json::json!({"endpoint": "t:4317"}));
        let by_name = ExporterConfig::from_value("otlp", serde_json::json!({"endpoint": "t:4317"}));
        assert_eq!(by_alias.unwrap().unwrap(), by_name.unwrap().unwrap());
        assert!(ExporterConfig::from_value("kafka", serde_json::Value::Null).is_none());
        assert!(ExporterConfig::REGISTRY.is_not_built("kafka"));
    }
}
