//! Jaeger thrift over arbitrary bytes, through all three entry points (UDP
//! compact, UDP binary, HTTP binary body): never panics; the direct path
//! refuses what the owned reference refuses and writes the same batch for
//! the rest; what decodes re-encodes to bytes that decode to the same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracegate_model::thrift;
use tracegate_model::SpanBatch;

fuzz_target!(|data: &[u8]| {
    let paths: [(fn(&[u8]) -> _, fn(&thrift::Batch) -> Vec<u8>, fn(&[u8]) -> _); 3] = [
        (
            thrift::decode_agent_compact,
            thrift::encode_agent_compact,
            thrift::agent_compact_to_span_batch,
        ),
        (
            thrift::decode_agent_binary,
            thrift::encode_agent_binary,
            thrift::agent_binary_to_span_batch,
        ),
        (
            thrift::decode_batch_binary,
            thrift::encode_batch_binary,
            thrift::batch_binary_to_span_batch,
        ),
    ];
    for (decode, encode, direct) in paths {
        let direct = direct(data);
        let Ok(batch) = decode(data) else {
            assert!(direct.is_err(), "the direct path took what the reference refused");
            continue;
        };
        let request = thrift::batch_to_request(&batch);
        let reference = SpanBatch::from_request(&request);
        let direct = direct.expect("the direct path refused what the reference took");
        assert_eq!(direct.bytes(), reference.bytes());
        let again = decode(&encode(&batch)).expect("our own encoding decodes");
        // Debug, not ==: a NaN double tag is equal to itself only there.
        assert_eq!(format!("{again:?}"), format!("{batch:?}"));
    }
});
