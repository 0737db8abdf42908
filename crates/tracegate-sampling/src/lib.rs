//! Head and tail sampling for tracegate: policies, the sharded trace buffer
//! and decision caches. A pure library: no sockets, no threads of its own,
//! time is passed in (docs/architecture.md, "Crates and what they may
//! depend on", "The shard-per-core trace buffer" and "OTEP 235 randomness
//! and thresholds").
#![forbid(unsafe_code)]

pub mod head;
mod policy_config;
pub mod tail;
