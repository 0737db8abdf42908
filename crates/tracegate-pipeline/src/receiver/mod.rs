//! Receivers: network listeners that decode requests into `SpanBatch`es and
//! hand them to the pipeline.

use crate::config::ComponentError;

/// A receiver's typed config, chosen by the component type.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverConfig {}

impl ReceiverConfig {
    /// Component types implemented here, aliases included.
    pub const KINDS: &'static [&'static str] = &[];

    /// `None` when `kind` is not a receiver type tracegate implements.
    pub fn from_value(
        kind: &str,
        value: serde_json::Value,
    ) -> Option<Result<ReceiverConfig, ComponentError>> {
        let _ = (kind, value);
        None
    }

    /// Pure checks (no network, no disk): `Err` for an invalid config,
    /// `Ok(warnings)` for valid but surprising settings.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match *self {}
    }
}
