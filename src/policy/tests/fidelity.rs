//! Issue 12: raw block volumes, node identity, read-only placement and
//! volumeMode — table tests on the same builders as the other rules.

use super::*;

fn node(name: &str, hostname: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname, "kubernetes.io/os": "linux"}},
           "status": {"nodeInfo": {"kubeletVersion": "v1.33.1"}}})
}

/// A pod that uses `claim` as a raw block device (`volumeDevices`), no mount.
fn block_pod(name: &str, claim: &str, source_read_only: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
    "spec": {
       "containers": [{"name": "db", "image": "postgres",
          "volumeDevices": [{"name": "disk", "devicePath": "/dev/xvda"}]}],
       "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": claim, "readOnly": source_read_only}}]
    }})
}

fn selector(p: Value, hostname: &str) -> Value {
    with(
        p,
        "/spec/nodeSelector",
        json!({"kubernetes.io/hostname": hostname}),
    )
}

fn affinity(p: Value, key: &str, field: bool, op: &str, values: &[&str]) -> Value {
    let req = json!([{"key": key, "operator": op, "values": values}]);
    let term = if field {
        json!({"matchFields": req})
    } else {
        json!({"matchExpressions": req})
    };
    with(
        p,
        "/spec/affinity",
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}),
    )
}

#[test]
fn raw_block_devices_are_read_write() {
    let a = on(pod("pod-a", &[("rwo", false)]), "worker-1");
    let mut writer = case(
        "volumeDevices user is a writer",
        vec![a.clone()],
        block_pod("pod-b", "rwo", false),
        vec![("rwo-shared-writer", Warn)],
    );
    writer.says = vec!["written by pod default/pod-a on node worker-1"];
    // A device next to a read-only mount of the same volume: still a writer.
    let mut mixed = block_pod("pod-b", "rwo", false);
    mixed["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "volumeMounts": [{"name": "disk", "mountPath": "/d", "readOnly": true}]}));
    check(vec![
        writer,
        case(
            "device and a read-only mount",
            vec![a.clone()],
            mixed,
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "volume source readOnly wins over a device",
            vec![a.clone()],
            block_pod("pod-b", "rwo", true),
            vec![("rwo-readonly-placement", Warn)],
        ),
        case(
            "an existing raw-block user counts as a writer",
            vec![on(block_pod("pod-a", "rwo", false), "worker-1")],
            on(pod("pod-b", &[("rwo", false)]), "worker-1"),
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "RWOP through a device",
            vec![on(block_pod("pod-a", "rwop", false), "worker-1")],
            block_pod("pod-b", "rwop", false),
            vec![("rwop-exclusive", Deny)],
        ),
    ]);
    // The index keeps the device user as read-write.
    let s = state(&[on(block_pod("pod-a", "rwo", false), "worker-1")]);
    let p = s.pod("default", "pod-a").unwrap();
    assert_eq!(p.claims, vec![("rwo".to_string(), false)]);
}

#[test]
fn hostname_pins_resolve_through_node_labels() {
    // The node is called w1.lab.local; its hostname label says w1.
    let nodes = || {
        vec![
            node("w1.lab.local", "w1"),
            node("w2.lab.local", "w2"),
            on(pod("pod-a", &[("rwo", false)]), "w1.lab.local"),
        ]
    };
    let b = || pod("pod-b", &[("rwo", false)]);
    let mut elsewhere = case(
        "nodeSelector hostname of another node",
        nodes(),
        selector(b(), "w2"),
        vec![("rwo-cross-node", Deny)],
    );
    elsewhere.says = vec![
        "default/pod-a on node w1.lab.local",
        "run it on w1.lab.local",
    ];
    check(vec![
        case(
            "nodeSelector hostname of the holder's node",
            nodes(),
            selector(b(), "w1"),
            vec![("rwo-shared-writer", Warn)],
        ),
        elsewhere,
        case(
            "affinity hostname In the holder's label",
            nodes(),
            affinity(b(), "kubernetes.io/hostname", false, "In", &["w1"]),
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "affinity hostname NotIn the holder's label",
            nodes(),
            affinity(b(), "kubernetes.io/hostname", false, "NotIn", &["w1"]),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "matchFields metadata.name stays exact",
            nodes(),
            affinity(b(), "metadata.name", true, "In", &["w1"]),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "matchFields metadata.name of the node's name",
            nodes(),
            affinity(b(), "metadata.name", true, "In", &["w1.lab.local"]),
            vec![("rwo-shared-writer", Warn)],
        ),
        case(
            "nodeName stays exact",
            nodes(),
            on(b(), "w1"),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "unknown node: the label is compared with the name",
            vec![on(pod("pod-a", &[("rwo", false)]), "w1.lab.local")],
            selector(b(), "w1"),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "unknown node whose name is the label",
            vec![on(pod("pod-a", &[("rwo", false)]), "w1")],
            selector(b(), "w1"),
            vec![("rwo-shared-writer", Warn)],
        ),
    ]);
}

#[test]
fn read_only_users_are_told_where_to_run() {
    let a = on(pod("pod-a", &[("rwo", false)]), "worker-1");
    let ro = || pod("pod-b", &[("rwo", true)]);
    let mut unpinned = case(
        "unpinned read-only user",
        vec![a.clone()],
        ro(),
        vec![("rwo-readonly-placement", Warn)],
    );
    unpinned.says = vec![
        "[rwo-readonly-placement] PersistentVolumeClaim \"rwo\" is ReadWriteOnce",
        "attached to node worker-1 for pod default/pod-a on node worker-1",
        "read-only",
        "Multi-Attach",
        "nodeSelector kubernetes.io/hostname: worker-1",
    ];
    // The selector value to use is the node's hostname label.
    let mut labelled = case(
        "the message gives the hostname label",
        vec![
            node("w1.lab.local", "w1"),
            on(pod("pod-a", &[("rwo", false)]), "w1.lab.local"),
        ],
        ro(),
        vec![("rwo-readonly-placement", Warn)],
    );
    labelled.says = vec![
        "attached to node w1.lab.local",
        "kubernetes.io/hostname: w1",
    ];
    check(vec![
        unpinned,
        labelled,
        case(
            "pinned there by nodeName",
            vec![a.clone()],
            on(ro(), "worker-1"),
            vec![],
        ),
        case(
            "pinned there by nodeSelector",
            vec![a.clone()],
            selector(ro(), "worker-1"),
            vec![],
        ),
        case(
            "pinned there by hostname label",
            vec![
                node("w1.lab.local", "w1"),
                on(pod("pod-a", &[("rwo", false)]), "w1.lab.local"),
            ],
            selector(ro(), "w1"),
            vec![],
        ),
        case(
            "pinned there by affinity",
            vec![a.clone()],
            affinity(ro(), "kubernetes.io/hostname", false, "In", &["worker-1"]),
            vec![],
        ),
        case(
            "affinity that also allows another node",
            vec![a.clone()],
            affinity(
                ro(),
                "kubernetes.io/hostname",
                false,
                "In",
                &["worker-1", "worker-2"],
            ),
            vec![("rwo-readonly-placement", Warn)],
        ),
        case(
            "pinned elsewhere stays rwo-cross-node",
            vec![a.clone()],
            on(ro(), "worker-2"),
            vec![("rwo-cross-node", Deny)],
        ),
        case(
            "holder not scheduled yet",
            vec![pod("pod-a", &[("rwo", false)])],
            ro(),
            vec![],
        ),
        case("no other user", vec![], ro(), vec![]),
        case(
            "terminating holder only",
            vec![with(
                a.clone(),
                "/metadata/deletionTimestamp",
                json!("2026-12-01T10:00:00Z"),
            )],
            ro(),
            vec![],
        ),
        case(
            "RWX claim",
            vec![on(pod("pod-a", &[("rwx", false)]), "worker-1")],
            pod("pod-b", &[("rwx", true)]),
            vec![],
        ),
    ]);
    let mut p = Policy::default();
    p.set_action(Rule::RwoReadOnlyPlacement, Action::Off);
    let v = run(&p, &[a], Operation::Create, ro(), None);
    assert!(v.findings.is_empty(), "{v:?}");
}

fn block_pvc(name: &str, modes: &[&str], class: &str, mode: Option<&str>) -> Value {
    let mut v = pvc_class(name, modes, Some(class));
    if let Some(m) = mode {
        v["spec"]["volumeMode"] = json!(m);
    }
    v
}

#[test]
fn raw_block_multi_writer_provisioners() {
    let extra = vec![
        sc("azure-shared", "disk.csi.azure.com", false),
        sc("gce", "pd.csi.storage.gke.io", false),
    ];
    let mut fs = case(
        "RWX filesystem on EBS",
        extra.clone(),
        block_pvc("new", &["ReadWriteMany"], "standard", Some("Filesystem")),
        vec![("pvc-mode-unsupported", Warn)],
    );
    fs.says = vec!["ebs.csi.aws.com", "volumeMode: Block"];
    check(vec![
        case(
            "RWX block on EBS (io2 Multi-Attach)",
            extra.clone(),
            block_pvc("new", &["ReadWriteMany"], "standard", Some("Block")),
            vec![],
        ),
        case(
            "RWX block on Azure shared disks",
            extra.clone(),
            block_pvc("new", &["ReadWriteMany"], "azure-shared", Some("Block")),
            vec![],
        ),
        case(
            "RWX block on GCE multi-writer",
            extra.clone(),
            block_pvc("new", &["ReadWriteMany"], "gce", Some("Block")),
            vec![],
        ),
        fs,
        case(
            "RWX without volumeMode is filesystem",
            extra.clone(),
            block_pvc("new", &["ReadWriteMany"], "standard", None),
            vec![("pvc-mode-unsupported", Warn)],
        ),
        case(
            "ROX block on EBS",
            extra.clone(),
            block_pvc("new", &["ReadOnlyMany"], "standard", Some("Block")),
            vec![("pvc-mode-unsupported", Warn)],
        ),
        case(
            "RWX block on the in-tree EBS plugin",
            extra.clone(),
            block_pvc("new", &["ReadWriteMany"], "legacy", Some("Block")),
            vec![("pvc-mode-unsupported", Warn)],
        ),
    ]);
    // The list is the policy file's.
    let p = Policy::parse("blockMultiWriterProvisioners: []").unwrap();
    let v = run(
        &p,
        &[],
        Operation::Create,
        block_pvc("new", &["ReadWriteMany"], "standard", Some("Block")),
        None,
    );
    assert_eq!(fired(&v), vec![("pvc-mode-unsupported", Warn)]);
    assert_eq!(
        Policy::default().block_multi_writer_provisioners,
        DEFAULT_BLOCK_MULTI_WRITER_PROVISIONERS.map(String::from)
    );
}

#[test]
fn scale_requests_judge_the_new_count() {
    let s = state(&[]);
    let w = |claim: &str| match obj(deploy(
        "db",
        json!({"replicas": 1, "strategy": {"type": "Recreate"}}),
        &[claim],
    )) {
        Object::Workload(_, w) => w,
        _ => unreachable!(),
    };
    let kind = objects::Kind::Deployment;
    let p = Policy::default();
    type Case<'a> = (&'a str, Option<i64>, Option<i64>, Vec<(&'a str, Effect)>);
    let cases: Vec<Case> = vec![
        (
            "rwop",
            Some(1),
            Some(3),
            vec![("workload-rwop-replicas", Deny)],
        ),
        (
            "rwo",
            Some(1),
            Some(2),
            vec![("workload-rwo-replicas", Warn)],
        ),
        ("rwx", Some(1), Some(5), vec![]),
        ("rwop", Some(3), Some(1), vec![]),
        ("rwop", Some(1), Some(1), vec![]),
        (
            "rwop",
            Some(2),
            Some(3),
            vec![("workload-rwop-replicas", PreExisting)],
        ),
        // No old count in the request: the workload's own (1).
        (
            "rwop",
            None,
            Some(2),
            vec![("workload-rwop-replicas", Deny)],
        ),
        ("rwop", None, None, vec![]),
        // Only the replica rules: a missing claim is not the scale's business.
        ("missing", Some(1), Some(2), vec![]),
    ];
    for (claim, old, new, want) in cases {
        let v = evaluate_scale(&p, "default", kind, &w(claim), old, new, &s);
        assert_eq!(fired(&v), want, "{claim} {old:?} -> {new:?}: {v:?}");
        assert_eq!(v.allowed, !want.iter().any(|(_, e)| *e == Deny));
    }
}
