//! Decide and reserve across replicas: the decision is made from the index
//! plus the claim's Lease, and an allowed pod is answered only once its
//! entry is stored in the API server (compare-and-swap; on a lost race the
//! Lease is read again and the decision made again).

use std::sync::Arc;
use std::time::Instant;

use super::{evaluate, Lookups, RequestView};
use crate::cluster::reservations::{ReservationBook, ReserveError};
use crate::cluster::{pod_claims, ClusterView, SharedCluster};
use crate::objects;
use crate::policy::{Policy, Request, Verdict};

/// Decisions made again after lost races before giving up (each lost race
/// means another writer succeeded, so for one RWOP claim the second round
/// already sees the winner).
const MAX_ROUNDS: usize = 8;

pub(super) async fn decide_and_reserve(
    cluster: &SharedCluster,
    book: &Arc<ReservationBook>,
    policy: &Policy,
    request: &Request<'_>,
    pod: &objects::Pod,
    not_ready: bool,
    mut lookups: Lookups,
) -> Verdict {
    let ns = request.namespace;
    let claims: Vec<(String, bool)> = pod
        .spec
        .as_ref()
        .map(pod_claims)
        .unwrap_or_default()
        .into_iter()
        .map(|(c, ro)| (c.to_string(), ro))
        .collect();
    let names: Vec<String> = claims.iter().map(|(c, _)| c.clone()).collect();
    // Only claims one pod (RWOP) or one node (RWO) may hold are reserved.
    let guarded: Vec<(String, bool)> = {
        let state = cluster.read();
        let view = RequestView {
            state: &state,
            not_ready,
            lookups: &lookups,
            reserved: &[],
        };
        claims
            .iter()
            .filter(|(c, _)| {
                matches!(view.claim(ns, c), Ok(Some(f))
                    if f.effective.is_rwop() || f.effective.is_single_node())
            })
            .cloned()
            .collect()
    };
    // The verdict, and the Lease versions it was made from: the reservation
    // is written over exactly those, or the decision is made again.
    let decide = |lookups: &Lookups| {
        let (reserved, seen) = book.entries_seen(ns, &names);
        let state = cluster.read();
        let verdict = evaluate(policy, request, &state, not_ready, lookups, &reserved);
        (verdict, seen)
    };
    if guarded.is_empty() || not_ready {
        return decide(&lookups).0;
    }
    let guarded_names: Vec<String> = guarded.iter().map(|(c, _)| c.clone()).collect();
    let budget = book.write_timeout();
    // Everything, queueing and lost races included, ends within two write
    // budgets: 2 s by default, inside the webhook's 3 s timeout.
    let deadline = Instant::now() + budget * 2;
    // One decision per claim at a time in this replica; the wait counts
    // against the write budget, so a slow API server cannot queue requests
    // past the webhook's timeout.
    let Ok(_locks) = tokio::time::timeout(budget, book.lock_claims(ns, &guarded_names)).await
    else {
        book.metrics().unrecorded.inc();
        let reason = format!(
            "another decision on this claim is still waiting for the API server after {budget:?}"
        );
        lookups.unrecorded = guarded_names
            .into_iter()
            .map(|c| (c, reason.clone()))
            .collect();
        return decide(&lookups).0;
    };
    let mut rounds = 0;
    loop {
        rounds += 1;
        let (verdict, seen) = decide(&lookups);
        if !verdict.allowed {
            return verdict;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let write = tokio::time::timeout(remaining, book.reserve(pod, ns, &guarded, &seen));
        let outcome = match write.await {
            Ok(r) => r,
            Err(_) => Err(ReserveError::Unavailable(format!(
                "no answer from the API server within {:?}",
                budget * 2
            ))),
        };
        let failure = match outcome {
            Ok(()) => {
                book.metrics().recorded.inc();
                tracing::debug!(namespace = ns, pod = %pod.metadata.name, rounds, "reservation recorded");
                return verdict;
            }
            Err(ReserveError::Conflict(lease)) => {
                book.metrics().conflicts.inc();
                if rounds < MAX_ROUNDS && Instant::now() < deadline {
                    tracing::debug!(%lease, rounds, "reservation lost a race; deciding again");
                    continue;
                }
                format!("Lease {lease} kept changing under {rounds} attempts")
            }
            Err(ReserveError::Unavailable(reason)) => reason,
        };
        book.metrics().unrecorded.inc();
        tracing::warn!(namespace = ns, pod = %pod.metadata.name, reason = %failure, "reservation not recorded; answering per onLookupError");
        lookups.unrecorded = guarded_names
            .into_iter()
            .map(|c| (c, failure.clone()))
            .collect();
        return decide(&lookups).0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{evaluate, Lookups};
    use crate::cluster::reservations::{Entry, Reserved};
    use crate::cluster::ClusterState;
    use crate::objects::{self, Object};
    use crate::policy::{Operation, Policy, Request};
    use serde_json::json;
    use std::time::Duration;

    fn pod(name: &str, uid: &str, node: Option<&str>) -> objects::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .unwrap()
    }

    fn entry(pod: &str, uid: &str, ns: &str, claim: &str) -> Reserved {
        Reserved {
            uid: uid.into(),
            entry: Entry {
                namespace: ns.into(),
                claim: claim.into(),
                pod: pod.into(),
                node: None,
                read_only: false,
                deadline: "2099-01-01T00:00:00Z".into(),
                replica: "r".into(),
            },
        }
    }

    fn judge(state: &ClusterState, reserved: &[Reserved]) -> (bool, String) {
        let b = Object::Pod(pod("b", "uid-b", None));
        let req = Request {
            operation: Operation::Create,
            namespace: "default",
            object: &b,
            old_object: None,
        };
        let v = evaluate(
            &Policy::default(),
            &req,
            state,
            false,
            &Lookups::default(),
            reserved,
        );
        (v.allowed, v.denial.unwrap_or_default())
    }

    #[test]
    fn an_entry_counts_until_the_watch_shows_its_pod() {
        let mut state = ClusterState::new();
        state.track_seen_uids(Duration::from_secs(95));
        state.apply_pvc(
            &serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOncePod"]}}))
            .unwrap(),
        );
        // Entries of other claims or namespaces do not count.
        let others = [
            entry("x", "uid-x", "default", "other"),
            entry("y", "uid-y", "elsewhere", "data"),
        ];
        assert!(judge(&state, &others).0);

        let reserved = [entry("a", "uid-a", "default", "data")];
        let (allowed, msg) = judge(&state, &reserved);
        assert!(!allowed);
        assert!(
            msg.starts_with("[rwop-exclusive] PersistentVolumeClaim \"data\" is ReadWriteOncePod and already used by pod default/a (not scheduled yet)"),
            "{msg}"
        );
        // Stored: the pod counts itself, once.
        state.apply_pod(&pod("a", "uid-a", Some("n1")));
        let (allowed, msg) = judge(&state, &reserved);
        assert!(!allowed);
        assert!(msg.contains("default/a on node n1"), "{msg}");
        assert_eq!(msg.matches("default/a").count(), 1, "{msg}");
        // Gone: the entry holds nothing any more.
        state.delete_pod("default", "a");
        assert!(judge(&state, &reserved).0);
        // A pod recreated under the same name with a new uid keeps its own entry.
        let recreated = [entry("a", "uid-a2", "default", "data")];
        assert!(!judge(&state, &recreated).0);
    }
}
