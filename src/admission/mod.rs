//! The request path: AdmissionReview in, decision (with reservation) under
//! the cluster lock, AdmissionReview out.

pub mod fast;
mod mutate;
mod review;

pub use mutate::{mutation_body, Mutated, MutationSummary};
pub use review::{parse_request, response_body, AdmissionRequest, ReviewError, API_VERSION};

use crate::cluster::{
    pod_claims, ClaimFacts, ClusterState, ClusterView, Consumer, LookupError, NamespaceMode,
    SharedCluster, StorageClassFacts,
};
use crate::objects::{Kind, Object};
use crate::policy::{self, Operation, Policy, Request, Verdict};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Instant;

/// One finding as the server's metrics and logs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingSummary {
    pub rule: &'static str,
    /// `deny`, `warn` or `audit`.
    pub action: &'static str,
}

/// What happened to one request, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug)]
pub struct Reviewed {
    /// The serialized AdmissionReview response.
    pub body: Vec<u8>,
    pub summary: DecisionSummary,
}

pub struct Engine {
    policy: ArcSwap<Policy>,
    cluster: Arc<SharedCluster>,
}

/// The index as one request sees it: claims whose live lookup failed and a
/// view that is not synced yet answer with a lookup error.
struct RequestView<'a> {
    state: &'a ClusterState,
    not_ready: bool,
    lookups: &'a Lookups,
}

/// What the live GETs of one request found. Kept beside the index, never
/// written into it: the watch owns the index, and a fetched claim written
/// back after the watch saw it deleted would haunt it until the next re-list.
#[derive(Default)]
struct Lookups {
    failed: Vec<(String, String)>,
    fetched: Vec<(String, ClaimFacts)>,
}

impl RequestView<'_> {
    fn check(&self, namespace: &str, claim: &str) -> Result<(), LookupError> {
        if self.not_ready {
            return Err(LookupError::NotReady);
        }
        if let Some((_, reason)) = self.lookups.failed.iter().find(|(c, _)| c == claim) {
            return Err(LookupError::Fetch {
                namespace: namespace.to_string(),
                name: claim.to_string(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }
}

impl ClusterView for RequestView<'_> {
    fn claim(&self, namespace: &str, name: &str) -> Result<Option<ClaimFacts>, LookupError> {
        self.check(namespace, name)?;
        match self.state.claim(namespace, name)? {
            Some(f) => Ok(Some(f)),
            None => Ok(self
                .lookups
                .fetched
                .iter()
                .find(|(c, _)| c == name)
                .map(|(_, f)| *f)),
        }
    }
    fn consumers(&self, namespace: &str, claim: &str) -> Result<Vec<Consumer<'_>>, LookupError> {
        self.check(namespace, claim)?;
        self.state.consumers(namespace, claim)
    }
    fn namespace_mode(&self, namespace: &str) -> Result<Option<NamespaceMode>, LookupError> {
        self.state.namespace_mode(namespace)
    }
    fn namespace_colocates(&self, namespace: &str) -> Result<bool, LookupError> {
        self.state.namespace_colocates(namespace)
    }
    fn storage_class(&self, name: &str) -> Option<StorageClassFacts<'_>> {
        self.state.storage_class(name)
    }
    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>> {
        self.state.default_storage_class()
    }
}

/// The claims an object's pods would use.
fn referenced_claims(object: &Object) -> Vec<String> {
    let spec = match object {
        Object::Pod(p) => p.spec.as_ref(),
        Object::Workload(Kind::CronJob, w) => w
            .spec
            .as_ref()
            .and_then(|s| s.job_template.as_ref())
            .and_then(|j| j.spec.as_ref())
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref()),
        Object::Workload(_, w) => w
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref()),
        _ => None,
    };
    spec.map(|s| {
        pod_claims(s)
            .into_iter()
            .map(|(c, _)| c.to_string())
            .collect()
    })
    .unwrap_or_default()
}

impl Engine {
    pub fn new(policy: Policy, cluster: Arc<SharedCluster>) -> Self {
        Engine {
            policy: ArcSwap::from_pointee(policy),
            cluster,
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn cluster(&self) -> &Arc<SharedCluster> {
        &self.cluster
    }

    /// Whole AdmissionReview v1 body in, serialized response out.
    pub async fn review(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let req = parse_request(body)?;
        if fast::may_skip_decision(body) {
            if let Some(reviewed) = fast::claimless_pod(self, &req) {
                return Ok(reviewed);
            }
        }
        Ok(self.decide(req).await)
    }

    /// As [`Engine::review`], always through the full decision: what the
    /// cheap path is compared with (`tests/fast_path.rs`).
    pub async fn review_full(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let req = parse_request(body)?;
        Ok(self.decide(req).await)
    }

    /// The cheap path alone: `Some` when it answered (a claimless Pod
    /// CREATE); a review it does not answer, or that does not parse, is
    /// `None` and left to [`Engine::review`].
    pub fn review_fast(&self, body: &[u8]) -> Option<Reviewed> {
        if !fast::may_skip_decision(body) {
            return None;
        }
        fast::claimless_pod(self, &parse_request(body).ok()?)
    }

    /// Decide about a parsed request: fetch unknown claims if a fetcher is
    /// set, then decide and reserve in one step under the write lock.
    pub async fn decide(&self, req: AdmissionRequest) -> Reviewed {
        let policy = self.policy.load_full();
        let mut summary = DecisionSummary {
            uid: req.uid.clone(),
            kind: req.kind_name.clone(),
            operation: req.operation.clone(),
            namespace: req.namespace.clone(),
            name: req
                .object
                .as_ref()
                .map(|o| o.metadata().display_name())
                .unwrap_or_else(|| req.name.clone()),
            allowed: true,
            dry_run: req.dry_run,
            findings: Vec::new(),
        };
        let Some(object) = &req.object else {
            // A kind or operation claimguard does not judge: allowed without comment.
            let body = response_body(&req.uid, true, None, &[], &Default::default());
            return Reviewed { body, summary };
        };
        let namespace = object
            .metadata()
            .namespace
            .clone()
            .unwrap_or_else(|| req.namespace.clone());
        let not_ready = !self.cluster.is_synced();
        let lookups = if not_ready {
            Lookups::default()
        } else {
            self.fetch_missing(&namespace, object).await
        };
        let operation = Operation::parse(&req.operation);
        let request = Request {
            operation,
            namespace: &namespace,
            object,
            old_object: req.old_object.as_ref(),
        };
        let stores = operation == Operation::Create
            && !req.dry_run
            && matches!(object, Object::Pod(_) | Object::PersistentVolumeClaim(_));
        let verdict = if stores {
            let mut state = self.cluster.write();
            let ttl = self.cluster.reservation_ttl();
            if ttl.is_some() {
                state.expire_reservations(Instant::now());
            }
            let verdict = evaluate(&policy, &request, &state, not_ready, &lookups);
            if verdict.allowed {
                match (object, ttl) {
                    (Object::Pod(p), Some(ttl)) => state.reserve_pod(p, Instant::now() + ttl),
                    // Snapshot mode: the server is the cluster, so it stores what it admits.
                    (o, None) => state.apply_object(o),
                    // Live mode: the PVC watch brings the claim.
                    _ => {}
                }
            }
            verdict
        } else {
            let state = self.cluster.read();
            evaluate(&policy, &request, &state, not_ready, &lookups)
        };
        summary.allowed = verdict.allowed;
        summary.findings = verdict
            .findings
            .iter()
            .map(|f| FindingSummary {
                rule: f.rule.id(),
                action: f.effect.metric_action(),
            })
            .collect();
        let body = response_body(
            &req.uid,
            verdict.allowed,
            verdict.denial.as_deref(),
            &verdict.warnings,
            &verdict.audit_annotations,
        );
        Reviewed { body, summary }
    }

    /// Live GETs for claims the view does not know (created a moment ago,
    /// watch not caught up).
    async fn fetch_missing(&self, namespace: &str, object: &Object) -> Lookups {
        let mut lookups = Lookups::default();
        let Some(fetcher) = self.cluster.fetcher() else {
            return lookups;
        };
        let missing: Vec<String> = {
            let state = self.cluster.read();
            referenced_claims(object)
                .into_iter()
                .filter(|c| matches!(state.claim(namespace, c), Ok(None)))
                .collect()
        };
        if missing.is_empty() {
            return lookups;
        }
        let results =
            futures::future::join_all(missing.iter().map(|c| fetcher.fetch(namespace, c))).await;
        let state = self.cluster.read();
        for (claim, r) in missing.into_iter().zip(results) {
            match r {
                Ok(Some(pvc)) => {
                    let facts = state.facts_of(&pvc);
                    lookups.fetched.push((claim, facts));
                }
                Ok(None) => {}
                Err(reason) => lookups.failed.push((claim, reason)),
            }
        }
        lookups
    }
}

fn evaluate(
    policy: &Policy,
    request: &Request<'_>,
    state: &ClusterState,
    not_ready: bool,
    lookups: &Lookups,
) -> Verdict {
    let view = RequestView {
        state,
        not_ready,
        lookups,
    };
    policy::evaluate(policy, request, &view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClaimFetcher;
    use crate::objects;
    use futures::future::BoxFuture;
    use serde_json::json;

    struct Fixed(Result<Option<objects::PersistentVolumeClaim>, String>);

    impl ClaimFetcher for Fixed {
        fn fetch(
            &self,
            _: &str,
            _: &str,
        ) -> BoxFuture<'static, Result<Option<objects::PersistentVolumeClaim>, String>> {
            let r = self.0.clone();
            Box::pin(async move { r })
        }
    }

    fn review(name: &str, dry_run: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": {
            "uid": format!("u-{name}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default", "name": name, "operation": "CREATE", "dryRun": dry_run,
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                       "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "late"}}]}}}}))
        .unwrap()
    }

    fn engine(fetched: Result<Option<objects::PersistentVolumeClaim>, String>) -> Engine {
        let mut state = ClusterState::new();
        // pod-a already uses a claim the PVC watch has not shown yet.
        state.apply_pod(
            &serde_json::from_value(json!({"metadata": {"name": "pod-a", "namespace": "default", "uid": "uid-pod-a"},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "late"}}]}}))
            .unwrap(),
        );
        let cluster = Arc::new(SharedCluster::new(state, true));
        cluster.set_fetcher(Arc::new(Fixed(fetched)));
        Engine::new(Policy::default(), cluster)
    }

    fn response(r: &Reviewed) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["response"].clone()
    }

    #[tokio::test]
    async fn a_fetched_claim_is_judged_but_not_stored() {
        let pvc: objects::PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "late", "namespace": "default"}, "spec": {"accessModes": ["ReadWriteOncePod"]}}))
        .unwrap();
        let e = engine(Ok(Some(pvc)));
        let r = e.review(&review("pod-b", true)).await.unwrap();
        let resp = response(&r);
        assert_eq!(resp["allowed"], false, "{resp}");
        assert!(resp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("default/pod-a on node n1"));
        // The watch owns the index: the fetched claim is not in it.
        assert!(e
            .cluster()
            .read()
            .claim("default", "late")
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn missing_and_failed_fetches() {
        let e = engine(Ok(None));
        let resp = response(&e.review(&review("pod-b", true)).await.unwrap());
        assert_eq!(resp["allowed"], true);
        assert!(resp["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("[claim-not-found] "));

        let e = engine(Err("timed out after 1s".into()));
        let resp = response(&e.review(&review("pod-b", true)).await.unwrap());
        assert_eq!(resp["allowed"], true);
        let w = resp["warnings"][0].as_str().unwrap();
        assert!(
            w.starts_with("[lookup-error] could not check PersistentVolumeClaim \"late\"")
                && w.contains("timed out"),
            "{w}"
        );
    }

    #[tokio::test]
    async fn not_synced_answers_per_on_lookup_error() {
        let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
        let e = Engine::new(Policy::default(), cluster);
        let resp = response(&e.review(&review("pod-b", false)).await.unwrap());
        assert_eq!(resp["allowed"], true);
        assert!(resp["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not synced yet"));
        e.set_policy(Policy::parse("onLookupError: deny").unwrap());
        let resp = response(&e.review(&review("pod-c", false)).await.unwrap());
        assert_eq!(resp["allowed"], false);
    }
}
