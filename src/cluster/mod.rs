//! The cluster view: who uses which claim, and the facts about claims,
//! volumes, storage classes and namespaces that the rules need.
//!
//! `ClusterState` is the one index, fed by a snapshot file or by watchers;
//! `ClusterView` is the read-only face the pure policy core sees.

mod index;
pub mod leader;
pub mod live;
mod modes;
mod nodes;
pub mod reservations;
mod shared;
pub mod snapshot;
mod workloads;

pub use index::{pod_claims, Attachment, ClusterState, Consumer, PodProjection, PodUid};
pub use modes::AccessModes;
pub use nodes::{
    pod_pin, NodeHealth, Readiness, HOSTNAME_LABEL, OUT_OF_SERVICE_TAINT, UNREACHABLE_TAINT,
};
pub use shared::{ClaimFetcher, SharedCluster};
pub use snapshot::{load_snapshot, SnapshotError};
pub use workloads::{workload_collection, LiveWorkloadFetcher, WorkloadFetcher};

use std::fmt;

/// Per-namespace mode from the label `claimguard.io/mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceMode {
    Enforce,
    Audit,
    Off,
}

pub const MODE_LABEL: &str = "claimguard.io/mode";

/// Namespace label (and pod annotation) that opts into co-location (`/mutate`).
pub const COLOCATE_LABEL: &str = "claimguard.io/colocate";

impl NamespaceMode {
    pub fn from_label(v: &str) -> Option<NamespaceMode> {
        match v {
            "enforce" => Some(NamespaceMode::Enforce),
            "audit" => Some(NamespaceMode::Audit),
            "off" => Some(NamespaceMode::Off),
            _ => None,
        }
    }
}

/// What is known about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimFacts {
    /// The bound PV's modes when the PV is known, else the PVC's own.
    pub effective: AccessModes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageClassFacts<'a> {
    pub name: &'a str,
    pub provisioner: &'a str,
}

/// The cluster could not be read for this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the cluster view is not synced yet")]
    NotReady,
    #[error("could not read PersistentVolumeClaim {namespace}/{name}: {reason}")]
    Fetch {
        namespace: String,
        name: String,
        reason: String,
    },
    /// The claim's reservation could not be recorded in the API server.
    #[error("the reservation could not be recorded ({reason})")]
    Unrecorded { reason: String },
}

/// Read-only view of the cluster for the policy core. Every lookup costs
/// O(consumers of the claim), never O(pods).
pub trait ClusterView {
    fn claim(&self, namespace: &str, name: &str) -> Result<Option<ClaimFacts>, LookupError>;
    /// Pods that use the claim now (not Succeeded/Failed), reservations included.
    fn consumers(&self, namespace: &str, claim: &str) -> Result<Vec<Consumer<'_>>, LookupError>;
    fn namespace_mode(&self, namespace: &str) -> Result<Option<NamespaceMode>, LookupError>;
    /// The `kubernetes.io/hostname` label of a known node; `None` when the
    /// node is unknown or unlabelled (a hostname pin then compares with the
    /// node's name).
    fn node_hostname(&self, _node: &str) -> Option<&str> {
        None
    }

    /// The health of a known node; `None` when the view does not know it.
    fn node_health(&self, _node: &str) -> Option<NodeHealth<'_>> {
        None
    }

    /// The VolumeAttachments of the volume a claim is bound to, with their
    /// nodes' health. O(attachments of that volume).
    fn attachments(&self, _namespace: &str, _claim: &str) -> Vec<Attachment<'_>> {
        Vec::new()
    }

    /// Whether the namespace carries `claimguard.io/colocate: "true"`.
    fn namespace_colocates(&self, _namespace: &str) -> Result<bool, LookupError> {
        Ok(false)
    }
    fn storage_class(&self, name: &str) -> Option<StorageClassFacts<'_>>;
    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>>;
}

impl fmt::Display for NamespaceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamespaceMode::Enforce => "enforce",
            NamespaceMode::Audit => "audit",
            NamespaceMode::Off => "off",
        })
    }
}

/// Hand heap freed after a bulk load (a snapshot, the initial lists) back to
/// the OS: allocators keep it otherwise, and the parse buffers of 100k
/// objects dwarf the index built from them. The server's allocator is
/// mimalloc (src/main.rs); glibc's is trimmed too for whatever else
/// allocated through it.
pub fn release_freed_heap() {
    // SAFETY: mi_collect only returns mimalloc's own free pages to the OS
    // (this thread's heap and abandoned ones); it may be called at any time
    // from any thread, whichever allocator Rust uses.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas; it touches no
        // Rust-owned memory and may be called at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}
