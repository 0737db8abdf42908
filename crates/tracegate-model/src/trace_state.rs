//! The W3C `tracestate` of a span and its OpenTelemetry `ot` entry, which
//! carries consistent-probability-sampling data (OTEP 235, the spec's
//! "TraceState: Probability Sampling"): the rejection threshold `th` and the
//! explicit randomness `rv`, both 56-bit. Parsing accepts what the
//! collector's `pkg/sampling` accepts; serializing writes the `ot` entry
//! first (W3C: an updated entry moves to the front) and keeps every other
//! sub-key and vendor entry as it was.
//!
//! Also here: re-encoding a subset of a batch whose kept spans get a new
//! tracestate, working on the encoded bytes (docs/architecture.md,
//! "Encoded-bytes batches" and "OTEP 235 randomness and thresholds").

use std::ops::Range;

use crate::batch::{AnyValueRef, SpanBatch, SpanInfo, TRACE_STATE_UNUSUAL};
use crate::encode::TraceStatePlace;
use crate::lookup::SPAN_TRACE_STATE;
use crate::wire::{len_key, put_varint, varint_len, Cursor, I32, I64, LEN, VARINT};

/// 2^56: thresholds and randomness values are 56-bit.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;

/// Hex digits of a full 56-bit value.
pub const NUM_HEX_DIGITS: usize = 14;

/// The collector's limits on an encoded tracestate and its `ot` value.
const MAX_W3C_LEN: usize = 1024;
const MAX_OT_LEN: usize = 256;
const MAX_MEMBERS: usize = 32;

/// Why a tracestate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    #[error("tracestate is longer than {MAX_W3C_LEN} bytes")]
    TooLong,
    #[error("tracestate has more than {MAX_MEMBERS} list members")]
    TooManyMembers,
    #[error("tracestate is not a valid W3C list: {0}")]
    Syntax(&'static str),
    #[error("the ot entry of the tracestate is invalid: {0}")]
    OtSyntax(&'static str),
    #[error("rv must be exactly 14 hex digits")]
    RValue,
    #[error("th must be 1 to 14 hex digits")]
    TValue,
}

/// A rejection threshold: of the 2^56 randomness values, those below it are
/// not sampled. `ALWAYS` (0) samples everything, `NEVER` (2^56) nothing.
/// A larger threshold is a smaller sampling probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    pub const ALWAYS: Threshold = Threshold(0);
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// `None` above 2^56.
    pub const fn from_unsigned(rejected: u64) -> Option<Threshold> {
        if rejected <= MAX_ADJUSTED_COUNT {
            Some(Threshold(rejected))
        } else {
            None
        }
    }

    /// How many of the 2^56 randomness values are rejected.
    pub const fn unsigned(self) -> u64 {
        self.0
    }

    /// Parses a `th` value: 1 to 14 hex digits, trailing zeros omitted.
    pub fn parse_tvalue(s: &str) -> Result<Threshold, TraceStateError> {
        if s.is_empty() || s.len() > NUM_HEX_DIGITS {
            return Err(TraceStateError::TValue);
        }
        let value = parse_hex(s).ok_or(TraceStateError::TValue)?;
        Ok(Threshold(value << (4 * (NUM_HEX_DIGITS - s.len()))))
    }

    /// Appends the `th` value: 14 hex digits with trailing zeros removed,
    /// `0` for [`Threshold::ALWAYS`]. `NEVER` has no encoding and appends
    /// nothing (returns false).
    pub fn write_tvalue(self, out: &mut String) -> bool {
        match self {
            Threshold::NEVER => false,
            Threshold::ALWAYS => {
                out.push('0');
                true
            }
            Threshold(t) => {
                let digits = NUM_HEX_DIGITS - (t.trailing_zeros() / 4) as usize;
                write_hex(out, t, digits);
                true
            }
        }
    }

    /// The `th` value as a string ("" for `NEVER`).
    pub fn tvalue(self) -> String {
        let mut s = String::new();
        self.write_tvalue(&mut s);
        s
    }

    /// The consistent decision: sampled when the threshold is at most the
    /// randomness.
    #[inline]
    pub fn should_sample(self, randomness: Randomness) -> bool {
        self.0 <= randomness.0
    }

    /// The sampling probability this threshold stands for.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }
}

/// 56 bits of randomness: the low 56 bits of a W3C random trace id, or an
/// explicit `rv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// The largest value, which every threshold but `NEVER` samples.
    pub const MAX: Randomness = Randomness(MAX_ADJUSTED_COUNT - 1);

    /// The low 56 bits (bytes 9 to 15, big-endian) of the trace id.
    #[inline]
    pub fn from_trace_id(trace_id: &[u8; 16]) -> Randomness {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        Randomness(u64::from_be_bytes(low) & (MAX_ADJUSTED_COUNT - 1))
    }

    /// `None` at or above 2^56.
    pub const fn from_unsigned(value: u64) -> Option<Randomness> {
        if value < MAX_ADJUSTED_COUNT {
            Some(Randomness(value))
        } else {
            None
        }
    }

    pub const fn unsigned(self) -> u64 {
        self.0
    }

    /// Parses an `rv` value: exactly 14 hex digits.
    pub fn parse_rvalue(s: &str) -> Result<Randomness, TraceStateError> {
        if s.len() != NUM_HEX_DIGITS {
            return Err(TraceStateError::RValue);
        }
        parse_hex(s).map(Randomness).ok_or(TraceStateError::RValue)
    }

    /// Appends the `rv` value: 14 lowercase hex digits.
    pub fn write_rvalue(self, out: &mut String) {
        write_hex(out, self.0, NUM_HEX_DIGITS);
    }
}

/// Appends the first `digits` of the 14 lowercase hex digits of a 56-bit
/// `value` (head sampling writes one for every span it keeps; the
/// formatter's machinery costs several times this).
fn write_hex(out: &mut String, value: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..digits.min(NUM_HEX_DIGITS) {
        let nibble = (value >> (4 * (NUM_HEX_DIGITS - 1 - i))) & 0xf;
        out.push(char::from(HEX[nibble as usize]));
    }
}

/// Hex digits (either case) to a number; the caller bounds the length.
fn parse_hex(s: &str) -> Option<u64> {
    let mut value = 0u64;
    for b in s.bytes() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        value = value << 4 | u64::from(digit);
    }
    Some(value)
}

/// The `ot` entry: `rv`, `th` and any other sub-keys, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelTraceState<'a> {
    pub randomness: Option<Randomness>,
    pub threshold: Option<Threshold>,
    /// Other `key:value` members, kept verbatim.
    pub extra: Vec<&'a str>,
    /// The arriving spellings of `rv` and `th`: an unchanged `rv` is
    /// written back as it came (upper case included), as the collector
    /// does; `th` until it is updated.
    rv_text: Option<&'a str>,
    th_text: Option<&'a str>,
}

impl<'a> OtelTraceState<'a> {
    /// Parses an `ot` value (`key:value;key:value`).
    pub fn parse(value: &'a str) -> Result<OtelTraceState<'a>, TraceStateError> {
        if value.len() > MAX_OT_LEN {
            return Err(TraceStateError::OtSyntax("longer than 256 bytes"));
        }
        if value.is_empty() {
            return Err(TraceStateError::OtSyntax("empty"));
        }
        let mut ot = OtelTraceState::default();
        for member in value.split(';') {
            let Some((key, val)) = member.split_once(':') else {
                return Err(TraceStateError::OtSyntax("a member without ':'"));
            };
            let key_ok = key.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !key_ok {
                return Err(TraceStateError::OtSyntax("invalid key"));
            }
            if !val
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(TraceStateError::OtSyntax("invalid value"));
            }
            match key {
                "rv" => {
                    ot.randomness = Some(Randomness::parse_rvalue(val)?);
                    ot.rv_text = Some(val);
                }
                "th" => {
                    ot.threshold = Some(Threshold::parse_tvalue(val)?);
                    ot.th_text = Some(val);
                }
                _ => ot.extra.push(member),
            }
        }
        Ok(ot)
    }

    pub fn is_empty(&self) -> bool {
        self.randomness.is_none() && self.threshold.is_none() && self.extra.is_empty()
    }

    /// Sets the threshold unless that would lower an existing one (a
    /// threshold only ever rises: lowering it would raise the adjusted
    /// counts of spans sampled at a smaller probability). Returns whether
    /// it was set. `NEVER` clears `th`, as it has no encoding.
    pub fn raise_threshold(&mut self, threshold: Threshold) -> bool {
        if self.threshold.is_some_and(|current| current > threshold) {
            return false;
        }
        self.threshold = (threshold != Threshold::NEVER).then_some(threshold);
        self.th_text = None;
        true
    }

    /// Appends `rv:…;th:…;extra…` (without the `ot=`).
    pub fn write(&self, out: &mut String) {
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(';');
            }
        };
        if let Some(rv) = self.randomness {
            sep(out);
            out.push_str("rv:");
            match self.rv_text {
                Some(text) if Randomness::parse_rvalue(text) == Ok(rv) => out.push_str(text),
                _ => rv.write_rvalue(out),
            }
        }
        if let Some(th) = self.threshold.filter(|&t| t != Threshold::NEVER) {
            sep(out);
            out.push_str("th:");
            match self.th_text {
                Some(text) if Threshold::parse_tvalue(text) == Ok(th) => out.push_str(text),
                _ => {
                    th.write_tvalue(out);
                }
            }
        }
        for member in &self.extra {
            sep(out);
            out.push_str(member);
        }
    }
}

/// A parsed W3C `tracestate`: the `ot` entry and the other list members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState<'a> {
    pub ot: OtelTraceState<'a>,
    /// Other `key=value` members in order, without surrounding whitespace.
    pub others: Vec<&'a str>,
}

impl<'a> TraceState<'a> {
    /// Parses a W3C tracestate header value; "" is a valid, empty one.
    pub fn parse(input: &'a str) -> Result<TraceState<'a>, TraceStateError> {
        if input.is_empty() {
            // Most spans: nothing to parse.
            return Ok(TraceState::default());
        }
        if input.len() > MAX_W3C_LEN {
            return Err(TraceStateError::TooLong);
        }
        let mut state = TraceState::default();
        let mut members = 0;
        let blank = |s: &str| s.bytes().all(|b| b == b' ' || b == b'\t');
        let pieces = input.split(',').count();
        for (n, raw) in input.split(',').enumerate() {
            // Whitespace is allowed around commas, not at either end of the
            // list (the collector's grammar), except as an all-blank member.
            if !blank(raw)
                && ((n == 0 && raw.starts_with([' ', '\t']))
                    || (n + 1 == pieces && raw.ends_with([' ', '\t'])))
            {
                return Err(TraceStateError::Syntax("whitespace at the end of the list"));
            }
            members += 1;
            if members > MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            let member = raw.trim_matches([' ', '\t']);
            if member.is_empty() {
                // The grammar allows empty members (OWS only).
                continue;
            }
            let Some((key, value)) = member.split_once('=') else {
                return Err(TraceStateError::Syntax("a member without '='"));
            };
            if !valid_w3c_key(key) {
                return Err(TraceStateError::Syntax("invalid key"));
            }
            if !valid_w3c_value(value) {
                return Err(TraceStateError::Syntax("invalid value"));
            }
            if key == "ot" {
                // A repeated `ot` replaces the earlier one, as in the collector.
                state.ot = OtelTraceState::parse(value)?;
            } else {
                state.others.push(member);
            }
        }
        Ok(state)
    }

    /// Appends the serialized tracestate: `ot=…` first when it has any
    /// value, then the other members in order, comma-separated.
    pub fn write(&self, out: &mut String) {
        let mut first = true;
        if !self.ot.is_empty() {
            out.push_str("ot=");
            self.ot.write(out);
            first = false;
        }
        for member in &self.others {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push_str(member);
        }
    }

    /// The serialized tracestate.
    pub fn to_string_value(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// W3C key: `lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`, or
/// `tenant@system` with the tenant starting with a lowercase letter or digit
/// (at most 241 chars) and the system with a letter (at most 14).
fn valid_w3c_key(key: &str) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    let b = key.as_bytes();
    match key.split_once('@') {
        None => !b.is_empty() && b.len() <= 256 && b[0].is_ascii_lowercase() && rest_ok(&b[1..]),
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && rest_ok(&t[1..])
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && rest_ok(&s[1..])
        }
    }
}

/// W3C value: 1 to 256 printable ASCII chars except ',' and '=', spaces
/// allowed but not last.
fn valid_w3c_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b[b.len() - 1] != b' '
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// `Span.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;

/// What a head sampler reads of a span besides its index: its tracestate
/// and at most one attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanSamplingFields<'a> {
    /// The span's W3C tracestate ("" when unset).
    pub trace_state: &'a str,
    /// The attribute asked for, as [`SpanBatch::span_attribute`] reads it.
    pub attribute: Option<AnyValueRef<'a>>,
}

impl SpanBatch {
    /// The span's tracestate and its attribute `attribute_key`, read in one
    /// pass over the span's fields: head sampling reads both for every
    /// span, most of which it drops, so this is its hot path. Attribute keys
    /// are compared without decoding values; the value is decoded only when
    /// the key is present.
    pub fn span_sampling_fields(
        &self,
        span: usize,
        attribute_key: Option<&str>,
    ) -> SpanSamplingFields<'_> {
        let Some(wanted) = attribute_key else {
            return SpanSamplingFields {
                trace_state: self.span_trace_state(span),
                attribute: None,
            };
        };
        let attribute_key = Some(wanted);
        let buf: &[u8] = &self.bytes;
        let body = &self.spans()[span].span;
        let body = body.start as usize..body.end as usize;
        let (trace_state, look_up) = match quick_walk(&buf[body.clone()], attribute_key) {
            Some((ts, look_up)) => (
                ts.map(|r| r.start + body.start..r.end + body.start),
                look_up,
            ),
            None => careful_walk(buf, body, attribute_key),
        };
        let trace_state = trace_state
            .and_then(|r| std::str::from_utf8(&buf[r]).ok())
            .unwrap_or("");
        let attribute = match attribute_key {
            Some(key) if look_up => self.span_attribute(span, key),
            _ => None,
        };
        SpanSamplingFields {
            trace_state,
            attribute,
        }
    }
}

/// The walk of [`SpanBatch::span_sampling_fields`] for the fields every
/// encoder writes (one- or two-byte tags, lengths below 2^21): a few
/// instructions per field. `None` on anything else (groups, long varints),
/// for [`careful_walk`] to redo. Returns the last tracestate's range in
/// `span` and whether the attribute may be present.
#[inline]
fn quick_walk(span: &[u8], attribute_key: Option<&str>) -> Option<(Option<Range<usize>>, bool)> {
    let mut trace_state = None;
    let mut look_up = false;
    let mut i = 0;
    while i < span.len() {
        let mut key = u32::from(span[i]);
        i += 1;
        if key >= 0x80 {
            let next = *span.get(i)?;
            if next >= 0x80 {
                return None;
            }
            key = (key & 0x7f) | u32::from(next) << 7;
            i += 1;
        }
        match (key & 7) as u8 {
            LEN => {
                let b0 = *span.get(i)?;
                let len = if b0 < 0x80 {
                    i += 1;
                    usize::from(b0)
                } else {
                    let b1 = *span.get(i + 1)?;
                    if b1 < 0x80 {
                        i += 2;
                        usize::from(b0 & 0x7f) | usize::from(b1) << 7
                    } else {
                        let b2 = *span.get(i + 2)?;
                        if b2 >= 0x80 {
                            return None;
                        }
                        i += 3;
                        usize::from(b0 & 0x7f) | usize::from(b1 & 0x7f) << 7 | usize::from(b2) << 14
                    }
                };
                let end = i.checked_add(len).filter(|&e| e <= span.len())?;
                match key >> 3 {
                    SPAN_TRACE_STATE => trace_state = Some(i..end),
                    SPAN_ATTRIBUTES if !look_up => {
                        if let Some(wanted) = attribute_key {
                            look_up = key_may_be(&span[i..end], wanted);
                        }
                    }
                    _ => {}
                }
                i = end;
            }
            VARINT => {
                // At most 10 bytes, the last without the continuation bit.
                let rest = span.get(i..)?;
                let n = rest.iter().take(10).position(|b| b & 0x80 == 0)?;
                i += n + 1;
            }
            I64 => i += 8,
            I32 => i += 4,
            _ => return None,
        }
    }
    (i == span.len()).then_some((trace_state, look_up))
}

/// The field walk for any valid encoding.
fn careful_walk(
    buf: &[u8],
    body: Range<usize>,
    attribute_key: Option<&str>,
) -> (Option<Range<usize>>, bool) {
    {
        let mut c = Cursor::new(buf, body);
        let mut trace_state = None;
        // The key is there (or a `KeyValue` is laid out unusually): read the
        // attribute the exact way once the walk is done.
        let mut look_up = false;
        while !c.at_end() {
            let Ok((field, wire_type)) = c.tag() else {
                break;
            };
            let ok = match wire_type {
                LEN => match c.len_delimited() {
                    Ok(r) => {
                        if field == SPAN_TRACE_STATE {
                            // Protobuf: the last occurrence wins.
                            trace_state = Some(r);
                        } else if field == SPAN_ATTRIBUTES && !look_up {
                            if let Some(key) = attribute_key {
                                look_up = key_may_be(&buf[r], key);
                            }
                        }
                        true
                    }
                    Err(_) => false,
                },
                VARINT => c.varint().is_ok(),
                I64 => c.fixed64().is_ok(),
                I32 => c.fixed32().is_ok(),
                _ => c.skip(field, wire_type, 3).is_ok(),
            };
            if !ok {
                // The scanner validated the span; should it not be, stop.
                break;
            }
        }
        (trace_state, look_up)
    }
}

/// Whether the encoded `KeyValue` may be named `key`: false only when it is
/// laid out as every encoder writes it (the key first, its length in one
/// byte) with another key.
fn key_may_be(key_value: &[u8], key: &str) -> bool {
    match key_value {
        [0x0a, len, rest @ ..] if *len < 0x80 => {
            rest.get(..usize::from(*len)) == Some(key.as_bytes())
        }
        _ => true,
    }
}

impl SpanBatch {
    /// The spans at `kept` (strictly ascending, in range), encoded as a new
    /// request, where each span named in `new_trace_states` (sorted by span
    /// index, each a kept span) carries that tracestate instead of its own.
    /// Only those spans are re-encoded; every other byte is copied.
    pub fn select_with_trace_states(
        &self,
        kept: &[u32],
        new_trace_states: &[(u32, &str)],
    ) -> SpanBatch {
        debug_assert!(kept.windows(2).all(|w| w[0] < w[1]));
        if new_trace_states.is_empty() {
            return self.select(kept);
        }
        // Each kept span's new tracestate, if any, by its position in
        // `kept`; the spans are rewritten as the subset is encoded.
        let mut replaced: Vec<Option<&str>> = vec![None; kept.len()];
        let mut edits = new_trace_states.iter().peekable();
        for (position, &original) in kept.iter().enumerate() {
            while edits.next_if(|(i, _)| *i < original).is_some() {}
            if let Some((_, trace_state)) = edits.next_if(|(i, _)| *i == original) {
                replaced[position] = Some(trace_state);
            }
        }
        crate::encode::encode_subset_replacing(self, kept, &replaced)
    }
}

/// The length of `span`'s body once [`rewrite_span`] gives it `trace_state`.
#[inline]
pub(crate) fn rewritten_len(src: &[u8], span: &SpanInfo, trace_state: &str) -> usize {
    let new_field = if trace_state.is_empty() {
        0
    } else {
        1 + varint_len(trace_state.len() as u64) + trace_state.len()
    };
    let old_fields = match span.trace_state_header {
        0 => 0,
        TRACE_STATE_UNUSUAL => trace_state_fields_len(src, span),
        header => usize::from(header) + span.trace_state_len as usize,
    };
    span.span.len() - old_fields + new_field
}

/// The bytes of every `trace_state` field of a span, by walking it.
#[cold]
fn trace_state_fields_len(src: &[u8], span: &SpanInfo) -> usize {
    let mut bytes = 0;
    let mut c = Cursor::new(src, span.span.start as usize..span.span.end as usize);
    while !c.at_end() {
        let at = c.pos;
        let Ok((field, wire_type)) = c.tag() else {
            break;
        };
        if c.skip(field, wire_type, 3).is_err() {
            break;
        }
        if field == SPAN_TRACE_STATE && wire_type == LEN {
            bytes += c.pos - at;
        }
    }
    bytes
}

/// Writes the body of `span` (in `src`) to `out` with its tracestate
/// replaced by `trace_state` (none when empty), and returns the new body's
/// tracestate place. From the index alone when it says where the fields
/// numbered 1 to 3 are, else by walking the span.
#[inline]
pub(crate) fn rewrite_span(
    src: &[u8],
    span: &SpanInfo,
    trace_state: &str,
    out: &mut Vec<u8>,
) -> TraceStatePlace {
    let start = out.len();
    let body = span.span.start as usize..span.span.end as usize;
    if span.trace_state_header == TRACE_STATE_UNUSUAL {
        return rewrite_span_by_walking(src, body, trace_state, out);
    }
    // Fields 1 to 3 come first: copy them without the old tracestate
    // field, write the new one, then copy every later field at once.
    let slot = body.start + span.trace_state_slot as usize;
    if span.trace_state_header == 0 {
        out.extend_from_slice(&src[body.start..slot]);
    } else {
        let value = body.start + span.trace_state_at as usize;
        out.extend_from_slice(&src[body.start..value - usize::from(span.trace_state_header)]);
        out.extend_from_slice(&src[value + span.trace_state_len as usize..slot]);
    }
    let low = out.len() - start;
    let mut place = TraceStatePlace {
        at: 0,
        len: 0,
        slot: low as u32,
        header: 0,
    };
    if !trace_state.is_empty() {
        out.push(len_key(SPAN_TRACE_STATE as u8));
        put_varint(out, trace_state.len() as u64);
        let at = out.len() - start;
        out.extend_from_slice(trace_state.as_bytes());
        place = TraceStatePlace {
            at: at as u32,
            len: trace_state.len() as u32,
            slot: (out.len() - start) as u32,
            header: (at - low) as u8,
        };
    }
    out.extend_from_slice(&src[slot..body.end]);
    place
}

/// [`rewrite_span`] for the rare span whose index cannot say where its
/// tracestate fields are.
#[cold]
fn rewrite_span_by_walking(
    src: &[u8],
    body: Range<usize>,
    trace_state: &str,
    out: &mut Vec<u8>,
) -> TraceStatePlace {
    let start = out.len();
    write_span_with_trace_state(src, body, trace_state, out);
    index_trace_state(&out[start..])
}

/// The tracestate place of a span body as the scanner indexes it (for the
/// rare spans rewritten by walking; see [`SpanInfo::trace_state_header`]).
fn index_trace_state(body: &[u8]) -> TraceStatePlace {
    let mut place = TraceStatePlace {
        at: 0,
        len: 0,
        slot: 0,
        header: 0,
    };
    let (mut low_end, mut low_run, mut trace_states) = (0, true, 0);
    let mut c = Cursor::new(body, 0..body.len());
    while !c.at_end() {
        let at = c.pos;
        let Ok((field, wire_type)) = c.tag() else {
            break;
        };
        if (1..=SPAN_TRACE_STATE).contains(&field) && wire_type == LEN {
            let Ok(r) = c.len_delimited() else { break };
            if field == SPAN_TRACE_STATE {
                (place.at, place.len) = if r.is_empty() {
                    (0, 0)
                } else {
                    (r.start as u32, r.len() as u32)
                };
                trace_states += if r.is_empty() { 2 } else { 1 };
                place.header = (r.start - at) as u8;
            }
            low_run &= at == low_end;
            low_end = c.pos;
        } else if c.skip(field, wire_type, 3).is_err() {
            break;
        }
    }
    place.slot = low_end as u32;
    if !low_run || trace_states > 1 {
        place.header = TRACE_STATE_UNUSUAL;
    }
    place
}

/// Writes the span body `src[body]` with its `trace_state` field replaced:
/// every occurrence dropped and one written where the field belongs in
/// field order (before the first field numbered above it), or none when
/// `trace_state` is empty (proto3 omits empty strings).
fn write_span_with_trace_state(
    src: &[u8],
    body: std::ops::Range<usize>,
    trace_state: &str,
    out: &mut Vec<u8>,
) {
    let mut written = trace_state.is_empty();
    let write_field = |out: &mut Vec<u8>| {
        out.push(len_key(SPAN_TRACE_STATE as u8));
        put_varint(out, trace_state.len() as u64);
        out.extend_from_slice(trace_state.as_bytes());
    };
    let mut c = Cursor::new(src, body.clone());
    while !c.at_end() {
        let at = c.pos;
        let Ok((field, wire_type)) = c.tag() else {
            // The scanner validated the span; should it not be, keep the rest.
            out.extend_from_slice(&src[at..body.end]);
            break;
        };
        if field > SPAN_TRACE_STATE && !written {
            write_field(out);
            written = true;
        }
        if c.skip(field, wire_type, 3).is_err() {
            out.extend_from_slice(&src[at..body.end]);
            break;
        }
        if !(field == SPAN_TRACE_STATE && wire_type == LEN) {
            out.extend_from_slice(&src[at..c.pos]);
        }
    }
    if !written {
        write_field(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn tvalues_drop_trailing_zeros() {
        let th = |t: u64| Threshold::from_unsigned(t).unwrap().tvalue();
        assert_eq!(th(0), "0");
        assert_eq!(th(0xc0000000000000), "c");
        assert_eq!(th(0x80000000000000), "8");
        assert_eq!(th(0xe6660000000000), "e666");
        assert_eq!(th(0x00000000000001), "00000000000001");
        assert_eq!(th(0x01000000000000), "01");
        assert_eq!(Threshold::NEVER.tvalue(), "");
    }

    #[test]
    fn tvalues_parse_back() {
        for s in [
            "0",
            "c",
            "8",
            "e666",
            "00000000000001",
            "01",
            "fffffffffffff",
        ] {
            assert_eq!(Threshold::parse_tvalue(s).unwrap().tvalue(), s);
        }
        assert_eq!(
            Threshold::parse_tvalue("C").unwrap(),
            Threshold::parse_tvalue("c").unwrap()
        );
        assert_eq!(Threshold::parse_tvalue("c").unwrap().unsigned(), 0xc << 52);
        for bad in ["", "g", "000000000000000", "-1", "0x1"] {
            assert!(Threshold::parse_tvalue(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rvalues_are_exactly_14_digits() {
        let r = Randomness::parse_rvalue("0123456789abcd").unwrap();
        assert_eq!(r.unsigned(), 0x0123456789abcd);
        let mut s = String::new();
        r.write_rvalue(&mut s);
        assert_eq!(s, "0123456789abcd");
        for bad in ["123", "0123456789abcde", "0123456789abcg"] {
            assert!(Randomness::parse_rvalue(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trace_id_randomness_is_the_low_56_bits() {
        let mut id = [0xffu8; 16];
        id[9..].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]);
        assert_eq!(
            Randomness::from_trace_id(&id).unsigned(),
            0x123456789abcde,
            "byte 8 is not part of it"
        );
    }

    #[test]
    fn decisions_compare_threshold_and_randomness() {
        let t = Threshold::parse_tvalue("8").unwrap();
        assert!(t.should_sample(Randomness::from_unsigned(0x80000000000000).unwrap()));
        assert!(!t.should_sample(Randomness::from_unsigned(0x7fffffffffffff).unwrap()));
        assert!(Threshold::ALWAYS.should_sample(Randomness::from_unsigned(0).unwrap()));
        assert!(!Threshold::NEVER.should_sample(Randomness::MAX));
        assert_eq!(t.probability(), 0.5);
    }

    #[test]
    fn parse_keeps_other_vendors_and_sub_keys() {
        let ts = TraceState::parse("vendor=a b, ot=th:c;rv:0000000000000f;x:y ,k@sys=v").unwrap();
        assert_eq!(ts.ot.threshold, Threshold::from_unsigned(0xc << 52));
        assert_eq!(ts.ot.randomness, Randomness::from_unsigned(15));
        assert_eq!(ts.ot.extra, vec!["x:y"]);
        assert_eq!(ts.others, vec!["vendor=a b", "k@sys=v"]);
        assert_eq!(
            ts.to_string_value(),
            "ot=rv:0000000000000f;th:c;x:y,vendor=a b,k@sys=v"
        );
    }

    #[test]
    fn empty_and_blank_members_are_valid() {
        assert_eq!(TraceState::parse("").unwrap(), TraceState::default());
        assert!(TraceState::parse("a=1, ").is_ok());
        let ts = TraceState::parse("a=1,,  ,b=2").unwrap();
        assert_eq!(ts.others, vec!["a=1", "b=2"]);
        assert_eq!(ts.to_string_value(), "a=1,b=2");
    }

    #[test]
    fn invalid_tracestates_are_refused() {
        for bad in [
            "A=1",
            "a=",
            "a=1=2",
            "a",
            "ot=",
            "ot=th",
            "ot=th:",
            "ot=th:xyz",
            "ot=rv:12",
            "ot=TH:1",
            "ot=th:1;",
            "ot=th:1;;rv:00000000000000",
            "a=b ",
            " a=b",
        ] {
            assert!(TraceState::parse(bad).is_err(), "{bad:?}");
        }
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            TraceState::parse(&many),
            Err(TraceStateError::TooManyMembers)
        );
        assert_eq!(
            TraceState::parse(&"a".repeat(1025)),
            Err(TraceStateError::TooLong)
        );
    }

    #[test]
    fn an_unchanged_rv_keeps_its_spelling_and_an_updated_th_is_recomputed() {
        let mut ts = TraceState::parse("ot=rv:FD70A3D70A3D71;th:80000000000000").unwrap();
        assert_eq!(
            ts.to_string_value(),
            "ot=rv:FD70A3D70A3D71;th:80000000000000"
        );
        assert!(ts.ot.raise_threshold(Threshold::parse_tvalue("8").unwrap()));
        assert_eq!(ts.to_string_value(), "ot=rv:FD70A3D70A3D71;th:8");
    }

    #[test]
    fn thresholds_only_rise() {
        let mut ot = OtelTraceState::default();
        let c = Threshold::parse_tvalue("c").unwrap();
        let e = Threshold::parse_tvalue("e").unwrap();
        assert!(ot.raise_threshold(c));
        assert!(!ot.raise_threshold(Threshold::parse_tvalue("8").unwrap()));
        assert_eq!(ot.threshold, Some(c));
        assert!(ot.raise_threshold(e));
        assert_eq!(ot.threshold, Some(e));
        assert!(ot.raise_threshold(e), "an equal threshold is no change");
    }

    fn request() -> crate::otlp::ExportTraceServiceRequest {
        use crate::otlp::*;
        let span = |n: u8, trace_state: &str| Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            trace_state: trace_state.into(),
            name: format!("span {n}"),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(i64::from(n))),
                }),
                ..Default::default()
            }],
            flags: 0x301,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![span(1, ""), span(2, "a=b"), span(3, "ot=th:8")],
                        schema_url: "s".into(),
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(4, "x=y")],
                        ..Default::default()
                    },
                ],
                schema_url: "r".into(),
            }],
        }
    }

    #[test]
    fn kept_spans_get_their_new_trace_state_and_nothing_else_changes() {
        let original = request();
        let batch = SpanBatch::from_request(&original);
        let out = batch.select_with_trace_states(&[0, 2, 3], &[(0, "ot=th:c"), (3, "")]);
        let decoded = out.to_request();
        let mut expected = original.clone();
        let scopes = &mut expected.resource_spans[0].scope_spans;
        scopes[0].spans.remove(1);
        scopes[0].spans[0].trace_state = "ot=th:c".into();
        scopes[1].spans[0].trace_state = String::new();
        assert_eq!(decoded, expected);
        // The index agrees with the bytes.
        assert_eq!(out.len(), 3);
        assert_eq!(out.span_trace_state(0), "ot=th:c");
        assert_eq!(out.span_trace_state(1), "ot=th:8");
        assert_eq!(out.span_name(2), "span 4");
        assert_eq!(out.spans()[2].trace_id, [4; 16]);
        let rescanned = SpanBatch::scan(out.bytes().clone()).unwrap();
        assert_eq!(rescanned.spans(), out.spans());
    }

    /// A request of one span with the given encoded body, nested by hand.
    fn request_of_span(body: &[u8]) -> Bytes {
        let frame = |key: u8, inner: &[u8]| {
            let mut out = vec![key];
            put_varint(&mut out, inner.len() as u64);
            out.extend_from_slice(inner);
            out
        };
        Bytes::from(frame(0x0a, &frame(0x12, &frame(0x12, body))))
    }

    #[test]
    fn the_index_holds_the_last_trace_state_and_a_rewrite_replaces_them_all() {
        let mut body = vec![0x0a, 16];
        body.extend_from_slice(&[7; 16]);
        body.extend_from_slice(b"\x1a\x03a=1\x2a\x01n\x1a\x03b=2");
        let batch = SpanBatch::scan(request_of_span(&body)).unwrap();
        assert_eq!(
            batch.span_trace_state(0),
            "b=2",
            "protobuf: the last one wins"
        );
        let out = batch.select_with_trace_states(&[0], &[(0, "ot=th:8")]);
        assert_eq!(out.span_trace_state(0), "ot=th:8");
        assert_eq!(
            out.to_request().resource_spans[0].scope_spans[0].spans[0].trace_state,
            "ot=th:8"
        );
        let rescanned = SpanBatch::scan(out.bytes().clone()).unwrap();
        assert_eq!(rescanned.spans(), out.spans());
        // Written in field order: right after the trace id.
        let span = &out.spans()[0];
        assert_eq!(span.trace_state_at, 2 + 16 + 2);

        // A last, empty occurrence clears it.
        body.extend_from_slice(b"\x1a\x00");
        let batch = SpanBatch::scan(request_of_span(&body)).unwrap();
        assert_eq!(batch.span_trace_state(0), "");
        assert_eq!(
            (
                batch.spans()[0].trace_state_at,
                batch.spans()[0].trace_state_len
            ),
            (0, 0)
        );
        // Rewritten to empty: every occurrence goes.
        let out = batch.select_with_trace_states(&[0], &[(0, "")]);
        assert_eq!(out.span_trace_state(0), "");
        assert_eq!(out.spans()[0].span.len(), 2 + 16 + 3);
        let rescanned = SpanBatch::scan(out.bytes().clone()).unwrap();
        assert_eq!(rescanned.spans(), out.spans());
    }

    #[test]
    fn sampling_fields_are_read_in_one_pass() {
        let mut original = request();
        let span = &mut original.resource_spans[0].scope_spans[0].spans[1];
        span.attributes.push(crate::otlp::KeyValue {
            key: "sampling.priority".into(),
            value: Some(crate::otlp::AnyValue {
                value: Some(crate::otlp::any_value::Value::IntValue(1)),
            }),
            ..Default::default()
        });
        let batch = SpanBatch::from_request(&original);
        for i in 0..batch.len() {
            let fields = batch.span_sampling_fields(i, Some("sampling.priority"));
            assert_eq!(fields.trace_state, batch.span_trace_state(i));
            assert_eq!(
                fields.attribute,
                batch.span_attribute(i, "sampling.priority")
            );
            assert_eq!(batch.span_sampling_fields(i, None).attribute, None);
        }
        assert_eq!(
            batch
                .span_sampling_fields(1, Some("sampling.priority"))
                .attribute,
            Some(AnyValueRef::Int(1))
        );
        assert_eq!(
            batch.span_sampling_fields(1, Some("k")).attribute,
            Some(AnyValueRef::Int(2))
        );
    }

    #[test]
    fn the_quick_walk_agrees_with_the_careful_one_or_declines() {
        let both = |span: &[u8]| {
            let careful = careful_walk(span, 0..span.len(), Some("k"));
            (quick_walk(span, Some("k")), careful)
        };
        // Two tracestates: the last wins; an attribute named "k" (field 9).
        let span = [
            0x1a, 1, b'a', 0x1a, 1, b'b', 0x4a, 3, 0x0a, 1, b'k', 0x38, 0x96, 0x01, 0x85, 0x01, 0,
            0, 0, 0,
        ];
        let (quick, careful) = both(&span);
        assert_eq!(quick, Some(careful.clone()));
        assert_eq!(careful, (Some(5..6), true));
        // A group (wire type 3): declined, the careful walk steps over it.
        let span = [0x1a, 1, b'a', 0x53, 0x54, 0x1a, 1, b'c'];
        let (quick, careful) = both(&span);
        assert_eq!(quick, None);
        assert_eq!(careful, (Some(7..8), false));
        // Truncated: declined, not a panic.
        for cut in 0..span.len() {
            let _ = quick_walk(&span[..cut], Some("k"));
        }
        assert_eq!(quick_walk(&[0x1a, 5, b'a'], None), None);
        assert_eq!(quick_walk(&[0x38], None), None);
    }

    /// Spans laid out every way an encoder might (tracestates missing,
    /// repeated, empty, long; fields out of order): a rewrite from the
    /// index writes the same bytes as walking the span, decodes to the new
    /// tracestate and nothing else changed, and leaves the index a rescan
    /// builds.
    #[test]
    fn rewriting_from_the_index_agrees_with_walking_the_span() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let frame = |key: u8, body: &[u8]| {
            let mut out = vec![key];
            put_varint(&mut out, body.len() as u64);
            out.extend_from_slice(body);
            out
        };
        let long = "v".repeat(200);
        let states = ["", "a=1", "ot=th:8;rv:0123456789abcd", long.as_str()];
        let mut rng = StdRng::seed_from_u64(235);
        let mut from_index = 0;
        for _ in 0..3000 {
            // (field number, encoded field)
            let mut fields: Vec<(u8, Vec<u8>)> = vec![
                (1, frame(0x0a, &[rng.random(); 16])),
                (2, frame(0x12, &[rng.random(); 8])),
                (4, frame(0x22, &[rng.random(); 8])),
                (5, frame(0x2a, b"name")),
                (6, vec![0x30, rng.random_range(0..6)]),
                (9, frame(0x4a, &frame(0x0a, b"k"))),
                (16, vec![0x85, 0x01, 1, 0, 0, 0]),
            ];
            for _ in 0..rng.random_range(0..=2) {
                let state = states[rng.random_range(0..states.len())];
                fields.push((3, frame(0x1a, state.as_bytes())));
            }
            fields.retain(|_| rng.random_bool(0.85));
            if rng.random_bool(0.8) {
                fields.sort_by_key(|(n, _)| *n);
            } else {
                for i in (1..fields.len()).rev() {
                    fields.swap(i, rng.random_range(0..=i));
                }
            }
            let body: Vec<u8> = fields.iter().flat_map(|(_, f)| f.clone()).collect();
            let batch = SpanBatch::scan(request_of_span(&body)).unwrap();
            let span = &batch.spans()[0];
            from_index += usize::from(span.trace_state_header != TRACE_STATE_UNUSUAL);
            let new_state = states[rng.random_range(0..states.len())];
            let out = batch.select_with_trace_states(&[0], &[(0, new_state)]);

            let mut walked = Vec::new();
            let range = span.span.start as usize..span.span.end as usize;
            write_span_with_trace_state(batch.bytes(), range, new_state, &mut walked);
            let written = &out.spans()[0].span;
            assert_eq!(
                &out.bytes()[written.start as usize..written.end as usize],
                &walked[..],
                "{body:02x?} with {new_state:?}"
            );
            let mut expected = batch.to_request();
            expected.resource_spans[0].scope_spans[0].spans[0].trace_state = new_state.into();
            assert_eq!(out.to_request(), expected);
            let rescanned = SpanBatch::scan(out.bytes().clone()).unwrap();
            assert_eq!(rescanned.spans(), out.spans());
            crate::tests::assert_index_consistent(&out);
            crate::tests::assert_index_consistent(&batch);
        }
        assert!(from_index > 1500, "{from_index}");
    }

    #[test]
    fn a_trace_state_is_written_in_field_order() {
        let batch = SpanBatch::from_request(&request());
        let out = batch.select_with_trace_states(&[0], &[(0, "ot=th:0")]);
        // Canonical encoders write fields in number order; the new field 3
        // lands after span_id (2) and before name (5), so re-encoding the
        // decoded request with prost gives the same bytes.
        use prost::Message;
        assert_eq!(out.to_request().encode_to_vec(), out.bytes().to_vec());
    }
}
