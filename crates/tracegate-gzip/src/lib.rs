//! gzip for tracegate's OTLP path. Request bodies are inflated with the
//! blocks of each member located ([`gunzip`]), so that an export made of
//! whole requests that arrived gzip-compressed and unchanged is sent as one
//! standard gzip member assembled from the deflate data that arrived
//! ([`splice`]): only what lies between them is compressed again
//! (docs/architecture.md, "Compressing only what changed").
#![deny(unsafe_code)]

mod gunzip;
mod inflate;
mod splice;

pub use gunzip::{gunzip, GunzipError, Gunzipped, Member};
pub use splice::{splice, splice_segments, Piece};

#[cfg(test)]
mod tests;
