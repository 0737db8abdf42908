//! The scanner over arbitrary bytes: it never panics, and whatever it accepts
//! is an index no larger than the input allows over bytes prost decodes, whose
//! subsets rescan to the index the encoder built.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tracegate_model::otlp::ExportTraceServiceRequest;
use tracegate_model::SpanBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = SpanBatch::scan(Bytes::copy_from_slice(data)) else {
        return;
    };
    let items = batch.len() + batch.scopes().len() + batch.resources().len();
    assert!(
        items * 2 <= data.len(),
        "index larger than the input allows"
    );
    let decoded = ExportTraceServiceRequest::decode(data).expect("accepted what prost refuses");
    let decoded_spans: usize = decoded
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(decoded_spans, batch.len());
    for i in 0..batch.len() {
        let _ = batch.span_name(i);
        let _ = batch.service_name(i);
        for (_, value) in batch.span_attributes(i) {
            if let Some(v) = value {
                let _ = v.array_values().count();
                let _ = v.kvlist_entries().count();
            }
        }
    }
    // Subsets by index, by predicate and a full copy all rescan to the index
    // the encoder built.
    let odd: Vec<u32> = (0..batch.len() as u32).filter(|i| i % 2 == 1).collect();
    for subset in [
        batch.select(&odd),
        batch.filter(|s| s.span_id[0] % 2 == 0),
        batch.copied(),
    ] {
        let rescanned = SpanBatch::scan(subset.bytes().clone()).expect("subset rescans");
        assert_eq!(rescanned.spans(), subset.spans());
        assert_eq!(rescanned.scopes(), subset.scopes());
        assert_eq!(rescanned.resources(), subset.resources());
    }
    let joined = SpanBatch::concat(&batch.split(3));
    assert_eq!(joined.len(), batch.len());
});
