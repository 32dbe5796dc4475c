//! Audit cost at 100,000 pods: `cargo bench --bench audit`.
//!
//! `audit_state` is the pure audit of an index (what `serve --audit-interval`
//! does under the read lock); `snapshot_json`/`snapshot_yaml` are what
//! `claimguard audit --snapshot FILE` does end to end: read and parse the
//! dump, build the index, audit. `AUDIT_BENCH_KEEP=/tmp/cluster.json` also
//! writes the generated 100k-pod dump there, to time the CLI on it
//! (`time claimguard audit --snapshot /tmp/cluster.json --output json`).

use claimguard::audit;
use claimguard::policy::Policy;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::time::Duration;

const PODS: usize = 100_000;
const NODES: usize = 500;

fn pod(ns: &str, name: &str, node: Option<&str>, claim: &str, read_only: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                     "labels": {"app": "bench", "pod-template-hash": "5d8c7"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.example/app:1.2.3",
                            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": read_only}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        },
        "status": {"phase": "Running"}
    })
}

fn pvc(ns: &str, name: &str, mode: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"accessModes": [mode], "storageClassName": "gp3"}})
}

/// 100k pods over 200 namespaces: most own an RWO claim (StatefulSet-like),
/// 20% share RWX claims in groups of 20, and 1% of claims carry each
/// violation (RWOP pairs, RWO claims on two nodes, two writers on one node).
/// 2,000 Deployments and their claims.
fn cluster() -> Vec<Value> {
    let mut items = vec![
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "gp3"}, "provisioner": "ebs.csi.aws.com"}),
    ];
    let node = |i: usize| format!("node-{}", i % NODES);
    let mut i = 0;
    while i < PODS {
        let ns = format!("team-{}", i % 200);
        let bucket = (i / 2) % 100;
        if bucket == 0 {
            let c = format!("rwop-{i}");
            items.push(pvc(&ns, &c, "ReadWriteOncePod"));
            items.push(pod(&ns, &format!("p-{i}"), Some(&node(i)), &c, false));
            items.push(pod(
                &ns,
                &format!("p-{}", i + 1),
                Some(&node(i + 1)),
                &c,
                false,
            ));
            i += 2;
        } else if bucket == 1 {
            let c = format!("rwo-x-{i}");
            items.push(pvc(&ns, &c, "ReadWriteOnce"));
            items.push(pod(&ns, &format!("p-{i}"), Some(&node(i)), &c, false));
            items.push(pod(
                &ns,
                &format!("p-{}", i + 1),
                Some(&node(i + 1)),
                &c,
                false,
            ));
            i += 2;
        } else if bucket == 2 {
            let c = format!("rwo-w-{i}");
            items.push(pvc(&ns, &c, "ReadWriteOnce"));
            items.push(pod(&ns, &format!("p-{i}"), Some(&node(i)), &c, false));
            items.push(pod(&ns, &format!("p-{}", i + 1), Some(&node(i)), &c, false));
            i += 2;
        } else if bucket < 22 {
            // Shared RWX claims, 20 pods each, in one namespace.
            let ns = format!("team-{}", (i / 20) % 200);
            let c = format!("rwx-{}", i / 20);
            if i % 20 == 0 || !items_has_claim(&items, &ns, &c) {
                items.push(pvc(&ns, &c, "ReadWriteMany"));
            }
            items.push(pod(&ns, &format!("p-{i}"), Some(&node(i)), &c, true));
            i += 1;
        } else {
            let c = format!("data-{i}");
            items.push(pvc(&ns, &c, "ReadWriteOnce"));
            items.push(pod(&ns, &format!("p-{i}"), Some(&node(i)), &c, false));
            i += 1;
        }
    }
    for d in 0..2000 {
        let ns = format!("team-{}", d % 200);
        let c = format!("dep-{d}");
        items.push(pvc(&ns, &c, "ReadWriteOnce"));
        items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("dep-{d}"), "namespace": ns},
            "spec": {"replicas": 1 + d % 3, "template": {"spec": {
                "containers": [{"name": "main", "image": "x", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": c}}]}}}}));
    }
    items
}

/// The group's first pod may be a pair's second (buckets cut groups), so
/// look back a little for the group's claim.
fn items_has_claim(items: &[Value], ns: &str, claim: &str) -> bool {
    items.iter().rev().take(60).any(|v| {
        v["kind"] == "PersistentVolumeClaim"
            && v["metadata"]["namespace"] == ns
            && v["metadata"]["name"] == claim
    })
}

fn bench(c: &mut Criterion) {
    let items = cluster();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let dir = tempfile::tempdir().expect("tempdir");
    if let Ok(keep) = std::env::var("AUDIT_BENCH_KEEP") {
        std::fs::write(&keep, serde_json::to_vec(&list).expect("json")).expect("write");
    }
    let json_path = dir.path().join("cluster.json");
    let yaml_path = dir.path().join("cluster.yaml");
    std::fs::write(&json_path, serde_json::to_vec(&list).expect("json")).expect("write");
    std::fs::write(&yaml_path, serde_yaml_ng::to_string(&list).expect("yaml")).expect("write");
    let policy = Policy::default();
    let (state, objects) = audit::load_for_audit(std::slice::from_ref(&json_path)).expect("load");
    let report = audit::audit_state(&state, &objects, &policy);
    eprintln!(
        "pods in index: {}, violations: {}, json {} MB, yaml {} MB",
        state.pod_count(),
        report.violations.len(),
        std::fs::metadata(&json_path)
            .map(|m| m.len() >> 20)
            .unwrap_or(0),
        std::fs::metadata(&yaml_path)
            .map(|m| m.len() >> 20)
            .unwrap_or(0),
    );
    assert!(state.pod_count() == PODS);
    // Where the time of one audit goes: the per-claim pod rules alone, then
    // everything (plus ~100k PVCs and 2,000 Deployments through findings_for).
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let pods_only = audit::audit_state(&state, &[], &policy);
        let claims = t.elapsed();
        let t = std::time::Instant::now();
        let all = audit::audit_state(&state, &objects, &policy);
        eprintln!(
            "one run: claims only {:.0} ms ({} violations), claims + {} objects {:.0} ms ({} violations)",
            claims.as_secs_f64() * 1e3,
            pods_only.violations.len(),
            objects.len(),
            t.elapsed().as_secs_f64() * 1e3,
            all.violations.len()
        );
    }

    let mut g = c.benchmark_group("audit_100k_pods");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("audit_state", |b| {
        b.iter(|| audit::audit_state(&state, &objects, &policy))
    });
    g.bench_function("load_json", |b| {
        b.iter(|| audit::load_for_audit(std::slice::from_ref(&json_path)).expect("load"))
    });
    g.bench_function("snapshot_json", |b| {
        b.iter(|| {
            let (s, o) = audit::load_for_audit(std::slice::from_ref(&json_path)).expect("load");
            audit::audit_state(&s, &o, &policy)
        })
    });
    g.finish();
    // YAML parsing dominates and takes seconds: one timed run, not ten samples.
    let t = std::time::Instant::now();
    let (s, o) = audit::load_for_audit(std::slice::from_ref(&yaml_path)).expect("load");
    let loaded = t.elapsed();
    let r = audit::audit_state(&s, &o, &policy);
    eprintln!(
        "snapshot_yaml (one run): load {:.2} s, load + audit {:.2} s, {} violations",
        loaded.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        r.violations.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
