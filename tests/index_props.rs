//! Property: any sequence of add / modify (node assigned, phase change, deletion
//! timestamp, claims changed, labels) / delete events applied to a `ClusterState` leaves
//! it equal — `canonical_dump()` line for line — to an index built from the final
//! objects alone, in any order.

mod support;

use std::collections::BTreeMap;

use claimguard::cluster::ClusterState;
use claimguard::objects;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::k8s;

const NAMESPACES: [&str; 2] = ["ns-a", "ns-b"];
const CLAIMS: [&str; 4] = ["data", "logs", "cache", "shared"];
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[derive(Debug, Clone)]
enum Op {
    AddPod {
        ns: usize,
        name: usize,
        claims: Vec<(usize, bool)>,
        node: Option<usize>,
        phase: usize,
    },
    SetNode {
        pick: usize,
        node: usize,
    },
    SetPhase {
        pick: usize,
        phase: usize,
    },
    SetDeleting {
        pick: usize,
    },
    SetClaims {
        pick: usize,
        claims: Vec<(usize, bool)>,
    },
    DeletePod {
        pick: usize,
    },
    AddPvc {
        ns: usize,
        claim: usize,
        mode: usize,
        bound: bool,
    },
    DeletePvc {
        pick: usize,
    },
    AddPv {
        n: usize,
        mode: usize,
        claim: Option<(usize, usize)>,
    },
    DeletePv {
        pick: usize,
    },
    AddClass {
        n: usize,
        provisioner: usize,
    },
    DeleteClass {
        pick: usize,
    },
    LabelNamespace {
        ns: usize,
        mode: usize,
    },
    DeleteNamespace {
        ns: usize,
    },
}

const MODES: [&str; 4] = [
    "ReadWriteOncePod",
    "ReadWriteOnce",
    "ReadWriteMany",
    "ReadOnlyMany",
];
const PROVISIONERS: [&str; 3] = [
    "ebs.csi.aws.com",
    "efs.csi.aws.com",
    "kubernetes.io/aws-ebs",
];
const NS_MODES: [&str; 3] = ["enforce", "audit", "off"];

fn claims_strategy() -> impl Strategy<Value = Vec<(usize, bool)>> {
    prop::collection::vec((0..CLAIMS.len(), any::<bool>()), 0..3)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..8usize, claims_strategy(), prop::option::of(0..NODES.len()), 0..PHASES.len())
            .prop_map(|(ns, name, claims, node, phase)| Op::AddPod { ns, name, claims, node, phase }),
        2 => (any::<usize>(), 0..NODES.len()).prop_map(|(pick, node)| Op::SetNode { pick, node }),
        2 => (any::<usize>(), 0..PHASES.len()).prop_map(|(pick, phase)| Op::SetPhase { pick, phase }),
        1 => any::<usize>().prop_map(|pick| Op::SetDeleting { pick }),
        1 => (any::<usize>(), claims_strategy()).prop_map(|(pick, claims)| Op::SetClaims { pick, claims }),
        2 => any::<usize>().prop_map(|pick| Op::DeletePod { pick }),
        2 => (0..2usize, 0..CLAIMS.len(), 0..MODES.len(), any::<bool>())
            .prop_map(|(ns, claim, mode, bound)| Op::AddPvc { ns, claim, mode, bound }),
        1 => any::<usize>().prop_map(|pick| Op::DeletePvc { pick }),
        1 => (0..4usize, 0..MODES.len(), prop::option::of((0..2usize, 0..CLAIMS.len())))
            .prop_map(|(n, mode, claim)| Op::AddPv { n, mode, claim }),
        1 => any::<usize>().prop_map(|pick| Op::DeletePv { pick }),
        1 => (0..2usize, 0..PROVISIONERS.len()).prop_map(|(n, provisioner)| Op::AddClass { n, provisioner }),
        1 => any::<usize>().prop_map(|pick| Op::DeleteClass { pick }),
        1 => (0..2usize, 0..NS_MODES.len()).prop_map(|(ns, mode)| Op::LabelNamespace { ns, mode }),
        1 => (0..2usize).prop_map(|ns| Op::DeleteNamespace { ns }),
    ]
}

/// The "API server": current objects per kind, keyed (namespace, name).
#[derive(Default)]
struct World {
    pods: BTreeMap<(String, String), Value>,
    pvcs: BTreeMap<(String, String), Value>,
    pvs: BTreeMap<String, Value>,
    classes: BTreeMap<String, Value>,
    namespaces: BTreeMap<String, Value>,
}

fn pick<K: Clone, V>(m: &BTreeMap<K, V>, i: usize) -> Option<K> {
    if m.is_empty() {
        None
    } else {
        m.keys().nth(i % m.len()).cloned()
    }
}

fn claim_refs(claims: &[(usize, bool)]) -> Vec<(&'static str, bool)> {
    claims.iter().map(|(c, ro)| (CLAIMS[*c], *ro)).collect()
}

fn from<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).expect("generated object deserializes")
}

/// Apply one op to the world and, as watch events, to the incremental index.
fn step(w: &mut World, st: &mut ClusterState, op: &Op) {
    match op {
        Op::AddPod {
            ns,
            name,
            claims,
            node,
            phase,
        } => {
            let (ns, name) = (NAMESPACES[*ns].to_string(), format!("pod-{name}"));
            let mut p = k8s::pod(
                &ns,
                &name,
                &claim_refs(claims),
                node.map(|n| NODES[n]),
                PHASES[*phase],
            );
            // Recreating a name gives a new uid, as the API server does.
            p["metadata"]["uid"] = json!(format!("uid-{ns}-{name}-{}", w.pods.len()));
            st.apply_pod(&from(&p));
            w.pods.insert((ns, name), p);
        }
        Op::SetNode { pick: i, node } => modify_pod(w, st, *i, |p| k8s::set_node(p, NODES[*node])),
        Op::SetPhase { pick: i, phase } => {
            modify_pod(w, st, *i, |p| k8s::set_phase(p, PHASES[*phase]))
        }
        Op::SetDeleting { pick: i } => modify_pod(w, st, *i, k8s::set_deleting),
        Op::SetClaims { pick: i, claims } => {
            modify_pod(w, st, *i, |p| k8s::set_claims(p, &claim_refs(claims)))
        }
        Op::DeletePod { pick: i } => {
            if let Some(k) = pick(&w.pods, *i) {
                w.pods.remove(&k);
                st.delete_pod(&k.0, &k.1);
            }
        }
        Op::AddPvc {
            ns,
            claim,
            mode,
            bound,
        } => {
            let (ns, name) = (NAMESPACES[*ns], CLAIMS[*claim]);
            let vol = format!("pv-{claim}");
            let c = k8s::pvc(
                ns,
                name,
                &[MODES[*mode]],
                "gp3",
                bound.then_some(vol.as_str()),
            );
            st.apply_pvc(&from(&c));
            w.pvcs.insert((ns.to_string(), name.to_string()), c);
        }
        Op::DeletePvc { pick: i } => {
            if let Some(k) = pick(&w.pvcs, *i) {
                w.pvcs.remove(&k);
                st.delete_pvc(&k.0, &k.1);
            }
        }
        Op::AddPv { n, mode, claim } => {
            let name = format!("pv-{n}");
            let v = k8s::pv(
                &name,
                &[MODES[*mode]],
                claim.map(|(ns, c)| (NAMESPACES[ns], CLAIMS[c])),
                "gp3",
            );
            st.apply_pv(&from(&v));
            w.pvs.insert(name, v);
        }
        Op::DeletePv { pick: i } => {
            if let Some(k) = pick(&w.pvs, *i) {
                w.pvs.remove(&k);
                st.delete_pv(&k);
            }
        }
        Op::AddClass { n, provisioner } => {
            let name = format!("class-{n}");
            let v = k8s::storage_class(&name, PROVISIONERS[*provisioner]);
            st.apply_storage_class(&from(&v));
            w.classes.insert(name, v);
        }
        Op::DeleteClass { pick: i } => {
            if let Some(k) = pick(&w.classes, *i) {
                w.classes.remove(&k);
                st.delete_storage_class(&k);
            }
        }
        Op::LabelNamespace { ns, mode } => {
            let v = k8s::namespace(NAMESPACES[*ns], &[("claimguard.io/mode", NS_MODES[*mode])]);
            st.apply_namespace(&from(&v));
            w.namespaces.insert(NAMESPACES[*ns].to_string(), v);
        }
        Op::DeleteNamespace { ns } => {
            w.namespaces.remove(NAMESPACES[*ns]);
            st.delete_namespace(NAMESPACES[*ns]);
        }
    }
}

fn modify_pod(w: &mut World, st: &mut ClusterState, i: usize, f: impl FnOnce(&mut Value)) {
    if let Some(k) = pick(&w.pods, i) {
        let p = w.pods.get_mut(&k).expect("picked pod exists");
        f(p);
        st.apply_pod(&from(p));
    }
}

/// An index from the final objects only; `pods_first` flips the kind order to show the
/// index does not depend on which watch delivered first.
fn build(w: &World, pods_first: bool) -> ClusterState {
    let mut st = ClusterState::new();
    let pods = |st: &mut ClusterState| {
        for p in w.pods.values().rev() {
            st.apply_pod(&from(p));
        }
    };
    if pods_first {
        pods(&mut st);
    }
    for v in w.namespaces.values() {
        st.apply_namespace(&from(v));
    }
    for v in w.classes.values() {
        st.apply_storage_class(&from(v));
    }
    for v in w.pvs.values() {
        st.apply_pv(&from(v));
    }
    for v in w.pvcs.values() {
        st.apply_pvc(&from(v));
    }
    if !pods_first {
        pods(&mut st);
    }
    st
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_index_equals_index_from_final_state(ops in prop::collection::vec(op_strategy(), 1..80)) {
        let mut w = World::default();
        let mut st = ClusterState::new();
        for op in &ops {
            step(&mut w, &mut st, op);
        }
        let got = st.canonical_dump();
        prop_assert_eq!(&got, &build(&w, false).canonical_dump());
        prop_assert_eq!(&got, &build(&w, true).canonical_dump());
        let consumers = w.pods.values().filter(|p| {
            let phase = p["status"]["phase"].as_str().unwrap_or("");
            let has_claim = p["spec"]["volumes"].as_array().is_some_and(|v| {
                v.iter().any(|v| v.get("persistentVolumeClaim").is_some())
            });
            has_claim && phase != "Succeeded" && phase != "Failed"
        }).count();
        prop_assert_eq!(st.pod_count(), consumers);
    }
}

#[test]
fn objects_types_read_the_builders_shape() {
    let p: objects::Pod = from(&k8s::pod(
        "ns-a",
        "p",
        &[("data", true)],
        Some("node-1"),
        "Running",
    ));
    assert_eq!(p.metadata.name, "p");
    assert_eq!(p.metadata.namespace.as_deref(), Some("ns-a"));
}
