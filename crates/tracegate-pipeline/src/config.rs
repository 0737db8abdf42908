//! Turning one component's YAML (already parsed into a generic value) into
//! its typed `Config`, with errors that name the key's path.

use serde::de::DeserializeOwned;

/// A config error inside one component; the loader prefixes the component's
/// own path (`receivers::otlp::`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ComponentError {
    /// Dotted path of the offending key inside the component, e.g. `protocols.grpc.endpoint`.
    pub path: String,
    pub message: String,
}

/// Deserializes a component's config. A `null` (a key written with no
/// value, as in `batch:`) means all defaults.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ComponentError> {
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| ComponentError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}
