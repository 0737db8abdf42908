//! Jaeger thrift over arbitrary bytes, through all three entry points (UDP
//! compact, UDP binary, HTTP binary body): never panics; what decodes
//! converts to OTLP and a batch, and re-encodes to bytes that decode to the
//! same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracegate_model::thrift;
use tracegate_model::SpanBatch;

fuzz_target!(|data: &[u8]| {
    let decoders: [(fn(&[u8]) -> _, fn(&thrift::Batch) -> Vec<u8>); 3] = [
        (thrift::decode_agent_compact, thrift::encode_agent_compact),
        (thrift::decode_agent_binary, thrift::encode_agent_binary),
        (thrift::decode_batch_binary, thrift::encode_batch_binary),
    ];
    for (decode, encode) in decoders {
        let Ok(batch) = decode(data) else { continue };
        let request = thrift::batch_to_request(&batch);
        let _ = SpanBatch::from_request(&request);
        let again = decode(&encode(&batch)).expect("our own encoding decodes");
        // Debug, not ==: a NaN double tag is equal to itself only there.
        assert_eq!(format!("{again:?}"), format!("{batch:?}"));
    }
});
