//! Table-driven tests for every rule, exemption, mode and action.

use super::*;
use crate::cluster::{ClusterState, Consumer, LookupError, StorageClassFacts};
use crate::objects::{self, Object};
use serde_json::{json, Value};

// ---- builders -----------------------------------------------------------------

fn obj(v: Value) -> Object {
    let api = v["apiVersion"].as_str().unwrap_or("v1").to_string();
    let kind = v["kind"].as_str().unwrap().to_string();
    Object::from_value(objects::Kind::from_api_version(&api, &kind).unwrap(), &v).unwrap()
}

fn pvc(name: &str, modes: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"accessModes": modes, "storageClassName": "standard"}})
}

fn pvc_class(name: &str, modes: &[&str], class: Option<&str>) -> Value {
    let mut v = pvc(name, modes);
    match class {
        Some(c) => v["spec"]["storageClassName"] = json!(c),
        None => {
            v["spec"]
                .as_object_mut()
                .unwrap()
                .remove("storageClassName");
        }
    }
    v
}

fn bound(mut v: Value, pv: &str) -> Value {
    v["spec"]["volumeName"] = json!(pv);
    v
}

fn pv(name: &str, modes: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
           "spec": {"accessModes": modes}})
}

fn sc(name: &str, provisioner: &str, default: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}},
           "provisioner": provisioner})
}

fn ns(name: &str, mode: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"claimguard.io/mode": mode}}})
}

/// A pod using `claims` (name, readOnly mount) in `default`.
fn pod(name: &str, claims: &[(&str, bool)]) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
    "spec": {
       "containers": [{"name": "main", "image": "busybox",
          "volumeMounts": claims.iter().enumerate().map(|(i, (_, ro))| json!({"name": format!("vol{i}"), "mountPath": format!("/d{i}"), "readOnly": ro})).collect::<Vec<_>>()}],
       "volumes": claims.iter().enumerate().map(|(i, (c, _))| json!({"name": format!("vol{i}"), "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>()
    }})
}

fn on(mut p: Value, node: &str) -> Value {
    p["spec"]["nodeName"] = json!(node);
    p
}

fn with(mut p: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut p
    } else {
        p.pointer_mut(parent).unwrap()
    };
    target[key] = value;
    p
}

fn workload(kind: &str, api: &str, name: &str, spec: Value, claims: &[&str]) -> Value {
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": {
        "containers": [{"name": "main", "image": "postgres",
           "volumeMounts": claims.iter().map(|c| json!({"name": c, "mountPath": "/data"})).collect::<Vec<_>>()}],
        "volumes": claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>()}});
    let mut s = spec;
    if kind == "CronJob" {
        s["jobTemplate"]["spec"]["template"] = template;
    } else {
        s["template"] = template;
    }
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": s})
}

fn deploy(name: &str, spec: Value, claims: &[&str]) -> Value {
    workload("Deployment", "apps/v1", name, spec, claims)
}

/// The cluster every case starts from.
fn base() -> Vec<Value> {
    vec![
        sc("standard", "ebs.csi.aws.com", true),
        sc("efs", "efs.csi.aws.com", false),
        sc("legacy", "kubernetes.io/aws-ebs", false),
        pvc("rwop", &["ReadWriteOncePod"]),
        pvc("rwo", &["ReadWriteOnce"]),
        pvc("rwx", &["ReadWriteMany"]),
        pvc("rwo-rox", &["ReadWriteOnce", "ReadOnlyMany"]),
        bound(pvc("rwo-on-rwx-pv", &["ReadWriteOnce"]), "pv-rwx"),
        pv("pv-rwx", &["ReadWriteMany"]),
        bound(pvc("rwo-on-rwop-pv", &["ReadWriteOnce"]), "pv-rwop"),
        pv("pv-rwop", &["ReadWriteOncePod"]),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        ns("audited", "audit"),
        ns("skipped", "off"),
    ]
}

fn state(extra: &[Value]) -> ClusterState {
    let mut s = ClusterState::new();
    for v in base().iter().chain(extra) {
        s.apply_object(&obj(v.clone()));
    }
    s
}

fn run(
    policy: &Policy,
    existing: &[Value],
    op: Operation,
    object: Value,
    old: Option<Value>,
) -> Verdict {
    let s = state(existing);
    let o = obj(object);
    let old = old.map(obj);
    let ns = o
        .metadata()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    evaluate(
        policy,
        &Request {
            operation: op,
            namespace: &ns,
            object: &o,
            old_object: old.as_ref(),
        },
        &s,
    )
}

fn fired(v: &Verdict) -> Vec<(&'static str, Effect)> {
    v.findings.iter().map(|f| (f.rule.id(), f.effect)).collect()
}

use Effect::*;

struct Case {
    name: &'static str,
    existing: Vec<Value>,
    object: Value,
    want: Vec<(&'static str, Effect)>,
    /// Substrings the first message must contain.
    says: Vec<&'static str>,
}

fn case(
    name: &'static str,
    existing: Vec<Value>,
    object: Value,
    want: Vec<(&'static str, Effect)>,
) -> Case {
    Case {
        name,
        existing,
        object,
        want,
        says: vec![],
    }
}

fn check(cases: Vec<Case>) {
    let policy = Policy::default();
    for c in cases {
        let v = run(&policy, &c.existing, Operation::Create, c.object, None);
        assert_eq!(fired(&v), c.want, "case {:?}: {:#?}", c.name, v);
        let denied = c.want.iter().any(|(_, e)| *e == Deny);
        assert_eq!(v.allowed, !denied, "case {:?}", c.name);
        if let Some(first) = v.findings.first() {
            for s in &c.says {
                assert!(
                    first.message.contains(s),
                    "case {:?}: {:?} lacks {s:?}",
                    c.name,
                    first.message
                );
            }
            assert!(first
                .message
                .starts_with(&format!("[{}] ", first.rule.id())));
        }
        for w in &v.warnings {
            assert!(w.chars().count() < 256 && !w.contains('\n'), "{w}");
        }
    }
}

// ---- pods -----------------------------------------------------------------------

#[test]
fn pod_rwop_rules() {
    let holder = on(pod("pod-a", &[("rwop", false)]), "worker-1");
    let mut terminating = holder.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-11-21T10:00:00Z");
    let mut finished = holder.clone();
    finished["status"] = json!({"phase": "Succeeded"});
    let mut failed = holder.clone();
    failed["status"] = json!({"phase": "Failed"});
    let other_ns = with(holder.clone(), "/metadata/namespace", json!("team-b"));
    let mut c = case(
        "second consumer of an RWOP claim",
        vec![holder.clone()],
        pod("pod-b", &[("rwop", false)]),
        vec![("rwop-exclusive", Deny)],
    );
    c.says = vec![
        "PersistentVolumeClaim \"rwop\" is ReadWriteOncePod",
        "default/pod-a on node worker-1",
        "delete that pod first",
    ];
    let mut t = case(
        "only holder is terminating",
        vec![terminating],
        pod("pod-b", &[("rwop", false)]),
        vec![("rwop-terminating-holder", Warn)],
    );
    t.says = vec![
        "terminating pod default/pod-a on node worker-1",
        "will wait",
    ];
    check(vec![
        c,
        t,
        case(
            "holder finished",
            vec![finished],
            pod("pod-b", &[("rwop", false)]),
            vec![],
        ),
        case(
            "holder failed",
            vec![failed],
            pod("pod-b", &[("rwop", false)]),
            vec![],
        ),
        case(
            "holder in another namespace",
            vec![other_ns],
            pod("pod-b", &[("rwop", false)]),
            vec![],
        ),
        case(
            "same pod again",
            vec![holder.clone()],
            pod("pod-a", &[("rwop", false)]),
            vec![],
        ),
        case(
            "same uid",
            vec![holder.clone()],
            with(
                pod("renamed", &[("rwop", false)]),
                "/metadata/uid",
                json!("uid-pod-a"),
            ),
            vec![],
        ),
        case(
            "read-only does not share RWOP",
            vec![holder.clone()],
            pod("pod-b", &[("rwop", true)]),
            vec![("rwop-exclusive", Deny)],
        ),
        case(
            "unscheduled holder still holds",
            vec![pod("pod-a", &[("rwop", false)])],
            pod("pod-b", &[("rwop", false)]),
            vec![("rwop-exclusive", Deny)],
        ),
        case(
            "bound PV's RWOP wins over the PVC's RWO",
            vec![on(pod("pod-a", &[("rwo-on-rwop-pv", false)]), "n1")],
            pod("pod-b", &[("rwo-on-rwop-pv", false)]),
            vec![("rwop-exclusive", Deny)],
        ),
        case(
            "free RWOP claim",
            vec![],
            pod("pod-b", &[("rwop", false)]),
            vec![],
        ),
    ]);
}

#[test]
fn pod_rwo_rules() {
    let a = on(pod("pod-a", &[("rwo", false)]), "worker-1");
    let a_ro = on(pod("pod-a", &[("rwo", true)]), "worker-1");
    let mut a_term = a.clone();
    a_term["metadata"]["deletionTimestamp"] = json!("2026-11-21T10:00:00Z");
    let pinned = |p: Value, node: &str| on(p, node);
    let by_selector = with(
        pod("pod-b", &[("rwo", false)]),
        "/spec/nodeSelector",
        json!({"kubernetes.io/hostname": "worker-2"}),
    );
    let affinity = |op: &str, values: &[&str]| {
        with(
            pod("pod-b", &[("rwo", false)]),
            "/spec/affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": op, "values": values}]}]}}}),
        )
    };
    let daemon_style = with(
        pod("pod-b", &[("rwo", false)]),
        "/spec/affinity",
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-3"]}]}]}}}),
    );
    let mut cross = case(
        "RWO pinned to another node",
        vec![a.clone()],
        pinned(pod("pod-b", &[("rwo", false)]), "worker-2"),
        vec![("rwo-cross-node", Deny)],
    );
    cross.says = vec![
        "ReadWriteOnce",
        "already used by pod default/pod-a on node worker-1",
        "pinned to node worker-2",
        "Multi-Attach",
        "run it on worker-1",
    ];
    let mut shared = case(
        "RWO second writer",
        vec![a.clone()],
        pod("pod-b", &[("rwo", false)]),
        vec![("rwo-shared-writer", Warn)],
    );
    shared.says = vec![
        "is ReadWriteOnce",
        "written by pod default/pod-a on node worker-1",
        "must share worker-1",
        "readOnly",
    ];
    let mut source_ro = pod("pod-b", &[("rwo", false)]);
    source_ro["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    let annotated = with(
        pod("pod-b", &[("rwo", false)]),
        "/metadata/annotations",
        json!({"claimguard.io/allow-shared-writers": "true"}),
    );
    let ephemeral = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
                 "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOncePod"]}}}}]}});
    check(vec![
        cross,
        case(
            "pinned by nodeSelector",
            vec![a.clone()],
            by_selector,
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "affinity NotIn holder's node",
            vec![a.clone()],
            affinity("NotIn", &["worker-1"]),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "affinity In other node",
            vec![a.clone()],
            affinity("In", &["worker-2", "worker-3"]),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "daemonset-style matchFields",
            vec![a.clone()],
            daemon_style,
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "affinity allows holder's node",
            vec![a.clone()],
            affinity("In", &["worker-1", "worker-2"]),
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "pinned to the same node",
            vec![a.clone()],
            pinned(pod("pod-b", &[("rwo", false)]), "worker-1"),
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "terminating holder on another node",
            vec![a_term],
            pinned(pod("pod-b", &[("rwo", false)]), "worker-2"),
            vec![],
        ),
        case(
            "holder not scheduled yet",
            vec![pod("pod-a", &[("rwo", false)])],
            pinned(pod("pod-b", &[("rwo", false)]), "worker-2"),
            vec![("rwo-shared-writer", Warn)],
        ),
        shared,
        case(
            "new pod mounts read-only",
            vec![a.clone()],
            pod("pod-b", &[("rwo", true)]),
            vec![("rwo-readonly-placement", Warn)],
        ),
        case(
            "volume source readOnly",
            vec![a.clone()],
            source_ro,
            vec![("rwo-readonly-placement", Warn)],
        ),
        case(
            "existing consumer is read-only",
            vec![a_ro],
            pod("pod-b", &[("rwo", false)]),
            vec![],
        ),
        case(
            "allow-shared-writers annotation",
            vec![a.clone()],
            annotated,
            vec![],
        ),
        case(
            "RWX claim",
            vec![on(pod("pod-a", &[("rwx", false)]), "n1")],
            on(pod("pod-b", &[("rwx", false)]), "n2"),
            vec![],
        ),
        case(
            "RWO+ROX claim",
            vec![on(pod("pod-a", &[("rwo-rox", false)]), "n1")],
            on(pod("pod-b", &[("rwo-rox", false)]), "n2"),
            vec![],
        ),
        case(
            "bound PV's RWX wins over the PVC's RWO",
            vec![on(pod("pod-a", &[("rwo-on-rwx-pv", false)]), "n1")],
            on(pod("pod-b", &[("rwo-on-rwx-pv", false)]), "n2"),
            vec![],
        ),
        case(
            "ephemeral volumes are never shared",
            vec![],
            ephemeral,
            vec![],
        ),
    ]);
}

#[test]
fn pod_claim_not_found() {
    let mut c = case(
        "missing claim",
        vec![],
        pod("pod-b", &[("nope", false)]),
        vec![("claim-not-found", Warn)],
    );
    c.says = vec!["\"nope\" does not exist in namespace default", "Pending"];
    check(vec![c]);
}

#[test]
fn pod_with_two_claims_reports_each() {
    let a = on(pod("pod-a", &[("rwop", false), ("rwo", false)]), "worker-1");
    check(vec![case(
        "two claims",
        vec![a],
        on(pod("pod-b", &[("rwop", false), ("rwo", false)]), "worker-2"),
        vec![("rwop-exclusive", Deny), ("rwo-cross-node", Deny)],
    )]);
    let v = run(
        &Policy::default(),
        &[on(
            pod("pod-a", &[("rwop", false), ("rwo", false)]),
            "worker-1",
        )],
        Operation::Create,
        on(pod("pod-b", &[("rwop", false), ("rwo", false)]), "worker-2"),
        None,
    );
    let d = v.denial.unwrap();
    assert!(
        d.starts_with("[rwop-exclusive] ") && d.contains("; [rwo-cross-node] "),
        "{d}"
    );
}

// ---- PVCs -----------------------------------------------------------------------

#[test]
fn pvc_rules() {
    let waiting = |n: &str| pod(n, &[("new-rwop", false)]);
    let mut two = case(
        "RWOP PVC with two pods waiting",
        vec![waiting("w1"), on(waiting("w2"), "n2")],
        pvc_class("new-rwop", &["ReadWriteOncePod"], Some("efs")),
        vec![("rwop-exclusive", Deny)],
    );
    two.says = vec![
        "default/w1 (not scheduled yet)",
        "default/w2 on node n2",
        "only one can ever start",
    ];
    let mut ebs = case(
        "RWX on EBS",
        vec![],
        pvc_class("shared", &["ReadWriteMany"], Some("standard")),
        vec![("pvc-mode-unsupported", Warn)],
    );
    ebs.says = vec![
        "asks for ReadWriteMany",
        "StorageClass \"standard\"",
        "ebs.csi.aws.com",
    ];
    check(vec![
        two,
        case(
            "RWOP PVC with one pod waiting",
            vec![waiting("w1")],
            pvc_class("new-rwop", &["ReadWriteOncePod"], Some("efs")),
            vec![],
        ),
        ebs,
        case(
            "ROX on EBS",
            vec![],
            pvc_class("s", &["ReadOnlyMany"], Some("standard")),
            vec![("pvc-mode-unsupported", Warn)],
        ),
        case(
            "RWX by default class",
            vec![],
            pvc_class("s", &["ReadWriteMany"], None),
            vec![("pvc-mode-unsupported", Warn)],
        ),
        case(
            "RWX without class",
            vec![],
            pvc_class("s", &["ReadWriteMany"], Some("")),
            vec![],
        ),
        case(
            "RWX on EFS",
            vec![],
            pvc_class("s", &["ReadWriteMany"], Some("efs")),
            vec![],
        ),
        case(
            "RWO on EBS",
            vec![],
            pvc_class("s", &["ReadWriteOnce"], Some("standard")),
            vec![],
        ),
        case(
            "RWOP in-tree",
            vec![],
            pvc_class("s", &["ReadWriteOncePod"], Some("legacy")),
            vec![("pvc-mode-unsupported", Warn)],
        ),
        case(
            "unknown class",
            vec![],
            pvc_class("s", &["ReadWriteMany"], Some("nope")),
            vec![],
        ),
    ]);
}

// ---- workloads ----------------------------------------------------------------------

#[test]
fn workload_rules() {
    let recreate = json!({"replicas": 1, "strategy": {"type": "Recreate"}});
    let mut d3 = case(
        "Deployment 3 replicas on RWOP",
        vec![],
        deploy("web", json!({"replicas": 3}), &["rwop"]),
        vec![("workload-rwop-replicas", Deny), ("rollout-deadlock", Warn)],
    );
    d3.says = vec![
        "Deployment \"web\" runs 3 replicas",
        "\"rwop\" is ReadWriteOncePod",
    ];
    let mut roll = case(
        "one-replica RollingUpdate on RWOP",
        vec![],
        deploy("db", json!({"replicas": 1}), &["rwop"]),
        vec![("rollout-deadlock", Warn)],
    );
    roll.says = vec!["Deployment \"db\"", "maxSurge 1", "Recreate", "maxSurge: 0"];
    let sts_vct = workload(
        "StatefulSet",
        "apps/v1",
        "pg",
        json!({"replicas": 3, "volumeClaimTemplates": [{"metadata": {"name": "rwop"}, "spec": {"accessModes": ["ReadWriteOncePod"]}}]}),
        &["rwop"],
    );
    check(vec![
        d3,
        roll,
        case(
            "Recreate twin",
            vec![],
            deploy("db", recreate, &["rwop"]),
            vec![],
        ),
        case(
            "maxSurge 0",
            vec![],
            deploy(
                "db",
                json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}),
                &["rwop"],
            ),
            vec![],
        ),
        case(
            "maxSurge 0%",
            vec![],
            deploy(
                "db",
                json!({"strategy": {"rollingUpdate": {"maxSurge": "0%"}}}),
                &["rwo"],
            ),
            vec![],
        ),
        case(
            "Deployment 3 replicas on RWO",
            vec![],
            deploy("web", json!({"replicas": 3}), &["rwo"]),
            vec![("workload-rwo-replicas", Warn), ("rollout-deadlock", Warn)],
        ),
        case(
            "Deployment on RWX",
            vec![],
            deploy("web", json!({"replicas": 3}), &["rwx"]),
            vec![],
        ),
        case(
            "Deployment with missing claim",
            vec![],
            deploy("web", json!({}), &["nope"]),
            vec![("claim-not-found", Warn)],
        ),
        case("StatefulSet volumeClaimTemplates", vec![], sts_vct, vec![]),
        case(
            "StatefulSet sharing a template claim",
            vec![],
            workload(
                "StatefulSet",
                "apps/v1",
                "pg",
                json!({"replicas": 2}),
                &["rwop"],
            ),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "StatefulSet 1 replica",
            vec![],
            workload(
                "StatefulSet",
                "apps/v1",
                "pg",
                json!({"replicas": 1}),
                &["rwop"],
            ),
            vec![],
        ),
        case(
            "DaemonSet on RWOP",
            vec![],
            workload("DaemonSet", "apps/v1", "agent", json!({}), &["rwop"]),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "DaemonSet on RWO",
            vec![],
            workload("DaemonSet", "apps/v1", "agent", json!({}), &["rwo"]),
            vec![("workload-rwo-replicas", Warn)],
        ),
        case(
            "ReplicaSet 2",
            vec![],
            workload(
                "ReplicaSet",
                "apps/v1",
                "rs",
                json!({"replicas": 2}),
                &["rwop"],
            ),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "ReplicationController 2",
            vec![],
            workload(
                "ReplicationController",
                "v1",
                "rc",
                json!({"replicas": 2}),
                &["rwop"],
            ),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "Job parallelism 2",
            vec![],
            workload("Job", "batch/v1", "j", json!({"parallelism": 2}), &["rwop"]),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "Job parallelism 1",
            vec![],
            workload("Job", "batch/v1", "j", json!({"completions": 5}), &["rwop"]),
            vec![],
        ),
        case(
            "CronJob default Allow",
            vec![],
            workload(
                "CronJob",
                "batch/v1",
                "cj",
                json!({"schedule": "* * * * *"}),
                &["rwop"],
            ),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "CronJob Forbid",
            vec![],
            workload(
                "CronJob",
                "batch/v1",
                "cj",
                json!({"concurrencyPolicy": "Forbid"}),
                &["rwop"],
            ),
            vec![],
        ),
        case(
            "CronJob Forbid but parallel job",
            vec![],
            workload(
                "CronJob",
                "batch/v1",
                "cj",
                json!({"concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {"parallelism": 3}}}),
                &["rwo"],
            ),
            vec![("workload-rwo-replicas", Warn)],
        ),
    ]);
}

#[test]
fn workload_update_blames_only_the_change() {
    let p = Policy::default();
    let old = deploy("web", json!({"replicas": 3}), &["rwop"]);
    let new = deploy(
        "web",
        json!({"replicas": 3, "minReadySeconds": 5}),
        &["rwop"],
    );
    let v = run(&p, &[], Operation::Update, new.clone(), Some(old));
    assert!(v.allowed, "{v:#?}");
    assert_eq!(
        fired(&v),
        vec![
            ("workload-rwop-replicas", PreExisting),
            ("rollout-deadlock", Warn)
        ]
    );
    assert!(v.warnings[0].starts_with("[workload-rwop-replicas] not blocking this update"));

    let old = deploy(
        "web",
        json!({"replicas": 1, "strategy": {"type": "Recreate"}}),
        &["rwop"],
    );
    let new = deploy(
        "web",
        json!({"replicas": 2, "strategy": {"type": "Recreate"}}),
        &["rwop"],
    );
    let v = run(&p, &[], Operation::Update, new, Some(old));
    assert!(!v.allowed);
    assert_eq!(fired(&v), vec![("workload-rwop-replicas", Deny)]);
}

#[test]
fn pods_and_pvcs_are_judged_on_create_only() {
    let p = Policy::default();
    let holder = on(pod("pod-a", &[("rwop", false)]), "n1");
    let v = run(
        &p,
        &[holder],
        Operation::Update,
        pod("pod-b", &[("rwop", false)]),
        None,
    );
    assert!(v.allowed && v.findings.is_empty());
    let v = run(
        &p,
        &[],
        Operation::Create,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
        None,
    );
    assert_eq!(v, Verdict::allow());
}

#[test]
fn max_surge_resolution() {
    let spec = |v: Value| serde_json::from_value::<objects::WorkloadSpec>(v).unwrap();
    for (s, want) in [
        (json!({}), 1),
        (json!({"replicas": 1}), 1),
        (json!({"replicas": 4}), 1),
        (json!({"replicas": 5}), 2),
        (json!({"replicas": 0}), 0),
        (
            json!({"replicas": 10, "strategy": {"rollingUpdate": {"maxSurge": "30%"}}}),
            3,
        ),
        (
            json!({"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": "1%"}}}),
            1,
        ),
        (
            json!({"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": "0%"}}}),
            0,
        ),
        (
            json!({"replicas": 3, "strategy": {"rollingUpdate": {"maxSurge": 2}}}),
            2,
        ),
        (
            json!({"replicas": 3, "strategy": {"rollingUpdate": {"maxSurge": "2"}}}),
            2,
        ),
    ] {
        assert_eq!(effective_max_surge(&spec(s.clone())), want, "{s}");
    }
}

// ---- modes, exemptions, actions --------------------------------------------------------

fn conflict() -> (Vec<Value>, Value) {
    (
        vec![on(pod("pod-a", &[("rwop", false)]), "worker-1")],
        pod("pod-b", &[("rwop", false)]),
    )
}

#[test]
fn audit_mode_from_policy() {
    let (existing, new) = conflict();
    let p = Policy::parse("mode: audit").unwrap();
    let v = run(&p, &existing, Operation::Create, new, None);
    assert!(v.allowed);
    assert_eq!(fired(&v), vec![("rwop-exclusive", NotEnforced)]);
    assert!(
        v.warnings[0].starts_with(
            "[rwop-exclusive] not enforced (audit mode): PersistentVolumeClaim \"rwop\""
        ),
        "{}",
        v.warnings[0]
    );
    assert!(v.audit_annotations["rwop-exclusive"].contains("default/pod-a on node worker-1"));
    assert_eq!(v.findings[0].effect.metric_action(), "audit");
}

#[test]
fn audit_mode_from_namespace_label() {
    let existing = vec![with(
        on(pod("pod-a", &[("x", false)]), "n1"),
        "/metadata/namespace",
        json!("audited"),
    )];
    let mut claim = pvc("x", &["ReadWriteOncePod"]);
    claim["metadata"]["namespace"] = json!("audited");
    let mut all = vec![claim];
    all.extend(existing);
    let new = with(
        pod("pod-b", &[("x", false)]),
        "/metadata/namespace",
        json!("audited"),
    );
    let v = run(&Policy::default(), &all, Operation::Create, new, None);
    assert!(v.allowed, "{v:#?}");
    assert_eq!(fired(&v), vec![("rwop-exclusive", NotEnforced)]);
}

#[test]
fn namespace_off_and_exempt_skip_everything() {
    for ns_name in ["skipped", "kube-system"] {
        let mut claim = pvc("x", &["ReadWriteOncePod"]);
        claim["metadata"]["namespace"] = json!(ns_name);
        let holder = with(
            on(pod("pod-a", &[("x", false)]), "n1"),
            "/metadata/namespace",
            json!(ns_name),
        );
        let new = with(
            pod("pod-b", &[("x", false)]),
            "/metadata/namespace",
            json!(ns_name),
        );
        let v = run(
            &Policy::default(),
            &[claim, holder],
            Operation::Create,
            new,
            None,
        );
        assert!(
            v.allowed && v.findings.is_empty() && v.skipped.is_some(),
            "{ns_name}: {v:#?}"
        );
    }
}

#[test]
fn every_action() {
    let (existing, new) = conflict();
    for (action, allowed, warnings, findings) in [
        ("deny", false, 0, 1),
        ("warn", true, 1, 1),
        ("audit", true, 0, 1),
        ("off", true, 0, 0),
    ] {
        let p = Policy::parse(&format!("rules: {{rwop-exclusive: {action}}}")).unwrap();
        let v = run(&p, &existing, Operation::Create, new.clone(), None);
        assert_eq!(v.allowed, allowed, "{action}");
        assert_eq!(v.warnings.len(), warnings, "{action}");
        assert_eq!(v.findings.len(), findings, "{action}");
        assert_eq!(v.audit_annotations.len(), findings, "{action}");
        if action == "deny" {
            let d = v.denial.unwrap();
            assert_eq!(
                d,
                "[rwop-exclusive] PersistentVolumeClaim \"rwop\" is ReadWriteOncePod and already used by pod default/pod-a on node worker-1; delete that pod first or use another claim"
            );
        }
    }
    // A warn rule raised to deny.
    let p = Policy::parse("rules: {rwo-shared-writer: deny}").unwrap();
    let v = run(
        &p,
        &[on(pod("pod-a", &[("rwo", false)]), "n1")],
        Operation::Create,
        pod("pod-b", &[("rwo", false)]),
        None,
    );
    assert!(!v.allowed);
}

struct Unreadable;

impl ClusterView for Unreadable {
    fn claim(&self, _: &str, _: &str) -> Result<Option<crate::cluster::ClaimFacts>, LookupError> {
        Err(LookupError::NotReady)
    }
    fn consumers(&self, _: &str, _: &str) -> Result<Vec<Consumer<'_>>, LookupError> {
        Err(LookupError::NotReady)
    }
    fn namespace_mode(&self, _: &str) -> Result<Option<NamespaceMode>, LookupError> {
        Ok(None)
    }
    fn storage_class(&self, _: &str) -> Option<StorageClassFacts<'_>> {
        None
    }
    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>> {
        None
    }
}

#[test]
fn lookup_errors_follow_on_lookup_error() {
    let o = obj(pod("pod-b", &[("rwop", false)]));
    let req = Request {
        operation: Operation::Create,
        namespace: "default",
        object: &o,
        old_object: None,
    };
    let v = evaluate(&Policy::default(), &req, &Unreadable);
    assert!(v.allowed);
    assert_eq!(v.warnings.len(), 1);
    assert!(v.warnings[0].starts_with("[lookup-error] could not check PersistentVolumeClaim \"rwop\": the cluster view is not synced yet; allowed"), "{}", v.warnings[0]);
    let v = evaluate(
        &Policy::parse("onLookupError: deny").unwrap(),
        &req,
        &Unreadable,
    );
    assert!(!v.allowed);
    assert!(v.denial.unwrap().contains("onLookupError: deny"));
    let v = evaluate(
        &Policy::parse("onLookupError: deny\nmode: audit").unwrap(),
        &req,
        &Unreadable,
    );
    assert!(v.allowed);
}

/// Every rule's message, with names as long as Kubernetes allows, stays one
/// line, starts with its rule id, and its warning fits the API server's limit.
#[test]
fn every_rule_message_fits() {
    let long = |c: char| std::iter::repeat_n(c, 63).collect::<String>();
    let node = format!("{}.{}.{}.{}", long('n'), long('o'), long('d'), long('e'));
    let claim_rwop = long('p');
    let claim_rwo = long('q');
    let mut existing = vec![
        pvc(&claim_rwop, &["ReadWriteOncePod"]),
        pvc(&claim_rwo, &["ReadWriteOnce"]),
    ];
    for i in 0..5 {
        let n = format!("{}{i}", &long('h')[..62]);
        existing.push(on(
            pod(&n, &[(&claim_rwop, false), (&claim_rwo, false)]),
            &node,
        ));
    }
    let mut term = existing[2].clone();
    term["metadata"]["deletionTimestamp"] = json!("x");
    // A claim whose volume is stuck on a dead node, every name at its longest.
    let (claim_stuck, volume, dead) = (
        long('s'),
        format!("{}{}", long('v'), long('w')),
        format!("{}.{}", long('k'), long('l')),
    );
    existing.extend([
        bound(pvc(&claim_stuck, &["ReadWriteOnce"]), &volume),
        pv(&volume, &["ReadWriteOnce"]),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": dead},
               "status": {"conditions": [{"type": "Ready", "status": "Unknown", "lastTransitionTime": "2026-12-07T10:00:00Z"}]}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": format!("{}{}{}", long('a'), long('b'), long('c'))},
               "spec": {"attacher": "x", "nodeName": dead, "source": {"persistentVolumeName": volume}},
               "status": {"attached": true}}),
    ]);
    let objects = vec![
        pod(&long('u'), &[(&claim_stuck, false)]),
        on(
            pod(
                &long('b'),
                &[
                    (&claim_rwop, false),
                    (&claim_rwo, false),
                    (&long('z'), false),
                ],
            ),
            "other",
        ),
        pod(&long('c'), &[(&claim_rwo, false)]),
        pod(&long('c'), &[(&claim_rwo, true)]),
        pvc_class(&long('r'), &["ReadWriteMany"], Some("standard")),
        pvc_class(&long('r'), &["ReadWriteOncePod"], Some("legacy")),
        deploy(
            &long('d'),
            json!({"replicas": 3}),
            &[&claim_rwop, &claim_rwo],
        ),
        workload("CronJob", "batch/v1", &long('j'), json!({}), &[&claim_rwop]),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for mode in ["enforce", "audit"] {
        let policy = Policy::parse(&format!(
            "mode: {mode}\nrules: {{{}}}",
            Rule::ALL.map(|r| format!("{}: warn", r.id())).join(", ")
        ))
        .unwrap();
        for o in &objects {
            let v = run(&policy, &existing, Operation::Create, o.clone(), None);
            for f in &v.findings {
                seen.insert(f.rule.id());
                assert!(f.message.starts_with(&format!("[{}] ", f.rule.id())));
                assert!(!f.message.contains('\n'));
            }
            for w in &v.warnings {
                assert!(w.len() < 256, "{} bytes: {w}", w.len());
                assert!(w.starts_with('['));
            }
        }
        let mut term_state = existing.clone();
        term_state.truncate(2);
        term_state.push(term.clone());
        let v = run(
            &policy,
            &term_state,
            Operation::Create,
            pod(&long('t'), &[(&claim_rwop, false)]),
            None,
        );
        for f in &v.findings {
            seen.insert(f.rule.id());
        }
        for w in &v.warnings {
            assert!(w.len() < 256, "{w}");
        }
    }
    // stale-attachment is the audit's alone.
    for r in Rule::ALL
        .into_iter()
        .filter(|r| *r != Rule::StaleAttachment)
    {
        assert!(
            seen.contains(r.id()),
            "rule {} never fired in this test",
            r.id()
        );
    }
}

#[test]
fn job_completions_bound_concurrency() {
    check(vec![
        case(
            "parallelism 2, completions 1",
            vec![],
            workload(
                "Job",
                "batch/v1",
                "j",
                json!({"parallelism": 2, "completions": 1}),
                &["rwop"],
            ),
            vec![],
        ),
        case(
            "parallelism 3, completions 5",
            vec![],
            workload(
                "Job",
                "batch/v1",
                "j",
                json!({"parallelism": 3, "completions": 5}),
                &["rwop"],
            ),
            vec![("workload-rwop-replicas", Deny)],
        ),
        case(
            "CronJob Forbid, job parallelism 4 completions 1",
            vec![],
            workload(
                "CronJob",
                "batch/v1",
                "cj",
                json!({"concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {"parallelism": 4, "completions": 1}}}),
                &["rwop"],
            ),
            vec![],
        ),
    ]);
}

#[test]
fn owned_replicasets_and_jobs_are_judged_through_their_owner() {
    let owned = |mut v: Value, kind: &str| {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u", "controller": true}]);
        v
    };
    let rs = workload(
        "ReplicaSet",
        "apps/v1",
        "web-7d4b9",
        json!({"replicas": 2}),
        &["rwop"],
    );
    let job = workload(
        "Job",
        "batch/v1",
        "nightly-2839",
        json!({"parallelism": 2}),
        &["rwop"],
    );
    let p = Policy::default();
    for (v, op) in [
        (owned(rs.clone(), "Deployment"), Operation::Create),
        (owned(rs.clone(), "Deployment"), Operation::Update),
        (owned(job.clone(), "CronJob"), Operation::Create),
    ] {
        let verdict = run(&p, &[], op, v.clone(), Some(v));
        assert!(
            verdict.allowed && verdict.findings.is_empty(),
            "{verdict:#?}"
        );
    }
    // Not owned (or owned by something claimguard does not judge): judged.
    for v in [rs, owned(job, "Workflow")] {
        assert!(!run(&p, &[], Operation::Create, v, None).allowed);
    }
}

#[test]
fn lookup_errors_are_never_pre_existing() {
    let o = obj(deploy(
        "web",
        json!({"replicas": 1, "strategy": {"type": "Recreate"}}),
        &["rwop"],
    ));
    let req = Request {
        operation: Operation::Update,
        namespace: "default",
        object: &o,
        old_object: Some(&o),
    };
    let v = evaluate(
        &Policy::parse("onLookupError: deny").unwrap(),
        &req,
        &Unreadable,
    );
    assert!(!v.allowed, "{v:#?}");
}

mod attachments;
mod fidelity;
