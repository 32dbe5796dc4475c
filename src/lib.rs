//! claimguard: a validating admission webhook that stops pods from fighting
//! over PersistentVolumeClaims.
//!
//! Data flows one way: wire → request → decision → response → wire, with the
//! cluster view beside the decision. `policy` is pure (no I/O, no async);
//! `cluster` holds the claim index and its feeders; `admission` speaks
//! AdmissionReview v1; the commands are thin drivers over those.

pub mod admission;
pub mod alloc;
pub mod audit;
pub mod certs;
pub mod check;
pub mod cluster;
pub mod events;
pub mod explain;
pub mod log_batch;
pub mod log_line;
pub mod migrate;
pub mod objects;
pub(crate) mod one_shot;
pub mod policy;
pub mod reload;
pub mod server;
