//! Head and tail sampling for tracegate: policies, the sharded trace buffer
//! and decision caches. A pure library: no sockets, no threads of its own,
//! time is passed in (DESIGN.md §3, §4). Filled by the tail- and
//! head-sampling issues.
#![forbid(unsafe_code)]

pub mod head;
mod policy_config;
pub mod tail;
