//! OTLP/JSON over arbitrary bytes: never panics; what parses converts to a
//! batch whose JSON parses back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracegate_model::SpanBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = SpanBatch::from_json(data) else {
        return;
    };
    let json = batch.to_json();
    // NaN and infinite doubles serialize as null (see json.rs), which moves
    // bytes, so compare what the index says about each span, not where.
    let again = SpanBatch::from_json(&json).expect("our own JSON parses");
    let facts = |b: &SpanBatch| {
        b.spans()
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.span = 0..0;
                s
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(facts(&again), facts(&batch));
});
