//! `claimguard migrate`: move a ReadWriteOnce claim to ReadWriteOncePod
//! without ever losing its volume.

pub mod plan;
