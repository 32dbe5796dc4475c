//! Events for findings on controller-made pods: the warning goes back to the
//! ReplicaSet controller, which drops it, so claimguard also records an
//! `events.k8s.io/v1` Event on the owner — observed here at the fake API
//! server. Dry runs and pods without a controller record nothing.

mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimguard::admission::Engine;
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::events::EventSink;
use claimguard::policy::Policy;
use common::*;
use serde_json::{json, Value};
use support::fake_apiserver::FakeApiServer;

/// A pod the ReplicaSet controller creates, as the API server sends it.
fn rs_pod_review(uid: &str, suffix: &str, dry_run: bool, owned: bool) -> Value {
    let owners = if owned {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "db-7d9f8",
                "uid": "5f1e2d3c-0000-4000-8000-00000000abcd", "controller": true, "blockOwnerDeletion": true}])
    } else {
        json!([])
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("db-7d9f8-{suffix}"), "namespace": "shop",
                         "labels": {"app": "db", "pod-template-hash": "7d9f8"},
                         "ownerReferences": owners},
            "spec": {"containers": [{"name": "pg", "image": "postgres:16",
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pg-data"}}]}},
        "oldObject": null, "dryRun": dry_run,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}})
}

fn cluster() -> Arc<SharedCluster> {
    let mut st = ClusterState::new();
    st.apply_pvc(
        &serde_json::from_value(json!({"metadata": {"name": "pg-data", "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteOnce"]}}))
        .unwrap(),
    );
    st.apply_pod(&serde_json::from_value(json!({"metadata": {"name": "db-7d9f8-aaaaa", "namespace": "shop", "uid": "u-a"},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "pg", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pg-data"}}]},
        "status": {"phase": "Running"}})).unwrap());
    Arc::new(SharedCluster::new(st, true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_on_a_controller_made_pod_becomes_one_event() {
    let api = FakeApiServer::start().await;
    let engine = Arc::new(Engine::new(Policy::default(), cluster()));
    engine.set_event_sink(EventSink::start(api.client(), Some("claimguard-0".into())));
    let server = TestServer::start(engine).await;

    // A dry run: the warning, and no Event.
    let resp = &server.review(&rs_pod_review("u-dry", "", true, true)).await["response"];
    assert_eq!(resp["allowed"], true);
    assert!(
        resp["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("[rwo-shared-writer] "),
        "{resp}"
    );
    // Not made by a controller: the requester saw the warning; no Event.
    let resp = &server
        .review(&rs_pod_review("u-bare", "", false, false))
        .await["response"];
    assert!(resp["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("[rwo-shared-writer] "));
    // Made by the ReplicaSet: an Event.
    let resp = &server.review(&rs_pod_review("u-1", "", false, true)).await["response"];
    assert_eq!(resp["allowed"], true);

    let deadline = Instant::now() + Duration::from_secs(20);
    while api.event_writes().is_empty() {
        assert!(Instant::now() < deadline, "no Event reached the API server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The controller retries in a loop: no second Event within the interval.
    for i in 0..5 {
        let r = &server
            .review(&rs_pod_review(&format!("u-loop-{i}"), "", false, true))
            .await["response"];
        assert_eq!(r["allowed"], true);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = api.event_writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let w = &writes[0];
    assert_eq!(w.method, "POST");
    assert_eq!(w.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    let ev = &w.body;
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "RwoSharedWriter");
    assert_eq!(ev["reportingController"], "claimguard");
    assert_eq!(ev["reportingInstance"], "claimguard-0");
    // The fake API server serves no ReplicaSets, so the owner stays the
    // ReplicaSet (with a readable one, its Deployment).
    assert_eq!(ev["regarding"]["kind"], "ReplicaSet");
    assert_eq!(ev["regarding"]["name"], "db-7d9f8");
    assert_eq!(
        ev["regarding"]["uid"],
        "5f1e2d3c-0000-4000-8000-00000000abcd"
    );
    assert_eq!(ev["regarding"]["namespace"], "shop");
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with(
            "pod db-7d9f8-<generated>: [rwo-shared-writer] PersistentVolumeClaim \"pg-data\""
        ),
        "{note}"
    );
    assert!(
        note.contains("shop/db-7d9f8-aaaaa on node worker-1"),
        "{note}"
    );
}
