use super::*;
use std::collections::{HashMap, HashSet};
use tracegate_model::{AnyValueRef, SpanBatch, StatusCode};

fn shape() -> Shape {
    Shape {
        spans_per_trace: 10,
        max_spans_per_trace: 10,
        traces_per_round: 20,
        parts: 3,
        services: 10,
        attributes: 8,
        normal_duration_ns: 100_000_000,
        slow_duration_ns: 2_000_000_000,
    }
}

const MIX: Mix = Mix {
    error_share: 0.2,
    slow_share: 0.3,
    seed: 7,
};

const ALL: [Encoding; 6] = [
    Encoding::Grpc,
    Encoding::Proto,
    Encoding::Json,
    Encoding::Jaeger,
    Encoding::ThriftBinary,
    Encoding::ThriftCompact,
];

/// A request as tracegate reads it; Jaeger through the model's mapping,
/// as tracegate's Jaeger receivers do (thrift through both paths, which
/// must agree).
fn decode(encoding: Encoding, buf: &[u8]) -> SpanBatch {
    let framed = || {
        assert_eq!(&buf[1..5], &((buf.len() - 5) as u32).to_be_bytes());
        &buf[5..]
    };
    match encoding {
        Encoding::Grpc => SpanBatch::scan(bytes::Bytes::copy_from_slice(framed())).unwrap(),
        Encoding::Proto => SpanBatch::scan(bytes::Bytes::copy_from_slice(buf)).unwrap(),
        Encoding::Json => SpanBatch::from_json(buf).unwrap(),
        Encoding::Jaeger => {
            let request =
                tracegate_model::jaeger::proto::PostSpansRequest::decode(framed()).unwrap();
            tracegate_model::jaeger::span_batch_from_batches(request.batch).unwrap()
        }
        Encoding::ThriftBinary => {
            use tracegate_model::thrift;
            let direct = thrift::batch_binary_to_span_batch(buf).unwrap();
            let owned = thrift::batch_binary_to_request(buf).unwrap();
            assert_eq!(direct.to_request(), owned);
            direct
        }
        Encoding::ThriftCompact => {
            use tracegate_model::thrift;
            let direct = thrift::agent_compact_to_span_batch(buf).unwrap();
            let owned = thrift::agent_compact_to_request(buf).unwrap();
            assert_eq!(direct.to_request(), owned);
            direct
        }
    }
}

/// Every request of a round, decoded.
fn round_batches(t: &Template, round: u64) -> Vec<SpanBatch> {
    let mut buf = Vec::new();
    (0..t.parts.len())
        .map(|p| {
            t.write_request(round, p, &mut buf);
            decode(t.encoding, &buf)
        })
        .collect()
}

fn status_code(batch: &SpanBatch, i: usize) -> Option<i64> {
    match batch.span_attribute(i, "http.response.status_code") {
        Some(AnyValueRef::Int(c)) => Some(c),
        _ => None,
    }
}

/// Every span of a round, by trace: (root duration, has an error span,
/// spans). Checks that HTTP status codes are 5xx on error spans only.
fn decode_round(t: &Template, round: u64) -> HashMap<[u8; 16], (u64, bool, usize)> {
    let mut traces: HashMap<[u8; 16], (u64, bool, usize)> = HashMap::new();
    for batch in round_batches(t, round) {
        for (i, s) in batch.spans().iter().enumerate() {
            let e = traces.entry(s.trace_id).or_default();
            e.2 += 1;
            let error = s.status == StatusCode::Error;
            e.1 |= error;
            assert_ne!(s.status, StatusCode::Ok);
            if let Some(code) = status_code(&batch, i) {
                assert_eq!(code >= 500, error, "{:?}: {code}", t.encoding);
            }
            if s.is_root() {
                e.0 = s.end_time_unix_nano - s.start_time_unix_nano;
            }
        }
    }
    traces
}

#[test]
fn rounds_carry_their_ids_and_classes_in_every_encoding() {
    for encoding in ALL {
        let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
        let parts = if encoding.is_jaeger() { 10 } else { 3 };
        assert_eq!(t.parts.len(), parts);
        assert_eq!(t.parts.iter().map(|p| p.spans).sum::<usize>(), 200);
        let mut seen_classes = HashMap::new();
        let mut roots = HashSet::new();
        let rounds = [0, 1, 77].into_iter().chain(100..120);
        let variants: HashSet<usize> = rounds.clone().map(|r| t.variant(r)).collect();
        assert!(variants.len() > VARIANTS / 2, "{variants:?}");
        for round in rounds {
            let traces = decode_round(&t, round);
            assert_eq!(traces.len(), 20, "{encoding:?}");
            for (id, class, n) in t.round_traces(round) {
                let (root, error, spans) = traces[&id];
                assert_eq!((spans, n), (10, 10));
                assert_eq!(error, class == Class::Error, "{encoding:?}");
                let slow = (2_000_000_000..=3_000_000_000).contains(&root);
                assert_eq!(slow, class == Class::Slow, "{encoding:?}");
                assert!(slow || (50_000_000..=150_000_000).contains(&root));
                roots.insert(root);
                *seen_classes.entry(class).or_insert(0) += 1;
            }
        }
        assert_eq!(seen_classes.len(), 3, "all classes drawn: {seen_classes:?}");
        assert!(roots.len() > 60, "root durations vary: {}", roots.len());
    }
}

#[test]
fn a_buffer_reused_for_its_slot_is_the_fresh_request() {
    for encoding in ALL {
        let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
        let mut bufs: Vec<Option<BytesMut>> = vec![None; t.slots()];
        for round in 0..40 {
            for p in 0..t.parts.len() {
                let slot = t.slot(round, p);
                let reused = t.fill(round, p, bufs[slot].take());
                assert_eq!(reused, t.fill(round, p, None), "{encoding:?} {round} {p}");
                bufs[slot] = Some(reused);
            }
        }
    }
}

#[test]
fn root_spans_carry_a_user_id_and_a_path_id_that_change_per_trace() {
    for encoding in ALL {
        let t = Template::new(&shape(), MIX, encoding, 1_763_000_000_000_000_000);
        let mut users = HashSet::new();
        let mut paths = HashSet::new();
        for round in [0, 1] {
            for batch in round_batches(&t, round) {
                for (i, span) in batch.spans().iter().enumerate() {
                    let user = batch.span_attribute(i, "enduser.id");
                    let path = batch.span_attribute(i, "url.path");
                    if span.is_root() {
                        let user = user.and_then(|u| u.as_str()).unwrap().to_string();
                        assert!(user.starts_with("user-000") && user.len() == 13, "{user}");
                        users.insert(user);
                        let path = path.and_then(|u| u.as_str()).unwrap().to_string();
                        let id = path.rsplit('/').find(|s| s.len() == 8).unwrap();
                        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{path}");
                        paths.insert(path);
                    } else {
                        assert!(user.is_none());
                    }
                }
            }
        }
        assert!(
            users.len() > 35,
            "{encoding:?}: {} distinct of 40",
            users.len()
        );
        assert!(
            paths.len() > 35,
            "{encoding:?}: {} distinct of 40",
            paths.len()
        );
    }
}

/// Distinct values of some keys over a run exceed a bound, so a
/// compressor or a dictionary sees realistic variety.
#[test]
fn attribute_values_vary_as_in_real_traffic() {
    let shape = Shape {
        traces_per_round: 50,
        parts: 2,
        ..shape()
    };
    for encoding in [
        Encoding::Proto,
        Encoding::Jaeger,
        Encoding::ThriftBinary,
        Encoding::ThriftCompact,
    ] {
        let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
        let mut values: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut codes: HashMap<i64, usize> = HashMap::new();
        let mut names = HashSet::new();
        let mut durations = HashSet::new();
        for round in 0..24 {
            for batch in round_batches(&t, round) {
                for (i, span) in batch.spans().iter().enumerate() {
                    names.insert(batch.span_name(i).to_string());
                    durations.insert(span.end_time_unix_nano - span.start_time_unix_nano);
                    if let Some(c) = status_code(&batch, i) {
                        *codes.entry(c).or_default() += 1;
                    }
                    for key in [
                        "http.route",
                        "url.path",
                        "db.statement",
                        "user_agent.original",
                        "server.address",
                        "client.address",
                    ] {
                        if let Some(v) = batch.span_attribute(i, key).and_then(|v| v.as_str()) {
                            values.entry(key).or_default().insert(v.to_string());
                        }
                    }
                    let pod = batch.resource_attribute(i, "k8s.pod.name");
                    let pod = pod.and_then(|v| v.as_str()).unwrap().to_string();
                    values.entry("k8s.pod.name").or_default().insert(pod);
                }
            }
        }
        let distinct = |k| values.get(k).map_or(0, |v| v.len());
        assert!(distinct("http.route") >= 30, "{encoding:?}: {values:?}");
        // Every root's path has its trace's id: 1 200 roots.
        assert!(distinct("url.path") >= 1_200, "{encoding:?}");
        assert!(distinct("db.statement") >= 10, "{encoding:?}");
        assert_eq!(
            distinct("user_agent.original"),
            USER_AGENTS.len(),
            "{encoding:?}"
        );
        assert!(distinct("server.address") >= 10, "{encoding:?}");
        assert!(distinct("client.address") >= 200, "{encoding:?}");
        assert!(distinct("k8s.pod.name") >= 20, "{encoding:?}");
        assert!(
            names.len() >= 60,
            "{encoding:?}: {} span names",
            names.len()
        );
        assert!(durations.len() >= 500, "{encoding:?}");
        // Mostly 200, some 201/204/404, 5xx on error traces.
        let total: usize = codes.values().sum();
        assert!(codes[&200] * 10 > total * 6, "{codes:?}");
        for c in [201, 204, 404, 500, 503] {
            assert!(codes.get(&c).is_some_and(|&n| n > 0), "{c}: {codes:?}");
        }
    }
}

#[test]
fn spans_carry_the_attributes_asked_for() {
    for (attributes, encoding) in [(3, Encoding::Proto), (14, Encoding::Jaeger)] {
        let shape = Shape {
            attributes,
            ..shape()
        };
        let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
        for batch in round_batches(&t, 0) {
            for (i, span) in batch.spans().iter().enumerate() {
                let n = batch.span_attributes(i).count();
                // Roots add enduser.id; the Jaeger mapping's own tags
                // (span kind, status, scope) map back to fields.
                assert_eq!(n, attributes + span.is_root() as usize, "{encoding:?}");
            }
        }
    }
}

#[test]
fn links_point_at_other_traces_of_the_same_round() {
    let t = Template::new(&shape(), MIX, Encoding::Proto, 1_763_000_000_000_000_000);
    let round: HashSet<[u8; 16]> = t.round_traces(5).map(|(id, _, _)| id).collect();
    let mut links = 0;
    let mut buf = Vec::new();
    for p in 0..t.parts.len() {
        t.write_request(5, p, &mut buf);
        let request = ExportTraceServiceRequest::decode(buf.as_slice()).unwrap();
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            for link in &span.links {
                assert!(round.contains(&link.trace_id[..]), "link to the round");
                assert_ne!(link.trace_id, span.trace_id);
                links += 1;
            }
        }
    }
    // Spans 4 and 9 of each of 20 traces.
    assert_eq!(links, 40);
}

#[test]
fn jaeger_requests_carry_one_process_and_error_tags_only_on_error_spans() {
    let t = Template::new(&shape(), MIX, Encoding::Jaeger, 1_763_000_000_000_000_000);
    let classes: HashMap<[u8; 16], Class> = t
        .round_traces(3)
        .map(|(id, class, _)| (id, class))
        .collect();
    let mut buf = Vec::new();
    let mut error_spans = 0;
    for p in 0..t.parts.len() {
        t.write_request(3, p, &mut buf);
        let request = tracegate_model::jaeger::proto::PostSpansRequest::decode(&buf[5..]).unwrap();
        let batch = request.batch.unwrap();
        assert!(!batch.process.unwrap().service_name.is_empty());
        for span in &batch.spans {
            let class = classes[&span.trace_id[..]];
            let error = span.tags.iter().any(|t| t.key == "error" && t.v_bool);
            error_spans += error as usize;
            if error {
                assert_eq!(class, Class::Error);
            }
            // References carry the parent's and the linked trace's ids.
            for r in &span.references {
                assert!(classes.contains_key(&r.trace_id[..]));
            }
        }
    }
    let errors = classes.values().filter(|&&c| c == Class::Error).count();
    assert_eq!(error_spans, errors);
}

#[test]
fn span_counts_vary_per_trace_within_the_range() {
    for encoding in [
        Encoding::Grpc,
        Encoding::Json,
        Encoding::Jaeger,
        Encoding::ThriftCompact,
    ] {
        let shape = Shape {
            spans_per_trace: 1,
            max_spans_per_trace: 20,
            parts: 4,
            ..shape()
        };
        let t = Template::new(&shape, MIX, encoding, 1_763_000_000_000_000_000);
        let counts: HashSet<usize> = t.trace_spans.iter().copied().collect();
        assert!(counts.len() > 5, "{counts:?}");
        assert!(counts.iter().all(|n| (1..=20).contains(n)));
        assert_eq!(
            t.parts.iter().map(|p| p.spans).sum::<usize>(),
            t.spans_per_round()
        );
        for round in [3, 4, 5] {
            let traces = decode_round(&t, round);
            for (id, class, n) in t.round_traces(round) {
                let (root, error, spans) = traces[&id];
                assert_eq!(spans, n);
                assert_eq!(error, class == Class::Error);
                assert_eq!(root >= 2_000_000_000, class == Class::Slow);
            }
        }
    }
}

#[test]
fn rounds_have_distinct_ids_and_shares_follow_the_mix() {
    let n = 200_000u64;
    let mut counts = HashMap::new();
    for seq in 0..n {
        *counts.entry(MIX.class(seq)).or_insert(0u64) += 1;
    }
    let share = |c| counts[&c] as f64 / n as f64;
    assert!((share(Class::Error) - 0.2).abs() < 0.005);
    assert!((share(Class::Slow) - 0.3).abs() < 0.005);
    let ids: HashSet<_> = (0..n).map(|s| MIX.trace_id(s)).collect();
    assert_eq!(ids.len(), n as usize);
}

/// A jaeger-client's UDP sender fits a batch into one packet of at most
/// 65 000 bytes (the agent's and tracegate's default `max_packet_size`):
/// the default load's compact requests must fit too, in every class.
#[test]
fn compact_thrift_requests_fit_a_udp_packet() {
    let shape = Shape {
        traces_per_round: 100,
        ..shape()
    };
    let mix = Mix {
        error_share: 0.5,
        slow_share: 0.5,
        seed: 3,
    };
    let t = Template::new(
        &shape,
        mix,
        Encoding::ThriftCompact,
        1_763_000_000_000_000_000,
    );
    let mut buf = Vec::new();
    for round in 0..20 {
        for p in 0..t.parts.len() {
            t.write_request(round, p, &mut buf);
            assert!(buf.len() <= 65_000, "{} bytes", buf.len());
        }
    }
}
