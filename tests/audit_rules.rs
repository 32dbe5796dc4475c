//! The audit judges pods per claim (one violation per claim, O(consumers));
//! admission judges one pod against the others. This checks, on generated
//! clusters, that they agree: a claim gets a pod-rule violation in the audit
//! exactly when some non-terminating pod using it, judged by the admission
//! rules (`policy::findings_for`) against the others, gets that finding —
//! and that the pod is listed in the violation. Pods use claims through
//! mounts and raw block devices, unscheduled pods carry hostname pins
//! (nodeSelector, affinity on the hostname label or on `metadata.name`), and
//! some nodes have a hostname label that differs from their name.

use claimguard::audit;
use claimguard::cluster::ClusterState;
use claimguard::objects::{Node, Object, PersistentVolumeClaim, Pod};
use claimguard::policy::{self, Policy, Rule};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeSet;

const CLAIMS: [&str; 3] = ["c0", "c1", "c2"];
const NODES: [Option<&str>; 4] = [None, Some("n1"), Some("n2"), Some("n3")];
const MODES: [Option<&[&str]>; 5] = [
    None, // the claim does not exist
    Some(&["ReadWriteOncePod"]),
    Some(&["ReadWriteOnce"]),
    Some(&["ReadWriteMany"]),
    Some(&["ReadWriteOnce", "ReadOnlyMany"]),
];

/// Node name -> hostname label: n1's label differs from its name, n2's is
/// its name, n3 is not known to the view.
const NODE_LABELS: [(&str, &str); 2] = [("n1", "h1"), ("n2", "n2")];
/// Values a hostname or metadata.name pin may name.
const PIN_VALUES: [&str; 4] = ["h1", "n1", "n2", "n3"];

#[derive(Debug, Clone)]
struct GenPod {
    node: usize,
    terminating: bool,
    phase: usize,
    shared_ok: bool,
    /// (claim index, read-only, raw block device)
    claims: Vec<(usize, bool, bool)>,
    /// For a pod not scheduled yet: 0 none, 1 nodeSelector, 2 affinity on the
    /// hostname label, 3 affinity on metadata.name; NotIn; the values.
    pin: (usize, bool, Vec<usize>),
}

fn gen_pod() -> impl Strategy<Value = GenPod> {
    (
        0..NODES.len(),
        any::<bool>(),
        0..4usize,
        prop::bool::weighted(0.2),
        prop::collection::vec(
            (
                0..CLAIMS.len(),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.2),
            ),
            1..3,
        ),
        (
            0..4usize,
            prop::bool::weighted(0.3),
            prop::collection::vec(0..PIN_VALUES.len(), 1..3),
        ),
    )
        .prop_map(
            |(node, terminating, phase, shared_ok, claims, pin)| GenPod {
                node,
                terminating,
                phase,
                shared_ok,
                claims,
                pin,
            },
        )
}

fn pin_json(spec: &mut serde_json::Value, pin: &(usize, bool, Vec<usize>)) {
    let values: Vec<&str> = pin.2.iter().map(|i| PIN_VALUES[*i]).collect();
    let op = if pin.1 { "NotIn" } else { "In" };
    match pin.0 {
        1 => spec["nodeSelector"] = json!({"kubernetes.io/hostname": values[0]}),
        2 | 3 => {
            let req = json!([{"key": if pin.0 == 2 { "kubernetes.io/hostname" } else { "metadata.name" }, "operator": op, "values": values}]);
            let term = if pin.0 == 2 {
                json!({"matchExpressions": req})
            } else {
                json!({"matchFields": req})
            };
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}});
        }
        _ => {}
    }
}

fn build_pod(i: usize, g: &GenPod) -> Pod {
    let mut seen = BTreeSet::new();
    let claims: Vec<(usize, bool, bool)> = g
        .claims
        .iter()
        .filter(|(c, _, _)| seen.insert(*c))
        .copied()
        .collect();
    let mut meta = json!({"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}")});
    if g.terminating {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    if g.shared_ok {
        meta["annotations"] = json!({"claimguard.io/allow-shared-writers": "true"});
    }
    let phase = ["Running", "Pending", "Succeeded", "Failed"][g.phase];
    let mut v = json!({
        "metadata": meta,
        "spec": {
            "nodeName": NODES[g.node],
            "containers": [{"name": "c",
                "volumeMounts": claims.iter().filter(|(_, _, dev)| !dev).map(|(c, ro, _)| json!({"name": format!("v{c}"), "readOnly": ro})).collect::<Vec<_>>(),
                "volumeDevices": claims.iter().filter(|(_, _, dev)| *dev).map(|(c, _, _)| json!({"name": format!("v{c}"), "devicePath": format!("/dev/v{c}")})).collect::<Vec<_>>()}],
            "volumes": claims.iter().map(|(c, ro, dev)| json!({"name": format!("v{c}"), "persistentVolumeClaim": {"claimName": CLAIMS[*c], "readOnly": *dev && *ro}})).collect::<Vec<_>>(),
        },
        "status": {"phase": phase},
    });
    // The scheduler honours pins: only a pod not scheduled yet carries one
    // that its node may not match.
    if NODES[g.node].is_none() {
        pin_json(&mut v["spec"], &g.pin);
    }
    serde_json::from_value(v).expect("pod")
}

const POD_RULES: [Rule; 6] = [
    Rule::RwopExclusive,
    Rule::RwopTerminatingHolder,
    Rule::RwoCrossNode,
    Rule::RwoSharedWriter,
    Rule::RwoReadOnlyPlacement,
    Rule::ClaimNotFound,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn audit_agrees_with_admission_rules(
        modes in prop::collection::vec(0..MODES.len(), CLAIMS.len()),
        gen in prop::collection::vec(gen_pod(), 0..8),
    ) {
        let policy = Policy::default();
        let mut state = ClusterState::new();
        for (name, hostname) in NODE_LABELS {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname}},
            })).expect("node");
            state.apply_node(&node);
        }
        for (c, m) in CLAIMS.iter().zip(&modes) {
            if let Some(names) = MODES[*m] {
                let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                    "metadata": {"name": c, "namespace": "default"},
                    "spec": {"accessModes": names},
                })).expect("pvc");
                state.apply_pvc(&pvc);
            }
        }
        let pods: Vec<Pod> = gen.iter().enumerate().map(|(i, g)| build_pod(i, g)).collect();
        for p in &pods {
            state.apply_pod(p);
        }

        // The oracle: every live, non-terminating pod judged by admission.
        let mut want: BTreeSet<(Rule, String)> = BTreeSet::new();
        let mut subjects: Vec<(Rule, String, String)> = Vec::new();
        for (p, g) in pods.iter().zip(&gen) {
            if g.terminating || g.phase >= 2 {
                continue;
            }
            let obj = Object::Pod(p.clone());
            for f in policy::findings_for(&policy, "default", &obj, &state) {
                prop_assert!(POD_RULES.contains(&f.rule), "{:?}", f.rule);
                want.insert((f.rule, f.claim.clone()));
                subjects.push((f.rule, f.claim, p.metadata.name.clone()));
            }
        }

        let report = audit::audit_state(&state, &[], &policy);
        let got: BTreeSet<(Rule, String)> =
            report.violations.iter().map(|v| (v.rule, v.claim.clone())).collect();
        prop_assert_eq!(got.len(), report.violations.len(), "one violation per claim and rule");
        prop_assert_eq!(&got, &want);
        for (rule, claim, pod) in subjects {
            let v = report.violations.iter().find(|v| v.rule == rule && v.claim == claim).expect("violation");
            prop_assert!(v.pods.iter().any(|p| p.name == pod), "{pod} not listed in {:?}", v);
        }
    }
}
