//! Builders for Kubernetes objects with the shape the API server returns (including the
//! fields claimguard ignores, so deserialization is exercised on realistic input).

use serde_json::{json, Value};

/// A pod using `claims` (claim name, read-only), optionally bound to a node.
pub fn pod(
    ns: &str,
    name: &str,
    claims: &[(&str, bool)],
    node: Option<&str>,
    phase: &str,
) -> Value {
    let mut volumes: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, (claim, ro))| {
            let mut src = json!({"claimName": claim});
            if *ro {
                src["readOnly"] = json!(true);
            }
            json!({"name": format!("vol-{i}"), "persistentVolumeClaim": src})
        })
        .collect();
    volumes.push(json!({
        "name": "kube-api-access-x7k2p",
        "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}
    }));
    let mounts: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"name": format!("vol-{i}"), "mountPath": format!("/data/{i}")}))
        .chain(std::iter::once(json!({
            "name": "kube-api-access-x7k2p",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true
        })))
        .collect();
    let mut spec = json!({
        "volumes": volumes,
        "containers": [{
            "name": "app", "image": "registry.example.com/app:1.2.3",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": mounts,
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
        }],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "serviceAccount": "default",
        "securityContext": {}, "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {"app": "app", "pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-7d9f8c6b5",
                                 "uid": "5f0c3c1e-1111-4222-8333-444455556666", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-11-21T20:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
        },
        "spec": spec,
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": if node.is_some() { "True" } else { "False" },
                            "lastProbeTime": null, "lastTransitionTime": "2026-11-21T20:00:00Z"}],
            "qosClass": "Burstable"
        }
    })
}

pub fn set_node(pod: &mut Value, node: &str) {
    pod["spec"]["nodeName"] = json!(node);
}

pub fn set_phase(pod: &mut Value, phase: &str) {
    pod["status"]["phase"] = json!(phase);
}

pub fn set_deleting(obj: &mut Value) {
    obj["metadata"]["deletionTimestamp"] = json!("2026-11-21T20:30:00Z");
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(30);
}

/// Replace a pod's claim volumes (keeps the projected token volume).
pub fn set_claims(pod: &mut Value, claims: &[(&str, bool)]) {
    let fresh = self::pod("x", "x", claims, None, "Pending");
    pod["spec"]["volumes"] = fresh["spec"]["volumes"].clone();
    pod["spec"]["containers"] = fresh["spec"]["containers"].clone();
}

pub fn pvc(
    ns: &str,
    name: &str,
    modes: &[&str],
    storage_class: &str,
    volume: Option<&str>,
) -> Value {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name, "namespace": ns,
            "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
            "finalizers": ["kubernetes.io/pvc-protection"]
        },
        "spec": {
            "accessModes": modes,
            "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": storage_class,
            "volumeMode": "Filesystem"
        },
        "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }}
    });
    if let Some(vol) = volume {
        v["spec"]["volumeName"] = json!(vol);
        v["status"]["accessModes"] = json!(modes);
        v["status"]["capacity"] = json!({"storage": "10Gi"});
    }
    v
}

pub fn pv(name: &str, modes: &[&str], claim: Option<(&str, &str)>, storage_class: &str) -> Value {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {
            "accessModes": modes,
            "capacity": {"storage": "10Gi"},
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": format!("vol-{name}"), "fsType": "ext4"},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": storage_class,
            "volumeMode": "Filesystem"
        },
        "status": {"phase": if claim.is_some() { "Bound" } else { "Available" }}
    });
    if let Some((ns, c)) = claim {
        v["spec"]["claimRef"] = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                       "namespace": ns, "name": c});
    }
    v
}

pub fn storage_class(name: &str, provisioner: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
        "parameters": {"type": "gp3"}
    })
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/metadata.name".into(), json!(name));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": l},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

/// A Node as `kubectl get node -o json` shows it (trimmed status), with its
/// `kubernetes.io/hostname` label.
pub fn node(name: &str, hostname: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": hostname,
                "kubernetes.io/os": "linux"
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}, {"type": "Hostname", "address": hostname}],
            "capacity": {"cpu": "4", "memory": "16318892Ki", "pods": "110"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "2026-12-07T09:59:50Z",
                 "lastTransitionTime": "2026-12-01T08:00:00Z", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-07T09:59:50Z",
                 "lastTransitionTime": "2026-12-01T08:00:00Z", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status"}],
            "images": [{"names": ["registry.k8s.io/pause@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097", "registry.k8s.io/pause:3.10"], "sizeBytes": 320368}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Ubuntu 24.04 LTS"}
        }
    })
}

/// A node that stopped posting status, as the node lifecycle controller
/// leaves it: Ready `Unknown` since `since`, tainted unreachable.
pub fn set_node_lost(node: &mut Value, since: &str) {
    for c in node["status"]["conditions"].as_array_mut().unwrap() {
        c["status"] = json!("Unknown");
        c["reason"] = json!("NodeStatusUnknown");
        c["message"] = json!("Kubelet stopped posting node status.");
        c["lastTransitionTime"] = json!(since);
    }
    node["spec"]["taints"] = json!([
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": since},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": since}
    ]);
}

/// A heartbeat: what most Node updates are (nothing the index keeps changes).
pub fn set_node_heartbeat(node: &mut Value, at: &str) {
    for c in node["status"]["conditions"].as_array_mut().unwrap() {
        c["lastHeartbeatTime"] = json!(at);
    }
}

/// A `storage.k8s.io/v1` VolumeAttachment as the attach/detach controller
/// writes it for a CSI volume.
pub fn volume_attachment(name: &str, pv: &str, node: &str, attached: bool) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttachment",
        "metadata": {
            "name": name,
            "uid": "8d5c1a2e-0000-4000-8000-00000000000a",
            "resourceVersion": "1",
            "creationTimestamp": "2026-12-01T08:10:00Z",
            "annotations": {"csi.alpha.kubernetes.io/node-id": format!("i-{node}")},
            "finalizers": ["external-attacher/ebs-csi-aws-com"]
        },
        "spec": {
            "attacher": "ebs.csi.aws.com",
            "nodeName": node,
            "source": {"persistentVolumeName": pv}
        },
        "status": {
            "attached": attached,
            "attachmentMetadata": {"devicePath": "/dev/xvdaa"}
        }
    })
}
