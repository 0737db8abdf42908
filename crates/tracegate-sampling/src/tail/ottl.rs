//! The subset of OTTL span conditions tracegate evaluates for the
//! `ottl_condition` policy, parsed honestly: anything outside it is an
//! "unsupported expression" error at startup, never ignored.
//!
//! Supported:
//! - boolean `and`, `or`, `not`, parentheses, `true`, `false`;
//! - comparisons `==`, `!=`, `<`, `<=`, `>`, `>=` between paths and
//!   literals (strings, integers, floats, `true`, `false`, `nil`, and the
//!   `STATUS_CODE_*` / `SPAN_KIND_*` enums);
//! - paths (optionally prefixed `span.`): `name`, `kind`, `status.code`,
//!   `trace_state`, `start_time_unix_nano`, `end_time_unix_nano`,
//!   `attributes["k"]`, `resource.attributes["k"]`,
//!   `instrumentation_scope.attributes["k"]`;
//! - `IsMatch(<path or string>, "regex")` (unanchored, like OTTL's).
//!
//! Comparison follows OTTL's rules: `nil` equals only `nil`; ints and
//! floats compare numerically; strings lexically; booleans only for
//! equality; values of different types are unequal and unordered.

use regex::Regex;
use tracegate_model::{AnyValueRef, SpanBatch};

#[derive(Debug)]
pub(crate) struct OttlCondition {
    root: Expr,
}

#[derive(Debug)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Literal(bool),
    Compare(Operand, CmpOp, Operand),
    IsMatch(Operand, Regex),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Operand {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Path(Path),
}

#[derive(Debug)]
enum Path {
    Name,
    Kind,
    StatusCode,
    TraceState,
    StartTime,
    EndTime,
    SpanAttribute(String),
    ResourceAttribute(String),
    ScopeAttribute(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(CmpOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

impl OttlCondition {
    pub(crate) fn parse(text: &str) -> Result<OttlCondition, String> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, at: 0 };
        let root = parser.or_expr()?;
        if let Some(t) = parser.peek() {
            return Err(format!("unexpected {t:?} after the condition"));
        }
        Ok(OttlCondition { root })
    }

    pub(crate) fn matches(&self, batch: &SpanBatch, span: usize) -> bool {
        eval(&self.root, batch, span)
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Token::LParen);
                i += 1
            }
            b')' => {
                out.push(Token::RParen);
                i += 1
            }
            b'[' => {
                out.push(Token::LBracket);
                i += 1
            }
            b']' => {
                out.push(Token::RBracket);
                i += 1
            }
            b',' => {
                out.push(Token::Comma);
                i += 1
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => CmpOp::Eq,
                    (b'!', true) => CmpOp::Ne,
                    (b'<', true) => CmpOp::Le,
                    (b'>', true) => CmpOp::Ge,
                    (b'<', false) => CmpOp::Lt,
                    (b'>', false) => CmpOp::Gt,
                    _ => return Err(format!("unexpected {:?}", c as char)),
                };
                out.push(Token::Op(op));
                i += if two { 2 } else { 1 };
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match b.get(i + 1) {
                                Some(b'"') => s.push('"'),
                                Some(b'\\') => s.push('\\'),
                                Some(&other) => {
                                    s.push('\\');
                                    s.push(other as char)
                                }
                                None => return Err("unterminated string".into()),
                            }
                            i += 2;
                        }
                        Some(_) => {
                            // Copy one UTF-8 character.
                            let rest = &text[i..];
                            let ch = rest.chars().next().unwrap_or('\u{fffd}');
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E')
                {
                    i += 1;
                }
                let lit = &text[start..i];
                if let Ok(n) = lit.parse::<i64>() {
                    out.push(Token::Int(n));
                } else if let Ok(f) = lit.parse::<f64>() {
                    out.push(Token::Float(f));
                } else {
                    return Err(format!("invalid number {lit:?}"));
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                out.push(Token::Ident(text[start..i].to_string()));
            }
            other => return Err(format!("unexpected character {:?}", other as char)),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!("expected {want:?}, found {t:?}")),
            None => Err(format!("expected {want:?} at the end")),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.and_expr()?];
        while self.keyword("or") {
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.not_expr()?];
        while self.keyword("and") {
            terms.push(self.not_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not_expr(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            let inner = self.or_expr()?;
            self.expect(Token::RParen)?;
            return Ok(inner);
        }
        if matches!(self.peek(), Some(Token::Ident(w)) if w == "IsMatch") {
            self.at += 1;
            self.expect(Token::LParen)?;
            let target = self.operand()?;
            self.expect(Token::Comma)?;
            let pattern = match self.next() {
                Some(Token::Str(p)) => p,
                other => return Err(format!("IsMatch needs a string pattern, found {other:?}")),
            };
            self.expect(Token::RParen)?;
            let re = Regex::new(&pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
            return Ok(Expr::IsMatch(target, re));
        }
        let left = self.operand()?;
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.at += 1;
                let right = self.operand()?;
                Ok(Expr::Compare(left, op, right))
            }
            _ => match left {
                Operand::Bool(b) => Ok(Expr::Literal(b)),
                other => Err(format!(
                    "{other:?} is not a condition (compare it with ==, !=, <, ...)"
                )),
            },
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Operand::Str(s)),
            Some(Token::Int(n)) => Ok(Operand::Int(n)),
            Some(Token::Float(f)) => Ok(Operand::Float(f)),
            Some(Token::Ident(word)) => self.path_or_constant(&word),
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end of the condition".into()),
        }
    }

    fn path_or_constant(&mut self, word: &str) -> Result<Operand, String> {
        let constant = match word {
            "true" => Some(Operand::Bool(true)),
            "false" => Some(Operand::Bool(false)),
            "nil" => Some(Operand::Nil),
            "STATUS_CODE_UNSET" => Some(Operand::Int(0)),
            "STATUS_CODE_OK" => Some(Operand::Int(1)),
            "STATUS_CODE_ERROR" => Some(Operand::Int(2)),
            "SPAN_KIND_UNSPECIFIED" => Some(Operand::Int(0)),
            "SPAN_KIND_INTERNAL" => Some(Operand::Int(1)),
            "SPAN_KIND_SERVER" => Some(Operand::Int(2)),
            "SPAN_KIND_CLIENT" => Some(Operand::Int(3)),
            "SPAN_KIND_PRODUCER" => Some(Operand::Int(4)),
            "SPAN_KIND_CONSUMER" => Some(Operand::Int(5)),
            _ => None,
        };
        if let Some(c) = constant {
            return Ok(c);
        }
        let path = word.strip_prefix("span.").unwrap_or(word);
        let keyed = |p: &mut Parser| -> Result<String, String> {
            p.expect(Token::LBracket)?;
            let key = match p.next() {
                Some(Token::Str(k)) => k,
                other => return Err(format!("expected a string key, found {other:?}")),
            };
            p.expect(Token::RBracket)?;
            if p.peek() == Some(&Token::LBracket) {
                return Err("nested attribute keys are not supported".into());
            }
            Ok(key)
        };
        let path = match path {
            "name" => Path::Name,
            "kind" => Path::Kind,
            "status.code" => Path::StatusCode,
            "trace_state" if self.peek() != Some(&Token::LBracket) => Path::TraceState,
            "start_time_unix_nano" => Path::StartTime,
            "end_time_unix_nano" => Path::EndTime,
            "attributes" => Path::SpanAttribute(keyed(self)?),
            "resource.attributes" => Path::ResourceAttribute(keyed(self)?),
            "instrumentation_scope.attributes" => Path::ScopeAttribute(keyed(self)?),
            other => return Err(format!("path or function {other:?} is not supported")),
        };
        Ok(Operand::Path(path))
    }
}

#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Nil,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Bytes, arrays and maps: only ever unequal to the literals above.
    Other,
}

fn value_of(v: Option<AnyValueRef<'_>>) -> Value<'_> {
    match v {
        None => Value::Nil,
        Some(AnyValueRef::String(s)) => Value::Str(s),
        Some(AnyValueRef::Int(n)) => Value::Int(n),
        Some(AnyValueRef::Double(f)) => Value::Float(f),
        Some(AnyValueRef::Bool(b)) => Value::Bool(b),
        Some(_) => Value::Other,
    }
}

fn resolve<'a>(operand: &'a Operand, batch: &'a SpanBatch, span: usize) -> Value<'a> {
    match operand {
        Operand::Str(s) => Value::Str(s),
        Operand::Int(n) => Value::Int(*n),
        Operand::Float(f) => Value::Float(*f),
        Operand::Bool(b) => Value::Bool(*b),
        Operand::Nil => Value::Nil,
        Operand::Path(path) => {
            let info = &batch.spans()[span];
            match path {
                Path::Name => Value::Str(batch.span_name(span)),
                Path::Kind => Value::Int(i64::from(info.kind)),
                Path::StatusCode => Value::Int(info.status as i64),
                Path::TraceState => Value::Str(batch.span_trace_state(span)),
                Path::StartTime => Value::Int(info.start_time_unix_nano as i64),
                Path::EndTime => Value::Int(info.end_time_unix_nano as i64),
                Path::SpanAttribute(k) => value_of(batch.span_attribute(span, k)),
                Path::ResourceAttribute(k) => value_of(batch.resource_attribute(span, k)),
                Path::ScopeAttribute(k) => value_of(batch.scope_attribute(span, k)),
            }
        }
    }
}

fn compare(a: Value<'_>, op: CmpOp, b: Value<'_>) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (a, b) {
        (Value::Nil, Value::Nil) => Some(Ordering::Equal),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(&y),
        (Value::Int(x), Value::Float(y)) => (x as f64).partial_cmp(&y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(y as f64)),
        (Value::Bool(x), Value::Bool(y)) => {
            // Booleans only have equality.
            return match op {
                CmpOp::Eq => x == y,
                CmpOp::Ne => x != y,
                _ => false,
            };
        }
        (Value::Nil, _) | (_, Value::Nil) => {
            return op == CmpOp::Ne;
        }
        _ => None,
    };
    match (ordering, a, b) {
        (Some(o), Value::Nil, Value::Nil) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            _ => false,
        },
        (Some(o), _, _) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        },
        // Different types (or NaN): never equal, never ordered.
        (None, _, _) => op == CmpOp::Ne,
    }
}

fn eval(expr: &Expr, batch: &SpanBatch, span: usize) -> bool {
    match expr {
        Expr::Or(terms) => terms.iter().any(|t| eval(t, batch, span)),
        Expr::And(terms) => terms.iter().all(|t| eval(t, batch, span)),
        Expr::Not(inner) => !eval(inner, batch, span),
        Expr::Literal(b) => *b,
        Expr::Compare(a, op, b) => compare(resolve(a, batch, span), *op, resolve(b, batch, span)),
        Expr::IsMatch(target, re) => match resolve(target, batch, span) {
            Value::Str(s) => re.is_match(s),
            Value::Int(n) => re.is_match(&n.to_string()),
            Value::Float(f) => re.is_match(&f.to_string()),
            Value::Bool(b) => re.is_match(if b { "true" } else { "false" }),
            Value::Nil | Value::Other => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_does_not_parse() {
        for text in [
            "attributes[\"a\"][\"b\"] == 1",
            "Len(name) > 3",
            "events[0].name == \"x\"",
            "name == ",
            "name",
            "attributes[\"a\"] == \"x\" xor true",
            "\"unterminated",
        ] {
            assert!(
                OttlCondition::parse(text).is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn parses_the_subset() {
        for text in [
            "attributes[\"test_attr_key_1\"] == \"test_attr_val_1\"",
            "span.attributes[\"x\"] != nil and not (kind == SPAN_KIND_SERVER or status.code == STATUS_CODE_ERROR)",
            "resource.attributes[\"service.name\"] == \"api\"",
            "IsMatch(name, \"^GET /health\")",
            "end_time_unix_nano - start_time_unix_nano > 1" ,
        ]
        .iter()
        .take(4)
        {
            assert!(OttlCondition::parse(text).is_ok(), "{text} should parse");
        }
        // Arithmetic is outside the subset.
        assert!(OttlCondition::parse("end_time_unix_nano - start_time_unix_nano > 1").is_err());
    }

    #[test]
    fn compares_like_ottl() {
        assert!(compare(Value::Nil, CmpOp::Eq, Value::Nil));
        assert!(!compare(Value::Nil, CmpOp::Eq, Value::Str("")));
        assert!(compare(Value::Nil, CmpOp::Ne, Value::Int(0)));
        assert!(compare(Value::Int(2), CmpOp::Lt, Value::Float(2.5)));
        assert!(compare(Value::Str("a"), CmpOp::Lt, Value::Str("b")));
        assert!(!compare(Value::Bool(true), CmpOp::Gt, Value::Bool(false)));
        assert!(!compare(Value::Str("1"), CmpOp::Eq, Value::Int(1)));
        assert!(compare(Value::Str("1"), CmpOp::Ne, Value::Int(1)));
        assert!(!compare(Value::Str("1"), CmpOp::Lt, Value::Int(2)));
    }
}
