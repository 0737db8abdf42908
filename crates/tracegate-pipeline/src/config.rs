//! Turning one component's YAML (already parsed into a generic value) into
//! its typed `Config`, with errors that name the key's path and, for a
//! misspelt key or value, the nearest valid one.

use std::cell::RefCell;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

/// A config error inside one component; the loader prefixes the component's
/// own path (`receivers::otlp::`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ComponentError {
    /// Dotted path of the offending key inside the component, e.g.
    /// `protocols.grpc.endpoint`; list items as `policies[2]`. Empty for the
    /// component itself. For an unknown key it is the path of the mapping
    /// that holds it (the message names the key).
    pub path: String,
    pub message: String,
}

/// A [`ComponentError`] at `path` (dotted, inside the component).
pub(crate) fn error(path: &str, message: impl Into<String>) -> ComponentError {
    ComponentError {
        path: path.into(),
        message: message.into(),
    }
}

/// Deserializes a component's config. A key written with no value (`null`,
/// as in `batch:` or `sending_queue:`) means defaults, as in the
/// collector, at any depth: a struct, map or list written so is empty, an
/// optional value is unset, and any other struct field so written is
/// treated as left out, so it keeps its own default. Unknown keys and
/// values are reported with the nearest valid spelling.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ComponentError> {
    let mut value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    loop {
        let structs = RefCell::new(Vec::new());
        let error = match serde_path_to_error::deserialize(NullMeansDefault {
            value: &value,
            structs: &structs,
        }) {
            Ok(config) => return Ok(config),
            Err(error) => error,
        };
        // A null that its field's type cannot take as empty (a scalar, an
        // enum, a duration): leave the key out and try again, so the field
        // gets its default. Each round removes one key, so this ends.
        let raw = error.inner().to_string();
        if explain_unknown(&raw).is_none()
            && remove_null_struct_field(&mut value, error.path(), &structs.into_inner())
        {
            continue;
        }
        return Err(component_error(error, raw));
    }
}

fn component_error(
    e: serde_path_to_error::Error<serde_json::Error>,
    raw: String,
) -> ComponentError {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    match explain_unknown(&raw) {
        Some(unknown) => {
            // serde_path_to_error's path ends with the unknown key itself;
            // the error belongs to the mapping that holds it.
            if unknown.is_field {
                path = parent_path(&path).to_string();
            }
            ComponentError {
                path,
                message: unknown.message,
            }
        }
        None => ComponentError { path, message: raw },
    }
}

/// Removes the key at `path` if it holds `null` and belongs to a mapping
/// that was read as a struct (`structs`, by address): a user's own map,
/// such as `headers`, keeps its keys. `false` when there is no such key.
fn remove_null_struct_field(
    value: &mut Value,
    path: &serde_path_to_error::Path,
    structs: &[*const Map<String, Value>],
) -> bool {
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut parent = value;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => parent.get_mut(key.as_str()),
            Segment::Seq { index } => parent.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => parent = next,
            None => return false,
        }
    }
    match parent.as_object_mut() {
        Some(map)
            if structs.contains(&(map as *const Map<String, Value>))
                && map.get(key.as_str()).is_some_and(Value::is_null) =>
        {
            map.remove(key.as_str());
            true
        }
        _ => false,
    }
}

/// A `serde_json::Value` deserializer that presents `null` as an empty
/// mapping when a struct or map is asked for, as an empty list for a
/// sequence, and as `None` for an option; everything else is the
/// `Value`'s own. It notes the address of every mapping read as a struct,
/// for [`remove_null_struct_field`].
#[derive(Clone, Copy)]
struct NullMeansDefault<'a> {
    value: &'a Value,
    structs: &'a RefCell<Vec<*const Map<String, Value>>>,
}

impl<'a> NullMeansDefault<'a> {
    fn map<V: Visitor<'a>>(
        self,
        entries: impl Iterator<Item = (&'a String, &'a Value)>,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_map(Entries {
            entries,
            pending: None,
            structs: self.structs,
        })
    }

    fn seq<V: Visitor<'a>>(
        self,
        items: std::slice::Iter<'a, Value>,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_seq(Items {
            items,
            structs: self.structs,
        })
    }
}

macro_rules! the_values_own {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, serde_json::Error> {
                self.value.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'a> Deserializer<'a> for NullMeansDefault<'a> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Object(map) => self.map(map.iter(), visitor),
            Value::Array(items) => self.seq(items.iter(), visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Null => self.map(std::iter::empty(), visitor),
            Value::Object(map) => {
                self.structs
                    .borrow_mut()
                    .push(map as *const Map<String, Value>);
                self.map(map.iter(), visitor)
            }
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Null => self.map(std::iter::empty(), visitor),
            Value::Object(map) => self.map(map.iter(), visitor),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Null => self.seq([].iter(), visitor),
            Value::Array(items) => self.seq(items.iter(), visitor),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_newtype_struct(self)
    }

    the_values_own! {
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    }
}

/// A mapping's entries, each value read with [`NullMeansDefault`].
struct Entries<'a, I> {
    entries: I,
    pending: Option<&'a Value>,
    structs: &'a RefCell<Vec<*const Map<String, Value>>>,
}

impl<'a, I: Iterator<Item = (&'a String, &'a Value)>> MapAccess<'a> for Entries<'a, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, serde_json::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(value);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'a>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        let value = self
            .pending
            .take()
            .ok_or_else(|| serde::de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(NullMeansDefault {
            value,
            structs: self.structs,
        })
    }
}

/// A list's items, each read with [`NullMeansDefault`].
struct Items<'a> {
    items: std::slice::Iter<'a, Value>,
    structs: &'a RefCell<Vec<*const Map<String, Value>>>,
}

impl<'a> SeqAccess<'a> for Items<'a> {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'a>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, serde_json::Error> {
        self.items
            .next()
            .map(|value| {
                seed.deserialize(NullMeansDefault {
                    value,
                    structs: self.structs,
                })
            })
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// Drops the last segment of a dotted path (`a.b[2].c` → `a.b[2]`).
fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// serde's "unknown field/variant" error, rewritten for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// A key (`true`) or a value such as an enum spelling (`false`).
    pub is_field: bool,
    /// What was written.
    pub name: String,
    /// The nearest valid spelling, if one is close enough to be a typo.
    pub suggestion: Option<String>,
    /// `unknown field "endpiont", did you mean "endpoint"?`
    pub message: String,
}

/// Recognises serde's `unknown field `x`, expected one of `a`, `b`` (and
/// the `unknown variant` form) and rewrites it with a suggestion. `None`
/// for any other message.
pub fn explain_unknown(message: &str) -> Option<UnknownName> {
    let (is_field, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
        (true, rest)
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        (false, rest)
    } else {
        return None;
    };
    let end = rest.find('`')?;
    let name = &rest[..end];
    if is_field {
        if let Some(why) = not_implemented(name) {
            return Some(UnknownName {
                is_field,
                name: name.to_string(),
                suggestion: None,
                message: format!("{name:?}: {why}"),
            });
        }
    }
    let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let suggestion = nearest(name, expected.iter().copied()).map(str::to_string);
    let what = if is_field { "field" } else { "value" };
    let message = match (&suggestion, expected.is_empty()) {
        (Some(s), _) => format!("unknown {what} {name:?}, did you mean {s:?}?"),
        (None, true) if is_field => format!("unknown field {name:?}: this section takes no keys"),
        (None, true) => format!("unknown value {name:?}"),
        (None, false) => {
            let list: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
            format!(
                "unknown {what} {name:?}, expected one of {}",
                list.join(", ")
            )
        }
    };
    Some(UnknownName {
        is_field,
        name: name.to_string(),
        suggestion,
        message,
    })
}

/// Why a key that the collector's receivers and exporters take (confighttp,
/// configgrpc, configauth) is refused: tracegate does not implement it.
/// Such a key is reported with this reason rather than as a misspelling,
/// and never ignored. Keys tracegate implements are fields of their
/// component's config and never reach this.
fn not_implemented(name: &str) -> Option<&'static str> {
    Some(match name {
        "auth" => {
            "tracegate does not implement authenticators on this component yet (only on the \
             OTLP, Jaeger and Zipkin receivers and the otlp, otlphttp, jaeger and loadbalancing \
             exporters); remove it"
        }
        "read_timeout" | "write_timeout" => {
            "tracegate does not implement this server time limit yet: its HTTP servers take \
             read_header_timeout and idle_timeout, but no deadline on reading a whole request \
             or on writing its answer; remove it"
        }
        "proxy_url" => {
            "tracegate does not implement proxies yet: its exporters connect directly, not \
             through an HTTP proxy; remove it"
        }
        "max_conns_per_host" => {
            "tracegate does not implement this limit yet: its exporters do not cap the \
             connections to a host; remove it"
        }
        "compression_params" => {
            "tracegate does not implement compression levels on this component: it takes \
             them only on the otlp, otlphttp, jaeger and loadbalancing (protocol.otlp) \
             exporters; remove it"
        }
        "cookies" | "force_attempt_http2" | "middlewares" => {
            "tracegate does not implement this collector setting yet; remove it"
        }
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance (a swap of two
/// neighbouring letters counts as one edit), if it is close enough to be a
/// typo: at most a third of the word's length, and at least one edit is
/// always allowed. Ties go to the first candidate.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (word.chars().count() / 3).max(1);
    let lowered = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        // Case and `-`/`_` slips are the commonest typos; rank them first.
        let d = if candidate.to_lowercase() == lowered
            || candidate.replace('-', "_") == word.replace('-', "_")
        {
            0
        } else {
            edit_distance(word, candidate)
        };
        if d <= budget && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters each cost one.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

/// Headers as the collector's `configopaque.MapList` takes them: a mapping
/// of names to values, or a list of `{name, value}`; in the order written.
/// Null is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPairs(pub Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for HeaderPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;

        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pair {
            name: String,
            value: String,
        }

        impl<'de> Visitor<'de> for Pairs {
            type Value = HeaderPairs;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of header names to values, or a list of {name, value}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    pairs.push((name, value));
                }
                Ok(HeaderPairs(pairs))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(Pair { name, value }) = seq.next_element()? {
                    pairs.push((name, value));
                }
                Ok(HeaderPairs(pairs))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(HeaderPairs::default())
            }
        }

        d.deserialize_any(Pairs)
    }
}

/// `headers` of an exporter: [`HeaderPairs`] as a map. A name given twice
/// in the list is an error rather than a silent choice of one value.
pub(crate) fn header_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    use serde::de::Error as _;
    use serde::Deserialize as _;
    let pairs = HeaderPairs::deserialize(d)?.0;
    let mut map = std::collections::BTreeMap::new();
    for (name, value) in pairs {
        if map.contains_key(&name) {
            return Err(D::Error::custom(format!("header {name:?} is given twice")));
        }
        map.insert(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod not_implemented_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        endpoint: Option<String>,
    }

    #[test]
    fn collector_keys_tracegate_lacks_are_refused_with_the_reason() {
        let err =
            from_value::<Server>(serde_json::json!({"auth": {"authenticator": "x"}})).unwrap_err();
        assert!(
            err.message
                .contains("tracegate does not implement authenticators on this component yet"),
            "{err}"
        );
        for key in [
            "read_timeout",
            "write_timeout",
            "proxy_url",
            "max_conns_per_host",
            "compression_params",
        ] {
            let err = from_value::<Server>(serde_json::json!({ key: "1s" })).unwrap_err();
            assert!(err.message.starts_with(&format!("{key:?}: ")), "{err}");
            assert!(
                err.message.contains("tracegate does not implement"),
                "{err}"
            );
        }
        let err = from_value::<Server>(serde_json::json!({"endpont": "x"})).unwrap_err();
        assert!(err.message.contains("did you mean"), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Grpc {
        endpoint: String,
        #[serde(default)]
        tls: Option<bool>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Protocols {
        grpc: Grpc,
        #[serde(default)]
        verbosity: Option<Verbosity>,
        #[serde(default)]
        list: Vec<Grpc>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Verbosity {
        Basic,
        Detailed,
    }

    fn err(v: serde_json::Value) -> ComponentError {
        from_value::<Protocols>(v).unwrap_err()
    }

    #[test]
    fn unknown_key_names_the_mapping_and_the_nearest_key() {
        let e = err(serde_json::json!({"grpc": {"endpiont": "x"}}));
        assert_eq!(e.path, "grpc");
        assert_eq!(
            e.message,
            r#"unknown field "endpiont", did you mean "endpoint"?"#
        );
    }

    #[test]
    fn unknown_key_far_from_everything_lists_the_valid_keys() {
        let e = err(serde_json::json!({"grpc": {"endpoint": "x"}, "zzzzzz": 1}));
        assert_eq!(e.path, "");
        assert_eq!(
            e.message,
            r#"unknown field "zzzzzz", expected one of "grpc", "verbosity", "list""#
        );
    }

    #[test]
    fn unknown_key_inside_a_list_item_keeps_the_index() {
        let e = err(
            serde_json::json!({"grpc": {"endpoint": "x"}, "list": [{"endpoint": "a"}, {"tsl": true}]}),
        );
        assert_eq!(e.path, "list[1]");
        assert_eq!(e.message, r#"unknown field "tsl", did you mean "tls"?"#);
    }

    #[test]
    fn unknown_enum_value_gets_a_suggestion() {
        let e = err(serde_json::json!({"grpc": {"endpoint": "x"}, "verbosity": "detaild"}));
        assert_eq!(e.path, "verbosity");
        assert_eq!(
            e.message,
            r#"unknown value "detaild", did you mean "detailed"?"#
        );
    }

    #[test]
    fn other_errors_keep_the_full_path() {
        let e = err(serde_json::json!({"grpc": {"endpoint": 5}}));
        assert_eq!(e.path, "grpc.endpoint");
        assert!(
            e.message.starts_with("invalid type: integer `5`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn null_means_defaults() {
        #[derive(Debug, Deserialize, PartialEq, Default)]
        #[serde(deny_unknown_fields)]
        struct Batch {
            #[serde(default)]
            size: u32,
        }
        assert_eq!(
            from_value::<Batch>(serde_json::Value::Null),
            Ok(Batch::default())
        );
    }

    /// A section whose keys were all written with no value.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sections {
        #[serde(default)]
        queue: Queue,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        items: Vec<Queue>,
        keepalive: Option<Queue>,
        #[serde(default = "gzip")]
        compression: String,
        #[serde(default)]
        verbosity: Option<Verbosity>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Queue {
        #[serde(default = "ten")]
        size: u32,
    }

    impl Default for Queue {
        fn default() -> Self {
            Queue { size: ten() }
        }
    }

    fn ten() -> u32 {
        10
    }

    fn gzip() -> String {
        "gzip".into()
    }

    #[test]
    fn a_nested_key_with_no_value_means_its_defaults() {
        let all_empty = from_value::<Sections>(serde_json::json!({
            "queue": null, "headers": null, "names": null, "items": [null, {"size": 3}],
            "keepalive": null, "compression": null, "verbosity": null,
        }))
        .unwrap();
        assert_eq!(
            all_empty,
            Sections {
                queue: Queue { size: 10 },
                headers: Default::default(),
                names: vec![],
                items: vec![Queue { size: 10 }, Queue { size: 3 }],
                keepalive: None,
                compression: "gzip".into(),
                verbosity: None,
            }
        );
        assert_eq!(
            all_empty,
            from_value(serde_json::json!({"items": [{}, {"size": 3}]})).unwrap()
        );
    }

    #[test]
    fn a_key_with_no_value_is_still_checked() {
        // An unknown key is unknown with or without a value.
        let e = from_value::<Sections>(serde_json::json!({"queu": null})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("", r#"unknown field "queu", did you mean "queue"?"#)
        );
        let e = from_value::<Sections>(serde_json::json!({"queue": {"sise": null}})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("queue", r#"unknown field "sise", did you mean "size"?"#)
        );
        // A user's own map keeps its keys: a header needs a value.
        let e =
            from_value::<Sections>(serde_json::json!({"headers": {"x-token": null}})).unwrap_err();
        assert_eq!(e.path, "headers.x-token");
        assert!(e.message.starts_with("invalid type: null"), "{}", e.message);
        // A required field written with no value is missing.
        let e = err(serde_json::json!({"grpc": {"endpoint": null}}));
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("grpc", "missing field `endpoint`")
        );
        // A list item that must be a value stays an error.
        let e = from_value::<Sections>(serde_json::json!({"names": ["a", null]})).unwrap_err();
        assert_eq!(e.path, "names[1]");
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("endpiont", "endpoint"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn nearest_only_suggests_plausible_typos() {
        let keys = ["endpoint", "tls", "headers", "compression"];
        assert_eq!(nearest("endpiont", keys), Some("endpoint"));
        assert_eq!(nearest("Endpoint", keys), Some("endpoint"));
        assert_eq!(nearest("tsl", keys), Some("tls"));
        assert_eq!(nearest("compresion", keys), Some("compression"));
        assert_eq!(nearest("queue", keys), None);
        assert_eq!(
            nearest("resourcedetection", ["resource_detection", "batch"]),
            Some("resource_detection")
        );
        assert_eq!(
            nearest("otlp-http", ["otlp_http", "otlp"]),
            Some("otlp_http")
        );
    }
}
