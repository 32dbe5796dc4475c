//! `rwo-stuck-attachment`: one case per row of the contract's *Attachments
//! and node health*, through `evaluate` with a real index.

use super::*;

const VOLUME: &str = "pvc-7f3a0000-0000-4000-8000-000000000001";
const VA: &str = "csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn node(name: &str, ready: &str, taints: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "spec": {"taints": taints.iter().map(|k| json!({"key": k, "effect": "NoExecute"})).collect::<Vec<_>>()},
           "status": {"conditions": [
               {"type": "MemoryPressure", "status": "False", "lastTransitionTime": "2026-12-01T00:00:00Z"},
               {"type": "Ready", "status": ready, "lastTransitionTime": "2026-12-07T10:00:00Z"}]}})
}

fn attachment(name: &str, volume: &str, node: &str, attached: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
           "metadata": {"name": name},
           "spec": {"attacher": "ebs.csi.aws.com", "nodeName": node,
                    "source": {"persistentVolumeName": volume}},
           "status": {"attached": attached}})
}

fn detach_error(mut va: Value, message: &str) -> Value {
    va["status"]["detachError"] = json!({"message": message, "time": "2026-12-07T10:05:00Z"});
    va
}

fn deleting(mut va: Value) -> Value {
    va["metadata"]["deletionTimestamp"] = json!("2026-12-07T10:05:00Z");
    va
}

/// An RWO claim `data` bound to VOLUME, attached to w1, and the nodes.
fn cluster(modes: &[&str], w1_ready: &str, w1_taints: &[&str], va: Value) -> Vec<Value> {
    vec![
        bound(pvc("data", modes), VOLUME),
        pv(VOLUME, modes),
        node("w1", w1_ready, w1_taints),
        node("w2", "True", &[]),
        va,
    ]
}

fn pinned(p: Value, node: &str) -> Value {
    with(
        p,
        "/spec/nodeSelector",
        json!({"kubernetes.io/hostname": node}),
    )
}

#[test]
fn stuck_attachment_rows() {
    let rwo = &["ReadWriteOnce"][..];
    let va = || attachment(VA, VOLUME, "w1", true);
    let new_pod = || pod("db-0", &[("data", false)]);
    let mut dead = case(
        "attached to a NotReady node: the re-created pod hangs",
        cluster(rwo, "False", &[], va()),
        new_pod(),
        vec![("rwo-stuck-attachment", Warn)],
    );
    dead.says = vec![
        "[rwo-stuck-attachment] PersistentVolumeClaim \"data\" is ReadWriteOnce and ",
        " still attached to node w1, NotReady since 2026-12-07T10:00:00Z, so this pod hangs; if w1 is shut down, kubectl taint node w1 node.kubernetes.io/out-of-service:NoExecute",
    ];
    let mut unknown = case(
        "Ready status Unknown (the node controller lost the kubelet)",
        cluster(rwo, "Unknown", &["node.kubernetes.io/unreachable"], va()),
        new_pod(),
        vec![("rwo-stuck-attachment", Warn)],
    );
    unknown.says = vec!["NotReady since 2026-12-07T10:00:00Z"];
    let mut unreachable = case(
        "Ready but tainted unreachable",
        cluster(rwo, "True", &["node.kubernetes.io/unreachable"], va()),
        new_pod(),
        vec![("rwo-stuck-attachment", Warn)],
    );
    unreachable.says = vec!["attached to node w1, unreachable, so this pod hangs;"];
    let mut failing = case(
        "a detach error on a healthy node",
        cluster(
            rwo,
            "True",
            &[],
            detach_error(
                deleting(va()),
                "rpc error: code = Internal desc = volume busy",
            ),
        ),
        new_pod(),
        vec![("rwo-stuck-attachment", Warn)],
    );
    failing.says = vec![
        "attached to node w1, whose detach fails: rpc error: code = Internal desc = volume busy, so this pod hangs;",
        "kubectl describe volumeattachment csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ];
    let mut rwop = case(
        "RWOP: the old holder is gone, its volume is not",
        cluster(&["ReadWriteOncePod"], "False", &[], va()),
        new_pod(),
        vec![("rwo-stuck-attachment", Warn)],
    );
    rwop.says = vec!["is ReadWriteOncePod and still attached to node w1"];
    check(vec![
        dead,
        unknown,
        unreachable,
        failing,
        rwop,
        case(
            "pinned to the node that holds the attachment",
            cluster(rwo, "False", &[], va()),
            pinned(new_pod(), "w1"),
            vec![],
        ),
        case(
            "scheduled on that node",
            cluster(rwo, "False", &[], va()),
            on(new_pod(), "w1"),
            vec![],
        ),
        case(
            "pinned elsewhere: it hangs",
            cluster(rwo, "False", &[], va()),
            pinned(new_pod(), "w2"),
            vec![("rwo-stuck-attachment", Warn)],
        ),
        case(
            "RWX volume: multi-attach is allowed",
            cluster(&["ReadWriteMany"], "False", &[], va()),
            new_pod(),
            vec![],
        ),
        case(
            "ROX volume",
            cluster(&["ReadOnlyMany"], "False", &[], va()),
            new_pod(),
            vec![],
        ),
        case(
            "the node is out of service: the volume is being force-detached",
            cluster(
                rwo,
                "False",
                &[
                    "node.kubernetes.io/out-of-service",
                    "node.kubernetes.io/unreachable",
                ],
                va(),
            ),
            new_pod(),
            vec![],
        ),
        case(
            "a detach in progress on a healthy node",
            cluster(rwo, "True", &[], deleting(va())),
            new_pod(),
            vec![],
        ),
        case(
            "attached to a healthy node and nobody uses it",
            cluster(rwo, "True", &[], va()),
            new_pod(),
            vec![],
        ),
        case(
            "a node the view does not know: no evidence",
            vec![
                bound(pvc("data", rwo), VOLUME),
                pv(VOLUME, rwo),
                attachment(VA, VOLUME, "w9", true),
            ],
            new_pod(),
            vec![],
        ),
        case(
            "another volume's attachment",
            cluster(rwo, "False", &[], attachment(VA, "pvc-other", "w1", true)),
            new_pod(),
            vec![],
        ),
        case(
            "a node without a Ready condition is not judged down",
            vec![
                bound(pvc("data", rwo), VOLUME),
                pv(VOLUME, rwo),
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"}}),
                va(),
            ],
            new_pod(),
            vec![],
        ),
    ]);
}

#[test]
fn precedence_with_the_pod_rules() {
    let rwo = &["ReadWriteOnce"][..];
    let va = || attachment(VA, VOLUME, "w1", true);
    // A running user elsewhere and a pod pinned away from it: rwo-cross-node first.
    let mut existing = cluster(rwo, "False", &[], va());
    existing.push(on(pod("web-0", &[("data", false)]), "w2"));
    check(vec![case(
        "cross-node before stuck",
        existing.clone(),
        pinned(pod("web-1", &[("data", false)]), "w3"),
        vec![("rwo-cross-node", Deny)],
    )]);
    // A second writer that would share the node: stuck before shared-writer.
    check(vec![case(
        "stuck before shared-writer",
        existing,
        pod("web-1", &[("data", false)]),
        vec![("rwo-stuck-attachment", Warn)],
    )]);
    // RWOP: an active holder is rwop-exclusive; a terminating one yields to stuck.
    let rwop = &["ReadWriteOncePod"][..];
    let mut holder = on(pod("db-0", &[("data", false)]), "w1");
    let mut existing = cluster(rwop, "False", &[], va());
    existing.push(holder.clone());
    check(vec![case(
        "rwop-exclusive first",
        existing.clone(),
        pod("db-1", &[("data", false)]),
        vec![("rwop-exclusive", Deny)],
    )]);
    holder["metadata"]["deletionTimestamp"] = json!("2026-12-07T10:06:00Z");
    existing.pop();
    existing.push(holder);
    check(vec![case(
        "stuck before terminating-holder",
        existing,
        pod("db-1", &[("data", false)]),
        vec![("rwo-stuck-attachment", Warn)],
    )]);
}

#[test]
fn the_action_follows_the_policy_and_audit_mode() {
    let existing = cluster(
        &["ReadWriteOnce"],
        "False",
        &[],
        attachment(VA, VOLUME, "w1", true),
    );
    let deny = Policy::parse("rules: {rwo-stuck-attachment: deny}").unwrap();
    let v = run(
        &deny,
        &existing,
        Operation::Create,
        pod("db-0", &[("data", false)]),
        None,
    );
    assert!(!v.allowed);
    assert!(v.denial.unwrap().starts_with("[rwo-stuck-attachment] "));
    let off = Policy::parse("rules: {rwo-stuck-attachment: off}").unwrap();
    let v = run(
        &off,
        &existing,
        Operation::Create,
        pod("db-0", &[("data", false)]),
        None,
    );
    assert!(v.allowed && v.warnings.is_empty() && v.findings.is_empty());
}

#[test]
fn a_long_detach_error_keeps_the_warning_short() {
    let err = "x ".repeat(500);
    let existing = cluster(
        &["ReadWriteOnce"],
        "True",
        &[],
        detach_error(attachment(VA, VOLUME, "w1", true), &err),
    );
    let v = run(
        &Policy::default(),
        &existing,
        Operation::Create,
        pod("db-0", &[("data", false)]),
        None,
    );
    assert_eq!(v.warnings.len(), 1);
    assert!(v.warnings[0].len() < 256, "{}", v.warnings[0]);
    assert!(v.warnings[0].contains("kubectl describe volumeattachment"));
}

#[test]
fn the_volume_is_named_when_the_warning_still_fits() {
    let warn = |claim: &str, volume: &str| {
        let existing = vec![
            bound(pvc(claim, &["ReadWriteOnce"]), volume),
            pv(volume, &["ReadWriteOnce"]),
            node("w1", "False", &[]),
            attachment(VA, volume, "w1", true),
        ];
        let v = run(
            &Policy::default(),
            &existing,
            Operation::Create,
            pod("db-0", &[(claim, false)]),
            None,
        );
        v.warnings[0].clone()
    };
    assert_eq!(
        warn("d", "v"),
        "[rwo-stuck-attachment] PersistentVolumeClaim \"d\" is ReadWriteOnce and its volume v is still attached to node w1, NotReady since 2026-12-07T10:00:00Z, so this pod hangs; if w1 is shut down, kubectl taint node w1 node.kubernetes.io/out-of-service:NoExecute"
    );
    // A CSI volume name is 40 characters: the claim, node, state and command win.
    assert_eq!(
        warn("data", VOLUME),
        "[rwo-stuck-attachment] PersistentVolumeClaim \"data\" is ReadWriteOnce and still attached to node w1, NotReady since 2026-12-07T10:00:00Z, so this pod hangs; if w1 is shut down, kubectl taint node w1 node.kubernetes.io/out-of-service:NoExecute"
    );
    // Names too long for any form: the head (rule, claim, node) and the
    // command survive; the middle goes.
    let long = "x".repeat(120);
    let w = warn(&long, VOLUME);
    assert!(w.len() <= 255, "{w}");
    assert!(
        w.starts_with("[rwo-stuck-attachment] PersistentVolumeClaim"),
        "{w}"
    );
    assert!(
        w.ends_with("kubectl taint node w1 node.kubernetes.io/out-of-service:NoExecute"),
        "{w}"
    );
}
