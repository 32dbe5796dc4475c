//! Co-location decisions: every patch is applied with json-patch to the pod
//! as the API server sends it and compared with the pod expected; every case
//! that must not patch has its own test.

use super::*;
use crate::cluster::{ClaimFacts, ClusterState, LookupError, StorageClassFacts};
use crate::objects::Kind;
use serde_json::{json, Value};

const NS: &str = "colo";

fn obj(v: &Value) -> Object {
    let api = v["apiVersion"].as_str().unwrap_or("v1");
    let kind = v["kind"].as_str().unwrap();
    Object::from_value(Kind::from_api_version(api, kind).unwrap(), v).unwrap()
}

fn pvc(ns: &str, name: &str, modes: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"accessModes": modes, "storageClassName": "standard"}})
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A pod in `ns` using `claims` (name, read-only mount), as the API server
/// sends it on CREATE: defaults filled in, fields claimguard never reads.
fn pod_in(ns: &str, name: &str, claims: &[(&str, bool)]) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"app": "web"},
                   "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
      "spec": {
        "containers": [{"name": "main", "image": "busybox:1.36", "resources": {},
           "volumeMounts": claims.iter().enumerate().map(|(i, (_, ro))| json!({"name": format!("vol{i}"), "mountPath": format!("/d{i}"), "readOnly": ro})).collect::<Vec<_>>()}],
        "volumes": claims.iter().enumerate().map(|(i, (c, _))| json!({"name": format!("vol{i}"), "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>(),
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "nodeSelector": {"disktype": "ssd"},
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "priority": 0
      },
      "status": {"phase": "Pending"}})
}

fn pod(name: &str, claims: &[(&str, bool)]) -> Value {
    pod_in(NS, name, claims)
}

fn on(mut p: Value, node: &str) -> Value {
    p["spec"]["nodeName"] = json!(node);
    p["status"]["phase"] = json!("Running");
    p
}

fn set(mut p: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    p.pointer_mut(parent).unwrap()[key] = value;
    p
}

fn base() -> Vec<Value> {
    let mut out = vec![
        namespace(NS, json!({"claimguard.io/colocate": "true"})),
        namespace("plain", json!({})),
        namespace(
            "quiet",
            json!({"claimguard.io/colocate": "true", "claimguard.io/mode": "off"}),
        ),
        namespace("kube-system", json!({"claimguard.io/colocate": "true"})),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-rwx"},
               "spec": {"accessModes": ["ReadWriteMany"]}}),
    ];
    for ns in [NS, "plain", "quiet", "kube-system"] {
        out.push(pvc(ns, "data", &["ReadWriteOnce"]));
        out.push(pvc(ns, "logs", &["ReadWriteOnce"]));
        out.push(pvc(ns, "free", &["ReadWriteOnce"]));
        out.push(pvc(ns, "shared", &["ReadWriteMany"]));
        out.push(pvc(ns, "ro-many", &["ReadOnlyMany"]));
        out.push(pvc(ns, "rwop", &["ReadWriteOncePod"]));
        let mut bound = pvc(ns, "rwo-on-rwx-pv", &["ReadWriteOnce"]);
        bound["spec"]["volumeName"] = json!("pv-rwx");
        out.push(bound);
        // The holder of `data`, and of the other claims, on worker-1.
        out.push(on(pod_in(ns, "old", &[("data", false)]), "worker-1"));
        for c in ["shared", "ro-many", "rwop", "rwo-on-rwx-pv"] {
            out.push(on(
                pod_in(ns, &format!("holder-{c}"), &[(c, false)]),
                "worker-1",
            ));
        }
    }
    out
}

fn state(extra: &[Value]) -> ClusterState {
    let mut s = ClusterState::new();
    for v in base().iter().chain(extra) {
        s.apply_object(&obj(v));
    }
    s
}

fn decide_with(policy: &Policy, view: &dyn ClusterView, op: Operation, pod: &Value) -> Decision {
    let o = obj(pod);
    let ns = pod["metadata"]["namespace"].as_str().unwrap().to_string();
    let req = Request {
        operation: op,
        namespace: &ns,
        object: &o,
        old_object: None,
    };
    decide(policy, &req, view)
}

fn decision(existing: &[Value], pod: &Value) -> Decision {
    decide_with(&Policy::default(), &state(existing), Operation::Create, pod)
}

fn pinned(existing: &[Value], pod: &Value) -> Pinned {
    match decision(existing, pod) {
        Decision::Pin(p) => p,
        other => panic!("expected a pin, got {other:?}"),
    }
}

fn unchanged(existing: &[Value], pod: &Value) -> Unchanged {
    match decision(existing, pod) {
        Decision::Unchanged(u) => u,
        other => panic!("expected no patch, got {other:?}"),
    }
}

fn apply(pod: &Value, patch: &Patch) -> Value {
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, patch).unwrap_or_else(|e| panic!("patch {patch} fails: {e}"));
    doc
}

fn pin(node: &str) -> Value {
    json!({"key": "metadata.name", "operator": "In", "values": [node]})
}

fn required(terms: Value) -> Value {
    json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}})
}

/// Patch the pod, compare with `expected`, and check that the patched pod
/// gets no second patch.
fn assert_patch(existing: &[Value], original: &Value, expected: &Value) -> Pinned {
    let p = pinned(existing, original);
    let patched = apply(original, &p.patch);
    assert_eq!(&patched, expected, "patch: {}", p.patch);
    assert_eq!(
        unchanged(existing, &patched),
        Unchanged::AlreadyOnNode {
            node: p.node.clone()
        },
        "a patched pod must not be patched again"
    );
    p
}

// ---- patches ----------------------------------------------------------------

#[test]
fn no_affinity_gets_one_created() {
    let original = pod("new", &[("data", false)]);
    let expected = set(
        original.clone(),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([{"matchFields": [pin("worker-1")]}]))}),
    );
    let p = assert_patch(&[], &original, &expected);
    assert_eq!(p.node, "worker-1");
    assert_eq!(p.claims, vec!["data"]);
    assert_eq!(p.holders, vec!["colo/old"]);
    assert_eq!(p.opt_in, OptIn::Namespace);
    // One operation: the whole missing level.
    assert_eq!(p.patch.0.len(), 1);
    assert_eq!(p.patch.0[0].path().to_string(), "/spec/affinity");
}

#[test]
fn pod_anti_affinity_stays_and_node_affinity_is_added() {
    let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}});
    let original = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        anti.clone(),
    );
    let mut want_affinity = anti;
    want_affinity["nodeAffinity"] = required(json!([{"matchFields": [pin("worker-1")]}]));
    let expected = set(original.clone(), "/spec/affinity", want_affinity);
    assert_patch(&[], &original, &expected);
}

#[test]
fn preferred_terms_stay_and_required_is_added() {
    let preferred = json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]}}]});
    let original = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": preferred.clone()}),
    );
    let mut want = preferred;
    want["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [{"matchFields": [pin("worker-1")]}]});
    let expected = set(
        original.clone(),
        "/spec/affinity",
        json!({"nodeAffinity": want}),
    );
    assert_patch(&[], &original, &expected);
}

#[test]
fn every_term_gets_the_pin() {
    // Terms are ORed: a pin in one term only would leave the others open.
    let terms = json!([
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["worker-9"]}]},
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
         "matchFields": null}
    ]);
    let original = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": required(terms)}),
    );
    let expected = set(
        original.clone(),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}],
             "matchFields": [pin("worker-1")]},
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["worker-9"]}, pin("worker-1")]},
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
             "matchFields": [pin("worker-1")]}
        ]))}),
    );
    let p = assert_patch(&[], &original, &expected);
    assert_eq!(p.patch.0.len(), 3);
}

#[test]
fn a_term_already_on_the_node_is_left_alone() {
    let terms = json!([
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-1"]}]},
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-1", "worker-2"]}]},
        {}
    ]);
    let original = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": required(terms)}),
    );
    let expected = set(
        original.clone(),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-1"]}]},
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-1", "worker-2"]}],
             "matchFields": [pin("worker-1")]},
            // An empty term matches no node; pinning it would open it to worker-1.
            {}
        ]))}),
    );
    let p = assert_patch(&[], &original, &expected);
    assert_eq!(p.patch.0.len(), 1);
}

#[test]
fn null_levels_are_replaced() {
    for (pointer, value, expected_at) in [
        ("/spec/affinity", Value::Null, "/spec/affinity"),
        (
            "/spec/affinity",
            json!({"nodeAffinity": null}),
            "/spec/affinity/nodeAffinity",
        ),
        (
            "/spec/affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": null}}),
            "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            "/spec/affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": null}}}),
            "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        ),
    ] {
        let original = set(pod("new", &[("data", false)]), pointer, value);
        let expected = set(
            pod("new", &[("data", false)]),
            "/spec/affinity",
            json!({"nodeAffinity": required(json!([{"matchFields": [pin("worker-1")]}]))}),
        );
        let p = assert_patch(&[], &original, &expected);
        assert_eq!(p.patch.0[0].path().to_string(), expected_at);
    }
}

#[test]
fn read_only_users_and_read_only_pods_are_pinned() {
    // A read-only mount still attaches the volume to its node.
    let reader = on(pod("reader", &[("free", true)]), "worker-3");
    let original = pod("new", &[("free", false)]);
    let p = pinned(std::slice::from_ref(&reader), &original);
    assert_eq!(p.node, "worker-3");
    let p = pinned(&[reader], &pod("new", &[("free", true)]));
    assert_eq!(p.node, "worker-3");
}

#[test]
fn several_claims_on_one_node_pin_once() {
    let logs_holder = on(pod("logger", &[("logs", false)]), "worker-1");
    let original = pod("new", &[("data", false), ("logs", true), ("shared", false)]);
    let expected = set(
        original.clone(),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([{"matchFields": [pin("worker-1")]}]))}),
    );
    let p = assert_patch(&[logs_holder], &original, &expected);
    assert_eq!(p.claims, vec!["data", "logs"]);
    assert_eq!(p.holders, vec!["colo/old", "colo/logger"]);
    assert!(
        p.warning
            .contains(r#"PersistentVolumeClaims "data", "logs" are"#),
        "{}",
        p.warning
    );
}

#[test]
fn a_claim_without_users_does_not_stop_the_pin() {
    let p = pinned(&[], &pod("new", &[("free", false), ("data", false)]));
    assert_eq!(p.node, "worker-1");
    assert_eq!(p.claims, vec!["data"]);
}

#[test]
fn the_warning_says_what_and_why_in_one_line() {
    let p = pinned(&[], &pod("new", &[("data", false)]));
    assert_eq!(
        p.warning,
        "[colocate] pinned to node worker-1: ReadWriteOnce PersistentVolumeClaim \"data\" is attached there for pod colo/old, and on another node it would hang (Multi-Attach error); annotate claimguard.io/colocate=false to opt out"
    );
    assert!(p.warning.len() < 256);

    // Long names are cut to what the API server passes through.
    let long = "c".repeat(200);
    let extra = vec![
        pvc(NS, &long, &["ReadWriteOnce"]),
        on(pod(&"h".repeat(200), &[(&long, false)]), "worker-1"),
        on(pod("h2", &[(&long, false)]), "worker-1"),
        on(pod("h3", &[(&long, false)]), "worker-1"),
    ];
    let p = pinned(&extra, &pod("new", &[(&long, false)]));
    assert!(p.warning.starts_with("[colocate] pinned to node worker-1"));
    assert!(p.warning.len() < 256, "{}", p.warning.len());
    assert!(!p.warning.contains('\n'));
}

#[test]
fn opt_in_by_policy_annotation_or_namespace() {
    let in_plain = pod_in("plain", "new", &[("data", false)]);
    assert_eq!(
        unchanged(&[], &in_plain),
        Unchanged::NotOptedIn,
        "off by default"
    );
    let mut annotated = in_plain.clone();
    annotated["metadata"]["annotations"]["claimguard.io/colocate"] = json!("true");
    assert_eq!(pinned(&[], &annotated).opt_in, OptIn::Annotation);
    let everywhere = Policy::parse("colocate: true").unwrap();
    match decide_with(&everywhere, &state(&[]), Operation::Create, &in_plain) {
        Decision::Pin(p) => assert_eq!(p.opt_in, OptIn::Policy),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pinned(&[], &pod("new", &[("data", false)])).opt_in,
        OptIn::Namespace
    );
}

// ---- no patch -----------------------------------------------------------------

#[test]
fn not_opted_in() {
    let p = pod_in("plain", "new", &[("data", false)]);
    assert_eq!(unchanged(&[], &p), Unchanged::NotOptedIn);
}

#[test]
fn the_pod_annotation_false_opts_out() {
    let mut p = pod("new", &[("data", false)]);
    p["metadata"]["annotations"]["claimguard.io/colocate"] = json!("false");
    assert_eq!(unchanged(&[], &p), Unchanged::NotOptedIn);
    let everywhere = Policy::parse("colocate: true").unwrap();
    assert_eq!(
        decide_with(&everywhere, &state(&[]), Operation::Create, &p),
        Decision::Unchanged(Unchanged::NotOptedIn)
    );
}

#[test]
fn exempt_and_off_namespaces_are_skipped() {
    let p = pod_in("kube-system", "new", &[("data", false)]);
    assert_eq!(unchanged(&[], &p), Unchanged::Skipped("exempt namespace"));
    let p = pod_in("quiet", "new", &[("data", false)]);
    assert!(matches!(unchanged(&[], &p), Unchanged::Skipped(_)));
}

#[test]
fn only_pod_creation() {
    let p = pod("new", &[("data", false)]);
    assert_eq!(
        decide_with(&Policy::default(), &state(&[]), Operation::Update, &p),
        Decision::Unchanged(Unchanged::NotAPodCreate)
    );
    let pvc = pvc(NS, "another", &["ReadWriteOnce"]);
    assert_eq!(
        decide_with(&Policy::default(), &state(&[]), Operation::Create, &pvc),
        Decision::Unchanged(Unchanged::NotAPodCreate)
    );
}

#[test]
fn the_claim_has_no_users() {
    assert_eq!(
        unchanged(&[], &pod("new", &[("free", false)])),
        Unchanged::NoUsers
    );
}

#[test]
fn terminating_users_do_not_count() {
    let mut leaving = on(pod("leaving", &[("free", false)]), "worker-2");
    leaving["metadata"]["deletionTimestamp"] = json!("2026-12-01T20:00:00Z");
    assert_eq!(
        unchanged(&[leaving], &pod("new", &[("free", false)])),
        Unchanged::NoUsers
    );
}

#[test]
fn finished_users_do_not_count() {
    let mut done = on(pod("done", &[("free", false)]), "worker-2");
    done["status"]["phase"] = json!("Succeeded");
    assert_eq!(
        unchanged(&[done], &pod("new", &[("free", false)])),
        Unchanged::NoUsers
    );
}

#[test]
fn a_pod_is_not_its_own_holder() {
    // Reinvocation, or a pod the index already shows: the same name is not a user.
    let itself = on(pod("new", &[("free", false)]), "worker-2");
    assert_eq!(
        unchanged(&[itself], &pod("new", &[("free", false)])),
        Unchanged::NoUsers
    );
}

#[test]
fn users_on_several_nodes() {
    let extra = [on(pod("other", &[("data", false)]), "worker-2")];
    assert_eq!(
        unchanged(&extra, &pod("new", &[("data", false)])),
        Unchanged::SeveralNodes {
            claim: "data".into(),
            nodes: vec!["worker-1".into(), "worker-2".into()]
        }
    );
}

#[test]
fn the_holder_is_not_scheduled_yet() {
    let extra = [pod("pending", &[("free", false)])];
    assert_eq!(
        unchanged(&extra, &pod("new", &[("free", false)])),
        Unchanged::HolderNotScheduled {
            claim: "free".into(),
            pod: "colo/pending".into()
        }
    );
}

#[test]
fn the_pod_already_runs_on_the_node() {
    let p = on(pod("new", &[("data", false)]), "worker-1");
    assert_eq!(
        unchanged(&[], &p),
        Unchanged::AlreadyOnNode {
            node: "worker-1".into()
        }
    );
}

#[test]
fn the_pod_is_pinned_only_to_the_node() {
    let by_selector = set(
        pod("new", &[("data", false)]),
        "/spec/nodeSelector",
        json!({"kubernetes.io/hostname": "worker-1", "disktype": "ssd"}),
    );
    let by_affinity = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-1"]}]},
            {"matchFields": [pin("worker-1")]}
        ]))}),
    );
    for p in [by_selector, by_affinity] {
        assert_eq!(
            unchanged(&[], &p),
            Unchanged::AlreadyOnNode {
                node: "worker-1".into()
            }
        );
    }
}

#[test]
fn the_pod_is_pinned_elsewhere() {
    let by_name = on(pod("new", &[("data", false)]), "worker-2");
    let by_selector = set(
        pod("new", &[("data", false)]),
        "/spec/nodeSelector",
        json!({"kubernetes.io/hostname": "worker-2"}),
    );
    let by_affinity = set(
        pod("new", &[("data", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": required(json!([
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["worker-1"]}]}
        ]))}),
    );
    for p in [by_name, by_selector, by_affinity] {
        assert_eq!(
            unchanged(&[], &p),
            Unchanged::PinnedElsewhere {
                node: "worker-1".into()
            }
        );
    }
}

#[test]
fn claims_on_different_nodes() {
    let extra = [on(pod("logger", &[("logs", false)]), "worker-2")];
    assert_eq!(
        unchanged(&extra, &pod("new", &[("data", false), ("logs", false)])),
        Unchanged::ClaimsDisagree {
            first: ("data".into(), "worker-1".into()),
            second: ("logs".into(), "worker-2".into())
        }
    );
}

#[test]
fn multi_node_and_rwop_claims_are_not_pinned() {
    for claim in ["shared", "ro-many", "rwop", "rwo-on-rwx-pv"] {
        assert_eq!(
            unchanged(&[], &pod("new", &[(claim, false)])),
            Unchanged::NoSingleNodeClaim,
            "{claim}"
        );
    }
}

#[test]
fn missing_claims_and_pods_without_claims() {
    assert_eq!(
        unchanged(&[], &pod("new", &[("nowhere", false)])),
        Unchanged::NoSingleNodeClaim
    );
    assert_eq!(
        unchanged(&[], &pod("new", &[])),
        Unchanged::NoSingleNodeClaim
    );
}

struct Unreadable;

impl ClusterView for Unreadable {
    fn claim(&self, _: &str, _: &str) -> Result<Option<ClaimFacts>, LookupError> {
        Err(LookupError::NotReady)
    }
    fn consumers(&self, _: &str, _: &str) -> Result<Vec<Consumer<'_>>, LookupError> {
        Err(LookupError::NotReady)
    }
    fn namespace_mode(&self, _: &str) -> Result<Option<NamespaceMode>, LookupError> {
        Ok(None)
    }
    fn namespace_colocates(&self, _: &str) -> Result<bool, LookupError> {
        Ok(true)
    }
    fn storage_class(&self, _: &str) -> Option<StorageClassFacts<'_>> {
        None
    }
    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>> {
        None
    }
}

#[test]
fn an_unreadable_view_patches_nothing() {
    let d = decide_with(
        &Policy::default(),
        &Unreadable,
        Operation::Create,
        &pod("new", &[("data", false)]),
    );
    let Decision::Unchanged(u) = d else {
        panic!("{d:?}")
    };
    assert_eq!(u.reason(), "lookup-error");
    assert!(u.to_string().contains("not synced"), "{u}");
}

#[test]
fn the_namespace_label_follows_the_namespace() {
    let mut s = state(&[]);
    let p = pod_in("plain", "new", &[("data", false)]);
    let run = |s: &ClusterState| decide_with(&Policy::default(), s, Operation::Create, &p);
    assert_eq!(run(&s), Decision::Unchanged(Unchanged::NotOptedIn));
    s.apply_object(&obj(&namespace(
        "plain",
        json!({"claimguard.io/colocate": "true"}),
    )));
    assert!(matches!(run(&s), Decision::Pin(_)), "labelled");
    // Any other value is not an opt-in.
    s.apply_object(&obj(&namespace(
        "plain",
        json!({"claimguard.io/colocate": "yes"}),
    )));
    assert_eq!(run(&s), Decision::Unchanged(Unchanged::NotOptedIn));
    s.apply_object(&obj(&namespace(
        "plain",
        json!({"claimguard.io/colocate": "true"}),
    )));
    s.delete_namespace("plain");
    assert_eq!(run(&s), Decision::Unchanged(Unchanged::NotOptedIn));
}

#[test]
fn the_policy_key_is_a_boolean() {
    assert!(!Policy::default().colocate);
    assert!(Policy::parse("colocate: true").unwrap().colocate);
    assert!(!Policy::parse("colocate: false").unwrap().colocate);
    let e = Policy::parse("colocate: everywhere").unwrap_err();
    assert!(e.contains("colocate") && !e.contains('\n'), "{e}");
}
