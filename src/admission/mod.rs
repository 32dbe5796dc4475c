//! The request path: AdmissionReview in, decision (with reservation) under
//! the cluster lock, AdmissionReview out.

pub mod fast;
mod mutate;
mod reserve;
mod review;
mod scan;

pub use mutate::{mutation_body, Mutated, MutationSummary};
pub use review::{
    parse_request, response_body, AdmissionRequest, ReviewError, ScaleRequest, API_VERSION,
};

use crate::cluster::reservations::Reserved;
use crate::cluster::{
    pod_claims, ClaimFacts, ClusterState, ClusterView, Consumer, LookupError, NamespaceMode,
    PodUid, SharedCluster, StorageClassFacts,
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
    /// Where findings on controller-made pods become Events (live mode).
    events: std::sync::OnceLock<crate::events::EventSink>,
}

/// The index as one request sees it: claims whose live lookup failed and a
/// view that is not synced yet answer with a lookup error.
struct RequestView<'a> {
    state: &'a ClusterState,
    not_ready: bool,
    lookups: &'a Lookups,
    /// Live reservation entries from the API server's Leases (live mode).
    reserved: &'a [Reserved],
}

/// What the live GETs of one request found. Kept beside the index, never
/// written into it: the watch owns the index, and a fetched claim written
/// back after the watch saw it deleted would haunt it until the next re-list.
#[derive(Default)]
struct Lookups {
    failed: Vec<(String, String)>,
    fetched: Vec<(String, ClaimFacts)>,
    /// Claims whose reservation could not be written, with why.
    unrecorded: Vec<(String, String)>,
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
        if let Some((_, reason)) = self.lookups.unrecorded.iter().find(|(c, _)| c == claim) {
            return Err(LookupError::Unrecorded {
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
        let mut out = self.state.consumers(namespace, claim)?;
        // A reservation counts until the watch shows its pod: stored, the pod
        // counts itself; gone, it holds nothing.
        for r in self.reserved {
            let e = &r.entry;
            if e.namespace != namespace
                || e.claim != claim
                || self.state.seen_uid(&r.uid)
                || out.iter().any(|c| c.uid.is_some_and(|u| u.matches(&r.uid)))
            {
                continue;
            }
            out.push(Consumer {
                namespace: &e.namespace,
                name: &e.pod,
                uid: Some(PodUid::Text(&r.uid)),
                node: e.node.as_deref(),
                terminating: false,
                read_only: e.read_only,
            });
        }
        Ok(out)
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
    fn node_hostname(&self, node: &str) -> Option<&str> {
        self.state.node_hostname(node)
    }
    fn node_health(&self, node: &str) -> Option<crate::cluster::NodeHealth<'_>> {
        self.state.node_health(node)
    }
    fn attachments(&self, namespace: &str, claim: &str) -> Vec<crate::cluster::Attachment<'_>> {
        self.state.attachments(namespace, claim)
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
            events: std::sync::OnceLock::new(),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Record findings on controller-made pods as Events through `sink`.
    pub fn set_event_sink(&self, sink: crate::events::EventSink) {
        let _ = self.events.set(sink);
    }

    pub fn cluster(&self) -> &Arc<SharedCluster> {
        &self.cluster
    }

    /// Whole AdmissionReview v1 body in, serialized response out.
    pub async fn review(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        // A body that never says `persistentVolumeClaim` cannot use a claim
        // (the scans refuse `\u`, which could spell it): try the cheap path
        // first. One that does is read whole, by the typed scan when it can.
        if !mentions_claim(body) {
            if let Some(reviewed) = fast::claimless_pod(self, body) {
                return Ok(reviewed);
            }
        }
        let req = read_request(body)?;
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
        fast::claimless_pod(self, body)
    }

    /// Decide about a parsed request: fetch unknown claims if a fetcher is
    /// set, then decide and reserve in one step under the write lock.
    pub async fn decide(&self, req: AdmissionRequest) -> Reviewed {
        let policy = self.policy.load_full();
        if let Some(scale) = &req.scale {
            // Boxed, as the reservation below: rare paths whose futures
            // would otherwise make every review's future several KB larger
            // (moved and copied on every request).
            let verdict = Box::pin(self.decide_scale(&policy, &req, scale)).await;
            return finish(req, verdict);
        }
        let Some(object) = &req.object else {
            // A kind or operation claimguard does not judge: allowed without comment.
            return finish(req, Verdict::allow());
        };
        // The object's, else the request's; a namespaced object with
        // neither (no API server sends one; hand-written reviews do) is in
        // `default`, as kubectl and the snapshot reader place it.
        let namespace = [object.metadata().namespace.as_deref(), Some(&req.namespace)]
            .into_iter()
            .flatten()
            .find(|ns| !ns.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if object.kind().is_namespaced() {
                    "default".to_string()
                } else {
                    String::new()
                }
            });
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
            old_object: req.old_object.as_deref(),
        };
        let stores = operation == Operation::Create
            && !req.dry_run
            && matches!(object, Object::Pod(_) | Object::PersistentVolumeClaim(_));
        let book = self.cluster.reservations();
        let verdict = if let (Some(book), Object::Pod(pod), true) = (&book, object, stores) {
            // Live mode across replicas: the reservation goes to the API server.
            Box::pin(reserve::decide_and_reserve(
                &self.cluster,
                book,
                &policy,
                &request,
                pod,
                not_ready,
                lookups,
            ))
            .await
        } else if stores {
            let mut state = self.cluster.write();
            let ttl = self.cluster.reservation_ttl();
            if ttl.is_some() {
                state.expire_reservations(Instant::now());
            }
            let verdict = evaluate(&policy, &request, &state, not_ready, &lookups, &[]);
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
            let reserved = match &book {
                Some(b) => b.entries_for(&namespace, &referenced_claims(object)),
                None => Vec::new(),
            };
            let state = self.cluster.read();
            evaluate(&policy, &request, &state, not_ready, &lookups, &reserved)
        };
        if let (Some(sink), Object::Pod(p), Operation::Create, false) =
            (self.events.get(), object, operation, req.dry_run)
        {
            for note in crate::events::notes_for(p, &namespace, &verdict) {
                sink.send(note);
            }
        }
        // Snapshot mode: admitted workloads join the state, for later scale requests.
        if verdict.allowed
            && !req.dry_run
            && object.kind().is_workload()
            && self.cluster.reservation_ttl().is_none()
        {
            self.cluster.write().apply_object(object);
        }
        finish(req, verdict)
    }

    /// A scale subresource request: find the workload (the snapshot's, or
    /// one bounded GET live) and judge it with the new replica count.
    async fn decide_scale(
        &self,
        policy: &Policy,
        req: &AdmissionRequest,
        scale: &ScaleRequest,
    ) -> Verdict {
        let ns = req.namespace.as_str();
        let grows = match (scale.replicas, scale.old_replicas) {
            (Some(new), Some(old)) => new > old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !grows || policy.is_exempt(ns) {
            return Verdict {
                allowed: true,
                ..Verdict::default()
            };
        }
        let stored = self
            .cluster
            .read()
            .workload(scale.workload, ns, &req.name)
            .cloned();
        let workload = match stored {
            Some(w) => Ok(Some(w)),
            None => match self.cluster.fetcher_for_workloads() {
                Some(f) => f.fetch(scale.workload, ns, &req.name).await,
                None => Ok(None),
            },
        };
        let not_ready = !self.cluster.is_synced();
        let lookups = Lookups::default();
        let verdict = match &workload {
            // Nothing to judge: the API server answers 404 itself.
            Ok(None) => Verdict {
                allowed: true,
                ..Verdict::default()
            },
            Ok(Some(w)) => {
                let state = self.cluster.read();
                // Workload rules read claims only, never consumers.
                let view = RequestView {
                    state: &state,
                    not_ready,
                    lookups: &lookups,
                    reserved: &[],
                };
                policy::evaluate_scale(
                    policy,
                    ns,
                    scale.workload,
                    w,
                    scale.old_replicas,
                    scale.replicas,
                    &view,
                )
            }
            Err(reason) => policy::lookup_error_verdict(
                policy,
                &format!(
                    "could not read {} {ns}/{} for this scale request: {reason}",
                    scale.workload.as_str(),
                    req.name
                ),
            ),
        };
        // Snapshot mode: the stored workload takes the new count.
        if let (true, false, None, Ok(Some(w)), Some(n)) = (
            verdict.allowed,
            req.dry_run,
            self.cluster.reservation_ttl(),
            &workload,
            scale.replicas,
        ) {
            let mut w = w.clone();
            w.spec.get_or_insert_with(Default::default).replicas = Some(n);
            self.cluster
                .write()
                .apply_object(&Object::Workload(scale.workload, Box::new(w)));
        }
        verdict
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

/// The response and the summary of a decided request, which it is done
/// with: the summary takes its strings rather than copies.
fn finish(req: AdmissionRequest, verdict: Verdict) -> Reviewed {
    let name = match req.object {
        Some(mut object) => {
            let meta = object.metadata_mut();
            if meta.name.is_empty() {
                meta.display_name()
            } else {
                std::mem::take(&mut meta.name)
            }
        }
        None => req.name,
    };
    let summary = DecisionSummary {
        uid: req.uid,
        kind: req.kind_name,
        operation: req.operation,
        namespace: req.namespace,
        name,
        allowed: verdict.allowed,
        dry_run: req.dry_run,
        findings: verdict
            .findings
            .iter()
            .map(|f| FindingSummary {
                rule: f.rule.id(),
                action: f.effect.metric_action(),
            })
            .collect(),
    };
    let body = response_body(
        &summary.uid,
        verdict.allowed,
        verdict.denial.as_deref(),
        &verdict.warnings,
        &verdict.audit_annotations,
    );
    Reviewed { body, summary }
}

fn evaluate(
    policy: &Policy,
    request: &Request<'_>,
    state: &ClusterState,
    not_ready: bool,
    lookups: &Lookups,
    reserved: &[Reserved],
) -> Verdict {
    let view = RequestView {
        state,
        not_ready,
        lookups,
        reserved,
    };
    policy::evaluate(policy, request, &view)
}

/// One SIMD pass: where a body goes, not what it means (the scans decide).
fn mentions_claim(body: &[u8]) -> bool {
    // Built once: `memmem::find` builds its searcher on every call.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"persistentVolumeClaim"));
    FINDER.find(body).is_some()
}

/// The request of a review: a Pod CREATE read by the typed scan of
/// `scan.rs` (the same request serde makes, for ~20 % fewer instructions),
/// any other review or a body the scan gives up on by the typed serde
/// parse, which also words every error.
pub fn read_request(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    match scan::pod_create_request(body) {
        Some(req) => Ok(req),
        None => parse_request(body),
    }
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
