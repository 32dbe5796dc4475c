//! TEMPORARY stand-in for `crate::admission::Engine` until the core lands on
//! main. Same public surface as the contract in CONTEXT.md. Deleted on merge.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct SharedCluster {
    synced: AtomicBool,
}

impl SharedCluster {
    pub fn new(synced: bool) -> Self {
        Self {
            synced: AtomicBool::new(synced),
        }
    }
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
    pub fn set_synced(&self, s: bool) {
        self.synced.store(s, Ordering::SeqCst)
    }
}

pub struct Engine {
    cluster: Arc<SharedCluster>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    Bad(String),
}

pub struct FindingSummary {
    pub rule: &'static str,
    pub action: &'static str,
}

pub struct DecisionSummary {
    pub uid: String,
    pub kind: String,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    pub allowed: bool,
    pub dry_run: bool,
    pub findings: Vec<FindingSummary>,
}

pub struct Reviewed {
    pub body: Vec<u8>,
    pub summary: DecisionSummary,
}

impl Engine {
    pub fn new(cluster: Arc<SharedCluster>) -> Self {
        Self { cluster }
    }
    pub fn cluster(&self) -> &Arc<SharedCluster> {
        &self.cluster
    }
    pub async fn review(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ReviewError::Bad(format!("not JSON: {e}")))?;
        if v["apiVersion"] != "admission.k8s.io/v1" {
            return Err(ReviewError::Bad("wrong apiVersion".into()));
        }
        let req = &v["request"];
        let uid = req["uid"]
            .as_str()
            .ok_or_else(|| ReviewError::Bad("no request.uid".into()))?
            .to_owned();
        let name = req["name"].as_str().unwrap_or_default().to_owned();
        if name == "panic" {
            panic!("stub panic");
        }
        let out = serde_json::json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
            "response":{"uid":uid,"allowed":true}});
        Ok(Reviewed {
            body: serde_json::to_vec(&out).unwrap_or_default(),
            summary: DecisionSummary {
                uid,
                kind: req["kind"]["kind"].as_str().unwrap_or_default().into(),
                operation: req["operation"].as_str().unwrap_or_default().into(),
                namespace: req["namespace"].as_str().unwrap_or_default().into(),
                name,
                allowed: true,
                dry_run: false,
                findings: vec![],
            },
        })
    }
}
