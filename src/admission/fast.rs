//! The cheap path for the review most of a cluster's traffic is: a Pod
//! CREATE that uses no claim at all.
//!
//! No pod rule can fire for such a pod (every pod rule is about one of its
//! claims), so its answer is the uid echoed with `allowed: true` — unless the
//! view cannot be read, which the full path reports. The cheap path skips
//! the typed parse, the policy evaluation, the claim fetches and the verdict
//! plumbing: a validating JSON scan (`scan.rs`) reads the few fields the
//! answer needs and makes sure no volume has a `persistentVolumeClaim` or
//! `ephemeral` source (it refuses `\u` escapes, which could spell either).
//! Anything else — another kind or operation, a claim source, a body the
//! scan does not vouch for, a view not synced, a namespace that cannot be
//! read — goes to the full path. `tests/fast_path.rs` compares both paths byte for
//! byte; the one difference is documented in `scan.rs`: an object with a
//! wrong type in a part no rule reads, which the API server never sends.

use super::{response_body, scan, DecisionSummary, Engine, Reviewed};
use crate::cluster::ClusterView;
use crate::objects::{ObjectMeta, Pod};
use std::time::Instant;

/// The answer for a claimless Pod CREATE, or `None` when the full path must
/// decide. Does what the full path does to the index for such a pod (in
/// snapshot mode the server stores what it admits; in live mode it reserves).
pub(super) fn claimless_pod(engine: &Engine, body: &[u8]) -> Option<Reviewed> {
    let req = scan::pod_create(body)?;
    let cluster = engine.cluster();
    if !cluster.is_synced() {
        return None;
    }
    // As the full parse fills them in: on CREATE the object may not carry
    // its namespace or name yet; the request does.
    let namespace = match req.meta_namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => req.namespace,
    };
    let metadata = ObjectMeta {
        name: if req.meta_name.is_empty() {
            req.name
        } else {
            req.meta_name
        }
        .to_owned(),
        generate_name: req.meta_generate_name.to_owned(),
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        uid: req.meta_uid.map(str::to_owned),
        ..ObjectMeta::default()
    };
    if req.dry_run {
        if cluster.read().namespace_mode(namespace).is_err() {
            return None;
        }
    } else {
        let mut state = cluster.write();
        if state.namespace_mode(namespace).is_err() {
            return None;
        }
        // The same steps as `Engine::decide` for an allowed pod; for a pod
        // without claims the index only needs its namespace and name.
        let pod = Pod {
            metadata: metadata.clone(),
            spec: None,
            status: None,
        };
        match cluster.reservation_ttl() {
            Some(ttl) => {
                state.expire_reservations(Instant::now());
                state.reserve_pod(&pod, Instant::now() + ttl);
            }
            None => state.apply_pod(&pod),
        }
    }
    let summary = DecisionSummary {
        uid: req.uid.to_owned(),
        kind: "Pod".to_owned(),
        operation: "CREATE".to_owned(),
        namespace: req.namespace.to_owned(),
        name: metadata.display_name(),
        allowed: true,
        dry_run: req.dry_run,
        findings: Vec::new(),
    };
    let body = response_body(req.uid, true, None, &[], &Default::default());
    Some(Reviewed { body, summary })
}
