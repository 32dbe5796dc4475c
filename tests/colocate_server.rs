//! Co-location through the real server: AdmissionReviews in the shape the API
//! server sends, over TLS, to `POST /mutate`; the patch on the wire is a
//! base64 JSON Patch; the patched pod then passes `POST /validate` without
//! `rwo-cross-node`.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// The cluster: an opted-in namespace `shop` and a plain `default`, each with
/// a ReadWriteOnce claim `data` used by a running pod on worker-1.
fn snapshot_yaml() -> String {
    let mut items = String::new();
    for (ns, labels) in [
        ("shop", "{claimguard.io/colocate: \"true\"}"),
        ("default", "{}"),
    ] {
        items.push_str(&format!(
            "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: {ns}\n    labels: {labels}\n"
        ));
        items.push_str(&format!(
            "- apiVersion: v1\n  kind: PersistentVolumeClaim\n  metadata:\n    name: data\n    namespace: {ns}\n    uid: pvc-{ns}-data\n  spec:\n    accessModes: [ReadWriteOnce]\n    storageClassName: csi-rbd\n    resources:\n      requests:\n        storage: 1Gi\n  status:\n    phase: Bound\n"
        ));
        items.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: web-old\n    namespace: {ns}\n    uid: pod-{ns}-web-old\n  spec:\n    nodeName: worker-1\n    containers:\n    - name: app\n      image: busybox\n      volumeMounts:\n      - name: data\n        mountPath: /data\n    volumes:\n    - name: data\n      persistentVolumeClaim:\n        claimName: data\n  status:\n    phase: Running\n"
        ));
    }
    format!("apiVersion: v1\nkind: List\nitems:\n{items}")
}

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, snapshot_yaml()).unwrap();
    let state = claimguard::cluster::load_snapshot(&[path]).expect("snapshot loads");
    // As `serve --snapshot` runs it: admitted pods are stored.
    let cluster = Arc::new(claimguard::cluster::SharedCluster::stored(state));
    TestServer::start(Arc::new(Engine::new(
        claimguard::policy::Policy::default(),
        cluster,
    )))
    .await
}

/// The fixture pod (a kubectl-created pod as the API server sends it) in `ns`,
/// using claim `data`, with an affinity the patch must keep.
fn review(uid: &str, ns: &str, name: &str) -> Value {
    let mut v = pod_review(uid, name, "data");
    v["request"]["namespace"] = ns.into();
    v["request"]["object"]["metadata"]["namespace"] = ns.into();
    v["request"]["object"]["spec"]["affinity"] = json!({
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]}}
            ],
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1", "z2"]}]},
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
            ]}
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "writer"}}, "topologyKey": "kubernetes.io/hostname"}}
        ]}
    });
    v
}

async fn post(t: &TestServer, path: &str, body: &Value) -> Value {
    let resp = t
        .client
        .post(t.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("response is JSON")
}

/// Decodes `response.patch` as the API server does: a base64 string of a
/// JSON Patch array.
fn patch_of(resp: &Value) -> json_patch::Patch {
    assert_eq!(resp["patchType"], "JSONPatch", "{resp}");
    let text = resp["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("patch must be a base64 string, not {}", resp["patch"]));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("patch is base64");
    let array: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
    assert!(array.is_array(), "a JSON Patch is an array: {array}");
    serde_json::from_value(array).expect("patch is RFC 6902")
}

fn pin() -> Value {
    json!({"key": "metadata.name", "operator": "In", "values": ["worker-1"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_pod_comes_back_as_a_base64_json_patch_and_then_passes_validate() {
    let mut t = server().await;
    let original = review("uid-colo-1", "shop", "web-new");
    let out = post(&t, "/mutate", &original).await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{out}");
    assert_eq!(out["kind"], "AdmissionReview", "{out}");
    let resp = &out["response"];
    assert_eq!(resp["uid"], "uid-colo-1", "{out}");
    assert_eq!(resp["allowed"], true, "{out}");
    let warnings = resp["warnings"].as_array().expect("a warning");
    assert_eq!(warnings.len(), 1, "{out}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.starts_with("[colocate] pinned to node worker-1")
            && w.contains("\"data\"")
            && w.contains("shop/web-old")
            && w.len() < 256
            && !w.contains('\n'),
        "{w}"
    );

    // Apply the patch to the object exactly as it was sent.
    let patch = patch_of(resp);
    let mut pod = original["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod as sent");
    let mut expected = original["request"]["object"].clone();
    let terms = &mut expected["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    terms[0]["matchFields"] = json!([pin()]);
    terms[1]["matchFields"] = json!([pin()]);
    assert_eq!(pod, expected, "only the pin changes; patch: {patch}");

    // The patched pod, sent on to the validating webhook as the API server
    // does after the mutating phase: no rwo-cross-node.
    let mut validate = original.clone();
    validate["request"]["uid"] = "uid-colo-1-validate".into();
    validate["request"]["object"] = pod.clone();
    let out = post(&t, "/validate", &validate).await;
    let resp = &out["response"];
    assert_eq!(resp["allowed"], true, "{out}");
    let rules: Vec<&str> = resp["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rules.iter().all(|w| !w.starts_with("[rwo-cross-node]")),
        "{out}"
    );
    // Two writers on one node: the existing rule still says so.
    assert!(
        rules.iter().any(|w| w.starts_with("[rwo-shared-writer]")),
        "{out}"
    );

    // Reinvocation (reinvocationPolicy: IfNeeded): the patched pod is left alone.
    let mut again = original.clone();
    again["request"]["uid"] = "uid-colo-1-again".into();
    again["request"]["object"] = pod;
    let out = post(&t, "/mutate", &again).await;
    assert_eq!(
        out["response"],
        json!({"uid": "uid-colo-1-again", "allowed": true}),
        "{out}"
    );

    let (_, _, metrics) = t.get("/metrics").await;
    for needle in [
        "claimguard_pods_pinned_total 1",
        r#"claimguard_mutate_requests_total{result="pinned"} 1"#,
        r#"claimguard_mutate_requests_total{result="unchanged"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pod_unpinned_is_denied_where_it_is_pinned_elsewhere() {
    // Control for the test above: the pod pinned to worker-2 without
    // co-location is what /validate refuses.
    let t = server().await;
    let mut r = review("uid-elsewhere", "default", "web-elsewhere");
    r["request"]["object"]["spec"]["nodeName"] = "worker-2".into();
    let out = post(&t, "/mutate", &r).await;
    assert_eq!(
        out["response"],
        json!({"uid": "uid-elsewhere", "allowed": true}),
        "not opted in, and pinned elsewhere: no patch"
    );
    let out = post(&t, "/validate", &r).await;
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[rwo-cross-node]"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_are_patched_the_same_way_and_store_nothing() {
    let t = server().await;
    let mut dry = review("uid-dry", "shop", "web-dry");
    dry["request"]["dryRun"] = true.into();
    let wet = review("uid-wet", "shop", "web-dry");
    let a = post(&t, "/mutate", &dry).await;
    let b = post(&t, "/mutate", &wet).await;
    assert_eq!(
        patch_of(&a["response"]),
        patch_of(&b["response"]),
        "{a} {b}"
    );
    // /mutate stored nothing: a third pod still sees the claim's one user.
    let c = post(&t, "/mutate", &review("uid-third", "shop", "web-third")).await;
    let w = c["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("for pod shop/web-old,"), "{c}");
    let (_, _, metrics) = t.get("/metrics").await;
    assert!(
        metrics.contains("claimguard_pods_pinned_total 2"),
        "dry runs are not counted as pinned pods:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"claimguard_mutate_requests_total{result="pinned"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_not_opted_in_and_other_kinds_get_a_bare_allow() {
    let t = server().await;
    let r = review("uid-plain", "default", "web-plain");
    let out = post(&t, "/mutate", &r).await;
    assert_eq!(
        out["response"],
        json!({"uid": "uid-plain", "allowed": true}),
        "{out}"
    );

    // The same pod with the annotation is pinned.
    let mut annotated = review("uid-annotated", "default", "web-annotated");
    annotated["request"]["object"]["metadata"]["annotations"] =
        json!({"claimguard.io/colocate": "true"});
    let out = post(&t, "/mutate", &annotated).await;
    assert_eq!(out["response"]["patchType"], "JSONPatch", "{out}");

    let cm: Value = serde_json::from_str(include_str!("fixtures/configmap-create.json")).unwrap();
    let out = post(&t, "/mutate", &cm).await;
    assert_eq!(out["response"]["allowed"], true, "{out}");
    assert!(out["response"]["patch"].is_null(), "{out}");
    assert_eq!(out["response"]["uid"], cm["request"]["uid"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_are_a_one_line_400() {
    let t = server().await;
    for body in ["not json", r#"{"kind":"Pod"}"#] {
        let resp = t
            .client
            .post(t.url("/mutate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 400);
        let text = resp.text().await.unwrap();
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }
    let (_, _, metrics) = t.get("/metrics").await;
    assert!(
        metrics.contains(r#"claimguard_mutate_requests_total{result="error"} 2"#),
        "{metrics}"
    );
}

/// The example in docs/colocate.md: a backup Job's pod (generateName, pod
/// annotation opt-in, read-only mount) against the dev cluster
/// `examples/cluster.yaml`, where writer-a holds `shared-data` on worker-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_example_is_pinned_next_to_its_writer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = claimguard::cluster::load_snapshot(&[root.join("examples/cluster.yaml")])
        .expect("dev cluster loads");
    let t = TestServer::start(Arc::new(Engine::new(
        claimguard::policy::Policy::default(),
        Arc::new(claimguard::cluster::SharedCluster::stored(state)),
    )))
    .await;
    let review: Value =
        serde_json::from_str(include_str!("../examples/admission/colocate-pinned.json")).unwrap();
    let out = post(&t, "/mutate", &review).await;
    let resp = &out["response"];
    assert_eq!(resp["uid"], review["request"]["uid"], "{out}");
    let w = resp["warnings"][0].as_str().unwrap_or_default();
    assert!(
        w.starts_with("[colocate] pinned to node worker-1")
            && w.contains("\"shared-data\"")
            && w.contains("shop/writer-a"),
        "{out}"
    );
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(resp)).unwrap();
    let node_affinity = &pod["spec"]["affinity"]["nodeAffinity"];
    assert_eq!(
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [pin()]}]})
    );
    assert_eq!(
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"],
        review["request"]["object"]["spec"]["affinity"]["nodeAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
    );
    let mut validate = review.clone();
    validate["request"]["object"] = pod;
    let out = post(&t, "/validate", &validate).await;
    assert_eq!(
        out["response"],
        json!({"uid": review["request"]["uid"], "allowed": true}),
        "a read-only user pinned next to the writer: nothing to say"
    );
}
