//! Counting the root spans the `adaptive` source calculates from: a
//! [`RootCounter`] per extension, fed by [`CountRoots`], which the binary
//! puts in front of every receiver's consumer only when an `adaptive`
//! source runs (without one, nothing is wrapped and nothing is counted).
//!
//! A batch is scanned once for root spans in its index (no decoding);
//! for each root, its service, name, and what it says of the probability
//! it was sampled at (`sampler.type`/`sampler.param` attributes, the
//! tracestate's `ot=th:`) are read and tallied under one lock per batch.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tracegate_model::trace_state::TraceState;
use tracegate_model::{AnyValueRef, SpanBatch};

use super::adaptive::{Tallies, Tally, MAX_OPERATIONS};
use crate::consumer::{ConsumeError, Consumer, NextConsumer};

/// What a root span says of how it was sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampled {
    /// Nothing: at the probability served.
    AtServed,
    /// At this probability (`sampler.param`, `ot=th:`).
    At(f64),
    /// Not by probability (`sampler.type` `lowerbound`, `ratelimiting`,
    /// `const`, with a numeric `sampler.param`): the operation is seen,
    /// the root not counted as sampled, as Jaeger does.
    NotCounted,
    /// With a `sampler.type` Jaeger does not recognize (or not a string),
    /// or without a numeric `sampler.param`: not looked at, as Jaeger does.
    Ignored,
}

/// How root span `span` of `batch` was sampled.
pub fn sampled(batch: &SpanBatch, span: usize) -> Sampled {
    let info = &batch.spans()[span];
    if info.may_have_attribute("sampler.type") {
        if let Some(kind) = batch.span_attribute(span, "sampler.type") {
            let AnyValueRef::String(kind) = kind else {
                return Sampled::Ignored;
            };
            let probabilistic = match kind {
                "probabilistic" => true,
                "lowerbound" | "ratelimiting" | "const" => false,
                _ => return Sampled::Ignored,
            };
            // Jaeger skips a root of any type without a numeric param.
            let Some(param) = batch.span_attribute(span, "sampler.param").and_then(number) else {
                return Sampled::Ignored;
            };
            return match (probabilistic, param) {
                (false, _) => Sampled::NotCounted,
                (true, p) if p > 0.0 && p <= 1.0 => Sampled::At(p),
                // Jaeger counts a probabilistic root as sampled whatever
                // the number; weighing it 1/p would be meaningless, so it
                // counts as one sampled at the probability served (which
                // is Jaeger's count).
                (true, _) => Sampled::AtServed,
            };
        }
    }
    let trace_state = batch.span_trace_state(span);
    if trace_state.contains("th:") {
        if let Ok(state) = TraceState::parse(trace_state) {
            if let Some(threshold) = state.ot.threshold {
                let p = threshold.probability();
                if p > 0.0 {
                    return Sampled::At(p);
                }
            }
        }
    }
    Sampled::AtServed
}

/// `sampler.param` as a number, as Jaeger reads it: a double or an
/// integer as it is, anything else as its text parsed the way Go's
/// `strconv.ParseFloat` does (no surrounding spaces; out of range is not a
/// number; Go's hexadecimal floats are not read). Bytes read as their
/// hex text, as Jaeger's tag of them does; booleans and lists never parse.
fn number(value: AnyValueRef<'_>) -> Option<f64> {
    let text = match value {
        AnyValueRef::Double(d) => return Some(d),
        AnyValueRef::Int(i) => return Some(i as f64),
        AnyValueRef::String(s) => std::borrow::Cow::Borrowed(s),
        AnyValueRef::Bytes(b) => {
            std::borrow::Cow::Owned(b.iter().map(|byte| format!("{byte:02x}")).collect())
        }
        AnyValueRef::Bool(_) | AnyValueRef::Array(_) | AnyValueRef::KvList(_) => return None,
    };
    let parsed: f64 = text.parse().ok()?;
    if parsed.is_nan() && text.starts_with(['+', '-']) {
        return None; // Go's "nan" takes no sign
    }
    if parsed.is_infinite() {
        // Go parses "inf" and "infinity" (any case, signed) to infinity,
        // and refuses a finite number too large for a double.
        let word = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
        if word != "inf" && word != "infinity" {
            return None;
        }
    }
    Some(parsed)
}

/// One extension's tallies of the current interval.
#[derive(Debug, Default)]
pub struct RootCounter {
    tallies: Mutex<Counted>,
}

#[derive(Debug, Default)]
struct Counted {
    tallies: Tallies,
    operations: usize,
    /// Roots of operations beyond [`MAX_OPERATIONS`], not counted.
    overflow: u64,
}

impl RootCounter {
    pub fn new() -> RootCounter {
        RootCounter::default()
    }

    /// Tallies the root spans of `batch`.
    pub fn count(&self, batch: &SpanBatch) {
        let spans = batch.spans();
        let Some(first) = spans.iter().position(|s| s.is_root()) else {
            return;
        };
        let mut counted = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let mut service_of: Option<(usize, &str)> = None;
        for (i, span) in spans.iter().enumerate().skip(first) {
            if !span.is_root() {
                continue;
            }
            let resource = batch.resource_index(i);
            let service = match service_of {
                Some((r, name)) if r == resource => name,
                _ => {
                    let name = batch.service_name(i).unwrap_or("");
                    service_of = Some((resource, name));
                    name
                }
            };
            let operation = batch.span_name(i);
            // Jaeger skips roots without a service or an operation name.
            if service.is_empty() || operation.is_empty() {
                continue;
            }
            let how = sampled(batch, i);
            if how == Sampled::Ignored {
                continue;
            }
            counted.record(service, operation, how);
        }
    }

    /// The tallies since the last call, and how many roots were not
    /// counted for the cap on operations; starts a new interval.
    pub fn take(&self) -> (Tallies, u64) {
        let mut counted = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *counted);
        (taken.tallies, taken.overflow)
    }
}

impl Counted {
    fn record(&mut self, service: &str, operation: &str, how: Sampled) {
        let tally = match self
            .tallies
            .get_mut(service)
            .and_then(|ops| ops.get_mut(operation))
        {
            Some(tally) => tally,
            None => {
                if self.operations >= MAX_OPERATIONS {
                    self.overflow += 1;
                    return;
                }
                self.operations += 1;
                self.tallies
                    .entry(service.to_string())
                    .or_default()
                    .entry(operation.to_string())
                    .or_default()
            }
        };
        add(tally, how);
    }
}

fn add(tally: &mut Tally, how: Sampled) {
    match how {
        Sampled::AtServed => tally.at_served += 1,
        Sampled::At(p) => {
            tally.explicit += 1;
            tally.explicit_offered += 1.0 / p;
        }
        Sampled::NotCounted | Sampled::Ignored => {}
    }
}

/// A receiver's consumer that tallies root spans for the `adaptive`
/// sources before passing the batch on, unchanged.
pub struct CountRoots {
    counters: Arc<[Arc<RootCounter>]>,
    next: NextConsumer,
}

impl CountRoots {
    pub fn new(counters: Arc<[Arc<RootCounter>]>, next: NextConsumer) -> CountRoots {
        CountRoots { counters, next }
    }
}

#[async_trait]
impl Consumer for CountRoots {
    async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
        for counter in self.counters.iter() {
            counter.count(&batch);
        }
        self.next.consume(batch).await
    }
}

#[cfg(test)]
mod tests {
    use tracegate_model::otlp::{
        any_value, AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans,
        ScopeSpans, Span,
    };

    use super::*;

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// A span named `name`, a root unless `child`, with `attributes` and
    /// `trace_state`.
    fn span(n: u8, name: &str, child: bool, attributes: Vec<KeyValue>, trace_state: &str) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n, 0, 0, 0, 0, 0, 0, 1],
            parent_span_id: if child { vec![9; 8] } else { vec![] },
            name: name.into(),
            attributes,
            trace_state: trace_state.into(),
            ..Default::default()
        }
    }

    fn batch(resources: Vec<(Option<&str>, Vec<Span>)>) -> SpanBatch {
        let resource_spans = resources
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: service
                        .map(|s| attribute("service.name", any_value::Value::StringValue(s.into())))
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        SpanBatch::from_request(&ExportTraceServiceRequest { resource_spans })
    }

    fn sampler(kind: &str, param: any_value::Value) -> Vec<KeyValue> {
        vec![
            attribute("sampler.type", any_value::Value::StringValue(kind.into())),
            attribute("sampler.param", param),
        ]
    }

    /// Only root spans with a service and a name count; each says how it
    /// was sampled as Jaeger's clients or OTEP 235 write it, or is taken
    /// as sampled at the probability served.
    #[test]
    fn roots_are_tallied_by_how_they_were_sampled() {
        use any_value::Value::{DoubleValue, IntValue, StringValue};
        let counter = RootCounter::new();
        counter.count(&batch(vec![
            (
                Some("svc"),
                vec![
                    span(1, "op", false, vec![], ""),
                    span(2, "op", true, vec![], ""),
                    span(
                        3,
                        "op",
                        false,
                        sampler("probabilistic", DoubleValue(0.25)),
                        "",
                    ),
                    span(
                        4,
                        "op",
                        false,
                        sampler("probabilistic", StringValue("0.5".into())),
                        "",
                    ),
                    span(5, "op", false, vec![], "ot=th:c"),
                    span(6, "op", false, vec![], "vendor=x,ot=rv:abcdefabcdefab;th:8"),
                    span(
                        7,
                        "other",
                        false,
                        sampler("lowerbound", DoubleValue(0.001)),
                        "",
                    ),
                    span(
                        8,
                        "op",
                        false,
                        sampler("probabilistic", DoubleValue(1.5)),
                        "",
                    ),
                    span(9, "op", false, sampler("const", IntValue(1)), ""),
                    span(10, "", false, vec![], ""),
                    span(11, "op", false, vec![], "ot=th:zz"),
                ],
            ),
            (None, vec![span(12, "op", false, vec![], "")]),
            (Some("two"), vec![span(13, "op", false, vec![], "")]),
        ]));
        let (tallies, uncounted) = counter.take();
        assert_eq!(uncounted, 0);
        let op = tallies["svc"]["op"];
        // Roots 1 and 11 (a bad threshold says nothing), and 8: Jaeger
        // counts a probabilistic root as sampled whatever its number.
        assert_eq!(op.at_served, 3);
        // 0.25, 0.5, th:c (0.25) and th:8 (0.5).
        assert_eq!(op.explicit, 4);
        assert_eq!(op.explicit_offered, 4.0 + 2.0 + 4.0 + 2.0);
        // Seen, not counted: the operation's probability will double.
        assert_eq!(tallies["svc"]["other"], Tally::default());
        assert_eq!(tallies["two"]["op"].at_served, 1);
        assert_eq!(tallies.len(), 2, "{tallies:?}");
        assert!(counter.take().0.is_empty(), "a new interval starts empty");
    }

    /// `sampler.type`/`sampler.param` read as Jaeger's aggregator reads
    /// them: a recognized type with a numeric param, or the root is
    /// skipped; `const`, `lowerbound` and `ratelimiting` roots mark the
    /// operation seen; a `probabilistic` one is sampled whatever its number.
    #[test]
    fn sampler_tags_are_read_as_jaegers_aggregator_reads_them() {
        use any_value::Value::{BoolValue, BytesValue, DoubleValue, IntValue, StringValue};
        let string = |s: &str| StringValue(s.into());
        let cases: Vec<(&str, Vec<KeyValue>)> = vec![
            // Seen, none sampled.
            ("const", sampler("const", IntValue(1))),
            ("lowerbound", sampler("lowerbound", DoubleValue(0.001))),
            ("ratelimiting", sampler("ratelimiting", string("2"))),
            // Sampled, whatever the number.
            ("zero", sampler("probabilistic", IntValue(0))),
            ("negative", sampler("probabilistic", DoubleValue(-1.0))),
            ("above-one", sampler("probabilistic", string("1.5"))),
            ("nan", sampler("probabilistic", string("NaN"))),
            ("infinite", sampler("probabilistic", string("-Inf"))),
            // Bytes are read as their hex text: [0x01] is "01".
            ("bytes", sampler("probabilistic", BytesValue(vec![1]))),
            // Skipped: no numeric param, or no recognized type.
            (
                "const-no-param",
                vec![attribute("sampler.type", string("const"))],
            ),
            (
                "lowerbound-no-param",
                vec![attribute("sampler.type", string("lowerbound"))],
            ),
            ("ratelimiting-text", sampler("ratelimiting", string("fast"))),
            ("bool", sampler("probabilistic", BoolValue(true))),
            ("spaces", sampler("probabilistic", string(" 0.5"))),
            ("too-large", sampler("probabilistic", string("1e400"))),
            ("signed-nan", sampler("probabilistic", string("+NaN"))),
            ("unrecognized", sampler("unrecognized", DoubleValue(0.5))),
            ("other-type", sampler("remote", DoubleValue(0.5))),
            (
                "type-not-text",
                vec![
                    attribute("sampler.type", IntValue(1)),
                    attribute("sampler.param", DoubleValue(0.5)),
                ],
            ),
        ];
        let spans = cases
            .iter()
            .enumerate()
            .map(|(i, (op, attributes))| span((i + 1) as u8, op, false, attributes.clone(), ""))
            .collect();
        let counter = RootCounter::new();
        counter.count(&batch(vec![(Some("svc"), spans)]));
        let tallies = counter.take().0.remove("svc").unwrap();
        for seen in ["const", "lowerbound", "ratelimiting"] {
            assert_eq!(tallies.get(seen), Some(&Tally::default()), "{seen}");
        }
        for sampled in ["zero", "negative", "above-one", "nan", "infinite"] {
            let tally = Tally {
                at_served: 1,
                ..Tally::default()
            };
            assert_eq!(tallies.get(sampled), Some(&tally), "{sampled}");
        }
        let at_one = Tally {
            explicit: 1,
            explicit_offered: 1.0,
            ..Tally::default()
        };
        assert_eq!(tallies.get("bytes"), Some(&at_one));
        let mut counted: Vec<&str> = tallies.keys().map(String::as_str).collect();
        counted.sort_unstable();
        assert_eq!(
            counted,
            [
                "above-one",
                "bytes",
                "const",
                "infinite",
                "lowerbound",
                "nan",
                "negative",
                "ratelimiting",
                "zero"
            ],
            "the others are skipped"
        );
    }

    /// The client names operations: beyond the cap, roots of new ones are
    /// not counted, and say so.
    #[test]
    fn operations_beyond_the_cap_are_not_counted() {
        let counter = RootCounter::new();
        let spans: Vec<Span> = (0..MAX_OPERATIONS + 5)
            .map(|i| span(1, &format!("op{i}"), false, vec![], ""))
            .collect();
        counter.count(&batch(vec![(Some("svc"), spans)]));
        let (tallies, uncounted) = counter.take();
        assert_eq!(tallies["svc"].len(), MAX_OPERATIONS);
        assert_eq!(uncounted, 5);
    }

    /// The consumer counts and passes the batch on unchanged.
    #[tokio::test]
    async fn the_consumer_counts_and_passes_on() {
        #[derive(Default)]
        struct Keep(Mutex<Vec<SpanBatch>>);
        #[async_trait]
        impl Consumer for Keep {
            async fn consume(&self, batch: SpanBatch) -> Result<(), ConsumeError> {
                self.0.lock().unwrap().push(batch);
                Ok(())
            }
        }
        let counter = Arc::new(RootCounter::new());
        let keep = Arc::new(Keep::default());
        let consumer = CountRoots::new(Arc::from(vec![counter.clone()]), keep.clone());
        let sent = batch(vec![(Some("svc"), vec![span(1, "op", false, vec![], "")])]);
        consumer.consume(sent.clone()).await.unwrap();
        assert_eq!(keep.0.lock().unwrap()[0].bytes(), sent.bytes());
        assert_eq!(counter.take().0["svc"]["op"].at_served, 1);
    }
}
