//! The cheap path for the review most of a cluster's traffic is: a Pod
//! CREATE that uses no claim at all.
//!
//! No pod rule can fire for such a pod (every pod rule is about one of its
//! claims), so its answer is the uid echoed with `allowed: true` — unless the
//! view cannot be read, which the full path reports. The cheap path skips
//! the policy evaluation, the claim fetches and the verdict plumbing; it does
//! not skip the parse, because the full path answers a malformed object with
//! a 400 and the cheap path must answer exactly what the full path answers.
//!
//! Conservative by construction: a byte scan first rules out any body that
//! could hold a claim (`persistentVolumeClaim`, `ephemeral`, or a `\u`
//! escape that could spell either), then the parsed object is checked
//! again; anything else — another kind or operation, a view not synced, a
//! namespace that cannot be read — goes to the full path.
//! `tests/fast_path.rs` compares both paths byte for byte.

use super::{response_body, AdmissionRequest, DecisionSummary, Engine, Reviewed};
use crate::cluster::ClusterView;
use crate::objects::{Kind, Object};
use std::time::Instant;

/// False when the body may mention a claim: then only the full path answers.
pub fn may_skip_decision(body: &[u8]) -> bool {
    !(contains(body, b"persistentVolumeClaim")
        || contains(body, b"ephemeral")
        || contains(body, b"\\u"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The answer for a claimless Pod CREATE, or `None` when the full path must
/// decide. Does what the full path does to the index for such a pod (in
/// snapshot mode the server stores what it admits; in live mode it reserves).
pub(super) fn claimless_pod(engine: &Engine, req: &AdmissionRequest) -> Option<Reviewed> {
    if req.kind != Some(Kind::Pod) || req.operation != "CREATE" {
        return None;
    }
    let Some(Object::Pod(pod)) = &req.object else {
        return None;
    };
    if let Some(spec) = &pod.spec {
        if spec
            .volumes
            .iter()
            .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        {
            return None;
        }
    }
    let cluster = engine.cluster();
    if !cluster.is_synced() {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or(&req.namespace);
    if req.dry_run {
        if cluster.read().namespace_mode(namespace).is_err() {
            return None;
        }
    } else {
        let mut state = cluster.write();
        if state.namespace_mode(namespace).is_err() {
            return None;
        }
        // The same steps as `Engine::decide` for an allowed pod.
        match cluster.reservation_ttl() {
            Some(ttl) => {
                state.expire_reservations(Instant::now());
                state.reserve_pod(pod, Instant::now() + ttl);
            }
            None => state.apply_pod(pod),
        }
    }
    let summary = DecisionSummary {
        uid: req.uid.clone(),
        kind: req.kind_name.clone(),
        operation: req.operation.clone(),
        namespace: req.namespace.clone(),
        name: pod.metadata.display_name(),
        allowed: true,
        dry_run: req.dry_run,
        findings: Vec::new(),
    };
    let body = response_body(&req.uid, true, None, &[], &Default::default());
    Some(Reviewed { body, summary })
}

#[cfg(test)]
mod tests {
    use super::may_skip_decision;

    #[test]
    fn the_scan_refuses_anything_that_may_hold_a_claim() {
        assert!(may_skip_decision(
            br#"{"volumes":[{"name":"x","emptyDir":{}}]}"#
        ));
        assert!(!may_skip_decision(
            br#"{"volumes":[{"persistentVolumeClaim":{"claimName":"a"}}]}"#
        ));
        assert!(!may_skip_decision(br#"{"volumes":[{"ephemeral":{}}]}"#));
        // An escaped key is the same key to a JSON parser.
        assert!(!may_skip_decision(
            br#"{"volumes":[{"\u0070ersistentVolumeClaim":{"claimName":"a"}}]}"#
        ));
    }
}
