//! zlib's `inflate` with `Z_BLOCK`, through zlib-rs's C API: the one place
//! tracegate calls a C-style API, because zlib-rs's Rust API does not
//! report where blocks start (`data_type`).
#![allow(unsafe_code)]

use std::ffi::c_int;

use libz_rs_sys::{
    inflate, inflateEnd, inflateInit2_, inflateReset, z_stream, zlibVersion, Z_BLOCK, Z_BUF_ERROR,
    Z_OK, Z_STREAM_END,
};

/// What one call of [`BlockInflater::step`] did.
pub(crate) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    pub status: StepStatus,
    /// zlib's `data_type` after the call: the bits left unused in the
    /// input consumed (the low 6 bits: zlib-rs may hold several bytes'
    /// worth; zlib holds fewer than 8), plus 64 once the last block's header
    /// was read, plus 128 when inflate stopped at a block boundary.
    pub data_type: c_int,
}

pub(crate) enum StepStatus {
    /// Progress, or none possible with this input and output (zlib's
    /// `Z_OK` and `Z_BUF_ERROR`).
    Ok,
    /// The member's trailer was read and checked.
    StreamEnd,
    /// Corrupt data; zlib's message.
    Error(String),
}

/// A gzip inflater (zlib's `windowBits` 31) that stops at every block
/// boundary.
pub(crate) struct BlockInflater {
    // Boxed: zlib's state points back to the stream, which must not move.
    stream: Box<z_stream>,
}

// SAFETY: the stream's pointers are only set for the duration of one
// `step` call, and its state is owned by it alone.
unsafe impl Send for BlockInflater {}

impl BlockInflater {
    pub fn gzip() -> BlockInflater {
        let mut stream = Box::new(z_stream::default());
        // SAFETY: `stream` is a default z_stream (zlib-rs's allocator set)
        // that lives in a box for as long as the inflater; the version and
        // size are the library's own.
        let ret = unsafe {
            inflateInit2_(
                &mut *stream,
                15 + 16,
                zlibVersion(),
                std::mem::size_of::<z_stream>() as c_int,
            )
        };
        assert_eq!(ret, Z_OK, "inflateInit2 of a gzip stream");
        BlockInflater { stream }
    }

    /// Ready for a new member.
    pub fn reset(&mut self) {
        // SAFETY: the stream was initialized by `gzip`.
        let ret = unsafe { inflateReset(&mut *self.stream) };
        debug_assert_eq!(ret, Z_OK);
    }

    /// One `inflate(Z_BLOCK)` reading `input` and appending to `out`'s
    /// spare capacity (no more than it has).
    pub fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let spare = out.spare_capacity_mut();
        let avail_out = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let stream = &mut *self.stream;
        stream.next_in = input.as_ptr();
        stream.avail_in = avail_in;
        stream.next_out = spare.as_mut_ptr().cast();
        stream.avail_out = avail_out;
        // SAFETY: next_in/avail_in describe `input` and next_out/avail_out
        // the spare capacity of `out`, both valid for this call; inflate
        // writes initialized bytes only to the first `avail_out - (left)`
        // bytes of the spare capacity.
        let ret = unsafe { inflate(stream, Z_BLOCK) };
        let consumed = (avail_in - stream.avail_in) as usize;
        let produced = (avail_out - stream.avail_out) as usize;
        let data_type = stream.data_type;
        let status = match ret {
            Z_OK | Z_BUF_ERROR => StepStatus::Ok,
            Z_STREAM_END => StepStatus::StreamEnd,
            _ => StepStatus::Error(message(stream)),
        };
        stream.next_in = std::ptr::null();
        stream.avail_in = 0;
        stream.next_out = std::ptr::null_mut();
        stream.avail_out = 0;
        // SAFETY: inflate initialized exactly `produced` bytes past the
        // vector's length, within its capacity.
        unsafe { out.set_len(out.len() + produced) };
        Step {
            consumed,
            status,
            data_type,
        }
    }
}

fn message(stream: &z_stream) -> String {
    if stream.msg.is_null() {
        return "invalid gzip data".to_string();
    }
    // SAFETY: zlib sets `msg` to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(stream.msg) }
        .to_string_lossy()
        .into_owned()
}

impl Drop for BlockInflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized by `gzip` and is ended once.
        unsafe { inflateEnd(&mut *self.stream) };
    }
}
