//! Protobuf wire-format primitives: varints, tags, length-delimited fields.
