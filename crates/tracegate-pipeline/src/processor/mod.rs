//! Processors: pipeline stages between receivers and the exporters' fan-out.

use crate::config::ComponentError;

/// A processor's typed config, chosen by the component type.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {}

impl ProcessorConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &[];

    /// `None` when `kind` is not a processor type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ProcessorConfig, ComponentError>> {
        let _ = (kind, value);
        None
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match *self {}
    }
}
