//! Attachments and node health through the snapshot path: `check` and
//! `audit` on a support bundle that holds Nodes and VolumeAttachments, as
//! `kubectl get pods,pvc,pv,storageclass,volumeattachments,nodes -A -o yaml`
//! prints it (YAML) and as `-o json` prints it (the JSON fast path).

use std::path::Path;
use std::process::Command;

const DUMP: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: data-db-0, namespace: shop, uid: 5c0e0c1a-0000-4000-8000-000000000001}
  spec:
    accessModes: [ReadWriteOnce]
    storageClassName: gp3
    volumeName: pvc-5c0e0c1a-0000-4000-8000-000000000001
    resources: {requests: {storage: 10Gi}}
  status: {phase: Bound, accessModes: [ReadWriteOnce]}
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: pvc-5c0e0c1a-0000-4000-8000-000000000001}
  spec:
    accessModes: [ReadWriteOnce]
    capacity: {storage: 10Gi}
    claimRef: {kind: PersistentVolumeClaim, namespace: shop, name: data-db-0}
    csi: {driver: ebs.csi.aws.com, volumeHandle: vol-0abc}
    persistentVolumeReclaimPolicy: Delete
    storageClassName: gp3
  status: {phase: Bound}
- apiVersion: v1
  kind: Node
  metadata:
    name: ip-10-0-1-17.ec2.internal
    labels: {kubernetes.io/hostname: ip-10-0-1-17.ec2.internal}
  spec:
    taints:
    - {key: node.kubernetes.io/unreachable, effect: NoSchedule, timeAdded: "2026-12-07T10:00:40Z"}
    - {key: node.kubernetes.io/unreachable, effect: NoExecute, timeAdded: "2026-12-07T10:00:45Z"}
  status:
    conditions:
    - {type: Ready, status: Unknown, reason: NodeStatusUnknown, message: Kubelet stopped posting node status., lastHeartbeatTime: "2026-12-07T09:59:50Z", lastTransitionTime: "2026-12-07T10:00:40Z"}
- apiVersion: v1
  kind: Node
  metadata:
    name: ip-10-0-2-9.ec2.internal
    labels: {kubernetes.io/hostname: ip-10-0-2-9.ec2.internal}
  status:
    conditions:
    - {type: Ready, status: "True", reason: KubeletReady, lastTransitionTime: "2026-12-01T08:00:00Z"}
- apiVersion: storage.k8s.io/v1
  kind: VolumeAttachment
  metadata:
    name: csi-9b2f3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809
    finalizers: [external-attacher/ebs-csi-aws-com]
  spec:
    attacher: ebs.csi.aws.com
    nodeName: ip-10-0-1-17.ec2.internal
    source: {persistentVolumeName: pvc-5c0e0c1a-0000-4000-8000-000000000001}
  status: {attached: true, attachmentMetadata: {devicePath: /dev/xvdaa}}
"#;

/// The StatefulSet's pod, re-created after its old node died.
const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
spec:
  containers:
  - name: pg
    image: postgres:16
    volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data-db-0}
"#;

fn run(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .args(args)
        .current_dir(dir)
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("CLAIMGUARD_POLICY")
        .output()
        .unwrap();
    // Warnings go where kubectl writes them; either stream is fine here.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn bundle(dir: &Path) {
    std::fs::write(dir.join("cluster.yaml"), DUMP).unwrap();
    let value: serde_json::Value = serde_yaml_ng::from_str(DUMP).unwrap();
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_vec_pretty(&value).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("pod.yaml"), POD).unwrap();
}

#[test]
fn check_warns_the_pod_that_would_wait_for_a_dead_node() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path());
    for dump in ["cluster.yaml", "cluster.json"] {
        let (code, out) = run(&["check", "--snapshot", dump, "pod.yaml"], dir.path());
        assert_eq!(code, 0, "a warning is not a denial: {out}");
        assert!(out.contains("pod/db-0 created"), "{out}");
        assert!(
            out.contains("Warning: [rwo-stuck-attachment] PersistentVolumeClaim \"data-db-0\" is ReadWriteOnce and still attached to node ip-10-0-1-17.ec2.internal"),
            "{dump}: {out}"
        );
        assert!(
            out.contains("kubectl taint node ip-10-0-1-17.ec2.internal node.kubernetes.io/out-of-service:NoExecute"),
            "{dump}: {out}"
        );
    }
    // Pinned to the dead node: it waits for the node, not for a detach.
    let pinned = POD.replace(
        "spec:\n",
        "spec:\n  nodeSelector: {kubernetes.io/hostname: ip-10-0-1-17.ec2.internal}\n",
    );
    std::fs::write(dir.path().join("pinned.yaml"), pinned).unwrap();
    let (code, out) = run(
        &["check", "--snapshot", "cluster.yaml", "pinned.yaml"],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(!out.contains("rwo-stuck-attachment"), "{out}");
    // Declared out of service: Kubernetes force-detaches; nothing to say.
    let shut = DUMP.replace(
        "    taints:\n",
        "    taints:\n    - {key: node.kubernetes.io/out-of-service, value: nodeshutdown, effect: NoExecute}\n",
    );
    std::fs::write(dir.path().join("shut.yaml"), shut).unwrap();
    let (_, out) = run(
        &["check", "--snapshot", "shut.yaml", "pod.yaml"],
        dir.path(),
    );
    assert!(!out.contains("rwo-stuck-attachment"), "{out}");
}

#[test]
fn audit_lists_the_stuck_attachment_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path());
    let (code, out) = run(&["audit", "--snapshot", "cluster.yaml"], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("RULE"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("stale-attachment"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("PersistentVolumeClaim/data-db-0"), "{line}");
    assert!(line.contains("ReadWriteOnce volume pvc-5c0e0c1a-0000-4000-8000-000000000001 of PersistentVolumeClaim \"data-db-0\" is still attached to node ip-10-0-1-17.ec2.internal, NotReady since 2026-12-07T10:00:40Z; no pod waits for it yet"), "{line}");
    assert!(out.contains("1 violation (0 fail, 1 warn)"), "{out}");

    let (code, out) = run(
        &["audit", "--snapshot", "cluster.json", "--output", "json"],
        dir.path(),
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["byRule"]["stale-attachment"], 1);
    assert_eq!(v["summary"]["byRule"]["rwo-stuck-attachment"], 0);
    assert_eq!(v["violations"][0]["rule"], "stale-attachment");
    assert_eq!(v["violations"][0]["kind"], "PersistentVolumeClaim");
    assert_eq!(v["violations"][0]["name"], "data-db-0");

    let (code, out) = run(
        &[
            "audit",
            "--snapshot",
            "cluster.yaml",
            "--output",
            "policyreport",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_yaml_ng::from_str(out.trim_start_matches("---\n"))
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(report["metadata"]["namespace"], "shop");
    let r = &report["results"][0];
    assert_eq!(r["rule"], "stale-attachment");
    assert_eq!(r["result"], "warn");
    assert_eq!(r["resources"][0]["kind"], "PersistentVolumeClaim");
    assert_eq!(r["resources"][0]["name"], "data-db-0");

    // The node comes back: nothing is stuck, nothing is reported.
    let healed = DUMP
        .replace("status: Unknown, reason: NodeStatusUnknown", "status: \"True\", reason: KubeletReady")
        .replace("    - {key: node.kubernetes.io/unreachable, effect: NoSchedule, timeAdded: \"2026-12-07T10:00:40Z\"}\n    - {key: node.kubernetes.io/unreachable, effect: NoExecute, timeAdded: \"2026-12-07T10:00:45Z\"}\n", "    - {key: example.com/dedicated, effect: NoSchedule}\n");
    std::fs::write(dir.path().join("healed.yaml"), healed).unwrap();
    let (code, out) = run(&["audit", "--snapshot", "healed.yaml"], dir.path());
    assert_eq!((code, out.as_str()), (0, "No violations found.\n"));
}
