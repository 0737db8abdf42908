//! `env`: attributes from `OTEL_RESOURCE_ATTRIBUTES` (or the deprecated
//! `OTEL_RESOURCE`) as the collector parses them — and nothing else.
//!
//! Not `OTEL_SERVICE_NAME`: that variable names the gateway's own service,
//! and copying it into every span's `service.name` would give every
//! application the gateway's name. The collector's detector does not read
//! it either.

use tracegate_model::otlp::KeyValue;

use super::{string_kv, DetectContext};
use crate::url::query_unescape;

/// The collector's limit on a key's and a value's length.
const MAX_PART: usize = 256;

/// `allow_list`, when given, keeps only those keys.
pub(super) fn detect(
    ctx: &DetectContext,
    allow_list: Option<&[String]>,
) -> Result<Vec<KeyValue>, String> {
    let mut attributes = Vec::new();
    let list = ctx
        .var("OTEL_RESOURCE_ATTRIBUTES")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            ctx.var("OTEL_RESOURCE")
                .map(str::trim)
                .filter(|s| !s.is_empty())
        });
    if let Some(list) = list {
        for (key, value) in parse(list)? {
            put(&mut attributes, key, value);
        }
    }
    if let Some(allowed) = allow_list {
        attributes.retain(|kv| allowed.contains(&kv.key));
    }
    Ok(attributes)
}

/// A key set again replaces the value in place, as a map does.
fn put(attributes: &mut Vec<KeyValue>, key: String, value: String) {
    let kv = string_kv(&key, value);
    match attributes.iter_mut().find(|a| a.key == key) {
        Some(existing) => *existing = kv,
        None => attributes.push(kv),
    }
}

/// `k=v,k=v` with ASCII keys and values of at most 256 characters,
/// whitespace around either trimmed, values URL-query-unescaped. A trailing
/// comma is allowed; an empty entry elsewhere is an error, and so is any
/// error at all (the collector then detects nothing from this variable).
pub(super) fn parse(list: &str) -> Result<Vec<(String, String)>, String> {
    let entries: Vec<&str> = list.split(',').collect();
    let last = entries.len() - 1;
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if i == last && i > 0 && entry.trim_matches(is_space).is_empty() {
            break;
        }
        let invalid = || format!("invalid resource format, invalid text: {entry:?}");
        let (key, value) = entry.split_once('=').ok_or_else(invalid)?;
        let key = key.trim_matches(is_space);
        let value = value.trim_matches(is_space);
        if key.is_empty() || key.len() > MAX_PART || value.len() > MAX_PART {
            return Err(invalid());
        }
        if !key.is_ascii() || !value.is_ascii() {
            return Err(invalid());
        }
        let value = query_unescape(value).ok_or_else(|| {
            format!("invalid resource format in attribute: {entry:?}: invalid URL escape")
        })?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// RE2's `\s`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &str) -> Vec<(String, String)> {
        parse(list).unwrap()
    }

    #[test]
    fn parses_as_the_collector() {
        assert_eq!(
            pairs(" a = b , c=d%20e+f,url=https://x.example/?q=1 ,"),
            [
                ("a".to_string(), "b".to_string()),
                ("c".into(), "d e f".into()),
                ("url".into(), "https://x.example/?q=1".into()),
            ]
        );
        assert_eq!(pairs("empty="), [("empty".to_string(), String::new())]);
        for bad in [
            "a",
            "a=b,,c=d",
            "=v",
            "a=%zz",
            "a=%4",
            "k=ü",
            &format!("k={}", "v".repeat(257)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn only_the_list_counts_and_later_keys_replace_earlier() {
        let ctx = DetectContext::for_test(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-list,k=1,k=2"),
            ("OTEL_SERVICE_NAME", "the-gateway"),
        ]);
        let detected = detect(&ctx, None).unwrap();
        let got: Vec<(String, String)> =
            detected.iter().map(super::super::tests::as_pair).collect();
        assert_eq!(
            got,
            [
                ("service.name".to_string(), "from-list".to_string()),
                ("k".into(), "2".into())
            ]
        );
        let deprecated = DetectContext::for_test(&[("OTEL_RESOURCE", "a=b")]);
        assert_eq!(detect(&deprecated, None).unwrap().len(), 1);
        assert!(detect(&DetectContext::for_test(&[]), None)
            .unwrap()
            .is_empty());
        let allowed = ["k".to_string()];
        let only_k = detect(&ctx, Some(&allowed)).unwrap();
        assert_eq!(only_k.len(), 1);
        assert_eq!(only_k[0].key, "k");
        // OTEL_SERVICE_NAME alone (the gateway's own name) sets nothing.
        let own_name = DetectContext::for_test(&[("OTEL_SERVICE_NAME", "the-gateway")]);
        assert!(detect(&own_name, None).unwrap().is_empty());
    }
}
