//! What the head (`sampling`) and tail (`tail_sampling`) policy configs
//! parse alike. Only the parsing is shared: each sampler keeps its own
//! config structs, error messages and semantics (head judges a span, tail a
//! trace).

use tracegate_model::StatusCode;

/// A `status_codes` entry: the collector's upper-case names `OK`, `ERROR`
/// and `UNSET`; anything else is `None`.
pub(crate) fn parse_status_code(name: &str) -> Option<StatusCode> {
    match name {
        "OK" => Some(StatusCode::Ok),
        "ERROR" => Some(StatusCode::Error),
        "UNSET" => Some(StatusCode::Unset),
        _ => None,
    }
}

/// Whether `fraction_on_match` is a probability, 0 to 1 inclusive.
pub(crate) fn is_valid_fraction(f: f64) -> bool {
    (0.0..=1.0).contains(&f)
}
