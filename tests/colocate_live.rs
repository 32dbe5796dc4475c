//! Co-location over the live view: the namespace opt-in label and the claim's
//! holder come from list + watch of a fake API server on 127.0.0.1, and
//! follow their changes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimguard::admission::{Engine, Mutated};
use claimguard::cluster::live::{self, LiveOptions};
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::policy::Policy;
use serde_json::{json, Value};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

fn review(uid: &str) -> Vec<u8> {
    // A ReplicaSet's pod: generateName, no name yet.
    let mut pod = k8s::pod("shop", "", &[("data", false)], None, "Pending");
    pod["metadata"].as_object_mut().unwrap().remove("name");
    pod["metadata"]["generateName"] = json!("web-7b8c9d-");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

/// Asks until the answer's reason is `want` (the watch delivers on its own clock).
async fn until_reason(engine: &Engine, want: &str) -> Mutated {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let m = engine
            .mutate(&review(&format!("uid-{n}")))
            .await
            .expect("review parses");
        if m.summary.reason == want {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "still {:?} ({}) instead of {want}",
            m.summary.reason,
            m.summary.detail
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_label_and_the_holder_follow_the_watch() {
    let server = FakeApiServer::start().await;
    server.add(Kind::Namespace, k8s::namespace("shop", &[]));
    server.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    server.add(
        Kind::Pv,
        k8s::pv("pv-data", &["ReadWriteOnce"], Some(("shop", "data")), "gp3"),
    );
    server.add(
        Kind::Pvc,
        k8s::pvc("shop", "data", &["ReadWriteOnce"], "gp3", Some("pv-data")),
    );
    server.add(
        Kind::Pod,
        k8s::pod(
            "shop",
            "web-old",
            &[("data", false)],
            Some("node-2"),
            "Running",
        ),
    );
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let _live = live::start(server.client(), cluster.clone(), LiveOptions::default())
        .await
        .expect("start live view");
    let engine = Engine::new(Policy::default(), cluster.clone());

    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.is_synced() {
        assert!(Instant::now() < deadline, "live view never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Unlabelled: not opted in.
    until_reason(&engine, "not-opted-in").await;

    // Labelling the namespace turns it on.
    server.modify(
        Kind::Namespace,
        k8s::namespace("shop", &[("claimguard.io/colocate", "true")]),
    );
    let m = until_reason(&engine, "pinned").await;
    assert_eq!(m.summary.pinned_to.as_deref(), Some("node-2"));
    assert_eq!(m.summary.opt_in, Some("namespace-label"));
    assert_eq!(m.summary.name, "web-7b8c9d-<generated>");
    let out: Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(out["response"]["patchType"], "JSONPatch", "{out}");

    // The holder leaves: no one to co-locate with.
    assert!(server.delete(Kind::Pod, "shop", "web-old"));
    until_reason(&engine, "no-users").await;

    // A holder that is not scheduled yet: no node to pin to.
    server.add(
        Kind::Pod,
        k8s::pod("shop", "web-pending", &[("data", false)], None, "Pending"),
    );
    until_reason(&engine, "holder-not-scheduled").await;

    // The label removed: off again.
    server.modify(Kind::Namespace, k8s::namespace("shop", &[]));
    until_reason(&engine, "not-opted-in").await;
}
