//! Scale subresources through the real server: `kubectl scale` and HPAs send
//! an `autoscaling/v1` Scale (fixture `tests/fixtures/scale-deployment.json`,
//! the API server's exact shape) with no template; claimguard finds the
//! workload (the snapshot's in `--snapshot` mode, one GET live) and judges it
//! with the new replica count.

mod common;

use std::sync::Arc;

use claimguard::admission::Engine;
use claimguard::cluster::{SharedCluster, WorkloadFetcher};
use claimguard::objects::{Kind, Workload};
use claimguard::policy::Policy;
use common::*;
use futures::future::BoxFuture;
use serde_json::Value;

const SNAPSHOT: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: pg-data, namespace: shop}
  spec: {accessModes: [ReadWriteOncePod], storageClassName: csi-rbd}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: web-data, namespace: shop}
  spec: {accessModes: [ReadWriteOnce], storageClassName: csi-rbd}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: db, namespace: shop, uid: 0d7f3c62-5b9a-4f7e-8e0b-2c1a9d4e6f10}
  spec:
    replicas: 1
    strategy: {type: Recreate}
    selector: {matchLabels: {app: db}}
    template:
      metadata: {labels: {app: db}}
      spec:
        containers: [{name: pg, image: postgres:16, volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]}]
        volumes: [{name: data, persistentVolumeClaim: {claimName: pg-data}}]
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: web, namespace: shop}
  spec:
    replicas: 1
    serviceName: web
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec:
        containers: [{name: web, image: nginx, volumeMounts: [{name: data, mountPath: /data}]}]
        volumes: [{name: data, persistentVolumeClaim: {claimName: web-data}}]
"#;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/scale-deployment.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture scaling from `old` to `new` replicas.
fn scale(old: i64, new: i64) -> Value {
    let mut r = fixture();
    r["request"]["object"]["spec"]["replicas"] = new.into();
    r["request"]["oldObject"]["spec"]["replicas"] = old.into();
    r
}

fn snapshot_cluster() -> Arc<SharedCluster> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, SNAPSHOT).unwrap();
    let state = claimguard::cluster::load_snapshot(&[path]).expect("snapshot loads");
    Arc::new(SharedCluster::stored(state))
}

fn warnings(resp: &Value) -> Vec<String> {
    resp["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_of_an_rwop_deployment_is_denied() {
    let server =
        TestServer::start(Arc::new(Engine::new(Policy::default(), snapshot_cluster()))).await;
    let out = server.review(&fixture()).await;
    let resp = &out["response"];
    assert_eq!(resp["uid"], "6b4c3a3e-2f0e-4d8e-9a51-0c8f7b1d2e45");
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 403);
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("[workload-rwop-replicas] Deployment \"db\" runs 3 replicas but PersistentVolumeClaim \"pg-data\" is ReadWriteOncePod"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    // Down, or to the same count: always allowed, without a word.
    for (old, new) in [(3, 1), (1, 1), (3, 3)] {
        let resp = &server.review(&scale(old, new)).await["response"];
        assert_eq!(resp["allowed"], true, "{old} -> {new}: {resp}");
        assert!(warnings(resp).is_empty(), "{old} -> {new}: {resp}");
    }
    // Already over the limit: not this change's fault, a warning.
    let resp = &server.review(&scale(2, 4)).await["response"];
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(
        warnings(resp)[0].starts_with("[workload-rwop-replicas] not blocking this update"),
        "{resp}"
    );
    // A workload the cluster does not have: the API server answers 404 itself.
    let mut missing = fixture();
    missing["request"]["name"] = "nope".into();
    let resp = &server.review(&missing).await["response"];
    assert_eq!(resp["allowed"], true, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scale_of_an_rwo_claim_warns() {
    let server =
        TestServer::start(Arc::new(Engine::new(Policy::default(), snapshot_cluster()))).await;
    let mut r = scale(1, 2);
    r["request"]["name"] = "web".into();
    r["request"]["resource"]["resource"] = "statefulsets".into();
    r["request"]["requestResource"]["resource"] = "statefulsets".into();
    let resp = &server.review(&r).await["response"];
    assert_eq!(resp["allowed"], true, "{resp}");
    let w = warnings(resp);
    assert_eq!(w.len(), 1, "{resp}");
    assert!(
        w[0].starts_with("[workload-rwo-replicas] StatefulSet \"web\" runs 2 replicas"),
        "{w:?}"
    );
    // The HPA's own name for the same thing: a Scale of a ReplicationController
    // the cluster does not hold is allowed.
    let mut rc = scale(1, 2);
    rc["request"]["resource"] =
        serde_json::json!({"group": "", "version": "v1", "resource": "replicationcontrollers"});
    assert_eq!(server.review(&rc).await["response"]["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_scale_is_stored_and_dry_runs_are_not() {
    // Recreate strategy, RWOP claim, audit mode off: 1 -> 2 is denied; an
    // allowed scale (policy: warn) updates the snapshot's Deployment.
    let policy = Policy::parse("rules: {workload-rwop-replicas: warn}").unwrap();
    let cluster = snapshot_cluster();
    let server = TestServer::start(Arc::new(Engine::new(policy, cluster.clone()))).await;
    let mut dry = scale(1, 5);
    dry["request"]["dryRun"] = true.into();
    assert_eq!(server.review(&dry).await["response"]["allowed"], true);
    let replicas = |c: &SharedCluster| {
        c.read()
            .workload(Kind::Deployment, "shop", "db")
            .and_then(|w| w.spec.as_ref().and_then(|s| s.replicas))
    };
    assert_eq!(replicas(&cluster), Some(1), "a dry run stores nothing");
    assert_eq!(
        server.review(&scale(1, 2)).await["response"]["allowed"],
        true
    );
    assert_eq!(replicas(&cluster), Some(2));
}

/// Live mode: the view holds no workloads; one GET finds it.
struct OneDeployment(Result<Option<Workload>, String>);

impl WorkloadFetcher for OneDeployment {
    fn fetch(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<Workload>, String>> {
        let r = if (kind, ns, name) == (Kind::Deployment, "shop", "db") {
            self.0.clone()
        } else {
            Ok(None)
        };
        Box::pin(async move { r })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_gets_the_workload_or_says_it_could_not() {
    let deployment: Workload = {
        let docs: Value = serde_yaml_ng::from_str(SNAPSHOT).unwrap();
        serde_json::from_value(docs["items"][3].clone()).unwrap()
    };
    let state = {
        let mut s = claimguard::cluster::ClusterState::new();
        let pvc: claimguard::objects::PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pg-data", "namespace": "shop"}, "spec": {"accessModes": ["ReadWriteOncePod"]}})).unwrap();
        s.apply_pvc(&pvc);
        s
    };
    let cluster = Arc::new(SharedCluster::new(state, true));
    cluster.set_workload_fetcher(Box::new(OneDeployment(Ok(Some(deployment)))));
    let server = TestServer::start(Arc::new(Engine::new(Policy::default(), cluster))).await;
    let resp = &server.review(&fixture()).await["response"];
    assert_eq!(resp["allowed"], false, "{resp}");

    let cluster = Arc::new(SharedCluster::new(
        claimguard::cluster::ClusterState::new(),
        true,
    ));
    cluster.set_workload_fetcher(Box::new(OneDeployment(Err("timed out after 1s".into()))));
    let server = TestServer::start(Arc::new(Engine::new(Policy::default(), cluster))).await;
    let resp = &server.review(&fixture()).await["response"];
    assert_eq!(resp["allowed"], true, "onLookupError: allow; {resp}");
    let w = warnings(resp);
    assert!(
        w[0].starts_with(
            "[lookup-error] could not read Deployment shop/db for this scale request: timed out"
        ),
        "{w:?}"
    );
}
