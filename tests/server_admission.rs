//! Decisions through the real server: AdmissionReviews in the shape the API
//! server sends, over TLS, judged by the real engine over a snapshot cluster.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;

const RACE_ROUNDS: usize = 20;
const RACERS: usize = 64;

/// The cluster every test starts from, as `kubectl get ... -o yaml` prints it.
fn snapshot_yaml() -> String {
    let mut items = String::new();
    let ns = |name: &str, labels: &str| {
        format!(
            "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: {name}\n    labels: {labels}\n"
        )
    };
    let pvc = |ns: &str, name: &str, mode: &str| {
        format!(
            "- apiVersion: v1\n  kind: PersistentVolumeClaim\n  metadata:\n    name: {name}\n    namespace: {ns}\n    uid: pvc-{ns}-{name}\n  spec:\n    accessModes: [{mode}]\n    storageClassName: csi-rbd\n    resources:\n      requests:\n        storage: 1Gi\n  status:\n    phase: Pending\n"
        )
    };
    let pod = |ns: &str, name: &str, claim: &str, node: &str| {
        format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: {name}\n    namespace: {ns}\n    uid: pod-{ns}-{name}\n  spec:\n    nodeName: {node}\n    containers:\n    - name: app\n      image: busybox\n      volumeMounts:\n      - name: data\n        mountPath: /data\n    volumes:\n    - name: data\n      persistentVolumeClaim:\n        claimName: {claim}\n  status:\n    phase: Running\n"
        )
    };
    items.push_str(&ns("default", "{}"));
    items.push_str(&ns("audited", "{claimguard.io/mode: audit}"));
    items.push_str(&pvc("default", "data", "ReadWriteOncePod"));
    items.push_str(&pod("default", "holder", "data", "worker-1"));
    items.push_str(&pvc("audited", "data", "ReadWriteOncePod"));
    items.push_str(&pod("audited", "holder", "data", "worker-1"));
    items.push_str(&pvc("default", "shared", "ReadWriteOnce"));
    items.push_str(&pod("default", "rwo-holder", "shared", "worker-1"));
    items.push_str(&pvc("default", "free", "ReadWriteOncePod"));
    items.push_str(&pvc("default", "dry", "ReadWriteOncePod"));
    for round in 0..RACE_ROUNDS {
        items.push_str(&pvc(
            "default",
            &format!("race-{round}"),
            "ReadWriteOncePod",
        ));
    }
    format!("apiVersion: v1\nkind: List\nitems:\n{items}")
}

fn cluster() -> Arc<claimguard::cluster::SharedCluster> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, snapshot_yaml()).unwrap();
    let state = claimguard::cluster::load_snapshot(&[path]).expect("snapshot loads");
    Arc::new(claimguard::cluster::SharedCluster::new(state, true))
}

fn policy(yaml: &str) -> claimguard::policy::Policy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    claimguard::policy::Policy::load(&path).expect("policy loads")
}

async fn server_with(policy: claimguard::policy::Policy) -> TestServer {
    TestServer::start(Arc::new(Engine::new(policy, cluster()))).await
}

fn in_ns(mut review: Value, ns: &str) -> Value {
    review["request"]["namespace"] = ns.into();
    review["request"]["object"]["metadata"]["namespace"] = ns.into();
    review
}

fn dry_run(mut review: Value) -> Value {
    review["request"]["dryRun"] = true.into();
    review
}

fn response(out: &Value) -> &Value {
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{out}");
    assert_eq!(out["kind"], "AdmissionReview", "{out}");
    &out["response"]
}

fn warnings(resp: &Value) -> Vec<String> {
    resp["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_claim_is_allowed_and_uid_echoed() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let out = t.review(&pod_review("uid-free-1", "new-pod", "free")).await;
    let resp = response(&out);
    assert_eq!(resp["uid"], "uid-free-1");
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(warnings(resp).is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_rwop_consumer_is_denied() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let out = t.review(&pod_review("uid-deny", "intruder", "data")).await;
    let resp = response(&out);
    assert_eq!(resp["uid"], "uid-deny");
    assert_eq!(resp["allowed"], false, "{out}");
    assert_eq!(resp["status"]["code"], 403, "{out}");
    assert_eq!(resp["status"]["reason"], "Forbidden", "{out}");
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("[rwop-exclusive]"), "{msg}");
    assert!(msg.contains("default/holder"), "{msg}");
    assert!(msg.contains("worker-1"), "{msg}");
    assert!(!msg.contains('\n'));

    // The denial is counted under the contract's metric names.
    let (_, _, metrics) = t.get("/metrics").await;
    for name in [
        r#"claimguard_admission_requests_total{kind="Pod",operation="CREATE",allowed="false"} 1"#,
        "claimguard_admission_duration_seconds_count",
        r#"claimguard_violations_total{rule="rwop-exclusive",action="deny"} 1"#,
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_rwo_writer_gets_a_warning() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let out = t
        .review(&pod_review("uid-warn", "second-writer", "shared"))
        .await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    let w = warnings(resp);
    assert!(
        w.iter().any(|w| w.starts_with("[rwo-shared-writer]")),
        "{out}"
    );
    assert!(
        w.iter().all(|w| w.len() < 256 && !w.contains('\n')),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_action_records_an_annotation() {
    let t = server_with(policy("rules:\n  rwo-shared-writer: audit\n")).await;
    let out = t
        .review(&pod_review("uid-audit", "second-writer", "shared"))
        .await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(warnings(resp).is_empty(), "audit is silent: {out}");
    let note = resp["auditAnnotations"]["rwo-shared-writer"]
        .as_str()
        .unwrap_or_else(|| panic!("audit annotation missing: {out}"));
    // The key is the bare rule id: the API server prefixes the webhook's name
    // (claimguard.io), and a key that already held a '/' would be dropped.
    assert!(note.starts_with("[rwo-shared-writer]"), "{note}");
    let (_, _, metrics) = t.get("/metrics").await;
    assert!(
        metrics
            .contains(r#"claimguard_violations_total{rule="rwo-shared-writer",action="audit"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_by_policy_denies_nothing() {
    let t = server_with(policy("mode: audit\n")).await;
    let out = t.review(&pod_review("uid-am", "intruder", "data")).await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    let w = warnings(resp);
    assert!(
        w.iter()
            .any(|w| w.starts_with("[rwop-exclusive]") && w.contains("not enforced")),
        "{out}"
    );
    assert!(
        resp["auditAnnotations"]["rwop-exclusive"].is_string(),
        "{out}"
    );
    assert!(resp["status"].is_null(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_by_namespace_label_denies_nothing() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let out = t
        .review(&in_ns(pod_review("uid-ns", "intruder", "data"), "audited"))
        .await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(
        warnings(resp)
            .iter()
            .any(|w| w.starts_with("[rwop-exclusive]")),
        "{out}"
    );
    assert!(
        resp["auditAnnotations"]["rwop-exclusive"].is_string(),
        "{out}"
    );
    // The same request in an enforcing namespace is denied.
    let out = t.review(&pod_review("uid-ns2", "intruder", "data")).await;
    assert_eq!(response(&out)["allowed"], false, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_are_allowed_without_comment() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let review: Value =
        serde_json::from_str(include_str!("fixtures/configmap-create.json")).unwrap();
    let out = t.review(&review).await;
    let resp = response(&out);
    assert_eq!(resp["uid"], "3c1e0f1a-2b4d-4c6e-8f90-a1b2c3d4e5f6");
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(warnings(resp).is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reserves_nothing() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    for (uid, name) in [("d1", "dry-a"), ("d2", "dry-b")] {
        let out = t.review(&dry_run(pod_review(uid, name, "dry"))).await;
        assert_eq!(response(&out)["allowed"], true, "dry-run {name}: {out}");
    }
    let out = t.review(&pod_review("r1", "real-a", "dry")).await;
    assert_eq!(response(&out)["allowed"], true, "first real pod: {out}");
    let out = t.review(&pod_review("r2", "real-b", "dry")).await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], false, "second real pod: {out}");
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("default/real-a"),
        "the reservation names its pod: {msg}"
    );
    // A dry run now sees the reservation too.
    let out = t.review(&dry_run(pod_review("d3", "dry-c", "dry"))).await;
    assert_eq!(response(&out)["allowed"], false, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pods_on_one_rwop_claim_exactly_one_wins() {
    let t = Arc::new(server_with(claimguard::policy::Policy::default()).await);
    for round in 0..RACE_ROUNDS {
        let claim = format!("race-{round}");
        let mut tasks = Vec::with_capacity(RACERS);
        for i in 0..RACERS {
            let t = Arc::clone(&t);
            let review = pod_review(
                &format!("race-{round}-{i}"),
                &format!("racer-{round}-{i}"),
                &claim,
            );
            tasks.push(tokio::spawn(async move { t.review(&review).await }));
        }
        let mut allowed = 0;
        for task in tasks {
            let out = task.await.expect("request task");
            let resp = &out["response"];
            if resp["allowed"] == true {
                allowed += 1;
            } else {
                assert_eq!(resp["status"]["code"], 403, "{out}");
                let msg = resp["status"]["message"].as_str().unwrap_or_default();
                assert!(msg.starts_with("[rwop-exclusive]"), "{msg}");
            }
        }
        assert_eq!(
            allowed, 1,
            "round {round}: exactly one pod may win claim {claim}"
        );
    }
}

/// `serve --snapshot`: the server is the cluster, so what it admits is stored,
/// and a claim created through it guards its pods from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mode_stores_admitted_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, snapshot_yaml()).unwrap();
    let state = claimguard::cluster::load_snapshot(&[path]).unwrap();
    let cluster = Arc::new(claimguard::cluster::SharedCluster::stored(state));
    let t = TestServer::start(Arc::new(Engine::new(
        claimguard::policy::Policy::default(),
        cluster,
    )))
    .await;

    // Before the claim exists a pod is allowed, with a warning that it will wait.
    let out = t
        .review(&dry_run(pod_review("s0", "db-0", "db-data")))
        .await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(
        warnings(resp)
            .iter()
            .any(|w| w.starts_with("[claim-not-found]")),
        "{out}"
    );

    let pvc: Value = serde_json::from_str(include_str!("fixtures/pvc-create.json")).unwrap();
    let out = t.review(&pvc).await;
    let resp = response(&out);
    assert_eq!(resp["uid"], "b7e2c3d4-1f2a-4b5c-9d8e-7f6a5b4c3d2e");
    assert_eq!(resp["allowed"], true, "{out}");

    let out = t.review(&pod_review("s1", "db-0", "db-data")).await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "{out}");
    assert!(warnings(resp).is_empty(), "the claim is known now: {out}");
    let out = t.review(&pod_review("s2", "db-1", "db-data")).await;
    let resp = response(&out);
    assert_eq!(resp["allowed"], false, "{out}");
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("[rwop-exclusive]") && msg.contains("default/db-0"),
        "{msg}"
    );
}

/// Requests the engine cannot read are counted apart from verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_requests_are_counted_as_errors() {
    let t = server_with(claimguard::policy::Policy::default()).await;
    let (status, _) = t.post_raw("{").await;
    assert_eq!(status, 400);
    t.review(&pod_review("m1", "metric-pod", "free")).await;
    let (_, _, metrics) = t.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"claimguard_admission_requests_total{kind="unknown",operation="unknown",allowed="error"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"claimguard_admission_requests_total{kind="Pod",operation="CREATE",allowed="true"} 1"#
        ),
        "{metrics}"
    );
}
