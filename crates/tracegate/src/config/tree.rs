//! The parsed YAML document as a tree that remembers the line of every key
//! and value, so errors found long after parsing can still point at the
//! file. Mapping keys are kept as written (strings, never expanded).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line where the node starts; 0 when unknown.
    pub line: u64,
    pub value: Value,
    /// For a scalar that was one whole `${...}` reference re-typed as YAML
    /// (a port number became an int): the text it expanded to, used when the
    /// field wants a string after all (as the collector's confmap keeps
    /// both). `None` otherwise.
    pub expanded_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry; the key keeps its own line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_line: u64,
    pub value: Node,
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A path as users read it: keys joined by `::`, list items as `[i]`
/// (`service::pipelines::traces::receivers[1]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(pub Vec<Segment>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn key(&self, key: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub fn index(&self, index: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    pub fn join(&self, other: &Path) -> Path {
        let mut p = self.clone();
        p.0.extend(other.0.iter().cloned());
        p
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for segment in &self.0 {
            match segment {
                Segment::Key(k) => {
                    if !first {
                        f.write_str("::")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

impl Node {
    pub fn new(line: u64, value: Value) -> Node {
        Node {
            line,
            value,
            expanded_text: None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What the node is, for "expected a mapping, found a list" messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The node at `path` below this one, with the line of the last key
    /// (a key's line is where a reader looks; a mapping value starts a line
    /// later).
    pub fn lookup(&self, path: &Path) -> Option<(&Node, u64)> {
        let mut node = self;
        let mut line = self.line;
        for segment in &path.0 {
            match (segment, &node.value) {
                (Segment::Key(k), Value::Map(entries)) => {
                    let entry = entries.iter().find(|e| &e.key == k)?;
                    line = entry.key_line;
                    node = &entry.value;
                }
                (Segment::Index(i), Value::Seq(items)) => {
                    node = items.get(*i)?;
                    line = node.line;
                }
                _ => return None,
            }
        }
        Some((node, line))
    }

    pub fn lookup_mut(&mut self, path: &Path) -> Option<&mut Node> {
        let mut node = self;
        for segment in &path.0 {
            node = match (segment, &mut node.value) {
                (Segment::Key(k), Value::Map(entries)) => {
                    &mut entries.iter_mut().find(|e| &e.key == k)?.value
                }
                (Segment::Index(i), Value::Seq(items)) => items.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Resolves a component's dotted error path (`protocols.grpc.endpoint`,
    /// `policies[2].name`) against this subtree. Keys may themselves hold
    /// dots (header names), so the walk matches whole keys from the tree,
    /// longest first; what the tree does not hold (a missing key) is split
    /// on dots.
    pub fn resolve_dotted(&self, dotted: &str) -> Path {
        let mut path = Path::root();
        let mut node = Some(self);
        let mut rest = dotted;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let Some(close) = after.find(']') else {
                    path.0.push(Segment::Key(rest.to_string()));
                    break;
                };
                match after[..close].parse::<usize>() {
                    Ok(i) => {
                        path.0.push(Segment::Index(i));
                        node = node.and_then(|n| match &n.value {
                            Value::Seq(items) => items.get(i),
                            _ => None,
                        });
                    }
                    Err(_) => {
                        path.0.push(Segment::Key(after[..close].to_string()));
                        node = None;
                    }
                }
                rest = &after[close + 1..];
                rest = rest.strip_prefix('.').unwrap_or(rest);
                continue;
            }
            let from_tree = node.and_then(Node::entries).and_then(|entries| {
                entries
                    .iter()
                    .filter(|e| {
                        rest.strip_prefix(e.key.as_str())
                            .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                    })
                    .max_by_key(|e| e.key.len())
            });
            let key_len = match from_tree {
                Some(entry) => {
                    node = Some(&entry.value);
                    entry.key.len()
                }
                None => {
                    node = None;
                    rest.find(['.', '[']).unwrap_or(rest.len())
                }
            };
            path.0.push(Segment::Key(rest[..key_len].to_string()));
            rest = &rest[key_len..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        path
    }

    /// The plain value components deserialize from.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Why text is not one YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Valid YAML, but more than one document (`---` between them, as in a
    /// Kubernetes manifest); `line` is where the second one starts.
    SeveralDocuments { line: u64 },
    /// Not valid YAML: the parser's message.
    Invalid(String),
}

/// The parser options of every config document. YAML 1.2 booleans only
/// (`yes`, `on` and `n` stay strings, as the collector's go-yaml v3 reads
/// them into untyped values); numbers with leading zeros stay strings
/// rather than turning into surprising floats.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    }
}

/// Parses one YAML document with [`options`]; duplicate keys are an error.
pub(crate) fn parse(text: &str) -> Result<Node, ParseError> {
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|e| {
        match e.without_snippet() {
            serde_saphyr::Error::MultipleDocuments { location, .. } => {
                ParseError::SeveralDocuments {
                    line: location.line(),
                }
            }
            _ => ParseError::Invalid(e.to_string()),
        }
    })
}

/// Parses every document of a stream (a Kubernetes manifest), skipping
/// empty ones.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, String> {
    serde_saphyr::from_multiple_with_options::<Node>(text, options()).map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node::new(spanned.referenced.line(), spanned.value))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: key.value,
                key_line: key.referenced.line(),
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_of_keys_and_values() {
        let root = parse("a:\n  b: 1\n  c: [x, 2]\n").unwrap();
        let (node, line) = root.lookup(&Path::root().key("a").key("b")).unwrap();
        assert_eq!((node.value.clone(), line), (Value::UInt(1), 2));
        let (node, line) = root
            .lookup(&Path::root().key("a").key("c").index(0))
            .unwrap();
        assert_eq!((node.value.clone(), line), (Value::Str("x".into()), 3));
    }

    #[test]
    fn yaml_1_2_scalars() {
        let root = parse("a: [yes, on, n, true, 0755, 1.5, -3, ~, '1']").unwrap();
        let json = root.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": ["yes", "on", "n", true, "0755", 1.5, -3, null, "1"]})
        );
    }

    #[test]
    fn keys_stay_strings() {
        let root = parse("8080: port\ntrue: x\n").unwrap();
        assert_eq!(
            root.to_json(),
            serde_json::json!({"8080": "port", "true": "x"})
        );
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let ParseError::Invalid(e) = parse("a: 1\na: 2\n").unwrap_err() else {
            panic!("a duplicate key is invalid YAML");
        };
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn empty_document_is_null() {
        assert!(parse("").unwrap().is_null());
        assert!(parse("# nothing\n").unwrap().is_null());
    }

    #[test]
    fn dotted_paths_resolve_keys_holding_dots() {
        let root = parse("headers:\n  x.api.key: 1\nlist:\n  - a: 1\n").unwrap();
        assert_eq!(
            root.resolve_dotted("headers.x.api.key").to_string(),
            "headers::x.api.key"
        );
        assert_eq!(root.resolve_dotted("list[0].a").to_string(), "list[0]::a");
        assert_eq!(
            root.resolve_dotted("missing.key").to_string(),
            "missing::key"
        );
        assert_eq!(root.resolve_dotted("").to_string(), "");
    }
}
