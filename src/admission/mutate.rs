//! `POST /mutate`: the opt-in co-location webhook. AdmissionReview v1 in,
//! always `allowed: true` out; when the pod is pinned, `patchType: JSONPatch`
//! and `patch` = base64 of the JSON Patch array.
//!
//! kube's `AdmissionResponse::with_patch` serialises the patch as an array of
//! numbers (kube-rs#1781), which the API server rejects; this module writes
//! the response itself. Nothing is stored or reserved (`sideEffects: None`):
//! dry runs are patched the same way.

use base64::Engine as _;
use serde::Serialize;

use super::{parse_request, AdmissionRequest, Engine, Lookups, RequestView, ReviewError};
use crate::policy::colocate::{self, Decision};
use crate::policy::{Operation, Request};

/// What happened to one `/mutate` request, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationSummary {
    pub uid: String,
    pub kind: String,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    /// The node the pod was pinned to, when it was.
    pub pinned_to: Option<String>,
    /// The claims that decided the node.
    pub claims: Vec<String>,
    /// Who opted the pod in (`policy`, `namespace-label`, `pod-annotation`).
    pub opt_in: Option<&'static str>,
    /// `pinned`, or the fixed reason the pod was left alone.
    pub reason: &'static str,
    /// The reason in words.
    pub detail: String,
}

#[derive(Debug)]
pub struct Mutated {
    /// The serialized AdmissionReview response.
    pub body: Vec<u8>,
    pub summary: MutationSummary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch array.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// The response review: allowed, with the patch when there is one.
pub fn mutation_body(uid: &str, patch: Option<&json_patch::Patch>, warnings: &[String]) -> Vec<u8> {
    let patch = patch.map(|p| {
        // A Patch is a list of plain operations: serializing it cannot fail.
        let json = serde_json::to_vec(p).unwrap_or_else(|_| b"[]".to_vec());
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let out = ReviewOut {
        api_version: super::API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

impl Engine {
    /// Whole AdmissionReview v1 body in, serialized mutation response out.
    pub async fn mutate(&self, body: &[u8]) -> Result<Mutated, ReviewError> {
        let req = parse_request(body)?;
        Ok(self.decide_mutation(req).await)
    }

    /// Decide whether to pin a parsed request's pod. Reads the view only.
    pub async fn decide_mutation(&self, req: AdmissionRequest) -> Mutated {
        let policy = self.policy.load_full();
        let mut summary = MutationSummary {
            uid: req.uid.clone(),
            kind: req.kind_name.clone(),
            operation: req.operation.clone(),
            namespace: req.namespace.clone(),
            name: req
                .object
                .as_ref()
                .map(|o| o.metadata().display_name())
                .unwrap_or_else(|| req.name.clone()),
            dry_run: req.dry_run,
            pinned_to: None,
            claims: Vec::new(),
            opt_in: None,
            reason: "not-a-pod-create",
            detail: String::new(),
        };
        let Some(object) = &req.object else {
            summary.detail = "not a pod creation".into();
            return Mutated {
                body: mutation_body(&req.uid, None, &[]),
                summary,
            };
        };
        let namespace = object
            .metadata()
            .namespace
            .clone()
            .unwrap_or_else(|| req.namespace.clone());
        let operation = Operation::parse(&req.operation);
        let not_ready = !self.cluster.is_synced();
        let request = Request {
            operation,
            namespace: &namespace,
            object,
            old_object: None,
        };
        // Live GETs only for a pod creation that may be pinned: the second
        // webhook sends the pods of every namespace.
        let applies = !not_ready && {
            let state = self.cluster.read();
            colocate::applies(&policy, &request, &*state)
        };
        let lookups = if applies {
            self.fetch_missing(&namespace, object).await
        } else {
            Lookups::default()
        };
        // Pods admitted by any replica but not stored yet count as users too
        // (an unscheduled one means: no pin yet).
        let reserved = match (applies, self.cluster.reservations()) {
            (true, Some(book)) => book.entries_for(&namespace, &super::referenced_claims(object)),
            _ => Vec::new(),
        };
        let decision = {
            let state = self.cluster.read();
            let view = RequestView {
                state: &state,
                not_ready,
                lookups: &lookups,
                reserved: &reserved,
            };
            colocate::decide(&policy, &request, &view)
        };
        match decision {
            Decision::Pin(p) => {
                summary.pinned_to = Some(p.node.clone());
                summary.claims = p.claims.clone();
                summary.opt_in = Some(p.opt_in.as_str());
                summary.reason = "pinned";
                summary.detail = format!("holders {}", p.holders.join(","));
                let warnings = [p.warning];
                Mutated {
                    body: mutation_body(&req.uid, Some(&p.patch), &warnings),
                    summary,
                }
            }
            Decision::Unchanged(u) => {
                summary.reason = u.reason();
                summary.detail = u.to_string();
                Mutated {
                    body: mutation_body(&req.uid, None, &[]),
                    summary,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterState, SharedCluster};
    use crate::policy::Policy;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn engine() -> Engine {
        let mut state = ClusterState::new();
        for v in [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "colo", "labels": {"claimguard.io/colocate": "true"}}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "colo"},
                   "spec": {"accessModes": ["ReadWriteOnce"]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old", "namespace": "colo", "uid": "uid-old"},
                   "spec": {"nodeName": "worker-1", "containers": [{"name": "c"}],
                            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
        ] {
            let kind =
                crate::objects::Kind::from_api_version("v1", v["kind"].as_str().unwrap()).unwrap();
            state.apply_object(&crate::objects::Object::from_value(kind, &v).unwrap());
        }
        Engine::new(Policy::default(), Arc::new(SharedCluster::new(state, true)))
    }

    fn review(operation: &str, dry_run: bool) -> (Value, Vec<u8>) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "new", "namespace": "colo"},
            "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let body = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "colo", "name": "new",
            "operation": operation, "dryRun": dry_run, "object": pod.clone()}}))
        .unwrap();
        (pod, body)
    }

    #[tokio::test]
    async fn a_pin_is_a_base64_json_patch_that_applies() {
        let e = engine();
        for dry_run in [false, true] {
            let (pod, body) = review("CREATE", dry_run);
            let m = e.mutate(&body).await.unwrap();
            let out: Value = serde_json::from_slice(&m.body).unwrap();
            let resp = &out["response"];
            assert_eq!(resp["uid"], "u-1");
            assert_eq!(resp["allowed"], true);
            assert_eq!(resp["patchType"], "JSONPatch");
            let text = resp["patch"]
                .as_str()
                .expect("patch is a string, not numbers");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut patched = pod;
            json_patch::patch(&mut patched, &patch).unwrap();
            assert_eq!(
                patched["spec"]["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-1"]}]}])
            );
            assert!(resp["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with("[colocate] pinned to node worker-1"));
            assert_eq!(m.summary.reason, "pinned");
            assert_eq!(m.summary.dry_run, dry_run);
            assert_eq!(m.summary.pinned_to.as_deref(), Some("worker-1"));
            assert_eq!(m.summary.opt_in, Some("namespace-label"));
        }
        // Nothing was stored or reserved: the claim still has one user.
        assert_eq!(
            crate::cluster::ClusterView::consumers(&*e.cluster().read(), "colo", "data")
                .unwrap()
                .len(),
            1
        );
    }

    struct Counting(std::sync::atomic::AtomicUsize);

    impl crate::cluster::ClaimFetcher for Counting {
        fn fetch(
            &self,
            namespace: &str,
            name: &str,
        ) -> futures::future::BoxFuture<
            'static,
            Result<Option<crate::objects::PersistentVolumeClaim>, String>,
        > {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let pvc =
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"]}}))
                .unwrap();
            Box::pin(async move { Ok(Some(pvc)) })
        }
    }

    /// A claim the watch has not shown yet is fetched live, but only for a
    /// pod that co-location applies to: the second webhook sends every pod.
    #[tokio::test]
    async fn claims_are_fetched_only_for_opted_in_pods() {
        let e = engine();
        {
            let mut state = e.cluster().write();
            for ns in ["colo", "plain"] {
                let late: crate::objects::Pod = serde_json::from_value(json!({
                    "metadata": {"name": "holder", "namespace": ns, "uid": format!("uid-{ns}")},
                    "spec": {"nodeName": "worker-7", "containers": [{"name": "c"}],
                             "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "late"}}]}}))
                .unwrap();
                state.apply_pod(&late);
            }
        }
        let fetcher = Arc::new(Counting(Default::default()));
        e.cluster().set_fetcher(fetcher.clone());
        let body = |ns: &str| {
            let (_, b) = review("CREATE", false);
            let s = String::from_utf8(b)
                .unwrap()
                .replace("\"claimName\":\"data\"", "\"claimName\":\"late\"")
                .replace("\"colo\"", &format!("\"{ns}\""));
            s.into_bytes()
        };
        let m = e.mutate(&body("plain")).await.unwrap();
        assert_eq!(m.summary.reason, "not-opted-in");
        assert_eq!(fetcher.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        let m = e.mutate(&body("colo")).await.unwrap();
        assert_eq!(m.summary.reason, "pinned", "{}", m.summary.detail);
        assert_eq!(m.summary.pinned_to.as_deref(), Some("worker-7"));
        assert_eq!(fetcher.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_patch_is_a_bare_allow() {
        let e = engine();
        let (_, body) = review("UPDATE", false);
        let m = e.mutate(&body).await.unwrap();
        let out: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(out["response"], json!({"uid": "u-1", "allowed": true}));
        assert_eq!(m.summary.reason, "not-a-pod-create");
        assert!(e.mutate(b"{").await.is_err());
    }
}
